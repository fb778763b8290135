//! Cluster lookup among a set of manifest documents (the CLI's input files).

use serde_json::Value;

use super::{
    CLUSTER_NAME_LABEL, ClusterInfo, ClusterSource, Lookup, LookupSource, Subject, SubjectKind,
    reference_names,
};

/// Namespace of a document; manifests often leave it out, which means "the namespace it will be applied to".
fn namespace_of(doc: &Value) -> &str {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

fn is_kind(doc: &Value, group: &str, kind: &str) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some(kind)
        && doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|api| api.split('/').next() == Some(group))
}

/// Finds Clusters among documents: by the `cluster.x-k8s.io/cluster-name` label, by `Cluster.spec.controlPlaneRef`
/// (KCP), or by a MachineDeployment's bootstrap `configRef` and `spec.clusterName` (KCT).
#[derive(Debug, Clone, Default)]
pub struct DocumentSource {
    clusters: Vec<Value>,
    machine_deployments: Vec<Value>,
}

impl DocumentSource {
    /// Index the Clusters and MachineDeployments among `documents`.
    pub fn new<'a>(documents: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut source = DocumentSource::default();
        for doc in documents {
            if is_kind(doc, "cluster.x-k8s.io", "Cluster") {
                source.clusters.push(doc.clone());
            } else if is_kind(doc, "cluster.x-k8s.io", "MachineDeployment") {
                source.machine_deployments.push(doc.clone());
            }
        }
        source
    }

    fn cluster_named(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.clusters.iter().find(|c| {
            namespace_of(c) == namespace
                && c.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
        })
    }

    fn found(cluster: &Value) -> Lookup {
        match ClusterInfo::from_object(cluster) {
            Some(info) => Lookup::Found {
                cluster: Box::new(info),
                source: LookupSource::Documents,
            },
            // Offline there is nothing to retry: a document to fix, reported like a Cluster that is not there.
            None => Lookup::NotFound {
                looked_for:
                    "a Cluster document with a metadata.name (the one that refers to it has none)"
                        .to_string(),
            },
        }
    }

    /// The synchronous lookup behind [`ClusterSource::find`].
    pub fn lookup(&self, subject: &Subject) -> Lookup {
        let ns = subject.namespace.as_str();
        if let Some(name) = subject.labels.get(CLUSTER_NAME_LABEL) {
            return match self.cluster_named(ns, name) {
                Some(cluster) => Self::found(cluster),
                None => Lookup::NotFound {
                    looked_for: format!(
                        "Cluster {ns}/{name} (from the {CLUSTER_NAME_LABEL} label)"
                    ),
                },
            };
        }
        match subject.kind {
            SubjectKind::ControlPlane => {
                let owner = self.clusters.iter().find(|c| {
                    reference_names(
                        c.pointer("/spec/controlPlaneRef"),
                        SubjectKind::ControlPlane.kind(),
                        &subject.name,
                        ns,
                        namespace_of(c),
                    )
                });
                match owner {
                    Some(cluster) => Self::found(cluster),
                    None => Lookup::NotFound {
                        looked_for: format!(
                            "a Cluster whose spec.controlPlaneRef names it, in namespace {ns}"
                        ),
                    },
                }
            }
            SubjectKind::ConfigTemplate => {
                let md = self.machine_deployments.iter().find(|md| {
                    reference_names(
                        md.pointer("/spec/template/spec/bootstrap/configRef"),
                        SubjectKind::ConfigTemplate.kind(),
                        &subject.name,
                        ns,
                        namespace_of(md),
                    )
                });
                let Some(md) = md else {
                    return Lookup::NotFound {
                        looked_for: format!(
                            "a MachineDeployment whose bootstrap configRef names it, in namespace {ns}"
                        ),
                    };
                };
                let Some(cluster_name) = md.pointer("/spec/clusterName").and_then(Value::as_str)
                else {
                    return Lookup::NotFound {
                        looked_for: "the spec.clusterName of the MachineDeployment that uses it"
                            .to_string(),
                    };
                };
                match self.cluster_named(namespace_of(md), cluster_name) {
                    Some(cluster) => Self::found(cluster),
                    None => Lookup::NotFound {
                        looked_for: format!(
                            "Cluster {ns}/{cluster_name} (the clusterName of its MachineDeployment)"
                        ),
                    },
                }
            }
        }
    }
}

impl ClusterSource for DocumentSource {
    async fn find(&self, subject: &Subject) -> Lookup {
        self.lookup(subject)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn docs() -> Vec<Value> {
        vec![
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": "c1", "namespace": "ns", "annotations": {"a": "b"}},
                   "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["10.0.0.0/16", "bogus"]}},
                            "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io",
                                                "kind": "KubeadmControlPlane", "name": "c1-cp"}}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
                   "metadata": {"name": "c2"},
                   "spec": {"controlPlaneRef": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1",
                                                "kind": "KubeadmControlPlane", "name": "c2-cp"}}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"name": "md", "namespace": "ns"},
                   "spec": {"clusterName": "c1", "template": {"spec": {"bootstrap": {"configRef":
                        {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate",
                         "name": "c1-md-0"}}}}}}),
        ]
    }

    fn subject(kind: SubjectKind, ns: &str, name: &str, label: Option<&str>) -> Subject {
        let mut labels = BTreeMap::new();
        if let Some(l) = label {
            labels.insert(CLUSTER_NAME_LABEL.to_string(), l.to_string());
        }
        Subject {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            labels,
        }
    }

    #[test]
    fn finds_clusters_by_every_link() {
        let docs = docs();
        let source = DocumentSource::new(&docs);
        let cases = [
            (
                subject(SubjectKind::ControlPlane, "ns", "c1-cp", None),
                Some("c1"),
            ),
            (
                subject(SubjectKind::ControlPlane, "default", "c2-cp", None),
                Some("c2"),
            ),
            (
                subject(SubjectKind::ControlPlane, "other", "c1-cp", None),
                None,
            ),
            (
                subject(SubjectKind::ConfigTemplate, "ns", "c1-md-0", None),
                Some("c1"),
            ),
            (
                subject(SubjectKind::ConfigTemplate, "ns", "unused", None),
                None,
            ),
            (
                subject(SubjectKind::ConfigTemplate, "ns", "x", Some("c1")),
                Some("c1"),
            ),
            (
                subject(SubjectKind::ControlPlane, "ns", "x", Some("missing")),
                None,
            ),
        ];
        for (subject, want) in cases {
            let got = match source.lookup(&subject) {
                Lookup::Found { cluster, source } => {
                    assert_eq!(source, LookupSource::Documents);
                    Some(cluster.name)
                }
                Lookup::NotFound { looked_for } => {
                    assert!(!looked_for.is_empty());
                    None
                }
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got.as_deref(), want, "{subject:?}");
        }
    }

    #[test]
    fn reports_unparsable_pod_cidrs() {
        let docs = docs();
        let info = ClusterInfo::from_object(&docs[0]).expect("cluster");
        assert_eq!(info.network.pod_cidrs.len(), 1);
        assert_eq!(info.unparsable_pod_cidrs, vec!["\"bogus\"".to_string()]);
        assert_eq!(info.annotations.get("a").map(String::as_str), Some("b"));
    }
}
