//! The baseline responder's whole policy: read `request.uid`. Shared with `benches/admission.rs`, which times it
//! against the webhook on the same bodies.

#[derive(serde::Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(serde::Deserialize)]
struct Request {
    uid: String,
}

/// `request.uid` of an AdmissionReview body. serde skips everything else, but still scans the whole body.
pub fn uid_of(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Review>(body) {
        Ok(Review { request: Some(r) }) => Some(r.uid),
        _ => None,
    }
}
