//! Cluster lookup in a live management cluster: reflector caches on Clusters and MachineDeployments find which
//! Cluster a KCP or KCT belongs to (one LIST, bounded by a short timeout, on a cache miss, so that an object created a
//! moment earlier in the same `kubectl apply` is still found); the Cluster itself is then read with one GET, so that
//! its settings are those stored now, with the cached copy as the fallback when the API server does not answer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Client,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;

use crate::delivery::VERSION_LABEL;

use super::{
    CLUSTER_NAME_LABEL, ClusterInfo, ClusterSource, Lookup, LookupSource, Subject, SubjectKind,
    TemplateUsers, reference_names, template_users,
};

/// Default bound on the fallback API call.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_millis(1500);

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", kind))
}

/// Reflector-backed [`ClusterSource`].
#[derive(Clone)]
pub struct LiveSource {
    client: Client,
    clusters: Store<DynamicObject>,
    machine_deployments: Store<DynamicObject>,
    cluster_resource: ApiResource,
    md_resource: ApiResource,
    bundles: Store<ConfigMap>,
    bundles_synced: Arc<AtomicBool>,
    synced: Arc<AtomicBool>,
    api_timeout: Duration,
}

impl LiveSource {
    /// Start the reflectors (on the current tokio runtime) and return the source. It reports ready once the
    /// Cluster and MachineDeployment caches have synced. `bundle_namespace` is where the Calico operator bundles are
    /// loaded; their versions feed the admission warning for a CALICO_VERSION without a bundle.
    pub fn start(client: Client, api_timeout: Duration, bundle_namespace: &str) -> Self {
        let cluster_resource = resource("Cluster");
        let md_resource = resource("MachineDeployment");
        let clusters = spawn_reflector(client.clone(), cluster_resource.clone());
        let machine_deployments = spawn_reflector(client.clone(), md_resource.clone());
        let bundles = spawn_bundle_reflector(client.clone(), bundle_namespace);
        let bundles_synced = Arc::new(AtomicBool::new(false));
        {
            let (bundles, flag) = (bundles.clone(), bundles_synced.clone());
            tokio::spawn(async move {
                if bundles.wait_until_ready().await.is_ok() {
                    flag.store(true, Ordering::SeqCst);
                }
            });
        }
        let synced = Arc::new(AtomicBool::new(false));
        {
            let (clusters, mds, synced) = (
                clusters.clone(),
                machine_deployments.clone(),
                synced.clone(),
            );
            tokio::spawn(async move {
                if clusters.wait_until_ready().await.is_ok() && mds.wait_until_ready().await.is_ok()
                {
                    synced.store(true, Ordering::SeqCst);
                    tracing::info!("cluster lookup caches synced");
                }
            });
        }
        LiveSource {
            client,
            clusters,
            machine_deployments,
            cluster_resource,
            md_resource,
            bundles,
            bundles_synced,
            synced,
            api_timeout,
        }
    }

    fn info(object: &DynamicObject) -> Option<ClusterInfo> {
        serde_json::to_value(object)
            .ok()
            .as_ref()
            .and_then(ClusterInfo::from_object)
    }

    fn found(object: &DynamicObject, source: LookupSource) -> Lookup {
        match Self::info(object) {
            Some(info) => Lookup::Found {
                cluster: Box::new(info),
                source,
                also_used_by: Vec::new(),
            },
            None => Lookup::Failed {
                reason: "the Cluster object could not be read".to_string(),
            },
        }
    }

    /// The cached MachineDeployments that use the KCT `subject`.
    fn cached_template_users(&self, subject: &Subject) -> TemplateUsers {
        let mds = self.machine_deployments.state();
        template_users(
            mds.iter().filter_map(|md| {
                md.metadata
                    .namespace
                    .as_deref()
                    .filter(|ns| *ns == subject.namespace)
                    .map(|ns| (ns, &md.data))
            }),
            &subject.name,
            &subject.namespace,
        )
    }

    fn cached_cluster(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let key = ObjectRef::new_with(name, self.cluster_resource.clone()).within(namespace);
        self.clusters.get(&key)
    }

    /// `lookup` with the other cached Clusters among `users` added to what it found.
    fn with_sharing(&self, lookup: Lookup, users: &TemplateUsers) -> Lookup {
        match lookup {
            Lookup::Found {
                cluster,
                source,
                mut also_used_by,
            } => {
                also_used_by.extend(
                    users
                        .clusters
                        .iter()
                        .filter(|(ns, name)| *ns != cluster.namespace || *name != cluster.name)
                        .filter_map(|(ns, name)| self.cached_cluster(ns, name))
                        .filter_map(|other| Self::info(&other)),
                );
                Lookup::Found {
                    cluster,
                    source,
                    also_used_by,
                }
            }
            other => other,
        }
    }

    /// The Cluster `namespace/name` as stored now: one GET (a quorum read), not the cache, so that a settings change
    /// applied a moment before the KCP or KCT (one `kubectl apply` of both) is seen even while the watch has not
    /// brought it yet; from the cache, the mutating and the validating call could read two states of the Cluster
    /// and deny the injection they disagree on. When the API server does not answer in time, the cached copy is
    /// used (counted as `cache`), else the lookup fails (fail closed).
    async fn cluster_by_name(&self, namespace: &str, name: &str, looked_for: String) -> Lookup {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &self.cluster_resource);
        let reason = match tokio::time::timeout(self.api_timeout, api.get_opt(name)).await {
            Ok(Ok(Some(cluster))) => return Self::found(&cluster, LookupSource::Api),
            Ok(Ok(None)) => {
                return Lookup::NotFound {
                    looked_for,
                    named: true,
                };
            }
            // A refusal (401, 403: a missing RBAC rule, say) is no outage: say it rather than decide on the cache.
            Ok(Err(kube::Error::Api(status))) if super::is_refusal(&status) => {
                return Lookup::Failed {
                    reason: format!("reading Cluster {namespace}/{name}: {}", status.message),
                };
            }
            Ok(Err(err)) => format!("reading Cluster {namespace}/{name}: {err}"),
            Err(_) => format!(
                "reading Cluster {namespace}/{name} timed out after {:?}",
                self.api_timeout
            ),
        };
        match self.cached_cluster(namespace, name) {
            Some(cluster) => {
                if FALLBACK_LOG.ready() {
                    tracing::warn!(%reason, "using the cached Cluster: the API server did not answer");
                }
                Self::found(&cluster, LookupSource::Cache)
            }
            None => Lookup::Failed { reason },
        }
    }

    /// Search the cache, then one LIST in the namespace, for an object matching `pred`.
    async fn find_in(
        &self,
        store: &Store<DynamicObject>,
        resource: &ApiResource,
        namespace: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Option<(Value, LookupSource)>, String> {
        let matches = |o: &DynamicObject| -> Option<Value> {
            if o.metadata.namespace.as_deref() != Some(namespace) {
                return None;
            }
            serde_json::to_value(o).ok().filter(|v| pred(v))
        };
        if let Some(hit) = store.state().iter().find_map(|o| matches(o)) {
            return Ok(Some((hit, LookupSource::Cache)));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, resource);
        match tokio::time::timeout(self.api_timeout, api.list(&ListParams::default())).await {
            Ok(Ok(list)) => Ok(list
                .items
                .iter()
                .find_map(matches)
                .map(|v| (v, LookupSource::Api))),
            Ok(Err(err)) => Err(format!("listing {} in {namespace}: {err}", resource.plural)),
            Err(_) => Err(format!(
                "listing {} in {namespace} timed out after {:?}",
                resource.plural, self.api_timeout
            )),
        }
    }
}

/// Bundle ConfigMaps (labelled with their Calico version) in the bundle namespace.
fn spawn_bundle_reflector(client: Client, namespace: &str) -> Store<ConfigMap> {
    let (reader, writer) = reflector::store::<ConfigMap>();
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(VERSION_LABEL);
    drive(
        watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .applied_objects(),
        "configmaps".to_string(),
    );
    reader
}

/// Run a reflector's stream for the life of the process; watch errors are retried with backoff by the stream.
fn drive<S, K>(stream: S, what: String)
where
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(resource = %what, error = %err, "watch error; retrying with backoff");
            }
        }
    });
}

fn spawn_reflector(client: Client, resource: ApiResource) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    drive(stream, resource.plural);
    reader
}

/// At most one log line a minute about answering from the cache (each review of a KCP or KCT would log one while the
/// API server is down; the lookups metric counts them all, as `cache`).
static FALLBACK_LOG: LogEvery = LogEvery::new(60);

/// The clock of [`LogEvery`] (monotonic: a wall-clock step must not silence the log).
static PROCESS_START: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Lets a repeated log line through at most once per `seconds`.
struct LogEvery {
    seconds: u64,
    last: std::sync::atomic::AtomicU64,
}

impl LogEvery {
    const fn new(seconds: u64) -> Self {
        LogEvery {
            seconds,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// True when the line may be logged now (and then not again for `seconds`).
    fn ready(&self) -> bool {
        self.ready_at(PROCESS_START.elapsed().as_secs() + 1)
    }

    /// [`LogEvery::ready`] at `now`, seconds on a clock that starts at 1 and never goes back.
    fn ready_at(&self, now: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now >= last + self.seconds)
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl ClusterSource for LiveSource {
    async fn find(&self, subject: &Subject) -> Lookup {
        let ns = subject.namespace.as_str();
        if let Some(name) = subject.cluster_label() {
            let looked_for = format!("Cluster {ns}/{name} (from the {CLUSTER_NAME_LABEL} label)");
            let lookup = self.cluster_by_name(ns, name, looked_for).await;
            return match subject.kind {
                SubjectKind::ConfigTemplate => {
                    let users = self.cached_template_users(subject);
                    self.with_sharing(lookup, &users)
                }
                SubjectKind::ControlPlane => lookup,
            };
        }
        match subject.kind {
            SubjectKind::ControlPlane => {
                let names_subject = |c: &Value| {
                    reference_names(
                        c.pointer("/spec/controlPlaneRef"),
                        SubjectKind::ControlPlane.kind(),
                        &subject.name,
                        ns,
                        ns,
                    )
                };
                match self
                    .find_in(&self.clusters, &self.cluster_resource, ns, names_subject)
                    .await
                {
                    // Found in the cache: read it as stored now (see `cluster_by_name`).
                    Ok(Some((cluster, LookupSource::Cache))) => {
                        let name = cluster
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let looked_for =
                            format!("Cluster {ns}/{name} (its spec.controlPlaneRef names it)");
                        self.cluster_by_name(ns, name, looked_for).await
                    }
                    Ok(Some((cluster, source))) => match ClusterInfo::from_object(&cluster) {
                        Some(info) => Lookup::Found {
                            cluster: Box::new(info),
                            source,
                            also_used_by: Vec::new(),
                        },
                        None => Lookup::Failed {
                            reason: "the Cluster object could not be read".to_string(),
                        },
                    },
                    Ok(None) => Lookup::NotFound {
                        looked_for: format!(
                            "a Cluster whose spec.controlPlaneRef names it, in namespace {ns}"
                        ),
                        named: false,
                    },
                    Err(reason) => Lookup::Failed { reason },
                }
            }
            SubjectKind::ConfigTemplate => {
                let mut users = self.cached_template_users(subject);
                if !users.referenced {
                    // A MachineDeployment created a moment ago may not be cached yet: one LIST.
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(self.client.clone(), ns, &self.md_resource);
                    match tokio::time::timeout(self.api_timeout, api.list(&ListParams::default()))
                        .await
                    {
                        Ok(Ok(list)) => {
                            users = template_users(
                                list.items.iter().map(|md| (ns, &md.data)),
                                &subject.name,
                                ns,
                            );
                        }
                        Ok(Err(err)) => {
                            return Lookup::Failed {
                                reason: format!(
                                    "listing {} in {ns}: {err}",
                                    self.md_resource.plural
                                ),
                            };
                        }
                        Err(_) => {
                            return Lookup::Failed {
                                reason: format!(
                                    "listing {} in {ns} timed out after {:?}",
                                    self.md_resource.plural, self.api_timeout
                                ),
                            };
                        }
                    }
                }
                // The first Cluster by name among those cached (once synced, every existing Cluster is, within the
                // watch's delay), else one GET for the first name: never the cache's order. A Cluster created a moment
                // ago and not cached yet can be passed over for a later name in that moment; one GET per uncached
                // name instead could exceed the request's deadline for a template shared by many Clusters.
                let first = users
                    .clusters
                    .iter()
                    .find(|(md_ns, name)| self.cached_cluster(md_ns, name).is_some())
                    .or(users.clusters.first());
                let lookup = match first {
                    Some((md_ns, name)) => {
                        self.cluster_by_name(md_ns, name, users.looked_for(ns))
                            .await
                    }
                    None => Lookup::NotFound {
                        looked_for: users.looked_for(ns),
                        named: false,
                    },
                };
                self.with_sharing(lookup, &users)
            }
        }
    }

    fn ready(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    fn calico_bundles(&self) -> Option<Vec<String>> {
        if !self.bundles_synced.load(Ordering::SeqCst) {
            return None;
        }
        let mut versions: Vec<String> = self
            .bundles
            .state()
            .iter()
            .filter_map(|cm| cm.metadata.labels.as_ref()?.get(VERSION_LABEL).cloned())
            .collect();
        versions.sort();
        versions.dedup();
        Some(versions)
    }
}

#[cfg(test)]
mod tests {
    use super::LogEvery;

    #[test]
    fn a_repeated_log_line_passes_once_per_period() {
        let every = LogEvery::new(60);
        assert!(every.ready_at(1), "the first one");
        assert!(!every.ready_at(1));
        assert!(!every.ready_at(60));
        assert!(every.ready_at(61), "a period later");
        assert!(!every.ready_at(100));
        assert!(every.ready_at(121));
    }
}
