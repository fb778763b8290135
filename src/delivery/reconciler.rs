//! The delivery reconciler: a kube-runtime [`Controller`] over Cluster API Clusters. Not on the admission path.
//!
//! For every Cluster it computes a [`Plan`] (pure, see [`super::desired`]) and applies it with server-side apply:
//! bundle copies, the Installation ConfigMap, the ClusterResourceSet; then it records the outcome in the
//! [`STATUS_ANNOTATION`] and, when that changes, an Event on the Cluster. A reflector on the bundle ConfigMaps
//! (label [`ROLE_LABEL`] in the bundle namespace) both serves the bundle and re-triggers every Cluster when a bundle
//! is loaded or changed, so a Cluster applied before its bundle is delivered as soon as the bundle arrives.
//!
//! Events whose inputs (the Cluster without its status, and the bundles) are those last reconciled in full are
//! skipped until the resync, so CAPI's frequent status updates cost no request (see [`crate::cluster::seen`]).
//!
//! No leader election: every apply is a server-side apply of a body computed only from the watched inputs, under
//! fixed field managers, so replicas that race write identical bodies and converge; a status annotation is only
//! written when it differs. The steps a replica whose cache is behind could get wrong for good read the Cluster afresh
//! first and leave the work to the next pass when its settings changed: retiring unused bundle copies
//! ([`super::retire`]), and deleting or creating a ClusterResourceSet (which gives it a fresh record at Cluster API,
//! so what it lists is applied in full).

use std::{future::Future, sync::Arc, time::Duration};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Client, Resource, ResourceExt,
    api::{
        Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
        Preconditions, PropagationPolicy,
    },
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::{Value, json};

use crate::cluster::seen::{Seen, backing_off};

use super::{
    DEFAULT_BUNDLE_NAMESPACE, DIGEST_ANNOTATION, DeliveryError, FIELD_MANAGER, MANAGED_BY_LABEL,
    ROLE_LABEL, STATUS_ANNOTATION,
    desired::{
        ClusterRef, CrsApplied, DeliveryStatus, Desired, NOT_APPLIED, Plan, crs_applied,
        current_status, inputs_fingerprint, name_of, owner_field_manager, plan, recorded_reason,
    },
    retire::{self, bundle_changed, copies_to_retire, listed_configmaps},
};

/// How the reconciler runs.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Where the bundle ConfigMaps are loaded (`--bundle-namespace`, default `capi-calico-system`).
    pub bundle_namespace: String,
    /// Periodic re-reconcile of every opted-in Cluster, a safety net for objects changed or deleted by hand
    /// (10 minutes by default; `serve` does not expose it).
    pub resync: Duration,
    /// Clusters reconciled in parallel (4 by default; `serve` does not expose it).
    pub concurrency: u16,
    /// Event reporter instance, usually the pod name (`POD_NAME`).
    pub instance: Option<String>,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            bundle_namespace: DEFAULT_BUNDLE_NAMESPACE.to_string(),
            resync: Duration::from_secs(600),
            concurrency: 4,
            instance: None,
        }
    }
}

fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
    ))
}

fn crs_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "addons.cluster.x-k8s.io",
        "v1beta2",
        "ClusterResourceSet",
    ))
}

struct Ctx {
    client: Client,
    config: ReconcilerConfig,
    bundles: Store<ConfigMap>,
    recorder: Recorder,
    cluster_resource: ApiResource,
    /// The inputs each Cluster (by uid) was last reconciled with in full.
    applied: Seen,
    /// The bundle copies each Cluster (by uid) last finished retiring.
    retired: retire::Done,
}

/// Run until SIGTERM or Ctrl-C.
pub async fn run_reconciler(client: Client, config: ReconcilerConfig) -> Result<(), DeliveryError> {
    run(client, config, None::<future::Pending<()>>).await
}

/// Run until `shutdown` completes (for a process that also serves the webhook and owns signal handling).
pub async fn run_reconciler_until(
    client: Client,
    config: ReconcilerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), DeliveryError> {
    run(client, config, Some(shutdown)).await
}

async fn run<F>(
    client: Client,
    config: ReconcilerConfig,
    shutdown: Option<F>,
) -> Result<(), DeliveryError>
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let cluster_resource = cluster_resource();
    let clusters: Api<DynamicObject> = Api::all_with(client.clone(), &cluster_resource);
    let bundle_api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.bundle_namespace);

    let (bundles, writer) = reflector::store::<ConfigMap>();
    let bundle_trigger = watcher(bundle_api, watcher::Config::default().labels(ROLE_LABEL))
        .default_backoff()
        .modify(|cm| cm.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
        .filter_map(|event| {
            future::ready(match event {
                Ok(cm) => {
                    tracing::debug!(configmap = %cm.name_any(), "bundle ConfigMap changed; reconciling all Clusters");
                    Some(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching bundle ConfigMaps");
                    None
                }
            })
        });

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        bundles,
        cluster_resource: cluster_resource.clone(),
        config: config.clone(),
        applied: Seen::default(),
        retired: retire::Done::default(),
    });
    tracing::info!(bundle_namespace = %config.bundle_namespace, "delivery reconciler starting");

    let mut controller =
        Controller::new_with(clusters, watcher::Config::default(), cluster_resource)
            .with_config(
                kube::runtime::controller::Config::default().concurrency(config.concurrency),
            )
            .reconcile_all_on(bundle_trigger);
    controller = match shutdown {
        Some(shutdown) => controller.graceful_shutdown_on(shutdown),
        None => controller.shutdown_on_signal(),
    };
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    tracing::info!("delivery reconciler stopped");
    Ok(())
}

fn error_policy(cluster: Arc<DynamicObject>, error: &DeliveryError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), namespace = ?cluster.namespace(), %error, "delivery failed; retrying");
    Action::requeue(ERROR_RETRY)
}

/// When a failed pass is tried again.
const ERROR_RETRY: Duration = Duration::from_secs(30);

/// An error worth telling the user on the Cluster: the API server refused the write (a quota, an object with
/// another controller, an admission refusal, missing RBAC), not a conflict, throttling or a dropped connection,
/// which the retry clears.
fn lasting(error: &DeliveryError) -> bool {
    matches!(error, DeliveryError::Kube(kube::Error::Api(status))
        if (400..500).contains(&status.code) && status.code != 409 && status.code != 429)
}

async fn reconcile(cluster: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, DeliveryError> {
    let uid = cluster.uid().unwrap_or_default();
    if cluster.metadata.deletion_timestamp.is_some() {
        // Everything we wrote is owned by the Cluster; the garbage collector removes it.
        ctx.applied.forget(&uid);
        ctx.retired.forget(&uid);
        return Ok(Action::await_change());
    }
    // Until the bundle cache has listed once, "no bundle" would be a false report.
    match tokio::time::timeout(Duration::from_secs(30), ctx.bundles.wait_until_ready()).await {
        Ok(Ok(())) => {}
        _ => return Ok(Action::requeue(Duration::from_secs(5))),
    }
    let object = serde_json::to_value(&*cluster)?;
    let bundle_state = ctx.bundles.state();
    let fingerprint = inputs_fingerprint(&object, bundle_state.iter().map(|cm| &cm.metadata));
    if let Some(resync_in) = ctx.applied.skip(&uid, fingerprint, ctx.config.resync) {
        tracing::debug!(cluster = %cluster.name_any(), "inputs unchanged since the last reconcile; skipped");
        return Ok(Action::requeue(resync_in));
    }
    // Only now, for a full pass: the loaded bundles are megabytes of JSON.
    let bundle_configmaps = bundle_state
        .iter()
        .map(|cm| serde_json::to_value(&**cm))
        .collect::<Result<Vec<Value>, _>>()?;
    // A full pass from here: until it succeeds, no earlier fingerprint may cause a skip (a pass that fails halfway
    // followed by a revert to the remembered inputs would otherwise leave this pass's writes in place). What was
    // remembered tells how long the last wait was, for backing off.
    let previous = ctx.applied.take(&uid);
    // Waiting again with the same inputs (a failed pass, or Cluster API not done): not before this, and events with
    // these inputs (our own status write, Cluster API's status updates) are skipped until then.
    let wait_again = |first: Duration| {
        let wait = backing_off(previous, fingerprint, first, ctx.config.resync);
        ctx.applied.remember_for(&uid, fingerprint, wait);
        wait
    };

    // The status to record, and for an applied Cluster the bundle copies it may no longer use. `settled`: nothing
    // left to watch for until the inputs change (Cluster API has answered about the set, or there is no set).
    let mut settled = true;
    let mut replacing = false;
    let mut keep_recorded = false;
    let (status, retire_step): (DeliveryStatus, Option<(ClusterRef, Vec<String>)>) = match plan(
        &object,
        &ctx.config.bundle_namespace,
        bundle_configmaps.iter(),
    ) {
        Plan::Ignore => {
            // Opted out (or never in): objects written earlier stay (see docs/delivery.md), only our status
            // annotation goes, so it does not claim a delivery that is no longer managed.
            if current_status(&object).is_some()
                && let Err(error) = patch_status(&ctx, &cluster, Value::Null).await
            {
                wait_again(ERROR_RETRY);
                return Err(error);
            }
            // Most Clusters may be here: their status updates are skipped like any other.
            ctx.applied.remember(&uid, fingerprint);
            return Ok(Action::await_change());
        }
        Plan::Apply { desired, status } => {
            let Some(cref) = ClusterRef::from_object(&object) else {
                return Ok(Action::await_change());
            };
            let clusters: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &cref.namespace, &ctx.cluster_resource);
            let reconciled = cluster.metadata.annotations.clone().unwrap_or_default();
            let applied = match apply(&ctx.client, &cref, &desired, &clusters, &reconciled).await {
                Ok(applied) => applied,
                Err(error) => {
                    // Said on the Cluster too, not only in this process's log, when it is not a passing one; the pass
                    // still fails and is retried.
                    if let (Some(version), true) = (status.version(), lasting(&error)) {
                        let failed = DeliveryStatus::ApplyFailed {
                            version: version.to_string(),
                            error: in_words(&error),
                        };
                        if let Err(e) = record(&ctx, &cluster, &object, &failed).await {
                            tracing::warn!(error = %e, cluster = %cluster.name_any(), "recording the failure");
                        }
                    }
                    // 30 s, then less often while the same inputs keep failing.
                    wait_again(ERROR_RETRY);
                    return Err(error);
                }
            };
            let retired = copies_to_retire(&desired, &bundle_configmaps, &applied.listed_before);
            // Cluster API applies the set a moment after it changes and says how in the set's status, which no
            // watch here follows: until it has said "applied", look again (in a minute, then less often). A set that
            // selects no Cluster gets no answer; the label it waits for is a change of the Cluster anyway.
            settled = !applied.replacing
                && (applied.crs == CrsApplied::Applied
                    || matches!(status, DeliveryStatus::LabelMissing { .. }));
            replacing = applied.replacing;
            // A change of the set (its generation) leaves its last verdict unknown until Cluster API looks again:
            // a NotApplied on record stays until then, rather than flapping through Delivered.
            // While the set is replaced there is none: the status on record stays until it exists again.
            keep_recorded = replacing
                || (applied.crs == CrsApplied::Unknown
                    && matches!(status, DeliveryStatus::Delivered { .. })
                    && recorded_reason(&object).as_deref() == Some(NOT_APPLIED));
            let status = match (status, applied.crs) {
                (DeliveryStatus::Delivered { version }, CrsApplied::Failed { reason, message }) => {
                    DeliveryStatus::NotApplied {
                        version,
                        crs: name_of(&desired.cluster_resource_set).to_string(),
                        reason,
                        message,
                    }
                }
                (status, _) => status,
            };
            (status, Some((cref, retired)))
        }
        Plan::Report(status) => (status, None),
    };
    // A refused status write (an admission webhook of someone else's, say) backs off like any failed pass.
    if !keep_recorded && let Err(error) = record(&ctx, &cluster, &object, &status).await {
        wait_again(ERROR_RETRY);
        return Err(error);
    }
    // After the status: a failure here does not hide the delivery, it fails the pass (retried in 30 s, with
    // the copies of other loaded versions found again).
    if let Some((cref, names)) = retire_step.filter(|(_, names)| !ctx.retired.covers(&uid, names)) {
        let apis = retire::Apis {
            configmaps: Api::namespaced(ctx.client.clone(), &cref.namespace),
            sets: Api::namespaced_with(ctx.client.clone(), &cref.namespace, &crs_resource()),
            clusters: Api::namespaced_with(
                ctx.client.clone(),
                &cref.namespace,
                &ctx.cluster_resource,
            ),
        };
        let reconciled = cluster.metadata.annotations.clone().unwrap_or_default();
        match retire::retire_copies(&apis, &cref, &reconciled, &names).await {
            Ok(true) => ctx.retired.remember(&uid, &names),
            Ok(false) => {}
            Err(error) => {
                wait_again(ERROR_RETRY);
                return Err(error);
            }
        }
    }
    if settled {
        ctx.applied.remember(&uid, fingerprint);
        Ok(Action::requeue(ctx.config.resync))
    } else if replacing {
        Ok(Action::requeue(wait_again(REPLACE_RECHECK)))
    } else {
        Ok(Action::requeue(wait_again(UNSETTLED_RECHECK)))
    }
}

/// An error as a user reads it on the Cluster: the API server's own message (with its code and reason) rather
/// than the client's whole debug form.
fn in_words(error: &DeliveryError) -> String {
    match error {
        DeliveryError::Kube(kube::Error::Api(status)) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

/// How soon a Cluster whose ClusterResourceSet Cluster API has not reported as applied is looked at again the first
/// time; then twice as late each time, up to the resync.
const UNSETTLED_RECHECK: Duration = Duration::from_secs(60);

/// How soon a Cluster whose ClusterResourceSet is being replaced (see [`apply`]) is looked at again the first time:
/// Cluster API and the garbage collector release a deleted set within seconds.
const REPLACE_RECHECK: Duration = Duration::from_secs(3);

/// A replaced set still being deleted after this long is logged as a warning at every look.
const STUCK_DELETION_SECS: i64 = 120;

/// Server-side apply everything in `desired`: bundle copies (content, then this Cluster's ownerReference under its
/// own field manager, each skipped when already in place), the Installation ConfigMap, the ClusterResourceSet last.
/// Returns the ConfigMaps the ClusterResourceSet listed before (for [`retire`]).
///
/// A set that lists the copies of another bundle (a `CALICO_VERSION` change) is deleted instead of changed, and
/// created again by a later pass once it is gone: Cluster API keeps a record of every resource it applied for a set
/// (the set's entry in the Cluster's ClusterResourceSetBinding) and never drops the record of a resource the set no
/// longer lists, so going back to a version the Cluster had before would find its copies "already applied, same
/// hash" and apply nothing, while the status said delivered. Deleting the set drops its whole record (Cluster API's
/// `reconcileDelete`); the new set starts with none and applies everything. Deleting a set removes nothing from the
/// workload cluster. The deletion orphans what the set owns: Cluster API makes a set the owner of every ConfigMap
/// and Secret it lists, and a user's pull Secret may have no other owner.
async fn apply(
    client: &Client,
    cluster: &ClusterRef,
    desired: &Desired,
    clusters: &Api<DynamicObject>,
    reconciled: &std::collections::BTreeMap<String, String>,
) -> Result<Applied, DeliveryError> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &cluster.namespace);
    let content = PatchParams::apply(FIELD_MANAGER).force();
    let owner_manager = owner_field_manager(&cluster.uid);
    let owner = PatchParams::apply(&owner_manager).force();

    for (copy, owner_body) in desired.bundle_copies.iter().zip(&desired.bundle_owners) {
        let name = name_of(copy);
        let want_digest = copy
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DIGEST_ANNOTATION))
            .and_then(Value::as_str);
        let in_place = |meta: &ObjectMeta| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(DIGEST_ANNOTATION))
                .map(String::as_str)
                == want_digest
                && meta
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(MANAGED_BY_LABEL))
        };
        let current = configmaps.get_metadata_opt(name).await?;
        let has_owner = current
            .as_ref()
            .is_some_and(|c| c.owner_references().iter().any(|o| o.uid == cluster.uid));
        let mut same_content = current.as_ref().is_some_and(|c| in_place(&c.metadata));
        if !has_owner {
            let after = configmaps
                .patch(name, &owner, &Patch::Apply(owner_body))
                .await?;
            // Decided again from what the apply returns: another Cluster may have retired (deleted) the copy since
            // the read, and then this apply created it with nothing but the ownerReference.
            same_content = in_place(&after.metadata);
        }
        if !same_content {
            configmaps
                .patch(name, &content, &Patch::Apply(copy))
                .await?;
            tracing::info!(namespace = %cluster.namespace, configmap = name, "bundle copy applied");
        }
    }

    configmaps
        .patch(
            name_of(&desired.installation),
            &content,
            &Patch::Apply(&desired.installation),
        )
        .await?;
    let crs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &cluster.namespace, &crs_resource());
    let crs_name = name_of(&desired.cluster_resource_set);
    // Not yet: the set is being replaced, or this replica's view of the Cluster is behind.
    let wait = |listed_before: Vec<String>| Applied {
        listed_before,
        crs: CrsApplied::Unknown,
        replacing: true,
    };
    let listed_before = match crs.get_opt(crs_name).await {
        Ok(Some(before)) => {
            let listed = listed_configmaps(&serde_json::to_value(&before)?);
            if let Some(since) = &before.metadata.deletion_timestamp {
                let for_s = k8s_openapi::jiff::Timestamp::now()
                    .as_second()
                    .saturating_sub(since.0.as_second());
                if for_s > STUCK_DELETION_SECS {
                    tracing::warn!(namespace = %cluster.namespace, clusterresourceset = crs_name, seconds = for_s,
                        "the replaced ClusterResourceSet is still being deleted: Cluster API's controller removes its \
                         finalizer, kube-controller-manager's garbage collector the orphan one; are both running?");
                }
                return Ok(wait(listed));
            }
            if !bundle_changed(&listed, desired) {
                listed
            } else if !retire::still_reconciled(clusters, cluster, reconciled).await? {
                tracing::debug!(namespace = %cluster.namespace, cluster = %cluster.name,
                    "the Cluster changed since this pass read it; replacing its ClusterResourceSet left to the next pass");
                return Ok(wait(Vec::new()));
            } else {
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Orphan),
                    preconditions: Some(Preconditions {
                        uid: before.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match crs.delete(crs_name, &params).await {
                    Ok(_) => {
                        tracing::info!(namespace = %cluster.namespace, clusterresourceset = crs_name,
                            "the Calico bundle changed: ClusterResourceSet deleted, to be created again with a fresh \
                             record of what Cluster API applied");
                        return Ok(wait(listed));
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                        return Ok(wait(listed));
                    }
                    // RBAC of an older release (no `delete` on clusterresourcesets): change it in place as before.
                    Err(kube::Error::Api(s)) if s.code == 403 => {
                        tracing::warn!(namespace = %cluster.namespace, clusterresourceset = crs_name, error = %s.message,
                            "cannot delete the ClusterResourceSet (an older release's RBAC: apply deploy/base's; or an \
                             admission webhook refused it): changing it in place, which Cluster API does not apply when \
                             the Cluster goes back to a version it had before");
                        listed
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(None) => {
            // Created anew, the set starts a fresh record at Cluster API, which then applies all of it: never from
            // settings this replica has not caught up with.
            if !retire::still_reconciled(clusters, cluster, reconciled).await? {
                return Ok(wait(Vec::new()));
            }
            Vec::new()
        }
        // RBAC of an older release (no `get` on clusterresourcesets): deliver anyway; only copies of versions whose
        // bundle is still loaded are found for retiring.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            tracing::warn!(namespace = %cluster.namespace, clusterresourceset = crs_name, error = %s.message,
                "cannot read the ClusterResourceSet (apply deploy/base's RBAC); delivering without its previous list");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let applied = crs
        .patch(
            crs_name,
            &content,
            &Patch::Apply(&desired.cluster_resource_set),
        )
        .await?;
    Ok(Applied {
        listed_before,
        crs: crs_applied(&serde_json::to_value(&applied)?),
        replacing: false,
    })
}

/// What [`apply`] learnt.
struct Applied {
    /// The ConfigMaps the ClusterResourceSet listed before (for [`retire`]).
    listed_before: Vec<String>,
    /// What Cluster API last said about applying the set.
    crs: CrsApplied,
    /// The set is not in place yet (being replaced, or this replica's view of the Cluster is behind): a later pass
    /// looks again soon, and the status on record stays (see [`apply`]).
    replacing: bool,
}

/// Set (a string) or remove (`null`) the status annotation with a JSON merge patch on the Cluster.
async fn patch_status(
    ctx: &Ctx,
    cluster: &DynamicObject,
    value: Value,
) -> Result<(), DeliveryError> {
    let namespace = cluster.namespace().unwrap_or_default();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.cluster_resource);
    let patch = json!({ "metadata": { "annotations": { STATUS_ANNOTATION: value } } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    clusters
        .patch(&cluster.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Write the status annotation and publish an Event, only when the status changed.
async fn record(
    ctx: &Ctx,
    cluster: &DynamicObject,
    object: &Value,
    status: &DeliveryStatus,
) -> Result<(), DeliveryError> {
    let value = status.annotation_value();
    if current_status(object) == Some(value.as_str()) {
        return Ok(());
    }
    patch_status(ctx, cluster, Value::String(value)).await?;
    let namespace = cluster.namespace().unwrap_or_default();

    let note = super::event_note(status.message());
    let event = Event {
        type_: if status.is_ready() {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: status.reason().to_string(),
        note: Some(note),
        action: "DeliverCalico".to_string(),
        secondary: None,
    };
    let reference = cluster.object_ref(&ctx.cluster_resource);
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, cluster = %cluster.name_any(), "publishing Event");
    }
    if status.is_ready() {
        tracing::info!(cluster = %cluster.name_any(), %namespace, "Calico delivery in place");
    } else {
        tracing::warn!(cluster = %cluster.name_any(), %namespace, reason = status.reason(), message = %status.message(), "Calico cannot be delivered");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> DeliveryError {
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": code, "reason": reason,
            "message": format!("configmaps \"x\" is refused ({reason})")
        }))
        .expect("status");
        DeliveryError::Kube(kube::Error::Api(Box::new(status)))
    }

    /// What is told on the Cluster (ApplyFailed) and in which words: refusals that last, in the API server's message;
    /// conflicts, throttling and server errors pass with the retry and are only logged.
    #[test]
    fn lasting_refusals_are_told_in_the_api_servers_words() {
        for (code, reason, told) in [
            (403, "Forbidden", true),
            (404, "NotFound", true),
            (422, "Invalid", true),
            (409, "Conflict", false),
            (429, "TooManyRequests", false),
            (500, "InternalError", false),
        ] {
            let error = api_error(code, reason);
            assert_eq!(lasting(&error), told, "{code}");
            assert_eq!(
                in_words(&error),
                format!("configmaps \"x\" is refused ({reason}) ({code} {reason})")
            );
        }
        let other = DeliveryError::Retire {
            name: "calico-v3.30.7-crds-00".into(),
            reason: "gone".into(),
        };
        assert!(!lasting(&other));
        assert_eq!(in_words(&other), other.to_string());
    }
}
