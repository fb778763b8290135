//! The AdmissionReview wire format: request parsing and response building.
//!
//! Requests are read into a lean view that keeps only what the policy uses (kube-core's `GroupVersionKind` and
//! `Operation`, the object as JSON, pruned by [`super::prune`], and of `oldObject` only a Cluster's settings and pod
//! CIDRs) and skips the rest without building it: reading the whole review into kube-core's
//! `AdmissionReview<DynamicObject>` cost about a third of a decision. Responses are built here, because kube-core
//! serialises a patch as a number array and sets no status code on denials (see docs/architecture.md).

use json_patch::PatchOperation;
use kube::core::{GroupVersionKind, admission::Operation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Verdict;

/// Why a request body is not a usable AdmissionReview (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error(
        "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {api_version}/{kind}"
    )]
    WrongType { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    #[error("cannot encode the response: {0}")]
    Encode(#[source] serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

/// The parts of an `admission.k8s.io/v1` AdmissionRequest the webhook reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    /// The kind of the object (after the API server's conversion under `matchPolicy: Equivalent`).
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    /// The object being admitted (absent on DELETE), pruned to what the policy reads (see [`super::prune`]).
    #[serde(default, deserialize_with = "super::prune::object")]
    pub object: Option<Value>,
    /// The stored object on UPDATE, pruned to a Cluster's settings and pod CIDRs (see [`super::prune::OLD_OBJECT`]).
    #[serde(default, deserialize_with = "super::prune::old_object")]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// The object and `oldObject` held more values in the paths the policy reads than
    /// [`super::prune::MAX_KEPT_VALUES`]: what was kept of them is incomplete, so the object must not be decided on.
    #[serde(skip)]
    pub too_large: bool,
}

/// Parse a request body.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let (review, too_large) = super::prune::budgeted(|| serde_json::from_slice::<Review>(body));
    let review = review.map_err(ReviewError::NotJson)?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(ReviewError::WrongType {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    let mut request = review.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    request.too_large = too_large;
    Ok(request)
}

/// The operation as the API server spells it.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Build the response AdmissionReview for `verdict`.
pub fn respond(uid: &str, verdict: &Verdict) -> Result<Vec<u8>, ReviewError> {
    match verdict {
        Verdict::Allow { patch, warnings } => respond_allow(uid, patch, warnings),
        Verdict::Deny {
            message, warnings, ..
        } => {
            let mut response = json!({
                "uid": uid,
                "allowed": false,
                "status": {
                    "status": "Failure",
                    "code": 403,
                    "reason": "Forbidden",
                    "message": message,
                },
            });
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
            serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": response,
            }))
            .map_err(ReviewError::Encode)
        }
    }
}

/// Encodes response patches: the base64 crate's engine that picks AVX2 or NEON at start-up when the CPU has them
/// (the scalar engine otherwise), several times faster than the scalar engine on the ~15 KB patches of a first
/// injection. Same alphabet and padding as `general_purpose::STANDARD` (the tests decode with that).
static PATCH_ENGINE: std::sync::LazyLock<base64::engine::Simd> = std::sync::LazyLock::new(|| {
    base64::engine::Simd::standard(base64::engine::general_purpose::PAD)
});

/// The hot path: an allowed review, usually with a patch of ~15 KB (the node scripts). The patch's JSON is
/// base64-encoded straight into the response buffer, without building a `Value` around it or rescanning the
/// base64 text as a JSON string (base64 needs no escaping).
fn respond_allow(
    uid: &str,
    patch: &[PatchOperation],
    warnings: &[String],
) -> Result<Vec<u8>, ReviewError> {
    use base64::Engine as _;

    let patch_json = if patch.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&super::known::Patch(patch)).map_err(ReviewError::Encode)?
    };
    let engine = &*PATCH_ENGINE;
    let encoded_len = base64::encoded_len(patch_json.len(), true).unwrap_or(0);
    let mut out: Vec<u8> = Vec::with_capacity(256 + uid.len() + encoded_len);
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    serde_json::to_writer(&mut out, uid).map_err(ReviewError::Encode)?;
    out.extend_from_slice(br#","allowed":true"#);
    if !patch.is_empty() {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        let start = out.len();
        out.resize(start + encoded_len, 0);
        let written = engine
            .encode_slice(&patch_json, &mut out[start..])
            .map_err(|e| ReviewError::Encode(serde::ser::Error::custom(e)))?;
        out.truncate(start + written);
        out.push(b'"');
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        serde_json::to_writer(&mut out, warnings).map_err(ReviewError::Encode)?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// The short JSON body of an HTTP 400 answer.
pub fn bad_request_body(err: &ReviewError) -> Vec<u8> {
    serde_json::to_vec(&json!({ "error": err.to_string() })).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use json_patch::{AddOperation, PatchOperation, jsonptr::PointerBuf};

    use super::*;

    fn body(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}))
            .expect("json")
    }

    fn request() -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "cluster.x-k8s.io", "version": "v1beta2", "kind": "Cluster"},
            "resource": {"group": "cluster.x-k8s.io", "version": "v1beta2", "resource": "clusters"},
            "name": "c1", "namespace": "ns", "operation": "CREATE", "userInfo": {"username": "admin"},
            "object": {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "c1"}},
        })
    }

    #[test]
    fn parse_rejects_what_is_not_a_review() {
        let mut no_uid = request();
        no_uid["uid"] = json!("");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"not json".to_vec(),
                "not an admission.k8s.io/v1 AdmissionReview",
            ),
            (b"{}".to_vec(), "not an admission.k8s.io/v1 AdmissionReview"),
            (
                serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod"})).expect("json"),
                "expected apiVersion admission.k8s.io/v1",
            ),
            (
                serde_json::to_vec(
                    &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
                )
                .expect("json"),
                "has no request",
            ),
            (body(no_uid), "has no uid"),
            (
                format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
                "not an admission.k8s.io/v1 AdmissionReview",
            ),
        ];
        for (input, want) in cases {
            let err = parse(&input).expect_err("must fail");
            assert!(
                err.to_string().contains(want),
                "{err} does not contain {want}"
            );
        }
    }

    #[test]
    fn parse_accepts_a_review() {
        let req = parse(&body(request())).expect("parses");
        assert_eq!(req.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(req.kind.kind, "Cluster");
        assert_eq!(operation_name(&req.operation), "CREATE");
    }

    #[test]
    fn allow_with_patch_is_base64_jsonpatch_and_echoes_uid() {
        let patch = vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "labels"]),
            value: json!({"a": "b"}),
        })];
        let verdict = Verdict::Allow {
            patch,
            warnings: vec!["careful".to_string()],
        };
        let out: Value =
            serde_json::from_slice(&respond("u-1", &verdict).expect("encodes")).expect("json");
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        let response = &out["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        assert_eq!(response["warnings"], json!(["careful"]));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().expect("patch is a string"))
            .expect("base64");
        let ops: Value = serde_json::from_slice(&decoded).expect("patch json");
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])
        );
    }

    #[test]
    fn the_hand_written_allow_response_is_valid_json_for_any_uid_and_warning() {
        for (uid, warning) in [
            ("plain", "w"),
            ("quo\"te\\", "new\nline \u{1}"),
            ("", "\u{2028}é"),
        ] {
            let verdict = Verdict::Allow {
                patch: vec![PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["a"]),
                    value: json!("x\"y"),
                })],
                warnings: vec![warning.to_string()],
            };
            let out: Value = serde_json::from_slice(&respond(uid, &verdict).expect("encodes"))
                .unwrap_or_else(|e| panic!("{uid:?}: not JSON: {e}"));
            assert_eq!(out["response"]["uid"], uid);
            assert_eq!(out["response"]["warnings"][0], warning);
            let patch = base64::engine::general_purpose::STANDARD
                .decode(out["response"]["patch"].as_str().expect("patch"))
                .expect("base64");
            let ops: Value = serde_json::from_slice(&patch).expect("patch json");
            assert_eq!(ops[0]["value"], "x\"y");
        }
    }

    /// The SIMD engine works in blocks: patches of every length around its block sizes, and the ~15 KB ones of
    /// real injections, must decode with the scalar engine to exactly the patch's JSON.
    #[test]
    fn large_and_odd_sized_patches_decode_with_the_scalar_engine() {
        let scripts: Vec<Value> = crate::mutation::SCRIPTS.iter().map(|s| json!(s)).collect();
        let values = (0..100)
            .map(|n| json!("x".repeat(n)))
            .chain([json!(scripts)]);
        for value in values {
            let patch = vec![PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "files"]),
                value,
            })];
            let verdict = Verdict::Allow {
                patch: patch.clone(),
                warnings: Vec::new(),
            };
            let out: Value =
                serde_json::from_slice(&respond("u", &verdict).expect("encodes")).expect("json");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(out["response"]["patch"].as_str().expect("patch"))
                .expect("base64");
            assert_eq!(decoded, serde_json::to_vec(&patch).expect("json"));
        }
    }

    #[test]
    fn allow_without_patch_has_no_patch_fields() {
        let out: Value =
            serde_json::from_slice(&respond("u", &Verdict::allow(Vec::new())).expect("encodes"))
                .expect("json");
        let response = out["response"].as_object().expect("object");
        assert_eq!(response.get("allowed"), Some(&json!(true)));
        for absent in ["patch", "patchType", "warnings", "status"] {
            assert!(!response.contains_key(absent), "{absent} must be absent");
        }
    }

    #[test]
    fn deny_is_403_forbidden_with_the_message() {
        let verdict = Verdict::Deny {
            message: "two problems:\n- a\n- b".to_string(),
            rules: vec!["r".to_string()],
            warnings: Vec::new(),
        };
        let out: Value =
            serde_json::from_slice(&respond("u-2", &verdict).expect("encodes")).expect("json");
        let response = &out["response"];
        assert_eq!(response["uid"], "u-2");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "Forbidden");
        assert_eq!(response["status"]["message"], "two problems:\n- a\n- b");
        assert!(response.get("patch").is_none());
    }
}
