//! Tests that EXECUTE the node scripts: install-calicoctl.sh against a local HTTP mirror on 127.0.0.1 (a tiny
//! std::net server thread), apply-bgp.sh with a stub calicoctl that records its calls, the constant commands, and
//! shellcheck. Needs bash and coreutils; curl is needed for the download cases and wget for the fallback case.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::tests::{peer, settings};
use super::*;
use crate::settings::Sha256Hex;

const FAKE_CALICOCTL: &str = "#!/bin/sh\necho 'fake calicoctl v3.31.7'\n";
const BASE_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A one-thread HTTP/1.1 server: answers request n with `responses[min(n, len-1)]`, records paths.
struct Mirror {
    port: u16,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(responses: Vec<(u16, Vec<u8>)>) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (h, p) = (hits.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                p.lock()
                    .unwrap()
                    .push(line.split(' ').nth(1).unwrap_or_default().to_string());
                let n = h.fetch_add(1, Ordering::SeqCst);
                let (code, body) = &responses[n.min(responses.len() - 1)];
                let head = format!(
                    "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    if *code == 200 { "OK" } else { "Error" },
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        Mirror { port, hits, paths }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_exec(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What the node writes for an injected file: its `files[]` entry as injected, decoded as cloud-init decodes it.
fn node_text(file: &InjectedFile) -> String {
    use base64::Engine as _;
    let entry = file.to_json();
    assert_eq!(entry["encoding"], "base64", "{}", file.path);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(entry["content"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Run with a timeout; the test fails rather than hangs.
fn run(mut cmd: Command, timeout: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// install-calicoctl.sh

struct Install {
    tmp: TempDir,
    bin: PathBuf,
    install_dir: PathBuf,
    log_dir: PathBuf,
    conf: PathBuf,
    script: PathBuf,
}

impl Install {
    /// `machine` is what the fake `uname -m` prints; the data file is the one desired() renders.
    fn new(port: u16, machine: &str, sha_amd64: Option<&str>, sha_arm64: Option<&str>) -> Install {
        let tmp = TempDir::new().unwrap();
        let bin = tmp.path().join("fakebin");
        let install_dir = tmp.path().join("usr/local/bin");
        let log_dir = tmp.path().join("var/log/capi-calico");
        std::fs::create_dir_all(&bin).unwrap();
        write_exec(&bin.join("uname"), &format!("#!/bin/sh\necho {machine}\n"));
        let mut s = settings(true, false);
        s.calicoctl.url_template =
            format!("http://127.0.0.1:{port}/{{version}}/calicoctl-linux-{{arch}}");
        s.calicoctl.sha256_amd64 = sha_amd64.map(|x| Sha256Hex(x.into()));
        s.calicoctl.sha256_arm64 = sha_arm64.map(|x| Sha256Hex(x.into()));
        let inj = desired(&s, Target::Workers).unwrap();
        let conf = tmp.path().join("calicoctl.conf");
        std::fs::write(&conf, node_text(inj.file(CALICOCTL_CONF_PATH).unwrap())).unwrap();
        let script = tmp.path().join("install-calicoctl.sh");
        write_exec(&script, &node_text(inj.file(INSTALL_SCRIPT_PATH).unwrap()));
        Install {
            tmp,
            bin,
            install_dir,
            log_dir,
            conf,
            script,
        }
    }

    fn command(&self, path: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .env_clear()
            .env("PATH", path)
            .env("CAPI_CALICO_CONF", &self.conf)
            .env("CAPI_CALICO_INSTALL_DIR", &self.install_dir)
            .env("CAPI_CALICO_LOG_DIR", &self.log_dir)
            .env("CAPI_CALICO_RETRY_SLEEP", "0");
        c
    }

    fn run(&self) -> Output {
        let path = format!("{}:{BASE_PATH}", self.bin.display());
        run(self.command(&path), Duration::from_secs(60)).0
    }

    fn target(&self) -> PathBuf {
        self.install_dir.join("calicoctl")
    }

    /// Files left in the install directory other than calicoctl (temporary files must be cleaned up).
    fn leftovers(&self) -> Vec<String> {
        match std::fs::read_dir(&self.install_dir) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "calicoctl")
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn assert_installed(inst: &Install) {
    let target = inst.target();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), FAKE_CALICOCTL);
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "mode {mode:o}");
    let out = Command::new(&target).output().unwrap();
    assert_eq!(text(&out.stdout), "fake calicoctl v3.31.7\n");
    assert_eq!(inst.leftovers(), Vec::<String>::new());
}

#[test]
fn install_success_amd64() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), Some(&"0".repeat(64)));
    let out = inst.run();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_installed(&inst);
    assert_eq!(mirror.hits(), 1);
    assert_eq!(
        mirror.paths.lock().unwrap().as_slice(),
        ["/v3.31.7/calicoctl-linux-amd64"]
    );
    let log = std::fs::read_to_string(inst.log_dir.join("install-calicoctl.log")).unwrap();
    assert!(log.contains("installed calicoctl v3.31.7 (amd64)"), "{log}");
    assert!(
        log.lines()
            .all(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.contains('T')),
        "timestamps: {log}"
    );
}

#[test]
fn install_success_arm64_uses_the_arm64_checksum() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "aarch64", Some(&"0".repeat(64)), Some(&sha));
    let out = inst.run();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_installed(&inst);
    assert_eq!(
        mirror.paths.lock().unwrap().as_slice(),
        ["/v3.31.7/calicoctl-linux-arm64"]
    );
}

#[test]
fn install_checksum_mismatch_fails_and_installs_nothing() {
    let expected = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let evil = b"#!/bin/sh\necho evil\n".to_vec();
    let actual = sha256_hex(&evil);
    let mirror = Mirror::start(vec![(200, evil)]);
    let inst = Install::new(mirror.port, "x86_64", Some(&expected), None);
    let out = inst.run();
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        err.contains(&format!("expected sha256 {expected}")),
        "{err}"
    );
    assert!(err.contains(&format!("got {actual}")), "{err}");
    assert!(!inst.target().exists());
    assert_eq!(inst.leftovers(), Vec::<String>::new());
    assert_eq!(mirror.hits(), 1, "a checksum mismatch is not retried");
}

#[test]
fn install_skips_download_when_already_installed() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let inst = Install::new(closed_port(), "x86_64", Some(&sha), None);
    std::fs::create_dir_all(&inst.install_dir).unwrap();
    write_exec(&inst.target(), FAKE_CALICOCTL);
    let before = std::fs::metadata(inst.target())
        .unwrap()
        .modified()
        .unwrap();
    let out = inst.run();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already installed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(inst.target())
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_installed(&inst);
}

#[test]
fn install_replaces_a_wrong_existing_binary() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    std::fs::create_dir_all(&inst.install_dir).unwrap();
    write_exec(&inst.target(), "#!/bin/sh\necho old version\n");
    let out = inst.run();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("replacing it"));
    assert_installed(&inst);
    assert_eq!(mirror.hits(), 1);
}

#[test]
fn install_retries_transient_failures() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![
        (500, b"boom".to_vec()),
        (500, b"boom".to_vec()),
        (200, FAKE_CALICOCTL.as_bytes().to_vec()),
    ]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let out = inst.run();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(mirror.hits(), 3);
    let err = text(&out.stderr);
    assert!(err.contains("(attempt 3/5)"), "{err}");
    assert_eq!(err.matches("download failed; retrying").count(), 2, "{err}");
    assert_installed(&inst);
}

#[test]
fn install_gives_up_after_bounded_attempts() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(503, b"unavailable".to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let mut cmd = inst.command(&format!("{}:{BASE_PATH}", inst.bin.display()));
    cmd.env("CAPI_CALICO_DOWNLOAD_ATTEMPTS", "3");
    let (out, _) = run(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("failed after 3 attempts"));
    assert_eq!(mirror.hits(), 3);
    assert!(!inst.target().exists());
    assert_eq!(inst.leftovers(), Vec::<String>::new());
}

#[test]
fn install_refuses_an_unknown_architecture() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "ppc64le", Some(&sha), Some(&sha));
    let out = inst.run();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("unsupported architecture 'ppc64le'"), "{err}");
    assert_eq!(mirror.hits(), 0);
    assert!(!inst.target().exists());
}

#[test]
fn install_refuses_an_arch_without_checksum() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "aarch64", Some(&sha), None);
    let out = inst.run();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("no SHA-256 for calicoctl v3.31.7 on arm64"),
        "{err}"
    );
    assert!(err.contains("CALICOCTL_SHA256_ARM64"), "{err}");
    assert_eq!(mirror.hits(), 0);
}

#[test]
fn install_never_evaluates_data_file_values() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let pwned = inst.tmp.path().join("pwned");
    // Hand-written hostile data file (desired() would refuse to render these values).
    let conf = format!(
        "version=v3.31.7$(touch${{IFS}}{p})\nurl_template=http://127.0.0.1:{port}/{{version}}/c-{{arch}}?`touch${{IFS}}{p}`&x=a=b\n\
         sha256_amd64={sha}\nunknown=$(touch${{IFS}}{p})\n",
        p = pwned.display(),
        port = mirror.port
    );
    std::fs::write(&inst.conf, conf).unwrap();
    let out = inst.run();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(!pwned.exists(), "a data-file value was executed");
    let paths = mirror.paths.lock().unwrap().clone();
    assert_eq!(paths.len(), 1);
    assert!(paths[0].starts_with("/v3.31.7$(touch"), "{paths:?}");
    assert!(
        paths[0].ends_with("&x=a=b"),
        "value kept everything after the first '=': {paths:?}"
    );
}

#[test]
fn install_rejects_a_malformed_data_file() {
    let inst = Install::new(closed_port(), "x86_64", Some(&"a".repeat(64)), None);
    std::fs::write(&inst.conf, "version v3.31.7\n").unwrap();
    let out = inst.run();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("malformed line"));
    std::fs::remove_file(&inst.conf).unwrap();
    let out = inst.run();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing or unreadable"));
}

/// A PATH directory holding only the named tools (symlinks), so curl can be hidden.
fn restricted_bin(dir: &Path, tools: &[&str]) -> Option<()> {
    for t in tools {
        let found = BASE_PATH
            .split(':')
            .map(|d| Path::new(d).join(t))
            .find(|p| p.is_file())?;
        std::os::unix::fs::symlink(found, dir.join(t)).ok()?;
    }
    Some(())
}

#[test]
fn install_falls_back_to_wget() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![
        (500, Vec::new()),
        (200, FAKE_CALICOCTL.as_bytes().to_vec()),
    ]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let tools = [
        "bash",
        "wget",
        "sha256sum",
        "cut",
        "mktemp",
        "chmod",
        "mv",
        "rm",
        "date",
        "mkdir",
        "touch",
        "tr",
        "sleep",
    ];
    if restricted_bin(&inst.bin, &tools).is_none() {
        eprintln!("NOTICE: install_falls_back_to_wget skipped: one of {tools:?} is not installed");
        return;
    }
    let out = run(
        inst.command(&inst.bin.display().to_string()),
        Duration::from_secs(60),
    )
    .0;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(mirror.hits(), 2);
    assert_installed(&inst);
}

// ---------------------------------------------------------------------------------------------------------------
// apply-bgp.sh

const STUB_CALICOCTL: &str = r#"#!/bin/bash
# Test stub: records every call; fails `get clusterinformation` and `apply` a configurable number of times.
set -eu
state="$STUB_STATE"
printf '%s|%s|%s\n' "${KUBECONFIG:-}" "${DATASTORE_TYPE:-}" "$*" >>"$state/calls"
bump() {
  n=0
  if [ -f "$state/$1" ]; then n="$(cat "$state/$1")"; fi
  n=$((n + 1))
  echo "$n" >"$state/$1"
  echo "$n"
}
case "$1" in
  get)
    n="$(bump get)"
    if [ "$n" -le "${STUB_GET_FAILURES:-0}" ]; then
      echo "connection is unauthorized: clusterinformations.crd.projectcalico.org \"default\" not found" >&2
      exit 1
    fi
    echo "NAME      CALICOVERSION"
    ;;
  apply)
    n="$(bump apply)"
    if [ "$n" -le "${STUB_APPLY_FAILURES:-0}" ]; then
      echo "failed to apply: the server is currently unable to handle the request" >&2
      exit 1
    fi
    echo "Successfully applied resources"
    ;;
  *) exit 2 ;;
esac
"#;

struct Apply {
    tmp: TempDir,
    bin: PathBuf,
    dir: PathBuf,
    state: PathBuf,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    script: PathBuf,
    peer_files: Vec<String>,
}

impl Apply {
    fn new(peers: usize) -> Apply {
        let tmp = TempDir::new().unwrap();
        let bin = tmp.path().join("fakebin");
        let dir = tmp.path().join("etc/capi-calico");
        let state = tmp.path().join("state");
        for d in [&bin, &dir, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        write_exec(&bin.join("calicoctl"), STUB_CALICOCTL);
        let mut s = settings(true, true);
        s.route_reflectors = (0..peers)
            .map(|i| {
                peer(
                    &format!("rr-{i:03}"),
                    serde_json::json!({"peerSelector": format!("route-reflector == 'true' && rack == 'rack-{i:04}-with-a-long-name'"),
                                       "nodeSelector": "!has(route-reflector)", "asNumber": 64513}),
                )
            })
            .collect();
        let inj = desired(&s, Target::ControlPlane).unwrap();
        let mut peer_files = Vec::new();
        for f in &inj.files {
            if f.path.starts_with("/etc/capi-calico/bgp") {
                let name = f.path.trim_start_matches(DIR);
                std::fs::write(dir.join(name), node_text(f)).unwrap();
                if name.starts_with("bgppeers") {
                    peer_files.push(dir.join(name).display().to_string());
                }
            }
        }
        let script = dir.join("apply-bgp.sh");
        write_exec(&script, &node_text(inj.file(APPLY_SCRIPT_PATH).unwrap()));
        let kubeconfig = tmp.path().join("admin.conf");
        std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
        let log_dir = tmp.path().join("log");
        Apply {
            tmp,
            bin,
            dir,
            state,
            kubeconfig,
            log_dir,
            script,
            peer_files,
        }
    }

    fn command(
        &self,
        deadline: u32,
        sleep: u32,
        get_failures: u32,
        apply_failures: u32,
    ) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .env_clear()
            .env("PATH", format!("{}:{BASE_PATH}", self.bin.display()))
            .env("CAPI_CALICO_DIR", &self.dir)
            .env("CAPI_CALICO_KUBECONFIG", &self.kubeconfig)
            .env("CAPI_CALICO_LOG_DIR", &self.log_dir)
            .env("CAPI_CALICO_DEADLINE_SECONDS", deadline.to_string())
            .env("CAPI_CALICO_RETRY_SLEEP", sleep.to_string())
            .env("CAPI_CALICO_CALICOCTL", self.bin.join("calicoctl"))
            .env("STUB_STATE", &self.state)
            .env("STUB_GET_FAILURES", get_failures.to_string())
            .env("STUB_APPLY_FAILURES", apply_failures.to_string());
        c
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn apply_waits_then_applies_peers_before_configuration() {
    let a = Apply::new(120);
    assert!(
        a.peer_files.len() >= 3,
        "want several peer files, got {:?}",
        a.peer_files
    );
    let (out, _) = run(a.command(120, 0, 3, 0), Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let kc = a.kubeconfig.display().to_string();
    let mut want: Vec<String> = (0..4)
        .map(|_| format!("{kc}|kubernetes|get clusterinformation default"))
        .collect();
    for f in &a.peer_files {
        want.push(format!("{kc}|kubernetes|apply -f {f}"));
    }
    want.push(format!(
        "{kc}|kubernetes|apply -f {}",
        a.dir.join("bgpconfiguration.yaml").display()
    ));
    assert_eq!(a.calls(), want);
    // The stub's complaint is logged, with timestamps, to stdout (the journal) and the log file.
    assert!(stdout.contains("not found"), "{stdout}");
    let log = std::fs::read_to_string(a.log_dir.join("apply-bgp.log")).unwrap();
    assert_eq!(log, stdout);
    assert!(
        log.lines()
            .all(|l| l.starts_with("20") && l.contains("T") && l.contains(" apply-bgp: ")),
        "{log}"
    );
    assert!(log.contains("done: BGPPeers applied, then BGPConfiguration default"));
}

#[test]
fn apply_retries_failed_applies_and_keeps_the_order() {
    let a = Apply::new(2);
    assert_eq!(a.peer_files.len(), 1);
    let (out, _) = run(a.command(120, 0, 0, 2), Duration::from_secs(60));
    assert!(out.status.success(), "stdout: {}", text(&out.stdout));
    let calls: Vec<String> = a
        .calls()
        .into_iter()
        .map(|c| c.rsplit('|').next().unwrap().to_string())
        .collect();
    let peers = format!("apply -f {}", a.peer_files[0]);
    let conf = format!("apply -f {}", a.dir.join("bgpconfiguration.yaml").display());
    assert_eq!(
        calls,
        vec![
            "get clusterinformation default".to_string(),
            peers.clone(),
            peers.clone(),
            peers,
            conf
        ]
    );
}

/// Only the pinned binary the installer verified is used: a calicoctl elsewhere on PATH (an image's own, say) is not.
#[test]
fn apply_uses_only_the_installed_calicoctl() {
    let a = Apply::new(1);
    let missing = a.tmp.path().join("not-installed/calicoctl");
    let mut cmd = a.command(2, 1, 0, 0);
    cmd.env("CAPI_CALICO_CALICOCTL", &missing);
    let (out, _) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}");
    assert!(
        stdout.contains(&format!(
            "calicoctl is not installed at {}",
            missing.display()
        )),
        "{stdout}"
    );
    assert!(
        a.calls().is_empty(),
        "the calicoctl on PATH ran: {:?}",
        a.calls()
    );
}

#[test]
fn apply_respects_the_deadline() {
    let a = Apply::new(2);
    let (out, elapsed) = run(a.command(3, 1, 1000, 0), Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}");
    assert!(
        stdout.contains("deadline of 3s passed while waiting for: Calico ready"),
        "{stdout}"
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "gave up too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "did not respect the deadline: {elapsed:?}"
    );
    let calls = a.calls();
    assert!(calls.len() >= 2, "it should have retried: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.ends_with("get clusterinformation default")),
        "applied without Calico: {calls:?}"
    );
}

#[test]
fn apply_waits_for_the_admin_kubeconfig() {
    let a = Apply::new(1);
    std::fs::remove_file(&a.kubeconfig).unwrap();
    let kubeconfig = a.kubeconfig.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(kubeconfig, "apiVersion: v1\n").unwrap();
    });
    let (out, elapsed) = run(a.command(60, 1, 0, 0), Duration::from_secs(60));
    writer.join().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    assert!(elapsed >= Duration::from_millis(1500));
    assert_eq!(
        a.calls().len(),
        3,
        "get, peers, configuration: {:?}",
        a.calls()
    );
}

#[test]
fn apply_times_out_without_kubeconfig_and_never_calls_calicoctl() {
    let a = Apply::new(1);
    std::fs::remove_file(&a.kubeconfig).unwrap();
    let (out, _) = run(a.command(1, 1, 0, 0), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(a.calls().is_empty());
}

#[test]
fn apply_refuses_missing_files() {
    let a = Apply::new(1);
    std::fs::remove_file(a.dir.join("bgpconfiguration.yaml")).unwrap();
    let (out, _) = run(a.command(10, 0, 0, 0), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("bgpconfiguration.yaml is missing"));
    assert!(a.calls().is_empty());
    let _ = &a.tmp;
}

// ---------------------------------------------------------------------------------------------------------------
// The constant commands

#[test]
fn apply_command_starts_a_transient_unit_without_blocking() {
    let tmp = TempDir::new().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = tmp.path().join("systemd-run.args");
    write_exec(
        &bin.join("systemd-run"),
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >{}\n",
            record.display()
        ),
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(APPLY_COMMAND)
        .env_clear()
        .env("PATH", format!("{}:{BASE_PATH}", bin.display()));
    let (out, _) = run(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let args = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        vec![
            "--no-block",
            "--unit=capi-calico-apply-bgp",
            "--description=capi-calico: apply BGPPeers then BGPConfiguration",
            "/bin/bash",
            "/etc/capi-calico/apply-bgp.sh"
        ]
    );
}

#[test]
fn apply_command_falls_back_without_systemd_run() {
    let tmp = TempDir::new().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    if restricted_bin(&bin, &["nohup", "setsid"]).is_none() {
        eprintln!(
            "NOTICE: apply_command_falls_back_without_systemd_run skipped: nohup or setsid missing"
        );
        return;
    }
    // PATH has no systemd-run: the script is started detached; the command returns at once and succeeds.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(APPLY_COMMAND)
        .env_clear()
        .env("PATH", bin.display().to_string());
    let (out, elapsed) = run(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(elapsed < Duration::from_secs(5));
}

#[test]
fn commands_parse_as_sh_and_bash() {
    for shell in ["sh", "bash"] {
        for c in [INSTALL_COMMAND, APPLY_COMMAND] {
            let out = Command::new(shell)
                .arg("-n")
                .arg("-c")
                .arg(c)
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {c}: {}", text(&out.stderr));
        }
    }
}

#[test]
fn scripts_pass_shellcheck() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "NOTICE: shellcheck is not installed; the scripts were NOT linted (CI installs it)"
        );
        return;
    }
    let tmp = TempDir::new().unwrap();
    for (name, content) in [
        ("install-calicoctl.sh", INSTALL_SCRIPT.to_string()),
        ("apply-bgp.sh", APPLY_SCRIPT.to_string()),
        (
            "install-command.sh",
            format!("#!/bin/sh\n{INSTALL_COMMAND}\n"),
        ),
        ("apply-command.sh", format!("#!/bin/sh\n{APPLY_COMMAND}\n")),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        let out = Command::new("shellcheck")
            .arg("--severity=style")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck {name}:\n{}",
            text(&out.stdout)
        );
    }
}
