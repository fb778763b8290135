//! Cluster lookup among a set of manifest documents (the CLI's input files).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{
    CLUSTER_NAME_LABEL, ClusterInfo, ClusterSource, Lookup, LookupSource, Subject, SubjectKind,
    TemplateUsers, reference_names, template_users,
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
/// (KCP), or by a MachineDeployment's bootstrap `configRef` and `spec.clusterName` (KCT). The documents are indexed
/// by the names they refer to, so checking a manifest of thousands of Clusters takes time in proportion to its size.
#[derive(Debug, Clone, Default)]
pub struct DocumentSource {
    /// Each Cluster, by namespace and name (the first of a name: the CLI refuses differing duplicates).
    clusters: HashMap<(String, String), Value>,
    /// The Clusters whose `spec.controlPlaneRef` names (namespace, name), in document order.
    control_plane_refs: HashMap<(String, String), Vec<Value>>,
    /// The MachineDeployments (with their namespace) whose bootstrap `configRef` names (namespace, name), in
    /// document order.
    template_refs: HashMap<(String, String), Vec<(String, Value)>>,
}

/// The (namespace, name) a `controlPlaneRef`/`configRef` of an object in `own_namespace` points at: always in
/// `own_namespace`, as Cluster API resolves it (a v1beta1 ref's `namespace` is dropped on conversion to v1beta2,
/// and the controllers look the object up in the referring object's namespace).
fn referenced(reference: Option<&Value>, own_namespace: &str) -> Option<(String, String)> {
    let name = reference?.get("name")?.as_str()?;
    Some((own_namespace.to_string(), name.to_string()))
}

impl DocumentSource {
    /// Index the Clusters and MachineDeployments among `documents` (the first of a name counts: the CLI refuses
    /// differing duplicates).
    pub fn new<'a>(documents: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut source = DocumentSource::default();
        let mut machine_deployments = HashSet::new();
        for doc in documents {
            let namespace = namespace_of(doc);
            let name = doc.pointer("/metadata/name").and_then(Value::as_str);
            if is_kind(doc, "cluster.x-k8s.io", "Cluster") {
                let Some(name) = name else { continue };
                let key = (namespace.to_string(), name.to_string());
                if source.clusters.contains_key(&key) {
                    continue;
                }
                source.clusters.insert(key, doc.clone());
                if let Some(key) = referenced(doc.pointer("/spec/controlPlaneRef"), namespace) {
                    source
                        .control_plane_refs
                        .entry(key)
                        .or_default()
                        .push(doc.clone());
                }
            } else if is_kind(doc, "cluster.x-k8s.io", "MachineDeployment")
                && machine_deployments.insert((namespace, name))
                && let Some(key) = referenced(
                    doc.pointer("/spec/template/spec/bootstrap/configRef"),
                    namespace,
                )
            {
                source
                    .template_refs
                    .entry(key)
                    .or_default()
                    .push((namespace.to_string(), doc.clone()));
            }
        }
        source
    }

    fn cluster_named(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.clusters
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// `cluster` as found, with `others` (for a KCT: the other Clusters whose MachineDeployments use it) that are
    /// among the documents.
    fn found<'a>(
        &'a self,
        cluster: &Value,
        others: impl IntoIterator<Item = &'a (String, String)>,
    ) -> Lookup {
        match ClusterInfo::from_object(cluster) {
            Some(info) => {
                let also_used_by = others
                    .into_iter()
                    .filter(|(ns, name)| *ns != info.namespace || *name != info.name)
                    .filter_map(|(ns, name)| self.cluster_named(ns, name))
                    .filter_map(ClusterInfo::from_object)
                    .collect();
                Lookup::Found {
                    cluster: Box::new(info),
                    source: LookupSource::Documents,
                    also_used_by,
                }
            }
            // Offline there is nothing to retry: a document to fix, reported like a Cluster that is not there.
            None => Lookup::NotFound {
                looked_for:
                    "a Cluster document with a metadata.name (the one that refers to it has none)"
                        .to_string(),
                named: false,
            },
        }
    }

    /// The MachineDeployments that use the KCT `subject`.
    fn template_users(&self, subject: &Subject) -> TemplateUsers {
        let key = (subject.namespace.clone(), subject.name.clone());
        let mds = self
            .template_refs
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        template_users(
            mds.iter().map(|(ns, md)| (ns.as_str(), md)),
            &subject.name,
            &subject.namespace,
        )
    }

    /// The synchronous lookup behind [`ClusterSource::find`].
    pub fn lookup(&self, subject: &Subject) -> Lookup {
        let ns = subject.namespace.as_str();
        let users = match subject.kind {
            SubjectKind::ConfigTemplate => self.template_users(subject),
            SubjectKind::ControlPlane => TemplateUsers::default(),
        };
        if let Some(name) = subject.cluster_label() {
            return match self.cluster_named(ns, name) {
                Some(cluster) => self.found(cluster, &users.clusters),
                None => Lookup::NotFound {
                    looked_for: format!(
                        "Cluster {ns}/{name} (from the {CLUSTER_NAME_LABEL} label)"
                    ),
                    named: true,
                },
            };
        }
        match subject.kind {
            SubjectKind::ControlPlane => {
                let key = (subject.namespace.clone(), subject.name.clone());
                let owner = self.control_plane_refs.get(&key).and_then(|clusters| {
                    clusters.iter().find(|c| {
                        reference_names(
                            c.pointer("/spec/controlPlaneRef"),
                            SubjectKind::ControlPlane.kind(),
                            &subject.name,
                            ns,
                            namespace_of(c),
                        )
                    })
                });
                match owner {
                    Some(cluster) => self.found(cluster, &users.clusters),
                    None => Lookup::NotFound {
                        looked_for: format!(
                            "a Cluster whose spec.controlPlaneRef names it, in namespace {ns}"
                        ),
                        named: false,
                    },
                }
            }
            SubjectKind::ConfigTemplate => {
                // The first Cluster by namespace and name that is among the documents: which one a shared template
                // follows must not depend on file order.
                let first = users
                    .clusters
                    .iter()
                    .find_map(|(md_ns, name)| self.cluster_named(md_ns, name));
                match first {
                    Some(cluster) => self.found(cluster, &users.clusters),
                    None => Lookup::NotFound {
                        looked_for: users.looked_for(ns),
                        named: !users.clusters.is_empty(),
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
            // An empty label names no Cluster: found by reference, as without the label.
            (
                subject(SubjectKind::ControlPlane, "ns", "c1-cp", Some("")),
                Some("c1"),
            ),
            (
                subject(SubjectKind::ConfigTemplate, "ns", "c1-md-0", Some("")),
                Some("c1"),
            ),
        ];
        for (subject, want) in cases {
            let got = match source.lookup(&subject) {
                Lookup::Found {
                    cluster, source, ..
                } => {
                    assert_eq!(source, LookupSource::Documents);
                    Some(cluster.name)
                }
                Lookup::NotFound { looked_for, .. } => {
                    assert!(!looked_for.is_empty());
                    None
                }
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got.as_deref(), want, "{subject:?}");
        }
    }

    #[test]
    fn a_template_shared_by_clusters_follows_the_first_by_name_and_lists_the_others() {
        let doc = |kind: &str, name: &str, spec: Value| {
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": kind,
                   "metadata": {"name": name, "namespace": "ns"}, "spec": spec})
        };
        let md = |name: &str, cluster: &str| {
            doc(
                "MachineDeployment",
                name,
                json!({"clusterName": cluster, "template": {"spec": {"bootstrap":
                {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate",
                               "name": "shared"}}}}}),
            )
        };
        let mut docs = vec![
            md("md-c", "c"),
            md("md-a", "a"),
            md("md-b", "b"),
            md("md-a-2", "a"),
            md("md-missing", "missing"),
            // Sorts first, but its Cluster is not among the documents: the first Cluster found is followed.
            md("md-0", "0-missing"),
            doc("Cluster", "c", json!({})),
            doc("Cluster", "b", json!({})),
            doc("Cluster", "a", json!({})),
        ];
        let names = |lookup: Lookup| match lookup {
            Lookup::Found {
                cluster,
                also_used_by,
                ..
            } => (
                cluster.name,
                also_used_by.into_iter().map(|c| c.name).collect::<Vec<_>>(),
            ),
            other => panic!("unexpected {other:?}"),
        };
        let want = ("a".to_string(), vec!["b".to_string(), "c".to_string()]);
        for _ in 0..2 {
            let source = DocumentSource::new(&docs);
            let shared = subject(SubjectKind::ConfigTemplate, "ns", "shared", None);
            assert_eq!(names(source.lookup(&shared)), want);
            // The label wins; the others are still listed.
            let labelled = subject(SubjectKind::ConfigTemplate, "ns", "shared", Some("c"));
            assert_eq!(
                names(source.lookup(&labelled)),
                ("c".to_string(), vec!["a".to_string(), "b".to_string()])
            );
            docs.reverse();
        }
        // A control plane is never shared.
        let source = DocumentSource::new(&docs);
        let kcp = subject(SubjectKind::ControlPlane, "ns", "x", Some("a"));
        assert_eq!(names(source.lookup(&kcp)), ("a".to_string(), Vec::new()));
    }

    #[test]
    fn template_lookups_use_the_referring_namespace_kinds_and_the_first_definition() {
        let cluster = |ns: &str, name: &str| {
            json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
                   "metadata": {"name": name, "namespace": ns}})
        };
        let md = |ns: &str, name: &str, cluster: &str, kind: &str| {
            json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"clusterName": cluster, "template": {"spec": {"bootstrap": {"configRef":
                       {"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": kind,
                        "name": "kct", "namespace": "kct-ns"}}}}}})
        };
        let docs = vec![
            // A v1beta1 reference naming another namespace: Cluster API drops that namespace and uses the template of
            // the MachineDeployment's own namespace, so this names md-ns/kct, not kct-ns/kct.
            md("md-ns", "md", "c", "KubeadmConfigTemplate"),
            // A later definition of the same MachineDeployment does not count.
            md("md-ns", "md", "other", "KubeadmConfigTemplate"),
            cluster("md-ns", "c"),
            cluster("kct-ns", "c"),
            cluster("md-ns", "other"),
            // Another kind of bootstrap template with the same name.
            md("kct-ns", "eks", "c", "EKSConfigTemplate"),
        ];
        let source = DocumentSource::new(&docs);
        let not_found = Lookup::NotFound {
            looked_for:
                "a MachineDeployment whose bootstrap configRef names it, in namespace kct-ns"
                    .to_string(),
            named: false,
        };
        assert_eq!(
            source.lookup(&subject(SubjectKind::ConfigTemplate, "kct-ns", "kct", None)),
            not_found
        );
        match source.lookup(&subject(SubjectKind::ConfigTemplate, "md-ns", "kct", None)) {
            Lookup::Found {
                cluster,
                also_used_by,
                ..
            } => {
                assert_eq!(
                    (cluster.namespace.as_str(), cluster.name.as_str()),
                    ("md-ns", "c")
                );
                assert!(also_used_by.is_empty(), "{also_used_by:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let only_other_kinds = DocumentSource::new(&docs[5..]);
        assert_eq!(
            only_other_kinds.lookup(&subject(SubjectKind::ConfigTemplate, "kct-ns", "kct", None)),
            not_found
        );
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
