//! The decision for one object: which settings apply, and what to do with them. Shared by `serve` and the CLI.

use std::collections::BTreeMap;
use std::sync::Arc;

use json_patch::PatchOperation;
use serde_json::Value;

use super::{Verdict, api::Endpoint};
use crate::{
    cluster::{
        ClusterInfo, ClusterSource, Lookup, Subject, SubjectKind, cluster_network, string_map,
    },
    delivery::CLUSTER_LABEL,
    mutation::{self, Injection, Target},
    settings::{self, Resolution},
};

/// The kinds this webhook acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    ControlPlane,
    ConfigTemplate,
}

impl Kind {
    /// Recognise `group` + `kind`. Versions are not checked here: v1beta1 and v1beta2 use the same paths.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        match (group, kind) {
            ("cluster.x-k8s.io", "Cluster") => Some(Kind::Cluster),
            ("controlplane.cluster.x-k8s.io", "KubeadmControlPlane") => Some(Kind::ControlPlane),
            ("bootstrap.cluster.x-k8s.io", "KubeadmConfigTemplate") => Some(Kind::ConfigTemplate),
            _ => None,
        }
    }

    /// Recognise an object's `apiVersion` + `kind` (for manifests).
    pub fn of_object(object: &Value) -> Option<Kind> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        Kind::from_group_kind(group, object.get("kind")?.as_str()?)
    }

    fn target(self) -> Option<Target> {
        match self {
            Kind::Cluster => None,
            Kind::ControlPlane => Some(Target::ControlPlane),
            Kind::ConfigTemplate => Some(Target::Workers),
        }
    }

    fn subject_kind(self) -> Option<SubjectKind> {
        match self {
            Kind::Cluster => None,
            Kind::ControlPlane => Some(SubjectKind::ControlPlane),
            Kind::ConfigTemplate => Some(SubjectKind::ConfigTemplate),
        }
    }
}

/// The outcome of [`decide`]: the verdict, and how the Cluster was found (empty when no lookup ran).
#[derive(Debug, Clone)]
pub struct Decided {
    pub verdict: Verdict,
    pub lookup: &'static str,
}

impl Decided {
    fn new(verdict: Verdict) -> Self {
        Decided {
            verdict,
            lookup: "",
        }
    }
}

/// Kubernetes shows each warning on its own `Warning:` line; the API server wants them short.
pub const MAX_WARNING_CHARS: usize = 119;

/// Shorten a warning to at most [`MAX_WARNING_CHARS`] characters.
pub fn fit_warning(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= MAX_WARNING_CHARS {
        return flat;
    }
    let mut short: String = flat.chars().take(MAX_WARNING_CHARS - 3).collect();
    short.push_str("...");
    short
}

fn fit_all(warnings: &[String]) -> Vec<String> {
    warnings.iter().map(|w| fit_warning(w)).collect()
}

/// Where the policy gets its settings and injections from: [`Compute`] builds them for every object (the CLI),
/// [`super::cache::SettingsCache`] remembers them (the webhook).
pub trait Prepare: Sync {
    /// [`settings::resolve`] (shared: a memo hands out the same resolution to every review of a Cluster's objects).
    fn resolve(
        &self,
        annotations: &BTreeMap<String, String>,
        network: Option<&settings::ClusterNetwork>,
    ) -> Arc<Resolution>;
    /// [`mutation::desired`].
    fn injection(
        &self,
        settings: &settings::Settings,
        target: Target,
    ) -> Result<Arc<Injection>, mutation::MutationError>;
}

/// [`Prepare`] without memory.
pub struct Compute;

impl Prepare for Compute {
    fn resolve(
        &self,
        annotations: &BTreeMap<String, String>,
        network: Option<&settings::ClusterNetwork>,
    ) -> Arc<Resolution> {
        Arc::new(settings::resolve(annotations, network))
    }
    fn injection(
        &self,
        settings: &settings::Settings,
        target: Target,
    ) -> Result<Arc<Injection>, mutation::MutationError> {
        mutation::desired(settings, target).map(Arc::new)
    }
}

/// Decide what to do with `object` (a Cluster, KCP or KCT) arriving at `endpoint`.
pub async fn decide<S: ClusterSource>(
    source: &S,
    endpoint: Endpoint,
    kind: Kind,
    object: &Value,
) -> Decided {
    decide_with(source, &Compute, endpoint, kind, object).await
}

/// [`decide`] with a chosen [`Prepare`] (the webhook passes its memo).
pub async fn decide_with<S: ClusterSource, P: Prepare>(
    source: &S,
    prepare: &P,
    endpoint: Endpoint,
    kind: Kind,
    object: &Value,
) -> Decided {
    let annotations = string_map(object.pointer("/metadata/annotations"));
    let (Some(target), Some(subject_kind)) = (kind.target(), kind.subject_kind()) else {
        return Decided::new(cluster_verdict(
            source,
            prepare,
            endpoint,
            object,
            &annotations,
        ));
    };

    let mut decided = decide_target(
        source,
        prepare,
        endpoint,
        object,
        &annotations,
        target,
        subject_kind,
    )
    .await;
    // A key whose prefix is spelt in another case is never read; say so here, where the object is named.
    if let Some(key) = annotations
        .keys()
        .find(|k| settings::is_prefix_in_other_case(k))
        && !settings::has_settings(&annotations)
    {
        decided.verdict.push_warning(fit_warning(&format!(
            "capi-calico: {key} is not read: write the prefix capi-calico.io/ in lower case"
        )));
    }
    decided
}

/// [`decide_with`] for a KCP or KCT.
async fn decide_target<S: ClusterSource, P: Prepare>(
    source: &S,
    prepare: &P,
    endpoint: Endpoint,
    object: &Value,
    annotations: &BTreeMap<String, String>,
    target: Target,
    subject_kind: SubjectKind,
) -> Decided {
    let own = settings::has_settings(annotations);
    let mut sharers = Vec::new();
    let (resolution, origin, lookup) = if own {
        (
            prepare.resolve(annotations, None),
            Origin::Own(subject_kind),
            "",
        )
    } else {
        let subject = Subject {
            kind: subject_kind,
            namespace: object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
            name: object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            labels: string_map(object.pointer("/metadata/labels")),
        };
        let lookup = source.find(&subject).await;
        let label = lookup.label();
        match lookup {
            Lookup::Found {
                cluster,
                also_used_by,
                ..
            } => {
                let resolution = prepare.resolve(&cluster.annotations, Some(&cluster.network));
                sharers = also_used_by;
                (resolution, Origin::Cluster(cluster), label)
            }
            Lookup::NotFound { looked_for, named } => {
                let warnings = not_found_warnings(subject_kind, &subject.name, &looked_for, named);
                return Decided {
                    verdict: Verdict::allow(warnings),
                    lookup: label,
                };
            }
            Lookup::Disabled => {
                return Decided {
                    verdict: Verdict::allow(vec![fit_warning(&format!(
                        "capi-calico: this webhook has no cluster access, so Cluster settings are not applied to \
                         {} {}",
                        subject_kind.kind(),
                        subject.name
                    ))]),
                    lookup: label,
                };
            }
            Lookup::Failed { reason } => {
                // Fail closed, like the webhook's failurePolicy: admitted without the Cluster's settings, the object
                // would lose (or never get) its injection, and getting it later rolls the control plane.
                return Decided {
                    verdict: Verdict::Deny {
                        message: format!(
                            "{LOOKUP_FAILED_MESSAGE} {} {} ({reason}); retry in a moment: admitted without \
                             its Cluster's Calico settings it could lose its injection, and getting it back later \
                             would roll the control plane",
                            subject_kind.kind(),
                            subject.name
                        ),
                        rules: vec![LOOKUP_FAILED_RULE.to_string()],
                        warnings: Vec::new(),
                    },
                    lookup: label,
                };
            }
        }
    };

    let mut verdict = match &*resolution {
        Resolution::NotOptedIn { warnings } => {
            let mut warnings = fit_all(warnings);
            // Opting out changes nothing on the object (removing our entries would roll the control plane
            // unasked); say that they stay and how to remove them.
            if mutation::carries_injection(object, target) {
                warnings.push(fit_warning(&format!(
                    "capi-calico: this {} keeps capi-calico's files and commands: not opted in, they are left as they are",
                    subject_kind.kind()
                )));
                warnings.push(fit_warning(
                    "capi-calico: to remove them, opt in again with INSTALL_CALICOCTL and CONFIGURE_CALICO_BGP_SETTINGS \"false\"",
                ));
            }
            if own {
                warnings.push(fit_warning(&format!(
                    "capi-calico: this {} has its own capi-calico.io/ annotations, so its Cluster's are not used",
                    subject_kind.kind()
                )));
                warnings.push(fit_warning(
                    "capi-calico: remove them, or give it CUSTOM_CALICO_DEPLOYMENT \"true\" and its full settings",
                ));
            }
            Verdict::allow(warnings)
        }
        Resolution::Invalid { problems } => {
            let rules = problems.iter().map(|p| p.rule.to_string()).collect();
            let message = format!(
                "{}{}",
                origin.preamble(),
                settings::render_problems(problems)
            );
            Verdict::Deny {
                message,
                rules,
                warnings: Vec::new(),
            }
        }
        Resolution::OptedIn { settings, warnings } => apply_settings(
            prepare,
            endpoint,
            target,
            object,
            settings,
            fit_all(warnings),
        ),
    };
    // A template of a Cluster that is not opted in keeps what it carries (warned above), whatever its users want.
    let keeps_entries = matches!(&*resolution, Resolution::NotOptedIn { .. })
        && mutation::carries_injection(object, target);
    if let Origin::Cluster(cluster) = &origin
        && !matches!(verdict, Verdict::Deny { .. })
        && !keeps_entries
    {
        for warning in sharing_warnings(prepare, target, cluster, &resolution, &sharers) {
            verdict.push_warning(warning);
        }
    }
    Decided { verdict, lookup }
}

/// What an object injected for `resolution` carries: nothing (not opted in, or nothing for this target), the
/// injection, or `Err` when the settings are invalid or cannot be injected.
fn carried<P: Prepare>(
    prepare: &P,
    target: Target,
    resolution: &Resolution,
) -> Result<Option<Arc<Injection>>, ()> {
    match resolution {
        Resolution::NotOptedIn { .. } => Ok(None),
        Resolution::Invalid { .. } => Err(()),
        Resolution::OptedIn { settings, .. } => match prepare.injection(settings, target) {
            Ok(injection) if injection.is_empty() => Ok(None),
            Ok(injection) => Ok(Some(injection)),
            Err(_) => Err(()),
        },
    }
}

/// Warnings for a KubeadmConfigTemplate that MachineDeployments of other Clusters use too (`sharers`), when their
/// settings would give it other capi-calico entries than the Cluster it follows: a template carries one Cluster's
/// settings, so the other Clusters' workers get those. Nothing when every sharer's settings give the same entries.
/// Called for an admitted template only, so `resolution` is one that could be injected (invalid ones are denied).
fn sharing_warnings<P: Prepare>(
    prepare: &P,
    target: Target,
    cluster: &ClusterInfo,
    resolution: &Resolution,
    sharers: &[ClusterInfo],
) -> Vec<String> {
    let own = carried(prepare, target, resolution);
    let differing: Vec<&str> = sharers
        .iter()
        .filter(|other| {
            let theirs = prepare.resolve(&other.annotations, Some(&other.network));
            carried(prepare, target, &theirs) != own
        })
        .map(|other| other.name.as_str())
        .collect();
    if differing.is_empty() {
        return Vec::new();
    }
    let (clusters, names) = if differing.len() == 1 {
        ("Cluster", differing[0].to_string())
    } else {
        ("Clusters", differing.join(", "))
    };
    vec![
        fit_warning(&format!(
            "capi-calico: MachineDeployments of {clusters} {names} use this template too, with other Calico settings"
        )),
        fit_warning(&match own {
            Ok(Some(_)) => format!(
                "capi-calico: all its workers get Cluster {}'s capi-calico entries",
                cluster.name
            ),
            _ => format!(
                "capi-calico: it follows Cluster {}, whose settings give workers no capi-calico entries",
                cluster.name
            ),
        }),
        fit_warning("capi-calico: give each Cluster its own KubeadmConfigTemplate"),
    ]
}

/// Where the settings of a KCP/KCT came from, for the wording of a denial.
enum Origin {
    Own(SubjectKind),
    Cluster(Box<ClusterInfo>),
}

impl Origin {
    fn preamble(&self) -> String {
        match self {
            Origin::Own(kind) => format!(
                "the {} carries its own capi-calico.io annotations: ",
                kind.kind()
            ),
            Origin::Cluster(cluster) => format!(
                "this object takes its Calico settings from Cluster {}/{}, whose annotations are invalid; \
                 fix them on the Cluster: ",
                cluster.namespace, cluster.name
            ),
        }
    }
}

fn not_found_warnings(kind: SubjectKind, name: &str, looked_for: &str, named: bool) -> Vec<String> {
    let mut warnings = vec![
        fit_warning(&format!(
            "capi-calico: no Cluster found for {} {name}; admitted without Calico changes",
            kind.kind()
        )),
        fit_warning(&format!("capi-calico: looked for {looked_for}")),
    ];
    if named {
        // Linked, by a label or a MachineDeployment, to a Cluster that does not exist (yet): nothing to label.
        warnings.push(fit_warning(
            "capi-calico: create that Cluster (offline: add it to the input); then this object is injected",
        ));
        return warnings;
    }
    warnings.push(
        // A KCT is linked through its MachineDeployment: applying only the Cluster first does not link it.
        fit_warning(match kind {
            SubjectKind::ControlPlane => {
                "capi-calico: label it cluster.x-k8s.io/cluster-name=<cluster>, or apply the Cluster before it"
            }
            SubjectKind::ConfigTemplate => {
                "capi-calico: label it cluster.x-k8s.io/cluster-name=<cluster>, or apply the Cluster and its \
                 MachineDeployment before it"
            }
        }),
    );
    if kind == SubjectKind::ConfigTemplate {
        // The worker template of a ClusterClass has no Cluster of its own, and must not be labelled with one.
        warnings.push(fit_warning(
            "capi-calico: a ClusterClass's own MachineDeployment template needs nothing: its per-Cluster copies are injected",
        ));
    }
    warnings
}

/// Warnings for a Cluster UPDATE (`old` is the stored Cluster, pruned to its settings and pod CIDRs) that changes
/// what a running cluster cannot follow: its Calico pool (CIDR or block size: Calico's pools are immutable, and
/// kubeadm's podSubnet too), or the opt-in itself (Calico is then delivered to a cluster that may run another CNI).
/// Warnings, not denials: a Cluster whose workload cluster does not exist yet may still change them freely.
pub fn cluster_change_warnings<P: Prepare>(prepare: &P, old: &Value, new: &Value) -> Vec<String> {
    let resolve = |object: &Value| {
        let annotations = string_map(object.pointer("/metadata/annotations"));
        let (network, _) = cluster_network(object);
        prepare.resolve(&annotations, Some(&network))
    };
    let (before, after) = (resolve(old), resolve(new));
    let mut warnings = Vec::new();
    match (&*before, &*after) {
        (Resolution::OptedIn { settings: was, .. }, Resolution::OptedIn { settings: now, .. }) => {
            if let (Some(was), Some(now)) = (was.pod_pool, now.pod_pool)
                && was != now
            {
                warnings.push(fit_warning(&format!(
                    "capi-calico: the Calico pool changes from {} (blocks /{}) to {} (blocks /{})",
                    was.cidr, was.block_size, now.cidr, now.block_size
                )));
                warnings.push(fit_warning(
                    "capi-calico: a running cluster cannot follow that (Calico's pools are immutable): create a new one",
                ));
            }
            // The node files follow the Cluster only when a KCP or KCT is written again (the template linker does it
            // for the KCTs it linked): say which, or a CALICO_VERSION or peer change seems to have reached every node.
            let differ = |target| match (
                prepare.injection(was, target),
                prepare.injection(now, target),
            ) {
                (Ok(a), Ok(b)) => a != b,
                _ => false,
            };
            let (control_plane, workers) = (differ(Target::ControlPlane), differ(Target::Workers));
            if control_plane {
                warnings.push(fit_warning(
                    "capi-calico: the KCP's node files change: it gets them at its next spec change, which rolls it out",
                ));
            }
            if workers {
                warnings.push(fit_warning(
                    "capi-calico: the workers' node files change: the template linker updates linked KCTs; edit any other KCT",
                ));
            }
            if control_plane || workers {
                warnings.push(fit_warning(
                    "capi-calico: running Machines keep their files: roll them out (or wait for replacements) for the new ones",
                ));
            }
        }
        (Resolution::NotOptedIn { .. }, Resolution::OptedIn { .. }) => {
            warnings.push(fit_warning(
                "capi-calico: opted in after creation: Calico is delivered to the cluster as soon as it answers",
            ));
            warnings.push(fit_warning(
                "capi-calico: if it already runs another CNI, both will run: opt in at creation, with CNI none",
            ));
        }
        _ => {}
    }
    warnings
}

/// How a denial because the Cluster could not be looked up begins (the template linker retries such a one soon).
pub const LOOKUP_FAILED_MESSAGE: &str = "could not look up the Cluster of";

/// The rule id of a denial because the Cluster could not be looked up (API error or timeout).
const LOOKUP_FAILED_RULE: &str = "cluster-lookup-failed";

/// The rule id of a Cluster pod block that is not a CIDR.
const POD_CIDR_BLOCKS_RULE: &str = "pod-cidr-blocks-format";

fn cluster_verdict<S: ClusterSource, P: Prepare>(
    source: &S,
    prepare: &P,
    endpoint: Endpoint,
    object: &Value,
    annotations: &BTreeMap<String, String>,
) -> Verdict {
    let (network, unparsable) = cluster_network(object);
    let resolution = prepare.resolve(annotations, Some(&network));
    // An opted-in Cluster's pod blocks are checked against CALICO_POD_CIDR and become the pool's default, and the
    // reconciler refuses to deliver with blocks it cannot read: refuse them here, where they can be fixed.
    if !unparsable.is_empty() && !matches!(&*resolution, Resolution::NotOptedIn { .. }) {
        let line = crate::cluster::unparsable_pod_blocks_message(&unparsable);
        let (message, mut rules) = match &*resolution {
            // Not an annotation problem: after the annotations' list, under its own lead sentence.
            Resolution::Invalid { problems } => (
                format!(
                    "{}\nand 1 problem with the Cluster's spec:\n- {line}",
                    settings::render_problems(problems)
                ),
                problems.iter().map(|p| p.rule.to_string()).collect(),
            ),
            _ => (line, Vec::new()),
        };
        rules.push(POD_CIDR_BLOCKS_RULE.to_string());
        return Verdict::Deny {
            message,
            rules,
            warnings: Vec::new(),
        };
    }
    match &*resolution {
        Resolution::NotOptedIn { warnings } => {
            let mut warnings = fit_all(warnings);
            let patch = match endpoint {
                Endpoint::Mutate => cluster_label_removal(object),
                Endpoint::Validate => Vec::new(),
            };
            if !patch.is_empty() {
                warnings.push(LABEL_REMOVED_WARNING.to_string());
            }
            Verdict::Allow { patch, warnings }
        }
        Resolution::OptedIn { settings, warnings } => {
            // Settings its KubeadmControlPlane could never receive (a peer too large for one file, say) are refused
            // here, where the user can fix them, rather than on every later write of the KCP.
            if let Err(err) = prepare.injection(settings, Target::ControlPlane) {
                return mutation_denial(err, fit_all(warnings));
            }
            let mut warnings = warnings.clone();
            if let Some(loaded) = source.calico_bundles() {
                warnings.extend(crate::delivery::bundle_missing_warning(
                    &settings.calico_version,
                    &loaded,
                ));
            }
            let patch = match endpoint {
                Endpoint::Mutate => cluster_label_patch(object),
                Endpoint::Validate => Vec::new(),
            };
            // generateName: the API server picks the name after admission, so the label (the name) waits for the
            // Cluster's next spec change (Cluster API sets its controlPlaneEndpoint soon after creation).
            let patch =
                if endpoint == Endpoint::Mutate && object.pointer("/metadata/name").is_none() {
                    warnings.push(GENERATED_NAME_WARNING.to_string());
                    // A label copied from another Cluster's manifest would select that Cluster's set meanwhile.
                    cluster_label_removal(object)
                } else {
                    patch
                };
            Verdict::Allow {
                patch,
                warnings: fit_all(&warnings),
            }
        }
        Resolution::Invalid { problems } => Verdict::Deny {
            message: settings::render_problems(problems),
            rules: problems.iter().map(|p| p.rule.to_string()).collect(),
            warnings: Vec::new(),
        },
    }
}

fn apply_settings<P: Prepare>(
    prepare: &P,
    endpoint: Endpoint,
    target: Target,
    object: &Value,
    settings: &settings::Settings,
    warnings: Vec<String>,
) -> Verdict {
    let injection = match prepare.injection(settings, target) {
        Ok(injection) => injection,
        Err(err) => return mutation_denial(err, warnings),
    };
    match endpoint {
        Endpoint::Mutate => match mutation::patch(object, target, &injection) {
            Ok(patch) => Verdict::Allow { patch, warnings },
            Err(err) => mutation_denial(err, warnings),
        },
        Endpoint::Validate => {
            let problems = mutation::verify(object, target, &injection);
            if problems.is_empty() {
                Verdict::allow(warnings)
            } else {
                let mut message = String::from(
                    "the Calico files and commands injected by capi-calico-webhook are missing or were changed \
                     after injection (another mutating webhook or an edit?):",
                );
                for problem in &problems {
                    message.push_str("\n- ");
                    message.push_str(problem);
                }
                Verdict::Deny {
                    message,
                    rules: vec!["injection-intact".to_string()],
                    warnings,
                }
            }
        }
    }
}

fn mutation_denial(err: mutation::MutationError, warnings: Vec<String>) -> Verdict {
    Verdict::Deny {
        message: format!("the Calico injection cannot be built: {err}"),
        rules: vec!["injection-limits".to_string()],
        warnings,
    }
}

/// The rule id of [`on_update`]'s denial.
pub const KEEP_KUBEADM_CONFIG_SPEC_RULE: &str = "kubeadm-config-spec-removal";

/// What only an UPDATE must not do. Cluster API's KubeadmControlPlane webhook forbids removing
/// `spec.kubeadmConfigSpec` from an existing KCP (no path of its update allow-list is that short), while an empty
/// one is invalid in v1beta2 (`minProperties: 1`): a KCP whose `kubeadmConfigSpec` holds nothing but our entries
/// cannot lose them in one write. Such a patch becomes a denial that says how to write it instead (on CREATE the
/// removal is fine, and the offline CLI renders creates).
pub fn on_update(kind: Kind, verdict: Verdict) -> Verdict {
    let removes_spec = |patch: &[PatchOperation]| {
        patch.iter().any(|op| {
            matches!(op, PatchOperation::Remove(r) if r.path.as_str() == "/spec/kubeadmConfigSpec")
        })
    };
    match verdict {
        Verdict::Allow { patch, warnings } if kind == Kind::ControlPlane && removes_spec(&patch) => {
            Verdict::Deny {
                message: "removing capi-calico's entries would leave spec.kubeadmConfigSpec of this \
                          KubeadmControlPlane empty, and Cluster API refuses removing it from an existing \
                          KubeadmControlPlane: set another kubeadmConfigSpec field in the same write (for example \
                          format: cloud-config), or keep INSTALL_CALICOCTL \"true\""
                    .to_string(),
                rules: vec![KEEP_KUBEADM_CONFIG_SPEC_RULE.to_string()],
                warnings,
            }
        }
        other => other,
    }
}

/// Patch operations of a verdict, for callers that apply them (the CLI's `render`).
pub fn patch_of(verdict: &Verdict) -> &[PatchOperation] {
    match verdict {
        Verdict::Allow { patch, .. } => patch,
        Verdict::Deny { .. } => &[],
    }
}

/// Said to an opted-in Cluster created with `generateName`.
const GENERATED_NAME_WARNING: &str = "capi-calico: generateName: label capi-calico.io/cluster is added at the Cluster's next spec change";

/// Said when [`cluster_label_removal`] removes the label.
const LABEL_REMOVED_WARNING: &str = "capi-calico: removed label capi-calico.io/cluster: it selects Calico's ClusterResourceSet; not opted in";

/// Remove `capi-calico.io/cluster` from a Cluster that is not opted in. The label selects a Cluster's Calico
/// ClusterResourceSet (in its namespace, by the value only): copied from another Cluster's manifest it would make
/// Cluster API install that Cluster's Calico here, and left on a Cluster that opted out it would make Cluster API
/// apply Calico again whenever the shared bundle copies change.
fn cluster_label_removal(object: &Value) -> Vec<PatchOperation> {
    use json_patch::{RemoveOperation, jsonptr::PointerBuf};
    if object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(CLUSTER_LABEL))
        .is_none()
    {
        return Vec::new();
    }
    vec![PatchOperation::Remove(RemoveOperation {
        path: PointerBuf::from_tokens(["metadata", "labels", CLUSTER_LABEL]),
    })]
}

/// Add `capi-calico.io/cluster: <name>` to an opted-in Cluster unless it is already there.
fn cluster_label_patch(object: &Value) -> Vec<PatchOperation> {
    use json_patch::{AddOperation, jsonptr::PointerBuf};
    let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
        return Vec::new();
    };
    let labels = object.pointer("/metadata/labels");
    if labels
        .and_then(|l| l.get(CLUSTER_LABEL))
        .and_then(Value::as_str)
        == Some(name)
    {
        return Vec::new();
    }
    let op = match labels.and_then(Value::as_object) {
        Some(_) => AddOperation {
            path: PointerBuf::from_tokens(["metadata", "labels", CLUSTER_LABEL]),
            value: Value::String(name.to_string()),
        },
        None => AddOperation {
            path: PointerBuf::from_tokens(["metadata", "labels"]),
            value: serde_json::json!({ CLUSTER_LABEL: name }),
        },
    };
    vec![PatchOperation::Add(op)]
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::cluster::{ClusterInfo, LookupSource};

    /// A source that answers with a fixed lookup and records the subjects asked for.
    struct FixedSource {
        answer: Lookup,
        asked: Mutex<Vec<Subject>>,
        bundles: Option<Vec<String>>,
    }

    impl FixedSource {
        fn new(answer: Lookup) -> Self {
            FixedSource {
                answer,
                asked: Mutex::new(Vec::new()),
                bundles: None,
            }
        }
        fn found(cluster: &Value) -> Self {
            Self::new(Lookup::Found {
                cluster: Box::new(ClusterInfo::from_object(cluster).expect("cluster")),
                source: LookupSource::Cache,
                also_used_by: Vec::new(),
            })
        }
    }

    impl ClusterSource for FixedSource {
        async fn find(&self, subject: &Subject) -> Lookup {
            self.asked.lock().expect("lock").push(subject.clone());
            self.answer.clone()
        }
        fn calico_bundles(&self) -> Option<Vec<String>> {
            self.bundles.clone()
        }
    }

    fn cluster(annotations: Value) -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "wl-1", "namespace": "team-a", "annotations": annotations},
            "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["100.96.0.0/11"]}},
                     "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io",
                                         "kind": "KubeadmControlPlane", "name": "wl-1-cp"}}
        })
    }

    fn calico_on() -> Value {
        json!({
            "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true",
            "capi-calico.io/INSTALL_CALICOCTL": "true",
        })
    }

    fn kcp(annotations: Value) -> Value {
        json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
            "metadata": {"name": "wl-1-cp", "namespace": "team-a", "annotations": annotations},
            "spec": {"version": "v1.33.0", "kubeadmConfigSpec": {"preKubeadmCommands": ["echo user"]}}
        })
    }

    fn run<S: ClusterSource>(source: &S, endpoint: Endpoint, object: &Value) -> Decided {
        let kind = Kind::of_object(object).expect("known kind");
        futures::executor::block_on(decide(source, endpoint, kind, object))
    }

    fn applied(object: &Value, verdict: &Verdict) -> Value {
        let mut out = object.clone();
        json_patch::patch(&mut out, patch_of(verdict)).expect("patch applies");
        out
    }

    fn warnings_of(verdict: &Verdict) -> &[String] {
        match verdict {
            Verdict::Allow { warnings, .. } | Verdict::Deny { warnings, .. } => warnings,
        }
    }

    /// A v1beta2 KCP whose kubeadmConfigSpec holds nothing but our entries: removing them removes the whole
    /// kubeadmConfigSpec, which Cluster API allows on CREATE and refuses on UPDATE, so [`on_update`] turns that
    /// patch into a denial; any other verdict passes unchanged.
    #[test]
    fn removing_the_whole_kubeadm_config_spec_is_refused_on_update_only() {
        let on = cluster(calico_on());
        let mut object = kcp(json!({}));
        object["spec"]["kubeadmConfigSpec"] = json!({});
        let injected = applied(
            &object,
            &run(&FixedSource::found(&on), Endpoint::Mutate, &object).verdict,
        );
        assert!(injected["spec"]["kubeadmConfigSpec"]["files"].is_array());
        let off = cluster(json!({
            "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true",
            "capi-calico.io/INSTALL_CALICOCTL": "false",
        }));
        let verdict = run(&FixedSource::found(&off), Endpoint::Mutate, &injected).verdict;
        assert!(
            applied(&injected, &verdict)["spec"]
                .get("kubeadmConfigSpec")
                .is_none(),
            "{verdict:?}"
        );
        match on_update(Kind::ControlPlane, verdict.clone()) {
            Verdict::Deny { message, rules, .. } => {
                assert_eq!(rules, [KEEP_KUBEADM_CONFIG_SPEC_RULE]);
                assert!(message.contains("format: cloud-config"), "{message}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        // A KCT may lose its whole spec; other patches of a KCP pass.
        assert_eq!(on_update(Kind::ConfigTemplate, verdict.clone()), verdict);
        let user = kcp(json!({}));
        let kept = run(&FixedSource::found(&off), Endpoint::Mutate, &user).verdict;
        assert_eq!(on_update(Kind::ControlPlane, kept.clone()), kept);
    }

    /// Each of `needles` is in one of the verdict's warnings, and every warning fits a `Warning:` line.
    fn assert_warned(verdict: &Verdict, needles: &[&str]) {
        let warnings = warnings_of(verdict);
        for needle in needles {
            assert!(
                warnings.iter().any(|w| w.contains(needle)),
                "{needle:?} not in {warnings:?}"
            );
        }
        assert!(
            warnings
                .iter()
                .all(|w| w.chars().count() <= MAX_WARNING_CHARS),
            "{warnings:?}"
        );
    }

    /// A key with the prefix in another case is not a setting of the KCP: the Cluster's settings still apply, and a
    /// warning names the key.
    #[test]
    fn a_kcp_key_with_the_prefix_in_another_case_keeps_the_cluster_settings() {
        let source = FixedSource::found(&cluster(calico_on()));
        let object = kcp(json!({"Capi-Calico.io/note": "x"}));
        let verdict = run(&source, Endpoint::Mutate, &object).verdict;
        assert!(!patch_of(&verdict).is_empty(), "{verdict:?}");
        let warnings = warnings_of(&verdict);
        assert!(
            warnings.iter().any(|w| w
                == "capi-calico: Capi-Calico.io/note is not read: write the prefix capi-calico.io/ in lower case"),
            "{warnings:?}"
        );
        assert_eq!(source.asked.lock().expect("lock").len(), 1);
    }

    /// A KCP with its own annotations but no master switch is not injected, and the warnings say why and what to do.
    #[test]
    fn own_annotations_without_the_switch_say_the_cluster_settings_are_not_used() {
        let source = FixedSource::found(&cluster(calico_on()));
        let object = kcp(json!({"capi-calico.io/CALICO_VERSION": "v3.31.7"}));
        let verdict = run(&source, Endpoint::Mutate, &object).verdict;
        assert!(patch_of(&verdict).is_empty(), "{verdict:?}");
        assert_warned(
            &verdict,
            &["its own capi-calico.io/ annotations, so its Cluster's are not used"],
        );
        assert!(
            warnings_of(&verdict)
                .iter()
                .any(|w| w.starts_with("capi-calico: remove them"))
        );
        assert!(source.asked.lock().expect("lock").is_empty());
    }

    /// A pod block that is not a CIDR (an unrendered template variable, say) is refused on an opted-in Cluster,
    /// alongside any settings problems; a Cluster that is not opted in is not judged.
    #[test]
    fn unparsable_pod_blocks_deny_an_opted_in_cluster() {
        let with_blocks = |annotations: Value| {
            let mut c = cluster(annotations);
            c["spec"]["clusterNetwork"]["pods"]["cidrBlocks"] =
                json!(["${POD_CIDR}", "100.96.0.0/11"]);
            c
        };
        match run(
            &NoLookupPanics,
            Endpoint::Validate,
            &with_blocks(calico_on()),
        )
        .verdict
        {
            Verdict::Deny { message, rules, .. } => {
                assert_eq!(
                    message,
                    "spec.clusterNetwork.pods.cidrBlocks: \"${POD_CIDR}\" is not a CIDR (like 100.96.0.0/11): fix the \
                     Cluster's pod blocks"
                );
                assert_eq!(rules, ["pod-cidr-blocks-format"]);
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        let mut bad = calico_on();
        bad["capi-calico.io/CALICO_BLOCK_SIZE"] = json!("19");
        match run(&NoLookupPanics, Endpoint::Mutate, &with_blocks(bad)).verdict {
            Verdict::Deny { message, rules, .. } => {
                assert!(
                    message.contains("capi-calico.io/CALICO_BLOCK_SIZE"),
                    "{message}"
                );
                assert!(
                    message.contains("\nand 1 problem with the Cluster's spec:\n"),
                    "{message}"
                );
                assert!(message.ends_with("- spec.clusterNetwork.pods.cidrBlocks: \"${POD_CIDR}\" is not a CIDR (like \
                     100.96.0.0/11): fix the Cluster's pod blocks"), "{message}");
                assert_eq!(rules.len(), 2, "{rules:?}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        assert_eq!(
            run(&NoLookupPanics, Endpoint::Validate, &with_blocks(json!({}))).verdict,
            Verdict::allow(Vec::new())
        );
    }

    /// Opting out leaves an injected KCP as it is, and the warnings say so and how to remove the entries.
    #[test]
    fn an_injected_kcp_of_an_opted_out_cluster_is_kept_with_a_warning() {
        let injected = applied(
            &kcp(json!({})),
            &run(
                &FixedSource::found(&cluster(calico_on())),
                Endpoint::Mutate,
                &kcp(json!({})),
            )
            .verdict,
        );
        let off = json!({"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "false"});
        let verdict = run(
            &FixedSource::found(&cluster(off)),
            Endpoint::Mutate,
            &injected,
        )
        .verdict;
        assert!(patch_of(&verdict).is_empty(), "{verdict:?}");
        assert_warned(
            &verdict,
            &[
                "keeps capi-calico's files and commands",
                "opt in again with INSTALL_CALICOCTL and CONFIGURE_CALICO_BGP_SETTINGS",
            ],
        );
        // A KCP that never had them gets no such warning.
        let plain = run(
            &FixedSource::found(&cluster(json!({}))),
            Endpoint::Mutate,
            &kcp(json!({})),
        )
        .verdict;
        assert_eq!(plain, Verdict::allow(Vec::new()));
    }

    /// Changing the pool of an opted-in Cluster, or opting in an existing one, is warned about; other changes and
    /// changes that keep the resolved pool (an explicit CIDR equal to the default) are not.
    #[test]
    fn cluster_changes_a_running_cluster_cannot_follow_are_warned_about() {
        let with = |extra: Value| {
            let mut annotations = calico_on();
            for (k, v) in extra.as_object().expect("map") {
                annotations[k] = v.clone();
            }
            cluster(annotations)
        };
        let base = with(json!({}));
        let bgp = |asn: &str| {
            use base64::Engine as _;
            let peers = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr1\nspec:\n  peerIP: 192.0.2.10\n  asNumber: 64512\n";
            with(json!({
                "capi-calico.io/CONFIGURE_CALICO_BGP_SETTINGS": "true",
                "capi-calico.io/CALICO_BGP_OPTION": "Enabled",
                "capi-calico.io/CALICO_BGP_AS_NUMBER": asn,
                "capi-calico.io/CALICO_ROUTE_REFLECTORS": base64::engine::general_purpose::STANDARD.encode(peers),
            }))
        };
        const KCP: &str = "the KCP's node files change: it gets them at its next spec change";
        const WORKERS: &str =
            "the workers' node files change: the template linker updates linked KCTs";
        const MACHINES: &str = "running Machines keep their files";
        let cases: [(Value, Value, &[&str]); 9] = [
            (
                base.clone(),
                with(json!({"capi-calico.io/CALICO_VERSION": "v3.30.7"})),
                &[KCP, WORKERS, MACHINES],
            ),
            (
                base.clone(),
                with(json!({"capi-calico.io/INSTALL_CALICOCTL": "false"})),
                &[KCP, WORKERS, MACHINES],
            ),
            // The BGP settings are the control plane's only.
            (bgp("64513"), bgp("64514"), &[KCP, MACHINES]),
            (
                base.clone(),
                with(json!({"capi-calico.io/CALICO_BLOCK_SIZE": "27"})),
                &[
                    "from 100.96.0.0/11 (blocks /28) to 100.96.0.0/11 (blocks /27)",
                    "Calico's pools are immutable",
                ],
            ),
            (
                base.clone(),
                with(json!({"capi-calico.io/CALICO_POD_CIDR": "100.96.0.0/12"})),
                &[
                    "to 100.96.0.0/12 (blocks /28)",
                    "Calico's pools are immutable",
                ],
            ),
            (
                cluster(json!({})),
                base.clone(),
                &["opted in after creation", "both will run"],
            ),
            (
                base.clone(),
                with(json!({"capi-calico.io/CALICO_POD_CIDR": "100.96.0.0/11"})),
                &[],
            ),
            (
                base.clone(),
                with(json!({"capi-calico.io/CALICO_NAT_OUTGOING": "Disabled"})),
                &[],
            ),
            (base.clone(), cluster(json!({})), &[]),
        ];
        for (old, new, wanted) in cases {
            let warnings = cluster_change_warnings(&Compute, &old, &new);
            assert_eq!(warnings.len(), wanted.len(), "{warnings:#?} for {wanted:?}");
            for (warning, wanted) in warnings.iter().zip(wanted) {
                assert!(warning.contains(wanted), "{warnings:#?} for {wanted:?}");
                assert!(warning.chars().count() <= MAX_WARNING_CHARS, "{warning}");
            }
        }
    }

    #[test]
    fn clusters_not_opted_in_are_left_alone() {
        let c = cluster(json!({}));
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let decided = run(&NoLookupPanics, endpoint, &c);
            assert_eq!(decided.verdict, Verdict::allow(Vec::new()));
        }
    }

    /// The selector label on a Cluster that is not opted in (copied from another Cluster's manifest, or left after
    /// opting out) is removed by /mutate, with a warning; /validate only admits.
    #[test]
    fn clusters_not_opted_in_lose_the_selector_label() {
        for annotations in [
            json!({}),
            json!({"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "false"}),
        ] {
            let mut object = cluster(annotations);
            object["metadata"]["labels"] = json!({CLUSTER_LABEL: "prod-1", "team": "a"});
            let source = FixedSource::new(Lookup::Disabled);
            let verdict = run(&source, Endpoint::Mutate, &object).verdict;
            assert_eq!(
                applied(&object, &verdict)["metadata"]["labels"],
                json!({"team": "a"})
            );
            assert!(warnings_of(&verdict).contains(&LABEL_REMOVED_WARNING.to_string()));
            assert!(LABEL_REMOVED_WARNING.chars().count() <= MAX_WARNING_CHARS);
            let verdict = run(&source, Endpoint::Validate, &object).verdict;
            assert!(patch_of(&verdict).is_empty(), "{verdict:?}");
        }
    }

    /// An opted-in Cluster created with generateName has no name to label with yet: admitted, and told when.
    #[test]
    fn a_generated_name_is_labelled_later_and_said_so() {
        let mut object = cluster(calico_on());
        object["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("name");
        object["metadata"]["generateName"] = json!("wl-");
        let verdict = run(
            &FixedSource::new(Lookup::Disabled),
            Endpoint::Mutate,
            &object,
        )
        .verdict;
        assert!(patch_of(&verdict).is_empty(), "{verdict:?}");
        assert!(warnings_of(&verdict).contains(&GENERATED_NAME_WARNING.to_string()));
        // A label copied from another Cluster goes (it would select that Cluster's set until the name is known).
        object["metadata"]["labels"] = json!({CLUSTER_LABEL: "prod-1"});
        let verdict = run(
            &FixedSource::new(Lookup::Disabled),
            Endpoint::Mutate,
            &object,
        )
        .verdict;
        assert_eq!(applied(&object, &verdict)["metadata"]["labels"], json!({}));
        assert!(GENERATED_NAME_WARNING.chars().count() <= MAX_WARNING_CHARS);
    }

    #[test]
    fn opted_in_clusters_get_the_selector_label_once() {
        let c = cluster(calico_on());
        let first = run(&NoLookupPanics, Endpoint::Mutate, &c).verdict;
        let labelled = applied(&c, &first);
        assert_eq!(
            labelled.pointer("/metadata/labels/capi-calico.io~1cluster"),
            Some(&json!("wl-1"))
        );
        assert_eq!(
            patch_of(&run(&NoLookupPanics, Endpoint::Mutate, &labelled).verdict),
            &[]
        );
        assert_eq!(
            patch_of(&run(&NoLookupPanics, Endpoint::Validate, &c).verdict),
            &[]
        );
    }

    #[test]
    fn a_cluster_whose_calico_bundle_is_missing_is_admitted_with_a_warning() {
        let c = cluster(calico_on());
        let cases: [(Option<Vec<String>>, bool); 4] = [
            (None, false),
            (Some(vec![]), true),
            (Some(vec!["v3.30.7".to_string()]), true),
            (Some(vec!["v3.31.7".to_string()]), false),
        ];
        for (bundles, warned) in cases {
            let mut source = FixedSource::new(Lookup::Disabled);
            source.bundles = bundles.clone();
            for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
                match run(&source, endpoint, &c).verdict {
                    Verdict::Allow { warnings, .. } => {
                        let has = warnings
                            .iter()
                            .any(|w| w.contains("no Calico operator bundle v3.31.7"));
                        assert_eq!(has, warned, "{bundles:?}: {warnings:?}");
                        assert!(warnings.iter().all(|w| w.chars().count() < 120));
                    }
                    other => panic!("expected allow, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn invalid_cluster_settings_are_denied_with_every_key() {
        let c = cluster(json!({
            "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true",
            "capi-calico.io/CALICO_BLOCK_SIZE": "19",
            "capi-calico.io/CALICO_BGP_OPTION": "enabled",
        }));
        match run(&NoLookupPanics, Endpoint::Validate, &c).verdict {
            Verdict::Deny { message, rules, .. } => {
                assert!(
                    message.contains("capi-calico.io/CALICO_BLOCK_SIZE"),
                    "{message}"
                );
                assert!(
                    message.contains("capi-calico.io/CALICO_BGP_OPTION"),
                    "{message}"
                );
                assert!(message.contains("Enabled"), "{message}");
                assert_eq!(rules.len(), 2, "{rules:?}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    /// Valid settings whose KubeadmControlPlane injection cannot be built (one BGPPeer too large for a file) are
    /// refused on the Cluster, at both endpoints, instead of admitting a Cluster whose KCP writes would all fail.
    #[test]
    fn a_cluster_whose_injection_cannot_be_built_is_denied() {
        use base64::Engine as _;
        let label = |c: char| c.to_string().repeat(62);
        let filters: Vec<String> = (0..64)
            .map(|i| {
                format!(
                    "f{i:02}{}.{}.{}.{}",
                    label('a'),
                    label('b'),
                    label('c'),
                    label('d')
                )[..250]
                    .to_string()
            })
            .collect();
        let peer = format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr-big\nspec:\n  peerIP: 192.0.2.10\n  \
             asNumber: 64513\n  filters:\n{}",
            filters
                .iter()
                .map(|f| format!("    - {f}\n"))
                .collect::<String>()
        );
        let mut annotations = calico_on();
        annotations["capi-calico.io/CONFIGURE_CALICO_BGP_SETTINGS"] = json!("true");
        annotations["capi-calico.io/CALICO_BGP_AS_NUMBER"] = json!("64512");
        annotations["capi-calico.io/CALICO_BGP_OPTION"] = json!("Enabled");
        annotations["capi-calico.io/CALICO_ROUTE_REFLECTORS"] =
            json!(base64::engine::general_purpose::STANDARD.encode(&peer));
        let c = cluster(annotations);
        let source = FixedSource::found(&c);
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            match run(&source, endpoint, &c).verdict {
                Verdict::Deny { message, rules, .. } => {
                    assert_eq!(rules, ["injection-limits"], "{message}");
                    assert!(message.contains("rr-big"), "{message}");
                    assert!(message.contains("shorten it"), "{message}");
                }
                other => panic!("expected a denial, got {other:?}"),
            }
        }
    }

    #[test]
    fn kcp_gets_its_clusters_injection_and_is_idempotent() {
        let source = FixedSource::found(&cluster(calico_on()));
        let object = kcp(json!({}));
        let first = run(&source, Endpoint::Mutate, &object);
        assert_eq!(first.lookup, "cache");
        assert!(!patch_of(&first.verdict).is_empty(), "{:?}", first.verdict);
        let mutated = applied(&object, &first.verdict);
        assert_eq!(
            mutated.pointer("/spec/kubeadmConfigSpec/preKubeadmCommands/0"),
            Some(&json!("echo user")),
            "the user's command stays first"
        );
        assert_eq!(
            patch_of(&run(&source, Endpoint::Mutate, &mutated).verdict),
            &[]
        );
        assert_eq!(
            run(&source, Endpoint::Validate, &mutated).verdict.outcome(),
            crate::admission::api::Outcome::Allowed
        );
        let asked = source.asked.lock().expect("lock");
        assert_eq!(asked[0].kind, SubjectKind::ControlPlane);
        assert_eq!(
            (asked[0].namespace.as_str(), asked[0].name.as_str()),
            ("team-a", "wl-1-cp")
        );
    }

    #[test]
    fn validate_denies_an_altered_injection() {
        let source = FixedSource::found(&cluster(calico_on()));
        let object = kcp(json!({}));
        let mut mutated = applied(&object, &run(&source, Endpoint::Mutate, &object).verdict);
        let files = mutated
            .pointer_mut("/spec/kubeadmConfigSpec/files")
            .and_then(Value::as_array_mut)
            .expect("files injected");
        files.clear();
        match run(&source, Endpoint::Validate, &mutated).verdict {
            Verdict::Deny { rules, .. } => assert_eq!(rules, vec!["injection-intact".to_string()]),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn own_annotations_win_and_skip_the_lookup() {
        let object = kcp(calico_on());
        let decided = run(&NoLookupPanics, Endpoint::Mutate, &object);
        assert!(!patch_of(&decided.verdict).is_empty());
        assert_eq!(decided.lookup, "");
    }

    #[test]
    fn invalid_cluster_settings_deny_the_kcp_and_point_at_the_cluster() {
        let source = FixedSource::found(&cluster(json!({
            "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true",
            "capi-calico.io/CALICO_ENCAPSULATION": "ipip",
        })));
        match run(&source, Endpoint::Mutate, &kcp(json!({}))).verdict {
            Verdict::Deny { message, .. } => {
                assert!(message.contains("Cluster team-a/wl-1"), "{message}");
                assert!(message.contains("fix them on the Cluster"), "{message}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    /// A lookup that fails (API error, timeout) denies: retrying is cheap, a KCP admitted without its injection is
    /// not.
    #[test]
    fn a_failed_lookup_denies_with_the_reason_and_a_retry() {
        let answer = Lookup::Failed {
            reason: "reading Cluster team-a/wl-1 timed out after 1.5s".to_string(),
        };
        let label = answer.label();
        let decided = run(&FixedSource::new(answer), Endpoint::Mutate, &kcp(json!({})));
        assert_eq!(decided.lookup, label);
        match decided.verdict {
            Verdict::Deny { message, rules, .. } => {
                assert!(
                    message.starts_with(
                        "could not look up the Cluster of KubeadmControlPlane wl-1-cp (reading Cluster team-a/wl-1 \
                         timed out after 1.5s); retry in a moment"
                    ),
                    "{message}"
                );
                assert_eq!(rules, [LOOKUP_FAILED_RULE]);
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn lookup_misses_admit_with_short_warnings() {
        let cases = [
            Lookup::NotFound {
                looked_for: "a Cluster in namespace team-a whose spec.controlPlaneRef names KubeadmControlPlane \
                             wl-1-cp-with-a-rather-long-name-that-goes-on-and-on"
                    .to_string(),
                named: false,
            },
            Lookup::NotFound {
                looked_for: "Cluster team-a/wl-1 (the clusterName of its MachineDeployment)".to_string(),
                named: true,
            },
            Lookup::Disabled,
        ];
        for answer in cases {
            let label = answer.label();
            let decided = run(&FixedSource::new(answer), Endpoint::Mutate, &kcp(json!({})));
            assert_eq!(decided.lookup, label);
            match decided.verdict {
                Verdict::Allow { patch, warnings } => {
                    assert!(patch.is_empty());
                    assert!(!warnings.is_empty());
                    for w in warnings {
                        assert!(w.chars().count() < 120, "{w}");
                    }
                }
                other => panic!("expected allow, got {other:?}"),
            }
        }
    }

    /// A KCT whose MachineDeployment names a Cluster that does not exist: told to apply that Cluster, not to label
    /// the template, and not that it might be a ClusterClass's own template.
    #[test]
    fn a_kct_linked_to_a_missing_cluster_is_told_to_apply_the_cluster() {
        let kct = json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": "wl-1-md-0", "namespace": "team-a"},
            "spec": {"template": {"spec": {}}}
        });
        let source = FixedSource::new(Lookup::NotFound {
            looked_for: "Cluster team-a/wl-1 (the clusterName of its MachineDeployment)"
                .to_string(),
            named: true,
        });
        let warnings = warnings_of(&run(&source, Endpoint::Mutate, &kct).verdict).to_vec();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[2].contains("create that Cluster"), "{warnings:?}");
        assert!(
            !warnings
                .iter()
                .any(|w| w.contains("ClusterClass") || w.contains("label it")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_kct_without_its_machinedeployment_is_told_to_apply_the_machinedeployment_first() {
        let kct = json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": "wl-1-md-0", "namespace": "team-a"},
            "spec": {"template": {"spec": {"preKubeadmCommands": ["echo user"]}}}
        });
        let source = FixedSource::new(Lookup::NotFound {
            looked_for: "a MachineDeployment in namespace team-a whose bootstrap configRef names \
                         KubeadmConfigTemplate wl-1-md-0"
                .to_string(),
            named: false,
        });
        let Verdict::Allow { patch, warnings } = run(&source, Endpoint::Mutate, &kct).verdict
        else {
            panic!("expected allow");
        };
        assert!(patch.is_empty());
        let hint = warnings.get(2).expect("hint");
        assert!(
            hint.ends_with("or apply the Cluster and its MachineDeployment before it"),
            "{hint}"
        );
        // A ClusterClass's worker template is also applied without a Cluster: it must not be labelled.
        assert_eq!(
            warnings.last().map(String::as_str),
            Some(
                "capi-calico: a ClusterClass's own MachineDeployment template needs nothing: its per-Cluster \
                 copies are injected"
            )
        );
        assert!(hint.chars().count() <= MAX_WARNING_CHARS, "{hint}");
        // the KCP keeps its hint
        let Verdict::Allow { warnings, .. } =
            run(&source, Endpoint::Mutate, &kcp(json!({}))).verdict
        else {
            panic!("expected allow");
        };
        assert!(
            warnings
                .last()
                .expect("hint")
                .ends_with("or apply the Cluster before it"),
            "{warnings:?}"
        );
    }

    /// The "looked for" line must not lose its point to the 119-character cut: the object's name is on the first
    /// line already, so the lookup texts do not repeat it, and the namespace (which the user knows) comes last
    /// (a 16-character namespace once cut off `... names KubeadmControlPlane...`).
    #[test]
    fn lookup_miss_warnings_survive_long_namespaces_and_names() {
        let ns = "team-platform-engineering-production-eu1";
        let name = "workload-cluster-with-a-long-name-control-plane";
        let mut k = kcp(json!({}));
        k["metadata"]["namespace"] = json!(ns);
        k["metadata"]["name"] = json!(name);
        let mut t = json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"template": {"spec": {"preKubeadmCommands": ["echo user"]}}}
        });
        t["metadata"]["name"] = json!(format!("{name}-md-0"));
        let source = crate::cluster::documents::DocumentSource::new(std::iter::empty());
        for object in [&k, &t] {
            let Verdict::Allow { warnings, .. } = run(&source, Endpoint::Mutate, object).verdict
            else {
                panic!("expected allow");
            };
            let looked_for = &warnings[1];
            assert!(
                looked_for.contains("names it, in namespace team-"),
                "{looked_for}"
            );
        }
    }

    #[test]
    fn a_kct_shared_with_clusters_of_other_settings_says_so() {
        let kct = json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": "shared-md", "namespace": "team-a"},
            "spec": {"template": {"spec": {}}}
        });
        let named = |name: &str, annotations: Value| {
            let mut c = cluster(annotations);
            c["metadata"]["name"] = json!(name);
            ClusterInfo::from_object(&c).expect("cluster")
        };
        let mut other_version = calico_on();
        other_version["capi-calico.io/CALICO_VERSION"] = json!("v3.30.7");
        let mut no_calicoctl = calico_on();
        no_calicoctl["capi-calico.io/INSTALL_CALICOCTL"] = json!("false");
        // (the Cluster the template follows, the other users, the other users named in the warning)
        let cases: Vec<(Value, Vec<ClusterInfo>, Option<&str>)> = vec![
            (calico_on(), vec![], None),
            (calico_on(), vec![named("b", calico_on())], None),
            (calico_on(), vec![named("b", json!({}))], Some("Cluster b ")),
            (
                calico_on(),
                vec![named("b", other_version.clone())],
                Some("Cluster b "),
            ),
            (
                calico_on(),
                vec![
                    named("b", calico_on()),
                    named("c", other_version),
                    named("d", json!({})),
                ],
                Some("Clusters c, d "),
            ),
            // Neither gives the workers anything: no difference that matters.
            (no_calicoctl.clone(), vec![named("b", json!({}))], None),
            (json!({}), vec![named("b", no_calicoctl)], None),
            // The template follows a Cluster that is not opted in; another user is.
            (json!({}), vec![named("b", calico_on())], Some("Cluster b ")),
        ];
        for (annotations, also_used_by, named_in_warning) in cases {
            let source = FixedSource::new(Lookup::Found {
                cluster: Box::new(
                    ClusterInfo::from_object(&cluster(annotations.clone())).expect("cluster"),
                ),
                source: LookupSource::Cache,
                also_used_by: also_used_by.clone(),
            });
            let decided = run(&source, Endpoint::Mutate, &kct);
            let Verdict::Allow { warnings, .. } = &decided.verdict else {
                panic!("denied: {:?}", decided.verdict);
            };
            let sharing: Vec<&String> = warnings
                .iter()
                .filter(|w| {
                    w.contains("use this template too") || w.contains("own KubeadmConfigTemplate")
                })
                .collect();
            match named_in_warning {
                None => assert!(
                    sharing.is_empty(),
                    "{annotations} {also_used_by:?}: {warnings:?}"
                ),
                Some(names) => {
                    assert_eq!(sharing.len(), 2, "{warnings:?}");
                    assert!(sharing[0].contains(names), "{names}: {warnings:?}");
                    let follows = if annotations == json!({}) {
                        "it follows Cluster wl-1, whose settings give workers no capi-calico entries"
                    } else {
                        "all its workers get Cluster wl-1's capi-calico entries"
                    };
                    assert!(warnings.iter().any(|w| w.contains(follows)), "{warnings:?}");
                    assert!(
                        warnings
                            .iter()
                            .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
                    );
                }
            }
            // The template is injected for the Cluster it follows, whoever else uses it.
            let alone = run(
                &FixedSource::found(&cluster(annotations.clone())),
                Endpoint::Mutate,
                &kct,
            );
            assert_eq!(
                patch_of(&decided.verdict),
                patch_of(&alone.verdict),
                "{annotations}"
            );
        }
        // A template that keeps its entries because its Cluster opted out says that, not who else uses it.
        let injected = run(
            &FixedSource::found(&cluster(calico_on())),
            Endpoint::Mutate,
            &kct,
        );
        let injected = applied(&kct, &injected.verdict);
        let source = FixedSource::new(Lookup::Found {
            cluster: Box::new(ClusterInfo::from_object(&cluster(json!({}))).expect("cluster")),
            source: LookupSource::Cache,
            also_used_by: vec![named("b", calico_on())],
        });
        let Verdict::Allow { warnings, patch } = run(&source, Endpoint::Mutate, &injected).verdict
        else {
            panic!("denied");
        };
        assert!(patch.is_empty());
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("keeps capi-calico's files")),
            "{warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("use this template too")),
            "{warnings:?}"
        );
    }

    #[test]
    fn fit_warning_bounds_and_flattens() {
        assert_eq!(fit_warning("a\nb"), "a b");
        let long = "x".repeat(500);
        assert_eq!(fit_warning(&long).chars().count(), MAX_WARNING_CHARS);
    }

    /// For objects that must never trigger a lookup.
    struct NoLookupPanics;

    impl ClusterSource for NoLookupPanics {
        async fn find(&self, subject: &Subject) -> Lookup {
            panic!("no lookup expected, got one for {subject:?}")
        }
    }
}
