//! The Cluster lookup through a real API server that turns slow, then silent (issue 5, section 2).
//!
//! A second `serve` (not registered with the API server: the reviews are POSTed to it directly with `curl`) reaches
//! the API server through a TCP proxy in this process that can pass bytes at once, hold each chunk for a while
//! (slow), or stop passing them with the connections left open (silent). A KCP that names its Cluster by label needs
//! the Cluster's GET:
//!
//! * slow (each chunk held 50 ms: a GET on a new connection, TLS handshake included, passes 4 to 6 chunks): the GET answers within `--lookup-timeout` (1 s); the KCP is injected, and the
//!   lookup is counted as `source="api"`;
//! * silent: the GET times out; the Cluster the informer cached is used (`source="cache"`, a warning in the log) and
//!   the KCP is still injected, answered within the lookup timeout plus a margin, well inside the webhook's 4 s;
//!   a KCP whose Cluster was never cached is denied with "retry in a moment" in the same time.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Scenario;
use crate::harness::{Harness, Proc, TestResult, free_port, http_get, repo_root};
use crate::webhook::webhook_binary;

pub const SCENARIOS: &[Scenario] = &[(
    "lookup_12_slow_then_silent_api_server",
    s12_slow_then_silent_api_server,
)];

const PASS: u8 = 0;
const SLOW: u8 = 1;
const SILENT: u8 = 2;
/// How long the proxy holds each chunk in [`SLOW`] mode.
const SLOW_CHUNK: Duration = Duration::from_millis(50);
const PROC: &str = "webhook-behind-proxy";

/// A TCP proxy to `127.0.0.1:upstream`; `mode` switches every connection, open or new, at once.
fn start_proxy(upstream: u16, mode: Arc<AtomicU8>) -> TestResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            pipe(client, server, Arc::clone(&mode));
            pipe(s2, c2, Arc::clone(&mode));
        }
    });
    Ok(port)
}

/// Copy `from` to `to` chunk by chunk, as `mode` says.
fn pipe(mut from: TcpStream, mut to: TcpStream, mode: Arc<AtomicU8>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            loop {
                match mode.load(Ordering::SeqCst) {
                    SILENT => std::thread::sleep(Duration::from_millis(20)),
                    SLOW => {
                        std::thread::sleep(SLOW_CHUNK);
                        break;
                    }
                    _ => break,
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// `capi_calico_cluster_lookups_total{source="<source>"}` of the webhook's metrics.
fn lookups(metrics: u16, source: &str) -> f64 {
    let needle = format!("capi_calico_cluster_lookups_total{{source=\"{source}\"}} ");
    http_get(metrics, "/metrics")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The KCP review of the fixture `kcp-lookup.json`, moved to `ns` and labelled with `cluster`.
fn kcp_review(ns: &str, cluster: &str) -> TestResult<String> {
    let path = repo_root().join("tests/fixtures/reviews/kcp-lookup.json");
    let mut review: Value = serde_json::from_str(&fs::read_to_string(path)?)?;
    review["request"]["namespace"] = json!(ns);
    review["request"]["object"]["metadata"]["namespace"] = json!(ns);
    review["request"]["object"]["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] =
        json!(cluster);
    Ok(review.to_string())
}

/// POST `body` to the webhook's /mutate with curl; the `response` and how long the call took.
fn post(dir: &std::path::Path, port: u16, body: &str) -> TestResult<(Value, Duration)> {
    let file = dir.join("review.json");
    fs::write(&file, body)?;
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("https://127.0.0.1:{port}/mutate"))
        .output()?;
    let took = t.elapsed();
    ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["response"].clone(), took))
}

fn s12_slow_then_silent_api_server(h: &mut Harness) -> TestResult {
    let mode = Arc::new(AtomicU8::new(PASS));
    let result = slow_then_silent(h, &mode);
    // Whatever happened: the proxy passes bytes again and the second webhook is gone before the next scenario (the
    // proxy's threads live on, idle, until the run ends).
    mode.store(PASS, Ordering::SeqCst);
    h.stop(PROC);
    result
}

fn slow_then_silent(h: &mut Harness, mode: &Arc<AtomicU8>) -> TestResult {
    let ns = h.create_namespace("lookup-12")?;
    let cluster = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "wl-slow", "annotations": {
            "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true", "capi-calico.io/INSTALL_CALICOCTL": "true"}},
        "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}}}
    });
    h.apply(&ns, &cluster.to_string())?;

    // The second webhook, its kubeconfig pointing at the proxy.
    let dir = h.dir().join("lookup-12");
    fs::create_dir_all(&dir)?;
    let upstream: u16 = h
        .server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| fail!("no port in {}", h.server))?;
    let proxy = start_proxy(upstream, Arc::clone(mode))?;
    let kubeconfig = dir.join("kubeconfig");
    fs::write(
        &kubeconfig,
        fs::read_to_string(&h.kubeconfig)?
            .replace(&h.server, &format!("https://127.0.0.1:{proxy}")),
    )?;
    let leaf =
        h.ca.server("capi-calico-webhook", &["127.0.0.1", "localhost"])?;
    fs::write(dir.join("tls.crt"), &leaf.cert_pem)?;
    fs::write(dir.join("tls.key"), &leaf.key_pem)?;
    fs::write(dir.join("ca.crt"), &h.ca.cert_pem)?;
    let (port, metrics) = (free_port()?, free_port()?);
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
        "--tls-cert-file",
        &dir.join("tls.crt").display().to_string(),
        "--tls-key-file",
        &dir.join("tls.key").display().to_string(),
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--no-reconciler",
        "--no-template-linker",
        "--lookup-timeout",
        "1s",
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = h.dir().join("logs/webhook-behind-proxy.log");
    h.procs
        .push(Proc::spawn(PROC, &webhook_binary(), &args, log)?);
    let t = Instant::now();
    while http_get(metrics, "/readyz").unwrap_or_default().trim() != "ready" {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the webhook behind the proxy never became ready:\n{}",
            h.proc(PROC).map(|p| p.log_tail(30)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let injected =
        |response: &Value| response["allowed"] == true && response["patchType"] == "JSONPatch";
    let review = kcp_review(&ns, "wl-slow")?;
    // Through the proxy at full speed first: the Cluster is read (and cached by the informer meanwhile).
    let (response, _) = post(&dir, port, &review)?;
    ensure!(
        injected(&response),
        "not injected at full speed: {response}"
    );
    let t = Instant::now();
    while lookups(metrics, "api") < 1.0 {
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "no api lookup counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Slow: still read from the API server, within the lookup timeout.
    mode.store(SLOW, Ordering::SeqCst);
    let api_before = lookups(metrics, "api");
    let (response, took) = post(&dir, port, &review)?;
    ensure!(
        injected(&response),
        "not injected with a slow API server: {response}"
    );
    ensure!(
        lookups(metrics, "api") == api_before + 1.0 && lookups(metrics, "cache") == 0.0,
        "a slow API server's answer was not used (api {} -> {}, cache {})",
        api_before,
        lookups(metrics, "api"),
        lookups(metrics, "cache")
    );
    ensure!(
        took >= SLOW_CHUNK,
        "the proxy did not slow the lookup: {took:?}"
    );
    println!(
        "  slow API server ({SLOW_CHUNK:?} per chunk): injected in {took:?}, read from the API server"
    );

    // Silent: the cached Cluster, within the lookup timeout plus a margin.
    mode.store(SILENT, Ordering::SeqCst);
    let (response, took) = post(&dir, port, &review)?;
    ensure!(
        injected(&response),
        "not injected from the cache: {response}"
    );
    ensure!(
        lookups(metrics, "cache") == 1.0,
        "not counted as a cache lookup: {}",
        lookups(metrics, "cache")
    );
    ensure!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "silent API server: answered in {took:?} (lookup timeout 1 s, request timeout 4 s)"
    );
    println!("  silent API server: injected from the cached Cluster in {took:?}");
    // A Cluster the informer never saw: refused, to be retried.
    let (response, took) = post(&dir, port, &kcp_review(&ns, "never-created")?)?;
    let message = response["status"]["message"].as_str().unwrap_or_default();
    ensure!(
        response["allowed"] == false && message.contains("retry in a moment"),
        "a KCP whose Cluster was never cached: {response}"
    );
    ensure!(
        took < Duration::from_millis(2500),
        "a KCP whose Cluster was never cached: answered in {took:?}"
    );
    println!("  silent API server, Cluster never cached: denied (retry) in {took:?}");
    let log = h.proc(PROC).map(|p| p.log_tail(200)).unwrap_or_default();
    ensure!(
        log.contains("using the cached Cluster: the API server did not answer"),
        "no fallback warning in the log:\n{log}"
    );
    Ok(())
}
