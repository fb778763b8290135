//! AdmissionReview bytes through the full handler (`Webhook::handle`, both endpoints), with a Cluster and a
//! MachineDeployment available to the lookup. Checks: no panic; status 200 or 400; the body is JSON; a 200 echoes
//! the uid; and a mutation is idempotent: the patched object, reviewed again, needs no patch and passes /validate.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use capi_calico_webhook::admission::Webhook;
use capi_calico_webhook::admission::api::{Endpoint, Outcome};
use capi_calico_webhook::cluster::documents::DocumentSource;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static WEBHOOK: LazyLock<Webhook<DocumentSource>> = LazyLock::new(|| {
    let docs = [
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
               "metadata": {"name": "wl-1", "namespace": "team-a", "annotations": {
                   "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true",
                   "capi-calico.io/INSTALL_CALICOCTL": "true"}},
               "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["100.96.0.0/11"]}},
                        "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io",
                                            "kind": "KubeadmControlPlane", "name": "wl-1-cp"}}}),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
               "metadata": {"name": "wl-1-md-0", "namespace": "team-a"},
               "spec": {"clusterName": "wl-1", "template": {"spec": {"bootstrap": {"configRef": {
                   "apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate",
                   "name": "wl-1-md-0"}}}}}}),
    ];
    Webhook::new(DocumentSource::new(docs.iter()))
});

fn handle(endpoint: Endpoint, body: &[u8]) -> (u16, Value, Outcome) {
    let reply = futures::executor::block_on(WEBHOOK.handle(endpoint, body));
    let v: Value = serde_json::from_slice(&reply.body).expect("the answer is JSON");
    (reply.status, v, reply.decision.outcome)
}

fuzz_target!(|data: &[u8]| {
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let (status, answer, outcome) = handle(endpoint, data);
        assert!(status == 200 || status == 400, "status {status}");
        if status != 200 {
            continue;
        }
        // serde_json does not check the UTF-8 of strings it skips (unknown fields), so a body the handler reads
        // fine may not parse as a whole `Value`; then there is nothing to compare against.
        let Ok(request) = serde_json::from_slice::<Value>(data) else {
            continue;
        };
        assert_eq!(answer["response"]["uid"], request["request"]["uid"]);
        if endpoint != Endpoint::Mutate || outcome != Outcome::Mutated {
            continue;
        }
        // Apply the patch and review the result again: nothing more to do, and /validate agrees.
        let patch = answer["response"]["patch"].as_str().expect("patch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64 patch");
        let ops: Vec<json_patch::PatchOperation> =
            serde_json::from_slice(&patch).expect("JSON patch operations");
        let object = capi_calico_webhook::mutation::apply(&request["request"]["object"], &ops)
            .expect("our patch applies");
        let mut again = request.clone();
        again["request"]["object"] = object;
        let again = serde_json::to_vec(&again).expect("json");
        let (status, answer, outcome) = handle(Endpoint::Mutate, &again);
        assert_eq!(status, 200);
        assert_eq!(outcome, Outcome::Allowed, "second pass: {answer}");
        let (_, answer, outcome) = handle(Endpoint::Validate, &again);
        assert_eq!(outcome, Outcome::Allowed, "validate after mutate: {answer}");
    }
});
