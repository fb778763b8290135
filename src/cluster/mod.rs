//! Finding the Cluster of a KubeadmControlPlane or KubeadmConfigTemplate.
//!
//! The admission layer asks a [`ClusterSource`]; the CLI plugs in [`documents::DocumentSource`] (the Cluster is
//! among the input files), `serve` plugs in [`live::LiveSource`] (reflector caches with a fallback GET) or
//! [`NoLookup`] when it runs without cluster access.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
};

use serde_json::Value;

use crate::settings::ClusterNetwork;

pub mod documents;
pub mod linker;
pub mod live;
pub mod seen;

/// The label Cluster API puts on objects that belong to a Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// Which kind of object is looking for its Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A KubeadmControlPlane: linked through `Cluster.spec.controlPlaneRef`.
    ControlPlane,
    /// A KubeadmConfigTemplate: linked through a MachineDeployment's bootstrap `configRef`.
    ConfigTemplate,
}

impl SubjectKind {
    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            SubjectKind::ControlPlane => "KubeadmControlPlane",
            SubjectKind::ConfigTemplate => "KubeadmConfigTemplate",
        }
    }
}

/// The object whose Cluster is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: SubjectKind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Subject {
    /// The Cluster named by the [`CLUSTER_NAME_LABEL`] label. An empty value (an unset `${CLUSTER_NAME}` after
    /// envsubst) names no Cluster: the object is looked up by reference as if it had no label, rather than denied
    /// for good with an invalid name.
    pub fn cluster_label(&self) -> Option<&str> {
        cluster_label(&self.labels)
    }
}

/// The non-empty value of the [`CLUSTER_NAME_LABEL`] label in `labels`.
pub fn cluster_label(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels
        .get(CLUSTER_NAME_LABEL)
        .map(String::as_str)
        .filter(|name| !name.is_empty())
}

/// An API answer that a retry will not change: a 4xx other than not found (404), timeout (408), conflict (409) and
/// throttling (429), i.e. an authorization, validation or admission refusal.
pub fn is_refusal(status: &kube::core::Status) -> bool {
    (400..500).contains(&status.code) && !matches!(status.code, 404 | 408 | 409 | 429)
}

/// What the admission layer needs to know about a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub network: ClusterNetwork,
    /// Pod CIDR blocks that did not parse (reported, never silently dropped).
    pub unparsable_pod_cidrs: Vec<String>,
}

impl ClusterInfo {
    /// Read a Cluster object (v1beta1 or v1beta2: the paths used here are the same in both).
    pub fn from_object(object: &Value) -> Option<ClusterInfo> {
        let metadata = object.get("metadata")?;
        let name = metadata.get("name")?.as_str()?.to_string();
        let namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let annotations = string_map(metadata.get("annotations"));
        let (network, unparsable_pod_cidrs) = cluster_network(object);
        Some(ClusterInfo {
            namespace,
            name,
            annotations,
            network,
            unparsable_pod_cidrs,
        })
    }
}

/// What is wrong with a Cluster whose pod blocks include `unparsable` (the second part of [`cluster_network`]), in
/// the words both the admission denial and the reconciler's status use.
pub fn unparsable_pod_blocks_message(unparsable: &[String]) -> String {
    format!(
        "spec.clusterNetwork.pods.cidrBlocks: {} {} not a CIDR (like 100.96.0.0/11): fix the Cluster's pod blocks",
        unparsable.join(", "),
        if unparsable.len() == 1 { "is" } else { "are" }
    )
}

/// The Cluster's `spec.clusterNetwork.pods.cidrBlocks`, parsed; plus the entries that did not parse.
pub fn cluster_network(cluster: &Value) -> (ClusterNetwork, Vec<String>) {
    let mut network = ClusterNetwork::default();
    let mut bad = Vec::new();
    let blocks = cluster
        .pointer("/spec/clusterNetwork/pods/cidrBlocks")
        .and_then(Value::as_array);
    for block in blocks.into_iter().flatten() {
        match block.as_str().map(str::parse::<ipnet::IpNet>) {
            Some(Ok(net)) => network.pod_cidrs.push(net),
            _ => bad.push(block.to_string()),
        }
    }
    (network, bad)
}

/// A `metadata.labels`/`annotations` map; non-string values are skipped (the API server never sends them).
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a found Cluster came from (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupSource {
    /// The input documents (CLI).
    Documents,
    /// The informer cache (when the API server did not answer the Cluster's GET).
    Cache,
    /// A direct read of the API server.
    Api,
}

impl LookupSource {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupSource::Documents => "documents",
            LookupSource::Cache => "cache",
            LookupSource::Api => "api",
        }
    }
}

/// The answer of a [`ClusterSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found {
        cluster: Box<ClusterInfo>,
        source: LookupSource,
        /// For a KubeadmConfigTemplate: the other Clusters whose MachineDeployments use it too, in name order (a
        /// template is written once, so it can carry only one Cluster's settings). Clusters that cannot be found
        /// are not listed.
        also_used_by: Vec<ClusterInfo>,
    },
    /// No Cluster links to the subject. `looked_for` says what was searched, for the user's warning; `named`: a
    /// Cluster name was known (a label, or a MachineDeployment's clusterName) but no such Cluster exists.
    NotFound { looked_for: String, named: bool },
    /// This source cannot look Clusters up at all (serve without cluster access).
    Disabled,
    /// The lookup failed (API unreachable, timeout).
    Failed { reason: String },
}

impl Lookup {
    /// Label value for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Lookup::Found { source, .. } => source.as_str(),
            Lookup::NotFound { .. } => "not-found",
            Lookup::Disabled => "disabled",
            Lookup::Failed { .. } => "error",
        }
    }
}

/// Finds the Cluster of a KCP or KCT.
pub trait ClusterSource: Send + Sync + 'static {
    /// Look the subject's Cluster up.
    fn find(&self, subject: &Subject) -> impl Future<Output = Lookup> + Send;
    /// False until the source can answer (caches synced).
    fn ready(&self) -> bool {
        true
    }
    /// The Calico versions whose operator bundle is loaded in the management cluster, when this source knows
    /// them (`serve` with cluster access); `None` otherwise.
    fn calico_bundles(&self) -> Option<Vec<String>> {
        None
    }
}

/// The source used when `serve` has no cluster access: every lookup is [`Lookup::Disabled`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLookup;

impl ClusterSource for NoLookup {
    async fn find(&self, _subject: &Subject) -> Lookup {
        Lookup::Disabled
    }
}

/// Does this `controlPlaneRef`/`configRef` (v1beta1 `{apiVersion, kind, name, namespace}` or v1beta2
/// `{apiGroup, kind, name}`) name the subject?
pub fn reference_names(
    reference: Option<&Value>,
    kind: &str,
    name: &str,
    namespace: &str,
    own_namespace: &str,
) -> bool {
    let Some(reference) = reference else {
        return false;
    };
    let field = |f: &str| reference.get(f).and_then(Value::as_str);
    // A v1beta1 ref's `namespace` is ignored, as Cluster API ignores it (see `documents::referenced`).
    field("kind") == Some(kind) && field("name") == Some(name) && own_namespace == namespace
}

/// The MachineDeployments that use a KubeadmConfigTemplate, as [`template_users`] finds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateUsers {
    /// Some MachineDeployment's bootstrap `configRef` names the template (with or without a `spec.clusterName`).
    pub referenced: bool,
    /// The Clusters of those MachineDeployments, as (namespace of the MachineDeployment, `spec.clusterName`),
    /// distinct and in order.
    pub clusters: BTreeSet<(String, String)>,
}

impl TemplateUsers {
    /// What a lookup that found none of these Clusters looked for, for the user's warning.
    pub fn looked_for(&self, namespace: &str) -> String {
        match self.clusters.first() {
            Some((md_namespace, name)) => {
                format!("Cluster {md_namespace}/{name} (the clusterName of its MachineDeployment)")
            }
            None if self.referenced => {
                "the spec.clusterName of the MachineDeployment that uses it".to_string()
            }
            None => format!(
                "a MachineDeployment whose bootstrap configRef names it, in namespace {namespace}"
            ),
        }
    }
}

/// The MachineDeployments among `machine_deployments` (each with its namespace) whose bootstrap `configRef` names
/// the KubeadmConfigTemplate `name` in `namespace`.
pub fn template_users<'a>(
    machine_deployments: impl IntoIterator<Item = (&'a str, &'a Value)>,
    name: &str,
    namespace: &str,
) -> TemplateUsers {
    let mut users = TemplateUsers::default();
    for (md_namespace, md) in machine_deployments {
        if !reference_names(
            md.pointer("/spec/template/spec/bootstrap/configRef"),
            SubjectKind::ConfigTemplate.kind(),
            name,
            namespace,
            md_namespace,
        ) {
            continue;
        }
        users.referenced = true;
        if let Some(cluster) = md.pointer("/spec/clusterName").and_then(Value::as_str) {
            users
                .clusters
                .insert((md_namespace.to_string(), cluster.to_string()));
        }
    }
    users
}

/// The source `serve` runs with: live lookups when it has cluster access, none otherwise.
#[derive(Clone)]
pub enum ServeSource {
    Live(Box<live::LiveSource>),
    Off(NoLookup),
}

impl ClusterSource for ServeSource {
    async fn find(&self, subject: &Subject) -> Lookup {
        match self {
            ServeSource::Live(live) => live.find(subject).await,
            ServeSource::Off(off) => off.find(subject).await,
        }
    }

    fn ready(&self) -> bool {
        match self {
            ServeSource::Live(live) => live.ready(),
            ServeSource::Off(off) => off.ready(),
        }
    }

    fn calico_bundles(&self) -> Option<Vec<String>> {
        match self {
            ServeSource::Live(live) => live.calico_bundles(),
            ServeSource::Off(off) => off.calico_bundles(),
        }
    }
}
