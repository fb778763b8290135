//! The control plane under test: etcd + kube-apiserver built by `e2e/build-tools.sh`, a temp dir
//! with generated certificates and a kubeconfig, and helpers that run the matching `kubectl`.
//!
//! Every process is killed and the temp dir removed when the [`Harness`] is dropped (also after a
//! panic, which the runner catches), when the test binary gets SIGINT/SIGTERM
//! ([`install_signal_handler`]), and, through `PR_SET_PDEATHSIG`, when the test binary dies.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::certs::Ca;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Returned by a scenario that cannot run here; counted as skipped, not failed.
#[derive(Debug)]
pub struct Skip(pub String);
impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}
impl std::error::Error for Skip {}

/// `return Err(fail!("..."))`-style error construction with format args.
macro_rules! fail {
    ($($t:tt)*) => { Box::<dyn std::error::Error>::from(format!($($t)*)) };
}

/// Like `assert!`, but returns an error from the scenario instead of panicking.
macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => {
        if !$cond { return Err(fail!($($t)*)); }
    };
}

// ---------------------------------------------------------------------------------------------
// Locating the binaries

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Paths of the tools `e2e/build-tools.sh` produced (or `E2E_BIN_DIR` / `E2E_CRD_DIR` point at).
#[derive(Clone, Debug)]
pub struct Tools {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub crd_dir: PathBuf,
    /// e.g. "kubernetes v1.37.2, etcd v3.7.3, cluster-api v1.14.0"
    pub versions: String,
}

/// The version a wrapper go.mod requires `module` at (the same lookup build-tools.sh does).
fn go_mod_version(go_mod: &Path, module: &str) -> Option<String> {
    let text = fs::read_to_string(go_mod).ok()?;
    text.lines().find_map(|line| {
        let line = line.trim().trim_start_matches("require").trim();
        let mut tok = line.split_whitespace();
        match (tok.next(), tok.next()) {
            (Some(m), Some(v)) if m == module && v.starts_with('v') => Some(v.to_string()),
            _ => None,
        }
    })
}

impl Tools {
    pub fn locate() -> Result<Tools, String> {
        let root = repo_root();
        let tools = root.join("e2e/tools");
        let ver = |dir: &str, module: &str| {
            go_mod_version(&tools.join(dir).join("go.mod"), module).ok_or_else(|| {
                format!("cannot read the {module} version from e2e/tools/{dir}/go.mod")
            })
        };
        let kver = ver("kube", "k8s.io/kubernetes")?;
        let ever = ver("etcd", "go.etcd.io/etcd/server/v3")?;
        let cver = ver("capi", "sigs.k8s.io/cluster-api")?;
        let bin_root = std::env::var_os("E2E_BIN_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("bin/e2e"));
        let (kube_dir, etcd_dir) = match std::env::var_os("E2E_BIN_DIR") {
            Some(d) => (PathBuf::from(&d), PathBuf::from(&d)),
            None => (
                bin_root.join(format!("kube-{kver}")),
                bin_root.join(format!("etcd-{ever}")),
            ),
        };
        let crd_dir = std::env::var_os("E2E_CRD_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin_root.join(format!("capi-crds-{cver}")));
        let t = Tools {
            etcd: etcd_dir.join("etcd"),
            kube_apiserver: kube_dir.join("kube-apiserver"),
            kubectl: kube_dir.join("kubectl"),
            crd_dir,
            versions: format!("kubernetes {kver}, etcd {ever}, cluster-api {cver}"),
        };
        let missing: Vec<String> = [&t.etcd, &t.kube_apiserver, &t.kubectl, &t.crd_dir]
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(t)
        } else {
            Err(format!(
                "missing e2e tools ({}):\n  {}\nBuild them once (cached by version under bin/e2e/; a cold build takes 10-25 \
                 minutes on 2 cores):\n  e2e/build-tools.sh\nor point E2E_BIN_DIR at a folder with etcd, kube-apiserver \
                 and kubectl (and E2E_CRD_DIR at the CAPI CRDs). Set E2E_SKIP=1 to skip the e2e suite instead.",
                t.versions,
                missing.join("\n  ")
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and emergency cleanup

/// Pids and temp dirs to clean up if the test binary is interrupted.
struct Cleanup {
    pids: BTreeSet<u32>,
    dirs: Vec<PathBuf>,
}
static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    pids: BTreeSet::new(),
    dirs: Vec::new(),
});

fn cleanup_registry() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// Best effort on Ctrl-C / SIGTERM: kill our children, remove our temp dirs, exit 130.
pub fn install_signal_handler() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let reg = cleanup_registry();
        for pid in &reg.pids {
            // SAFETY: plain kill(2) on a pid we spawned.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        for d in &reg.dirs {
            let _ = fs::remove_dir_all(d);
        }
        eprintln!("e2e: interrupted; killed {} processes", reg.pids.len());
        std::process::exit(130);
    });
}

/// A child process whose stdout+stderr go to a log file. Killed on drop.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> TestResult<Proc> {
        let out = fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the test binary even if it is SIGKILLed (no leftover processes).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| fail!("cannot start {name} ({}): {e}", program.display()))?;
        cleanup_registry().pids.insert(child.id());
        Ok(Proc {
            name: name.to_string(),
            log,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Resident set size in MiB, from /proc (Linux).
    pub fn rss_mib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup_registry().pids.remove(&self.child.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago (bind to :0, read it, release it).
pub fn free_port() -> TestResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn poll<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> TestResult<Option<T>>,
) -> TestResult<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(fail!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(interval);
    }
}

/// Minimal HTTP/1.0 request over plain TCP (etcd's /health and JSON gateway); returns the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(buf))
}

pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    http(port, "GET", path, "")
}

// ---------------------------------------------------------------------------------------------
// kubectl results

/// What one `kubectl` run printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Turn a non-zero exit into an error that carries the command and stderr.
    pub fn check(self, what: &str) -> TestResult<Output> {
        if self.success {
            Ok(self)
        } else {
            Err(fail!(
                "`{what}` exited with {:?}\nstderr: {}\nstdout: {}",
                self.code,
                self.stderr.trim(),
                self.stdout.trim()
            ))
        }
    }
}

/// Parse a multi-document YAML (or JSON) text into JSON values, skipping empty documents.
pub fn yaml_docs(text: &str) -> TestResult<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Wrap objects into a `v1/List` so one `kubectl apply -f -` takes them all.
pub fn list_of(items: Vec<Value>) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

// ---------------------------------------------------------------------------------------------
// The harness

const TEMP_PREFIX: &str = "capi-e2e-";

/// Remove temp dirs left by runs that were SIGKILLed (their processes died with them through
/// PR_SET_PDEATHSIG, but nothing removed the dir). A dir whose owner pid is alive is kept.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(pid) = fs::read_to_string(path.join("owner.pid")) else {
            continue;
        };
        let alive = pid
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

pub struct Harness {
    /// Killed in reverse start order by Drop (webhook, kube-apiserver, etcd).
    pub procs: Vec<Proc>,
    pub tools: Tools,
    pub ca: Ca,
    /// Admin kubeconfig (client cert with O=system:masters).
    pub kubeconfig: PathBuf,
    /// https://127.0.0.1:PORT
    pub server: String,
    /// CRD names installed by [`Harness::install_crds`].
    pub crds: Vec<String>,
    /// etcd client port and the kube-apiserver's `--etcd-prefix`, for [`Harness::etcd_get`].
    pub etcd_port: u16,
    pub etcd_prefix: String,
    ns_counter: AtomicU32,
    /// Removed last (after the processes are dead). `E2E_KEEP=1` keeps it for debugging.
    dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// The API server's audit log (JSON lines; only the webhook's restricted user is audited).
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join("logs/audit.log")
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// Generate certs, start etcd and kube-apiserver on 127.0.0.1, write a kubeconfig, wait for
    /// `/readyz` and namespace `default`. On error everything started so far is torn down.
    pub fn start(tools: Tools) -> TestResult<Harness> {
        remove_stale_dirs();
        let dir = tempfile::Builder::new().prefix(TEMP_PREFIX).tempdir()?;
        cleanup_registry().dirs.push(dir.path().to_path_buf());
        let d = dir.path().to_path_buf();
        fs::write(d.join("owner.pid"), std::process::id().to_string())?;
        let pki = d.join("pki");
        fs::create_dir_all(&pki)?;
        fs::create_dir_all(d.join("logs"))?;

        let ca = Ca::new("capi-e2e-ca")?;
        let serving = ca.server("kube-apiserver", &["127.0.0.1", "localhost"])?;
        let admin = ca.client("e2e-admin", Some("system:masters"))?;
        let (sa_key, sa_pub) = crate::certs::service_account_key()?;
        let write = |name: &str, data: &str| -> TestResult<PathBuf> {
            let p = pki.join(name);
            fs::write(&p, data)?;
            Ok(p)
        };
        let ca_crt = write("ca.crt", &ca.cert_pem)?;
        let kas_crt = write("apiserver.crt", &serving.cert_pem)?;
        let kas_key = write("apiserver.key", &serving.key_pem)?;
        let sa_key = write("sa.key", &sa_key)?;
        let sa_pub = write("sa.pub", &sa_pub)?;
        // Audit every request of the webhook's restricted user (see calico.rs), so a scenario can
        // compare what it really used with what deploy/base grants.
        let audit_policy = write(
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: Metadata\n  users: [capi-calico-e2e-webhook]\n- level: None\n",
        )?;

        let mut h = Harness {
            procs: Vec::new(),
            tools,
            ca,
            kubeconfig: d.join("admin.kubeconfig"),
            server: String::new(),
            crds: Vec::new(),
            etcd_port: 0,
            etcd_prefix: String::new(),
            ns_counter: AtomicU32::new(0),
            dir: Some(dir),
        };

        // etcd (up to 3 tries: a port picked by free_port() may be taken by someone else meanwhile)
        for attempt in 1..=3 {
            let (client, peer) = (free_port()?, free_port()?);
            let data = d.join(format!("etcd-data-{attempt}"));
            let args: Vec<String> = vec![
                "--name=e2e".into(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=e2e=http://127.0.0.1:{peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ];
            let log = d.join(format!("logs/etcd-{attempt}.log"));
            let mut p = Proc::spawn("etcd", &h.tools.etcd, &args, log)?;
            let healthy = poll(
                "etcd /health",
                Duration::from_secs(30),
                Duration::from_millis(100),
                || {
                    if let Some(st) = p.exited() {
                        return Err(fail!("etcd exited ({st}):\n{}", p.log_tail(20)));
                    }
                    Ok(http_get(client, "/health")
                        .ok()
                        .filter(|r| r.contains("\"health\":\"true\""))
                        .map(|_| ()))
                },
            );
            match healthy {
                Ok(()) => {
                    h.procs.push(p);
                    h.etcd_port = client;
                    break;
                }
                Err(e) if attempt < 3 => {
                    eprintln!("e2e: etcd attempt {attempt} failed, retrying: {e}")
                }
                Err(e) => return Err(e),
            }
        }

        // kube-apiserver
        for attempt in 1..=3 {
            let port = free_port()?;
            h.server = format!("https://127.0.0.1:{port}");
            h.write_kubeconfig(&admin)?;
            let args: Vec<String> = vec![
                format!("--etcd-servers=http://127.0.0.1:{}", h.etcd_port),
                // no default route in sandboxes: always pin the addresses
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", kas_crt.display()),
                format!("--tls-private-key-file={}", kas_key.display()),
                format!("--client-ca-file={}", ca_crt.display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                // no controller-manager, so no default ServiceAccount to admit pods against
                "--disable-admission-plugins=ServiceAccount".into(),
                "--endpoint-reconciler-type=none".into(),
                format!("--audit-policy-file={}", audit_policy.display()),
                format!("--audit-log-path={}", d.join("logs/audit.log").display()),
                "--audit-log-format=json".into(),
                format!("--cert-dir={}", d.join("kas-certs").display()),
                // separate etcd key prefix per attempt, in case a half-started one wrote data
                format!("--etcd-prefix=/registry-{attempt}"),
            ];
            h.etcd_prefix = format!("/registry-{attempt}");
            let log = d.join(format!("logs/kube-apiserver-{attempt}.log"));
            let mut p = Proc::spawn("kube-apiserver", &h.tools.kube_apiserver, &args, log)?;
            let ready = poll(
                "kube-apiserver /readyz",
                Duration::from_secs(120),
                Duration::from_millis(300),
                || {
                    if let Some(st) = p.exited() {
                        return Err(fail!("kube-apiserver exited ({st}):\n{}", p.log_tail(30)));
                    }
                    let out = h.kubectl(&["get", "--raw=/readyz", "--request-timeout=5s"], None)?;
                    Ok(out.success.then_some(()))
                },
            );
            match ready {
                Ok(()) => {
                    h.procs.push(p);
                    break;
                }
                Err(e) if attempt < 3 => {
                    eprintln!("e2e: kube-apiserver attempt {attempt} failed, retrying: {e}")
                }
                Err(e) => {
                    h.procs.push(p); // so the caller can print its log
                    return Err(e);
                }
            }
        }
        poll(
            "namespace default",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                Ok(h.kubectl(&["get", "namespace", "default"], None)?
                    .success
                    .then_some(()))
            },
        )?;
        Ok(h)
    }

    fn write_kubeconfig(&self, admin: &crate::certs::Leaf) -> TestResult {
        self.write_kubeconfig_for(&self.kubeconfig, "e2e-admin", admin)
    }

    /// Write a kubeconfig for this API server that authenticates with the client certificate
    /// `leaf` (e.g. a user with only the shipped RBAC, from `self.ca.client(..)`).
    pub fn write_kubeconfig_for(
        &self,
        path: &Path,
        user: &str,
        leaf: &crate::certs::Leaf,
    ) -> TestResult {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cfg = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": self.server,
                "certificate-authority-data": b64(&self.ca.cert_pem),
            }}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(&leaf.cert_pem),
                "client-key-data": b64(&leaf.key_pem),
            }}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        });
        fs::write(path, serde_json::to_string_pretty(&cfg)?)?;
        Ok(())
    }

    /// Run our kubectl against the test API server. Never fails on a non-zero exit: see
    /// [`Output::check`] or the `*_ok` helpers.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> TestResult<Output> {
        let mut cmd = Command::new(&self.tools.kubectl);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // keep kubectl's discovery/http cache out of $HOME
            .env("KUBECACHEDIR", self.dir().join("kubectl-cache"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let input = input.to_string();
            // write from a thread so a large input cannot deadlock against a full stdout pipe
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        let out = child.wait_with_output()?;
        Ok(Output {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `kubectl ARGS`, failing on a non-zero exit; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> TestResult<String> {
        let what = format!("kubectl {}", args.join(" "));
        Ok(self.kubectl(args, stdin)?.check(&what)?.stdout)
    }

    /// `kubectl annotate --overwrite -n NS cluster NAME PAIR` (`key=value`, or `key-` to remove); the whole output,
    /// whatever the exit (the caller checks it: a webhook may refuse the change).
    pub fn annotate_cluster(&self, ns: &str, name: &str, pair: &str) -> TestResult<Output> {
        self.kubectl(
            &["annotate", "--overwrite", "-n", ns, "cluster", name, pair],
            None,
        )
    }

    /// Client-side `kubectl apply -n NS -f -` of a YAML/JSON text; fails on a non-zero exit.
    pub fn apply(&self, ns: &str, yaml: &str) -> TestResult<Output> {
        self.kubectl(&["apply", "-n", ns, "-f", "-"], Some(yaml))?
            .check(&format!("kubectl apply -n {ns} -f -"))
    }

    /// `kubectl apply --server-side --field-manager=MANAGER -n NS -f -`; fails on a non-zero exit.
    pub fn apply_server_side(&self, ns: &str, yaml: &str, manager: &str) -> TestResult<Output> {
        let fm = format!("--field-manager={manager}");
        self.kubectl(
            &["apply", "--server-side", &fm, "-n", ns, "-f", "-"],
            Some(yaml),
        )?
        .check(&format!("kubectl apply --server-side {fm} -n {ns} -f -"))
    }

    /// `kubectl get KIND NAME -n NS -o json` (use a fully qualified `kind`, e.g.
    /// `kubeadmcontrolplanes.v1beta1.controlplane.cluster.x-k8s.io`, to pick a version).
    pub fn get_json(&self, kind: &str, ns: &str, name: &str) -> TestResult<Value> {
        let out = self.kubectl_ok(&["get", kind, name, "-n", ns, "-o", "json"], None)?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The object exactly as the API server stored it in etcd (JSON; CRs are stored as JSON), or
    /// `None`. `resource` is `group/plural` for CRs (e.g. `cluster.x-k8s.io/clusters`) or the
    /// plural for core kinds. Uses etcd's JSON gateway (`/v3/kv/range`).
    pub fn etcd_get(&self, resource: &str, ns: &str, name: &str) -> TestResult<Option<Value>> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = format!("{}/{resource}/{ns}/{name}", self.etcd_prefix);
        let body = serde_json::json!({ "key": b64.encode(&key) }).to_string();
        let resp: Value =
            serde_json::from_str(&http(self.etcd_port, "POST", "/v3/kv/range", &body)?)?;
        match resp["kvs"][0]["value"].as_str() {
            Some(v) => Ok(Some(serde_json::from_slice(&b64.decode(v)?)?)),
            None => Ok(None),
        }
    }

    /// Does `kubectl get KIND NAME -n NS` find it?
    pub fn exists(&self, kind: &str, ns: &str, name: &str) -> TestResult<bool> {
        let out = self.kubectl(&["get", kind, name, "-n", ns, "-o", "name"], None)?;
        if out.success {
            return Ok(true);
        }
        if out.stderr.contains("NotFound") || out.stderr.contains("not found") {
            return Ok(false);
        }
        Err(fail!("kubectl get {kind} {name}: {}", out.stderr.trim()))
    }

    /// Create a fresh namespace `PREFIX-N` (nothing deletes namespaces here: there is no
    /// controller-manager, so a deleted namespace would stay Terminating).
    pub fn create_namespace(&self, prefix: &str) -> TestResult<String> {
        let n = self.ns_counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        self.kubectl_ok(&["create", "namespace", &name], None)?;
        Ok(name)
    }

    /// Install every CRD found in the `*.yaml` files of `dir` with server-side apply, WITHOUT
    /// `spec.conversion` (no CAPI conversion webhook runs here, so conversion is `None`), then
    /// wait until each is Established and discovery serves every served version.
    pub fn install_crds(&mut self, dir: &Path) -> TestResult<Vec<String>> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut crds = Vec::new();
        for f in &files {
            for mut doc in yaml_docs(&fs::read_to_string(f)?)? {
                if doc["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("conversion");
                }
                crds.push(doc);
            }
        }
        ensure!(!crds.is_empty(), "no CRDs in {}", dir.display());
        let names: Vec<String> = crds
            .iter()
            .map(|c| {
                c["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        // group/version -> plurals, for the discovery wait
        let mut gv: Vec<(String, String)> = Vec::new();
        for c in &crds {
            let group = c["spec"]["group"].as_str().unwrap_or_default();
            let plural = c["spec"]["names"]["plural"].as_str().unwrap_or_default();
            for v in c["spec"]["versions"].as_array().into_iter().flatten() {
                if v["served"] == true {
                    let name = v["name"].as_str().unwrap_or_default();
                    gv.push((format!("/apis/{group}/{name}"), plural.to_string()));
                }
            }
        }
        // server-side: the big CRDs exceed the 256 KiB last-applied annotation of client-side apply
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=e2e-harness",
                "-f",
                "-",
            ],
            Some(&list_of(crds)),
        )?
        .check("kubectl apply --server-side (CRDs)")?;
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        let crd_refs: Vec<String> = names.iter().map(|n| format!("crd/{n}")).collect();
        wait.extend(crd_refs.iter().map(String::as_str));
        self.kubectl_ok(&wait, None)?;
        for (path, plural) in &gv {
            poll(
                &format!("discovery of {plural} in {path}"),
                Duration::from_secs(30),
                Duration::from_millis(200),
                || {
                    let out = self.kubectl(&["get", "--raw", path], None)?;
                    Ok(
                        (out.success && out.stdout.contains(&format!("\"name\":\"{plural}\"")))
                            .then_some(()),
                    )
                },
            )?;
        }
        self.crds.extend(names.iter().cloned());
        Ok(names)
    }

    /// Print the tail of every process log to stderr (called when a scenario fails).
    pub fn dump_logs(&self, lines: usize) {
        for p in &self.procs {
            eprintln!(
                "----- last {lines} lines of {} ({}) -----",
                p.name,
                p.log.display()
            );
            eprintln!("{}", p.log_tail(lines));
        }
        eprintln!("----- end of logs -----");
    }

    pub fn proc(&self, name: &str) -> Option<&Proc> {
        self.procs.iter().rev().find(|p| p.name == name)
    }

    /// Stop a process started by the harness (e.g. the webhook), by name.
    pub fn stop(&mut self, name: &str) -> bool {
        match self.procs.iter().rposition(|p| p.name == name) {
            Some(i) => {
                self.procs.remove(i).kill();
                true
            }
            None => false,
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.kill();
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if std::env::var("E2E_KEEP").as_deref() == Ok("1") {
                eprintln!("e2e: E2E_KEEP set; kept {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("e2e: could not remove {}: {e}", path.display());
            }
            cleanup_registry().dirs.retain(|d| d != &path);
        }
    }
}
