//! Parsers for single values: booleans, enums, block size, CIDR, AS numbers, version, URL template, checksums,
//! and the small formats BGPPeer fields use (DNS-1123 names, peer IPs, Go durations).
//!
//! Every parser is strict, total (never panics) and bounded in the work it does. Errors carry a stable rule id
//! and a message phrased to follow the displayed value (`"19" is out of range: ...`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::checksums::Arch;
use super::keys::closest;
use super::problem::{escape, rules};
use super::{BgpOption, CalicoVersion, Encapsulation, NatOutgoing, Sha256Hex};

/// One thing wrong with a single value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    /// Stable rule id (see [`rules`]).
    pub rule: &'static str,
    /// Message phrased to follow the displayed value.
    pub message: String,
}

impl ValueError {
    /// A new error.
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        ValueError {
            rule,
            message: message.into(),
        }
    }
}

/// The default `CALICOCTL_URL` template.
pub const DEFAULT_URL_TEMPLATE: &str =
    "https://github.com/projectcalico/calico/releases/download/{version}/calicoctl-linux-{arch}";
/// Longest accepted `CALICOCTL_URL`.
pub const MAX_URL_LEN: usize = 512;
/// Default IPv4 block size.
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 28;
/// Default IPv6 block size.
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// Valid IPv4 block sizes.
pub const BLOCK_SIZE_V4: std::ops::RangeInclusive<u8> = 20..=32;
/// Valid IPv6 block sizes.
pub const BLOCK_SIZE_V6: std::ops::RangeInclusive<u8> = 116..=128;
/// Largest AS number Calico accepts (int32).
pub const MAX_AS_NUMBER: u32 = 2_147_483_647;

// ---------------------------------------------------------------------------------------------------------------
// Booleans and enums

/// `true` or `false`, exact spelling.
pub fn parse_bool(raw: &str) -> Result<bool, ValueError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => {
            let suggestion = match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" | "1" | "enabled" | "enable" => Some("true"),
                "false" | "no" | "n" | "off" | "0" | "disabled" | "disable" => Some("false"),
                _ => None,
            };
            let message = match suggestion {
                Some(s) => format!(
                    "is not a boolean: did you mean \"{s}\"? Use exactly \"true\" or \"false\""
                ),
                None => "is not a boolean: use exactly \"true\" or \"false\"".to_string(),
            };
            Err(ValueError::new(rules::BOOL_INVALID, message))
        }
    }
}

/// One of `choices` (exact case). A case-insensitive match or a close typo is suggested.
pub fn parse_enum<T: Copy>(raw: &str, choices: &[(&'static str, T)]) -> Result<T, ValueError> {
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == raw) {
        return Ok(*value);
    }
    let names: Vec<&'static str> = choices.iter().map(|(name, _)| *name).collect();
    let trimmed = raw.trim();
    let suggestion = names
        .iter()
        .find(|name| name.eq_ignore_ascii_case(trimmed))
        .copied()
        .or_else(|| closest(trimmed, &names));
    let listed = names.join(", ");
    let message = match suggestion {
        Some(s) => format!(
            "is not valid: did you mean \"{s}\"? Values are case-sensitive, one of: {listed}"
        ),
        None => format!("is not valid: use one of {listed} (case-sensitive)"),
    };
    Err(ValueError::new(rules::ENUM_INVALID, message))
}

impl BgpOption {
    /// The annotation / Installation spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BgpOption::Enabled => "Enabled",
            BgpOption::Disabled => "Disabled",
        }
    }
}

impl NatOutgoing {
    /// The annotation / Installation spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NatOutgoing::Enabled => "Enabled",
            NatOutgoing::Disabled => "Disabled",
        }
    }
}

impl Encapsulation {
    /// The annotation / Installation spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encapsulation::Ipip => "IPIP",
            Encapsulation::IpipCrossSubnet => "IPIPCrossSubnet",
            Encapsulation::Vxlan => "VXLAN",
            Encapsulation::VxlanCrossSubnet => "VXLANCrossSubnet",
            Encapsulation::None => "None",
        }
    }

    /// IPIP or IPIPCrossSubnet.
    pub fn is_ipip(self) -> bool {
        matches!(self, Encapsulation::Ipip | Encapsulation::IpipCrossSubnet)
    }

    /// True when the pool's routes depend on BGP (IPIP*, None).
    pub fn needs_bgp(self) -> bool {
        matches!(
            self,
            Encapsulation::Ipip | Encapsulation::IpipCrossSubnet | Encapsulation::None
        )
    }
}

/// `CALICO_BGP_OPTION`.
pub fn parse_bgp_option(raw: &str) -> Result<BgpOption, ValueError> {
    parse_enum(
        raw,
        &[
            ("Enabled", BgpOption::Enabled),
            ("Disabled", BgpOption::Disabled),
        ],
    )
}

/// `CALICO_NAT_OUTGOING`.
pub fn parse_nat_outgoing(raw: &str) -> Result<NatOutgoing, ValueError> {
    parse_enum(
        raw,
        &[
            ("Enabled", NatOutgoing::Enabled),
            ("Disabled", NatOutgoing::Disabled),
        ],
    )
}

/// `CALICO_ENCAPSULATION`.
pub fn parse_encapsulation(raw: &str) -> Result<Encapsulation, ValueError> {
    parse_enum(
        raw,
        &[
            ("IPIP", Encapsulation::Ipip),
            ("IPIPCrossSubnet", Encapsulation::IpipCrossSubnet),
            ("VXLAN", Encapsulation::Vxlan),
            ("VXLANCrossSubnet", Encapsulation::VxlanCrossSubnet),
            ("None", Encapsulation::None),
        ],
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Numbers

/// The text is not a strict decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a plain decimal number")]
pub struct NotDecimal;

/// A strict unsigned decimal: ASCII digits only, no sign, no spaces, no leading zeros (except `0` itself).
/// Returns `Ok(None)` for a well-formed number too large for `u64`.
pub fn strict_decimal(raw: &str) -> Result<Option<u64>, NotDecimal> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotDecimal);
    }
    if raw.len() > 1 && raw.starts_with('0') {
        return Err(NotDecimal);
    }
    Ok(raw.parse::<u64>().ok())
}

/// IP family of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a network.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `IPv4` / `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The default block size for this family.
    pub fn default_block_size(self) -> u8 {
        match self {
            Family::V4 => DEFAULT_BLOCK_SIZE_V4,
            Family::V6 => DEFAULT_BLOCK_SIZE_V6,
        }
    }

    /// The valid block sizes for this family.
    pub fn block_sizes(self) -> std::ops::RangeInclusive<u8> {
        match self {
            Family::V4 => BLOCK_SIZE_V4,
            Family::V6 => BLOCK_SIZE_V6,
        }
    }
}

/// `CALICO_BLOCK_SIZE` syntax and coarse range (valid for at least one family). The family-specific range is
/// checked by [`check_block_size`].
pub fn parse_block_size(raw: &str) -> Result<u8, ValueError> {
    let number = strict_decimal(raw).map_err(|NotDecimal| {
        ValueError::new(
            rules::BLOCK_SIZE_FORMAT,
            "is not a plain decimal integer: write the block size as digits only, e.g. 26 (no sign, spaces or \
             leading zeros)",
        )
    })?;
    match number.and_then(|n| u8::try_from(n).ok()) {
        Some(n) if BLOCK_SIZE_V4.contains(&n) || BLOCK_SIZE_V6.contains(&n) => Ok(n),
        _ => Err(ValueError::new(
            rules::BLOCK_SIZE_RANGE,
            "is out of range: a block size must be between 20 and 32 for IPv4 (default 28) or between 116 and \
             128 for IPv6 (default 122)",
        )),
    }
}

/// The family whose range contains `size` (sizes are disjoint between families).
pub fn block_size_family(size: u8) -> Option<Family> {
    if BLOCK_SIZE_V4.contains(&size) {
        Some(Family::V4)
    } else if BLOCK_SIZE_V6.contains(&size) {
        Some(Family::V6)
    } else {
        None
    }
}

/// A block size against its pool: the family's range, and not smaller than the pool's prefix length.
pub fn check_block_size(size: u8, pool: &IpNet) -> Result<(), ValueError> {
    let family = Family::of(pool);
    let range = family.block_sizes();
    if !range.contains(&size) {
        return Err(ValueError::new(
            rules::BLOCK_SIZE_RANGE,
            format!(
                "is out of range: an {} block size must be between {} and {} (default {}), and the pool {pool} is {}",
                family.name(),
                range.start(),
                range.end(),
                family.default_block_size(),
                family.name()
            ),
        ));
    }
    if size < pool.prefix_len() {
        return Err(ValueError::new(
            rules::BLOCK_SIZE_PREFIX,
            format!(
                "is smaller than the prefix length of the pool {pool}: blocks must fit inside the pool; use a block \
                 size from {} to {} or a larger CALICO_POD_CIDR",
                pool.prefix_len(),
                range.end()
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// CIDR

const LINK_LOCAL_V4: IpNet = IpNet::V4(ipnet::Ipv4Net::new_assert(
    Ipv4Addr::new(169, 254, 0, 0),
    16,
));
const LINK_LOCAL_V6: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
    10,
));

/// `CALICO_POD_CIDR`: canonical CIDR syntax, strictly masked, not overlapping link-local space.
pub fn parse_pod_cidr(raw: &str) -> Result<IpNet, ValueError> {
    let format_error = |why: &str| {
        ValueError::new(
            rules::POD_CIDR_FORMAT,
            format!("is not a CIDR: {why}; write it like 192.168.0.0/16 or fd00:10:244::/56"),
        )
    };
    if raw.len() > 64 {
        return Err(format_error("it is too long"));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/')))
    {
        return Err(format_error(&format!(
            "the character \"{}\" is not allowed",
            escape(&bad.to_string())
        )));
    }
    let Some((addr, prefix)) = raw.split_once('/') else {
        return Err(format_error("the /prefix length is missing"));
    };
    let prefix = match strict_decimal(prefix) {
        Ok(Some(p)) => p,
        _ => {
            return Err(format_error(
                "the prefix length must be a plain decimal number",
            ));
        }
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format_error("the address does not parse"))?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match u8::try_from(prefix) {
        Ok(p) if p <= max => p,
        _ => {
            return Err(format_error(&format!(
                "the prefix length must be at most {max}"
            )));
        }
    };
    let net = IpNet::new(addr, prefix).map_err(|_| format_error("the prefix length is invalid"))?;
    if net.trunc() != net {
        return Err(ValueError::new(
            rules::POD_CIDR_HOST_BITS,
            format!(
                "is not strictly masked (host bits are set): did you mean {}?",
                net.trunc()
            ),
        ));
    }
    match unusable_pool_range(&net) {
        Some(err) => Err(err),
        None => Ok(net),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`): Calico reads them as IPv4 (Go's `To4`), so a pool or peer written
/// that way is judged by the IPv4 rules there and the IPv6 rules here.
const IPV4_MAPPED: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
    96,
));

/// Why a well-formed CIDR cannot be a Calico IP pool (the same rules for `CALICO_POD_CIDR` and for a pool taken from
/// the Cluster's pod cidrBlocks), or `None`.
pub fn unusable_pool_range(net: &IpNet) -> Option<ValueError> {
    for link_local in [LINK_LOCAL_V4, LINK_LOCAL_V6] {
        if link_local.contains(net) || net.contains(&link_local) {
            return Some(ValueError::new(
                rules::POD_CIDR_LINK_LOCAL,
                format!(
                    "overlaps link-local space {link_local}, which Calico does not allow for an IP pool"
                ),
            ));
        }
    }
    if IPV4_MAPPED.contains(net) || net.contains(&IPV4_MAPPED) {
        return Some(ValueError::new(
            rules::POD_CIDR_FORMAT,
            "overlaps the IPv4-mapped IPv6 range ::ffff:0:0/96, which Calico reads as IPv4: write an IPv4 CIDR or \
             another IPv6 range"
                .to_string(),
        ));
    }
    None
}

/// `addr` written as an IPv4-mapped IPv6 address (Calico reads it as IPv4).
pub fn is_ipv4_mapped(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

// ---------------------------------------------------------------------------------------------------------------
// AS numbers

/// An AS number: decimal `1..=2147483647` or asdot `X.Y` (each 0..=65535). 0 is rejected (reserved).
pub fn parse_as_number(raw: &str) -> Result<u32, ValueError> {
    let value = parse_as_number_allow_zero(raw)?;
    if value == 0 {
        return Err(ValueError::new(
            rules::AS_NUMBER_RESERVED,
            "is reserved: AS 0 cannot be used (RFC 7607); use your network's AS number, or a private AS number \
             from 64512 to 65534",
        ));
    }
    Ok(value)
}

/// Like [`parse_as_number`] but accepts 0 (Calico's "unset"); callers decide whether 0 is allowed.
pub fn parse_as_number_allow_zero(raw: &str) -> Result<u32, ValueError> {
    let format_error = || {
        // The near misses a reader would not spot by eye.
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let why = if raw.chars().any(char::is_whitespace) {
            " (it has spaces)"
        } else if raw.starts_with(['+', '-']) {
            " (no sign)"
        } else if raw
            .split('.')
            .any(|part| digits(part) && part.len() > 1 && part.starts_with('0'))
        {
            " (no leading zeros)"
        } else {
            ""
        };
        ValueError::new(
            rules::AS_NUMBER_FORMAT,
            format!(
                "is not an AS number{why}: use a decimal number from 1 to 2147483647 (e.g. 64512) or asdot X.Y \
                 (e.g. 1.10)"
            ),
        )
    };
    let range_error = |shown: String| {
        ValueError::new(
            rules::AS_NUMBER_RANGE,
            format!(
                "is out of range{shown}: Calico stores AS numbers as int32, so the largest usable AS number is \
                 2147483647 (asdot 32767.65535)"
            ),
        )
    };
    if raw.len() > 32 {
        return Err(format_error());
    }
    let value: u64 = if let Some((high, low)) = raw.split_once('.') {
        let high = strict_decimal(high).map_err(|NotDecimal| format_error())?;
        let low = strict_decimal(low).map_err(|NotDecimal| format_error())?;
        match (high, low) {
            (Some(h), Some(l)) if h <= 65_535 && l <= 65_535 => (h << 16) + l,
            _ => {
                return Err(ValueError::new(
                    rules::AS_NUMBER_RANGE,
                    "is out of range: each half of an asdot AS number X.Y must be between 0 and 65535",
                ));
            }
        }
    } else {
        match strict_decimal(raw).map_err(|NotDecimal| format_error())? {
            Some(n) => n,
            None => return Err(range_error(String::new())),
        }
    };
    if value > u64::from(MAX_AS_NUMBER) {
        let shown = if raw.contains('.') {
            format!(" (asdot {raw} is {value})")
        } else {
            String::new()
        };
        return Err(range_error(shown));
    }
    u32::try_from(value).map_err(|_| range_error(String::new()))
}

// ---------------------------------------------------------------------------------------------------------------
// Version

impl fmt::Display for CalicoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The oldest Calico release accepted when calicoctl is installed or BGP configured: the first whose calicoctl is
/// published by the calico repository as `calicoctl-linux-{arch}` (the default URL), and the first of the BGPPeer
/// field history in `peers::FIELDS_SINCE`.
pub const OLDEST_VERSION: (u16, u16) = (3, 22);

/// Refuses a version older than [`OLDEST_VERSION`] (for calicoctl and the BGP files; see there).
pub fn check_not_too_old(version: CalicoVersion) -> Result<(), ValueError> {
    let (major, minor) = OLDEST_VERSION;
    if (version.major, version.minor) >= OLDEST_VERSION {
        return Ok(());
    }
    Err(ValueError::new(
        rules::VERSION_TOO_OLD,
        format!(
            "is older than v{major}.{minor}.0, the oldest Calico release whose calicoctl downloads and BGPPeer fields \
             capi-calico-webhook knows (needed to install calicoctl or configure BGP); use v{major}.{minor}.0 or later"
        ),
    ))
}

/// `vX.Y.Z`, strict decimal parts.
pub fn parse_version(raw: &str) -> Result<CalicoVersion, ValueError> {
    fn parts(s: &str) -> Option<CalicoVersion> {
        let mut it = s.split('.');
        let mut next = || -> Option<u16> {
            let n = strict_decimal(it.next()?).ok()??;
            u16::try_from(n).ok()
        };
        let version = CalicoVersion {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if s.split('.').count() != 3 {
            return None;
        }
        Some(version)
    }
    if raw.len() <= 32 {
        if let Some(version) = raw.strip_prefix('v').and_then(parts) {
            return Ok(version);
        }
        if let Some(version) = raw.strip_prefix('V').or(Some(raw)).and_then(parts) {
            return Err(ValueError::new(
                rules::VERSION_FORMAT,
                format!("is not a Calico version: did you mean \"{version}\"? Write it as vX.Y.Z"),
            ));
        }
    }
    Err(ValueError::new(
        rules::VERSION_FORMAT,
        "is not a Calico version: write it as vX.Y.Z, e.g. v3.31.7 (no pre-release or build suffix)",
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// URL template

/// A validated `CALICOCTL_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// The template, unchanged.
    pub template: String,
    /// `http://` rather than `https://` (accepted with a warning).
    pub insecure: bool,
}

/// The download URL for `version` and `arch` (`{version}` becomes `vX.Y.Z`, `{arch}` `amd64`/`arm64`).
pub fn expand_url(template: &str, version: CalicoVersion, arch: Arch) -> String {
    template
        .replace("{version}", &version.to_string())
        .replace("{arch}", arch.as_str())
}

/// A `CALICOCTL_URL` template: `https://` (or `http://`), a DNS name or IP host with an optional port, and a path
/// of `[A-Za-z0-9._~/-]` plus the required `{version}` and `{arch}` placeholders. Nothing else.
pub fn parse_url_template(raw: &str) -> Result<UrlTemplate, ValueError> {
    let err = |why: String| {
        ValueError::new(
            rules::URL_TEMPLATE,
            format!(
                "is not an allowed URL template: {why}; expected e.g. https://mirror.example.com/calico/{{version}}/calicoctl-linux-{{arch}}"
            ),
        )
    };
    if raw.len() > MAX_URL_LEN {
        return Err(err(format!("it is longer than {MAX_URL_LEN} characters")));
    }
    let (insecure, rest) = if let Some(rest) = raw.strip_prefix("https://") {
        (false, rest)
    } else if let Some(rest) = raw.strip_prefix("http://") {
        (true, rest)
    } else {
        return Err(err("it must start with https:// (or http://)".to_string()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => return Err(err("it has no path".to_string())),
    };
    check_authority(authority).map_err(|why| err(why.to_string()))?;
    let mut has_version = false;
    let mut has_arch = false;
    let mut rest_path = path;
    while let Some(c) = rest_path.chars().next() {
        let position = raw.len() - rest_path.len() + 1;
        if c == '{' {
            if let Some(tail) = rest_path.strip_prefix("{version}") {
                has_version = true;
                rest_path = tail;
                continue;
            }
            if let Some(tail) = rest_path.strip_prefix("{arch}") {
                has_arch = true;
                rest_path = tail;
                continue;
            }
            return Err(err(format!(
                "unknown placeholder at position {position} (only {{version}} and {{arch}} exist)"
            )));
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '/' | '-')) {
            let what = match c {
                '?' => "a query string is not allowed".to_string(),
                '#' => "a fragment is not allowed".to_string(),
                '%' => "percent-encoding is not allowed".to_string(),
                c if c.is_whitespace() => {
                    format!("whitespace at position {position} is not allowed")
                }
                c => format!(
                    "the character \"{}\" at position {position} is not allowed",
                    escape(&c.to_string())
                ),
            };
            return Err(err(what));
        }
        rest_path = &rest_path[c.len_utf8()..];
    }
    match (has_version, has_arch) {
        (true, true) => Ok(UrlTemplate {
            template: raw.to_string(),
            insecure,
        }),
        (false, true) => Err(err("the {version} placeholder is missing".to_string())),
        (true, false) => Err(err("the {arch} placeholder is missing".to_string())),
        (false, false) => Err(err(
            "the {version} and {arch} placeholders are missing".to_string()
        )),
    }
}

/// `host[:port]` where host is a DNS name, an IPv4 address or `[IPv6]`. No userinfo.
fn check_authority(authority: &str) -> Result<(), &'static str> {
    if authority.is_empty() {
        return Err("the host is missing");
    }
    if authority.contains('@') {
        return Err("user information (user@host) is not allowed");
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err("the IPv6 host is missing its closing ]");
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err("the IPv6 host does not parse");
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err("only :port may follow an IPv6 host"),
            },
        }
    } else if authority.matches(':').count() > 1
        && authority
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return Err("an IPv6 host must be written in brackets, e.g. [2001:db8::1]:5000");
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        let looks_numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if looks_numeric {
            if host.parse::<Ipv4Addr>().is_err() {
                return Err("the IPv4 host does not parse");
            }
        } else if !is_dns_name(host) {
            return Err(
                "the host must be a DNS name (letters, digits, '-' and '.') or an IP address",
            );
        }
    }
    if let Some(port) = port {
        match strict_decimal(port) {
            Ok(Some(p)) if (1..=65_535).contains(&p) => {}
            _ => return Err("the port must be a number from 1 to 65535"),
        }
    }
    Ok(())
}

/// A DNS host name: labels of letters, digits and `-` (not at either end), 1..=63 each, 253 in total.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

// ---------------------------------------------------------------------------------------------------------------
// Image registry

/// Longest accepted `CALICO_REGISTRY` or `CALICO_IMAGE_PATH`: the two, a `/` and the longest Calico image name stay
/// within the 255 characters container runtimes allow for an image name.
pub const MAX_IMAGE_LOCATION_LEN: usize = 100;

/// Longest image name of an image reference (the distribution grammar's limit, enforced by container runtimes).
pub const MAX_IMAGE_NAME_LEN: usize = 255;

/// A registry host as container runtimes accept it: [`check_authority`], and inside brackets only hex digits and
/// `:` (no IPv4-mapped form such as `[::ffff:10.0.0.1]`).
fn check_registry_host(authority: &str) -> Result<(), String> {
    check_authority(authority).map_err(str::to_string)?;
    if let Some(v6) = authority
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map(|(v6, _)| v6)
        && !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
    {
        return Err(
            "an IPv6 registry host takes only hex digits and ':' (no dotted IPv4 part)".to_string(),
        );
    }
    Ok(())
}

/// Whether the first part of an image name is a registry host, as container runtimes decide: it has a `.` or a
/// `:`, is `localhost`, or has an upper-case letter (Docker Hub namespaces are lower case).
fn is_registry_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `CALICO_REGISTRY`: where the operator pulls Calico's images from, `host[:port][/path]`, as the Installation's
/// `spec.registry`. Returned with the one trailing `/` the operator requires (added when missing).
///
/// The host must be one container runtimes read as a host (with a `.` or a `:port`, `localhost`, or upper case):
/// they read any other first path part as a Docker Hub namespace, so `mirror/calico/node` would be pulled from
/// `docker.io/mirror/calico/node`.
pub fn parse_registry(raw: &str) -> Result<String, ValueError> {
    let err = image_location_error(
        raw,
        rules::REGISTRY_FORMAT,
        "a registry",
        "host[:port][/path], e.g. registry.example.internal:5000/mirror",
    )?;
    if let Some((scheme, rest)) = raw.split_once("://")
        && scheme.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || (i > 0 && (b.is_ascii_digit() || b"+.-".contains(&b)))
        })
    {
        return Err(err(format!(
            "write it without the {}:// scheme ({})",
            escape(scheme),
            escape(rest)
        )));
    }
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    let (authority, path) = match trimmed.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (trimmed, None),
    };
    check_registry_host(authority).map_err(&err)?;
    if !is_registry_host(authority) {
        return Err(err(format!(
            "\"{}\" would be read as a Docker Hub namespace, not a registry host: give a host with a '.' or a :port",
            escape(authority)
        )));
    }
    match path {
        Some("") => {
            return Err(err(
                "it has an empty path component (a doubled '/')".to_string()
            ));
        }
        Some(path) => check_image_path(path).map_err(&err)?,
        None => {}
    }
    Ok(format!("{trimmed}/"))
}

/// `CALICO_IMAGE_PATH`: the path between the registry and each image name, as the Installation's `spec.imagePath`
/// (`<registry><imagePath>/<imageName>`), e.g. `calico` or `mirror/calico`. Returned unchanged.
pub fn parse_image_path(raw: &str) -> Result<String, ValueError> {
    let err = image_location_error(
        raw,
        rules::IMAGE_PATH_FORMAT,
        "an image path",
        "path components separated by '/', e.g. mirror/calico",
    )?;
    check_image_path(raw).map_err(err)?;
    Ok(raw.to_string())
}

/// A container image reference with a tag or a digest: `[host[:port]/]path[:tag][@sha256:<64 hex>]` (for
/// `bundle --operator-image`); returns its tag, if it has one. The first path part is a host as container runtimes
/// decide (a `.` or a `:`, `localhost`, or upper case). `Err` says what is wrong, phrased to follow the value.
pub fn check_image_reference(raw: &str) -> Result<Option<&str>, String> {
    // The name, a tag of up to 128 characters or a digest of 71.
    if raw.len() > MAX_IMAGE_NAME_LEN + 200 {
        return Err(format!(
            "is longer than {} characters",
            MAX_IMAGE_NAME_LEN + 200
        ));
    }
    let (name_and_tag, digest) = match raw.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (raw, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(
                "has a digest that is not sha256: and 64 lower-case hex digits".to_string(),
            );
        }
    }
    let last_part = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_part..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_part + i],
            Some(&name_and_tag[last_part + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && tag.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && matches!(b, b'.' | b'-'))
            });
        if !ok {
            return Err(format!(
                "has a tag \"{}\" that is not 1 to 128 of [A-Za-z0-9_.-] (not starting with '.' or '-')",
                escape(tag)
            ));
        }
    } else if digest.is_none() {
        return Err("has no tag or digest: give the version, e.g. registry.example.internal/tigera/operator:v1.40.3".to_string());
    }
    if name.len() > MAX_IMAGE_NAME_LEN {
        return Err(format!(
            "has an image name longer than {MAX_IMAGE_NAME_LEN} characters"
        ));
    }
    let path = match name.split_once('/') {
        Some((first, rest)) if is_registry_host(first) => {
            check_registry_host(first)
                .map_err(|why| format!("has a registry host that is not valid: {why}"))?;
            rest
        }
        Some(_) => name,
        None if name.contains('.') => {
            return Err(format!(
                "has no image path after \"{}\": it would be read as a Docker Hub image of that name; write e.g. {}/tigera/operator:v1.40.3",
                escape(name),
                escape(name)
            ));
        }
        None => name,
    };
    check_image_path(path).map_err(|why| format!("has an image name that is not valid: {why}"))?;
    Ok(tag)
}

/// For `CALICO_REGISTRY` and `CALICO_IMAGE_PATH`: the error maker ("is not {what}: {why}; expected {expected}"),
/// once the value is known to be within [`MAX_IMAGE_LOCATION_LEN`].
fn image_location_error(
    raw: &str,
    rule: &'static str,
    what: &'static str,
    expected: &'static str,
) -> Result<impl Fn(String) -> ValueError, ValueError> {
    let err = move |why: String| {
        ValueError::new(rule, format!("is not {what}: {why}; expected {expected}"))
    };
    if raw.len() > MAX_IMAGE_LOCATION_LEN {
        return Err(err(format!(
            "it is longer than {MAX_IMAGE_LOCATION_LEN} characters"
        )));
    }
    Ok(err)
}

/// Path components of an image reference (the OCI distribution grammar): each one lower-case letters and digits,
/// separated inside by one `.`, one or two `_`, or any number of `-`; components joined by single `/`.
fn check_image_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("it is empty".to_string());
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(
                "it has an empty path component (a leading, trailing or doubled '/')".to_string(),
            );
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if let Some(bad) = component.chars().find(|&c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            let what = if bad.is_ascii_uppercase() {
                format!(
                    "\"{}\" has upper-case letters (image paths are lower case)",
                    escape(component)
                )
            } else {
                format!(
                    "the character \"{}\" is not allowed",
                    escape(&bad.to_string())
                )
            };
            return Err(what);
        }
        let separators_ok = bytes.first().copied().is_some_and(alnum)
            && bytes.last().copied().is_some_and(alnum)
            && component
                .split(|c: char| c.is_ascii_alphanumeric())
                .filter(|sep| !sep.is_empty())
                .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-'));
        if !separators_ok {
            return Err(format!(
                "\"{}\" must start and end with a letter or digit, with one '.', one or two '_' or dashes between them",
                escape(component)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Checksums

/// Exactly 64 hex digits, normalised to lower case.
pub fn parse_sha256(raw: &str) -> Result<Sha256Hex, ValueError> {
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Sha256Hex(raw.to_ascii_lowercase()));
    }
    let hint = if raw.len() > 64
        && raw.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit)
        && raw.as_bytes()[64].is_ascii_whitespace()
    {
        " (only the digest, not the file name from sha256sum output)"
    } else {
        ""
    };
    Err(ValueError::new(
        rules::SHA256_FORMAT,
        format!("is not a SHA-256 digest: give exactly 64 hexadecimal digits{hint}"),
    ))
}

/// `CALICO_IMAGE_PULL_SECRET`: a Secret name (DNS-1123 subdomain). Returned unchanged.
pub fn parse_pull_secret(raw: &str) -> Result<String, ValueError> {
    if is_dns1123_subdomain(raw) {
        return Ok(raw.to_string());
    }
    Err(ValueError::new(
        rules::PULL_SECRET_FORMAT,
        "is not a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, \
         at most 253 characters (e.g. calico-pull-secret)",
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Formats used by BGPPeer fields

/// A DNS-1123 subdomain (Kubernetes object names): at most 253 characters, lower-case alphanumeric labels with
/// inner `-`, separated by `.`.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A BGPPeer `peerIP`: `IP`, `IPv4:port` or `[IPv6]:port`, port 1..=65535. Returns the address and port.
pub fn parse_peer_ip(raw: &str) -> Result<(IpAddr, Option<u16>), String> {
    const HINT: &str =
        "use an IP address, IPv4:port or [IPv6]:port, e.g. 192.0.2.10 or [2001:db8::1]:179";
    if raw.len() > 64 {
        return Err(format!("is too long: {HINT}"));
    }
    let port = |p: &str| -> Result<u16, String> {
        match strict_decimal(p) {
            Ok(Some(n)) if (1..=65_535).contains(&n) => u16::try_from(n).map_err(|_| String::new()),
            _ => Err(format!(
                "has an invalid port: the port must be a number from 1 to 65535; {HINT}"
            )),
        }
    };
    if let Some(rest) = raw.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("is not a peer address: {HINT}"));
        };
        let addr: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("is not a peer address: {HINT}"))?;
        let Some(p) = after.strip_prefix(':') else {
            return Err(format!(
                "is not a peer address: [IPv6] needs a :port; {HINT}"
            ));
        };
        if addr.to_ipv4_mapped().is_some() {
            return Err(format!(
                "is an IPv4-mapped IPv6 address, which Calico reads as IPv4: write IPv4:port; {HINT}"
            ));
        }
        return Ok((IpAddr::V6(addr), Some(port(p)?)));
    }
    if let Ok(addr) = raw.parse::<IpAddr>() {
        if is_ipv4_mapped(&addr) {
            return Err(format!(
                "is an IPv4-mapped IPv6 address, which Calico reads as IPv4: write the IPv4 address; {HINT}"
            ));
        }
        return Ok((addr, None));
    }
    if let Some((v4, p)) = raw.split_once(':')
        && let Ok(addr) = v4.parse::<Ipv4Addr>()
    {
        return Ok((IpAddr::V4(addr), Some(port(p)?)));
    }
    Err(format!("is not a peer address: {HINT}"))
}

/// A Go `time.Duration` string without sign: `0`, or one or more `<number><unit>` with units
/// `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h` (e.g. `120s`, `1m30s`, `1.5h`), at most ~292 years.
pub fn parse_go_duration(raw: &str) -> Result<(), String> {
    const HINT: &str = "use a Go duration such as 120s, 90s or 1m30s";
    if raw == "0" {
        return Ok(());
    }
    if raw.is_empty() || raw.len() > 64 {
        return Err(format!("is not a duration: {HINT}"));
    }
    if raw.starts_with('-') || raw.starts_with('+') {
        return Err(format!("must not have a sign: {HINT}"));
    }
    let mut rest = raw;
    let mut total_ns = 0f64;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!("is not a duration: {HINT}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("is not a duration: {HINT}"))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("is missing a unit (ns, us, ms, s, m, h): {HINT}")),
            _ => {
                return Err(format!(
                    "has an unknown unit (use ns, us, ms, s, m or h): {HINT}"
                ));
            }
        };
        rest = &rest[unit_end..];
        total_ns += value * scale;
    }
    if total_ns > 9.2e18 {
        return Err(format!(
            "is too long (Go durations stop at about 292 years): {HINT}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_table() {
        let ok = [("true", true), ("false", false)];
        for (raw, want) in ok {
            assert_eq!(parse_bool(raw), Ok(want));
        }
        let bad: &[(&str, Option<&str>)] = &[
            ("True", Some("true")),
            ("TRUE", Some("true")),
            ("yes", Some("true")),
            ("on", Some("true")),
            ("1", Some("true")),
            (" true", Some("true")),
            ("False", Some("false")),
            ("no", Some("false")),
            ("0", Some("false")),
            ("", None),
            ("maybe", None),
            ("true; rm -rf /", None),
            ("true\n", Some("true")),
        ];
        for (raw, suggestion) in bad {
            let e = parse_bool(raw).expect_err(raw);
            assert_eq!(e.rule, rules::BOOL_INVALID);
            match suggestion {
                Some(s) => assert!(
                    e.message.contains(&format!("did you mean \"{s}\"?")),
                    "{raw:?}: {}",
                    e.message
                ),
                None => assert!(
                    !e.message.contains("did you mean"),
                    "{raw:?}: {}",
                    e.message
                ),
            }
        }
    }

    #[test]
    fn enum_table() {
        assert_eq!(parse_bgp_option("Enabled"), Ok(BgpOption::Enabled));
        assert_eq!(parse_bgp_option("Disabled"), Ok(BgpOption::Disabled));
        assert_eq!(parse_nat_outgoing("Enabled"), Ok(NatOutgoing::Enabled));
        assert_eq!(parse_nat_outgoing("Disabled"), Ok(NatOutgoing::Disabled));
        for (raw, want) in [
            ("IPIP", Encapsulation::Ipip),
            ("IPIPCrossSubnet", Encapsulation::IpipCrossSubnet),
            ("VXLAN", Encapsulation::Vxlan),
            ("VXLANCrossSubnet", Encapsulation::VxlanCrossSubnet),
            ("None", Encapsulation::None),
        ] {
            assert_eq!(parse_encapsulation(raw), Ok(want));
            assert_eq!(want.as_str(), raw);
        }
        type Parse = fn(&str) -> Result<(), ValueError>;
        let bad: &[(&str, Parse, Option<&str>)] = &[
            (
                "enabled",
                |s| parse_bgp_option(s).map(drop),
                Some("Enabled"),
            ),
            (
                "ENABLED",
                |s| parse_bgp_option(s).map(drop),
                Some("Enabled"),
            ),
            (
                "disabled",
                |s| parse_nat_outgoing(s).map(drop),
                Some("Disabled"),
            ),
            ("Enable", |s| parse_bgp_option(s).map(drop), Some("Enabled")),
            ("vxlan", |s| parse_encapsulation(s).map(drop), Some("VXLAN")),
            (
                "vxlancrosssubnet",
                |s| parse_encapsulation(s).map(drop),
                Some("VXLANCrossSubnet"),
            ),
            (
                "IPIPCrossSubnt",
                |s| parse_encapsulation(s).map(drop),
                Some("IPIPCrossSubnet"),
            ),
            ("none", |s| parse_encapsulation(s).map(drop), Some("None")),
            ("Geneve", |s| parse_encapsulation(s).map(drop), None),
            ("", |s| parse_bgp_option(s).map(drop), None),
            ("$(reboot)", |s| parse_bgp_option(s).map(drop), None),
        ];
        for (raw, parse, suggestion) in bad {
            let e = parse(raw).expect_err(raw);
            assert_eq!(e.rule, rules::ENUM_INVALID);
            match suggestion {
                Some(s) => assert!(
                    e.message
                        .starts_with(&format!("is not valid: did you mean \"{s}\"?")),
                    "{}",
                    e.message
                ),
                None => assert!(
                    !e.message.contains("did you mean"),
                    "{raw:?}: {}",
                    e.message
                ),
            }
        }
    }

    #[test]
    fn block_size_table() {
        for (raw, want) in [
            ("20", 20),
            ("26", 26),
            ("32", 32),
            ("116", 116),
            ("128", 128),
        ] {
            assert_eq!(parse_block_size(raw), Ok(want), "{raw}");
        }
        let bad = [
            ("19", rules::BLOCK_SIZE_RANGE),
            ("33", rules::BLOCK_SIZE_RANGE),
            ("115", rules::BLOCK_SIZE_RANGE),
            ("129", rules::BLOCK_SIZE_RANGE),
            ("0", rules::BLOCK_SIZE_RANGE),
            ("99999999999999999999999", rules::BLOCK_SIZE_RANGE),
            ("+26", rules::BLOCK_SIZE_FORMAT),
            ("-26", rules::BLOCK_SIZE_FORMAT),
            (" 26", rules::BLOCK_SIZE_FORMAT),
            ("26 ", rules::BLOCK_SIZE_FORMAT),
            ("026", rules::BLOCK_SIZE_FORMAT),
            ("26.0", rules::BLOCK_SIZE_FORMAT),
            ("0x1a", rules::BLOCK_SIZE_FORMAT),
            ("", rules::BLOCK_SIZE_FORMAT),
            ("２６", rules::BLOCK_SIZE_FORMAT),
            ("26\n", rules::BLOCK_SIZE_FORMAT),
        ];
        for (raw, rule) in bad {
            assert_eq!(parse_block_size(raw).expect_err(raw).rule, rule, "{raw:?}");
        }
    }

    #[test]
    fn block_size_against_pool_table() {
        let net = |s: &str| s.parse::<IpNet>().expect("test cidr");
        let cases: &[(u8, &str, Option<&str>)] = &[
            (28, "10.0.0.0/16", None),
            (20, "10.0.0.0/20", None),
            (32, "10.0.0.0/32", None),
            (24, "10.0.0.0/26", Some(rules::BLOCK_SIZE_PREFIX)),
            (122, "10.0.0.0/16", Some(rules::BLOCK_SIZE_RANGE)),
            (26, "fd00::/48", Some(rules::BLOCK_SIZE_RANGE)),
            (122, "fd00::/48", None),
            (116, "fd00::/120", Some(rules::BLOCK_SIZE_PREFIX)),
            (128, "fd00::/128", None),
        ];
        for (size, pool, want) in cases {
            let got = check_block_size(*size, &net(pool)).err().map(|e| e.rule);
            assert_eq!(got, *want, "{size} in {pool}");
        }
        let e = check_block_size(24, &net("10.0.0.0/26")).expect_err("prefix");
        assert!(
            e.message.contains("use a block size from 26 to 32"),
            "{}",
            e.message
        );
        let e = check_block_size(26, &net("fd00::/48")).expect_err("family");
        assert!(
            e.message
                .contains("an IPv6 block size must be between 116 and 128 (default 122)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn pod_cidr_table() {
        for raw in [
            "10.0.0.0/8",
            "192.168.0.0/16",
            "172.16.28.0/24",
            "fd00:10:244::/56",
            "10.1.2.3/32",
            "fd00::/8",
        ] {
            assert_eq!(
                parse_pod_cidr(raw).map(|n| n.to_string()),
                Ok(raw.to_string()),
                "{raw}"
            );
        }
        let bad: &[(&str, &str, Option<&str>)] = &[
            (
                "10.0.0.1/8",
                rules::POD_CIDR_HOST_BITS,
                Some("did you mean 10.0.0.0/8?"),
            ),
            (
                "192.168.1.0/16",
                rules::POD_CIDR_HOST_BITS,
                Some("did you mean 192.168.0.0/16?"),
            ),
            (
                "fd00::1/64",
                rules::POD_CIDR_HOST_BITS,
                Some("did you mean fd00::/64?"),
            ),
            ("169.254.0.0/16", rules::POD_CIDR_LINK_LOCAL, None),
            ("169.254.10.0/24", rules::POD_CIDR_LINK_LOCAL, None),
            ("128.0.0.0/1", rules::POD_CIDR_LINK_LOCAL, None),
            ("0.0.0.0/0", rules::POD_CIDR_LINK_LOCAL, None),
            ("::/0", rules::POD_CIDR_LINK_LOCAL, None),
            ("fe80::/64", rules::POD_CIDR_LINK_LOCAL, None),
            (
                "10.0.0.0",
                rules::POD_CIDR_FORMAT,
                Some("the /prefix length is missing"),
            ),
            ("10.0.0.0/33", rules::POD_CIDR_FORMAT, None),
            ("10.0.0.0/+8", rules::POD_CIDR_FORMAT, None),
            ("10.0.0.0/08", rules::POD_CIDR_FORMAT, None),
            ("010.0.0.0/8", rules::POD_CIDR_FORMAT, None),
            ("10.0.0.0/8 ", rules::POD_CIDR_FORMAT, None),
            ("10.0.0.0/8\n", rules::POD_CIDR_FORMAT, None),
            ("10.0.0.0/8;id", rules::POD_CIDR_FORMAT, None),
            ("", rules::POD_CIDR_FORMAT, None),
            ("10.0.0.0/8/8", rules::POD_CIDR_FORMAT, None),
        ];
        for (raw, rule, text) in bad {
            let e = parse_pod_cidr(raw).expect_err(raw);
            assert_eq!(e.rule, *rule, "{raw:?}: {}", e.message);
            if let Some(text) = text {
                assert!(e.message.contains(text), "{raw:?}: {}", e.message);
            }
        }
    }

    #[test]
    fn as_number_table() {
        let ok = [
            ("1", 1),
            ("64512", 64512),
            ("65534", 65534),
            ("4200", 4200),
            ("2147483647", 2_147_483_647),
            ("0.1", 1),
            ("1.10", 65_546),
            ("1.0", 65_536),
            ("32767.65535", 2_147_483_647),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_as_number(raw), Ok(want), "{raw}");
        }
        let bad = [
            ("0", rules::AS_NUMBER_RESERVED),
            ("0.0", rules::AS_NUMBER_RESERVED),
            ("2147483648", rules::AS_NUMBER_RANGE),
            ("4294967295", rules::AS_NUMBER_RANGE),
            ("99999999999999999999999", rules::AS_NUMBER_RANGE),
            ("32768.0", rules::AS_NUMBER_RANGE),
            ("65536.0", rules::AS_NUMBER_RANGE),
            ("1.65536", rules::AS_NUMBER_RANGE),
            ("", rules::AS_NUMBER_FORMAT),
            ("-1", rules::AS_NUMBER_FORMAT),
            ("+64512", rules::AS_NUMBER_FORMAT),
            ("064512", rules::AS_NUMBER_FORMAT),
            ("64512 ", rules::AS_NUMBER_FORMAT),
            ("AS64512", rules::AS_NUMBER_FORMAT),
            ("1.2.3", rules::AS_NUMBER_FORMAT),
            ("1.", rules::AS_NUMBER_FORMAT),
            (".1", rules::AS_NUMBER_FORMAT),
            ("1.01", rules::AS_NUMBER_FORMAT),
            ("6e4", rules::AS_NUMBER_FORMAT),
            ("64512\n", rules::AS_NUMBER_FORMAT),
        ];
        for (raw, rule) in bad {
            assert_eq!(parse_as_number(raw).expect_err(raw).rule, rule, "{raw:?}");
        }
        // The near misses say what is wrong with them.
        for (raw, why) in [
            ("064512", "(no leading zeros)"),
            ("1.010", "(no leading zeros)"),
            ("64512 ", "(it has spaces)"),
            ("+64512", "(no sign)"),
            ("-1", "(no sign)"),
        ] {
            let message = parse_as_number(raw).expect_err(raw).message;
            assert!(
                message.starts_with(&format!("is not an AS number {why}:")),
                "{raw:?}: {message}"
            );
        }
        assert!(
            parse_as_number("AS64512")
                .expect_err("AS")
                .message
                .starts_with("is not an AS number:")
        );
        assert!(
            parse_as_number("0")
                .expect_err("0")
                .message
                .contains("64512 to 65534")
        );
        assert!(
            parse_as_number("40000.1")
                .expect_err("big")
                .message
                .contains("asdot 40000.1 is 2621440001")
        );
        assert_eq!(parse_as_number_allow_zero("0"), Ok(0));
    }

    #[test]
    fn version_table() {
        let v = |major, minor, patch| CalicoVersion {
            major,
            minor,
            patch,
        };
        for (raw, want) in [
            ("v3.31.7", v(3, 31, 7)),
            ("v0.0.0", v(0, 0, 0)),
            ("v10.200.3000", v(10, 200, 3000)),
        ] {
            assert_eq!(parse_version(raw), Ok(want), "{raw}");
            assert_eq!(want.to_string(), raw);
        }
        let bad: &[(&str, Option<&str>)] = &[
            ("3.31.7", Some("did you mean \"v3.31.7\"?")),
            ("V3.31.7", Some("did you mean \"v3.31.7\"?")),
            ("v3.31", None),
            ("v3.31.7.1", None),
            ("v3.31.07", None),
            ("v3.31.7-rc1", None),
            ("v3.31.x", None),
            ("v3.31.70000", None),
            ("latest", None),
            ("", None),
            ("v3.31.7\n", None),
            ("v3.31.7;id", None),
        ];
        for (raw, ok) in [
            ("v3.21.9", false),
            ("v2.6.0", false),
            ("v0.0.0", false),
            ("v3.22.0", true),
        ] {
            match check_not_too_old(parse_version(raw).expect(raw)) {
                Ok(()) => assert!(ok, "{raw}"),
                Err(e) => {
                    assert!(!ok, "{raw}");
                    assert_eq!(e.rule, rules::VERSION_TOO_OLD, "{raw}");
                    assert!(e.message.contains("use v3.22.0 or later"), "{}", e.message);
                }
            }
        }
        for (raw, text) in bad {
            let e = parse_version(raw).expect_err(raw);
            assert_eq!(e.rule, rules::VERSION_FORMAT);
            match text {
                Some(t) => assert!(e.message.contains(t), "{raw:?}: {}", e.message),
                None => assert!(
                    !e.message.contains("did you mean"),
                    "{raw:?}: {}",
                    e.message
                ),
            }
        }
    }

    #[test]
    fn registry_table() {
        let ok: &[(&str, &str)] = &[
            ("registry.example.internal", "registry.example.internal/"),
            ("registry.example.internal/", "registry.example.internal/"),
            (
                "registry.example.internal:5000",
                "registry.example.internal:5000/",
            ),
            ("harbor.corp/proxy-cache/", "harbor.corp/proxy-cache/"),
            (
                "harbor.corp/a/b.c/d__e/f--g",
                "harbor.corp/a/b.c/d__e/f--g/",
            ),
            ("mirror:5000", "mirror:5000/"),
            ("localhost", "localhost/"),
            ("localhost/calico", "localhost/calico/"),
            ("10.0.0.5:5000", "10.0.0.5:5000/"),
            ("[2001:db8::5]:5000/m", "[2001:db8::5]:5000/m/"),
            // Runtimes read a first part with an upper-case letter as a host.
            ("Mirror", "Mirror/"),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_registry(raw).as_deref(), Ok(*want), "{raw}");
        }
        let long = format!("registry.example.com/{}", "a".repeat(300));
        let bad: &[(&str, &str)] = &[
            ("", "the host is missing"),
            ("/calico", "the host is missing"),
            (
                "https://registry.example.com",
                "without the https:// scheme",
            ),
            ("mirror", "Docker Hub namespace"),
            ("mirror/calico", "Docker Hub namespace"),
            ("user@registry.example.com", "user information"),
            ("registry.example.com:0", "port"),
            ("registry.example.com:http", "port"),
            ("registry.example.com//calico", "empty path component"),
            ("registry.example.com//", "empty path component"),
            ("registry.example.com/a://b", "\":\" is not allowed"),
            ("2001:db8::1", "must be written in brackets"),
            ("[::ffff:10.0.0.1]:5000", "only hex digits"),
            ("registry.example.com/Calico", "upper-case"),
            ("registry.example.com/-calico", "must start and end"),
            ("registry.example.com/a...b", "must start and end"),
            ("registry.example.com/a___b", "must start and end"),
            ("registry.example.com/calico:v3", "\":\" is not allowed"),
            ("registry.example.com/cal ico", "\" \" is not allowed"),
            ("registry.example.com/$(reboot)", "\"$\" is not allowed"),
            ("registry.example.com\n/x", "host must be a DNS name"),
            (long.as_str(), "longer than 100"),
        ];
        for (raw, want) in bad {
            let e = parse_registry(raw).expect_err(raw);
            assert_eq!(e.rule, rules::REGISTRY_FORMAT, "{raw}");
            assert!(e.message.contains(want), "{raw}: {}", e.message);
            assert!(e.message.contains("expected host[:port][/path]"), "{raw}");
        }
    }

    #[test]
    fn image_reference_table() {
        let digest = format!("sha256:{}", "0a".repeat(32));
        let with_digest = format!("quay.io/tigera/operator@{digest}");
        let tag_and_digest = format!("quay.io/tigera/operator:v1.40.3@{digest}");
        for (raw, tag) in [
            ("quay.io/tigera/operator:v1.40.3", Some("v1.40.3")),
            (
                "registry.example.internal:5000/mirror/tigera/operator:v1.40.3",
                Some("v1.40.3"),
            ),
            ("localhost/operator:dev", Some("dev")),
            ("[2001:db8::5]:5000/tigera/operator:v1", Some("v1")),
            ("tigera/operator:v1.40.3", Some("v1.40.3")),
            ("operator:latest", Some("latest")),
            ("Registry/tigera/operator:v1", Some("v1")),
            (with_digest.as_str(), None),
            (tag_and_digest.as_str(), Some("v1.40.3")),
        ] {
            assert_eq!(check_image_reference(raw), Ok(tag), "{raw}");
        }
        let bad: &[(&str, &str)] = &[
            ("quay.io/tigera/operator", "no tag or digest"),
            (
                "registry.example.internal:5000/operator",
                "no tag or digest",
            ),
            ("quay.io/tigera/operator:", "has a tag \"\""),
            ("quay.io/tigera/operator:-v1", "has a tag"),
            ("quay.io/tigera/operator:v1;reboot", "has a tag"),
            ("quay.io/tigera/operator@sha256:abc", "digest"),
            ("quay.io/Tigera/operator:v1", "image name"),
            ("quay.io//operator:v1", "image name"),
            ("user@quay.io/operator:v1", "digest"),
            ("quay..io/operator:v1", "registry host"),
            (
                "r.example.com:5000",
                "no image path after \"r.example.com\"",
            ),
            ("[::ffff:10.0.0.1]:5000/operator:v1", "only hex digits"),
            ("quay.io:99999/operator:v1", "registry host"),
            ("", "no tag or digest"),
        ];
        for (raw, want) in bad {
            let e = check_image_reference(raw).expect_err(raw);
            assert!(e.contains(want), "{raw}: {e}");
        }
    }

    #[test]
    fn image_path_table() {
        for raw in ["calico", "mirror/calico", "a.b/c_d/e-f/g__h", "0"] {
            assert_eq!(parse_image_path(raw).as_deref(), Ok(raw));
        }
        let bad: &[(&str, &str)] = &[
            ("", "it is empty"),
            ("/calico", "empty path component"),
            ("calico/", "empty path component"),
            ("Calico", "upper-case"),
            ("calico_", "must start and end"),
            ("calico/../x", "must start and end"),
            ("calico;reboot", "\";\" is not allowed"),
        ];
        for (raw, want) in bad {
            let e = parse_image_path(raw).expect_err(raw);
            assert_eq!(e.rule, rules::IMAGE_PATH_FORMAT, "{raw}");
            assert!(e.message.contains(want), "{raw}: {}", e.message);
        }
    }

    #[test]
    fn url_template_table() {
        let ok: &[(&str, bool)] = &[
            (DEFAULT_URL_TEMPLATE, false),
            (
                "https://mirror.example.com/calico/{version}/calicoctl-linux-{arch}",
                false,
            ),
            (
                "https://mirror.example.com:8443/c/{version}/{arch}/calicoctl",
                false,
            ),
            ("https://10.0.0.5/{arch}/{version}", false),
            ("https://[2001:db8::5]:443/{version}-{arch}", false),
            ("https://[2001:db8::5]/x_{version}~{arch}.bin", false),
            ("http://mirror.local/{version}/calicoctl-linux-{arch}", true),
        ];
        for (raw, insecure) in ok {
            let t = parse_url_template(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(t.insecure, *insecure, "{raw}");
            assert_eq!(t.template, *raw);
        }
        let long = format!("https://example.com/{}{{version}}{{arch}}", "a".repeat(600));
        let bad: &[(&str, &str)] = &[
            (
                "ftp://example.com/{version}/{arch}",
                "must start with https://",
            ),
            (
                "HTTPS://example.com/{version}/{arch}",
                "must start with https://",
            ),
            ("https://example.com", "no path"),
            ("https:///{version}/{arch}", "host is missing"),
            (
                "https://user:pw@example.com/{version}/{arch}",
                "user information",
            ),
            (
                "https://example.com/{version}/calicoctl",
                "{arch} placeholder is missing",
            ),
            (
                "https://example.com/{arch}/calicoctl",
                "{version} placeholder is missing",
            ),
            (
                "https://example.com/calicoctl",
                "{version} and {arch} placeholders are missing",
            ),
            ("https://example.com/{version}/{arch}?x=1", "query string"),
            ("https://example.com/{version}/{arch}#frag", "fragment"),
            (
                "https://example.com/{version}/{arch}%20",
                "percent-encoding",
            ),
            ("https://example.com/{version}/{arch} x", "whitespace"),
            ("https://example.com/{version}/{arch}\n", "whitespace"),
            ("https://example.com/$(id)/{version}/{arch}", "\"$\""),
            ("https://example.com/`id`/{version}/{arch}", "\"`\""),
            ("https://example.com/a;b/{version}/{arch}", "\";\""),
            ("https://example.com/\"/{version}/{arch}", "\"\\\"\""),
            ("https://example.com/'/{version}/{arch}", "\"'\""),
            ("https://example.com/\0/{version}/{arch}", "\\u{0000}"),
            (
                "https://example.com/{VERSION}/{arch}",
                "unknown placeholder",
            ),
            ("https://example.com/{version/{arch}", "unknown placeholder"),
            ("https://exa_mple.com/{version}/{arch}", "DNS name"),
            ("https://-bad.com/{version}/{arch}", "DNS name"),
            ("https://example.com:0/{version}/{arch}", "port"),
            ("https://example.com:65536/{version}/{arch}", "port"),
            ("https://example.com:/{version}/{arch}", "port"),
            ("https://example.com:80:80/{version}/{arch}", "port"),
            ("https://999.1.1.1/{version}/{arch}", "IPv4 host"),
            ("https://[::g]/{version}/{arch}", "IPv6 host"),
            ("https://[::1/{version}/{arch}", "closing ]"),
            ("https://example.com/ü/{version}/{arch}", "\"ü\""),
            (&long, "longer than 512"),
        ];
        for (raw, text) in bad {
            let e = parse_url_template(raw).expect_err(raw);
            assert_eq!(e.rule, rules::URL_TEMPLATE);
            assert!(e.message.contains(text), "{raw:?}: {}", e.message);
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn url_expansion() {
        let v = CalicoVersion {
            major: 3,
            minor: 31,
            patch: 7,
        };
        assert_eq!(
            expand_url(DEFAULT_URL_TEMPLATE, v, Arch::Arm64),
            "https://github.com/projectcalico/calico/releases/download/v3.31.7/calicoctl-linux-arm64"
        );
    }

    #[test]
    fn sha256_table() {
        let lower = "1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113";
        assert_eq!(parse_sha256(lower), Ok(Sha256Hex(lower.to_string())));
        assert_eq!(
            parse_sha256(&lower.to_uppercase()),
            Ok(Sha256Hex(lower.to_string()))
        );
        let bad = [
            String::new(),
            lower[..63].to_string(),
            format!("{lower}0"),
            format!("{lower}  calicoctl-linux-amd64"),
            format!(" {}", &lower[..63]),
            lower.replace('a', "g"),
            format!("sha256:{lower}"),
        ];
        for raw in &bad {
            assert_eq!(
                parse_sha256(raw).expect_err(raw).rule,
                rules::SHA256_FORMAT,
                "{raw:?}"
            );
        }
        assert!(
            parse_sha256(&bad[3])
                .expect_err("file")
                .message
                .contains("not the file name")
        );
    }

    #[test]
    fn dns1123_table() {
        for ok in ["a", "rr-1", "rr1.example.com", "0abc", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "RR1",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a b",
            &"a".repeat(254),
            "a\n",
            "ü",
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
    }

    #[test]
    fn peer_ip_table() {
        let ok: &[(&str, &str, Option<u16>)] = &[
            ("192.0.2.10", "192.0.2.10", None),
            ("192.0.2.10:179", "192.0.2.10", Some(179)),
            ("2001:db8::1", "2001:db8::1", None),
            ("[2001:db8::1]:179", "2001:db8::1", Some(179)),
            ("10.0.0.1:65535", "10.0.0.1", Some(65535)),
        ];
        for (raw, addr, port) in ok {
            let (a, p) = parse_peer_ip(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(a.to_string(), *addr);
            assert_eq!(p, *port);
        }
        for bad in [
            "",
            "[2001:db8::1]",
            "[2001:db8::1]:",
            "[2001:db8::1]:0",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "10.0.0.1:+179",
            "10.0.0.1:0179",
            "10.0.0.1/32",
            "rr1.example.com",
            "10.0.0.1 ",
            "10.0.0.1;id",
            "[10.0.0.1]:179",
            "256.0.0.1",
        ] {
            assert!(parse_peer_ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duration_table() {
        for ok in [
            "0", "120s", "1m30s", "1.5h", "300ms", "10us", "10µs", "10μs", "5ns", "2h45m", ".5s",
            "1.s",
        ] {
            assert_eq!(parse_go_duration(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "120",
            "-1s",
            "+1s",
            "1x",
            "s",
            "1 s",
            "1.2.3s",
            "1ss",
            "1sm",
            "9999999999999h",
            "1d",
            "1s\n",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }
}
