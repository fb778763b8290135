//! The measurement behind "Why the 80 % target is out of reach" in docs/performance.md: how fast could the webhook
//! read a review if it built no `serde_json::Value`? Times, per body of the macro benchmark's mix, the baseline's
//! skip (read the uid), the webhook's `review::parse` (pruned `Value`), and serde structs that borrow `Cow<str>`
//! from the body for exactly the fields the pruned `Value` keeps. Not used by the webhook.
//!
//! ```text
//! cargo run --release --example parse_experiment [-- ITERATIONS]
//! ```

use std::borrow::Cow;
use std::hint::black_box;
use std::marker::PhantomData;
use std::time::Instant;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The baseline responder's whole policy, its own code.
#[path = "support/uid.rs"]
mod uid;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Review<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Request<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Gvk<'a>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<Object<'a>>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Gvk<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Object<'a> {
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow)]
    spec: Option<Spec<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Metadata<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    labels: Option<&'a RawValue>,
    #[serde(borrow, default)]
    annotations: Settings<'a>,
}

/// The `capi-calico.io/` annotations (prefix in any case), the others skipped while reading.
#[derive(Default)]
#[allow(dead_code)]
struct Settings<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Settings<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Settings<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Settings<'a>, A::Error> {
                let prefix = capi_calico_webhook::settings::PREFIX;
                let mut out = Vec::new();
                while let Some(key) = a.next_key::<Cow<'de, str>>()? {
                    if key
                        .get(..prefix.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                    {
                        out.push((key, a.next_value()?));
                    } else {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Settings(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Spec<'a> {
    #[serde(borrow)]
    cluster_network: Option<&'a RawValue>,
    #[serde(borrow)]
    kubeadm_config_spec: Option<KubeadmSpec<'a>>,
    #[serde(borrow)]
    template: Option<Template<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Template<'a> {
    #[serde(borrow)]
    spec: Option<KubeadmSpec<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct KubeadmSpec<'a> {
    #[serde(borrow)]
    files: Option<Vec<File<'a>>>,
    #[serde(borrow)]
    pre_kubeadm_commands: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    post_kubeadm_commands: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct File<'a> {
    #[serde(borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow)]
    owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    permissions: Option<Cow<'a, str>>,
    #[serde(borrow)]
    encoding: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

/// Mean µs per call of `f` over `n` calls.
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let names = [
        "kcp-inject",
        "kct-inject",
        "cluster-valid",
        "kcp-injected",
        "kct-injected",
    ];
    let bodies: Vec<Vec<u8>> = names
        .iter()
        .map(|n| {
            std::fs::read(format!("tests/fixtures/reviews/{n}.json"))
                .expect("run from the repository root")
        })
        .collect();
    println!(
        "| body | skip (baseline) | `review::parse` (pruned `Value`) | borrowed typed reader |"
    );
    println!("|---|---:|---:|---:|");
    let mut sums = [0.0; 3];
    for (name, body) in names.iter().zip(&bodies) {
        let mut row = [0.0; 3];
        // Two warm-up rounds, then the timed one.
        for _ in 0..3 {
            row = [
                time(n, || {
                    black_box(uid::uid_of(black_box(body)));
                }),
                time(n, || {
                    black_box(capi_calico_webhook::admission::review::parse(black_box(body)).ok());
                }),
                time(n, || {
                    let review = serde_json::from_slice::<Review>(black_box(body)).ok();
                    assert!(review.is_some_and(|r| r.request.is_some_and(|q| q.object.is_some())));
                }),
            ];
        }
        for (sum, t) in sums.iter_mut().zip(row) {
            *sum += t;
        }
        println!("| {name} | {:.1} | {:.1} | {:.1} |", row[0], row[1], row[2]);
    }
    println!(
        "| sum over the mix (µs) | {:.1} | {:.1} | {:.1} |",
        sums[0], sums[1], sums[2]
    );
}
