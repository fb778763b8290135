//! Shared pieces of the load and fault tests: the real `capi-calico-webhook serve` as a child process on
//! 127.0.0.1 (port 0; the bound address is read from its start-up log), HTTPS clients, the review fixtures, RSS
//! from /proc, and a closed-loop load runner that counts every failure.
#![allow(dead_code)]

// The HTTPS and raw-TLS clients, shared with the in-process server tests.
#[path = "../tls_client/mod.rs"]
mod tls_client;
pub use tls_client::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `serve` child. Killed (SIGKILL) on drop if still running.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// Every stderr line (the JSON logs), for assertions and failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Start `serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json` plus `args`, and wait
    /// (at most 20 s) for the "serving admission reviews" line.
    pub fn start(args: &[&str]) -> Serve {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capi-calico-webhook"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(args)
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("serving admission reviews over HTTPS") {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start: {:?}", log.lock().unwrap());
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        // flatten_event: the fields are top-level keys.
        let fields = &v;
        let addr = fields["local_addr"]
            .as_str()
            .expect("local_addr")
            .parse()
            .expect("addr");
        let metrics = fields["metrics"]
            .as_str()
            .and_then(|m| m.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok());
        Serve {
            child,
            addr,
            metrics,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS")
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for the process to exit, at most `within`; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reviews")
            .join(name),
    )
    .expect("fixture")
}

/// The body (and what to expect) of the load mix.
#[derive(Clone)]
pub struct Shot {
    pub path: &'static str,
    pub body: Vec<u8>,
    /// `response.allowed` expected.
    pub allowed: bool,
    /// Whether a `patch` is expected.
    pub patched: bool,
}

/// The realistic mix: KCP/KCT first injection and already injected, Cluster valid/invalid, at both endpoints.
pub fn mix() -> Vec<Shot> {
    let s = |path, file, allowed, patched| Shot {
        path,
        body: fixture(file),
        allowed,
        patched,
    };
    vec![
        s("/mutate", "kcp-inject.json", true, true),
        s("/mutate", "kct-inject.json", true, true),
        s("/mutate", "cluster-valid.json", true, true),
        s("/mutate", "kcp-injected.json", true, false),
        s("/validate", "kcp-injected.json", true, false),
        s("/mutate", "kct-injected.json", true, false),
        s("/validate", "cluster-invalid.json", false, false),
        s("/mutate", "kcp-not-opted-in.json", true, false),
    ]
}

/// Counters of a load run.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub slowest_us: AtomicU64,
    pub failures: Mutex<Vec<String>>,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 10 {
            f.push(what);
        }
    }
}

/// Send one shot and check the answer: 200, the uid echoed, `allowed` and the patch as expected.
pub async fn shoot(client: &reqwest::Client, addr: SocketAddr, shot: &Shot) -> Result<(), String> {
    let resp = client
        .post(url(addr, shot.path))
        .header("content-type", "application/json")
        .body(shot.body.clone())
        .send()
        .await
        .map_err(|e| format!("{}: {e:?}", shot.path))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let r = &v["response"];
    if r["uid"] != "705ab4f5-6393-11e8-b7cc-42010a800002"
        || r["allowed"] != shot.allowed
        || r.get("patch").is_some() != shot.patched
    {
        return Err(format!("unexpected answer to {}: {text}", shot.path));
    }
    Ok(())
}

/// `clients` closed-loop workers sending the mix round-robin (each worker starting at a different shot) until
/// `running` turns false; `pause` between requests of one worker.
pub fn spawn_load(
    clients: Vec<reqwest::Client>,
    addr: SocketAddr,
    running: Arc<AtomicBool>,
    pause: Duration,
) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let shots = Arc::new(mix());
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let (tally, shots, running) = (tally.clone(), shots.clone(), running.clone());
            tokio::spawn(async move {
                let mut i = n;
                while running.load(Ordering::SeqCst) {
                    let shot = &shots[i % shots.len()];
                    i += 1;
                    let t = Instant::now();
                    match shoot(&client, addr, shot).await {
                        Ok(()) => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => tally.fail(e),
                    }
                    let us = t.elapsed().as_micros() as u64;
                    tally.slowest_us.fetch_max(us, Ordering::SeqCst);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    (tally, tasks)
}

/// The CA of a self-signed `serve` (`--self-signed-dir`).
pub fn read_ca(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    (dir, p)
}

/// GET over plain HTTP on the metrics port: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}
