//! Settings -> the files and commands capi-calico-webhook owns in a KubeadmControlPlane or KubeadmConfigTemplate,
//! and the JSON patch that puts exactly those there.
//!
//! Pure: no I/O. The node scripts are embedded from `scripts/` with `include_str!`. The layout and the ordering
//! decisions are described in `docs/injection.md`.
//!
//! - [`desired`] computes the [`Injection`] (files, pre- and post-kubeadm commands) for a [`Target`].
//! - [`patch`] computes the JSON patch that turns an object into one holding exactly that injection, keeping the
//!   user's own entries, their order and content. An already-correct object yields an empty patch.
//! - [`verify`] lists what is missing, altered or duplicated (for the validating webhook).
//! - [`apply`] applies a patch to a copy of an object (for `render` and tests).

mod patch;
mod render;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod script_tests;

use serde_json::{Map, Value};

use crate::settings::Settings;

pub use patch::{apply, carries_injection, is_ours_command, is_ours_path, patch, verify};

/// Every path the webhook injects starts with this directory. The whole directory is reserved: a user file under
/// it, or a user command mentioning it, is refused (see [`patch`]).
pub const DIR: &str = "/etc/capi-calico/";
/// The calicoctl installer script.
pub const INSTALL_SCRIPT_PATH: &str = "/etc/capi-calico/install-calicoctl.sh";
/// The installer's data file (`key=value` lines: version, URL template, checksums).
pub const CALICOCTL_CONF_PATH: &str = "/etc/capi-calico/calicoctl.conf";
/// The first (often only) BGPPeers file; further ones are `bgppeers-2.yaml`, `bgppeers-3.yaml`, ...
pub const BGP_PEERS_PATH: &str = "/etc/capi-calico/bgppeers.yaml";
/// The BGPConfiguration `default` (node-to-node mesh off, AS number), one line of JSON (also valid YAML).
pub const BGP_CONFIGURATION_PATH: &str = "/etc/capi-calico/bgpconfiguration.yaml";
/// The script that waits for Calico and applies the peers, then the BGPConfiguration.
pub const APPLY_SCRIPT_PATH: &str = "/etc/capi-calico/apply-bgp.sh";
/// The systemd unit that runs the apply script, again after a failure and at boot, until it succeeds once.
pub const APPLY_UNIT_PATH: &str = "/etc/capi-calico/capi-calico-apply-bgp.service";
/// Where the installer puts calicoctl. A user file at this path conflicts with the installer.
pub const CALICOCTL_BINARY_PATH: &str = "/usr/local/bin/calicoctl";
/// Where it goes instead when `/usr/local/bin` cannot be written (Flatcar: `/usr` is read-only).
pub const CALICOCTL_FALLBACK_PATH: &str = "/opt/bin/calicoctl";

/// The `preKubeadmCommands` entry that runs the installer. A constant: no setting ever reaches a command line. It
/// never fails: Cluster API's Ignition bootstrap runs the commands and kubeadm in one `set -e` script, where a failed
/// install would stop the machine from ever joining (the installer logs why; on control-plane machines the BGP apply
/// runs it again).
pub const INSTALL_COMMAND: &str = "/bin/bash /etc/capi-calico/install-calicoctl.sh || true";

/// The `postKubeadmCommands` entry that starts the BGP apply in the background, so the bootstrap is never blocked:
/// it enables and starts the systemd unit [`APPLY_UNIT`] (linked from [`APPLY_UNIT_PATH`]; `--no-block` returns at
/// once), or, where systemctl is missing or fails (no systemd as PID 1), starts the script detached. A constant.
pub const APPLY_COMMAND: &str = "if command -v systemctl >/dev/null 2>&1 && \
systemctl enable --now --no-block /etc/capi-calico/capi-calico-apply-bgp.service; then :; \
else nohup setsid /bin/bash /etc/capi-calico/apply-bgp.sh </dev/null >/dev/null 2>&1 & fi";

/// The installer script (bash, `set -eu`).
pub const INSTALL_SCRIPT: &str = include_str!("scripts/install-calicoctl.sh");
/// The BGP apply script (bash, `set -eu`).
pub const APPLY_SCRIPT: &str = include_str!("scripts/apply-bgp.sh");
/// The systemd unit that runs [`APPLY_SCRIPT`] (`Restart=on-failure`, enabled for boot).
pub const APPLY_UNIT: &str = include_str!("scripts/capi-calico-apply-bgp.service");
/// Every node script, the constant bulk of an injection.
pub const SCRIPTS: [&str; 2] = [INSTALL_SCRIPT, APPLY_SCRIPT];

/// CAPI limit: characters per command and per file `content`.
pub const MAX_CONTENT_CHARS: usize = 10240;
/// CAPI limit: entries in `files`.
pub const MAX_FILES: usize = 200;
/// CAPI limit: entries in `preKubeadmCommands` / `postKubeadmCommands`.
pub const MAX_COMMANDS: usize = 1000;

/// Owner of every injected file.
pub const OWNER: &str = "root:root";

/// Which object is mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A KubeadmControlPlane: entries live under `/spec/kubeadmConfigSpec`.
    ControlPlane,
    /// A KubeadmConfigTemplate (workers): entries live under `/spec/template/spec`.
    Workers,
}

impl Target {
    /// The object keys leading to the kubeadm config spec (same in v1beta1 and v1beta2).
    pub fn spec_path(self) -> &'static [&'static str] {
        match self {
            Target::ControlPlane => &["spec", "kubeadmConfigSpec"],
            Target::Workers => &["spec", "template", "spec"],
        }
    }

    /// The same as a JSON pointer string, e.g. `/spec/kubeadmConfigSpec`.
    pub fn spec_pointer(self) -> &'static str {
        match self {
            Target::ControlPlane => "/spec/kubeadmConfigSpec",
            Target::Workers => "/spec/template/spec",
        }
    }
}

/// How every injected file is written into a `files[]` entry. Bootstrap providers put `files` into cloud-init
/// user-data that starts with `## template: jinja`, so cloud-init renders each plain `content` as a Jinja template:
/// `{{ ... }}` would be evaluated as root on the node and a stray `{#` (as in the shell's `${#var}`) makes the whole
/// user-data fail to render, so the node never bootstraps. Base64 text contains none of Jinja's markers, and
/// cloud-init (and Ignition) decode it before writing the file.
pub const ENCODING: &str = "base64";

/// A file's bytes as they stand in its `files[]` entry's `content` (see [`ENCODING`]).
pub fn encode_content(bytes: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The most bytes a file may hold so that its base64 text stays within CAPI's [`MAX_CONTENT_CHARS`].
pub const MAX_FILE_BYTES: usize = MAX_CONTENT_CHARS / 4 * 3;

/// One file the webhook writes on the node (a `files[]` entry, base64-encoded: see [`ENCODING`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFile {
    pub path: String,
    pub owner: &'static str,
    pub permissions: &'static str,
    /// The file's bytes on the node.
    pub content: String,
    /// `content` in base64, as it stands in the object.
    encoded: String,
}

impl InjectedFile {
    /// A file with `content` (the bytes on the node).
    pub fn new(
        path: impl Into<String>,
        owner: &'static str,
        permissions: &'static str,
        content: String,
    ) -> InjectedFile {
        let encoded = encode_content(&content);
        InjectedFile {
            path: path.into(),
            owner,
            permissions,
            content,
            encoded,
        }
    }

    /// `content` in base64, as it stands in the object.
    pub fn encoded_content(&self) -> &str {
        &self.encoded
    }

    /// The `files[]` entry exactly as injected: `path`, `owner`, `permissions`, `encoding: base64`, the base64
    /// `content`, and nothing else.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(5);
        m.insert("path".into(), Value::String(self.path.clone()));
        m.insert("owner".into(), Value::String(self.owner.to_string()));
        m.insert(
            "permissions".into(),
            Value::String(self.permissions.to_string()),
        );
        m.insert("encoding".into(), Value::String(ENCODING.to_string()));
        m.insert("content".into(), Value::String(self.encoded.clone()));
        Value::Object(m)
    }

    /// `entry == self.to_json()`, without building the JSON.
    pub fn matches(&self, entry: &Value) -> bool {
        let Value::Object(m) = entry else {
            return false;
        };
        let field = |key: &str| m.get(key).and_then(Value::as_str);
        m.len() == 5
            && field("path") == Some(self.path.as_str())
            && field("owner") == Some(self.owner)
            && field("permissions") == Some(self.permissions)
            && field("encoding") == Some(ENCODING)
            && field("content") == Some(self.encoded.as_str())
    }
}

/// Everything the webhook owns in one object. Commands are `&'static str`: compile-time constants by type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Injection {
    /// In the order they are appended when missing.
    pub files: Vec<InjectedFile>,
    pub pre_kubeadm_commands: Vec<&'static str>,
    pub post_kubeadm_commands: Vec<&'static str>,
}

impl Injection {
    /// True when nothing is injected (an opted-in cluster without INSTALL_CALICOCTL): [`patch`] then only removes
    /// stale entries of ours.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.pre_kubeadm_commands.is_empty()
            && self.post_kubeadm_commands.is_empty()
    }

    /// The injected file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&InjectedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// A short digest of everything injected (16 hex digits, a valid label value): equal injections, equal digests.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for f in &self.files {
            for part in [f.path.as_str(), f.owner, f.permissions, f.encoded_content()] {
                hasher.update(part.len().to_le_bytes());
                hasher.update(part);
            }
        }
        for commands in [&self.pre_kubeadm_commands, &self.post_kubeadm_commands] {
            hasher.update(commands.len().to_le_bytes());
            for c in commands {
                hasher.update(c.len().to_le_bytes());
                hasher.update(c);
            }
        }
        hex::encode(&hasher.finalize()[..8])
    }
}

/// Why no injection or patch could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutationError {
    /// The settings break an invariant `settings::resolve` should have enforced.
    #[error("inconsistent Calico settings: {0}")]
    InvalidSettings(String),
    /// Rendered content cannot be placed within CAPI's limits.
    #[error("{0}")]
    TooLarge(String),
    /// The object's shape is not what a KubeadmControlPlane / KubeadmConfigTemplate looks like.
    #[error("malformed object: {0}")]
    Malformed(String),
    /// User entries that conflict with what the webhook must inject (each of them, at least one).
    #[error("{}", conflicts_text(.0))]
    Conflict(Vec<String>),
    /// Applying a patch failed.
    #[error("cannot apply patch: {0}")]
    Apply(String),
}

/// The conflicts named in one message, at most this many (the rest counted), like the settings' problems.
const MAX_CONFLICTS_SHOWN: usize = 25;

fn conflicts_text(conflicts: &[String]) -> String {
    match conflicts {
        [one] => format!("conflict with an existing entry: {one}"),
        many => {
            let shown = &many[..many.len().min(MAX_CONFLICTS_SHOWN)];
            let more = match many.len() - shown.len() {
                0 => String::new(),
                n => format!("; and {n} more"),
            };
            format!(
                "{} conflicts with existing entries: {}{more}",
                many.len(),
                shown.join("; ")
            )
        }
    }
}

/// The files and commands the webhook owns for `target` under `settings`.
///
/// - `install_calicoctl`: the installer script, its data file and one `preKubeadmCommands` entry (both targets).
/// - `configure_bgp` and [`Target::ControlPlane`]: the peers file(s), the BGPConfiguration, the apply script and one
///   `postKubeadmCommands` entry. Workers never get BGP files (they have no admin kubeconfig).
pub fn desired(settings: &Settings, target: Target) -> Result<Injection, MutationError> {
    let mut inj = Injection::default();
    if settings.install_calicoctl {
        inj.files.push(InjectedFile::new(
            INSTALL_SCRIPT_PATH,
            OWNER,
            "0755",
            INSTALL_SCRIPT.into(),
        ));
        inj.files.push(InjectedFile::new(
            CALICOCTL_CONF_PATH,
            OWNER,
            "0644",
            render::calicoctl_conf(settings)?,
        ));
        inj.pre_kubeadm_commands.push(INSTALL_COMMAND);
    }
    if settings.configure_bgp && target == Target::ControlPlane {
        if !settings.install_calicoctl {
            return Err(MutationError::InvalidSettings(
                "CONFIGURE_CALICO_BGP_SETTINGS=true needs INSTALL_CALICOCTL=true".into(),
            ));
        }
        let as_number = settings.as_number.ok_or_else(|| {
            MutationError::InvalidSettings(
                "CONFIGURE_CALICO_BGP_SETTINGS=true needs CALICO_BGP_AS_NUMBER".into(),
            )
        })?;
        let peer_files = render::peers_files(&settings.route_reflectors)?;
        for (i, content) in peer_files.into_iter().enumerate() {
            inj.files
                .push(InjectedFile::new(peers_path(i + 1), OWNER, "0600", content));
        }
        inj.files.push(InjectedFile::new(
            BGP_CONFIGURATION_PATH,
            OWNER,
            "0600",
            render::bgp_configuration(as_number),
        ));
        inj.files.push(InjectedFile::new(
            APPLY_SCRIPT_PATH,
            OWNER,
            "0755",
            APPLY_SCRIPT.into(),
        ));
        inj.files.push(InjectedFile::new(
            APPLY_UNIT_PATH,
            OWNER,
            "0644",
            APPLY_UNIT.into(),
        ));
        inj.post_kubeadm_commands.push(APPLY_COMMAND);
    }
    for f in &inj.files {
        if f.encoded.len() > MAX_CONTENT_CHARS {
            return Err(MutationError::TooLarge(format!(
                "{} would have {} characters in base64, CAPI allows {MAX_CONTENT_CHARS} per file",
                f.path,
                f.encoded.len()
            )));
        }
    }
    Ok(inj)
}

/// Path of the `n`-th peers file (1-based): `bgppeers.yaml`, `bgppeers-2.yaml`, `bgppeers-3.yaml`, ...
pub fn peers_path(n: usize) -> String {
    if n <= 1 {
        BGP_PEERS_PATH.to_string()
    } else {
        format!("{DIR}bgppeers-{n}.yaml")
    }
}
