//! Calico itself, delivered to opted-in workload clusters through a Cluster API ClusterResourceSet.
//!
//! - [`bundle`](mod@bundle): the upstream `operator-crds.yaml` and `tigera-operator.yaml` cut into ConfigMaps that
//!   fit the API's limits (the "bundle", loaded once per Calico version into the bundle namespace).
//! - [`installation`]: the `operator.tigera.io/v1` Installation and APIServer rendered from [`Settings`].
//! - [`desired`]: the pure computation of every object the reconciler writes for one Cluster.
//! - [`reconciler`]: the kube-runtime Controller that applies them (server-side apply), reports problems as an Event
//!   and the [`STATUS_ANNOTATION`] on the Cluster.
//!
//! See `docs/delivery.md` for the user flow and the decisions behind the names, the ordering and the CRS strategy.
//!
//! [`Settings`]: crate::settings::Settings

pub mod bundle;
pub mod desired;
pub mod installation;
pub mod reconciler;
pub mod retire;

pub use bundle::{Bundle, BundleChunk, as_list, bundle, reassemble};
pub use desired::{DeliveryStatus, bundle_missing_warning, desired_objects};
pub use installation::installation_configmap;
pub use reconciler::{ReconcilerConfig, run_reconciler, run_reconciler_until};

use crate::settings::CalicoVersion;

/// Field manager of every server-side apply the reconciler makes.
pub const FIELD_MANAGER: &str = "capi-calico-webhook";
/// Namespace the bundle is loaded into (`--bundle-namespace` overrides it).
pub const DEFAULT_BUNDLE_NAMESPACE: &str = "capi-calico-system";
/// Label put on opted-in Clusters by the mutating webhook; the ClusterResourceSet selects on it.
pub const CLUSTER_LABEL: &str = "capi-calico.io/cluster";
/// Label on bundle ConfigMaps (and their copies): the Calico version, `vX.Y.Z`.
pub const VERSION_LABEL: &str = "capi-calico.io/calico-version";
/// Label on bundle ConfigMaps (and their copies): `crds` or `operator`.
pub const ROLE_LABEL: &str = "capi-calico.io/bundle-role";
/// `app.kubernetes.io/managed-by` on everything the reconciler writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "capi-calico-webhook";
/// Annotation on each bundle ConfigMap: its 0-based position in the bundle (the CRS applies them in this order).
pub const INDEX_ANNOTATION: &str = "capi-calico.io/bundle-index";
/// Annotation on each bundle ConfigMap: how many ConfigMaps the bundle has.
pub const COUNT_ANNOTATION: &str = "capi-calico.io/bundle-count";
/// Annotation on each bundle ConfigMap: SHA-256 of the whole bundle content (the same on every chunk), so chunks
/// of two different loads are never mixed.
pub const DIGEST_ANNOTATION: &str = "capi-calico.io/bundle-digest";
/// Condition-like annotation the reconciler writes on a Cluster. Deliberately outside the `capi-calico.io/`
/// prefix, so the settings parser (which rejects unknown keys under that prefix) never sees it.
pub const STATUS_ANNOTATION: &str = "status.capi-calico.io/delivery";
/// Upper bound on the bytes of `data` (keys + values) of one bundle ConfigMap. The API server rejects a ConfigMap
/// whose data exceeds 1 MiB (1048576 bytes); the rest is headroom for metadata and managedFields.
pub const CHUNK_DATA_LIMIT: usize = 900_000;

/// The most bytes an Event's `note` may hold (events.k8s.io/v1).
const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// `text` cut to what an Event's note may hold, on a character boundary, marked with `...` when cut (the
/// reconciler's and the template linker's Events on a Cluster).
pub fn event_note(mut text: String) -> String {
    if text.len() > MAX_EVENT_NOTE_BYTES {
        let mut cut = MAX_EVENT_NOTE_BYTES - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// `v3.31.7`.
pub fn version_tag(version: &CalicoVersion) -> String {
    format!("v{}.{}.{}", version.major, version.minor, version.patch)
}

/// Why something in delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{input}: not valid YAML: {message}")]
    Parse { input: String, message: String },
    #[error(
        "{input}: document {index} is not a Kubernetes object (a mapping with apiVersion, kind and metadata.name)"
    )]
    NotAnObject { input: String, index: usize },
    #[error("{input}: contains no Kubernetes objects")]
    EmptyInput { input: String },
    #[error(
        "{input}: document {index} ({kind} {name}) is a {kind}, but this input must hold only CustomResourceDefinitions (were --crds and --operator swapped?)"
    )]
    UnexpectedKind {
        input: String,
        index: usize,
        kind: String,
        name: String,
    },
    #[error(
        "{input}: document {index} ({kind} {name}) is {size} bytes even as compact JSON, more than the {limit}-byte limit of one ConfigMap"
    )]
    DocumentTooLarge {
        input: String,
        index: usize,
        kind: String,
        name: String,
        size: usize,
        limit: usize,
    },
    /// `bundle --operator-image` / `--operator-pull-secret` cannot be applied (the message names the flag).
    #[error("{0}")]
    OperatorEdit(String),
    #[error("the bundle has {count} documents; at most 9999 are supported")]
    TooManyDocuments { count: usize },
    #[error("invalid bundle chunk: {0}")]
    InvalidChunk(String),
    #[error("settings cannot be rendered into an Installation: {0}")]
    Unsupported(String),
    #[error("serializing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("retiring the unused bundle copy {name}: {reason}")]
    Retire { name: String, reason: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What [`bundle::bundle`] calls its two inputs in errors, when no caller names them.
pub const OPERATOR_INPUT: &str = "tigera-operator.yaml";
/// See [`OPERATOR_INPUT`].
pub const CRDS_INPUT: &str = "operator-crds.yaml";

impl DeliveryError {
    /// The same error with the bundle's inputs called `operator` and `crds` (the CLI passes the files the user gave)
    /// instead of [`OPERATOR_INPUT`] and [`CRDS_INPUT`].
    pub fn naming_inputs(mut self, operator: &str, crds: &str) -> Self {
        if let DeliveryError::Parse { input, .. }
        | DeliveryError::NotAnObject { input, .. }
        | DeliveryError::EmptyInput { input }
        | DeliveryError::UnexpectedKind { input, .. }
        | DeliveryError::DocumentTooLarge { input, .. } = &mut self
        {
            if input == OPERATOR_INPUT {
                *input = operator.to_string();
            } else if input == CRDS_INPUT {
                *input = crds.to_string();
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_annotation_is_one_the_controllers_do_not_fingerprint() {
        assert!(
            super::STATUS_ANNOTATION
                .starts_with(crate::cluster::seen::OWN_STATUS_ANNOTATION_PREFIX)
        );
    }
}
