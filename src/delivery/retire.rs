//! Retiring the bundle copies a Cluster no longer uses: after a `CALICO_VERSION` change (or a bundle re-loaded with
//! fewer chunks), the copies its ClusterResourceSet listed before stay in the namespace. The garbage collector does
//! not remove them: Cluster API makes every ClusterResourceSet an owner of the ConfigMaps it lists and never takes
//! that back, so a copy keeps an owner for as long as the set exists.
//!
//! After the reconciler has applied a Cluster's objects and recorded its status, it looks at every candidate
//! ([`copies_to_retire`]) and, from the copy's current metadata ([`next_step`]):
//!
//! - takes this Cluster and its own ClusterResourceSet (which no longer lists the copy) off the copy's
//!   ownerReferences, with a merge patch that carries the `resourceVersion` just read (409 if anything changed);
//! - deletes a copy that no Cluster owns any more, unless a ClusterResourceSet among its owners still lists it,
//!   preconditioned on the uid and `resourceVersion` it decided on.
//!
//! A conflict reads the copy again and decides again, a few times; then the pass fails and is retried. Before
//! touching anything it reads the Cluster itself: if its settings are no longer the ones this pass reconciled (this
//! replica's cache is behind another's), it does nothing, and the newer event does the work.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};

use super::{
    DeliveryError, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL,
    desired::{ClusterRef, Desired, crs_name, name_of},
};

/// Reads and decisions per copy before the pass gives up on it (each conflict costs one).
const MAX_STEPS: usize = 6;

/// Bundle copies in the Cluster's namespace that this Cluster may have used before and no longer lists: the copies
/// of every other loaded version, and the ConfigMaps its ClusterResourceSet listed before this pass (`listed_before`,
/// which still names the copies of a version whose bundle has since been removed), minus what `desired` uses.
/// Sorted, without duplicates. Which of them this Cluster actually owns is only known from the objects themselves.
pub fn copies_to_retire<'a>(
    desired: &Desired,
    loaded_bundles: impl IntoIterator<Item = &'a Value>,
    listed_before: &[String],
) -> Vec<String> {
    let keep: BTreeSet<&str> = desired
        .bundle_copies
        .iter()
        .chain([&desired.installation])
        .map(name_of)
        .collect();
    let loaded: Vec<String> = loaded_bundles
        .into_iter()
        .map(|cm| name_of(cm).to_string())
        .collect();
    loaded
        .iter()
        .chain(listed_before)
        .filter(|name| !name.is_empty() && !keep.contains(name.as_str()))
        .cloned()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// Whether a ClusterResourceSet that lists the ConfigMaps `listed` names other bundle copies than `desired` (a
/// `CALICO_VERSION` change, or a bundle loaded again in another number of chunks). `listed` without bundle copies
/// (only the Installation) is no change.
pub fn bundle_changed(listed: &[String], desired: &Desired) -> bool {
    let installation = name_of(&desired.installation);
    let before: BTreeSet<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|n| *n != installation)
        .collect();
    let now: BTreeSet<&str> = desired.bundle_copies.iter().map(name_of).collect();
    !before.is_empty() && before != now
}

/// The ConfigMap names a ClusterResourceSet lists (`spec.resources` of kind ConfigMap).
pub fn listed_configmaps(crs: &Value) -> Vec<String> {
    crs.pointer("/spec/resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some("ConfigMap"))
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// What to do next with a candidate of [`copies_to_retire`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Not a bundle copy of ours, or another Cluster still owns it: leave it.
    Leave,
    /// Replace `metadata.ownerReferences` with `keep`: this Cluster and its own ClusterResourceSet removed.
    Detach { keep: Vec<OwnerReference> },
    /// No Cluster owns it: delete it, unless one of these ClusterResourceSets (its other owners) still lists it.
    Delete { sets: Vec<String> },
}

fn is_cluster(owner: &OwnerReference) -> bool {
    owner.kind == "Cluster" && owner.api_version.starts_with("cluster.x-k8s.io/")
}

fn is_crs(owner: &OwnerReference) -> bool {
    owner.kind == "ClusterResourceSet" && owner.api_version.starts_with("addons.cluster.x-k8s.io/")
}

/// Decide the [`Step`] for one candidate from its current metadata. Only a ConfigMap labelled as our bundle copy
/// ([`MANAGED_BY_LABEL`] and [`ROLE_LABEL`]) is ever changed.
pub fn next_step(meta: &ObjectMeta, cluster: &ClusterRef) -> Step {
    let ours = meta.labels.as_ref().is_some_and(|l| {
        l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
            && l.contains_key(ROLE_LABEL)
    });
    if !ours {
        return Step::Leave;
    }
    let own_set = crs_name(&cluster.name);
    let owners = meta.owner_references.clone().unwrap_or_default();
    let (mine, keep): (Vec<OwnerReference>, Vec<OwnerReference>) = owners
        .into_iter()
        .partition(|o| (is_cluster(o) && o.uid == cluster.uid) || (is_crs(o) && o.name == own_set));
    if !mine.is_empty() {
        Step::Detach { keep }
    } else if keep.iter().any(is_cluster) {
        Step::Leave
    } else {
        Step::Delete {
            sets: keep
                .iter()
                .filter(|o| is_crs(o))
                .map(|o| o.name.clone())
                .collect(),
        }
    }
}

/// The `capi-calico.io/` annotations of a Cluster: the settings a pass reconciled.
pub fn settings_of(annotations: Option<&BTreeMap<String, String>>) -> BTreeMap<&str, &str> {
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(crate::settings::PREFIX))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Per Cluster (by uid), the candidate list whose retiring last completed. A pass with the same candidates skips
/// the reads: nothing it could find has changed, because this Cluster only ever adds itself to the copies it uses.
/// New candidates (another version loaded, a version change) and a restart of the process look again.
#[derive(Debug, Default)]
pub struct Done {
    by_cluster: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl Done {
    /// Whether retiring `names` already completed for `uid`.
    pub fn covers(&self, uid: &str, names: &[String]) -> bool {
        self.by_cluster
            .lock()
            .map(|done| done.get(uid).is_some_and(|n| n == names))
            .unwrap_or(false)
    }

    /// Retiring `names` completed for `uid`.
    pub fn remember(&self, uid: &str, names: &[String]) {
        if let Ok(mut done) = self.by_cluster.lock() {
            done.insert(uid.to_string(), names.to_vec());
        }
    }

    /// Forget `uid` (the Cluster is being deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut done) = self.by_cluster.lock() {
            done.remove(uid);
        }
    }
}

/// The Kubernetes side of retiring: where the copies, the sets and the Cluster are.
pub struct Apis {
    pub configmaps: Api<ConfigMap>,
    pub sets: Api<DynamicObject>,
    pub clusters: Api<DynamicObject>,
}

/// Retire `names` for `cluster`, whose settings this pass reconciled were `reconciled` (see the module docs).
/// `Ok(false)` when the Cluster changed since, and nothing was done.
pub async fn retire_copies(
    apis: &Apis,
    cluster: &ClusterRef,
    reconciled: &BTreeMap<String, String>,
    names: &[String],
) -> Result<bool, DeliveryError> {
    if names.is_empty() {
        return Ok(true);
    }
    if !still_reconciled(&apis.clusters, cluster, reconciled).await? {
        tracing::debug!(namespace = %cluster.namespace, cluster = %cluster.name,
            "the Cluster changed since this pass read it; retiring left to the next pass");
        return Ok(false);
    }
    for name in names {
        retire_one(apis, cluster, name).await?;
    }
    Ok(true)
}

/// Whether the Cluster, read afresh, is still the one (uid) with the settings (`capi-calico.io/` annotations) this
/// pass reconciled: a replica whose cache is behind another's must not delete, nor create anew, what the Cluster's
/// current settings call for.
pub async fn still_reconciled(
    clusters: &Api<DynamicObject>,
    cluster: &ClusterRef,
    reconciled: &BTreeMap<String, String>,
) -> Result<bool, DeliveryError> {
    let fresh = clusters.get_metadata_opt(&cluster.name).await?;
    Ok(fresh
        .as_ref()
        .filter(|c| c.metadata.uid.as_deref() == Some(&cluster.uid))
        .is_some_and(|c| {
            settings_of(c.metadata.annotations.as_ref()) == settings_of(Some(reconciled))
        }))
}

fn gone_or_changed(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) if s.code == 404 || s.code == 409 => Some(s.code),
        _ => None,
    }
}

async fn retire_one(apis: &Apis, cluster: &ClusterRef, name: &str) -> Result<(), DeliveryError> {
    for _ in 0..MAX_STEPS {
        let Some(copy) = apis.configmaps.get_metadata_opt(name).await? else {
            return Ok(());
        };
        let meta = &copy.metadata;
        match next_step(meta, cluster) {
            Step::Leave => return Ok(()),
            Step::Detach { keep } => {
                let patch = json!({ "metadata": {
                    "resourceVersion": meta.resource_version,
                    "ownerReferences": keep,
                }});
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                };
                match apis
                    .configmaps
                    .patch_metadata(name, &params, &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(namespace = %cluster.namespace, cluster = %cluster.name,
                        configmap = %name, "bundle copy no longer used by this Cluster")
                    }
                    Err(e) => match gone_or_changed(&e) {
                        Some(404) => return Ok(()),
                        Some(_) => {
                            tracing::debug!(configmap = %name, "changed meanwhile; reading it again")
                        }
                        None => return Err(e.into()),
                    },
                }
            }
            Step::Delete { sets } => {
                for set in &sets {
                    if let Some(listing) = apis.sets.get_opt(set).await?
                        && listed_configmaps(&serde_json::to_value(&listing)?)
                            .iter()
                            .any(|n| n == name)
                    {
                        tracing::debug!(configmap = %name, clusterresourceset = %set, "still listed; kept");
                        return Ok(());
                    }
                }
                let delete = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: meta.uid.clone(),
                        resource_version: meta.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match apis.configmaps.delete(name, &delete).await {
                    Ok(_) => {
                        tracing::info!(namespace = %cluster.namespace, configmap = %name,
                            "bundle copy deleted: no Cluster uses it");
                        return Ok(());
                    }
                    Err(e) => match gone_or_changed(&e) {
                        Some(404) => return Ok(()),
                        Some(_) => {
                            tracing::debug!(configmap = %name, "changed meanwhile; reading it again")
                        }
                        None => return Err(e.into()),
                    },
                }
            }
        }
    }
    Err(DeliveryError::Retire {
        name: name.to_string(),
        reason: format!("it changed under each of {MAX_STEPS} attempts"),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::delivery::desired::{
        CLUSTER_API_VERSION, Plan, plan_for,
        tests::{cluster, loaded_bundle, loaded_bundle_of, s},
    };

    /// A set is replaced when it lists other bundle copies than the desired ones, in any order; the Installation
    /// and the pull Secret do not count.
    #[test]
    fn a_set_listing_another_bundle_is_replaced() {
        let current = loaded_bundle();
        let Plan::Apply { desired, .. } = plan_for(&cluster(), &s(), current.iter()) else {
            panic!("expected Apply");
        };
        let mut same: Vec<String> = desired
            .bundle_copies
            .iter()
            .map(|c| name_of(c).to_string())
            .collect();
        same.reverse();
        same.push(name_of(&desired.installation).to_string());
        assert!(!bundle_changed(&same, &desired));
        assert!(!bundle_changed(
            &[name_of(&desired.installation).to_string()],
            &desired
        ));
        assert!(!bundle_changed(&[], &desired));
        let older = loaded_bundle_of(30);
        let other: Vec<String> = older.iter().map(|c| name_of(c).to_string()).collect();
        assert!(bundle_changed(&other, &desired));
        // One chunk fewer (the same version loaded again in other chunks).
        assert!(bundle_changed(&same[1..], &desired));
    }

    #[test]
    fn copies_of_other_versions_and_formerly_listed_ones_are_candidates_to_retire() {
        let current = loaded_bundle();
        let older = loaded_bundle_of(30);
        let Plan::Apply { desired, .. } = plan_for(&cluster(), &s(), current.iter()) else {
            panic!("expected Apply");
        };
        let mut listed_before = vec![
            "calico-v3.29.7-operator-00".to_string(), // a version whose bundle has been removed since
            "prod-1-calico-installation".to_string(), // still ours and still used
        ];
        listed_before.extend(current.iter().map(|c| name_of(c).to_string()));
        let retire = copies_to_retire(&desired, current.iter().chain(&older), &listed_before);
        let mut want: Vec<String> = older.iter().map(|c| name_of(c).to_string()).collect();
        want.push("calico-v3.29.7-operator-00".into());
        want.sort();
        assert!(want.iter().any(|n| n.starts_with("calico-v3.30.7-crds-")));
        assert_eq!(retire, want);
        // Nothing to retire when nothing else was loaded or listed.
        assert!(copies_to_retire(&desired, current.iter(), &[]).is_empty());
    }

    #[test]
    fn a_crs_lists_its_configmaps() {
        let crs = json!({"spec": {"resources": [
            {"kind": "ConfigMap", "name": "a"}, {"kind": "Secret", "name": "s"}, {"kind": "ConfigMap", "name": "b"},
            {"kind": "ConfigMap"}
        ]}});
        assert_eq!(listed_configmaps(&crs), ["a", "b"]);
        assert!(listed_configmaps(&json!({})).is_empty());
    }

    fn owner(kind: &str, api: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            ..OwnerReference::default()
        }
    }

    fn copy_meta(labels: &[(&str, &str)], owners: &[OwnerReference]) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: Some(owners.to_vec()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn the_next_step_for_a_candidate_copy() {
        let me = cluster(); // prod-1
        let crs_api = "addons.cluster.x-k8s.io/v1beta2";
        let us = owner("Cluster", CLUSTER_API_VERSION, "prod-1", &me.uid);
        let our_set = owner("ClusterResourceSet", crs_api, "prod-1-calico", "s1");
        let other = owner("Cluster", "cluster.x-k8s.io/v1beta1", "prod-2", "u2");
        let other_set = owner("ClusterResourceSet", crs_api, "prod-2-calico", "s2");
        // A Cluster elsewhere whose name only looks like ours' set: a ConfigMap, not a set.
        let look_alike = owner("ConfigMap", "v1", "prod-1-calico", "c1");
        let copy = [(MANAGED_BY_LABEL, MANAGED_BY), (ROLE_LABEL, "crds")];
        let cases: Vec<(&str, ObjectMeta, Step)> = vec![
            (
                "ours and another Cluster's: drop this Cluster and its set",
                copy_meta(
                    &copy,
                    &[
                        other_set.clone(),
                        us.clone(),
                        our_set.clone(),
                        other.clone(),
                    ],
                ),
                Step::Detach {
                    keep: vec![other_set.clone(), other.clone()],
                },
            ),
            (
                "only our set is left (a Cluster entry removed earlier)",
                copy_meta(&copy, std::slice::from_ref(&our_set)),
                Step::Detach { keep: vec![] },
            ),
            (
                "another Cluster's only",
                copy_meta(&copy, &[other.clone(), other_set.clone()]),
                Step::Leave,
            ),
            (
                "no Cluster: delete unless its sets list it",
                copy_meta(&copy, &[other_set.clone(), look_alike.clone()]),
                Step::Delete {
                    sets: vec!["prod-2-calico".into()],
                },
            ),
            (
                "no owner at all",
                copy_meta(&copy, &[]),
                Step::Delete { sets: vec![] },
            ),
            (
                "the Installation ConfigMap (no role label)",
                copy_meta(&[(MANAGED_BY_LABEL, MANAGED_BY)], std::slice::from_ref(&us)),
                Step::Leave,
            ),
            (
                "a loaded bundle or a user's ConfigMap (no managed-by label)",
                copy_meta(&[(ROLE_LABEL, "crds")], std::slice::from_ref(&us)),
                Step::Leave,
            ),
            (
                "managed by someone else",
                copy_meta(&[(MANAGED_BY_LABEL, "helm"), (ROLE_LABEL, "crds")], &[]),
                Step::Leave,
            ),
        ];
        for (what, meta, want) in cases {
            assert_eq!(next_step(&meta, &me), want, "{what}");
        }
        assert_eq!(next_step(&ObjectMeta::default(), &me), Step::Leave);
    }

    #[test]
    fn a_completed_candidate_list_is_not_read_again() {
        let done = Done::default();
        let names = vec!["calico-v3.30.7-crds-00".to_string()];
        assert!(!done.covers("u1", &names));
        done.remember("u1", &names);
        assert!(done.covers("u1", &names));
        assert!(!done.covers("u2", &names));
        // Another candidate (a bundle loaded since) is read.
        let more = vec![names[0].clone(), "calico-v3.29.7-crds-00".to_string()];
        assert!(!done.covers("u1", &more));
        done.forget("u1");
        assert!(!done.covers("u1", &names));
    }

    #[test]
    fn the_settings_of_a_cluster_are_its_capi_calico_annotations() {
        let annotations: BTreeMap<String, String> = [
            ("capi-calico.io/CALICO_VERSION", "v3.31.7"),
            ("status.capi-calico.io/delivery", "{}"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            settings_of(Some(&annotations))
                .into_iter()
                .collect::<Vec<_>>(),
            [("capi-calico.io/CALICO_VERSION", "v3.31.7")]
        );
        assert!(settings_of(None).is_empty());
    }
}
