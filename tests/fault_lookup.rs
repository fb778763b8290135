//! The Cluster lookup when the API server is unreachable: `serve --kubeconfig` pointing at a 127.0.0.1 port that
//! accepts connections and never answers (slow / hung API server), or at a closed port (refused). A KCP or KCT
//! without its own settings needs the lookup; its review must still be answered well inside the webhook timeout
//! (here: under 2 s, with the default `--lookup-timeout` of 1.5 s), denied with the reason and "retry in a moment" (fail closed), as
//! documented. Readiness stays false (the caches never sync), and reviews that need no lookup are answered at once.

mod load_support;

use std::time::{Duration, Instant};

use load_support::*;

fn kubeconfig(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: not-a-real-token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

/// Post `file` to /mutate; the parsed response and how long the answer took.
async fn review(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    file: &str,
) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let resp = client
        .post(url(addr, "/mutate"))
        .header("content-type", "application/json")
        .body(fixture(file))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    (v["response"].clone(), t.elapsed())
}

async fn check_unreachable(port: u16, what: &str) {
    let (_guard, dir) = tmp();
    let cfg = kubeconfig(&dir, port);
    let tls = dir.join("tls");
    let serve = Serve::start(&[
        "--kubeconfig",
        path_str(&cfg),
        "--no-reconciler",
        "--self-signed-dir",
        path_str(&tls),
    ]);
    let client = https_client(&[read_ca(&tls)], true);
    let addr = serve.addr;

    // Ten lookups at once, KCPs and KCTs.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        let file = if i % 2 == 0 {
            "kcp-lookup.json"
        } else {
            "kct-lookup.json"
        };
        tasks.push(tokio::spawn(
            async move { review(&client, addr, file).await },
        ));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (response, took) = t.await.unwrap();
        slowest = slowest.max(took);
        // Denied (fail closed), with the reason and a retry, never admitted without the Cluster's settings.
        assert_eq!(response["allowed"], false, "{what}: {response}");
        assert!(response.get("patch").is_none(), "{what}: {response}");
        assert_eq!(response["status"]["code"], 403, "{what}: {response}");
        let message = response["status"]["message"].to_string();
        assert!(
            message.contains("could not look up the Cluster of"),
            "{what}: {response}"
        );
        assert!(message.contains("retry in a moment"), "{what}: {response}");
    }
    eprintln!("{what}: slowest lookup review answered in {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{what}: {slowest:?}");

    // Not ready (caches not synced), but reviews that need no lookup are answered at once.
    let (ready, text) = http_get(serve.metrics.unwrap(), "/readyz").await;
    assert_eq!(ready, 503, "{what}: {text}");
    let (response, took) = review(&client, addr, "kcp-inject.json").await;
    assert_eq!(response["patchType"], "JSONPatch", "{what}: {response}");
    assert!(took < Duration::from_millis(500), "{what}: {took:?}");
    let (_, metrics) = http_get(serve.metrics.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("capi_calico_cluster_lookups_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_that_never_answers() {
    // Accepts and holds every connection, never sends a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    check_unreachable(port, "hung API server").await;
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_that_refuses_connections() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    check_unreachable(port, "refused API server").await;
}
