//! The decision for one object: which settings apply, and what to do with them. Shared by `serve` and the CLI.

use json_patch::PatchOperation;
use serde_json::Value;

use super::{Verdict, api::Endpoint};
use crate::{
    cluster::{
        ClusterInfo, ClusterSource, Lookup, Subject, SubjectKind, cluster_network, string_map,
    },
    mutation::{self, Target},
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

fn fit_all(warnings: Vec<String>) -> Vec<String> {
    warnings.iter().map(|w| fit_warning(w)).collect()
}

/// Decide what to do with `object` (a Cluster, KCP or KCT) arriving at `endpoint`.
pub async fn decide<S: ClusterSource>(
    source: &S,
    endpoint: Endpoint,
    kind: Kind,
    object: &Value,
) -> Decided {
    let annotations = string_map(object.pointer("/metadata/annotations"));
    let (Some(target), Some(subject_kind)) = (kind.target(), kind.subject_kind()) else {
        return Decided::new(cluster_verdict(endpoint, object, &annotations));
    };

    let own = settings::has_settings(&annotations);
    let (resolution, origin, lookup) = if own {
        (
            settings::resolve(&annotations, None),
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
            Lookup::Found { cluster, .. } => {
                let resolution = settings::resolve(&cluster.annotations, Some(&cluster.network));
                (resolution, Origin::Cluster(cluster), label)
            }
            Lookup::NotFound { looked_for } => {
                let warnings = not_found_warnings(subject_kind, &subject.name, &looked_for);
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
                return Decided {
                    verdict: Verdict::allow(vec![
                        fit_warning(&format!(
                            "capi-calico: could not look up the Cluster of {} {}; admitted without Calico changes",
                            subject_kind.kind(),
                            subject.name
                        )),
                        fit_warning(&format!("capi-calico: {reason}")),
                    ]),
                    lookup: label,
                };
            }
        }
    };

    let verdict = match resolution {
        Resolution::NotOptedIn { warnings } => Verdict::allow(fit_all(warnings)),
        Resolution::Invalid { problems } => {
            let rules = problems.iter().map(|p| p.rule.to_string()).collect();
            let message = format!(
                "{}{}",
                origin.preamble(),
                settings::render_problems(&problems)
            );
            Verdict::Deny {
                message,
                rules,
                warnings: Vec::new(),
            }
        }
        Resolution::OptedIn { settings, warnings } => {
            apply_settings(endpoint, target, object, &settings, fit_all(warnings))
        }
    };
    Decided { verdict, lookup }
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

fn not_found_warnings(kind: SubjectKind, name: &str, looked_for: &str) -> Vec<String> {
    vec![
        fit_warning(&format!(
            "capi-calico: no Cluster found for {} {name}; admitted without Calico changes",
            kind.kind()
        )),
        fit_warning(&format!("capi-calico: looked for {looked_for}")),
        fit_warning(
            "capi-calico: label it cluster.x-k8s.io/cluster-name=<cluster>, or apply the Cluster before it",
        ),
    ]
}

/// The label the mutating webhook puts on opted-in Clusters; the ClusterResourceSet that delivers Calico selects it.
pub const CLUSTER_LABEL: &str = "capi-calico.io/cluster";

fn cluster_verdict(
    endpoint: Endpoint,
    object: &Value,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Verdict {
    let (network, _) = cluster_network(object);
    match settings::resolve(annotations, Some(&network)) {
        Resolution::NotOptedIn { warnings } => Verdict::allow(fit_all(warnings)),
        Resolution::OptedIn { warnings, .. } => {
            let patch = match endpoint {
                Endpoint::Mutate => cluster_label_patch(object),
                Endpoint::Validate => Vec::new(),
            };
            Verdict::Allow {
                patch,
                warnings: fit_all(warnings),
            }
        }
        Resolution::Invalid { problems } => Verdict::Deny {
            message: settings::render_problems(&problems),
            rules: problems.iter().map(|p| p.rule.to_string()).collect(),
            warnings: Vec::new(),
        },
    }
}

fn apply_settings(
    endpoint: Endpoint,
    target: Target,
    object: &Value,
    settings: &settings::Settings,
    warnings: Vec<String>,
) -> Verdict {
    let injection = match mutation::desired(settings, target) {
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

/// Patch operations of a verdict, for callers that apply them (the CLI's `render`).
pub fn patch_of(verdict: &Verdict) -> &[PatchOperation] {
    match verdict {
        Verdict::Allow { patch, .. } => patch,
        Verdict::Deny { .. } => &[],
    }
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
