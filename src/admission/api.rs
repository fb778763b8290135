//! The small, Calico-free contract between the admission layer and the HTTP transport.

use std::future::Future;

/// Which endpoint a review arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /mutate`
    Mutate,
    /// `POST /validate`
    Validate,
}

impl Endpoint {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// How a review ended, for metrics and the decision log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed without a patch.
    Allowed,
    /// Allowed with a patch.
    Mutated,
    /// Denied (HTTP 200, `allowed: false`).
    Denied,
    /// The request could not be handled (HTTP 400 and friends).
    Error,
}

impl Outcome {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Mutated => "mutated",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// What the transport logs (one line per decision) and counts. Never holds the object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub uid: String,
    /// `group/version/Kind` of the object, or empty when unknown.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `CREATE`, `UPDATE`, ...
    pub operation: String,
    pub outcome: Outcome,
    /// Stable identifiers of the rules that denied the request (empty unless denied).
    pub denied_rules: Vec<String>,
    /// How the object's Cluster was found: `cache`, `api`, `not-found`, `documents`, or empty when no lookup ran.
    pub lookup: String,
}

/// The HTTP answer to one review.
#[derive(Debug, Clone)]
pub struct ReviewReply {
    /// HTTP status: 200 for every AdmissionReview answer, 400 for unreadable requests.
    pub status: u16,
    /// Response body (JSON).
    pub body: Vec<u8>,
    pub decision: Decision,
}

/// Implemented by the admission layer, called by the transport for each request body.
pub trait ReviewHandler: Send + Sync + 'static {
    /// Answer one AdmissionReview body.
    fn review(&self, endpoint: Endpoint, body: &[u8]) -> impl Future<Output = ReviewReply> + Send;
    /// False while the handler cannot answer correctly yet (e.g. cluster caches not synced).
    fn ready(&self) -> bool;
}
