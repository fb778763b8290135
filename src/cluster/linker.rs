//! Links a classic cluster's KubeadmControlPlane and KubeadmConfigTemplates to their Cluster with the
//! `cluster.x-k8s.io/cluster-name` label, so that the mutating webhook can inject them even when they were applied
//! before the objects that point at them.
//!
//! A KCT is found through a MachineDeployment's bootstrap `configRef`. When a manifest lists the KCT before its
//! MachineDeployment (the order `kubectl apply -k` uses, and the order of many templates), the webhook sees the KCT
//! first, finds nothing that links it, and admits it unchanged with a warning. Cluster API later adds only an
//! ownerReference to a classic KCT, never the label, so nothing would ever bring it back to the webhook. This
//! controller closes that gap: for every opted-in Cluster it labels the KCP named by `spec.controlPlaneRef` and the
//! KCT of every MachineDeployment whose `spec.clusterName` is the Cluster (see [`label_patch`] for exactly when).
//! The label change reaches the webhook (its matchConditions send changes of `cluster.x-k8s.io/cluster-name` and
//! `capi-calico.io/cluster`), which then finds the Cluster and injects. A KCT already linked whose entries no longer
//! match its Cluster's settings gets [`REFRESH_LABEL`] instead, which brings it back to the webhook the same way
//! (see [`refresh_patch`]). Objects labelled for another Cluster and
//! Clusters that are not opted in are never touched. It runs beside the delivery reconciler, not on the admission
//! path, and can be turned off with `serve --no-template-linker`. Once every target of a Cluster is found and
//! labelled, Cluster events that change neither the Cluster (its status aside) nor its MachineDeployments are
//! skipped without a request until the resync ([`super::seen`]).

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client, Resource as _,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use serde_json::{Value, json};

use super::seen::{self, Seen};
use super::{CLUSTER_NAME_LABEL, ClusterInfo};
use crate::mutation::{self, Target};
use crate::settings::{self, Resolution, Settings};

/// Field manager of the label patches.
pub const FIELD_MANAGER: &str = "capi-calico-webhook-linker";

/// What can go wrong while linking: retried soon, or reported on the Cluster when refused (see [`LinkError::refused`]).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl LinkError {
    /// The API server refused the change for good (the webhook's denial, a validation or authorization error), as
    /// opposed to what may pass on a retry (a conflict, throttling, a timeout, a server error).
    /// The webhook's own denial when it could not read the Cluster says to retry: not a refusal.
    pub fn refused(&self) -> bool {
        matches!(self, LinkError::Kube(kube::Error::Api(status))
            if super::is_refusal(status)
                && !status.message.contains(crate::admission::policy::LOOKUP_FAILED_MESSAGE))
    }
}

fn resource(group: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1beta2", kind))
}

struct Ctx {
    client: Client,
    /// Warning Events on the Cluster when one of its objects cannot be linked (the webhook refusing it, mostly):
    /// otherwise only this process's log would say so.
    recorder: Recorder,
    cluster: ApiResource,
    kcp: ApiResource,
    kct: ApiResource,
    machine: ApiResource,
    md: ApiResource,
    /// What each Cluster was last linked with in full.
    seen: Seen,
    md_events: Arc<MdEvents>,
    /// How often every Cluster is looked at again without an event.
    resync: Duration,
}

/// An object to label: its kind's resource and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    pub kind: &'static str,
    pub name: String,
}

/// True when `cluster` opted in with valid settings. A Cluster whose settings are invalid is left alone: the webhook
/// would refuse the label change anyway, because it refuses the KCP/KCT of such a Cluster.
pub fn opted_in(cluster: &Value) -> bool {
    settings_of(cluster).is_some()
}

/// The settings of `cluster` when it opted in with valid ones.
fn settings_of(cluster: &Value) -> Option<Settings> {
    let info = ClusterInfo::from_object(cluster)?;
    match settings::resolve(&info.annotations, Some(&info.network)) {
        Resolution::OptedIn { settings, .. } => Some(*settings),
        _ => None,
    }
}

/// The label the linker sets on a KubeadmConfigTemplate whose entries of ours no longer match its Cluster's settings
/// (a `CALICO_VERSION` or `CALICOCTL_URL` change, say). Its value, a digest of the entries those settings give,
/// changes only with them; the change brings the template back to the webhook (its matchConditions send changes of
/// this label), which writes the current entries. Editing a KCT never changes existing Machines, only new ones.
pub const REFRESH_LABEL: &str = "capi-calico.io/refresh";

/// The patch that brings the KCT `kct` (the whole object) of an opted-in Cluster with `settings` back to the webhook,
/// or `None`: its entries are current, or it carries settings of its own (the webhook reads those, not the
/// Cluster's), or it was asked twice for these entries already. The label takes the digest of the wanted entries;
/// when it holds that digest already and the entries are still not current (the change reached a webhook replica of
/// an older release during an upgrade, or one that read a stale Cluster), it takes the digest with `-r` instead,
/// once: the next pass (at a Cluster or MachineDeployment change, or the resync) asks again. After that the linker
/// stops asking for these entries (a namespace the webhook does not serve would otherwise be written for ever).
/// Pure, for tests.
pub fn refresh_patch(kct: &Value, settings: &Settings) -> Option<Value> {
    let annotations = super::string_map(kct.pointer("/metadata/annotations"));
    if settings::has_settings(&annotations) {
        return None;
    }
    let injection = mutation::desired(settings, Target::Workers).ok()?;
    if mutation::verify(kct, Target::Workers, &injection).is_empty() {
        return None;
    }
    let digest = injection.digest();
    let asked = kct
        .pointer("/metadata/labels")
        .and_then(|labels| labels.get(REFRESH_LABEL))
        .and_then(Value::as_str);
    let again = format!("{digest}-r");
    let value = match asked {
        Some(asked) if asked == again => return None,
        Some(asked) if asked == digest => again,
        _ => digest,
    };
    Some(json!({ "metadata": { "labels": { REFRESH_LABEL: value } } }))
}

/// The KubeadmConfigTemplates of the MachineDeployments of Cluster `cluster` (shared ones included), by name.
pub fn templates_of(cluster: &str, machine_deployments: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = machine_deployments
        .iter()
        .filter(|md| cluster_of(md) == Some(cluster))
        .filter_map(template_of)
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// True when Cluster API's pause applies to `cluster` (`spec.paused`, or the `cluster.x-k8s.io/paused` annotation):
/// the linker leaves its objects alone, as Cluster API's own controllers do.
fn paused(cluster: &Value) -> bool {
    cluster.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
        || cluster
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key("cluster.x-k8s.io/paused"))
}

/// The objects an opted-in `cluster` links to: its KCP, and the KCT of each of `machine_deployments` that names
/// the Cluster in `spec.clusterName`. Pure, for tests.
pub fn targets(cluster: &Value, machine_deployments: &[Value]) -> Vec<LinkTarget> {
    let Some(name) = cluster.pointer("/metadata/name").and_then(Value::as_str) else {
        return Vec::new();
    };
    if !opted_in(cluster) {
        return Vec::new();
    }
    let referenced = |reference: Option<&Value>, kind: &'static str| -> Option<LinkTarget> {
        let reference = reference?;
        (reference.get("kind").and_then(Value::as_str) == Some(kind)).then_some(())?;
        Some(LinkTarget {
            kind,
            name: reference.get("name")?.as_str()?.to_string(),
        })
    };
    let mut out: Vec<LinkTarget> = referenced(
        cluster.pointer("/spec/controlPlaneRef"),
        "KubeadmControlPlane",
    )
    .into_iter()
    .collect();
    let kct_of = |md: &Value| {
        template_of(md).map(|name| LinkTarget {
            kind: "KubeadmConfigTemplate",
            name: name.to_string(),
        })
    };
    for md in machine_deployments {
        if cluster_of(md) != Some(name) {
            continue;
        }
        let Some(t) = kct_of(md) else { continue };
        // A template shared with other Clusters follows the first of them by name (the webhook's rule, README):
        // only that Cluster labels it, so the label never ties it to another one for good.
        let first_user = machine_deployments
            .iter()
            .filter(|other| kct_of(other).as_ref() == Some(&t))
            .filter_map(cluster_of)
            .min();
        if first_user == Some(name) && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The KubeadmConfigTemplate a MachineDeployment's bootstrap `configRef` names, if it names one.
fn template_of(md: &Value) -> Option<&str> {
    let reference = md.pointer("/spec/template/spec/bootstrap/configRef")?;
    (reference.get("kind").and_then(Value::as_str) == Some("KubeadmConfigTemplate"))
        .then(|| reference.get("name")?.as_str())
        .flatten()
}

/// A MachineDeployment's `spec.clusterName`.
fn cluster_of(md: &Value) -> Option<&str> {
    md.pointer("/spec/clusterName").and_then(Value::as_str)
}

/// The label patch for one of `cluster`'s objects, or `None` when it needs none.
///
/// - No `cluster.x-k8s.io/cluster-name` label: add it (Cluster API adds it to a KCP itself, a little later) and
///   `capi-calico.io/cluster`.
/// - The label names another Cluster: leave the object alone.
/// - A KubeadmConfigTemplate labelled for this Cluster but without `capi-calico.io/cluster`: add that label. A KCT
///   labelled before its Cluster existed was admitted without injection, and nothing else brings it back to the
///   webhook; editing a KCT never rolls out existing machines.
/// - A KubeadmControlPlane labelled for this Cluster but without `capi-calico.io/cluster`: add that label only while
///   it has no machines (`kcp_machines` is `Some(0)`: its Machines, listed for this). A KCP labelled before
///   its Cluster existed was admitted without injection too, and Cluster API's later ownerReference does not bring
///   it back; but a late injection into a running control plane would roll it out, so one with machines is left
///   alone (its next spec change injects it, with that rollout; docs/injection.md).
pub fn label_patch(
    kind: &str,
    cluster: &str,
    labels: &std::collections::BTreeMap<String, String>,
    kcp_machines: Option<u64>,
) -> Option<Value> {
    let ours = || json!({ "metadata": { "labels": { crate::delivery::CLUSTER_LABEL: cluster } } });
    match super::cluster_label(labels) {
        None => Some(json!({ "metadata": { "labels": {
            CLUSTER_NAME_LABEL: cluster,
            crate::delivery::CLUSTER_LABEL: cluster,
        } } })),
        Some(other) if other != cluster => None,
        Some(_) if !lacks_our_label(labels, cluster) => None,
        Some(_) if kind == "KubeadmConfigTemplate" => Some(ours()),
        Some(_) if kind == "KubeadmControlPlane" && kcp_machines == Some(0) => Some(ours()),
        Some(_) => None,
    }
}

/// Labelled `cluster.x-k8s.io/cluster-name=<cluster>` but not `capi-calico.io/cluster=<cluster>`: the case where
/// [`label_patch`] needs to know a KCP's machines.
pub fn lacks_our_label(labels: &std::collections::BTreeMap<String, String>, cluster: &str) -> bool {
    labels.get(CLUSTER_NAME_LABEL).map(String::as_str) == Some(cluster)
        && labels
            .get(crate::delivery::CLUSTER_LABEL)
            .map(String::as_str)
            != Some(cluster)
}

/// Run until `shutdown` completes.
pub async fn run_linker_until(
    client: Client,
    resync: Duration,
    instance: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let cluster = resource("cluster.x-k8s.io", "Cluster");
    let md = resource("cluster.x-k8s.io", "MachineDeployment");
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance,
    };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        cluster: cluster.clone(),
        client: client.clone(),
        kcp: resource("controlplane.cluster.x-k8s.io", "KubeadmControlPlane"),
        kct: resource("bootstrap.cluster.x-k8s.io", "KubeadmConfigTemplate"),
        machine: resource("cluster.x-k8s.io", "Machine"),
        md: md.clone(),
        seen: Seen::default(),
        md_events: Arc::new(MdEvents::default()),
        resync,
    });
    let md_events = Arc::clone(&ctx.md_events);
    let clusters: Api<DynamicObject> = Api::all_with(client.clone(), &cluster);
    let mds: Api<DynamicObject> = Api::all_with(client, &md);
    let cluster_for_map = cluster.clone();
    tracing::info!("template linker starting");
    Controller::new_with(clusters, watcher::Config::default(), cluster.clone())
        // A MachineDeployment created or changed: look at its Cluster again.
        .watches_with(
            mds,
            md,
            watcher::Config::default(),
            move |md: DynamicObject| {
                let ns = md.metadata.namespace.clone();
                if let Some(cluster) = md.data.pointer("/spec/clusterName").and_then(Value::as_str)
                {
                    md_events.bump(&key(ns.as_deref().unwrap_or_default(), cluster));
                }
                md.data
                    .pointer("/spec/clusterName")
                    .and_then(Value::as_str)
                    .map(|name| {
                        let r = ObjectRef::new_with(name, cluster_for_map.clone());
                        match ns {
                            Some(ns) => r.within(&ns),
                            None => r,
                        }
                    })
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "template link failed");
            }
            future::ready(())
        })
        .await;
    tracing::info!("template linker stopped");
}

/// When a failed pass is tried again.
const RETRY: Duration = Duration::from_secs(15);

fn error_policy(_cluster: Arc<DynamicObject>, error: &LinkError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "linking templates to their Cluster failed; retrying");
    Action::requeue(RETRY)
}

/// The key of a Cluster in [`Ctx::seen`] and [`MdEvents`].
fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The last MachineDeployment event of each Cluster (by [`key`]), as a number from one counter for all of them, so
/// that a value is never seen twice: part of the fingerprint, so a MachineDeployment change is never skipped.
#[derive(Default)]
struct MdEvents(std::sync::Mutex<MdNumbers>);

#[derive(Default)]
struct MdNumbers {
    /// The last number given.
    counter: u64,
    /// Numbers by Cluster key, emptied at [`Seen::MAX`] entries.
    last: std::collections::HashMap<String, u64>,
    /// The counter when `last` was last emptied: the number of every Cluster not bumped since, so that emptying
    /// changes every Cluster's number instead of setting some back to an old one.
    floor: u64,
}

impl MdEvents {
    fn numbers(&self) -> std::sync::MutexGuard<'_, MdNumbers> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self, key: &str) {
        let mut n = self.numbers();
        n.counter += 1;
        if n.last.len() >= Seen::MAX && !n.last.contains_key(key) {
            n.last.clear();
            n.floor = n.counter;
            n.counter += 1;
        }
        let number = n.counter;
        n.last.insert(key.to_string(), number);
    }

    fn get(&self, key: &str) -> u64 {
        let n = self.numbers();
        n.last.get(key).copied().unwrap_or(n.floor)
    }
}

async fn reconcile(cluster: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, LinkError> {
    let Some(namespace) = cluster.metadata.namespace.clone() else {
        return Ok(Action::await_change());
    };
    let Some(name) = cluster.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    let key = key(&namespace, &name);
    if cluster.metadata.deletion_timestamp.is_some() {
        ctx.seen.forget(&key);
        return Ok(Action::await_change());
    }
    let object = serde_json::to_value(&*cluster).unwrap_or(Value::Null);
    let Some(settings) = settings_of(&object) else {
        ctx.seen.forget(&key);
        return Ok(Action::await_change());
    };
    if paused(&object) {
        ctx.seen.forget(&key);
        return Ok(Action::requeue(ctx.resync));
    }
    // Skip a Cluster event (a status update, mostly) when neither the Cluster nor its MachineDeployments changed
    // since every target was found and labelled.
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut hasher = seen::hasher();
        seen::hash_cluster(&object, &mut hasher);
        ctx.md_events.get(&key).hash(&mut hasher);
        hasher.finish()
    };
    if let Some(resync_in) = ctx.seen.skip(&key, fingerprint, ctx.resync) {
        return Ok(Action::requeue(resync_in));
    }
    // A full pass from here; remembered again only when it completes.
    ctx.seen.forget(&key);
    let mds: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.md);
    let machine_deployments: Vec<Value> = mds
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|md| serde_json::to_value(md).ok())
        .collect();
    let mut all_found = true;
    let mut failed = false;
    let mut reports = Vec::new();
    // Each target on its own: one the API server refuses (the webhook denying a KCP's label change, say) must not
    // keep the others from being linked. A refusal is reported on the Cluster and asked again at the next Cluster or
    // MachineDeployment change, or at the resync; only errors that may pass (a conflict, a timeout) are retried soon.
    let settle = |reports: &mut Vec<(&'static str, String, String)>,
                  failed: &mut bool,
                  kind: &'static str,
                  object: &str,
                  result: Result<bool, LinkError>| match result {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                cluster = %name, %namespace, kind, %object, error = %e,
                "could not link it to its Cluster or bring it up to date"
            );
            if e.refused() {
                reports.push((
                    kind,
                    object.to_string(),
                    link_failure_note(kind, object, &e),
                ));
            } else {
                *failed = true;
            }
            true
        }
    };
    for target in targets(&object, &machine_deployments) {
        let result = link(&ctx, &namespace, &name, &target).await;
        all_found &= settle(&mut reports, &mut failed, target.kind, &target.name, result);
    }
    // Every KCT of the Cluster's MachineDeployments, shared ones included: brought up to date when linked to it (not
    // one refused a moment ago: it would be refused again).
    for kct in templates_of(&name, &machine_deployments) {
        if reports.iter().any(|(_, refused, _)| *refused == kct) {
            continue;
        }
        let result = refresh(&ctx, &namespace, &name, &settings, &kct).await;
        settle(
            &mut reports,
            &mut failed,
            "KubeadmConfigTemplate",
            &kct,
            result.map(|()| true),
        );
    }
    for (kind, object, note) in reports {
        let event = Event {
            type_: EventType::Warning,
            reason: "LinkFailed".to_string(),
            note: Some(note),
            action: "LinkTemplates".to_string(),
            // The refused object: Events are told apart by it (the note is not part of kube-runtime's key).
            secondary: Some(ObjectReference {
                api_version: Some(match kind {
                    "KubeadmControlPlane" => "controlplane.cluster.x-k8s.io/v1beta2".to_string(),
                    _ => "bootstrap.cluster.x-k8s.io/v1beta2".to_string(),
                }),
                kind: Some(kind.to_string()),
                name: Some(object),
                namespace: Some(namespace.clone()),
                ..ObjectReference::default()
            }),
        };
        if let Err(e) = ctx
            .recorder
            .publish(&event, &cluster.object_ref(&ctx.cluster))
            .await
        {
            tracing::warn!(error = %e, cluster = %name, "publishing Event");
        }
    }
    if failed {
        return Ok(Action::requeue(RETRY));
    }
    if all_found {
        ctx.seen.remember(&key, fingerprint);
    }
    Ok(Action::requeue(ctx.resync))
}

/// The note of the Event for a target that could not be linked: what, and the API server's answer (the webhook's
/// denial message, when it refused the change), cut to the 1 KiB an Event note may hold.
fn link_failure_note(kind: &str, name: &str, error: &LinkError) -> String {
    let reason = match error {
        LinkError::Kube(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    };
    crate::delivery::event_note(format!(
        "{kind} {name} could not be linked to this Cluster or brought up to date (fix the cause; asked again at the \
         Cluster's or a MachineDeployment's next change, or the resync): {reason}"
    ))
}

/// Label one target of Cluster `cluster` if it needs it; false when it does not exist yet (looked at again on the
/// next Cluster event).
async fn link(
    ctx: &Ctx,
    namespace: &str,
    cluster: &str,
    target: &LinkTarget,
) -> Result<bool, LinkError> {
    let resource = match target.kind {
        "KubeadmControlPlane" => &ctx.kcp,
        _ => &ctx.kct,
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    let Some(current) = api.get_metadata_opt(&target.name).await? else {
        return Ok(false);
    };
    let labels = current.metadata.labels.clone().unwrap_or_default();
    // Only for a labelled KCP without ours: does it have machines yet?
    let kcp_machines = if target.kind == "KubeadmControlPlane" && lacks_our_label(&labels, cluster)
    {
        Some(control_plane_machines(ctx, namespace, cluster).await?)
    } else {
        None
    };
    let Some(mut patch) = label_patch(target.kind, cluster, &labels, kcp_machines) else {
        return Ok(true);
    };
    if kcp_machines.is_some() {
        // Only if the KCP did not change since it was read (409 otherwise, and the pass is retried). A Machine
        // created between the count and this patch does not change the KCP: that window (one request) stays open.
        patch["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
    }
    api.patch(
        &target.name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(
        %cluster, %namespace, kind = target.kind, object = %target.name,
        "labelled with its Cluster so the webhook can inject it"
    );
    Ok(true)
}

/// Set [`REFRESH_LABEL`] on the KCT `name` when it is linked to Cluster `cluster` (its `cluster.x-k8s.io/cluster-name`
/// label names it) and its entries of ours are out of date (see [`refresh_patch`]).
async fn refresh(
    ctx: &Ctx,
    namespace: &str,
    cluster: &str,
    settings: &Settings,
    name: &str,
) -> Result<(), LinkError> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &ctx.kct);
    let Some(kct) = api.get_opt(name).await? else {
        return Ok(());
    };
    let labels = kct.metadata.labels.clone().unwrap_or_default();
    if super::cluster_label(&labels) != Some(cluster) {
        return Ok(());
    }
    let Some(patch) = serde_json::to_value(&kct)
        .ok()
        .and_then(|kct| refresh_patch(&kct, settings))
    else {
        return Ok(());
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(
        %cluster, %namespace, kind = "KubeadmConfigTemplate", object = %name,
        "its capi-calico entries are out of date with its Cluster's settings: sent back to the webhook"
    );
    Ok(())
}

/// Control-plane Machines of Cluster `cluster` (0 or 1: one is enough to know), found as the KubeadmControlPlane
/// controller finds its own: labelled `cluster.x-k8s.io/cluster-name=<cluster>` and `cluster.x-k8s.io/control-plane`
/// (standalone Machines it would adopt included). The KCP's `status.replicas` lags behind the first Machine it
/// creates, and is empty after `clusterctl move`, so the Machines themselves are listed.
async fn control_plane_machines(
    ctx: &Ctx,
    namespace: &str,
    cluster: &str,
) -> Result<u64, LinkError> {
    let machines: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ctx.machine);
    let params = ListParams::default()
        .labels(&format!(
            "{CLUSTER_NAME_LABEL}={cluster},cluster.x-k8s.io/control-plane"
        ))
        .limit(1);
    let found = machines.list_metadata(&params).await?;
    Ok(u64::try_from(found.items.len()).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_deployment_event_changes_its_clusters_number_and_no_number_comes_back() {
        let events = MdEvents::default();
        assert_eq!(events.get("ns/a"), 0);
        events.bump("ns/a");
        let first = events.get("ns/a");
        assert_ne!(first, 0);
        assert_eq!(events.get("ns/b"), 0, "other Clusters keep theirs");
        events.bump("ns/a");
        assert_ne!(events.get("ns/a"), first);
        assert_eq!(events.get("ns/never"), 0);
        // Emptied at the bound: the numbers given afterwards are still new.
        for i in 0..Seen::MAX {
            events.bump(&format!("ns/c-{i}"));
        }
        events.bump("ns/a");
        assert!(events.get("ns/a") > first + 1);
        assert!(events.numbers().last.len() <= Seen::MAX);
        // A Cluster never bumped since the map was emptied no longer reads 0, the number it may be remembered with.
        assert_ne!(events.get("ns/never"), 0);
    }

    fn cluster(opted: bool) -> Value {
        json!({
            "metadata": {"name": "wl", "namespace": "ns",
                         "annotations": {"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": if opted {"true"} else {"false"}}},
            "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["100.96.0.0/11"]}},
                     "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io",
                                         "kind": "KubeadmControlPlane", "name": "wl-cp"}}
        })
    }

    fn md(cluster: &str, kct: &str, kind: &str) -> Value {
        json!({"spec": {"clusterName": cluster, "template": {"spec": {"bootstrap": {"configRef":
            {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": kind, "name": kct}}}}}})
    }

    #[test]
    fn opted_in_clusters_link_their_kcp_and_the_kcts_of_their_machine_deployments() {
        let mds = [
            md("wl", "wl-md-0", "KubeadmConfigTemplate"),
            md("wl", "wl-md-0", "KubeadmConfigTemplate"),
            md("wl", "wl-md-1", "KubeadmConfigTemplate"),
            md("other", "other-md-0", "KubeadmConfigTemplate"),
            md("wl", "wl-pool", "SomeOtherBootstrapTemplate"),
            // Shared: labelled by the first Cluster by name only ("a-first" comes before "wl").
            md("wl", "shared-early", "KubeadmConfigTemplate"),
            md("a-first", "shared-early", "KubeadmConfigTemplate"),
            md("wl", "shared-late", "KubeadmConfigTemplate"),
            md("z-last", "shared-late", "KubeadmConfigTemplate"),
        ];
        let got = targets(&cluster(true), &mds);
        let want = [
            ("KubeadmControlPlane", "wl-cp"),
            ("KubeadmConfigTemplate", "wl-md-0"),
            ("KubeadmConfigTemplate", "wl-md-1"),
            ("KubeadmConfigTemplate", "shared-late"),
        ]
        .map(|(kind, name)| LinkTarget {
            kind,
            name: name.to_string(),
        });
        assert_eq!(got, want);
    }

    /// A KCT linked to its Cluster is sent back to the webhook (a new refresh label value) only while its entries
    /// differ from what the Cluster's settings give, once per settings, and never when it carries settings itself.
    #[test]
    fn refresh_patches() {
        let settings = |version: &str| {
            let annotations: std::collections::BTreeMap<String, String> = [
                ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true"),
                ("capi-calico.io/INSTALL_CALICOCTL", "true"),
                ("capi-calico.io/CALICO_VERSION", version),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            match settings::resolve(&annotations, None) {
                Resolution::OptedIn { settings, .. } => *settings,
                other => panic!("{other:?}"),
            }
        };
        let (old, new) = (settings("v3.30.7"), settings("v3.31.7"));
        let bare = json!({
            "metadata": {"name": "wl-md-0", "namespace": "ns", "labels": {CLUSTER_NAME_LABEL: "wl"}},
            "spec": {"template": {"spec": {"preKubeadmCommands": ["echo mine"]}}}
        });
        let injected = |settings: &Settings| {
            let injection = mutation::desired(settings, Target::Workers).expect("injection");
            let ops = mutation::patch(&bare, Target::Workers, &injection).expect("patch");
            mutation::apply(&bare, &ops).expect("apply")
        };
        let digest = |settings: &Settings| {
            mutation::desired(settings, Target::Workers)
                .expect("injection")
                .digest()
        };
        assert_eq!(digest(&new), digest(&new.clone()));
        assert_ne!(digest(&old), digest(&new));
        assert_eq!(digest(&new).len(), 16);

        let stale = injected(&old);
        assert_eq!(refresh_patch(&injected(&new), &new), None, "current");
        assert_eq!(
            refresh_patch(&stale, &new),
            Some(json!({"metadata": {"labels": {REFRESH_LABEL: digest(&new)}}})),
            "stale"
        );
        assert!(refresh_patch(&bare, &new).is_some(), "never injected");
        let mut asked = stale.clone();
        asked["metadata"]["labels"][REFRESH_LABEL] = json!(digest(&new));
        // Asked already and still stale (an older webhook answered): asked again, with another value each pass.
        let again = json!({"metadata": {"labels": {REFRESH_LABEL: format!("{}-r", digest(&new))}}});
        assert_eq!(refresh_patch(&asked, &new), Some(again), "asked already");
        asked["metadata"]["labels"][REFRESH_LABEL] = json!(format!("{}-r", digest(&new)));
        // Asked twice and still stale (a namespace the webhook does not serve, say): no more writes for these
        // entries.
        assert_eq!(refresh_patch(&asked, &new), None, "asked twice already");
        asked["metadata"]["labels"][REFRESH_LABEL] = json!(digest(&old));
        assert!(
            refresh_patch(&asked, &new).is_some(),
            "asked for other settings"
        );
        // Current, whatever the label says: nothing to ask.
        let mut current = injected(&new);
        current["metadata"]["labels"][REFRESH_LABEL] = json!(digest(&old));
        assert_eq!(refresh_patch(&current, &new), None, "current");
        let mut own = stale.clone();
        own["metadata"]["annotations"] = json!({"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true"});
        assert_eq!(refresh_patch(&own, &new), None, "settings of its own");
    }

    /// Every KCT of the Cluster's MachineDeployments, shared or not, once, by name; other kinds and Clusters left out.
    #[test]
    fn templates_of_a_cluster() {
        let mds = [
            md("wl", "b-kct", "KubeadmConfigTemplate"),
            md("wl", "a-kct", "KubeadmConfigTemplate"),
            md("wl", "a-kct", "KubeadmConfigTemplate"),
            md("other", "a-kct", "KubeadmConfigTemplate"),
            md("other", "c-kct", "KubeadmConfigTemplate"),
            md("wl", "pool", "SomeOtherBootstrapTemplate"),
        ];
        assert_eq!(templates_of("wl", &mds), ["a-kct", "b-kct"]);
        assert_eq!(templates_of("none", &mds), Vec::<String>::new());
    }

    #[test]
    fn paused_clusters_and_refusals() {
        assert!(!paused(&cluster(true)));
        let mut by_spec = cluster(true);
        by_spec["spec"]["paused"] = json!(true);
        assert!(paused(&by_spec));
        let mut by_annotation = cluster(true);
        by_annotation["metadata"]["annotations"]["cluster.x-k8s.io/paused"] = json!("");
        assert!(paused(&by_annotation));

        let api_saying = |code: u16, message: &str| {
            LinkError::Kube(kube::Error::Api(
                serde_json::from_value(
                    json!({"status": "Failure", "message": message, "reason": "x", "code": code}),
                )
                .expect("status"),
            ))
        };
        let api = |code: u16| api_saying(code, "no");
        // The webhook's denial when it could not read the Cluster says to retry: retried soon, not reported.
        let lookup_failed = format!(
            "admission webhook \"mutate.capi-calico.io\" denied the request: {} KubeadmConfigTemplate x (...); \
             retry in a moment",
            crate::admission::policy::LOOKUP_FAILED_MESSAGE
        );
        assert!(!api_saying(403, &lookup_failed).refused());
        for (code, refused) in [
            (400, true),
            (401, true),
            (403, true),
            (422, true),
            (404, false),
            (408, false),
            (409, false),
            (429, false),
            (500, false),
        ] {
            assert_eq!(api(code).refused(), refused, "{code}");
        }
        let note = link_failure_note("KubeadmConfigTemplate", "wl-md-0", &api(403));
        assert_eq!(
            note,
            "KubeadmConfigTemplate wl-md-0 could not be linked to this Cluster or brought up to date (fix the cause; \
             asked again at the Cluster's or a MachineDeployment's next change, or the resync): no"
        );
        let long = LinkError::Kube(kube::Error::Api(
            serde_json::from_value(json!({"status": "Failure", "message": "é".repeat(900), "reason": "x", "code": 403}))
                .expect("status"),
        ));
        let note = link_failure_note("KubeadmConfigTemplate", "wl-md-0", &long);
        assert!(
            note.len() <= 1024 && note.ends_with("..."),
            "{}",
            note.len()
        );
    }

    #[test]
    fn label_patches() {
        use std::collections::BTreeMap;
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let both = json!({"metadata": {"labels": {"cluster.x-k8s.io/cluster-name": "wl", "capi-calico.io/cluster": "wl"}}});
        let ours = json!({"metadata": {"labels": {"capi-calico.io/cluster": "wl"}}});
        let cases = [
            ("KubeadmControlPlane", labels(&[]), Some(both.clone())),
            (
                "KubeadmConfigTemplate",
                labels(&[("app", "x")]),
                Some(both.clone()),
            ),
            // An empty cluster-name label names no Cluster: set as if absent.
            (
                "KubeadmConfigTemplate",
                labels(&[(CLUSTER_NAME_LABEL, "")]),
                Some(both),
            ),
            (
                "KubeadmConfigTemplate",
                labels(&[(CLUSTER_NAME_LABEL, "other")]),
                None,
            ),
            (
                "KubeadmControlPlane",
                labels(&[(CLUSTER_NAME_LABEL, "other")]),
                None,
            ),
            (
                "KubeadmConfigTemplate",
                labels(&[(CLUSTER_NAME_LABEL, "wl")]),
                Some(ours),
            ),
            (
                "KubeadmControlPlane",
                labels(&[(CLUSTER_NAME_LABEL, "wl")]),
                None,
            ),
            (
                "KubeadmControlPlane",
                labels(&[(CLUSTER_NAME_LABEL, "wl"), ("capi-calico.io/cluster", "wl")]),
                None,
            ),
            (
                "KubeadmConfigTemplate",
                labels(&[(CLUSTER_NAME_LABEL, "wl"), ("capi-calico.io/cluster", "wl")]),
                None,
            ),
        ];
        for (kind, labels, want) in cases {
            assert_eq!(
                label_patch(kind, "wl", &labels, None),
                want,
                "{kind} {labels:?}"
            );
        }
        // A KCP labelled for the Cluster before it existed: ours is added while it has no machines, so that the
        // webhook sees it again and injects it; never once machines run (that injection would roll them).
        let capi_only = labels(&[(CLUSTER_NAME_LABEL, "wl")]);
        let ours = json!({"metadata": {"labels": {"capi-calico.io/cluster": "wl"}}});
        for (machines, want) in [(Some(0), Some(ours)), (Some(3), None), (None, None)] {
            assert_eq!(
                label_patch("KubeadmControlPlane", "wl", &capi_only, machines),
                want,
                "{machines:?}"
            );
        }
        assert!(lacks_our_label(&capi_only, "wl"));
        assert!(!lacks_our_label(&capi_only, "other"));
    }

    #[test]
    fn clusters_not_opted_in_or_invalid_are_never_touched() {
        let mds = [md("wl", "wl-md-0", "KubeadmConfigTemplate")];
        assert!(targets(&cluster(false), &mds).is_empty());
        let mut no_annotations = cluster(true);
        no_annotations["metadata"]["annotations"] = json!({});
        assert!(targets(&no_annotations, &mds).is_empty());
        let mut invalid = cluster(true);
        invalid["metadata"]["annotations"]["capi-calico.io/CALICO_BGP_OPTION"] = json!("enabled");
        assert!(targets(&invalid, &mds).is_empty());
    }
}
