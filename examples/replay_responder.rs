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

mod support;

use std::collections::HashMap;

use capi_calico_webhook::admission::Webhook;
use capi_calico_webhook::admission::api::{Endpoint, Outcome, ReviewHandler, ReviewReply};
use capi_calico_webhook::cluster::documents::DocumentSource;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Body length → (HTTP status, response body) as the webhook answered that body. The fixture reviews share one
/// uid, so the body length tells them apart (start-up refuses two bodies of one length); the uid is still read and
/// the body scanned, as the baseline does.
struct Replay(HashMap<usize, (u16, Vec<u8>)>);

impl ReviewHandler for Replay {
    async fn review(&self, _endpoint: Endpoint, body: &[u8]) -> ReviewReply {
        let found = support::uid_of(body).and_then(|uid| self.0.get(&body.len()).map(|r| (uid, r)));
        let Some((uid, (status, body))) = found else {
            return support::bad_request("not one of the replayed AdmissionReviews");
        };
        ReviewReply {
            status: *status,
            body: body.clone(),
            decision: support::decision(uid, Outcome::Allowed),
        }
    }

    fn ready(&self) -> bool {
        true
    }
}

fn main() {
    let args = support::args(
        8445,
        "replay",
        "replay_responder --body FILE... [--listen HOST:PORT] [--self-signed-dir DIR]",
        true,
    );
    let webhook = Webhook::new(DocumentSource::default());
    let mut replies = HashMap::new();
    for path in &args.bodies {
        let body = match std::fs::read(path) {
            Ok(body) => body,
            Err(e) => support::fail(&format!("{}: {e}", path.display())),
        };
        if support::uid_of(&body).is_none() {
            support::fail(&format!(
                "{}: not an AdmissionReview with a request.uid",
                path.display()
            ));
        }
        let reply = futures::executor::block_on(webhook.handle(Endpoint::Mutate, &body));
        if replies
            .insert(body.len(), (reply.status, reply.body))
            .is_some()
        {
            support::fail(&format!(
                "{}: two bodies of {} bytes; the replay tells them apart by length",
                path.display(),
                body.len()
            ));
        }
    }
    if replies.is_empty() {
        support::fail("give at least one --body FILE to replay");
    }
    support::serve(&args, Replay(replies));
}
