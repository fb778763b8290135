//! File contents: the installer's data file, the canonical BGPPeers YAML and the one-line BGPConfiguration JSON.
//!
//! The YAML emitter is deliberately tiny and canonical: block style, mapping keys sorted, every string scalar
//! double-quoted with ASCII-only escapes. Quoting every string removes the YAML 1.1 ambiguities (`on`, `no`, `0755`,
//! `1e3`, ...) that calicoctl's Go YAML parser would otherwise apply, and makes the output byte-for-byte stable.

use serde_json::{Map, Value};

use super::{MAX_FILE_BYTES, MutationError};
use crate::settings::{BgpPeer, Settings};

/// Comment placed right after the first `---` of every BGPPeers file. It must not precede that marker:
/// calicoctl splits files at `"\n---"` and would parse a comment-only leading chunk as a resource without a kind.
pub(crate) const YAML_HEADER: &str =
    "# Managed by capi-calico-webhook: generated from capi-calico.io/ annotations.\n";

/// `docs` (each starting with `---\n`) with [`YAML_HEADER`] inserted after the first marker.
fn with_header(docs: &str) -> String {
    let body = docs.strip_prefix("---\n").unwrap_or(docs);
    format!("---\n{YAML_HEADER}{body}")
}

/// `/etc/capi-calico/calicoctl.conf`: `key=value` lines read by install-calicoctl.sh with `read` (never sourced).
pub(crate) fn calicoctl_conf(settings: &Settings) -> Result<String, MutationError> {
    let v = settings.calico_version;
    let version = format!("v{}.{}.{}", v.major, v.minor, v.patch);
    let url = &settings.calicoctl.url_template;
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MutationError::InvalidSettings(
            "CALICOCTL_URL must be non-empty printable ASCII without spaces".into(),
        ));
    }
    if !url.contains("{version}") || !url.contains("{arch}") {
        // Not fatal for the script, but resolve() guarantees both placeholders; refuse rather than guess.
        return Err(MutationError::InvalidSettings(
            "CALICOCTL_URL must contain {version} and {arch}".into(),
        ));
    }
    let mut out = String::from(
        "# Managed by capi-calico-webhook. Read line by line by install-calicoctl.sh; never sourced.\n",
    );
    out.push_str(&format!("version={version}\n"));
    out.push_str(&format!("url_template={url}\n"));
    let mut any = false;
    for (arch, sum) in [
        ("amd64", &settings.calicoctl.sha256_amd64),
        ("arm64", &settings.calicoctl.sha256_arm64),
    ] {
        if let Some(sum) = sum {
            let s = &sum.0;
            if s.len() != 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(MutationError::InvalidSettings(format!(
                    "calicoctl SHA-256 for {arch} must be 64 lower-case hex digits"
                )));
            }
            out.push_str(&format!("sha256_{arch}={s}\n"));
            any = true;
        }
    }
    if !any {
        return Err(MutationError::InvalidSettings(format!(
            "no calicoctl SHA-256 known for {version}: refusing to install an unverified binary"
        )));
    }
    Ok(out)
}

/// One BGPPeer as a YAML document (starting with `---`).
pub(crate) fn peer_document(peer: &BgpPeer) -> String {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(peer.name.clone()));
    let mut doc = Map::new();
    doc.insert(
        "apiVersion".into(),
        Value::String("projectcalico.org/v3".into()),
    );
    doc.insert("kind".into(), Value::String("BGPPeer".into()));
    doc.insert("metadata".into(), Value::Object(meta));
    doc.insert("spec".into(), Value::Object(peer.spec.clone()));
    let mut out = String::from("---\n");
    emit_map(&mut out, 0, &doc);
    out
}

/// The peers as one or more files, each within [`MAX_FILE_BYTES`] (so that its base64 text fits CAPI's limit).
/// Documents are packed greedily in the validated order; a document is never split.
pub(crate) fn peers_files(peers: &[BgpPeer]) -> Result<Vec<String>, MutationError> {
    if peers.is_empty() {
        return Err(MutationError::InvalidSettings(
            "CONFIGURE_CALICO_BGP_SETTINGS=true needs at least one peer in CALICO_ROUTE_REFLECTORS"
                .into(),
        ));
    }
    let mut files: Vec<String> = Vec::new();
    let mut current = String::new();
    for peer in peers {
        let doc = peer_document(peer);
        if YAML_HEADER.len() + doc.len() > MAX_FILE_BYTES {
            return Err(MutationError::TooLarge(format!(
                "BGPPeer {:?} renders to {} characters, more than the {MAX_FILE_BYTES} that fit in one file \
                 (CAPI allows 10240 characters of base64 per file); shorten it in CALICO_ROUTE_REFLECTORS \
                 (fewer filters, shorter selectors)",
                peer.name,
                doc.len()
            )));
        }
        if !current.is_empty() && YAML_HEADER.len() + current.len() + doc.len() > MAX_FILE_BYTES {
            files.push(with_header(&std::mem::take(&mut current)));
        }
        current.push_str(&doc);
    }
    files.push(with_header(&current));
    Ok(files)
}

/// `/etc/capi-calico/bgpconfiguration.yaml`: BGPConfiguration `default`, mesh off, the cluster's AS number, as ONE
/// line of JSON (keys in this fixed order) and a newline.
///
/// apply-bgp.sh uses the file twice: `calicoctl create -f` when `default` does not exist yet (JSON is YAML, and
/// calicoctl reads both), and `calicoctl patch bgpconfiguration default --patch "$(<file)"` when it does.
/// calicoctl's patch is a strategic merge patch that must be a JSON document (apimachinery's `StrategicMergePatch`
/// `json.Unmarshal`s it): YAML, and so the "managed by" comment of the other files, would be rejected. Patched with
/// the whole resource, only `spec.asNumber` and `spec.nodeToNodeMeshEnabled` can change (`apiVersion`, `kind` and
/// `metadata.name` are the same as stored); every other field an operator set is kept.
pub(crate) fn bgp_configuration(as_number: u32) -> String {
    let doc = serde_json::json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"asNumber": as_number, "nodeToNodeMeshEnabled": false},
    });
    let mut out = doc.to_string();
    out.push('\n');
    out
}

/// Emit a mapping in block style at `indent`, keys sorted.
pub(crate) fn emit_map(out: &mut String, indent: usize, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in entries {
        pad(out, indent);
        out.push_str(&key(k));
        out.push(':');
        emit_child(out, indent, v);
    }
}

/// After `key:` or `-`: a scalar or empty collection on the same line, a collection on the next lines.
fn emit_child(out: &mut String, indent: usize, v: &Value) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(out, indent + 2, m);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_seq(out, indent + 2, a);
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

fn emit_seq(out: &mut String, indent: usize, items: &[Value]) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut inner = String::new();
                emit_map(&mut inner, indent + 2, m);
                out.push_str(&inner[indent + 1..]);
            }
            Value::Array(a) if !a.is_empty() => {
                let mut inner = String::new();
                emit_seq(&mut inner, indent + 2, a);
                out.push_str(&inner[indent + 1..]);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(item));
                out.push('\n');
            }
        }
    }
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A mapping key: plain when unambiguous, else double-quoted.
fn key(k: &str) -> String {
    const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !RESERVED.contains(&k.to_ascii_lowercase().as_str());
    if plain { k.to_string() } else { quote(k) }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A YAML double-quoted scalar using only ASCII (escapes valid in YAML 1.1 and 1.2).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}
