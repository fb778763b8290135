//! The known annotation keys and closest-match suggestions for typos.

/// `CUSTOM_CALICO_DEPLOYMENT`: the master switch.
pub const CUSTOM_CALICO_DEPLOYMENT: &str = "CUSTOM_CALICO_DEPLOYMENT";
/// `CALICO_BGP_OPTION`.
pub const CALICO_BGP_OPTION: &str = "CALICO_BGP_OPTION";
/// `CALICO_BLOCK_SIZE`.
pub const CALICO_BLOCK_SIZE: &str = "CALICO_BLOCK_SIZE";
/// `CALICO_POD_CIDR`.
pub const CALICO_POD_CIDR: &str = "CALICO_POD_CIDR";
/// `CALICO_ENCAPSULATION`.
pub const CALICO_ENCAPSULATION: &str = "CALICO_ENCAPSULATION";
/// `CALICO_NAT_OUTGOING`.
pub const CALICO_NAT_OUTGOING: &str = "CALICO_NAT_OUTGOING";
/// `INSTALL_CALICOCTL`.
pub const INSTALL_CALICOCTL: &str = "INSTALL_CALICOCTL";
/// `CONFIGURE_CALICO_BGP_SETTINGS`.
pub const CONFIGURE_CALICO_BGP_SETTINGS: &str = "CONFIGURE_CALICO_BGP_SETTINGS";
/// `CALICO_BGP_AS_NUMBER`.
pub const CALICO_BGP_AS_NUMBER: &str = "CALICO_BGP_AS_NUMBER";
/// `CALICO_ROUTE_REFLECTORS`.
pub const CALICO_ROUTE_REFLECTORS: &str = "CALICO_ROUTE_REFLECTORS";
/// `CALICO_VERSION`.
pub const CALICO_VERSION: &str = "CALICO_VERSION";
/// `CALICOCTL_URL`.
pub const CALICOCTL_URL: &str = "CALICOCTL_URL";
/// `CALICOCTL_SHA256_AMD64`.
pub const CALICOCTL_SHA256_AMD64: &str = "CALICOCTL_SHA256_AMD64";
/// `CALICOCTL_SHA256_ARM64`.
pub const CALICOCTL_SHA256_ARM64: &str = "CALICOCTL_SHA256_ARM64";

/// `CALICO_REGISTRY`.
pub const CALICO_REGISTRY: &str = "CALICO_REGISTRY";
/// `CALICO_IMAGE_PATH`.
pub const CALICO_IMAGE_PATH: &str = "CALICO_IMAGE_PATH";
/// `CALICO_IMAGE_PULL_SECRET`.
pub const CALICO_IMAGE_PULL_SECRET: &str = "CALICO_IMAGE_PULL_SECRET";

/// Every known variable name, in the order of the documentation table.
pub const KNOWN_KEYS: [&str; 17] = [
    CUSTOM_CALICO_DEPLOYMENT,
    CALICO_BGP_OPTION,
    CALICO_BLOCK_SIZE,
    CALICO_POD_CIDR,
    CALICO_ENCAPSULATION,
    CALICO_NAT_OUTGOING,
    INSTALL_CALICOCTL,
    CONFIGURE_CALICO_BGP_SETTINGS,
    CALICO_BGP_AS_NUMBER,
    CALICO_ROUTE_REFLECTORS,
    CALICO_VERSION,
    CALICOCTL_URL,
    CALICOCTL_SHA256_AMD64,
    CALICOCTL_SHA256_ARM64,
    CALICO_REGISTRY,
    CALICO_IMAGE_PATH,
    CALICO_IMAGE_PULL_SECRET,
];

/// True when `variable` (the part after the prefix) is a known setting.
pub fn is_known(variable: &str) -> bool {
    KNOWN_KEYS.contains(&variable)
}

/// Inputs longer than this are never compared (keeps suggestion cost bounded on hostile input).
pub const MAX_COMPARED_CHARS: usize = 128;

/// Levenshtein distance, case-insensitive (ASCII), with a bounded input length.
/// Returns `None` when either side is longer than [`MAX_COMPARED_CHARS`].
pub fn edit_distance(a: &str, b: &str) -> Option<usize> {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    if a.len() > MAX_COMPARED_CHARS || b.len() > MAX_COMPARED_CHARS {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[b.len()])
}

/// The candidate closest to `input`, if it is close enough to be a plausible typo
/// (distance at most a third of the candidate's length, and at least 1 allowed), or else the single candidate
/// that `input` is a prefix of (at least 6 characters).
pub fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let Some(distance) = edit_distance(input, candidate) else {
            continue;
        };
        let allowed = (candidate.len() / 3).max(1);
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    if let Some((_, c)) = best {
        return Some(c);
    }
    // A truncated name (`CALICO_ENCAP`): suggest the one candidate it is a prefix of.
    let lower = input.to_ascii_lowercase();
    if lower.len() < 6 {
        return None;
    }
    let mut prefixed = candidates
        .iter()
        .filter(|c| c.to_ascii_lowercase().starts_with(&lower));
    match (prefixed.next(), prefixed.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// The closest known setting to an unknown variable name.
pub fn closest_key(variable: &str) -> Option<&'static str> {
    closest(variable, &KNOWN_KEYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_table() {
        let cases = [
            ("", "", 0),
            ("abc", "abc", 0),
            ("abc", "ABC", 0),
            ("kitten", "sitting", 3),
            ("CALICO_BLOCKSIZE", "CALICO_BLOCK_SIZE", 1),
        ];
        for (a, b, want) in cases {
            assert_eq!(edit_distance(a, b), Some(want), "{a} vs {b}");
        }
        assert_eq!(edit_distance(&"x".repeat(10_000), "abc"), None);
    }

    #[test]
    fn closest_key_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("CALICO_BLOCKSIZE", Some("CALICO_BLOCK_SIZE")),
            ("calico_block_size", Some("CALICO_BLOCK_SIZE")),
            ("CALICO_POD_CIDRS", Some("CALICO_POD_CIDR")),
            ("CALICO_BGP_AS", Some("CALICO_BGP_AS_NUMBER")),
            ("CALICO_ROUTE_REFLECTOR", Some("CALICO_ROUTE_REFLECTORS")),
            ("INSTALL_CALICO_CTL", Some("INSTALL_CALICOCTL")),
            ("CALICOCTL_SHA256_AMD", Some("CALICOCTL_SHA256_AMD64")),
            ("CALICO_ENCAP", Some("CALICO_ENCAPSULATION")),
            ("CALICO_BGP", None),
            ("CUSTOM_CALICO_DEPLOY", Some("CUSTOM_CALICO_DEPLOYMENT")),
            ("CALICO_VERSIONS", Some("CALICO_VERSION")),
            ("totally-unrelated", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(closest_key(input), *want, "closest_key({input:?})");
        }
    }

    #[test]
    fn every_known_key_is_known() {
        for key in KNOWN_KEYS {
            assert!(is_known(key));
            assert_eq!(closest_key(key), Some(key));
        }
        assert!(!is_known("calico_block_size"));
    }
}
