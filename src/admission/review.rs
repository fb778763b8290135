//! The AdmissionReview wire format: request parsing and response building.
//!
//! Requests are read with kube-core's types. Responses are built here, because kube-core serialises a patch as a
//! number array and sets no status code on denials (see docs/architecture.md).

use base64::Engine as _;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionReview, Operation},
};
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

/// Parse a request body.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::WrongType {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    let request = review.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
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
    let mut response = json!({ "uid": uid });
    match verdict {
        Verdict::Allow { patch, warnings } => {
            response["allowed"] = Value::Bool(true);
            if !patch.is_empty() {
                let bytes = serde_json::to_vec(patch).map_err(ReviewError::Encode)?;
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
        }
        Verdict::Deny {
            message, warnings, ..
        } => {
            response["allowed"] = Value::Bool(false);
            response["status"] = json!({
                "status": "Failure",
                "code": 403,
                "reason": "Forbidden",
                "message": message,
            });
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
        }
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
    .map_err(ReviewError::Encode)
}

/// The short JSON body of an HTTP 400 answer.
pub fn bad_request_body(err: &ReviewError) -> Vec<u8> {
    serde_json::to_vec(&json!({ "error": err.to_string() })).unwrap_or_else(|_| b"{}".to_vec())
}
