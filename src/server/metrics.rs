//! Prometheus metrics (prometheus-client, OpenMetrics text), served on the separate plain-HTTP port.
//!
//! Label values that come from requests (`kind`, `operation`) are bounded: a client can send any kind, and an
//! unbounded label would let it grow the registry without limit. Past [`MAX_KINDS`] distinct kinds, further ones
//! are counted as `other`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::api::{Decision, Endpoint, Outcome};

/// Distinct `kind` label values kept before further ones are folded into `other`.
pub const MAX_KINDS: usize = 64;
/// Longest label value taken from a request; longer ones are folded into `other`.
const MAX_LABEL_LEN: usize = 128;
/// Histogram buckets in seconds: 100 µs .. 10 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Content type of the `/metrics` answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    kind: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// All metrics of the server, with their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    denials: Family<RuleLabels, Counter>,
    lookups: Family<SourceLabels, Counter>,
    cert_expiry: Gauge<i64, AtomicI64>,
    reloads: Family<ResultLabels, Counter>,
    open_connections: Gauge<i64, AtomicI64>,
    kinds_seen: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let denials = Family::<RuleLabels, Counter>::default();
        let lookups = Family::<SourceLabels, Counter>::default();
        let cert_expiry = Gauge::<i64, AtomicI64>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "capi_calico_admission_requests",
            "Admission requests by endpoint, object kind, operation and outcome",
            requests.clone(),
        );
        registry.register(
            "capi_calico_admission_duration_seconds",
            "Time to answer an admission request, from routing to response",
            duration.clone(),
        );
        registry.register(
            "capi_calico_admission_denials",
            "Denied admission requests by rule",
            denials.clone(),
        );
        registry.register(
            "capi_calico_cluster_lookups",
            "Cluster lookups by source (cache, api, not-found, documents)",
            lookups.clone(),
        );
        registry.register(
            "capi_calico_tls_certificate_expiry_timestamp_seconds",
            "Not-after of the serving certificate, Unix seconds",
            cert_expiry.clone(),
        );
        registry.register(
            "capi_calico_tls_reloads",
            "Serving certificate loads by result (success, error)",
            reloads.clone(),
        );
        registry.register(
            "capi_calico_open_connections",
            "Open connections on the webhook port",
            open_connections.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            denials,
            lookups,
            cert_expiry,
            reloads,
            open_connections,
            kinds_seen: Mutex::new(HashSet::new()),
        }
    }

    /// Count one decision of the handler.
    pub fn observe_decision(&self, endpoint: Endpoint, decision: &Decision, elapsed: Duration) {
        let labels = RequestLabels {
            endpoint: endpoint.as_str().to_owned(),
            kind: self.bounded_kind(&decision.kind),
            operation: bounded_operation(&decision.operation).to_owned(),
            outcome: decision.outcome.as_str().to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.observe_duration(endpoint, elapsed);
        if decision.outcome == Outcome::Denied {
            for rule in &decision.denied_rules {
                let rule = if rule.len() > MAX_LABEL_LEN {
                    "other"
                } else {
                    rule.as_str()
                };
                self.denials
                    .get_or_create(&RuleLabels {
                        rule: rule.to_owned(),
                    })
                    .inc();
            }
        }
        if !decision.lookup.is_empty() {
            let source = if decision.lookup.len() > MAX_LABEL_LEN {
                "other"
            } else {
                decision.lookup.as_str()
            };
            self.lookups
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .inc();
        }
    }

    /// Count a request the transport refused before or instead of a decision (413, 415, 408, 503, ...).
    pub fn observe_rejection(&self, endpoint: Endpoint, elapsed: Duration) {
        let labels = RequestLabels {
            endpoint: endpoint.as_str().to_owned(),
            kind: String::new(),
            operation: String::new(),
            outcome: Outcome::Error.as_str().to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.observe_duration(endpoint, elapsed);
    }

    fn observe_duration(&self, endpoint: Endpoint, elapsed: Duration) {
        self.duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Record a certificate load attempt.
    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Set the not-after of the certificate being served (Unix seconds).
    pub fn set_certificate_expiry(&self, not_after_unix: i64) {
        self.cert_expiry.set(not_after_unix);
    }

    pub(crate) fn connection_opened(&self) {
        self.open_connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn bounded_kind(&self, kind: &str) -> String {
        if kind.len() > MAX_LABEL_LEN {
            return "other".to_owned();
        }
        let Ok(mut seen) = self.kinds_seen.lock() else {
            return "other".to_owned();
        };
        if seen.contains(kind) {
            return kind.to_owned();
        }
        if seen.len() >= MAX_KINDS {
            return "other".to_owned();
        }
        seen.insert(kind.to_owned());
        kind.to_owned()
    }
}

fn bounded_operation(operation: &str) -> &str {
    match operation {
        "" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT" => operation,
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(kind: &str, outcome: Outcome) -> Decision {
        Decision {
            uid: "u".into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: "n".into(),
            operation: "CREATE".into(),
            outcome,
            denied_rules: vec!["calico.block-size".into()],
            lookup: "cache".into(),
        }
    }

    #[test]
    fn encodes_the_contract_names() {
        let m = Metrics::new();
        m.observe_decision(
            Endpoint::Validate,
            &decision("cluster.x-k8s.io/v1beta2/Cluster", Outcome::Denied),
            Duration::from_micros(300),
        );
        m.tls_reload(true);
        m.set_certificate_expiry(1_900_000_000);
        let text = m.encode().unwrap();
        for needle in [
            r#"capi_calico_admission_requests_total{endpoint="validate",kind="cluster.x-k8s.io/v1beta2/Cluster",operation="CREATE",outcome="denied"} 1"#,
            r#"capi_calico_admission_duration_seconds_bucket{le="0.0005",endpoint="validate"} 1"#,
            r#"capi_calico_admission_denials_total{rule="calico.block-size"} 1"#,
            r#"capi_calico_cluster_lookups_total{source="cache"} 1"#,
            "capi_calico_tls_certificate_expiry_timestamp_seconds 1900000000",
            r#"capi_calico_tls_reloads_total{result="success"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn kind_and_operation_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_KINDS + 10) {
            let mut d = decision(&format!("g/v/K{i}"), Outcome::Allowed);
            d.operation = format!("OP{i}");
            m.observe_decision(Endpoint::Mutate, &d, Duration::ZERO);
        }
        let text = m.encode().unwrap();
        assert!(text.contains(r#"kind="other",operation="other""#));
        assert!(!text.contains(&format!("g/v/K{}", MAX_KINDS + 1)));
    }
}
