//! The real server over loopback: HTTPS end to end, certificate rotation through a Kubernetes-style `..data`
//! symlink swap (and refusal of bad pairs), graceful shutdown, and abusive clients.

mod secret_volume;
mod server_support;
mod tls_client;

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use server_support::{FakeHandler, fast_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use capi_calico_webhook::server::tls::{GeneratedPair, generate_self_signed};
use capi_calico_webhook::server::{RunningServer, ServerConfig, TlsSource, start};
use secret_volume::publish;
use tls_client::{
    HTTP1, closed_within, cut_off_while_trickling, https_client, install_provider, tls_connect, url,
};

/// A fast configuration serving a self-signed certificate written to a fresh directory.
fn self_signed() -> (tempfile::TempDir, ServerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(TlsSource::SelfSigned {
        dir: dir.path().to_owned(),
    });
    (dir, config)
}

/// The CA of a self-signed server's directory.
fn ca_of(dir: &tempfile::TempDir) -> String {
    fs::read_to_string(dir.path().join("ca.crt")).unwrap()
}

/// An HTTP/2 client over `stream`, its connection driven in the background.
async fn h2_client(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<axum::body::Bytes>> {
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// `POST /validate` of `{}` for a hyper client.
fn empty_review(addr: SocketAddr) -> hyper::Request<http_body_util::Full<axum::body::Bytes>> {
    hyper::Request::post(url(addr, "/validate"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from_static(
            b"{}",
        )))
        .unwrap()
}

async fn start_server(
    config: ServerConfig,
    handler: Arc<FakeHandler>,
) -> (RunningServer, oneshot::Sender<()>) {
    install_provider();
    let (tx, rx) = oneshot::channel::<()>();
    let server = start(config, handler, async move {
        let _ = rx.await;
    })
    .await
    .expect("server starts");
    (server, tx)
}

/// Ask the server to stop and wait for it (5 s at most); it must stop cleanly.
async fn stop_server(server: RunningServer, stop: oneshot::Sender<()>) {
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .unwrap()
        .unwrap();
}

async fn post_json(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url(addr, path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// DER of the leaf certificate a fresh TLS connection is served.
async fn served_leaf(addr: SocketAddr, cas: &[&str]) -> Vec<u8> {
    let stream = tls_connect(addr, cas, HTTP1).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_der(pair: &GeneratedPair) -> Vec<u8> {
    CertificateDer::from_pem_slice(pair.cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn pair() -> GeneratedPair {
    generate_self_signed(&["localhost", "127.0.0.1"], Duration::from_secs(3600)).unwrap()
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn https_end_to_end_with_self_signed_certificate() {
    let (dir, config) = self_signed();
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let ca = ca_of(&dir);
    let client = https_client(&[&ca], true);

    let resp = post_json(&client, server.local_addr, "/mutate", "{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"endpoint":"mutate","len":2}"#
    );
    let resp = post_json(&client, server.local_addr, "/validate", "deny")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        client
            .get(url(server.local_addr, "/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(url(server.local_addr, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Oversized body over the wire: 413, and the server keeps serving.
    let big = " ".repeat(64 * 1024 + 1);
    let resp = post_json(&client, server.local_addr, "/validate", &big)
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        post_json(&client, server.local_addr, "/validate", "{}")
            .await
            .unwrap()
            .status(),
        200
    );

    // ALPN: h2 and http/1.1 offered; both negotiate, and a review works over HTTP/2.
    let h2 = tls_connect(server.local_addr, &[&ca], &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let mut sender = h2_client(h2).await;
    let resp = sender
        .send_request(empty_review(server.local_addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], br#"{"endpoint":"validate","len":2}"#);
    let h1 = tls_connect(server.local_addr, &[&ca], HTTP1).await.unwrap();
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(b"http/1.1".as_slice()));
    // Also reachable over 127.0.0.1 (the IP SAN).
    let by_ip = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let resp = by_ip
        .get(format!("https://{}/healthz", server.local_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let metrics = server.metrics_addr.unwrap();
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);
    let (status, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        r#"capi_calico_admission_requests_total{endpoint="mutate",kind="cluster.x-k8s.io/v1beta2/Cluster",operation="CREATE",outcome="allowed"} 1"#,
        r#"capi_calico_admission_denials_total{rule="block-size-range"} 1"#,
        r#"capi_calico_tls_reloads_total{result="success"} 1"#,
        "capi_calico_tls_certificate_expiry_timestamp_seconds ",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    stop_server(server, stop).await;
}

#[tokio::test]
async fn certificate_rotation_through_data_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (pair(), pair(), pair());
    publish(dir.path(), "2026_01_01_00_00_00.1", &a.cert_pem, &a.key_pem);
    let mut config = fast_config(TlsSource::Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    });
    // The poll backstop is far away: the directory watch must see the swap.
    config.cert_poll_interval = Duration::from_secs(600);
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let addr = server.local_addr;
    let cas = [a.ca_pem.as_str(), b.ca_pem.as_str(), c.ca_pem.as_str()];
    assert_eq!(served_leaf(addr, &cas).await, leaf_der(&a));

    // Requests keep flowing during every swap.
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = tokio::spawn({
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        let client = https_client(&cas, true);
        async move {
            while running.load(Ordering::SeqCst) {
                match post_json(&client, addr, "/validate", "{}").await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    publish(dir.path(), "2026_01_02_00_00_00.2", &b.cert_pem, &b.key_pem);
    eventually("certificate b served", Duration::from_secs(5), || async {
        served_leaf(addr, &cas).await == leaf_der(&b)
    })
    .await;

    // A mismatched pair (c's certificate, a's key) is refused; b stays.
    publish(dir.path(), "2026_01_03_00_00_00.3", &c.cert_pem, &a.key_pem);
    let metrics = server.metrics_addr.unwrap();
    eventually("first refusal counted", Duration::from_secs(5), || async {
        http_get(metrics, "/metrics")
            .await
            .1
            .contains(r#"capi_calico_tls_reloads_total{result="error"} 1"#)
    })
    .await;
    assert_eq!(served_leaf(addr, &cas).await, leaf_der(&b));

    // Unparsable content too.
    publish(
        dir.path(),
        "2026_01_04_00_00_00.4",
        "not a certificate",
        "not a key",
    );
    eventually("second refusal counted", Duration::from_secs(5), || async {
        http_get(metrics, "/metrics")
            .await
            .1
            .contains(r#"capi_calico_tls_reloads_total{result="error"} 2"#)
    })
    .await;
    assert_eq!(served_leaf(addr, &cas).await, leaf_der(&b));
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);

    // And a good pair after bad ones is taken.
    publish(dir.path(), "2026_01_05_00_00_00.5", &c.cert_pem, &c.key_pem);
    eventually("certificate c served", Duration::from_secs(5), || async {
        served_leaf(addr, &cas).await == leaf_der(&c)
    })
    .await;

    running.store(false, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(ok.load(Ordering::SeqCst) > 5);
    let text = http_get(metrics, "/metrics").await.1;
    assert!(
        text.contains(r#"capi_calico_tls_reloads_total{result="success"} 3"#),
        "{text}"
    );
    stop_server(server, stop).await;
}

#[tokio::test]
async fn plain_file_overwrite_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(), pair());
    fs::write(dir.path().join("tls.crt"), &a.cert_pem).unwrap();
    fs::write(dir.path().join("tls.key"), &a.key_pem).unwrap();
    let mut config = fast_config(TlsSource::Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    });
    config.cert_poll_interval = Duration::from_millis(200);
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let cas = [a.ca_pem.as_str(), b.ca_pem.as_str()];
    // Non-atomic overwrite, key first: the intermediate (mismatched) state may be seen and refused; the final pair
    // must be served.
    fs::write(dir.path().join("tls.key"), &b.key_pem).unwrap();
    fs::write(dir.path().join("tls.crt"), &b.cert_pem).unwrap();
    eventually("certificate b served", Duration::from_secs(5), || async {
        served_leaf(server.local_addr, &cas).await == leaf_der(&b)
    })
    .await;
    stop_server(server, stop).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new_connections() {
    let (dir, config) = self_signed();
    let handler = FakeHandler::new();
    let (server, stop) = start_server(config, handler.clone()).await;
    let ca = ca_of(&dir);
    let client = https_client(&[&ca], true);
    let (addr, metrics) = (server.local_addr, server.metrics_addr.unwrap());

    let started = handler.started.notified();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { post_json(&client, addr, "/mutate", "slow").await }
    });
    started.await;
    let t0 = Instant::now();
    stop.send(()).unwrap();
    let waiting = tokio::spawn(server.wait());

    eventually(
        "readyz 503 during drain",
        Duration::from_secs(1),
        || async { http_get(metrics, "/readyz").await.0 == 503 },
    )
    .await;
    eventually(
        "new connections refused",
        Duration::from_secs(1),
        || async { TcpStream::connect(addr).await.is_err() },
    )
    .await;
    assert_eq!(http_get(metrics, "/healthz").await.0, 200);

    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"endpoint":"mutate","len":4}"#
    );
    tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn drain_deadline_bounds_shutdown() {
    let (dir, mut config) = self_signed();
    config.request_timeout = Duration::from_secs(60);
    config.drain_timeout = Duration::from_millis(300);
    let handler = FakeHandler::new();
    let (server, stop) = start_server(config, handler.clone()).await;
    let ca = ca_of(&dir);
    let client = https_client(&[&ca], true);
    let addr = server.local_addr;
    let started = handler.started.notified();
    let stuck = tokio::spawn(async move { post_json(&client, addr, "/mutate", "hang").await });
    started.await;
    let t0 = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request is cut at the deadline"
    );
}

#[tokio::test]
async fn abusive_clients_are_cut_off_while_others_are_served() {
    let (dir, config) = self_signed();
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let ca = ca_of(&dir);
    let addr = server.local_addr;

    // Slowloris: request head one byte every 100 ms, never finished. header_read_timeout is 1 s.
    let slowloris = tokio::spawn({
        let ca = ca.clone();
        async move {
            let mut s = tls_connect(addr, &[&ca], HTTP1).await.unwrap();
            let t0 = Instant::now();
            let head = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            if cut_off_while_trickling(&mut s, head, Duration::from_millis(100)).await {
                return t0.elapsed();
            }
            panic!("slowloris connection never cut off");
        }
    });
    // Headers complete, body promised but never sent: 408 after body_read_timeout (1 s).
    let no_body = tokio::spawn({
        let ca = ca.clone();
        async move {
            let mut s = tls_connect(addr, &[&ca], HTTP1).await.unwrap();
            s.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                .await
                .unwrap();
            s.flush().await.unwrap();
            let t0 = Instant::now();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .expect("answer within 5 s")
                    .unwrap();
                assert!(n > 0, "closed without an answer");
                got.extend_from_slice(&buf[..n]);
            }
            (t0.elapsed(), String::from_utf8_lossy(&got).into_owned())
        }
    });
    // TLS done, then silence: closed by the HTTP/1 header timer (1 s).
    let idle = tokio::spawn({
        let ca = ca.clone();
        async move {
            let mut s = tls_connect(addr, &[&ca], HTTP1).await.unwrap();
            closed_within(&mut s, Duration::from_secs(3))
                .await
                .is_some()
        }
    });
    // TCP connected, no TLS handshake at all: closed by the handshake deadline (1 s).
    let no_handshake = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    });

    // Meanwhile a well-behaved client is served, each request quickly.
    let client = https_client(&[&ca], true);
    for _ in 0..10 {
        let t = Instant::now();
        let resp = post_json(&client, addr, "/validate", "{}").await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(t.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cut = slowloris.await.unwrap();
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_secs(4),
        "slowloris cut after {cut:?}"
    );
    let (after, answer) = no_body.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "{after:?}"
    );
    assert!(idle.await.unwrap(), "idle connection not closed");
    assert!(
        no_handshake.await.unwrap(),
        "connection without handshake not closed"
    );

    stop_server(server, stop).await;
}

/// An HTTP/2 client that keeps its connection busy with PINGs is never idle, so only the connection age ends it:
/// the server sends GOAWAY once the connection is `max_connection_age` (±10 %) old, and the connection closes. A
/// request on a fresh connection is then answered as usual.
#[tokio::test]
async fn connections_kept_busy_with_pings_end_at_the_maximum_age() {
    let (dir, mut config) = self_signed();
    // The idle timer is raised to request_timeout + 1 s = 4 s; the age is shorter, so a close before 4 s can only be
    // the age's, and the PINGs keep the connection from being idle anyway.
    config.max_connection_age = Duration::from_secs(2);
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let ca = ca_of(&dir);
    let addr = server.local_addr;

    let h2 = tls_connect(addr, &[&ca], &[b"h2"]).await.unwrap();
    let t0 = Instant::now();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(h2))
            .await
            .unwrap();
    let closed = tokio::spawn(async move {
        let result = conn.await;
        (t0.elapsed(), result.is_ok())
    });
    let req = || empty_review(addr);
    assert_eq!(sender.send_request(req()).await.unwrap().status(), 200);
    let (lived, clean) = tokio::time::timeout(Duration::from_secs(6), closed)
        .await
        .expect("the connection ends")
        .unwrap();
    assert!(
        lived >= Duration::from_millis(1700) && lived < Duration::from_millis(3500),
        "lived {lived:?}"
    );
    assert!(clean, "GOAWAY, not a reset");
    assert!(
        sender.send_request(req()).await.is_err(),
        "closed for new requests"
    );

    let h2 = tls_connect(addr, &[&ca], &[b"h2"]).await.unwrap();
    let mut sender = h2_client(h2).await;
    assert_eq!(sender.send_request(req()).await.unwrap().status(), 200);
    stop_server(server, stop).await;
}

/// A request still in flight when its connection reaches the maximum age is answered: the connection is asked to
/// finish, and given at least the request deadline, even with `drain_timeout` 0.
#[tokio::test]
async fn a_request_in_flight_at_the_maximum_age_is_answered() {
    let (dir, mut config) = self_signed();
    config.max_connection_age = Duration::from_secs(1);
    config.drain_timeout = Duration::ZERO;
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let client = https_client(&[&ca_of(&dir)], true);
    let t0 = Instant::now();
    // The fake handler takes 1.5 s for a "slow" body: the age (0.9 to 1.1 s) passes while it works.
    let resp = post_json(&client, server.local_addr, "/mutate", "slow")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    // The connection closed after it; the next request goes over a new one and is answered too.
    let resp = post_json(&client, server.local_addr, "/mutate", "{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    stop_server(server, stop).await;
}

/// Send `GET /healthz` on an open HTTP/1.1 connection and read its whole answer (the body is `ok`).
async fn healthz_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    s.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("the connection is open");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The API server talks HTTP/1.1 to webhooks and keeps an unused connection for 90 s; it does not retry a POST
/// written on a connection the server closes at that moment. A keep-alive connection left unused longer than the
/// header deadline (1 s here) is kept, bounded by the idle timeout alone; past its maximum age an idle connection is
/// retired at its next request, which is answered (with `Connection: close`), not closed under the client.
#[tokio::test]
async fn keep_alive_connections_are_kept_between_requests_and_retired_at_a_request() {
    let (dir, mut config) = self_signed();
    config.max_connection_age = Duration::from_secs(4);
    config.idle_timeout = Duration::from_secs(10);
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let ca = ca_of(&dir);
    let mut s = tls_connect(server.local_addr, &[&ca], HTTP1).await.unwrap();
    let t0 = Instant::now();
    assert!(healthz_on(&mut s).await.starts_with("HTTP/1.1 200"));
    // Unused for 1.5 s: more than the 1 s header deadline, well inside the 10 s idle timeout and the ~4 s age.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(healthz_on(&mut s).await.starts_with("HTTP/1.1 200"));
    // Past the age (3.6 to 4.4 s) and idle: still open, and the next request is answered, with Connection: close.
    tokio::time::sleep(Duration::from_millis(5000).saturating_sub(t0.elapsed())).await;
    let last = healthz_on(&mut s).await;
    assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    assert!(
        last.to_ascii_lowercase().contains("connection: close"),
        "{last}"
    );
    assert!(
        closed_within(&mut s, Duration::from_secs(2))
            .await
            .is_some()
    );
    stop_server(server, stop).await;
}

/// The probe and metrics port closes an idle connection as soon as it is past its maximum age (its GET clients retry
/// on a new one): it does not wait for a next request the way the webhook port does, so connections past their age
/// cannot keep its slots from the kubelet's probes.
#[tokio::test]
async fn the_probe_port_closes_idle_connections_at_their_age() {
    let (_dir, mut config) = self_signed();
    config.max_connection_age = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(30);
    let (server, stop) = start_server(config, FakeHandler::new()).await;
    let mut s = TcpStream::connect(server.metrics_addr.unwrap())
        .await
        .unwrap();
    assert!(healthz_on(&mut s).await.starts_with("HTTP/1.1 200"));
    // Age 0.9 to 1.1 s; the idle timeout (30 s) and the head deadline (not running between requests) play no part.
    assert!(
        closed_within(&mut s, Duration::from_secs(4))
            .await
            .is_some(),
        "an idle probe-port connection past its age stayed open"
    );
    stop_server(server, stop).await;
}
