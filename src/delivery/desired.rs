//! What the reconciler wants to exist for one Cluster: a pure function of the Cluster, its settings and the loaded
//! bundle. The controller only applies what this module computes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};

use super::{
    CLUSTER_LABEL, COUNT_ANNOTATION, DIGEST_ANNOTATION, DeliveryError, FIELD_MANAGER,
    INDEX_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL, STATUS_ANNOTATION, VERSION_LABEL,
    bundle::{Bundle, BundleProblem, select_bundle},
    installation::{installation_configmap, installation_configmap_name},
    version_tag,
};
use crate::{
    cluster::ClusterInfo,
    settings::{self, CalicoVersion, Resolution, Settings},
};

/// `apiVersion` of the Clusters the reconciler watches and owns objects for.
pub const CLUSTER_API_VERSION: &str = "cluster.x-k8s.io/v1beta2";
/// `apiVersion` of the ClusterResourceSet it writes.
pub const CRS_API_VERSION: &str = "addons.cluster.x-k8s.io/v1beta2";
/// The CRS strategy. `Reconcile`: when the Installation ConfigMap or a bundle chunk changes, CAPI applies it again
/// (see `docs/delivery.md`). The field is immutable, so it is a constant.
pub const CRS_STRATEGY: &str = "Reconcile";

/// The Cluster as the desired-state computation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Value of the [`CLUSTER_LABEL`] label, if any.
    pub selector_label: Option<String>,
}

impl ClusterRef {
    /// Read name, namespace, uid and the selector label from a Cluster object.
    pub fn from_object(object: &Value) -> Option<ClusterRef> {
        let metadata = object.get("metadata")?;
        let text = |k: &str| metadata.get(k).and_then(Value::as_str);
        Some(ClusterRef {
            namespace: text("namespace").unwrap_or("default").to_string(),
            name: text("name")?.to_string(),
            uid: text("uid")?.to_string(),
            selector_label: metadata
                .get("labels")
                .and_then(|l| l.get(CLUSTER_LABEL))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// An ownerReference to this Cluster. `controller: true` only for objects this Cluster alone owns;
    /// `blockOwnerDeletion` is left unset (setting it would need `update` on `clusters/finalizers`).
    pub fn owner_reference(&self, controller: bool) -> Value {
        let mut owner = json!({
            "apiVersion": CLUSTER_API_VERSION,
            "kind": "Cluster",
            "name": self.name,
            "uid": self.uid,
        });
        if controller {
            owner["controller"] = json!(true);
        }
        owner
    }
}

/// `<cluster>-calico`.
pub fn crs_name(cluster: &str) -> String {
    format!("{cluster}-calico")
}

/// Field manager that owns one Cluster's entry in the ownerReferences of a shared bundle copy. SSA merges
/// ownerReferences by `uid`, but a manager that applies a list owns exactly the entries it sent: one manager
/// applying "[this Cluster]" for each Cluster in turn would remove the previous Cluster's entry. A manager per
/// Cluster makes every entry independent, without a read-modify-write race between Clusters or replicas.
pub fn owner_field_manager(cluster_uid: &str) -> String {
    format!("{FIELD_MANAGER}/{cluster_uid}")
}

/// Everything to apply for one Cluster, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Copies of the bundle ConfigMaps in the Cluster's namespace (content only, applied by [`FIELD_MANAGER`]).
    pub bundle_copies: Vec<Value>,
    /// For each copy (same order), the apply body carrying only this Cluster's ownerReference, applied by
    /// [`owner_field_manager`].
    pub bundle_owners: Vec<Value>,
    /// `<cluster>-calico-installation`, owned (controller) by the Cluster.
    pub installation: Value,
    /// `<cluster>-calico`, owned (controller) by the Cluster.
    pub cluster_resource_set: Value,
}

fn copy_of(
    chunk: &super::bundle::BundleChunk,
    bundle: &Bundle,
    namespace: &str,
    count: usize,
) -> Value {
    let data: Map<String, Value> = chunk
        .data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": chunk.name,
            "namespace": namespace,
            "labels": {
                VERSION_LABEL: bundle.version,
                ROLE_LABEL: chunk.role.as_str(),
                MANAGED_BY_LABEL: MANAGED_BY,
            },
            "annotations": {
                INDEX_ANNOTATION: chunk.index.to_string(),
                COUNT_ANNOTATION: count.to_string(),
                DIGEST_ANNOTATION: bundle.digest,
            },
        },
        "data": data,
    })
}

/// The objects for `cluster` with `settings` and the loaded `bundle` (the one for `settings.calico_version`).
pub fn desired_objects(
    cluster: &ClusterRef,
    settings: &Settings,
    bundle: &Bundle,
) -> Result<Desired, DeliveryError> {
    let ns = cluster.namespace.as_str();
    let count = bundle.chunks.len();
    let bundle_copies: Vec<Value> = bundle
        .chunks
        .iter()
        .map(|c| copy_of(c, bundle, ns, count))
        .collect();
    let bundle_owners = bundle
        .chunks
        .iter()
        .map(|c| {
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": c.name,
                    "namespace": ns,
                    // Also here: when this apply creates the copy, the object must already be labelled as ours
                    // (deploy/base's ValidatingAdmissionPolicy admits only such ConfigMaps from the webhook).
                    "labels": { MANAGED_BY_LABEL: MANAGED_BY },
                    "ownerReferences": [cluster.owner_reference(false)],
                },
            })
        })
        .collect();

    let mut installation = installation_configmap(&cluster.name, ns, settings)?;
    installation["metadata"]["ownerReferences"] = json!([cluster.owner_reference(true)]);

    let mut resources: Vec<Value> = bundle
        .chunks
        .iter()
        .map(|c| json!({ "name": c.name, "kind": "ConfigMap" }))
        .collect();
    // The pull secret after the operator chunks (which create the tigera-operator namespace it lives in) and before
    // the Installation that names it. The user creates it (a Secret of type addons.cluster.x-k8s.io/resource-set);
    // the reconciler only names it, so it needs no access to Secrets.
    if let Some(secret) = &settings.images.pull_secret {
        resources.push(json!({ "name": secret, "kind": "Secret" }));
    }
    resources
        .push(json!({ "name": installation_configmap_name(&cluster.name), "kind": "ConfigMap" }));
    let cluster_resource_set = json!({
        "apiVersion": CRS_API_VERSION,
        "kind": "ClusterResourceSet",
        "metadata": {
            "name": crs_name(&cluster.name),
            "namespace": ns,
            "labels": {
                CLUSTER_LABEL: cluster.name,
                MANAGED_BY_LABEL: MANAGED_BY,
            },
            "ownerReferences": [cluster.owner_reference(true)],
        },
        "spec": {
            "clusterSelector": { "matchLabels": { CLUSTER_LABEL: cluster.name } },
            "strategy": CRS_STRATEGY,
            "resources": resources,
        },
    });
    Ok(Desired {
        bundle_copies,
        bundle_owners,
        installation,
        cluster_resource_set,
    })
}

/// `metadata.name` of an object, or `""`.
pub fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The condition-like state written to [`STATUS_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Everything applied.
    Delivered { version: String },
    /// Everything applied, but the Cluster lacks the `capi-calico.io/cluster` label, so the CRS selects nothing yet.
    LabelMissing { version: String },
    /// No bundle for the version in the bundle namespace.
    BundleMissing { message: String },
    /// A partial or mixed bundle.
    BundleIncomplete { message: String },
    /// The settings do not resolve (the validating webhook was bypassed or its rules changed).
    InvalidSettings { message: String },
    /// Valid settings the operator would refuse.
    Unsupported { message: String },
    /// Writing the delivery objects failed (a quota, an object someone else controls, a refusal by an admission
    /// webhook); retried.
    ApplyFailed { version: String, error: String },
    /// Everything applied here, but Cluster API reports that it could not apply the ClusterResourceSet to the
    /// workload cluster (its `ResourcesApplied` condition is `False`).
    NotApplied {
        version: String,
        crs: String,
        reason: String,
        message: String,
    },
}

/// What Cluster API last said about applying a ClusterResourceSet: its `ResourcesApplied` condition (v1beta2
/// `status.conditions`), for the set's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrsApplied {
    /// Not known yet: no condition, or one about an earlier generation of the set, or a `False` that is usually
    /// passing (the workload cluster not reachable yet while it provisions, a resource applied before its CRD is
    /// served): Cluster API tries again by itself.
    Unknown,
    /// Applied.
    Applied,
    /// Refused until the user acts, with Cluster API's reason and message: a listed Secret of another type than
    /// `addons.cluster.x-k8s.io/resource-set` (then Cluster API applies nothing of the set).
    Failed { reason: String, message: String },
}

/// Read [`CrsApplied`] from a ClusterResourceSet object.
pub fn crs_applied(crs: &Value) -> CrsApplied {
    let condition = crs
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("ResourcesApplied"));
    let Some(condition) = condition else {
        return CrsApplied::Unknown;
    };
    // Written for the spec our apply just replaced, it says nothing about the current one.
    let generation = crs.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = condition
        .get("observedGeneration")
        .and_then(Value::as_i64)
        .or_else(|| {
            crs.pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
        });
    if generation.is_none() || observed != generation {
        return CrsApplied::Unknown;
    }
    let text = |field: &str| {
        condition
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match condition.get("status").and_then(Value::as_str) {
        Some("True") => CrsApplied::Applied,
        Some("False") if text("reason") == WRONG_SECRET_TYPE => CrsApplied::Failed {
            reason: text("reason"),
            message: text("message"),
        },
        _ => CrsApplied::Unknown,
    }
}

/// Cluster API's reason for a Secret of another type than `addons.cluster.x-k8s.io/resource-set` in a set.
const WRONG_SECRET_TYPE: &str = "WrongSecretType";

impl DeliveryStatus {
    /// `Delivered`, `BundleMissing`, ...: the Event reason and the annotation's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            DeliveryStatus::Delivered { .. } => "Delivered",
            DeliveryStatus::LabelMissing { .. } => "LabelMissing",
            DeliveryStatus::BundleMissing { .. } => "BundleMissing",
            DeliveryStatus::BundleIncomplete { .. } => "BundleIncomplete",
            DeliveryStatus::InvalidSettings { .. } => "InvalidSettings",
            DeliveryStatus::Unsupported { .. } => "Unsupported",
            DeliveryStatus::NotApplied { .. } => NOT_APPLIED,
            DeliveryStatus::ApplyFailed { .. } => "ApplyFailed",
        }
    }

    /// The Calico version of a status that has one (the objects were or are being applied).
    pub fn version(&self) -> Option<&str> {
        match self {
            DeliveryStatus::Delivered { version }
            | DeliveryStatus::LabelMissing { version }
            | DeliveryStatus::ApplyFailed { version, .. }
            | DeliveryStatus::NotApplied { version, .. } => Some(version),
            _ => None,
        }
    }

    /// True only for [`DeliveryStatus::Delivered`].
    pub fn is_ready(&self) -> bool {
        matches!(self, DeliveryStatus::Delivered { .. })
    }

    /// Human-readable message.
    pub fn message(&self) -> String {
        match self {
            DeliveryStatus::Delivered { version } => format!(
                "Calico {version}: operator bundle, Installation and ClusterResourceSet are in place"
            ),
            DeliveryStatus::LabelMissing { version } => format!(
                "Calico {version}: objects are in place, but the Cluster has no label {CLUSTER_LABEL}=<cluster name>, so the ClusterResourceSet selects nothing (is the mutating webhook running?)"
            ),
            DeliveryStatus::ApplyFailed { version, error } => format!(
                "Calico {version}: writing the bundle copies, Installation ConfigMap or ClusterResourceSet failed \
                 (retried from 30 s on, less often while it fails): {error}"
            ),
            DeliveryStatus::NotApplied {
                version,
                crs,
                reason,
                message,
            } => {
                let hint = if reason == WRONG_SECRET_TYPE {
                    " (Cluster API applies nothing of a set that lists a Secret of another type than \
                     addons.cluster.x-k8s.io/resource-set: create the CALICO_IMAGE_PULL_SECRET Secret again with \
                     that type, and Cluster API applies the set again)"
                } else {
                    ""
                };
                format!(
                    "Calico {version}: objects are in place, but Cluster API has not applied the \
                     ClusterResourceSet {crs} to the workload cluster: {reason}: {message}{hint}"
                )
            }
            DeliveryStatus::BundleMissing { message }
            | DeliveryStatus::BundleIncomplete { message }
            | DeliveryStatus::InvalidSettings { message }
            | DeliveryStatus::Unsupported { message } => message.clone(),
        }
    }

    /// The annotation value: one line of JSON, `{"type":"CalicoDelivered","status":"True","reason":...,"message":...}`.
    /// No timestamp, so an unchanged state writes an unchanged value (and triggers nothing).
    pub fn annotation_value(&self) -> String {
        json!({
            "type": "CalicoDelivered",
            "status": if self.is_ready() { "True" } else { "False" },
            "reason": self.reason(),
            "message": self.message(),
        })
        .to_string()
    }
}

/// What to do for one Cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not opted in (or not a readable Cluster): touch nothing.
    Ignore,
    /// Apply these objects, then record the status.
    Apply {
        desired: Box<Desired>,
        status: DeliveryStatus,
    },
    /// Apply nothing; record the status (a problem).
    Report(DeliveryStatus),
}

/// Decide from the Cluster object and the bundle namespace's ConfigMaps (as JSON).
pub fn plan<'a>(
    cluster: &Value,
    bundle_namespace: &str,
    bundle_configmaps: impl IntoIterator<Item = &'a Value>,
) -> Plan {
    let (Some(info), Some(cref)) = (
        ClusterInfo::from_object(cluster),
        ClusterRef::from_object(cluster),
    ) else {
        return Plan::Ignore;
    };
    let settings = match settings::resolve(&info.annotations, Some(&info.network)) {
        Resolution::NotOptedIn { .. } => return Plan::Ignore,
        Resolution::Invalid { problems } => {
            return Plan::Report(DeliveryStatus::InvalidSettings {
                message: settings::render_problems(&problems),
            });
        }
        Resolution::OptedIn { settings, .. } => settings,
    };
    if !info.unparsable_pod_cidrs.is_empty() {
        return Plan::Report(DeliveryStatus::InvalidSettings {
            message: crate::cluster::unparsable_pod_blocks_message(&info.unparsable_pod_cidrs),
        });
    }
    // The copies are named like the loaded bundle: in the bundle namespace they would overwrite it, and the
    // Cluster would become an owner of it (deleting the Cluster would then delete every Cluster's bundle).
    if cref.namespace == bundle_namespace {
        return Plan::Report(DeliveryStatus::Unsupported {
            message: format!(
                "Clusters in {bundle_namespace}, the namespace of the loaded Calico bundles, get no delivery (the \
                 copies would overwrite the bundles): create the Cluster in another namespace"
            ),
        });
    }
    plan_for(&cref, &settings, bundle_configmaps)
}

/// [`plan`] once the settings are known.
pub fn plan_for<'a>(
    cluster: &ClusterRef,
    settings: &Settings,
    bundle_configmaps: impl IntoIterator<Item = &'a Value>,
) -> Plan {
    let version = version_tag(&settings.calico_version);
    let bundle = match select_bundle(bundle_configmaps, &version) {
        Ok(bundle) => bundle,
        Err(problem @ BundleProblem::Missing { .. }) => {
            return Plan::Report(DeliveryStatus::BundleMissing {
                message: problem.to_string(),
            });
        }
        Err(problem @ BundleProblem::Incomplete { .. }) => {
            return Plan::Report(DeliveryStatus::BundleIncomplete {
                message: problem.to_string(),
            });
        }
    };
    match desired_objects(cluster, settings, &bundle) {
        Ok(desired) => {
            let status = if cluster.selector_label.as_deref() == Some(cluster.name.as_str()) {
                DeliveryStatus::Delivered { version }
            } else {
                DeliveryStatus::LabelMissing { version }
            };
            Plan::Apply {
                desired: Box::new(desired),
                status,
            }
        }
        Err(e) => Plan::Report(DeliveryStatus::Unsupported {
            message: e.to_string(),
        }),
    }
}

/// For the admission path: warnings (each short enough for a `Warning:` line) when the bundle for `version` is not
/// among `loaded_versions` (`vX.Y.Z` values of the [`VERSION_LABEL`] label in the bundle namespace). Empty when it
/// is loaded.
pub fn bundle_missing_warning(version: &CalicoVersion, loaded_versions: &[String]) -> Vec<String> {
    let tag = version_tag(version);
    if loaded_versions.contains(&tag) {
        return Vec::new();
    }
    let mut loaded = if loaded_versions.is_empty() {
        "none".to_string()
    } else {
        loaded_versions.join(", ")
    };
    if loaded.len() > 40 {
        loaded.truncate(37);
        loaded.push_str("...");
    }
    vec![
        format!("capi-calico: no Calico operator bundle {tag} is loaded (loaded: {loaded})"),
        "capi-calico: Calico is not delivered until it is: see capi-calico-webhook bundle --help"
            .to_string(),
    ]
}

/// The current value of [`STATUS_ANNOTATION`] on a Cluster object.
pub fn current_status(cluster: &Value) -> Option<&str> {
    cluster
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .and_then(Value::as_str)
}

/// The `reason` of the status recorded on a Cluster (what [`DeliveryStatus::annotation_value`] wrote), if any.
pub fn recorded_reason(cluster: &Value) -> Option<String> {
    let recorded: Value = serde_json::from_str(current_status(cluster)?).ok()?;
    recorded.get("reason")?.as_str().map(str::to_string)
}

/// [`DeliveryStatus::reason`] of [`DeliveryStatus::NotApplied`].
pub const NOT_APPLIED: &str = "NotApplied";

/// A fingerprint of everything [`plan`] and the status record can depend on: the Cluster as a status-only update
/// leaves it ([`crate::cluster::seen::hash_cluster`]), and the name and resourceVersion of every bundle ConfigMap
/// (from their metadata: the reconciler computes this before it turns the ~2.6 MB of a loaded bundle into JSON, which
/// it does only when the fingerprint changed). Equal fingerprints give equal plans.
pub fn inputs_fingerprint<'a>(
    cluster: &Value,
    bundle_configmaps: impl IntoIterator<Item = &'a ObjectMeta>,
) -> u64 {
    use std::hash::{Hash, Hasher};

    let mut hasher = crate::cluster::seen::hasher();
    crate::cluster::seen::hash_cluster(cluster, &mut hasher);
    // Sorted: the bundle store is a hash map, which a relist rebuilds in another order.
    let mut bundle: Vec<(Option<&str>, Option<&str>)> = bundle_configmaps
        .into_iter()
        .map(|meta| (meta.name.as_deref(), meta.resource_version.as_deref()))
        .collect();
    bundle.sort_unstable();
    bundle.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::delivery::{
        bundle::{bundle_with_limit, reassemble},
        installation::tests::settings,
    };
    use crate::settings::{BgpOption, Encapsulation, NatOutgoing};

    const BUNDLES_NS: &str = crate::delivery::DEFAULT_BUNDLE_NAMESPACE;

    #[test]
    fn cluster_api_says_whether_it_applied_the_set() {
        let with = |conditions: Value| {
            json!({"kind": "ClusterResourceSet", "metadata": {"generation": 2},
                   "status": {"conditions": conditions}})
        };
        let applied = |generation: i64| {
            json!([{"type": "Paused", "status": "False", "observedGeneration": generation},
                   {"type": "ResourcesApplied", "status": "True", "reason": "Applied",
                    "observedGeneration": generation}])
        };
        let wrong_secret = json!([{"type": "ResourcesApplied", "status": "False", "reason": "WrongSecretType",
                                   "message": "Secret type of resource pull is not supported",
                                   "observedGeneration": 2}]);
        let mut generation_in_status =
            with(json!([{"type": "ResourcesApplied", "status": "True"}]));
        generation_in_status["status"]["observedGeneration"] = json!(2);
        let cases = [
            (json!({"kind": "ClusterResourceSet"}), CrsApplied::Unknown),
            (
                with(json!([{"type": "Paused", "status": "False"}])),
                CrsApplied::Unknown,
            ),
            (
                with(
                    json!([{"type": "ResourcesApplied", "status": "Unknown", "observedGeneration": 2}]),
                ),
                CrsApplied::Unknown,
            ),
            (with(applied(2)), CrsApplied::Applied),
            (generation_in_status, CrsApplied::Applied),
            // About the spec before our apply changed it: not known yet.
            (with(applied(1)), CrsApplied::Unknown),
            (
                with(json!([{"type": "ResourcesApplied", "status": "True"}])),
                CrsApplied::Unknown,
            ),
            // Passing failures while the workload cluster comes up: Cluster API retries by itself.
            (
                with(
                    json!([{"type": "ResourcesApplied", "status": "False", "reason": "InternalError",
                             "message": "Please check controller logs for errors", "observedGeneration": 2}]),
                ),
                CrsApplied::Unknown,
            ),
            (
                with(
                    json!([{"type": "ResourcesApplied", "status": "False", "reason": "NotApplied",
                             "observedGeneration": 2}]),
                ),
                CrsApplied::Unknown,
            ),
            (
                with(wrong_secret),
                CrsApplied::Failed {
                    reason: "WrongSecretType".into(),
                    message: "Secret type of resource pull is not supported".into(),
                },
            ),
        ];
        for (crs, want) in cases {
            assert_eq!(crs_applied(&crs), want, "{crs}");
        }
        let status = DeliveryStatus::NotApplied {
            version: "v3.31.7".into(),
            crs: "wl-1-calico".into(),
            reason: "WrongSecretType".into(),
            message: "Secret type of resource pull is not supported".into(),
        };
        assert!(!status.is_ready());
        assert_eq!(status.reason(), "NotApplied");
        // What the reconciler reads back of what it wrote.
        let recorded =
            json!({"metadata": {"annotations": {STATUS_ANNOTATION: status.annotation_value()}}});
        assert_eq!(recorded_reason(&recorded).as_deref(), Some(NOT_APPLIED));
        assert_eq!(recorded_reason(&json!({"metadata": {}})), None);
        let message = status.message();
        for part in [
            "ClusterResourceSet wl-1-calico",
            "WrongSecretType: Secret type of resource pull is not supported",
            "addons.cluster.x-k8s.io/resource-set",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    #[test]
    fn the_fingerprint_follows_the_cluster_and_the_bundles() {
        let cluster = json!({
            "metadata": {"name": "prod-1", "uid": "u-1", "resourceVersion": "10"},
            "status": {"phase": "Provisioning"},
        });
        let meta = |name: &str, version: &str| ObjectMeta {
            name: Some(name.to_string()),
            resource_version: Some(version.to_string()),
            ..ObjectMeta::default()
        };
        let bundle = vec![meta("calico-v3.31.7-crds-00", "5")];
        let base = inputs_fingerprint(&cluster, &bundle);
        let mut status_only = cluster.clone();
        status_only["status"]["phase"] = json!("Provisioned");
        status_only["metadata"]["resourceVersion"] = json!("11");
        assert_eq!(inputs_fingerprint(&status_only, &bundle), base);
        let mut labelled = cluster.clone();
        labelled["metadata"]["labels"] = json!({"a": "b"});
        assert_ne!(inputs_fingerprint(&labelled, &bundle), base);
        let reloaded = vec![meta("calico-v3.31.7-crds-00", "6")];
        assert_ne!(
            inputs_fingerprint(&cluster, &reloaded),
            base,
            "bundle reloaded"
        );
        assert_ne!(inputs_fingerprint(&cluster, &[]), base, "bundle removed");
        let two = vec![
            meta("calico-v3.31.7-crds-00", "5"),
            meta("calico-v3.31.7-operator-00", "7"),
        ];
        let reversed: Vec<ObjectMeta> = two.iter().rev().cloned().collect();
        assert_eq!(
            inputs_fingerprint(&cluster, &two),
            inputs_fingerprint(&cluster, &reversed),
            "the bundle store's order does not matter"
        );
    }

    pub(crate) fn cluster() -> ClusterRef {
        ClusterRef {
            namespace: "team-a".into(),
            name: "prod-1".into(),
            uid: "0d9d3c8e-5c47-4f3b-9d7e-1b2f3c4d5e6f".into(),
            selector_label: Some("prod-1".into()),
        }
    }

    pub(crate) fn loaded_bundle() -> Vec<Value> {
        loaded_bundle_of(31)
    }

    /// The bundle of Calico v3.`minor`.7.
    pub(crate) fn loaded_bundle_of(minor: u16) -> Vec<Value> {
        let crds: Vec<String> = (0..4)
            .map(|i| {
                format!(
                    "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: c{i}.example.io\nspec:\n  d: \"{}\"\n",
                    "y".repeat(400)
                )
            })
            .collect();
        let operator = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tigera-operator\n";
        let version = CalicoVersion {
            major: 3,
            minor,
            patch: 7,
        };
        bundle_with_limit(
            operator,
            &crds.join("---\n"),
            &version,
            "capi-calico-system",
            1000,
        )
        .unwrap()
    }

    pub(crate) fn s() -> Settings {
        settings(
            BgpOption::Enabled,
            Encapsulation::Vxlan,
            NatOutgoing::Enabled,
            "10.244.0.0/16",
            26,
        )
    }

    #[test]
    fn desired_objects_for_an_opted_in_cluster() {
        let loaded = loaded_bundle();
        let Plan::Apply { desired, status } = plan_for(&cluster(), &s(), loaded.iter()) else {
            panic!("expected Apply");
        };
        assert_eq!(
            status,
            DeliveryStatus::Delivered {
                version: "v3.31.7".into()
            }
        );
        // Copies: same names and content as the loaded bundle, in the Cluster's namespace, no ownerReferences.
        assert_eq!(desired.bundle_copies.len(), loaded.len());
        for (copy, original) in desired.bundle_copies.iter().zip(&loaded) {
            assert_eq!(copy["metadata"]["name"], original["metadata"]["name"]);
            assert_eq!(copy["metadata"]["namespace"], "team-a");
            assert_eq!(copy["data"], original["data"]);
            assert_eq!(
                copy["metadata"]["annotations"],
                original["metadata"]["annotations"]
            );
            assert!(copy["metadata"].get("ownerReferences").is_none());
        }
        assert_eq!(
            reassemble(&desired.bundle_copies).unwrap(),
            reassemble(&loaded).unwrap()
        );
        for owner in &desired.bundle_owners {
            assert_eq!(
                owner["metadata"]["ownerReferences"],
                json!([{
                    "apiVersion": "cluster.x-k8s.io/v1beta2",
                    "kind": "Cluster",
                    "name": "prod-1",
                    "uid": "0d9d3c8e-5c47-4f3b-9d7e-1b2f3c4d5e6f",
                }])
            );
        }
        assert_eq!(
            desired.installation["metadata"]["name"],
            "prod-1-calico-installation"
        );
        assert_eq!(
            desired.installation["metadata"]["ownerReferences"][0]["controller"],
            true
        );

        let crs = &desired.cluster_resource_set;
        assert_eq!(crs["metadata"]["name"], "prod-1-calico");
        assert_eq!(crs["metadata"]["namespace"], "team-a");
        assert_eq!(
            crs["spec"]["clusterSelector"],
            json!({ "matchLabels": { "capi-calico.io/cluster": "prod-1" } })
        );
        assert_eq!(crs["spec"]["strategy"], "Reconcile");
        let names: Vec<&str> = crs["spec"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let mut expected: Vec<String> = loaded
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        expected.push("prod-1-calico-installation".into());
        assert_eq!(names, expected);
        // CRD chunks first, then the operator, then the Installation.
        assert!(names[0].contains("-crds-"));
        assert!(names[names.len() - 2].contains("-operator-"));
    }

    /// A pull secret is listed between the operator chunks (which create its namespace) and the Installation
    /// (which names it), as a Secret; without the setting the list is unchanged.
    #[test]
    fn a_pull_secret_is_listed_after_the_operator_and_before_the_installation() {
        let loaded = loaded_bundle();
        let bundle = select_bundle(loaded.iter(), "v3.31.7").unwrap();
        let mut with_secret = s();
        with_secret.images.pull_secret = Some("calico-pull".into());
        let resources = |settings: &Settings| -> Vec<(String, String)> {
            desired_objects(&cluster(), settings, &bundle)
                .unwrap()
                .cluster_resource_set["spec"]["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["kind"].as_str().unwrap().to_string(),
                        r["name"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let plain = resources(&s());
        let listed = resources(&with_secret);
        assert_eq!(listed.len(), plain.len() + 1);
        let n = listed.len();
        assert!(listed[n - 3].1.contains("-operator-"), "{listed:?}");
        assert_eq!(
            listed[n - 2],
            ("Secret".to_string(), "calico-pull".to_string())
        );
        assert_eq!(listed[n - 1].1, "prod-1-calico-installation");
        assert!(plain.iter().all(|(kind, _)| kind == "ConfigMap"));
    }

    #[test]
    fn deterministic() {
        let loaded = loaded_bundle();
        let a = desired_objects(
            &cluster(),
            &s(),
            &select_bundle(loaded.iter(), "v3.31.7").unwrap(),
        )
        .unwrap();
        let b = desired_objects(
            &cluster(),
            &s(),
            &select_bundle(loaded.iter().rev(), "v3.31.7").unwrap(),
        )
        .unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(
            serde_json::to_string(&a.cluster_resource_set).unwrap(),
            serde_json::to_string(&b.cluster_resource_set).unwrap()
        );
    }

    #[test]
    fn problems_become_status() {
        let loaded = loaded_bundle();
        let mut other = s();
        other.calico_version = CalicoVersion {
            major: 3,
            minor: 30,
            patch: 0,
        };
        let Plan::Report(status) = plan_for(&cluster(), &other, loaded.iter()) else {
            panic!("expected Report");
        };
        assert_eq!(status.reason(), "BundleMissing");
        assert!(status.message().contains("v3.30.0"));
        let value: Value = serde_json::from_str(&status.annotation_value()).unwrap();
        assert_eq!(value["status"], "False");

        let partial: Vec<Value> = loaded.iter().skip(1).cloned().collect();
        let Plan::Report(status) = plan_for(&cluster(), &s(), partial.iter()) else {
            panic!("expected Report");
        };
        assert_eq!(status.reason(), "BundleIncomplete");

        let bad = settings(
            BgpOption::Disabled,
            Encapsulation::Ipip,
            NatOutgoing::Enabled,
            "10.0.0.0/16",
            26,
        );
        let Plan::Report(status) = plan_for(&cluster(), &bad, loaded.iter()) else {
            panic!("expected Report");
        };
        assert_eq!(status.reason(), "Unsupported");

        let mut unlabelled = cluster();
        unlabelled.selector_label = None;
        let Plan::Apply { status, .. } = plan_for(&unlabelled, &s(), loaded.iter()) else {
            panic!("expected Apply");
        };
        assert_eq!(status.reason(), "LabelMissing");
    }

    #[test]
    fn not_opted_in_is_ignored() {
        let cluster = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": { "name": "plain", "namespace": "default", "uid": "u1" },
            "spec": { "clusterNetwork": { "pods": { "cidrBlocks": ["10.0.0.0/16"] } } },
        });
        assert_eq!(
            plan(&cluster, BUNDLES_NS, loaded_bundle().iter()),
            Plan::Ignore
        );
        assert_eq!(
            plan(&json!({"kind": "Cluster"}), BUNDLES_NS, std::iter::empty()),
            Plan::Ignore
        );
    }

    /// An opted-in Cluster in the bundle namespace is reported, and nothing is written over the loaded bundle.
    #[test]
    fn a_cluster_in_the_bundle_namespace_gets_no_delivery() {
        let cluster = |namespace: &str| {
            json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2",
                "kind": "Cluster",
                "metadata": { "name": "c1", "namespace": namespace, "uid": "u1",
                              "annotations": {"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true"} },
                "spec": { "clusterNetwork": { "pods": { "cidrBlocks": ["10.0.0.0/16"] } } },
            })
        };
        let Plan::Report(status) = plan(&cluster(BUNDLES_NS), BUNDLES_NS, loaded_bundle().iter())
        else {
            panic!("expected Report");
        };
        assert_eq!(status.reason(), "Unsupported");
        assert!(
            status
                .message()
                .contains("create the Cluster in another namespace"),
            "{}",
            status.message()
        );
        assert!(matches!(
            plan(&cluster("team-a"), BUNDLES_NS, loaded_bundle().iter()),
            Plan::Apply { .. }
        ));
    }

    #[test]
    fn status_annotation_key_is_outside_the_settings_prefix() {
        assert!(!STATUS_ANNOTATION.starts_with(settings::PREFIX));
        let v = DeliveryStatus::Delivered {
            version: "v3.31.7".into(),
        };
        assert_eq!(v.annotation_value(), v.clone().annotation_value());
        assert_eq!(
            serde_json::from_str::<Value>(&v.annotation_value()).unwrap()["status"],
            "True"
        );
    }

    #[test]
    fn admission_warning() {
        let v = CalicoVersion {
            major: 3,
            minor: 31,
            patch: 7,
        };
        assert!(bundle_missing_warning(&v, &["v3.31.7".into()]).is_empty());
        let w = bundle_missing_warning(&v, &[]);
        assert!(w[0].contains("v3.31.7") && w[0].contains("none"), "{w:?}");
        let many: Vec<String> = (0..30).map(|p| format!("v3.30.{p}")).collect();
        for line in bundle_missing_warning(&v, &many) {
            assert!(line.chars().count() < 120, "{line}");
        }
    }

    #[test]
    fn owner_managers_differ_per_cluster() {
        assert_ne!(owner_field_manager("a"), owner_field_manager("b"));
        assert!(owner_field_manager("0d9d3c8e-5c47-4f3b-9d7e-1b2f3c4d5e6f").len() <= 128);
    }
}
