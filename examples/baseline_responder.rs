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

mod support;

use capi_calico_webhook::admission::api::{Endpoint, Outcome, ReviewHandler, ReviewReply};

/// The same allocator as the webhook binary, so that the baseline differs only in the handler.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reads `request.uid` and allows.
struct AllowAll;

impl ReviewHandler for AllowAll {
    async fn review(&self, _endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        let Some(uid) = support::uid_of(body) else {
            return support::bad_request("not an AdmissionReview");
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
            decision: support::decision(uid, Outcome::Allowed),
        }
    }

    fn ready(&self) -> bool {
        true
    }
}

fn main() {
    let args = support::args(
        8444,
        "baseline",
        "baseline_responder [--listen HOST:PORT] [--self-signed-dir DIR]",
        false,
    );
    support::serve(&args, AllowAll);
}
