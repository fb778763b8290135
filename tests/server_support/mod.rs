//! Shared pieces of the server tests: a fake ReviewHandler and a fast-timeout config.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use capi_calico_webhook::admission::api::{
    Decision, Endpoint, Outcome, ReviewHandler, ReviewReply,
};
use capi_calico_webhook::server::ServerConfig;
use tokio::sync::Notify;

/// Answers `{"endpoint":..,"len":..}`. Bodies starting with `slow` sleep 1.5 s, `hang` sleep 60 s, `panic` panic,
/// `deny` produce a denial with a rule and a lookup source.
#[derive(Debug, Default)]
pub struct FakeHandler {
    pub not_ready: AtomicBool,
    pub calls: AtomicUsize,
    /// Notified when a review starts.
    pub started: Notify,
}

impl FakeHandler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl ReviewHandler for FakeHandler {
    async fn review(&self, endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.started.notify_waiters();
        if body.starts_with(b"slow") {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        } else if body.starts_with(b"hang") {
            tokio::time::sleep(Duration::from_secs(60)).await;
        } else if body.starts_with(b"panic") {
            panic!("fake handler panics on request");
        }
        let deny = body.starts_with(b"deny");
        ReviewReply {
            status: 200,
            body: format!(
                r#"{{"endpoint":"{}","len":{}}}"#,
                endpoint.as_str(),
                body.len()
            )
            .into_bytes(),
            decision: Decision {
                uid: "uid-1".into(),
                kind: "cluster.x-k8s.io/v1beta2/Cluster".into(),
                namespace: "default".into(),
                name: "c1".into(),
                operation: "CREATE".into(),
                outcome: if deny {
                    Outcome::Denied
                } else {
                    Outcome::Allowed
                },
                denied_rules: if deny {
                    vec!["block-size-range".into()]
                } else {
                    vec![]
                },
                lookup: if deny { "cache".into() } else { String::new() },
            },
        }
    }

    fn ready(&self) -> bool {
        !self.not_ready.load(Ordering::SeqCst)
    }
}

/// Loopback listeners on port 0 and tight timeouts, so a test never waits long.
pub fn fast_config(tls: capi_calico_webhook::server::TlsSource) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls,
        max_body_bytes: 64 * 1024,
        max_body_memory_bytes: 1024 * 1024,
        request_timeout: Duration::from_secs(3),
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        tls_handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        max_connection_age: Duration::from_secs(600),
        max_connections: 64,
        max_concurrent_reviews: 8,
        max_concurrent_streams: 16,
        shutdown_delay: Duration::ZERO,
        drain_timeout: Duration::from_secs(3),
        cert_poll_interval: Duration::from_secs(60),
    }
}
