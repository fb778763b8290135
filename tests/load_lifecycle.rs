//! The real binary under load through its lifecycle events: certificate rotation by a Kubernetes-style `..data`
//! symlink swap in the middle of the load (zero failed requests, new handshakes get the new certificate), and
//! SIGTERM in the middle of the load (every request already accepted completes, and so does one sent after the
//! listener closed on a keep-alive connection accepted before; the process exits 0 within
//! `--shutdown-delay` + `--drain-timeout`; a request that would outlast the drain deadline does not hold the exit).

mod load_support;
mod secret_volume;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use capi_calico_webhook::server::tls::generate_self_signed;
use load_support::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secret_volume::publish;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn served_leaf(addr: std::net::SocketAddr, cas: &[String]) -> Vec<u8> {
    let s = tls_connect(addr, cas, HTTP1).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

async fn wait_for_leaf(addr: std::net::SocketAddr, cas: &[String], want: &[u8], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_leaf(addr, cas).await != want {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let (_guard, dir) = tmp();
    let pairs: Vec<_> = (0..3)
        .map(|_| {
            generate_self_signed(&["localhost", "127.0.0.1"], Duration::from_secs(3600)).unwrap()
        })
        .collect();
    publish(
        &dir,
        "2026_01_01_00_00_00.1",
        &pairs[0].cert_pem,
        &pairs[0].key_pem,
    );
    let serve = Serve::start(&[
        "--no-cluster-lookup",
        "--tls-cert-file",
        path_str(&dir.join("tls.crt")),
        "--tls-key-file",
        path_str(&dir.join("tls.key")),
    ]);
    let addr = serve.addr;
    let cas: Vec<String> = pairs.iter().map(|p| p.ca_pem.clone()).collect();
    assert_eq!(served_leaf(addr, &cas).await, leaf(&pairs[0].cert_pem));

    // Keep-alive clients stay on connections opened with the old certificate; the others handshake per request
    // and so cross every swap.
    let running = Arc::new(AtomicBool::new(true));
    let mut clients: Vec<_> = (0..3).map(|_| https_client(&cas, true)).collect();
    clients.extend((0..3).map(|_| https_client(&cas, false)));
    let (tally, tasks) = spawn_load(clients, addr, running.clone(), Duration::from_millis(2));

    for (n, pair) in pairs.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = tally.ok();
        publish(
            &dir,
            &format!("2026_01_0{}_00_00_00.{}", n + 1, n + 1),
            &pair.cert_pem,
            &pair.key_pem,
        );
        wait_for_leaf(
            addr,
            &cas,
            &leaf(&pair.cert_pem),
            &format!("certificate {n}"),
        )
        .await;
        assert!(tally.ok() > before || n == 0, "no progress during swap {n}");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    running.store(false, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "rotation under load: {} ok, {} failed, slowest {} ms",
        tally.ok(),
        tally.failed(),
        tally.slowest_us.load(Ordering::SeqCst) / 1000
    );
    assert_eq!(tally.failed(), 0, "{:?}", tally.failures.lock().unwrap());
    assert!(tally.ok() > 100, "too few requests: {}", tally.ok());
    let (_, metrics) = http_get(serve.metrics.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(r#"capi_calico_tls_reloads_total{result="success"} 3"#),
        "{metrics}"
    );
}

/// Headers and the first half of a review body: the server has accepted the request and is reading its body.
async fn half_sent(
    addr: std::net::SocketAddr,
    ca: &[String],
    body: &[u8],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    usize,
) {
    let mut s = tls_connect(addr, ca, HTTP1).await.unwrap();
    s.write_all(review_head(body.len()).as_bytes())
        .await
        .unwrap();
    let half = body.len() / 2;
    s.write_all(&body[..half]).await.unwrap();
    s.flush().await.unwrap();
    (s, half)
}

/// The HTTP/1.1 head of a review of `len` bytes to /mutate.
fn review_head(len: usize) -> String {
    format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// The last answer on a connection being retired: 200 with the patch, and `Connection: close`.
fn assert_answered_and_closing(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""patchType":"JSONPatch""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// A whole review request on `s`.
async fn send_full(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, body: &[u8]) {
    s.write_all(review_head(body.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
}

async fn read_response(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no complete answer within 5 s: {}",
                String::from_utf8_lossy(&got)
            ),
        }
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_accepted_requests_and_exits_in_time() {
    let (_guard, dir) = tmp();
    let (delay, drain) = (Duration::from_millis(1000), Duration::from_secs(5));
    let mut serve = Serve::start(&[
        "--no-cluster-lookup",
        "--self-signed-dir",
        path_str(&dir),
        "--shutdown-delay",
        "1s",
        "--drain-timeout",
        "5s",
    ]);
    let ca = vec![read_ca(&dir)];
    let addr = serve.addr;
    let running = Arc::new(AtomicBool::new(true));
    let mut clients: Vec<_> = (0..4).map(|_| https_client(&ca, true)).collect();
    clients.extend((0..2).map(|_| https_client(&ca, false)));
    let (tally, tasks) = spawn_load(clients, addr, running.clone(), Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Three keep-alive connections that had one answer each and sit idle when the signal arrives.
    let body = fixture("kcp-inject.json");
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = tls_connect(addr, &ca, HTTP1).await.unwrap();
        send_full(&mut s, &body).await;
        let answer = read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        idle.push(s);
    }
    // Six requests in the middle of their body when the signal arrives.
    let mut in_flight = Vec::new();
    for _ in 0..6 {
        in_flight.push(half_sent(addr, &ca, &body).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    serve.sigterm();

    // During --shutdown-delay the server still serves (readiness false) while endpoints are updated: the load goes
    // on, with no failure.
    tokio::time::sleep(delay - Duration::from_millis(300)).await;
    let (ready, _) = http_get(serve.metrics.unwrap(), "/readyz").await;
    assert_eq!(ready, 503, "readiness must be false after SIGTERM");
    running.store(false, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(tally.failed(), 0, "{:?}", tally.failures.lock().unwrap());
    assert!(tally.ok() > 20, "too few requests: {}", tally.ok());

    // After the delay the listener is closed: new connections are refused...
    tokio::time::sleep(delay + Duration::from_millis(300) - t0.elapsed().min(delay)).await;
    let refused = tokio::net::TcpStream::connect(addr).await.is_err();
    // ...but the accepted requests finish.
    for (s, half) in &mut in_flight {
        s.write_all(&body[*half..]).await.unwrap();
        s.flush().await.unwrap();
    }
    for (s, _) in &mut in_flight {
        assert_answered_and_closing(&read_response(s).await);
    }
    // A request on a keep-alive connection accepted before the signal, sent after the listener closed, is answered
    // too, with `Connection: close`: such a connection is retired at its next request, not closed while idle (the
    // API server does not retry a POST on a connection closed under it).
    for s in &mut idle {
        send_full(s, &body).await;
        assert_answered_and_closing(&read_response(s).await);
    }
    let status = serve
        .wait_exit(delay + drain + Duration::from_secs(1) - t0.elapsed().min(delay + drain))
        .unwrap_or_else(|| panic!("did not exit within shutdown delay + drain timeout"));
    let exited = t0.elapsed();
    eprintln!(
        "sigterm: {} ok during the delay, exit {status:?} after {exited:?}",
        tally.ok()
    );
    assert!(status.success(), "{status:?}\n{}", serve.log_text());
    assert!(refused, "listener still accepting after the shutdown delay");
    // Nothing was left to wait for once the six answers were out.
    assert!(exited < delay + Duration::from_secs(2), "{exited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_bounds_exit_with_a_stuck_request() {
    let (_guard, dir) = tmp();
    let mut serve = Serve::start(&[
        "--no-cluster-lookup",
        "--self-signed-dir",
        path_str(&dir),
        "--drain-timeout",
        "1s",
    ]);
    let ca = vec![read_ca(&dir)];
    // Body never finished: the body timeout (3 s) is longer than the drain deadline (1 s).
    let body = fixture("kcp-inject.json");
    let (_stuck, _) = half_sent(serve.addr, &ca, &body).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    serve.sigterm();
    let status = serve
        .wait_exit(Duration::from_secs(3))
        .expect("exit within 3 s");
    let exited = t0.elapsed();
    eprintln!("drain deadline: exit {status:?} after {exited:?}");
    assert!(status.success(), "{status:?}");
    assert!(
        exited >= Duration::from_millis(900) && exited < Duration::from_millis(2500),
        "exited after {exited:?}, drain deadline 1 s"
    );
}
