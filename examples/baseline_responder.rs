//! The benchmark baseline: an allow-everything AdmissionReview responder on exactly the webhook's transport
//! (`server::start`: axum on hyper, rustls, the same limits and defaults), with a handler that only reads the
//! request's `uid` and answers `allowed: true`. Its saturated throughput is the ceiling for this architecture;
//! `scripts/bench.sh` measures it in the same run as the real webhook.
//!
//! ```text
//! cargo run --release --example baseline_responder -- [--listen 127.0.0.1:8444] [--self-signed-dir DIR]
//! ```
//! Same runtime as `capi-calico-webhook serve` (tokio multi-thread, one worker per CPU it may run on), metrics off,
//! stops on SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use capi_calico_webhook::admission::api::{
    Decision, Endpoint, Outcome, ReviewHandler, ReviewReply,
};
use capi_calico_webhook::server::{self, ServerConfig, TlsSource};

/// The same allocator as the webhook binary, so that the baseline differs only in the handler.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reads `request.uid` (serde skips everything else, but still scans the whole body) and allows.
struct AllowAll;

#[derive(serde::Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(serde::Deserialize)]
struct Request {
    uid: String,
}

impl ReviewHandler for AllowAll {
    async fn review(&self, _endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        let uid = match serde_json::from_slice::<Review>(body) {
            Ok(Review { request: Some(r) }) => r.uid,
            _ => {
                return ReviewReply {
                    status: 400,
                    body: br#"{"error":"not an AdmissionReview"}"#.to_vec(),
                    decision: decision(String::new(), Outcome::Error),
                };
            }
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": true},
        }))
        .unwrap_or_default();
        ReviewReply {
            status: 200,
            body,
            decision: decision(uid, Outcome::Allowed),
        }
    }

    fn ready(&self) -> bool {
        true
    }
}

fn decision(uid: String, outcome: Outcome) -> Decision {
    Decision {
        uid,
        outcome,
        ..Decision::empty()
    }
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:8444".parse().expect("address");
    let mut dir = std::env::temp_dir().join("capi-calico-baseline-tls");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v.parse().expect("--listen host:port"),
            ("--self-signed-dir", Some(v)) => dir = PathBuf::from(v),
            _ => {
                eprintln!("usage: baseline_responder [--listen HOST:PORT] [--self-signed-dir DIR]");
                std::process::exit(2);
            }
        }
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("install the ring crypto provider");
    server::init_logging(server::LogFormat::Json);
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
        Arc::new(AllowAll),
        server::shutdown_signal(),
    )) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
