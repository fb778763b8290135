//! A second benchmark reference: the baseline responder's handler (read `request.uid`, scan the rest), but answering
//! each request with the webhook's own response bytes for that body, computed once at start-up by the real
//! `Webhook::handle`. It pays for the transport of the webhook's answers (the base64 JSON patches of first injections
//! are ~20 KB) without doing any policy work per request, so its saturated throughput is the ceiling for the webhook
//! with that request mix: whatever the webhook does per request, it cannot be cheaper than this.
//!
//! ```text
//! cargo run --release --example replay_responder -- --body tests/fixtures/reviews/kcp-inject.json [--body ...] \
//!     [--listen 127.0.0.1:8445] [--self-signed-dir DIR]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use capi_calico_webhook::admission::Webhook;
use capi_calico_webhook::admission::api::{
    Decision, Endpoint, Outcome, ReviewHandler, ReviewReply,
};
use capi_calico_webhook::cluster::documents::DocumentSource;
use capi_calico_webhook::server::{self, ServerConfig, TlsSource};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Body length → (HTTP status, response body) as the webhook answered that body. The fixture reviews share one
/// uid, so the body length tells them apart (start-up refuses two bodies of one length); the uid is still read and
/// the body scanned, as the baseline does.
struct Replay(HashMap<usize, (u16, Vec<u8>)>);

#[derive(serde::Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(serde::Deserialize)]
struct Request {
    uid: String,
}

fn uid_of(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Review>(body) {
        Ok(Review { request: Some(r) }) => Some(r.uid),
        _ => None,
    }
}

impl ReviewHandler for Replay {
    async fn review(&self, _endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        let found = uid_of(body).and_then(|uid| self.0.get(&body.len()).map(|r| (uid, r)));
        let Some((uid, (status, body))) = found else {
            return ReviewReply {
                status: 400,
                body: br#"{"error":"not one of the replayed AdmissionReviews"}"#.to_vec(),
                decision: Decision {
                    outcome: Outcome::Error,
                    ..Decision::empty()
                },
            };
        };
        ReviewReply {
            status: *status,
            body: body.clone(),
            decision: Decision {
                uid,
                outcome: Outcome::Allowed,
                ..Decision::empty()
            },
        }
    }

    fn ready(&self) -> bool {
        true
    }
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:8445".parse().expect("address");
    let mut dir = std::env::temp_dir().join("capi-calico-replay-tls");
    let mut bodies = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v.parse().expect("--listen host:port"),
            ("--self-signed-dir", Some(v)) => dir = PathBuf::from(v),
            ("--body", Some(v)) => bodies.push(PathBuf::from(v)),
            _ => {
                eprintln!(
                    "usage: replay_responder --body FILE... [--listen HOST:PORT] [--self-signed-dir DIR]"
                );
                std::process::exit(2);
            }
        }
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("install the ring crypto provider");
    server::init_logging(server::LogFormat::Json);
    let webhook = Webhook::new(DocumentSource::default());
    let mut replies = HashMap::new();
    for path in &bodies {
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        uid_of(&body).unwrap_or_else(|| panic!("{}: no request.uid", path.display()));
        let reply = futures::executor::block_on(webhook.handle(Endpoint::Mutate, &body));
        if replies
            .insert(body.len(), (reply.status, reply.body))
            .is_some()
        {
            panic!(
                "{}: two bodies of {} bytes; the replay tells them apart by length",
                path.display(),
                body.len()
            );
        }
    }
    let config = ServerConfig {
        listen,
        metrics_listen: None,
        tls: TlsSource::SelfSigned { dir },
        ..ServerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(server::run(
        config,
        Arc::new(Replay(replies)),
        server::shutdown_signal(),
    )) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
