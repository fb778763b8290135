//! Micro benchmarks of the in-process decision: one AdmissionReview body through `Webhook::handle` (parse, lookup,
//! policy, patch, response encoding) and `policy::decide` alone, for each kind and outcome, on the bodies in
//! `tests/fixtures/reviews/`.
//!
//! ```text
//! cargo bench --bench admission                 # divan: median/mean/fastest/slowest + allocations, then p50/p99
//! cargo bench --bench admission -- --sample-count 200   # divan options
//! BENCH_PERCENTILE_ITERS=50000 cargo bench --bench admission
//! ```
//! Divan gives no tail percentiles, so after its table a second pass times each case one call at a time
//! (`BENCH_PERCENTILE_ITERS`, default 20000, after 2000 warm-up calls) and prints p50 / p99 / p99.9 / max; a third
//! splits the macro benchmark's bodies into phases (skip as the baseline does, parse, decide, respond).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use capi_calico_webhook::admission::api::{Endpoint, Outcome};
use capi_calico_webhook::admission::cache::SettingsCache;
use capi_calico_webhook::admission::policy::{self, Kind};
use capi_calico_webhook::admission::{Webhook, review};
use capi_calico_webhook::cluster::documents::DocumentSource;
use serde_json::Value;

/// The baseline responder's whole policy, the same code (`examples/support/uid.rs`).
#[path = "../examples/support/uid.rs"]
mod uid;
use uid::uid_of as baseline_uid;

#[global_allocator]
static ALLOC: divan::AllocProfiler<mimalloc::MiMalloc> =
    divan::AllocProfiler::new(mimalloc::MiMalloc);

/// (name, fixture file, endpoint, expected outcome).
const CASES: &[(&str, &str, Endpoint, Outcome)] = &[
    (
        "cluster_valid",
        "cluster-valid.json",
        Endpoint::Mutate,
        Outcome::Mutated,
    ),
    (
        "cluster_invalid",
        "cluster-invalid.json",
        Endpoint::Mutate,
        Outcome::Denied,
    ),
    (
        "kcp_first_injection",
        "kcp-inject.json",
        Endpoint::Mutate,
        Outcome::Mutated,
    ),
    (
        "kct_first_injection",
        "kct-inject.json",
        Endpoint::Mutate,
        Outcome::Mutated,
    ),
    (
        "kcp_already_injected",
        "kcp-injected.json",
        Endpoint::Mutate,
        Outcome::Allowed,
    ),
    (
        "kct_already_injected",
        "kct-injected.json",
        Endpoint::Mutate,
        Outcome::Allowed,
    ),
    (
        "kcp_injected_validate",
        "kcp-injected.json",
        Endpoint::Validate,
        Outcome::Allowed,
    ),
    (
        "kcp_not_opted_in",
        "kcp-not-opted-in.json",
        Endpoint::Mutate,
        Outcome::Allowed,
    ),
    (
        "cluster_not_opted_in",
        "cluster-not-opted-in.json",
        Endpoint::Mutate,
        Outcome::Allowed,
    ),
];

struct Case {
    name: &'static str,
    endpoint: Endpoint,
    body: Vec<u8>,
    kind: Kind,
    object: Value,
}

static FIXTURES: LazyLock<Vec<Case>> = LazyLock::new(|| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reviews");
    CASES
        .iter()
        .map(|&(name, file, endpoint, want)| {
            let body = std::fs::read(format!("{dir}/{file}")).expect("fixture");
            let review: Value = serde_json::from_slice(&body).expect("json");
            let object = review["request"]["object"].clone();
            let kind = Kind::of_object(&object).expect("known kind");
            let got = block_on(WEBHOOK.handle(endpoint, &body)).decision.outcome;
            assert_eq!(got, want, "{name}: fixture no longer gives {want:?}");
            Case {
                name,
                endpoint,
                body,
                kind,
                object,
            }
        })
        .collect()
});

/// The CLI's lookup over documents; empty, since the benchmarked objects carry their own annotations or are
/// Clusters (the not-opted-in KCP has its own `CUSTOM_CALICO_DEPLOYMENT: "false"`).
static WEBHOOK: LazyLock<Webhook<DocumentSource>> =
    LazyLock::new(|| Webhook::new(DocumentSource::default()));

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn case(name: &str) -> &'static Case {
    FIXTURES.iter().find(|c| c.name == name).expect("case")
}

const NAMES: &[&str] = &[
    "cluster_valid",
    "cluster_invalid",
    "kcp_first_injection",
    "kct_first_injection",
    "kcp_already_injected",
    "kct_already_injected",
    "kcp_injected_validate",
    "kcp_not_opted_in",
    "cluster_not_opted_in",
];

/// The whole review: body bytes in, response bytes out.
#[divan::bench(args = NAMES)]
fn handle(bencher: divan::Bencher, name: &str) {
    let c = case(name);
    bencher.bench(|| block_on(WEBHOOK.handle(c.endpoint, divan::black_box(&c.body))));
}

/// The policy alone, on the already-parsed object.
#[divan::bench(args = NAMES)]
fn decide(bencher: divan::Bencher, name: &str) {
    let c = case(name);
    bencher.bench(|| {
        block_on(policy::decide(
            &*WEBHOOK_SOURCE,
            c.endpoint,
            c.kind,
            divan::black_box(&c.object),
        ))
    });
}

static WEBHOOK_SOURCE: LazyLock<DocumentSource> = LazyLock::new(DocumentSource::default);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// One call at a time, each timed: the tail that divan's sample means hide.
fn percentiles() {
    let iters: usize = std::env::var("BENCH_PERCENTILE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    println!("\nWebhook::handle, one call at a time ({iters} calls per case, µs):\n");
    println!("| case | body bytes | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for c in FIXTURES.iter() {
        for _ in 0..2_000 {
            divan::black_box(block_on(WEBHOOK.handle(c.endpoint, &c.body)));
        }
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            divan::black_box(block_on(
                WEBHOOK.handle(c.endpoint, divan::black_box(&c.body)),
            ));
            times.push(t.elapsed());
        }
        times.sort_unstable();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            c.name,
            c.body.len(),
            micros(percentile(&times, 0.50)),
            micros(percentile(&times, 0.99)),
            micros(percentile(&times, 0.999)),
            micros(times[times.len() - 1]),
        );
    }
}

/// Where a review's time goes, phase by phase, for each body of the macro benchmark's mix: skipping the body as
/// the baseline does, `review::parse`, `policy::decide_with` (with the webhook's memo, warm) and `review::respond`.
/// Means over `BENCH_PERCENTILE_ITERS` rounds after 2000 warm-up rounds.
fn phases() {
    let iters: usize = std::env::var("BENCH_PERCENTILE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let source = DocumentSource::default();
    let memo = SettingsCache::new();
    println!("\nPhases of one review, mean over {iters} rounds (µs):\n");
    println!("| case | skip (baseline) | parse | decide | respond |");
    println!("|---|---:|---:|---:|---:|");
    let mut totals = [0.0f64; 4];
    for c in BENCH_MIX.iter().map(|n| case(n)) {
        let mut sums = [Duration::ZERO; 4];
        for round in 0..(iters + 2_000) {
            let t0 = Instant::now();
            divan::black_box(baseline_uid(divan::black_box(&c.body)));
            let t1 = Instant::now();
            let request = review::parse(divan::black_box(&c.body)).expect("parses");
            let t2 = Instant::now();
            let object = request.object.as_ref().expect("object");
            let decided = block_on(policy::decide_with(
                &source, &memo, c.endpoint, c.kind, object,
            ));
            let t3 = Instant::now();
            divan::black_box(review::respond(&request.uid, &decided.verdict).expect("encodes"));
            let t4 = Instant::now();
            if round >= 2_000 {
                for (sum, (a, b)) in sums
                    .iter_mut()
                    .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
                {
                    *sum += b - a;
                }
            }
        }
        let means = sums.map(|d| d.as_secs_f64() * 1e6 / iters as f64);
        for (total, mean) in totals.iter_mut().zip(means) {
            *total += mean;
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            c.name, means[0], means[1], means[2], means[3]
        );
    }
    println!(
        "| sum over the mix | {:.1} | {:.1} | {:.1} | {:.1} |",
        totals[0], totals[1], totals[2], totals[3]
    );
}

fn main() {
    LazyLock::force(&FIXTURES);
    divan::main();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and divan then runs
    // every benchmark once as a test: skip the timing passes too.
    if std::env::args().any(|a| a == "--bench") {
        percentiles();
        phases();
    }
}

/// The bodies `scripts/bench.sh` sends round-robin, in its order.
const BENCH_MIX: &[&str] = &[
    "kcp_first_injection",
    "kct_first_injection",
    "cluster_valid",
    "kcp_already_injected",
    "kct_already_injected",
];

/// One pass over the macro benchmark's body mix through `Webhook::handle`: its time / 5 is the webhook's
/// in-process cost per request in `scripts/bench.sh`, without the transport.
#[divan::bench]
fn bench_mix_webhook(bencher: divan::Bencher) {
    let cases: Vec<&Case> = BENCH_MIX.iter().map(|n| case(n)).collect();
    bencher.bench(|| {
        for c in &cases {
            divan::black_box(block_on(
                WEBHOOK.handle(c.endpoint, divan::black_box(&c.body)),
            ));
        }
    });
}

/// The same pass through the baseline responder's policy (the uid read), for the in-process ratio.
#[divan::bench]
fn bench_mix_baseline(bencher: divan::Bencher) {
    let cases: Vec<&Case> = BENCH_MIX.iter().map(|n| case(n)).collect();
    bencher.bench(|| {
        for c in &cases {
            divan::black_box(baseline_uid(divan::black_box(&c.body)));
        }
    });
}
