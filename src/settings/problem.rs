//! [`Problem`]: one user-visible complaint about an annotation, and how problems are rendered.
//!
//! Values are shown escaped (control characters, newlines, quotes, bidi controls) and truncated, so a hostile
//! value can never break a terminal line or smuggle terminal escape sequences into `kubectl` output.

use std::fmt;

use super::{PREFIX, Problem};

/// Values longer than this many characters are truncated for display.
pub const DISPLAY_VALUE_CHARS: usize = 60;

/// Stable rule identifiers (kebab-case). They are used as metrics labels: never rename one.
pub mod rules {
    /// `CUSTOM_CALICO_DEPLOYMENT` is not `true` or `false`.
    pub const OPT_IN_INVALID: &str = "opt-in-invalid";
    /// A key under the prefix that is not a known setting.
    pub const UNKNOWN_KEY: &str = "unknown-key";
    /// A boolean setting that is not `true` or `false`.
    pub const BOOL_INVALID: &str = "bool-invalid";
    /// An enum setting with a value outside its set (wrong case included).
    pub const ENUM_INVALID: &str = "enum-invalid";
    /// `CALICO_BLOCK_SIZE` is not a plain decimal integer.
    pub const BLOCK_SIZE_FORMAT: &str = "block-size-format";
    /// `CALICO_BLOCK_SIZE` outside 20..=32 (IPv4) or 116..=128 (IPv6).
    pub const BLOCK_SIZE_RANGE: &str = "block-size-range";
    /// The block size is smaller than the pool's prefix length.
    pub const BLOCK_SIZE_PREFIX: &str = "block-size-prefix";
    /// `CALICO_BLOCK_SIZE` implies a family the Cluster has no pod block for.
    pub const BLOCK_SIZE_FAMILY: &str = "block-size-family";
    /// `CALICO_POD_CIDR` is not a CIDR.
    pub const POD_CIDR_FORMAT: &str = "pod-cidr-format";
    /// `CALICO_POD_CIDR` has host bits set.
    pub const POD_CIDR_HOST_BITS: &str = "pod-cidr-host-bits";
    /// `CALICO_POD_CIDR` overlaps link-local space.
    pub const POD_CIDR_LINK_LOCAL: &str = "pod-cidr-link-local";
    /// `CALICO_POD_CIDR` is not inside any of the Cluster's pod cidrBlocks.
    pub const POD_CIDR_OUTSIDE_CLUSTER: &str = "pod-cidr-outside-cluster";
    /// IPIP, IPIPCrossSubnet or None without `CALICO_BGP_OPTION=Enabled`.
    pub const ENCAPSULATION_NEEDS_BGP: &str = "encapsulation-needs-bgp";
    /// IPIP on an IPv6 pool.
    pub const ENCAPSULATION_IPIP_IPV6: &str = "encapsulation-ipip-ipv6";
    /// An AS number that is not decimal or asdot.
    pub const AS_NUMBER_FORMAT: &str = "as-number-format";
    /// An AS number above 2147483647 (or an asdot half above 65535).
    pub const AS_NUMBER_RANGE: &str = "as-number-range";
    /// AS number 0.
    pub const AS_NUMBER_RESERVED: &str = "as-number-reserved";
    /// `CONFIGURE_CALICO_BGP_SETTINGS=true` without one of its prerequisites.
    pub const BGP_SETTINGS_PREREQUISITE: &str = "bgp-settings-prerequisite";
    /// `CALICO_VERSION` is not `vX.Y.Z`.
    pub const VERSION_FORMAT: &str = "version-format";
    /// `CALICO_VERSION` is older than the oldest release the webhook knows (v3.22.0).
    pub const VERSION_TOO_OLD: &str = "version-too-old";
    /// No checksum known or given for any architecture.
    pub const VERSION_UNVERIFIED: &str = "version-unverified";
    /// `CALICOCTL_URL` does not follow the URL template grammar.
    pub const URL_TEMPLATE: &str = "url-template";
    /// `CALICOCTL_SHA256_*` is not 64 hex digits.
    pub const SHA256_FORMAT: &str = "sha256-format";
    /// A checksum annotation that differs from the built-in checksum of a known version.
    pub const SHA256_NOT_BUILTIN: &str = "sha256-not-builtin";
    /// `CALICO_REGISTRY` is not `host[:port][/path]`.
    pub const REGISTRY_FORMAT: &str = "registry-format";
    /// `CALICO_IMAGE_PATH` is not a path of image-name components.
    pub const IMAGE_PATH_FORMAT: &str = "image-path-format";
    /// `CALICO_IMAGE_PULL_SECRET` is not a Secret name.
    pub const PULL_SECRET_FORMAT: &str = "pull-secret-format";
    /// `CALICO_ROUTE_REFLECTORS` is not standard base64 / too large / not UTF-8.
    pub const ROUTE_REFLECTORS_ENCODING: &str = "route-reflectors-encoding";
    /// More problems than a denial lists ([`super::MAX_LISTED_PROBLEMS`]): the rest are counted, not listed.
    pub const MORE_PROBLEMS: &str = "more-problems";
    /// `CALICO_ROUTE_REFLECTORS` exceeds a size or count bound.
    pub const ROUTE_REFLECTORS_LIMIT: &str = "route-reflectors-limit";
    /// The decoded YAML does not parse.
    pub const ROUTE_REFLECTORS_YAML: &str = "route-reflectors-yaml";
    /// YAML anchors, aliases, merge keys or tags.
    pub const ROUTE_REFLECTORS_YAML_FEATURE: &str = "route-reflectors-yaml-feature";
    /// No BGPPeer document at all.
    pub const ROUTE_REFLECTORS_EMPTY: &str = "route-reflectors-empty";
    /// A document that is not `projectcalico.org/v3` `BGPPeer`, or has unknown top-level / metadata fields.
    pub const BGP_PEER_KIND: &str = "bgp-peer-kind";
    /// `metadata.name` missing or not a DNS-1123 subdomain.
    pub const BGP_PEER_NAME: &str = "bgp-peer-name";
    /// Two documents with the same `metadata.name`.
    pub const BGP_PEER_DUPLICATE_NAME: &str = "bgp-peer-duplicate-name";
    /// An unknown field in `spec`.
    pub const BGP_PEER_UNKNOWN_FIELD: &str = "bgp-peer-unknown-field";
    /// A `spec` field with the wrong type or format.
    pub const BGP_PEER_FIELD: &str = "bgp-peer-field";
    /// A selector field that does not parse.
    pub const BGP_PEER_SELECTOR: &str = "bgp-peer-selector";
    /// `asNumber`/`localASNumber` problems in a peer (including 0 on a peerIP peer).
    pub const BGP_PEER_AS_NUMBER: &str = "bgp-peer-as-number";
    /// A violated cross-field rule (mutually exclusive or dependent fields).
    pub const BGP_PEER_CONFLICT: &str = "bgp-peer-conflict";
    /// A peer field newer than `CALICO_VERSION`'s calicoctl.
    pub const BGP_PEER_FIELD_VERSION: &str = "bgp-peer-field-version";
}

/// Escape a value for display on one terminal line: quotes, backslashes, control characters, newlines and
/// invisible direction/format characters are written as escapes. No truncation.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        c if c.is_control() || is_invisible_format(c) => {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        }
        c => out.push(c),
    }
}

/// Zero-width and bidirectional formatting characters that could make a displayed value lie, and the Unicode line
/// and paragraph separators (a terminal may break the line there).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// The display form of a received value: quoted, escaped, and truncated to [`DISPLAY_VALUE_CHARS`] characters
/// with a note of the full length, e.g. `"abc…" (1048576 bytes)`.
pub fn display_value(raw: &str) -> String {
    let total_chars = raw.chars().count();
    let mut out = String::from("\"");
    if total_chars <= DISPLAY_VALUE_CHARS {
        for c in raw.chars() {
            push_escaped(&mut out, c);
        }
        out.push('"');
    } else {
        for c in raw.chars().take(DISPLAY_VALUE_CHARS) {
            push_escaped(&mut out, c);
        }
        out.push_str(&format!("…\" ({} bytes)", raw.len()));
    }
    out
}

/// A name taken from the input (a field or document name) for a message: escaped like [`escape`], and cut after
/// [`DISPLAY_VALUE_CHARS`] characters with `…`, so that hostile names cannot make a denial of unbounded size.
pub fn shown(raw: &str) -> String {
    let mut chars = raw.chars();
    let head: String = chars.by_ref().take(DISPLAY_VALUE_CHARS).collect();
    let mut out = escape(&head);
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The full annotation key for a variable name (`CALICO_BLOCK_SIZE` -> `capi-calico.io/CALICO_BLOCK_SIZE`).
pub fn full_key(variable: &str) -> String {
    format!("{PREFIX}{variable}")
}

impl Problem {
    /// A problem with the annotation `key` (full key; escaped and truncated to 120 characters here) whose received
    /// value is `value` (shown with [`display_value`]).
    pub fn new(
        key: &str,
        value: Option<&str>,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let key = if key.chars().count() > 2 * DISPLAY_VALUE_CHARS {
            format!(
                "{}…",
                escape(
                    &key.chars()
                        .take(2 * DISPLAY_VALUE_CHARS)
                        .collect::<String>()
                )
            )
        } else {
            escape(key)
        };
        Problem {
            key,
            value: value.map(display_value),
            omitted: 0,
            rule,
            message: message.into(),
        }
    }

    /// A problem with the setting `variable` (name after the prefix) and its received value.
    pub fn with_value(
        variable: &str,
        value: &str,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(&full_key(variable), Some(value), rule, message)
    }

    /// A problem with the setting `variable` that concerns its absence or its default.
    pub fn without_value(variable: &str, rule: &'static str, message: impl Into<String>) -> Self {
        Self::new(&full_key(variable), None, rule, message)
    }
}

/// One line: `KEY: "value" message`, or `KEY message` when no value applies.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}: {} {}", self.key, value, self.message),
            None => write!(f, "{} {}", self.key, self.message),
        }
    }
}

/// Problems listed in one denial. Annotations within every size limit can still hold thousands of mistakes (one
/// BGPPeer with thousands of unknown keys); listing them all would make a multi-megabyte denial, and the memo would
/// keep it.
pub const MAX_LISTED_PROBLEMS: usize = 25;

/// Keep the first [`MAX_LISTED_PROBLEMS`] - 1 problems and replace the rest by one that counts them.
pub(crate) fn cap(mut problems: Vec<Problem>) -> Vec<Problem> {
    if problems.len() <= MAX_LISTED_PROBLEMS {
        return problems;
    }
    let omitted = problems.split_off(MAX_LISTED_PROBLEMS - 1);
    let key = omitted[0].key.clone();
    problems.push(Problem {
        key,
        value: None,
        omitted: omitted.len(),
        rule: rules::MORE_PROBLEMS,
        message: format!(
            "and {} more problems, not listed: fix the ones above and apply again",
            omitted.len()
        ),
    });
    problems
}

/// Render problems into one multi-line message for a denial or the CLI:
/// a lead sentence, then one `- ...` line per problem (long lines wrapped at word boundaries, continuation
/// lines indented).
pub fn render_problems(problems: &[Problem]) -> String {
    const WIDTH: usize = 110;
    let mut out = match problems.split_last() {
        // Capped by [`cap`]: count every problem, and say how many are listed.
        Some((last, listed)) if last.rule == rules::MORE_PROBLEMS => format!(
            "{} problems with the capi-calico.io annotations (the first {} are listed):",
            listed.len() + last.omitted,
            listed.len()
        ),
        _ => format!(
            "{} problem{} with the capi-calico.io annotations:",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
    };
    for problem in problems {
        out.push('\n');
        out.push_str(&wrap(&format!("- {problem}"), WIDTH, "    "));
    }
    out
}

/// Greedy word wrap on spaces; words longer than the width stay whole.
fn wrap(line: &str, width: usize, indent: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let mut current = 0usize;
    for (i, word) in line.split(' ').enumerate() {
        let len = word.chars().count();
        if i > 0 {
            if current + 1 + len > width && current > indent.len() {
                out.push('\n');
                out.push_str(indent);
                current = indent.chars().count();
            } else {
                out.push(' ');
                current += 1;
            }
        }
        out.push_str(word);
        current += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_names_are_escaped_and_bounded() {
        assert_eq!(shown("peerIp"), "peerIp");
        assert_eq!(shown("a\nb"), "a\\nb");
        let exact = "x".repeat(DISPLAY_VALUE_CHARS);
        assert_eq!(shown(&exact), exact);
        let long = "\u{1}".repeat(10_000);
        let got = shown(&long);
        assert!(got.ends_with('…'), "{got}");
        assert_eq!(got, format!("{}…", "\\u{0001}".repeat(DISPLAY_VALUE_CHARS)));
    }

    #[test]
    fn escape_table() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("a\nb", "a\\nb"),
            ("a\r\n", "a\\r\\n"),
            ("tab\there", "tab\\there"),
            ("nul\0", "nul\\u{0000}"),
            ("esc\u{1b}[31m", "esc\\u{001b}[31m"),
            ("q\"uote", "q\\\"uote"),
            ("back\\slash", "back\\\\slash"),
            ("bidi\u{202e}x", "bidi\\u{202e}x"),
            ("line\u{2028}para\u{2029}", "line\\u{2028}para\\u{2029}"),
            ("$(rm -rf /);`x`", "$(rm -rf /);`x`"),
            ("é ü 日本", "é ü 日本"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape(raw), *want, "escape({raw:?})");
        }
    }

    #[test]
    fn display_value_truncates_long_values_with_length_note() {
        assert_eq!(display_value("19"), "\"19\"");
        let long = "x".repeat(1024 * 1024);
        let shown = display_value(&long);
        assert!(
            shown.starts_with(&format!("\"{}…\"", "x".repeat(60))),
            "{shown}"
        );
        assert!(shown.ends_with("(1048576 bytes)"), "{shown}");
        assert!(shown.len() < 100);
        // Exactly at the limit: not truncated.
        let sixty = "y".repeat(60);
        assert_eq!(display_value(&sixty), format!("\"{sixty}\""));
        // Multi-byte characters never split.
        let wide = "日".repeat(100);
        assert!(display_value(&wide).contains("(300 bytes)"));
    }

    #[test]
    fn problem_display_one_line() {
        let p = Problem::with_value(
            "CALICO_BLOCK_SIZE",
            "19",
            rules::BLOCK_SIZE_RANGE,
            "is out of range: an IPv4 block size must be between 20 and 32 (default 28)",
        );
        assert_eq!(
            p.to_string(),
            "capi-calico.io/CALICO_BLOCK_SIZE: \"19\" is out of range: an IPv4 block size must be between 20 and 32 (default 28)"
        );
        let p = Problem::with_value(
            "CALICO_VERSION",
            "v1\n$(id)",
            rules::VERSION_FORMAT,
            "is bad",
        );
        assert!(!p.to_string().contains('\n'));
        let p = Problem::without_value(
            "CALICO_BGP_AS_NUMBER",
            rules::BGP_SETTINGS_PREREQUISITE,
            "is missing",
        );
        assert_eq!(
            p.to_string(),
            "capi-calico.io/CALICO_BGP_AS_NUMBER is missing"
        );
        let p = Problem::new(
            "capi-calico.io/X\nY",
            None,
            rules::UNKNOWN_KEY,
            "is unknown",
        );
        assert_eq!(p.key, "capi-calico.io/X\\nY");
    }

    #[test]
    fn render_lists_every_problem() {
        let problems = vec![
            Problem::with_value(
                "CALICO_BLOCK_SIZE",
                "19",
                rules::BLOCK_SIZE_RANGE,
                "is out of range",
            ),
            Problem::with_value(
                "CALICO_BGP_OPTION",
                "enabled",
                rules::ENUM_INVALID,
                "is wrong",
            ),
        ];
        let text = render_problems(&problems);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2 problems with the capi-calico.io annotations:");
        assert_eq!(
            lines[1],
            "- capi-calico.io/CALICO_BLOCK_SIZE: \"19\" is out of range"
        );
        assert_eq!(
            lines[2],
            "- capi-calico.io/CALICO_BGP_OPTION: \"enabled\" is wrong"
        );
        assert_eq!(
            render_problems(&problems[..1]).lines().next(),
            Some("1 problem with the capi-calico.io annotations:")
        );
    }

    #[test]
    fn render_wraps_long_lines() {
        let message = "word ".repeat(80);
        let text = render_problems(&[Problem::with_value(
            "CALICO_VERSION",
            "v1",
            rules::VERSION_FORMAT,
            message,
        )]);
        for line in text.lines().skip(1) {
            assert!(line.chars().count() <= 110, "{line}");
        }
        assert!(text.lines().nth(2).is_some_and(|l| l.starts_with("    ")));
    }
}
