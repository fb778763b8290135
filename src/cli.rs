//! The command line: `serve`, `check`, `render`.

use std::{collections::HashMap, io::Write, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::{
    admission::{
        Verdict,
        api::Endpoint,
        policy::{self, Kind},
    },
    cluster::documents::DocumentSource,
    manifest::{self, Document},
};

const ANNOTATIONS_HELP: &str = "\
SETTINGS
  Calico settings are annotations on the Cluster, named capi-calico.io/<VARIABLE>:
    CUSTOM_CALICO_DEPLOYMENT       true|false (default false): the master switch
    CALICO_BGP_OPTION              Enabled|Disabled (default Disabled)
    CALICO_BLOCK_SIZE              IPv4 20..32 (default 28), IPv6 116..128 (default 122)
    CALICO_POD_CIDR                a CIDR inside the Cluster's pod cidrBlocks
                                   (default: the first one)
    CALICO_ENCAPSULATION           IPIP|IPIPCrossSubnet|VXLAN|VXLANCrossSubnet|None
                                   (default VXLANCrossSubnet)
    CALICO_NAT_OUTGOING            Enabled|Disabled (default Enabled)
    INSTALL_CALICOCTL              true|false (default false)
    CONFIGURE_CALICO_BGP_SETTINGS  true|false (default false)
    CALICO_BGP_AS_NUMBER           1..2147483647 or asdot X.Y
    CALICO_ROUTE_REFLECTORS        base64 -w 0 of BGPPeer YAML documents
    CALICO_VERSION                 vX.Y.Z (default v3.31.7)
    CALICOCTL_URL                  https URL template with {version} and {arch}
    CALICOCTL_SHA256_AMD64/ARM64   64 hex digits (built in for the shipped versions)
    CALICO_REGISTRY                host[:port][/path] the Calico images are pulled from
                                   (default: the operator's)
    CALICO_IMAGE_PATH              image path under the registry, e.g. mirror/calico
                                   (default: the operator's)
    CALICO_IMAGE_PULL_SECRET       a Secret of type addons.cluster.x-k8s.io/resource-set holding
                                   the pull secret of a mirror that needs credentials

EXAMPLE
  apiVersion: cluster.x-k8s.io/v1beta2
  kind: Cluster
  metadata:
    name: workload-1
    annotations:
      capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: \"true\"
      capi-calico.io/CALICO_BGP_OPTION: Enabled
      capi-calico.io/INSTALL_CALICOCTL: \"true\"
      capi-calico.io/CONFIGURE_CALICO_BGP_SETTINGS: \"true\"
      capi-calico.io/CALICO_BGP_AS_NUMBER: \"64512\"
      capi-calico.io/CALICO_ROUTE_REFLECTORS: <output of: base64 -w 0 peers.yaml>
  spec:
    clusterNetwork:
      pods:
        cidrBlocks: [\"192.168.0.0/16\"]

  A KubeadmControlPlane or KubeadmConfigTemplate takes the settings of its Cluster, unless it
  carries capi-calico.io/ annotations itself. See the README for the full contract.";

/// capi-calico-webhook: Calico settings for Cluster API clusters, validated and injected.
#[derive(Debug, Parser)]
#[command(version, about, after_long_help = ANNOTATIONS_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve admission reviews over HTTPS (POST /mutate, POST /validate).
    #[command(after_long_help = ANNOTATIONS_HELP)]
    Serve(Box<ServeArgs>),
    /// Check manifests offline: print every problem, exit 0 when all is valid, 1 when not, 2 when the input cannot
    /// be used (usage, I/O, not YAML or JSON, no objects).
    #[command(after_long_help = ANNOTATIONS_HELP)]
    Check(FilesArgs),
    /// Print the manifests with the mutation applied (what the API server would store); exits like `check`, and
    /// prints no manifest at all when anything is denied.
    #[command(after_long_help = ANNOTATIONS_HELP)]
    Render(RenderArgs),
    /// Turn upstream tigera-operator.yaml and operator-crds.yaml into ConfigMaps that fit the API's size limits,
    /// printed as a List for `kubectl apply --server-side -f -`.
    #[command(after_long_help = BUNDLE_HELP)]
    Bundle(BundleArgs),
}

const BUNDLE_HELP: &str = "\
EXAMPLE
  V=v3.31.7
  M=https://raw.githubusercontent.com/projectcalico/calico/$V/manifests   # or your mirror
  curl -fsSLO $M/tigera-operator.yaml
  curl -fsSLO $M/operator-crds.yaml
  capi-calico-webhook bundle --operator tigera-operator.yaml --crds operator-crds.yaml \\
    --version $V | kubectl apply --server-side -f -

  The reconciler copies the bundle for a Cluster's CALICO_VERSION into the Cluster's namespace and
  delivers it with a ClusterResourceSet (docs/delivery.md).";

/// `bundle` arguments.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Upstream tigera-operator.yaml of the Calico release.
    #[arg(long, value_name = "FILE")]
    pub operator: PathBuf,
    /// Upstream operator-crds.yaml of the same release.
    #[arg(long, value_name = "FILE")]
    pub crds: PathBuf,
    /// The Calico version of these manifests (vX.Y.Z); Clusters select it with CALICO_VERSION.
    #[arg(long)]
    pub version: String,
    /// Namespace the bundle is loaded into (the reconciler's --bundle-namespace).
    #[arg(long, default_value = crate::delivery::DEFAULT_BUNDLE_NAMESPACE, value_parser = parse_namespace)]
    pub namespace: String,
    /// The operator's image for nodes that pull from a mirror (see the help text).
    #[arg(
        long,
        value_name = "IMAGE",
        help = "Replace the operator's image (container tigera-operator), for nodes that pull from a mirror: [host[:port]/]path:tag or ...@sha256:<digest>, with the upstream tag"
    )]
    pub operator_image: Option<String>,
    /// A pull secret for the operator's pod, for a mirror that needs credentials.
    #[arg(
        long,
        value_name = "NAME",
        help = "Give the operator's pod the image pull secret NAME (a Secret in namespace tigera-operator of each workload cluster; deliver it with capi-calico.io/CALICO_IMAGE_PULL_SECRET)"
    )]
    pub operator_pull_secret: Option<String>,
}

/// Input files.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// Manifest files (multi-document YAML or JSON) or directories of them; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Treat warnings as problems (exit 1): a KCP or KCT whose Cluster is not in the input, a misspelt prefix, ...
    #[arg(long)]
    pub strict: bool,
    /// The namespace of documents that name none, as with `kubectl apply -n`: where their Clusters, KCPs, KCTs and
    /// MachineDeployments are looked for. The output is not changed: such documents still name none.
    #[arg(short, long, default_value = "default", value_parser = parse_namespace)]
    pub namespace: String,
}

/// Output format of `render`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// `render` arguments.
#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub files: FilesArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: OutputFormat,
}

/// `serve` arguments; every flag can also be set through the environment variable shown.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTPS listen address.
    #[arg(long, env = "CAPI_CALICO_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: std::net::SocketAddr,
    /// Serving certificate (PEM), reloaded when it changes. Without it and --tls-key-file, a self-signed CA and
    /// certificate for localhost are generated into --self-signed-dir.
    #[arg(long, env = "CAPI_CALICO_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "CAPI_CALICO_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Where the self-signed CA (ca.crt) and certificate are written when no certificate files are given.
    /// Default: $TMPDIR/capi-calico-webhook-tls.
    #[arg(long, env = "CAPI_CALICO_SELF_SIGNED_DIR")]
    pub self_signed_dir: Option<PathBuf>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz; `off` disables it.
    #[arg(
        long,
        env = "CAPI_CALICO_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: String,
    /// Kubeconfig for the Cluster lookup and the reconciler. Default: $KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account, whichever is found first.
    #[arg(long, env = "CAPI_CALICO_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run without cluster access: no Cluster lookup for KCPs/KCTs, no reconciler.
    #[arg(long, env = "CAPI_CALICO_NO_CLUSTER_LOOKUP", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_cluster_lookup: bool,
    /// Do not run the reconciler that delivers Calico through ClusterResourceSets.
    #[arg(long, env = "CAPI_CALICO_NO_RECONCILER", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_reconciler: bool,
    /// Do not label an opted-in Cluster's KubeadmControlPlane and KubeadmConfigTemplates with
    /// cluster.x-k8s.io/cluster-name (what lets the webhook inject objects applied before their Cluster or
    /// MachineDeployment).
    #[arg(long, env = "CAPI_CALICO_NO_TEMPLATE_LINKER", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_template_linker: bool,
    /// Namespace holding the Calico operator bundles (see `bundle`).
    #[arg(long, env = "CAPI_CALICO_BUNDLE_NAMESPACE", default_value = crate::delivery::DEFAULT_BUNDLE_NAMESPACE, value_parser = parse_namespace)]
    pub bundle_namespace: String,
    /// Log format.
    #[arg(
        long,
        env = "CAPI_CALICO_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: crate::server::LogFormat,
    /// Deadline for one review, from the first body byte to the answer; keep it below the webhook timeoutSeconds.
    #[arg(long, env = "CAPI_CALICO_REQUEST_TIMEOUT", default_value = "4s", value_parser = parse_positive_duration)]
    pub request_timeout: std::time::Duration,
    /// After SIGTERM, keep serving (unready) this long so endpoints can drop the pod.
    #[arg(long, env = "CAPI_CALICO_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: std::time::Duration,
    /// How long in-flight requests may take to finish after the listener closes.
    #[arg(long, env = "CAPI_CALICO_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Bound on each API call of a KCP/KCT review (the Cluster's GET; a LIST on a cache miss); under half of
    /// --request-timeout.
    #[arg(long, env = "CAPI_CALICO_LOOKUP_TIMEOUT", default_value = "1500ms", value_parser = parse_positive_duration)]
    pub lookup_timeout: std::time::Duration,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CAPI_CALICO_MAX_BODY_BYTES", default_value_t = 7 * 1024 * 1024, value_parser = at_least_one())]
    pub max_body_bytes: usize,
    /// Memory all request bodies may hold at once, in bytes (at least twice --max-body-bytes); past it, 503.
    #[arg(long, env = "CAPI_CALICO_MAX_BODY_MEMORY_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_body_memory_bytes: usize,
    /// Reviews handled at once.
    #[arg(long, env = "CAPI_CALICO_MAX_CONCURRENT_REVIEWS", default_value_t = 64, value_parser = at_least_one())]
    pub max_concurrent_reviews: usize,
    /// Open connections accepted on the webhook port.
    #[arg(long, env = "CAPI_CALICO_MAX_CONNECTIONS", default_value_t = 1024, value_parser = at_least_one())]
    pub max_connections: usize,
    /// Time a request's headers may take, from the connection's start or the request's first byte (slow-header
    /// clients are cut off). A keep-alive connection waiting for its next request is bounded by --idle-timeout.
    #[arg(long, env = "CAPI_CALICO_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub header_read_timeout: std::time::Duration,
    /// Time a request has to send its whole body once its headers are in (answered 408).
    #[arg(long, env = "CAPI_CALICO_BODY_READ_TIMEOUT", default_value = "3s", value_parser = parse_positive_duration)]
    pub body_read_timeout: std::time::Duration,
    /// Time a client has to complete the TLS handshake.
    #[arg(long, env = "CAPI_CALICO_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: std::time::Duration,
    /// A connection with no byte either way for this long is closed (never shorter than --request-timeout + 1s).
    /// Keep it above the API server's 90 s for unused keep-alive connections: it closes them first, safely.
    #[arg(long, env = "CAPI_CALICO_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_positive_duration)]
    pub idle_timeout: std::time::Duration,
    /// A connection older than this (within 10 %) is asked to finish, then closed --drain-timeout later (at least
    /// --request-timeout + 1s).
    #[arg(long, env = "CAPI_CALICO_MAX_CONNECTION_AGE", default_value = "10m", value_parser = parse_positive_duration)]
    pub max_connection_age: std::time::Duration,
    /// HTTP/2 streams at once per connection.
    #[arg(long, env = "CAPI_CALICO_MAX_CONCURRENT_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// How often the certificate files are checked for a rotation (besides file-change events).
    #[arg(long, env = "CAPI_CALICO_CERT_POLL_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    pub cert_poll_interval: std::time::Duration,
    /// How often the reconciler and the template linker look at every Cluster again without an event.
    #[arg(long, env = "CAPI_CALICO_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_positive_duration)]
    pub resync_interval: std::time::Duration,
    /// Clusters the reconciler works on at once.
    #[arg(long, env = "CAPI_CALICO_RECONCILE_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,
}

impl ServeArgs {
    /// The transport configuration these flags describe.
    pub fn server_config(&self) -> Result<crate::server::ServerConfig, String> {
        use crate::server::{ServerConfig, TlsSource};
        let tls = match (
            &self.tls_cert_file,
            &self.tls_key_file,
            &self.self_signed_dir,
        ) {
            (Some(cert), Some(key), _) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (_, _, Some(dir)) => TlsSource::SelfSigned { dir: dir.clone() },
            _ => ServerConfig::default().tls,
        };
        let metrics_listen =
            match self.metrics_listen.as_str() {
                "off" | "" => None,
                addr => Some(addr.parse().map_err(|e| {
                    format!("--metrics-listen {addr:?}: {e} (use host:port or off)")
                })?),
            };
        // A KCT's review may make two lookups (its Cluster, then the MachineDeployments); both, and the decision, must
        // fit in the request deadline, or the API server sees a bare timeout instead of the lookup's message.
        if !self.no_cluster_lookup && self.lookup_timeout * 2 >= self.request_timeout {
            return Err(format!(
                "--lookup-timeout {:?} is too long for --request-timeout {:?}: a review may make two lookups, which \
                 must end before the request's deadline; set --lookup-timeout below {:?}",
                self.lookup_timeout,
                self.request_timeout,
                self.request_timeout / 2
            ));
        }
        if self.max_body_memory_bytes / 2 < self.max_body_bytes {
            return Err(format!(
                "--max-body-memory-bytes {} is less than twice --max-body-bytes {}: a body of the largest size, counted twice while it is read, could never be read; set --max-body-memory-bytes to at least {} or lower --max-body-bytes",
                self.max_body_memory_bytes,
                self.max_body_bytes,
                self.max_body_bytes.saturating_mul(2)
            ));
        }
        Ok(ServerConfig {
            listen: self.listen,
            metrics_listen,
            tls,
            max_body_bytes: self.max_body_bytes,
            max_body_memory_bytes: self.max_body_memory_bytes,
            request_timeout: self.request_timeout,
            shutdown_delay: self.shutdown_delay,
            drain_timeout: self.drain_timeout,
            max_concurrent_reviews: self.max_concurrent_reviews,
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            tls_handshake_timeout: self.tls_handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_connection_age: self.max_connection_age,
            max_concurrent_streams: self.max_concurrent_streams,
            cert_poll_interval: self.cert_poll_interval,
        })
    }
}

/// The longest duration a flag takes: every one of them is a timeout or an interval of seconds to minutes, and a
/// deadline computed from a much longer one could overflow the clock.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Parse `250ms`, `20s`, `2m` (at most [`MAX_DURATION`]).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 20s or 2m"))?;
    let duration = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" | "" => std::time::Duration::from_secs(n),
        "m" => n
            .checked_mul(60)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))?,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than 24 hours (1440m)"));
    }
    Ok(duration)
}

/// A namespace name: a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters).
fn parse_namespace(raw: &str) -> Result<String, String> {
    if raw.len() <= 63 && !raw.contains('.') && crate::settings::values::is_dns1123_subdomain(raw) {
        Ok(raw.to_string())
    } else {
        Err("not a namespace name: lower-case letters, digits and '-', starting and ending with a letter or \
             digit, at most 63 characters"
            .to_string())
    }
}

/// A count of at least 1 (0 would not mean "unlimited": the server would take it as 1).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// [`parse_duration`], refusing zero (a zero timeout would cut every connection or answer every review with an
/// error; a zero resync would spin).
pub fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be more than zero")),
        d => Ok(d),
    }
}

/// What happened to one document offline.
#[derive(Debug)]
pub struct Checked {
    pub document: Document,
    /// `None` for documents the webhook does not act on.
    pub verdict: Option<Verdict>,
}

/// `object` as it is applied to `namespace` (`kubectl apply -n`): with `metadata.namespace` set when it names none.
fn in_namespace(object: &Value, namespace: &str) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && metadata
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        metadata.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    object
}

/// Run the mutating decision over every document, with Clusters found among the documents themselves. Documents
/// that name no namespace are decided as if in `namespace`; the patches apply to them unchanged (no patch path
/// involves the namespace).
pub fn check_documents(documents: Vec<Document>, namespace: &str) -> Vec<Checked> {
    let effective: Vec<Value> = documents
        .iter()
        .map(|d| in_namespace(&d.object, namespace))
        .collect();
    let source = DocumentSource::new(effective.iter());
    let mut seen: HashMap<(String, String, String, String), (String, Value)> = HashMap::new();
    documents
        .into_iter()
        .zip(&effective)
        .map(|(document, object)| {
            // A second, different definition (the same file given twice is no ambiguity).
            let duplicate = linked_identity(object).and_then(|key| {
                let here = format!("{} ({})", document.path, document.position());
                seen.insert(key, (here, document.object.clone()))
                    .filter(|(_, earlier)| *earlier != document.object)
                    .map(|(place, _)| place)
            });
            let verdict = match &duplicate {
                Some(first) => Some(duplicate_denial(&document, first)),
                None => Kind::of_object(object).map(|kind| {
                    non_string_annotations(object).unwrap_or_else(|| {
                        futures::executor::block_on(policy::decide(
                            &source,
                            Endpoint::Mutate,
                            kind,
                            object,
                        ))
                        .verdict
                    })
                }),
            };
            Checked { document, verdict }
        })
        .collect()
}

/// The identity of an object that links a KCP or KCT to its Cluster (Cluster, KCP, KCT, MachineDeployment): API
/// group, kind, namespace (`default` when unset, as kubectl applies it) and name.
fn linked_identity(object: &Value) -> Option<(String, String, String, String)> {
    let field = |p: &str| object.pointer(p).and_then(Value::as_str);
    let kind = field("/kind")?;
    if !matches!(
        kind,
        "Cluster" | "KubeadmControlPlane" | "KubeadmConfigTemplate" | "MachineDeployment"
    ) {
        return None;
    }
    let group = field("/apiVersion")?.split('/').next()?;
    if !matches!(
        group,
        "cluster.x-k8s.io" | "controlplane.cluster.x-k8s.io" | "bootstrap.cluster.x-k8s.io"
    ) {
        return None;
    }
    let namespace = field("/metadata/namespace")
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    Some((
        group.to_string(),
        kind.to_string(),
        namespace.to_string(),
        field("/metadata/name")?.to_string(),
    ))
}

/// A second definition of a Cluster, KCP, KCT or MachineDeployment: kubectl would apply both and keep the last, but
/// the links (which Cluster's settings a KCP or KCT gets) are only well defined with one.
fn duplicate_denial(document: &Document, first: &str) -> Verdict {
    Verdict::Deny {
        message: format!(
            "{} is also defined at {first}: kubectl would apply both and keep the last, so which settings apply is \
             ambiguous; keep one definition",
            document.describe()
        ),
        rules: vec!["duplicate-object".to_string()],
        warnings: Vec::new(),
    }
}

/// Annotation values a YAML file spells as numbers or booleans (`CALICO_BLOCK_SIZE: 26`, `...: true`). The API
/// server never sees them (kubectl refuses the file), so the policy reads only strings; the CLI must say so rather
/// than judge the object without them.
fn non_string_annotations(object: &serde_json::Value) -> Option<Verdict> {
    let annotations = object.pointer("/metadata/annotations")?.as_object()?;
    let lines: Vec<String> = annotations
        .iter()
        .filter(|(_, v)| !v.is_string() && !v.is_null())
        .map(|(k, v)| match v {
            // Safe to spell back: YAML reads only these words as booleans.
            serde_json::Value::Bool(b) => {
                format!("- {k}: {b} is a boolean, not a string: quote it, as {k}: \"{b}\"")
            }
            // A number is shown as YAML read it, which may not be what was written (1.10 reads as 1.1, 026 as octal 22):
            // the user must quote their own spelling.
            other => {
                let shown: String = other.to_string().chars().take(60).collect();
                format!(
                    "- {k}: YAML reads this value as {shown}, not a string: put the value in quotes exactly as you \
                     wrote it"
                )
            }
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    Some(Verdict::Deny {
        message: format!(
            "annotation values must be strings, and kubectl refuses this manifest:\n{}",
            lines.join("\n")
        ),
        rules: vec!["annotation-not-a-string".to_string()],
        warnings: Vec::new(),
    })
}

/// The files to read: each argument, or for a directory the `.yaml`, `.yml` and `.json` files directly in it, in
/// name order (as `kubectl apply -f DIR` without `-R`).
fn expand(files: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for file in files {
        let path = std::path::Path::new(file);
        if file == "-" || !path.is_dir() {
            out.push(file.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| format!("{file}: {e}"))? {
            let entry = entry.map_err(|e| format!("{file}: {e}"))?;
            let p = entry.path();
            let manifest = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            // Subdirectories are not read (no -R); a manifest name that is not a readable file (a broken link)
            // is an error when it is read, as with kubectl.
            if manifest && !p.is_dir() {
                found.push(p.display().to_string());
            }
        }
        if found.is_empty() {
            return Err(format!(
                "{file}: no .yaml, .yml or .json files in this directory (subdirectories are not read)"
            ));
        }
        found.sort();
        out.append(&mut found);
    }
    Ok(out)
}

fn read_all(files: &[String], err: &mut dyn Write) -> Option<Vec<Document>> {
    let files = match expand(files) {
        Ok(files) => files,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return None;
        }
    };
    let mut docs = Vec::new();
    for file in &files {
        match manifest::read(file) {
            Ok(mut d) => docs.append(&mut d),
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return None;
            }
        }
    }
    if let Some(doc) = docs.iter().find(|d| {
        ["/apiVersion", "/kind"].iter().any(|p| {
            d.object
                .pointer(p)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
    }) {
        let _ = writeln!(
            err,
            "error: {} ({}): not a Kubernetes object: apiVersion and kind are required (kubectl refuses it too)",
            doc.path,
            doc.position()
        );
        return None;
    }
    if docs.is_empty() {
        // kubectl apply refuses such an input too ("no objects passed to apply"): a pipeline that checks nothing
        // must not pass.
        let _ = writeln!(
            err,
            "error: no Kubernetes objects in {}: every document is empty or a List without items",
            files
                .iter()
                .map(|f| if f == "-" {
                    crate::manifest::STDIN_NAME
                } else {
                    f.as_str()
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        return None;
    }
    Some(docs)
}

/// Write `text` to `out` and flush it; a failure (a closed pipe, a full disk) is exit code 2, not a silent success.
fn emit(text: &[u8], out: &mut dyn Write, err: &mut dyn Write) -> Result<(), i32> {
    out.write_all(text).and_then(|()| out.flush()).map_err(|e| {
        let _ = writeln!(err, "error: cannot write the output: {e}");
        2
    })
}

/// Print warnings and denials; return whether anything was denied, or (`strict`) warned about.
fn report(checked: &[Checked], strict: bool, out: &mut dyn Write) -> bool {
    let mut denied = false;
    let mut warned = 0usize;
    for c in checked {
        let place = format!(
            "{} ({}, {})",
            c.document.path,
            c.document.position(),
            c.document.describe()
        );
        match &c.verdict {
            Some(Verdict::Deny {
                message, warnings, ..
            }) => {
                denied = true;
                warned += warnings.len();
                for w in warnings {
                    let _ = writeln!(out, "Warning: {place}: {w}");
                }
                let _ = writeln!(out, "{place}: denied the request: {message}");
            }
            Some(Verdict::Allow { warnings, .. }) => {
                warned += warnings.len();
                for w in warnings {
                    let _ = writeln!(out, "Warning: {place}: {w}");
                }
            }
            None => {}
        }
    }
    if strict && warned > 0 {
        let _ = writeln!(
            out,
            "failed: {warned} warning{} (--strict)",
            if warned == 1 { "" } else { "s" }
        );
    }
    denied || (strict && warned > 0)
}

/// `check`: exit code 0, 1 or 2.
pub fn run_check(args: &FilesArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(docs) = read_all(&args.files, err) else {
        return 2;
    };
    let checked = check_documents(docs, &args.namespace);
    let mut text = Vec::new();
    let denied = report(&checked, args.strict, &mut text);
    if !denied {
        let acted = checked.iter().filter(|c| c.verdict.is_some()).count();
        let _ = writeln!(
            text,
            "ok: {} document{}, {acted} checked by capi-calico",
            checked.len(),
            if checked.len() == 1 { "" } else { "s" }
        );
    }
    match emit(&text, out, err) {
        Ok(()) => i32::from(denied),
        Err(code) => code,
    }
}

/// `render`: documents with the patch applied on `out`, problems on `err`; exit code 0, 1 or 2.
pub fn run_render(args: &RenderArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(docs) = read_all(&args.files.files, err) else {
        return 2;
    };
    let checked = check_documents(docs, &args.files.namespace);
    let denied = report(&checked, args.files.strict, err);
    if denied {
        // Nothing on standard output: `render | kubectl apply -f -` without `pipefail` must not apply the objects
        // the webhook would refuse (kubectl then refuses the empty input).
        let _ = writeln!(err, "error: no manifest printed");
        return 1;
    }
    let mut rendered: Vec<Value> = Vec::with_capacity(checked.len());
    for c in checked {
        let what = c.document.describe();
        let mut object = c.document.object;
        if let Some(verdict) = &c.verdict
            && let Err(e) = json_patch::patch(&mut object, policy::patch_of(verdict))
        {
            let _ = writeln!(err, "error: {what}: the patch does not apply: {e}");
            return 2;
        }
        rendered.push(object);
    }
    let text = match args.output {
        OutputFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": rendered});
            serde_json::to_string_pretty(&list)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())
        }
        OutputFormat::Yaml => rendered
            .iter()
            .map(|doc| serde_saphyr::to_string(doc).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(|docs| docs.iter().map(|d| format!("---\n{d}")).collect()),
    };
    match text {
        Ok(text) => match emit(text.as_bytes(), out, err) {
            Ok(()) => 0,
            Err(code) => code,
        },
        Err(e) => {
            let _ = writeln!(err, "error: cannot print the result: {e}");
            2
        }
    }
}

/// `bundle`: print the ConfigMaps as a JSON List; exit 0, or 2 on usage/I/O errors.
pub fn run_bundle(args: &BundleArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let version = match crate::settings::values::parse_version(&args.version) {
        Ok(version) => version,
        Err(e) => {
            let _ = writeln!(err, "error: --version {:?}: {}", args.version, e.message);
            return 2;
        }
    };
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let result = read(&args.operator).and_then(|operator| {
        let operator = match &args.operator_image {
            Some(image) => crate::delivery::bundle::set_operator_image(&operator, image)
                .map_err(|e| e.to_string())?,
            None => operator,
        };
        let operator = match &args.operator_pull_secret {
            Some(secret) => crate::delivery::bundle::set_operator_pull_secret(&operator, secret)
                .map_err(|e| e.to_string())?,
            None => operator,
        };
        let crds = read(&args.crds)?;
        crate::delivery::bundle::bundle(&operator, &crds, &version, &args.namespace).map_err(|e| {
            e.naming_inputs(
                &format!("--operator {}", args.operator.display()),
                &format!("--crds {}", args.crds.display()),
            )
            .to_string()
        })
    });
    match result.and_then(|items| {
        serde_json::to_string_pretty(&crate::delivery::bundle::as_list(items))
            .map_err(|e| e.to_string())
    }) {
        Ok(text) => match emit(format!("{text}\n").as_bytes(), out, err) {
            Ok(()) => 0,
            Err(code) => code,
        },
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            2
        }
    }
}

/// `serve`: run until SIGTERM/Ctrl-C; exit 0 after a clean shutdown, 1 on a start-up or serving error.
pub fn run_serve(args: &ServeArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "capi-calico-webhook stopped");
            eprintln!("error: {e}");
            1
        }
    }
}

/// Raise the soft limit on open files to the hard one, as Go programs do on their own: container runtimes may start
/// the process with 1024 (containerd 2), fewer than `--max-connections` and the probe port, the Kubernetes client
/// and the certificate watch need together; past it, accepting fails and the liveness probe goes unanswered.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current == limit.maximum {
        return;
    }
    limit.current = limit.maximum;
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => tracing::info!(
            from = before.unwrap_or(u64::MAX),
            to = limit.maximum.unwrap_or(u64::MAX),
            "raised the open-files limit"
        ),
        Err(e) => tracing::warn!(
            limit = before.unwrap_or(u64::MAX),
            error = %e,
            "cannot raise the open-files limit"
        ),
    }
}

async fn kube_client(args: &ServeArgs) -> Result<kube::Client, String> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

async fn serve(args: &ServeArgs) -> Result<(), String> {
    use std::sync::Arc;

    use crate::{
        admission::Webhook,
        cluster::{NoLookup, ServeSource, live::LiveSource},
        delivery::reconciler::{ReconcilerConfig, run_reconciler_until},
        server,
    };

    server::init_logging(args.log_format);
    raise_open_files_limit();
    let config = args.server_config()?;
    let client = if args.no_cluster_lookup {
        tracing::info!(
            "cluster access disabled by --no-cluster-lookup: KCP/KCT Cluster lookup and reconciler are off"
        );
        None
    } else {
        match kube_client(args).await {
            Ok(client) => Some(client),
            Err(e) => {
                // In a pod (the API server's Service variables are set) cluster access is expected: without it every
                // KCP/KCT would be admitted without its Cluster's settings while the pod reports ready.
                if args.kubeconfig.is_some()
                    || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                {
                    return Err(format!(
                        "cluster access could not be set up: {e}; fix --kubeconfig or the pod's service account token \
                         (--no-cluster-lookup serves without it: KCPs/KCTs then get no Cluster settings)"
                    ));
                }
                tracing::warn!(
                    error = %e,
                    "no cluster access: KCP/KCT Cluster lookup and the reconciler are off; objects without their \
                     own capi-calico.io annotations are admitted unchanged with a warning"
                );
                None
            }
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(async move {
        server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let source = match &client {
        Some(client) => {
            tracing::info!("Cluster lookup on: watching clusters and machinedeployments");
            ServeSource::Live(Box::new(LiveSource::start(
                client.clone(),
                args.lookup_timeout,
                &args.bundle_namespace,
            )))
        }
        None => ServeSource::Off(NoLookup),
    };
    let reconciler = match (&client, args.no_reconciler) {
        (Some(client), false) => {
            let config = ReconcilerConfig {
                bundle_namespace: args.bundle_namespace.clone(),
                instance: std::env::var("POD_NAME").ok(),
                resync: args.resync_interval,
                concurrency: args.reconcile_concurrency,
            };
            let client = client.clone();
            let stop = stopped();
            Some(tokio::spawn(async move {
                if let Err(e) = run_reconciler_until(client, config, stop).await {
                    tracing::error!(error = %e, "the Calico delivery reconciler stopped");
                }
            }))
        }
        _ => None,
    };
    let linker = match (&client, args.no_template_linker) {
        (Some(client), false) => Some(tokio::spawn(crate::cluster::linker::run_linker_until(
            client.clone(),
            args.resync_interval,
            std::env::var("POD_NAME").ok(),
            stopped(),
        ))),
        _ => None,
    };
    let result = server::run(config, Arc::new(Webhook::new(source)), stopped()).await;
    for task in [reconciler, linker].into_iter().flatten() {
        task.abort();
    }
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `serve` without flags gives exactly the library's defaults: the flags' default values and
    /// [`crate::server::ServerConfig::default`] / [`crate::delivery::reconciler::ReconcilerConfig::default`] agree.
    #[test]
    fn serve_defaults_are_the_library_defaults() {
        let Cli {
            command: Command::Serve(args),
            ..
        } = Cli::try_parse_from(["capi-calico-webhook", "serve"]).expect("parses")
        else {
            panic!("serve");
        };
        let got = args.server_config().expect("valid");
        let want = crate::server::ServerConfig::default();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        let reconciler = crate::delivery::reconciler::ReconcilerConfig::default();
        assert_eq!(args.resync_interval, reconciler.resync);
        assert_eq!(args.reconcile_concurrency, reconciler.concurrency);
    }

    /// Two lookups must fit in the request deadline; without cluster lookup the lookup timeout is not used.
    #[test]
    fn the_lookup_timeout_must_leave_room_for_two_lookups() {
        let config = |flags: &[&str]| {
            let mut argv = vec!["capi-calico-webhook", "serve"];
            argv.extend_from_slice(flags);
            let Cli {
                command: Command::Serve(args),
                ..
            } = Cli::try_parse_from(argv).expect("parses")
            else {
                panic!("serve");
            };
            args.server_config()
        };
        for (flags, ok) in [
            (&["--lookup-timeout", "1999ms"][..], true),
            (&["--lookup-timeout", "2s"], false),
            (&["--lookup-timeout", "3s", "--request-timeout", "7s"], true),
            (&["--lookup-timeout", "3s", "--no-cluster-lookup"], true),
        ] {
            match config(flags) {
                Ok(_) => assert!(ok, "{flags:?} accepted"),
                Err(e) => {
                    assert!(!ok, "{flags:?}: {e}");
                    assert!(e.contains("set --lookup-timeout below 2s"), "{e}");
                }
            }
        }
    }

    /// clap wraps help text at 100 columns: every line of ours fits, so none is broken mid-phrase.
    #[test]
    fn help_texts_fit_without_rewrapping() {
        for text in [ANNOTATIONS_HELP, BUNDLE_HELP] {
            for line in text.lines() {
                assert!(
                    line.chars().count() <= 100,
                    "{} chars: {line}",
                    line.chars().count()
                );
            }
        }
    }

    #[test]
    fn durations_parse_and_zero_is_refused_where_it_would_break_serving() {
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("10m"),
            Ok(std::time::Duration::from_secs(600))
        );
        assert!(parse_duration(&format!("{}m", u64::MAX)).is_err());
        assert!(parse_duration("5h").is_err());
        // Long enough to overflow a deadline: refused, not a panic on every request.
        assert_eq!(parse_duration("1440m"), Ok(MAX_DURATION));
        for long in ["1441m", "86401s", &format!("{}s", u64::MAX / 2)] {
            assert!(parse_duration(long).is_err(), "{long}");
        }
        for flag in ["--request-timeout", "--lookup-timeout"] {
            let err = Cli::try_parse_from(["capi-calico-webhook", "serve", flag, "0s"])
                .expect_err("zero timeout");
            assert!(
                err.to_string().contains("must be more than zero"),
                "{flag}: {err}"
            );
        }
        assert!(parse_positive_duration("0s").is_err());
        let err = Cli::try_parse_from(["capi-calico-webhook", "serve", "--resync-interval", "0s"])
            .expect_err("zero resync");
        assert!(err.to_string().contains("must be more than zero"), "{err}");
        assert!(
            Cli::try_parse_from([
                "capi-calico-webhook",
                "serve",
                "--reconcile-concurrency",
                "0"
            ])
            .is_err()
        );
    }

    /// 0 would not mean "unlimited" (the server would take it as 1), and a bad namespace would fail only at apply.
    #[test]
    fn counts_and_namespaces_are_checked_when_parsed() {
        for flag in [
            "--max-connections",
            "--max-concurrent-reviews",
            "--max-body-bytes",
        ] {
            let err = Cli::try_parse_from(["capi-calico-webhook", "serve", flag, "0"])
                .expect_err("zero count");
            assert!(err.to_string().contains("0 is not in 1.."), "{flag}: {err}");
            assert!(Cli::try_parse_from(["capi-calico-webhook", "serve", flag, "1"]).is_ok());
        }
        for bad in ["Bad_NS", "a.b", "a-", &"a".repeat(64)] {
            for args in [
                vec!["serve", "--bundle-namespace", bad],
                vec![
                    "bundle",
                    "--version",
                    "v3.31.7",
                    "--operator",
                    "o",
                    "--crds",
                    "c",
                    "--namespace",
                    bad,
                ],
            ] {
                let err = Cli::try_parse_from(std::iter::once("capi-calico-webhook").chain(args))
                    .expect_err(bad);
                assert!(
                    err.to_string().contains("not a namespace name"),
                    "{bad}: {err}"
                );
            }
        }
        assert!(
            Cli::try_parse_from([
                "capi-calico-webhook",
                "serve",
                "--bundle-namespace",
                "calico-bundles"
            ])
            .is_ok()
        );
    }
}
