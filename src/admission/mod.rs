//! AdmissionReview in, response out: parse, dispatch by kind, and turn a [`Verdict`] into the response
//! (base64 JSONPatch, uid echo, 403 denials, warnings).

use json_patch::PatchOperation;
use kube::core::admission::Operation;

pub mod api;
pub mod cache;
mod known;
pub mod policy;
pub mod prune;
pub mod review;

use api::{Decision, Endpoint, Outcome, ReviewHandler, ReviewReply};
use policy::Kind;

use crate::cluster::ClusterSource;

/// What the policy decided for one object. A denial is a verdict, not an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admit, applying `patch` (may be empty) and showing `warnings`.
    Allow {
        patch: Vec<PatchOperation>,
        warnings: Vec<String>,
    },
    /// Refuse with `message`; `rules` are the stable ids of the rules that failed.
    Deny {
        message: String,
        rules: Vec<String>,
        warnings: Vec<String>,
    },
}

impl Verdict {
    /// Admit unchanged.
    pub fn allow(warnings: Vec<String>) -> Verdict {
        Verdict::Allow {
            patch: Vec::new(),
            warnings,
        }
    }

    /// Add a warning, whatever the verdict.
    pub fn push_warning(&mut self, warning: String) {
        match self {
            Verdict::Allow { warnings, .. } | Verdict::Deny { warnings, .. } => {
                warnings.push(warning)
            }
        }
    }

    /// The outcome label of this verdict.
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Allow { patch, .. } if patch.is_empty() => Outcome::Allowed,
            Verdict::Allow { .. } => Outcome::Mutated,
            Verdict::Deny { .. } => Outcome::Denied,
        }
    }
}

/// The admission webhook: a [`ReviewHandler`] over a [`ClusterSource`].
pub struct Webhook<S> {
    source: S,
    settings: cache::SettingsCache,
}

impl<S: ClusterSource> Webhook<S> {
    /// A webhook that finds Clusters through `source`.
    pub fn new(source: S) -> Self {
        Webhook {
            source,
            settings: cache::SettingsCache::new(),
        }
    }

    /// Answer one AdmissionReview body.
    pub async fn handle(&self, endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        let request = match review::parse(body) {
            Ok(request) => request,
            Err(err) => return error_reply(err, Decision::empty()),
        };
        let kind = Kind::from_group_kind(&request.kind.group, &request.kind.kind);
        let mut decision = Decision {
            uid: request.uid.clone(),
            // Only the kinds this webhook handles are named (they label metrics): another kind, which only a client
            // other than the API server sends, must not take a label value.
            kind: match (kind, request.kind.version.as_str()) {
                (Some(_), version @ ("v1beta1" | "v1beta2")) => {
                    format!("{}/{version}/{}", request.kind.group, request.kind.kind)
                }
                _ => "other".to_string(),
            },
            namespace: request.namespace.clone().unwrap_or_default(),
            name: request.name.clone(),
            operation: review::operation_name(&request.operation).to_string(),
            outcome: Outcome::Allowed,
            denied_rules: Vec::new(),
            lookup: String::new(),
        };
        let acts = matches!(request.operation, Operation::Create | Operation::Update)
            && request.sub_resource.is_none();
        let verdict = match (kind, &request.object, acts) {
            (Some(_), Some(_), true) if request.too_large => too_large_denial(),
            (Some(kind), Some(object), true) if object.is_object() => {
                let decided =
                    policy::decide_with(&self.source, &self.settings, endpoint, kind, object).await;
                decision.lookup = decided.lookup.to_string();
                let mut verdict = decided.verdict;
                if request.operation == Operation::Update {
                    verdict = policy::on_update(kind, verdict);
                }
                // Only the webhook sees the stored object: the offline CLI has no old Cluster to compare with.
                if let (Kind::Cluster, Operation::Update, Some(old), Verdict::Allow { .. }) =
                    (kind, &request.operation, &request.old_object, &verdict)
                {
                    for warning in policy::cluster_change_warnings(&self.settings, old, object) {
                        verdict.push_warning(warning);
                    }
                }
                verdict
            }
            _ => Verdict::allow(Vec::new()),
        };
        decision.outcome = verdict.outcome();
        if let Verdict::Deny { rules, .. } = &verdict {
            decision.denied_rules = rules.clone();
        }
        match review::respond(&request.uid, &verdict) {
            Ok(body) => ReviewReply {
                status: 200,
                body,
                decision,
            },
            Err(err) => error_reply(err, decision),
        }
    }
}

/// The rule id of the denial of an object too large to check (see [`prune::budgeted`]).
pub const TOO_LARGE_RULE: &str = "object-too-large";

/// The answer for an object whose read parts exceed [`prune::MAX_KEPT_VALUES`] (see [`prune::budgeted`]).
fn too_large_denial() -> Verdict {
    Verdict::Deny {
        message: format!(
            "this object is too large for capi-calico-webhook to check: its labels, capi-calico.io/ annotations, \
             spec.clusterNetwork and kubeadm files, preKubeadmCommands and postKubeadmCommands hold more than {} \
             values together (Cluster API allows at most 200 files and 1000 commands in each list); shorten them",
            prune::MAX_KEPT_VALUES
        ),
        rules: vec![TOO_LARGE_RULE.to_string()],
        warnings: Vec::new(),
    }
}

fn error_reply(err: review::ReviewError, mut decision: Decision) -> ReviewReply {
    decision.outcome = Outcome::Error;
    ReviewReply {
        status: 400,
        body: review::bad_request_body(&err),
        decision,
    }
}

impl Decision {
    /// A decision record for a request that could not be read.
    pub fn empty() -> Decision {
        Decision {
            uid: String::new(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            operation: String::new(),
            outcome: Outcome::Error,
            denied_rules: Vec::new(),
            lookup: String::new(),
        }
    }
}

impl<S: ClusterSource> ReviewHandler for Webhook<S> {
    async fn review(&self, endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        self.handle(endpoint, body).await
    }

    fn ready(&self) -> bool {
        self.source.ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::documents::DocumentSource;

    /// Through the whole handler: an UPDATE of a v1beta2 KCP whose kubeadmConfigSpec holds only our entries, under
    /// settings that inject nothing, is denied (Cluster API refuses removing spec.kubeadmConfigSpec from an existing
    /// KCP); the same object on CREATE gets the removal.
    #[test]
    fn removing_the_whole_kubeadm_config_spec_is_denied_on_update_only() {
        use crate::mutation::{self, Target};
        let on = serde_json::json!({"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true",
                                    "capi-calico.io/INSTALL_CALICOCTL": "true"});
        let settings = |annotations: &serde_json::Value| {
            let map = crate::cluster::string_map(Some(annotations));
            match crate::settings::resolve(&map, None) {
                crate::settings::Resolution::OptedIn { settings, .. } => *settings,
                other => panic!("{other:?}"),
            }
        };
        let bare = serde_json::json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
            "metadata": {"name": "cp", "namespace": "ns", "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "spec": {"version": "v1.33.0", "kubeadmConfigSpec": {}}
        });
        let injection = mutation::desired(&settings(&on), Target::ControlPlane).expect("injection");
        let ops = mutation::patch(&bare, Target::ControlPlane, &injection).expect("patch");
        let injected = mutation::apply(&bare, &ops).expect("apply");
        let cluster = serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "ns", "annotations": {
                "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true", "capi-calico.io/INSTALL_CALICOCTL": "false"}},
            "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["100.96.0.0/11"]}}}
        });
        let webhook = Webhook::new(DocumentSource::new([&cluster]));
        let review = |operation: &str| {
            serde_json::json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u1", "kind": {"group": "controlplane.cluster.x-k8s.io", "version": "v1beta2",
                            "kind": "KubeadmControlPlane"},
                            "operation": operation, "name": "cp", "namespace": "ns", "object": injected}
            })
            .to_string()
        };
        let update = futures::executor::block_on(
            webhook.handle(Endpoint::Mutate, review("UPDATE").as_bytes()),
        );
        assert_eq!(update.decision.outcome, Outcome::Denied);
        assert_eq!(
            update.decision.denied_rules,
            [policy::KEEP_KUBEADM_CONFIG_SPEC_RULE]
        );
        let create = futures::executor::block_on(
            webhook.handle(Endpoint::Mutate, review("CREATE").as_bytes()),
        );
        assert_eq!(create.decision.outcome, Outcome::Mutated);
        let body = String::from_utf8_lossy(&create.body);
        assert!(body.contains("\"patchType\":\"JSONPatch\""), "{body}");
    }

    /// The decision names only the kinds this webhook handles (it labels metrics); any other kind is `other`.
    #[test]
    fn decisions_name_only_the_kinds_handled() {
        let webhook = Webhook::new(DocumentSource::default());
        let review = |group: &str, version: &str, kind: &str| {
            serde_json::json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u1", "kind": {"group": group, "version": version, "kind": kind},
                            "operation": "CREATE", "name": "x", "namespace": "ns",
                            "object": {"metadata": {"name": "x"}}}
            })
            .to_string()
        };
        for (group, version, kind, named) in [
            (
                "cluster.x-k8s.io",
                "v1beta2",
                "Cluster",
                "cluster.x-k8s.io/v1beta2/Cluster",
            ),
            (
                "cluster.x-k8s.io",
                "v1beta1",
                "Cluster",
                "cluster.x-k8s.io/v1beta1/Cluster",
            ),
            ("cluster.x-k8s.io", "zz01", "Cluster", "other"),
            ("example.com", "v1beta2", "Squatter1", "other"),
            ("", "v1", "Pod", "other"),
        ] {
            let body = review(group, version, kind);
            let reply =
                futures::executor::block_on(webhook.handle(Endpoint::Mutate, body.as_bytes()));
            assert_eq!(reply.status, 200, "{kind}");
            assert_eq!(reply.decision.kind, named, "{version} {kind}");
        }
    }
}
