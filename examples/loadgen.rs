//! A small HTTPS load generator for `scripts/bench.sh`: HTTP/1.1 keep-alive over rustls, `--connections` persistent
//! connections, POSTing the given AdmissionReview bodies round-robin.
//!
//! * `--rate N` (requests/s > 0): open loop. Request `i` is due at `start + i/N`; whichever connection is free takes
//!   the next due request. Latency is measured from the DUE time, not the send time, so a stall that delays
//!   later requests is counted in full (no coordinated omission). Due times come from a plain thread sleeping with
//!   `std::thread::sleep` (tokio's timer is only millisecond-precise).
//! * `--rate 0`: saturation. Every connection sends back to back; latency is the service time.
//!
//! * `--idle spin`: the load generator's thread never sleeps while the run lasts (a task that only yields keeps the
//!   runtime polling its sockets). By default (`--idle sleep`) it waits in `epoll_wait` like any client, and then
//!   each response the server writes must wake it, which on a small VM costs the *server* an inter-processor
//!   interrupt per write. Spinning takes that cost off the server's CPU: rows measured so tell the server's own
//!   cost per request.
//!
//! Latencies go into an HDR histogram (1 µs .. 60 s, 3 significant digits). The first `--warmup` seconds are sent
//! but not recorded. Prints one JSON line: `{"sent","ok","failed","seconds","throughput","p50_us","p99_us",
//! "p999_us","max_us"}`; `failed` counts transport errors and any status other than 200; `throughput` is the
//! successful responses that arrived between the end of the warm-up and the end of the run, per second.
//!
//! ```text
//! loadgen --url https://127.0.0.1:8443/mutate --ca DIR/ca.crt --body a.json --body b.json \
//!         [--rate 1000] [--duration 10] [--warmup 2] [--connections 16] [--idle sleep|spin]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    url: String,
    ca: PathBuf,
    bodies: Vec<PathBuf>,
    rate: u64,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    spin: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        ca: PathBuf::new(),
        bodies: Vec::new(),
        rate: 0,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        connections: 16,
        spin: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let secs = |v: &str| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage(v)));
        match flag.as_str() {
            "--url" => a.url = value,
            "--ca" => a.ca = value.into(),
            "--body" => a.bodies.push(value.into()),
            "--rate" => a.rate = value.parse().unwrap_or_else(|_| usage(&value)),
            "--duration" => a.duration = secs(&value),
            "--warmup" => a.warmup = secs(&value),
            "--connections" => a.connections = value.parse().unwrap_or_else(|_| usage(&value)),
            "--idle" => {
                a.spin = match value.as_str() {
                    "sleep" => false,
                    "spin" => true,
                    _ => usage(&format!("--idle {value}: sleep or spin")),
                }
            }
            _ => usage(&flag),
        }
    }
    if a.url.is_empty() || a.bodies.is_empty() || a.connections == 0 {
        usage("--url, --ca and at least one --body are required");
    }
    a
}

fn usage(what: &str) -> ! {
    eprintln!(
        "loadgen: {what}\nusage: loadgen --url https://HOST:PORT/PATH --ca CA.pem --body FILE [--body FILE ...] \
         [--rate N|0] [--duration S] [--warmup S] [--connections N] [--idle sleep|spin]"
    );
    std::process::exit(2);
}

struct Target {
    host: String,
    port: u16,
    path: String,
}

fn target(url: &str) -> Target {
    let rest = url
        .strip_prefix("https://")
        .unwrap_or_else(|| usage("the url must start with https://"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| usage("the url needs a port"));
    Target {
        host: host.to_string(),
        port: port.parse().unwrap_or_else(|_| usage(port)),
        path: if path.is_empty() { "/" } else { path }.to_string(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<&'static [u8]>>;

async fn connect(t: &Target, tls: &tokio_rustls::TlsConnector) -> std::io::Result<Sender> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(t.host.clone()).map_err(std::io::Error::other)?;
    let stream = tls.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

struct Shared {
    target: Target,
    tls: tokio_rustls::TlsConnector,
    bodies: Vec<&'static [u8]>,
    next: AtomicU64,
    record_from: Instant,
    end: Instant,
    /// Due times, produced by [`tickets`] (open loop only).
    tickets: Option<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>,
}

/// A plain thread hands out the due times `start + i * step`: `std::thread::sleep` is precise to tens of
/// microseconds, tokio's timer only to a millisecond (and latency counts from the due time).
fn tickets(
    start: Instant,
    end: Instant,
    step: Duration,
) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (start, end) = (start.into_std(), end.into_std());
    std::thread::spawn(move || {
        for i in 0u32.. {
            let due = start + step * i;
            if due >= end {
                break;
            }
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(Instant::from_std(due)).is_err() {
                break;
            }
        }
    });
    rx
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    failed: u64,
    /// Successful responses that arrived inside the recorded window (after the warm-up, before the end): the
    /// throughput. Counting by due time instead would only repeat the offered rate of an open loop that the server
    /// cannot keep up with.
    done_in_window: u64,
}

async fn worker(s: Arc<Shared>, mut sender: Option<Sender>) -> (Histogram<u64>, Tally) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut tally = Tally::default();
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        let due = match &s.tickets {
            // Open loop: the next due time from the ticket thread (in order, whichever worker is free).
            Some(tickets) => match tickets.lock().await.recv().await {
                Some(due) => due,
                None => break,
            },
            None => {
                let now = Instant::now();
                if now >= s.end {
                    break;
                }
                now
            }
        };
        let body = s.bodies[(i % s.bodies.len() as u64) as usize];
        tally.sent += 1;
        let ok = send(&s, &mut sender, body).await;
        let done = Instant::now();
        if ok && done >= s.record_from && done < s.end {
            tally.done_in_window += 1;
        }
        if due >= s.record_from {
            if ok {
                tally.ok += 1;
            } else {
                tally.failed += 1;
            }
            let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
            hist.saturating_record(micros.max(1));
        } else if !ok {
            tally.failed += 1;
        }
    }
    (hist, tally)
}

async fn send(s: &Shared, sender: &mut Option<Sender>, body: &'static [u8]) -> bool {
    if sender.as_ref().is_none_or(|c| c.is_closed()) {
        *sender = connect(&s.target, &s.tls).await.ok();
    }
    let Some(conn) = sender.as_mut() else {
        return false;
    };
    if conn.ready().await.is_err() {
        *sender = None;
        return false;
    }
    let req = hyper::Request::post(s.target.path.as_str())
        .header("host", s.target.host.as_str())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    match conn.send_request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let read = resp.into_body().collect().await.is_ok();
            read && status == hyper::StatusCode::OK
        }
        Err(_) => {
            *sender = None;
            false
        }
    }
}

fn main() {
    let args = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&args.ca).unwrap_or_else(|e| usage(&format!("--ca: {e}")));
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.unwrap_or_else(|e| usage(&format!("--ca: {e}"))))
            .unwrap_or_else(|e| usage(&format!("--ca: {e}")));
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let bodies: Vec<&'static [u8]> = args
        .bodies
        .iter()
        .map(|p| {
            let bytes =
                std::fs::read(p).unwrap_or_else(|e| usage(&format!("{}: {e}", p.display())));
            &*Box::leak(bytes.into_boxed_slice())
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (target, tls) = (
            target(&args.url),
            tokio_rustls::TlsConnector::from(Arc::new(config)),
        );
        // Open every connection (TLS handshake included) before the clock starts; each worker keeps its own.
        let mut senders = Vec::new();
        for _ in 0..args.connections {
            match connect(&target, &tls).await {
                Ok(s) => senders.push(s),
                Err(e) => usage(&format!("cannot connect: {e}")),
            }
        }
        let start = Instant::now() + Duration::from_millis(50);
        let shared = Arc::new(Shared {
            target,
            tls,
            bodies,
            next: AtomicU64::new(0),
            record_from: start + args.warmup,
            end: start + args.warmup + args.duration,
            tickets: (args.rate > 0).then(|| {
                let step = Duration::from_secs_f64(1.0 / args.rate as f64);
                tokio::sync::Mutex::new(tickets(start, start + args.warmup + args.duration, step))
            }),
        });
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|sender| tokio::spawn(worker(Arc::clone(&shared), Some(sender))))
            .collect();
        if args.spin {
            let end = shared.end;
            tokio::spawn(async move {
                while Instant::now() < end {
                    tokio::task::yield_now().await;
                }
            });
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let mut total = Tally::default();
        for t in tasks {
            let (h, tally) = t.await.expect("worker");
            hist.add(&h).expect("merge");
            total.sent += tally.sent;
            total.ok += tally.ok;
            total.failed += tally.failed;
            total.done_in_window += tally.done_in_window;
        }
        let seconds = args.duration.as_secs_f64();
        println!(
            "{{\"sent\":{},\"ok\":{},\"failed\":{},\"seconds\":{:.3},\"throughput\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
            total.sent,
            total.ok,
            total.failed,
            seconds,
            total.done_in_window as f64 / seconds,
            hist.value_at_quantile(0.50),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max(),
        );
    });
}
