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

/// How the mirror delimits a response body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    /// `Content-Length` (what the installer's `--max-filesize` can see).
    Length,
    /// No length: the body ends when the connection closes (a dropped connection looks like a complete reply).
    Close,
    /// `Transfer-Encoding: chunked`, no length.
    Chunked,
}

/// A one-thread HTTP/1.1 server: answers request n with `responses[min(n, len-1)]`, records paths.
struct Mirror {
    port: u16,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(responses: Vec<(u16, Vec<u8>)>) -> Mirror {
        Mirror::start_framed(
            responses
                .into_iter()
                .map(|(code, body)| (code, body, Framing::Length))
                .collect(),
        )
    }

    fn start_framed(responses: Vec<(u16, Vec<u8>, Framing)>) -> Mirror {
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
                let (code, body, framing) = &responses[n.min(responses.len() - 1)];
                let length = match framing {
                    Framing::Length => format!("Content-Length: {}\r\n", body.len()),
                    Framing::Close => String::new(),
                    Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
                };
                let head = format!(
                    "HTTP/1.1 {code} {}\r\n{length}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    if *code == 200 { "OK" } else { "Error" },
                );
                let _ = stream.write_all(head.as_bytes());
                if *framing == Framing::Chunked {
                    // Stop at the first write error: the client gave up (as the installer does at its size limit).
                    for chunk in body.chunks(64 * 1024) {
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
                        if stream.write_all(&framed).is_err() {
                            break;
                        }
                    }
                    let _ = stream.write_all(b"0\r\n\r\n");
                } else {
                    let _ = stream.write_all(body);
                }
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
            // Never the machine's /usr/local/bin or /opt/bin, even if the override above were not honoured.
            .env(
                "CAPI_CALICO_INSTALL_DIRS",
                self.install_dir.display().to_string(),
            )
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

/// Amazon Linux 2 and RHEL 7 ship bash 4.2, which kept the quotes of a quoted `${url//pat/"rep"}` replacement: the
/// URL became `.../"v3.31.7"/calicoctl-linux-"amd64"` and every node failed to download. `BASH_COMPAT=42` makes
/// today's bash behave so.
#[test]
fn install_builds_the_url_the_same_under_bash_4_2() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let mut cmd = inst.command(&format!("{}:{BASE_PATH}", inst.bin.display()));
    cmd.env("BASH_COMPAT", "42");
    let out = run(cmd, Duration::from_secs(60)).0;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_installed(&inst);
    assert_eq!(
        mirror.paths.lock().unwrap().as_slice(),
        ["/v3.31.7/calicoctl-linux-amd64"]
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

/// A wrong file is a failed attempt like a failed download: retried within the attempts, then exit 4 naming both
/// digests. Nothing is installed.
#[test]
fn install_checksum_mismatch_is_retried_then_fails_and_installs_nothing() {
    let expected = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let evil = b"#!/bin/sh\necho evil\n".to_vec();
    let actual = sha256_hex(&evil);
    let mirror = Mirror::start(vec![(200, evil)]);
    let inst = Install::new(mirror.port, "x86_64", Some(&expected), None);
    let out = inst.run();
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("ERROR: checksum mismatch"), "{err}");
    assert!(
        last.contains(&format!("expected sha256 {expected}, got {actual}")),
        "{err}"
    );
    assert!(last.contains("on the last of 5 attempts"), "{err}");
    assert!(last.contains("calicoctl NOT installed"), "{err}");
    // Logged for each of the 5 attempts, then in the final error.
    assert_eq!(err.matches("checksum mismatch").count(), 6, "{err}");
    assert!(!inst.target().exists());
    assert_eq!(inst.leftovers(), Vec::<String>::new());
    assert_eq!(mirror.hits(), 5, "a checksum mismatch is a failed attempt");
}

/// A dropped connection on a reply without a length leaves a truncated file that curl reports as complete: the
/// checksum catches it and the next attempt gets the whole binary.
#[test]
fn install_retries_a_truncated_download() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let truncated = FAKE_CALICOCTL.as_bytes()[..12].to_vec();
    let mirror = Mirror::start_framed(vec![
        (200, truncated.clone(), Framing::Close),
        (200, FAKE_CALICOCTL.as_bytes().to_vec(), Framing::Close),
    ]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let out = inst.run();
    let err = text(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    assert_eq!(mirror.hits(), 2);
    assert_eq!(err.matches("checksum mismatch").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "got {} (a truncated or wrong file)",
            sha256_hex(&truncated)
        )),
        "{err}"
    );
    assert!(err.contains("attempt 1/5 failed; retrying"), "{err}");
    assert_installed(&inst);
}

/// The size limit holds for replies that declare no length (chunked), where curl's --max-filesize sees nothing,
/// and for ones that declare too large a length. The control run without the limit shows that the same reply is
/// downloaded whole otherwise (it then fails the checksum).
#[test]
fn install_bounds_the_download_size_with_curl() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let big = vec![b'x'; 4 << 20];
    for (framing, limit_kib, want_code) in [
        (Framing::Chunked, Some("256"), 5),
        (Framing::Length, Some("256"), 5),
        (Framing::Chunked, None, 4),
    ] {
        let mirror = Mirror::start_framed(vec![(200, big.clone(), framing)]);
        let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
        let mut cmd = inst.command(&format!("{}:{BASE_PATH}", inst.bin.display()));
        cmd.env("CAPI_CALICO_DOWNLOAD_ATTEMPTS", "2");
        if let Some(kib) = limit_kib {
            cmd.env("CAPI_CALICO_MAX_DOWNLOAD_KIB", kib);
        }
        let (out, _) = run(cmd, Duration::from_secs(60));
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(want_code),
            "{framing:?} {limit_kib:?}: {err}"
        );
        assert_eq!(mirror.hits(), 2, "{framing:?}: both attempts ran: {err}");
        if limit_kib.is_some() {
            assert_eq!(
                err.matches("larger than the size limit of 256 KiB").count(),
                2,
                "{framing:?}: {err}"
            );
            assert!(!err.contains("checksum mismatch"), "{framing:?}: {err}");
            assert!(
                err.contains("failed after 2 attempts"),
                "{framing:?}: {err}"
            );
        } else {
            assert!(err.contains(&format!("got {}", sha256_hex(&big))), "{err}");
        }
        assert!(!inst.target().exists());
        assert_eq!(inst.leftovers(), Vec::<String>::new());
    }
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
    assert_eq!(err.matches("failed (exit 22)").count(), 2, "{err}");
    assert_eq!(err.matches("failed; retrying").count(), 2, "{err}");
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

/// What install-calicoctl.sh needs with wget as its downloader (no curl, no timeout).
const WGET_TOOLS: [&str; 14] = [
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
    "wc",
];

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
    let tools = WGET_TOOLS;
    if restricted_bin(&inst.bin, &tools).is_none() {
        skipped(&format!(
            "install_falls_back_to_wget skipped: one of {tools:?} is not installed"
        ));
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

/// wget reads only the lower-case proxy variables; the installer passes the upper-case ones on, so a node whose
/// proxy is set as HTTP_PROXY (and HTTPS_PROXY) downloads through it with wget too.
#[test]
fn install_downloads_through_an_upper_case_proxy_with_wget() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    // The "proxy": it answers whatever URL it is asked for.
    let proxy = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(proxy.port, "x86_64", Some(&sha), None);
    // A mirror name that does not resolve: only the proxy reaches it.
    let conf = std::fs::read_to_string(&inst.conf)
        .unwrap()
        .replace(&format!("127.0.0.1:{}", proxy.port), "mirror.invalid");
    std::fs::write(&inst.conf, conf).unwrap();
    let tools = WGET_TOOLS;
    if restricted_bin(&inst.bin, &tools).is_none() {
        skipped(&format!(
            "install_downloads_through_an_upper_case_proxy_with_wget skipped: one of {tools:?} is not installed"
        ));
        return;
    }
    let mut cmd = inst.command(&inst.bin.display().to_string());
    cmd.env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port));
    let out = run(cmd, Duration::from_secs(60)).0;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_installed(&inst);
    let asked = proxy.paths.lock().unwrap().clone();
    assert_eq!(
        asked,
        ["http://mirror.invalid/v3.31.7/calicoctl-linux-amd64"]
    );
}

/// Where /usr/local/bin cannot be written (Flatcar: /usr is read-only), calicoctl goes to the next directory of the
/// list (/opt/bin on a node), and apply-bgp.sh looks for it there by the same rule.
#[test]
fn install_falls_back_to_a_writable_directory() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let path = format!("{}:{BASE_PATH}", inst.bin.display());
    let mut cmd = inst.command(&path);
    // A directory under a file cannot be created, whoever runs the test (root included).
    cmd.env_remove("CAPI_CALICO_INSTALL_DIR").env(
        "CAPI_CALICO_INSTALL_DIRS",
        format!("/dev/null/bin {}", inst.install_dir.display()),
    );
    let out = run(cmd, Duration::from_secs(60)).0;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_installed(&inst);
    assert!(
        text(&out.stderr).contains(&format!("at {}", inst.target().display())),
        "{}",
        text(&out.stderr)
    );
}

/// Of two directories that can both be written, the first is used (not simply the last of the list).
#[test]
fn install_uses_the_first_writable_directory() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start(vec![(200, FAKE_CALICOCTL.as_bytes().to_vec())]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let second = inst.tmp.path().join("opt/bin");
    let path = format!("{}:{BASE_PATH}", inst.bin.display());
    let mut cmd = inst.command(&path);
    cmd.env_remove("CAPI_CALICO_INSTALL_DIR").env(
        "CAPI_CALICO_INSTALL_DIRS",
        format!("{} {}", inst.install_dir.display(), second.display()),
    );
    let out = run(cmd, Duration::from_secs(60)).0;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_installed(&inst);
    assert!(!second.join("calicoctl").exists());
}

/// Both scripts try the same directories by default, those of the two paths the webhook reserves.
#[test]
fn both_scripts_default_to_the_reserved_calicoctl_directories() {
    let dir_of = |p: &str| {
        p.rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default()
    };
    let want = format!(
        "${{CAPI_CALICO_INSTALL_DIRS:-{} {}}}",
        dir_of(crate::mutation::CALICOCTL_BINARY_PATH),
        dir_of(crate::mutation::CALICOCTL_FALLBACK_PATH)
    );
    for script in [
        include_str!("scripts/install-calicoctl.sh"),
        include_str!("scripts/apply-bgp.sh"),
    ] {
        assert!(script.contains(&want), "{want} not in a script");
    }
    assert!(
        include_str!("scripts/capi-calico-apply-bgp.service")
            .contains("EnvironmentFile=-/etc/environment")
    );
}

/// wget has no size option at all: the same file size limit bounds it.
#[test]
fn install_bounds_the_download_size_with_wget() {
    let sha = sha256_hex(FAKE_CALICOCTL.as_bytes());
    let mirror = Mirror::start_framed(vec![(200, vec![b'x'; 4 << 20], Framing::Close)]);
    let inst = Install::new(mirror.port, "x86_64", Some(&sha), None);
    let tools = WGET_TOOLS;
    if restricted_bin(&inst.bin, &tools).is_none() {
        skipped(&format!(
            "install_bounds_the_download_size_with_wget skipped: one of {tools:?} is not installed"
        ));
        return;
    }
    let mut cmd = inst.command(&inst.bin.display().to_string());
    cmd.env("CAPI_CALICO_DOWNLOAD_ATTEMPTS", "2")
        .env("CAPI_CALICO_MAX_DOWNLOAD_KIB", "256");
    let (out, _) = run(cmd, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert_eq!(mirror.hits(), 2, "{err}");
    assert_eq!(
        err.matches("larger than the size limit of 256 KiB").count(),
        2,
        "{err}"
    );
    assert!(!err.contains("checksum mismatch"), "{err}");
    assert!(!inst.target().exists());
    assert_eq!(inst.leftovers(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------------------------
// apply-bgp.sh

const STUB_CALICOCTL: &str = r##"#!/bin/bash
# Test stub: a tiny fake Calico datastore. Records every call (a line in calls; the arguments of call n,
# NUL-separated, in args.n) and keeps BGPConfiguration "default" in $STUB_STATE/bgpconfiguration. Fails
# `get clusterinformation`, `get bgpconfiguration` (with an API error, not "does not exist") and `apply` a
# configurable number of times; the first STUB_HANG_CALLS calls hang. Messages as calicoctl's own.
set -eu
state="$STUB_STATE"
printf '%s|%s|%s\n' "${KUBECONFIG:-}" "${DATASTORE_TYPE:-}" "$*" >>"$state/calls"
[ -z "${HTTPS_PROXY:-}${https_proxy:-}${HTTP_PROXY:-}${http_proxy:-}" ] || echo "$*" >>"$state/proxied"
bump() {
  n=0
  if [ -f "$state/$1" ]; then n="$(<"$state/$1")"; fi
  n=$((n + 1))
  echo "$n" >"$state/$1"
  echo "$n"
}
call="$(bump call)"
printf '%s\0' "$@" >"$state/args.$call"
if [ "$call" -le "${STUB_HANG_CALLS:-0}" ]; then
  sleep 1000
fi
case "$1 ${2:-}" in
  "get clusterinformation")
    n="$(bump get)"
    if [ "$n" -le "${STUB_GET_FAILURES:-0}" ]; then
      echo "connection is unauthorized: clusterinformations.crd.projectcalico.org \"default\" not found" >&2
      exit 1
    fi
    echo "NAME      CALICOVERSION"
    ;;
  "get bgpconfiguration")
    n="$(bump getconf)"
    if [ "$n" -le "${STUB_GETCONF_FAILURES:-0}" ]; then
      echo "Failed to get resources: Get \"https://192.0.2.1:6443/apis/crd.projectcalico.org/v1/bgpconfigurations/default\": dial tcp 192.0.2.1:6443: connect: connection refused" >&2
      exit 1
    fi
    if [ ! -f "$state/bgpconfiguration" ]; then
      echo "resource does not exist: BGPConfiguration(default) with error: bgpconfigurations.crd.projectcalico.org \"default\" not found" >&2
      exit 1
    fi
    echo "NAME      LOGSEVERITY   MESHENABLED   ASNUMBER"
    echo "default                 true          -"
    ;;
  "create -f")
    if [ -n "${STUB_CREATE_RACE:-}" ] && [ ! -f "$state/raced" ]; then
      # Another control-plane machine creates it between our get and our create.
      : >"$state/raced"
      echo 'created by another machine' >"$state/bgpconfiguration"
    fi
    if [ -f "$state/bgpconfiguration" ]; then
      echo "Failed to create 'BGPConfiguration' resource: [resource already exists: BGPConfiguration(default)]" >&2
      exit 1
    fi
    printf '%s\n' "$(<"$3")" >"$state/bgpconfiguration"
    echo "Successfully created 1 'BGPConfiguration' resource(s)"
    ;;
  "patch bgpconfiguration")
    if [ ! -f "$state/bgpconfiguration" ]; then
      echo "Hit error: resource does not exist: BGPConfiguration(default) with error: not found" >&2
      exit 1
    fi
    printf '%s' "$5" >"$state/patch"
    echo "Successfully patched 1 'BGPConfiguration' resource"
    ;;
  "apply -f")
    n="$(bump apply)"
    if [ "$n" -le "${STUB_APPLY_FAILURES:-0}" ]; then
      echo "failed to apply: the server is currently unable to handle the request" >&2
      exit 1
    fi
    echo "Successfully applied resources"
    ;;
  *)
    echo "stub: unexpected call: $*" >&2
    exit 2
    ;;
esac
"##;

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
            // Never the machine's /var/lib/capi-calico: a recorded digest would make later runs exit at once.
            .env("CAPI_CALICO_STATE_DIR", self.tmp.path().join("var-lib"))
            .env("CAPI_CALICO_DEADLINE_SECONDS", deadline.to_string())
            .env("CAPI_CALICO_RETRY_SLEEP", sleep.to_string())
            .env("CAPI_CALICO_CALICOCTL", self.bin.join("calicoctl"))
            .env("CAPI_CALICO_INSTALL_DIRS", self.bin.display().to_string())
            .env("STUB_STATE", &self.state)
            .env("STUB_GET_FAILURES", get_failures.to_string())
            .env("STUB_APPLY_FAILURES", apply_failures.to_string());
        c
    }

    /// `cmd` with the installer and its data file on the machine (downloading from `port` on 127.0.0.1, with these
    /// checksums) and no calicoctl installed yet: the apply has to run the installer.
    fn with_installer(
        &self,
        mut cmd: Command,
        port: u16,
        sha_amd64: Option<&str>,
        sha_arm64: &str,
    ) -> Command {
        let mut s = settings(true, true);
        s.calicoctl.url_template =
            format!("http://127.0.0.1:{port}/{{version}}/calicoctl-linux-{{arch}}");
        s.calicoctl.sha256_amd64 = sha_amd64.map(|x| Sha256Hex(x.into()));
        s.calicoctl.sha256_arm64 = Some(Sha256Hex(sha_arm64.into()));
        let inj = desired(&s, Target::ControlPlane).unwrap();
        for path in [INSTALL_SCRIPT_PATH, CALICOCTL_CONF_PATH] {
            let name = path.trim_start_matches(DIR);
            std::fs::write(self.dir.join(name), node_text(inj.file(path).unwrap())).unwrap();
        }
        let install_dir = self.tmp.path().join("usr/local/bin");
        cmd.env("CAPI_CALICO_CALICOCTL", install_dir.join("calicoctl"))
            .env("CAPI_CALICO_INSTALL_DIR", &install_dir)
            .env("CAPI_CALICO_CONF", self.dir.join("calicoctl.conf"));
        cmd
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The calls without the environment part: `get clusterinformation default`, `apply -f ...`, ...
    fn verbs(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|c| c.rsplit('|').next().unwrap().to_string())
            .collect()
    }

    /// The argument vector of the `n`-th call (1-based), exactly as calicoctl received it.
    fn args(&self, n: usize) -> Vec<String> {
        let raw = std::fs::read(self.state.join(format!("args.{n}"))).unwrap();
        let mut v: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8(a.to_vec()).unwrap())
            .collect();
        assert_eq!(v.pop().as_deref(), Some(""), "NUL-terminated");
        v
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("bgpconfiguration.yaml")
    }

    /// The BGPConfiguration data file as desired() renders it for the node.
    fn conf_text(&self) -> String {
        std::fs::read_to_string(self.conf_path()).unwrap()
    }

    /// What the stub's datastore holds as BGPConfiguration "default", if anything.
    fn stored_configuration(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("bgpconfiguration")).ok()
    }
}

fn bgp_configuration_tail(a: &Apply) -> [String; 2] {
    [
        "get bgpconfiguration default".to_string(),
        format!("create -f {}", a.conf_path().display()),
    ]
}

/// The calls of a run that succeeds at once with one peers file: Calico answers, the peers, then the
/// BGPConfiguration created.
fn one_successful_pass(a: &Apply) -> Vec<String> {
    let [get, create] = bgp_configuration_tail(a);
    vec![
        "get clusterinformation default".to_string(),
        format!("apply -f {}", a.peer_files[0]),
        get,
        create,
    ]
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
    for c in bgp_configuration_tail(&a) {
        want.push(format!("{kc}|kubernetes|{c}"));
    }
    assert_eq!(a.calls(), want);
    // Not there yet: created from the data file, as rendered.
    assert_eq!(a.stored_configuration().unwrap(), a.conf_text());
    assert!(
        stdout.contains("BGPConfiguration default does not exist: creating it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Successfully created 1 'BGPConfiguration' resource(s)"),
        "{stdout}"
    );
    // The stub's complaint is logged, with timestamps, to stdout (the journal) and the log file.
    assert!(stdout.contains("not found"), "{stdout}");
    let log = std::fs::read_to_string(a.log_dir.join("apply-bgp.log")).unwrap();
    assert_eq!(log, stdout);
    assert!(
        log.lines()
            .all(|l| l.starts_with("20") && l.contains("T") && l.contains(" apply-bgp: ")),
        "{log}"
    );
    assert!(
        log.contains("done: BGPPeers applied, then BGPConfiguration default created or patched")
    );
}

#[test]
fn apply_retries_failed_applies_and_keeps_the_order() {
    let a = Apply::new(2);
    assert_eq!(a.peer_files.len(), 1);
    let (out, _) = run(a.command(120, 0, 0, 2), Duration::from_secs(60));
    assert!(out.status.success(), "stdout: {}", text(&out.stdout));
    let peers = format!("apply -f {}", a.peer_files[0]);
    let [get, create] = bgp_configuration_tail(&a);
    assert_eq!(
        a.verbs(),
        vec![
            "get clusterinformation default".to_string(),
            peers.clone(),
            peers.clone(),
            peers,
            get,
            create
        ]
    );
}

/// An existing BGPConfiguration "default" is patched, never applied (which would replace it and drop every field an
/// operator set): one `--patch` argument, the data file's JSON verbatim, holding nothing but our fields.
#[test]
fn apply_patches_an_existing_bgp_configuration() {
    let a = Apply::new(1);
    let operators = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
                     spec:\n  listenPort: 1790\n  serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n";
    std::fs::write(a.state.join("bgpconfiguration"), operators).unwrap();
    let (out, _) = run(a.command(60, 0, 0, 0), Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let verbs = a.verbs();
    assert_eq!(verbs.len(), 4, "{verbs:?}");
    assert_eq!(verbs[2], "get bgpconfiguration default");
    assert!(
        verbs
            .iter()
            .all(|v| !v.starts_with("create") && !v.contains("bgpconfiguration.yaml")),
        "created or applied over an existing BGPConfiguration: {verbs:?}"
    );
    let patch_args = a.args(4);
    let conf = a.conf_text();
    assert_eq!(
        patch_args,
        vec![
            "patch",
            "bgpconfiguration",
            "default",
            "--patch",
            conf.trim_end_matches('\n')
        ]
    );
    // calicoctl's patch is a strategic merge patch that must be JSON: only spec.asNumber and
    // spec.nodeToNodeMeshEnabled differ from what is stored (apiVersion, kind and the name are the stored ones).
    let patch: serde_json::Value = serde_json::from_str(&patch_args[4]).unwrap();
    assert_eq!(
        patch,
        serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": false}
        })
    );
    assert_eq!(
        std::fs::read_to_string(a.state.join("patch")).unwrap(),
        patch_args[4]
    );
    assert_eq!(a.stored_configuration().unwrap(), operators);
    assert!(
        stdout.contains("BGPConfiguration default exists: patching only the fields set in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Successfully patched 1 'BGPConfiguration' resource"),
        "{stdout}"
    );
}

/// Only calicoctl's "resource does not exist" means "create": any other failure of the get (API server not
/// answering) is retried, and nothing is created meanwhile.
#[test]
fn apply_creates_the_bgp_configuration_only_when_it_does_not_exist() {
    let a = Apply::new(1);
    let mut cmd = a.command(60, 0, 0, 0);
    cmd.env("STUB_GETCONF_FAILURES", "2");
    let (out, _) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let [get, create] = bgp_configuration_tail(&a);
    assert_eq!(&a.verbs()[2..], [get.clone(), get.clone(), get, create]);
    assert_eq!(stdout.matches("connection refused").count(), 2, "{stdout}");
    assert!(
        stdout.contains("(attempt 3): BGPConfiguration default does not exist: creating it"),
        "{stdout}"
    );
}

/// Two control-plane machines creating it at once: the one that loses gets "already exists" and patches on its
/// next attempt.
#[test]
fn apply_patches_after_losing_the_create_race() {
    let a = Apply::new(1);
    let mut cmd = a.command(60, 0, 0, 0);
    cmd.env("STUB_CREATE_RACE", "1");
    let (out, _) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let [get, create] = bgp_configuration_tail(&a);
    let verbs = a.verbs();
    assert_eq!(verbs[2..5], [get.clone(), create, get]);
    assert!(
        verbs[5].starts_with("patch bgpconfiguration default --patch {"),
        "{verbs:?}"
    );
    assert_eq!(verbs.len(), 6, "{verbs:?}");
    assert!(
        stdout.contains("resource already exists: BGPConfiguration(default)"),
        "{stdout}"
    );
    assert!(stdout.contains("the next attempt patches it"), "{stdout}");
    assert_eq!(
        a.stored_configuration().unwrap(),
        "created by another machine\n"
    );
}

/// Only the pinned binary the installer verified is used: a calicoctl elsewhere on PATH (an image's own, say) is not.
#[test]
fn apply_uses_only_the_installed_calicoctl() {
    let a = Apply::new(1);
    let missing = a.tmp.path().join("not-installed/calicoctl");
    let mut cmd = a.command(60, 1, 0, 0);
    cmd.env("CAPI_CALICO_CALICOCTL", &missing);
    let (out, elapsed) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    // No installer on the machine either: exit code 2 at once, which the unit does not restart
    // (RestartPreventExitStatus).
    assert_eq!(out.status.code(), Some(2), "stdout: {stdout}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
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

/// The pre command's install failed (say the mirror was unreachable at first boot): the apply runs the installer on
/// the machine itself, retried like every other step, and goes on with the binary it verified. Before, it exited 2,
/// which the unit does not restart: the cluster kept the node-to-node mesh and no peers, with one log line on a node.
#[test]
fn apply_installs_calicoctl_when_the_pre_command_could_not() {
    let a = Apply::new(1);
    let stub = STUB_CALICOCTL.as_bytes().to_vec();
    // The first run of the installer fails (one attempt of its own), the second gets the binary.
    let mirror = Mirror::start(vec![(503, b"busy".to_vec()), (200, stub.clone())]);
    let sha = sha256_hex(&stub);
    let mut cmd = a.with_installer(a.command(60, 0, 0, 0), mirror.port, Some(&sha), &sha);
    cmd.env("CAPI_CALICO_DOWNLOAD_ATTEMPTS", "1");
    let (out, _) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}");
    assert_eq!(mirror.hits(), 2, "{stdout}");
    assert!(
        stdout.contains("install calicoctl at") && stdout.contains("not yet (attempt 1)"),
        "{stdout}"
    );
    // The installed binary (the recording stub) did the whole pass.
    let want: Vec<String> = one_successful_pass(&a);
    assert_eq!(a.verbs(), want);
}

/// apply-bgp.sh looks for calicoctl by the installer's rule: in the first directory of the list it can write (here
/// the first cannot be created, as /usr/local/bin on Flatcar), without being told the path.
#[test]
fn apply_finds_calicoctl_in_the_first_writable_directory() {
    let a = Apply::new(1);
    let mut cmd = a.command(60, 0, 0, 0);
    cmd.env_remove("CAPI_CALICO_CALICOCTL").env(
        "CAPI_CALICO_INSTALL_DIRS",
        format!("/dev/null/bin {}", a.bin.display()),
    );
    let (out, _) = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stdout));
    // The recording stub in that directory did the pass.
    assert_eq!(a.verbs(), one_successful_pass(&a));
}

/// The unit's environment may carry a proxy for the installer's download (/etc/environment); calicoctl talks to the
/// API server directly, without it (a NO_PROXY that misses the control-plane endpoint would send it to the proxy).
#[test]
fn apply_runs_calicoctl_without_the_proxy() {
    let a = Apply::new(1);
    let mut cmd = a.command(60, 0, 0, 0);
    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        cmd.env(var, "http://proxy.invalid:3128");
    }
    let (out, _) = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(a.verbs(), one_successful_pass(&a));
    assert!(
        !a.state.join("proxied").exists(),
        "calicoctl ran with a proxy: {:?}",
        std::fs::read_to_string(a.state.join("proxied"))
    );
}

/// A calicoctl already at the path that the installer did not verify (an image's own, of another version) is not
/// used: the apply runs the installer, which replaces it with the pinned one, and the pass uses that.
#[test]
fn apply_verifies_a_calicoctl_it_finds_at_the_path() {
    let a = Apply::new(1);
    let stub = STUB_CALICOCTL.as_bytes().to_vec();
    let mirror = Mirror::start(vec![(200, stub.clone())]);
    let sha = sha256_hex(&stub);
    let cmd = a.with_installer(a.command(60, 0, 0, 0), mirror.port, Some(&sha), &sha);
    let baked = a.tmp.path().join("usr/local/bin/calicoctl");
    std::fs::create_dir_all(baked.parent().unwrap()).unwrap();
    write_exec(
        &baked,
        "#!/bin/sh\necho 'Client Version: v3.26.4'\nexit 1\n",
    );
    let (out, _) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}");
    assert_eq!(mirror.hits(), 1, "{stdout}");
    assert_eq!(std::fs::read(&baked).unwrap(), stub);
    assert_eq!(a.verbs(), one_successful_pass(&a));
}

/// An install that no later run can fix (here: no checksum for this machine's architecture, installer exit 3) ends
/// the apply with exit 2 at once, which the unit does not restart, with the installer's reason in the log; it is not
/// retried (and the binary downloaded again) until the deadline, every 35 minutes, for ever.
#[test]
fn apply_stops_at_an_install_that_cannot_succeed() {
    let a = Apply::new(1);
    let mirror = Mirror::start(vec![(200, b"unused".to_vec())]);
    // This machine is amd64 (the tests run there), and only an arm64 checksum is known.
    let cmd = a.with_installer(a.command(60, 1, 0, 0), mirror.port, None, &"ab".repeat(32));
    let (out, elapsed) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "stdout: {stdout}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(
        stdout.contains("installer exit 3")
            && stdout.contains("no SHA-256 for calicoctl")
            && stdout.contains("fix it, then: systemctl restart capi-calico-apply-bgp"),
        "{stdout}"
    );
    assert_eq!(mirror.hits(), 0, "nothing downloaded");
    assert!(a.calls().is_empty());
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

/// A calicoctl that never returns (a hung API connection) is stopped at the deadline: the script does not hang.
#[test]
fn apply_stops_a_hung_calicoctl_at_the_deadline() {
    let a = Apply::new(1);
    let mut cmd = a.command(3, 1, 0, 0);
    cmd.env("STUB_HANG_CALLS", "1000");
    let (out, elapsed) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        elapsed < Duration::from_secs(20),
        "a hung calicoctl outlasted the deadline: {elapsed:?}"
    );
    // The bound is the time left, in whole seconds, a few milliseconds after the start: 3, or 2 when a second
    // boundary falls in between.
    assert!(
        ["within 3s", "within 2s"]
            .iter()
            .any(|w| stdout.contains(&format!(
                "calicoctl get clusterinformation did not finish {w} and was stopped (exit 124)"
            ))),
        "{stdout}"
    );
    assert!(
        stdout.contains("deadline of 3s passed while waiting for: Calico ready"),
        "{stdout}"
    );
}

/// Each run is bounded by CAPI_CALICO_ATTEMPT_TIMEOUT too: a hung run is stopped and the next attempt goes on.
#[test]
fn apply_stops_a_hung_attempt_and_retries() {
    let a = Apply::new(1);
    let mut cmd = a.command(120, 0, 0, 0);
    cmd.env("STUB_HANG_CALLS", "2")
        .env("CAPI_CALICO_ATTEMPT_TIMEOUT", "1");
    let (out, elapsed) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    assert_eq!(
        stdout
            .matches("calicoctl get clusterinformation did not finish within 1s and was stopped")
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(a.verbs()[2..], one_successful_pass(&a));
}

/// Without coreutils' timeout the script still works, and says that runs are not bounded.
#[test]
fn apply_works_without_timeout() {
    let a = Apply::new(1);
    let tools = [
        "bash",
        "date",
        "mkdir",
        "touch",
        "tr",
        "cut",
        "sleep",
        "cat",
        "sha256sum",
        "grep",
        "wc",
    ];
    if restricted_bin(&a.bin, &tools).is_none() {
        skipped(&format!(
            "apply_works_without_timeout skipped: one of {tools:?} is not installed"
        ));
        return;
    }
    let mut cmd = a.command(60, 0, 1, 0);
    cmd.env("PATH", a.bin.display().to_string());
    let (out, _) = run(cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "WARNING: timeout (coreutils) not found: a hung calicoctl run is not stopped"
        ),
        "{stdout}"
    );
    assert_eq!(a.verbs()[1..], one_successful_pass(&a));
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
        4,
        "get, peers, get and create configuration: {:?}",
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

/// A fake `systemctl` (exit code `systemctl_rc`) and a fake `nohup` that record their arguments, then the constant
/// command: which of the two it ran, with which arguments.
fn run_apply_command(systemctl_rc: i32) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let tmp = TempDir::new().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let recorder = |name: &str, rc: i32| {
        let record = tmp.path().join(format!("{name}.args"));
        write_exec(
            &bin.join(name),
            &format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >{}.tmp\nmv {0}.tmp {0}\nexit {rc}\n",
                record.display()
            ),
        );
        record
    };
    let systemctl = recorder("systemctl", systemctl_rc);
    let nohup = recorder("nohup", 0);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(APPLY_COMMAND)
        .env_clear()
        .env("PATH", format!("{}:{BASE_PATH}", bin.display()));
    let (out, elapsed) = run(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The fallback runs in the background: give it a moment to write its record.
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while systemctl_rc != 0 && read(&nohup).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if systemctl_rc == 0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    (read(&systemctl), read(&nohup))
}

/// Cluster API's Ignition bootstrap writes the pre commands and kubeadm into one `set -e` script: a failed install
/// must not stop kubeadm (cloud-init's runcmd goes on anyway).
#[test]
fn install_command_never_stops_a_set_e_bootstrap() {
    let tmp = TempDir::new().unwrap();
    let failing = tmp.path().join("install-calicoctl.sh");
    write_exec(
        &failing,
        "#!/bin/bash\necho 'download failed' >&2\nexit 5\n",
    );
    let command = INSTALL_COMMAND.replace(INSTALL_SCRIPT_PATH, &failing.display().to_string());
    assert_ne!(
        command, INSTALL_COMMAND,
        "the command runs the installer at its path"
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -e\n{command}\necho kubeadm runs\n"))
        .env_clear()
        .env("PATH", BASE_PATH);
    let (out, _) = run(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "kubeadm runs\n");
    assert!(text(&out.stderr).contains("download failed"));
}

/// With systemd, the command enables and starts the persistent unit (`--no-block`: it returns at once) and starts
/// nothing else.
#[test]
fn apply_command_enables_and_starts_the_unit_without_blocking() {
    let (systemctl, nohup) = run_apply_command(0);
    assert_eq!(
        systemctl.expect("systemctl ran"),
        [
            "enable",
            "--now",
            "--no-block",
            "/etc/capi-calico/capi-calico-apply-bgp.service"
        ]
    );
    assert_eq!(nohup, None, "no detached run beside the unit");
    assert!(APPLY_COMMAND.contains(APPLY_UNIT_PATH));
}

/// Where systemctl fails (no systemd as PID 1, say), the script is started detached instead, and the command still
/// succeeds at once: the bootstrap is never blocked or failed by it.
#[test]
fn apply_command_falls_back_when_systemctl_fails() {
    let (systemctl, nohup) = run_apply_command(1);
    assert!(systemctl.is_some());
    assert_eq!(
        nohup.expect("the detached run"),
        ["setsid", "/bin/bash", "/etc/capi-calico/apply-bgp.sh"]
    );
}

/// The unit: runs the script, restarts it after a failure (not after exit code 2, which a restart cannot fix),
/// without a start limit, at boot, and stops it only a little after the script's own deadline and the kill-after of
/// its last calicoctl run, never before.
#[test]
fn apply_unit_restarts_failures_and_outlives_the_script_deadline() {
    let mut section = "";
    let mut entries: Vec<(String, String, String)> = Vec::new();
    for line in APPLY_UNIT.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        entries.push((section.to_string(), key.to_string(), value.to_string()));
    }
    let get = |section: &str, key: &str| -> String {
        let found: Vec<&String> = entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "[{section}] {key}: {found:?}");
        found[0].clone()
    };
    assert_eq!(
        get("Service", "ExecStart"),
        format!("/bin/bash {APPLY_SCRIPT_PATH}")
    );
    assert_eq!(get("Service", "Type"), "simple");
    assert_eq!(get("Service", "Restart"), "on-failure");
    assert_eq!(get("Service", "RestartPreventExitStatus"), "2");
    assert!(APPLY_SCRIPT.contains(
        "# Exit codes: 0 applied (now or before), 1 deadline passed, 2 what no later run can fix"
    ));
    assert_eq!(get("Unit", "StartLimitIntervalSec"), "0");
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
    let number_after = |text: &str, prefix: &str| -> u64 {
        let rest = &text[text.find(prefix).unwrap_or_else(|| panic!("{prefix}")) + prefix.len()..];
        rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
            .parse()
            .unwrap()
    };
    let runtime_max: u64 = get("Service", "RuntimeMaxSec").parse().unwrap();
    let deadline = number_after(APPLY_SCRIPT, "CAPI_CALICO_DEADLINE_SECONDS:-");
    let kill_after = number_after(APPLY_SCRIPT, "\nkill_after=");
    assert_eq!(deadline, 1800);
    assert!(
        runtime_max > deadline + kill_after && runtime_max <= deadline + 120,
        "RuntimeMaxSec={runtime_max}, deadline {deadline}s, kill-after {kill_after}s"
    );
    let restart_sec: u64 = get("Service", "RestartSec").parse().unwrap();
    assert!((60..=600).contains(&restart_sec), "{restart_sec}");
}

/// Whether `tool` cannot be run here; says so, with what is then left unchecked (`scripts/install-test-tools.sh`
/// installs it in CI).
fn missing_tool(tool: &str, unchecked: &str) -> bool {
    let missing = Command::new(tool).arg("--version").output().is_err();
    if missing {
        skipped(&format!("{tool} is not installed; {unchecked}"));
    }
    missing
}

/// Say that a check did not run for want of a tool. Under `scripts/test.sh` (and so in CI), which installs every
/// tool these tests use and sets `CAPI_CALICO_REQUIRE_TEST_TOOLS=1`, that is a failure instead.
fn skipped(notice: &str) {
    if std::env::var_os("CAPI_CALICO_REQUIRE_TEST_TOOLS").is_some_and(|v| v == "1") {
        panic!(
            "{notice}, and CAPI_CALICO_REQUIRE_TEST_TOOLS=1 (scripts/install-test-tools.sh installs it)"
        );
    }
    eprintln!("NOTICE: {notice} (scripts/install-test-tools.sh installs it)");
}

/// systemd's own parser reads the unit without a complaint: an unknown key, a value it cannot parse or a missing
/// executable is only a warning to systemd (the unit would start without that setting), so any output fails.
#[test]
fn apply_unit_passes_systemd_analyze_verify() {
    if missing_tool("systemd-analyze", "the unit was NOT verified") {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let verify = |content: &str| -> Output {
        let unit = tmp.path().join("capi-calico-apply-bgp.service");
        std::fs::write(&unit, content).unwrap();
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap()
    };
    let out = verify(APPLY_UNIT);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    // The check sees what it is meant to see: a misspelt key and an unparsable value are reported.
    for (from, to) in [
        ("RestartSec=300", "RestartSecs=300"),
        ("RuntimeMaxSec=1860", "RuntimeMaxSec=18x60"),
    ] {
        assert!(APPLY_UNIT.contains(from), "{from}");
        let out = verify(&APPLY_UNIT.replace(from, to));
        assert!(!out.stderr.is_empty(), "{to} not reported");
    }
}

/// The log, appended to by every run of the unit, is kept under 1 MiB: a larger one is moved to `.1` first.
#[test]
fn apply_keeps_its_log_bounded() {
    let a = Apply::new(1);
    std::fs::create_dir_all(&a.log_dir).unwrap();
    let log = a.log_dir.join("apply-bgp.log");
    std::fs::write(&log, "x".repeat(1_100_000)).unwrap();
    let (out, _) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        std::fs::metadata(a.log_dir.join("apply-bgp.log.1"))
            .unwrap()
            .len(),
        1_100_000
    );
    let now = std::fs::read_to_string(&log).unwrap();
    assert!(
        now.len() < 10_000 && now.contains("apply-bgp: done"),
        "{now}"
    );
    // A log under the bound is appended to.
    let (out, _) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    assert!(out.status.success());
    assert!(std::fs::read_to_string(&log).unwrap().starts_with(&now));
}

/// A run after a success with the same files (a reboot, a restart of the unit) exits at once without calling
/// calicoctl; changed files are applied again.
#[test]
fn apply_records_what_it_applied_and_skips_the_same_files() {
    let a = Apply::new(1);
    let (out, _) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stdout));
    let first = a.calls().len();
    assert!(first >= 3, "{:?}", a.calls());
    let recorded = std::fs::read_to_string(a.tmp.path().join("var-lib/applied")).unwrap();
    assert_eq!(recorded.trim().len(), 64, "{recorded}");

    let (out, elapsed) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("already applied (files and cluster CA sha256"),
        "{stdout}"
    );
    assert_eq!(a.calls().len(), first, "no calicoctl call the second time");
    assert!(elapsed < Duration::from_secs(5));

    // Another cluster (a reused host that joined another control plane): its CA differs, so the files are applied
    // again although they are the same.
    std::fs::write(
        &a.kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: QU5PVEhFUg==\n",
    )
    .unwrap();
    let (out, _) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(a.calls().len() > first, "another cluster is applied again");
    let first = a.calls().len();
    let recorded = std::fs::read_to_string(a.tmp.path().join("var-lib/applied")).unwrap();
    let (_, _) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    assert_eq!(a.calls().len(), first, "and then skipped");

    let conf = a.dir.join("bgpconfiguration.yaml");
    let changed = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("64512", "64513");
    std::fs::write(&conf, changed).unwrap();
    let (out, _) = run(a.command(30, 0, 0, 0), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(a.calls().len() > first, "changed files are applied again");
    assert_ne!(
        std::fs::read_to_string(a.tmp.path().join("var-lib/applied")).unwrap(),
        recorded
    );
}

/// The BGPConfiguration file is one line of JSON: `calicoctl create -f` reads it (JSON is YAML) and
/// `calicoctl patch --patch` takes it (a strategic merge patch must be JSON, so no comment and no `---`).
#[test]
fn bgp_configuration_file_is_one_line_of_json() {
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let text = node_text(inj.file(BGP_CONFIGURATION_PATH).unwrap());
    assert_eq!(
        text,
        "{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"BGPConfiguration\",\"metadata\":{\"name\":\"default\"},\
         \"spec\":{\"asNumber\":64512,\"nodeToNodeMeshEnabled\":false}}\n"
    );
    let _: serde_json::Value = serde_json::from_str(&text).unwrap();
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
    if missing_tool("shellcheck", "the scripts were NOT linted") {
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
