//! The Calico settings model: `capi-calico.io/<VARIABLE>` annotations parsed into typed, validated values.
//!
//! Pure: no I/O. Everything a user can get wrong in an annotation is reported here as a [`Problem`].
//!
//! Entry points: [`resolve`] (annotations -> [`Resolution`]), [`has_settings`], and [`render_problems`] (one
//! multi-line message for a denial). Submodules: [`keys`] (known keys, suggestions), [`values`] (single-value
//! parsers), [`peers`] (`CALICO_ROUTE_REFLECTORS`), [`selector`] (Calico selector grammar), [`checksums`]
//! (built-in calicoctl SHA-256 table), [`problem`] (display and the stable [`rules`] ids).

use std::collections::BTreeMap;

use ipnet::IpNet;

pub mod checksums;
pub mod keys;
pub mod peers;
pub mod problem;
pub mod selector;
pub mod values;

pub use problem::{render_problems, rules};

/// Prefix of every settings annotation.
pub const PREFIX: &str = "capi-calico.io/";

/// What the Cluster contributes to validation: its `spec.clusterNetwork.pods.cidrBlocks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// Parsed pod CIDR blocks, in the Cluster's order. Empty when the Cluster sets none.
    pub pod_cidrs: Vec<IpNet>,
}

/// `CALICO_BGP_OPTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpOption {
    Enabled,
    Disabled,
}

/// `CALICO_ENCAPSULATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    Ipip,
    IpipCrossSubnet,
    Vxlan,
    VxlanCrossSubnet,
    None,
}

/// `CALICO_NAT_OUTGOING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatOutgoing {
    Enabled,
    Disabled,
}

/// The IP pool: `CALICO_POD_CIDR` and `CALICO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodPool {
    pub cidr: IpNet,
    pub block_size: u8,
}

/// A validated `CALICO_VERSION` (`vX.Y.Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CalicoVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

/// A lower-case hex SHA-256 digest (64 characters), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(pub String);

/// Where and how calicoctl is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalicoctlSource {
    /// Validated URL template containing `{version}` and `{arch}`.
    pub url_template: String,
    /// Checksum for `amd64`, from `CALICOCTL_SHA256_AMD64` or the built-in table.
    pub sha256_amd64: Option<Sha256Hex>,
    /// Checksum for `arm64`, from `CALICOCTL_SHA256_ARM64` or the built-in table.
    pub sha256_arm64: Option<Sha256Hex>,
}

/// Where the workload cluster's Calico images come from (the Installation's `spec.registry` and `spec.imagePath`);
/// `None` keeps the operator's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSource {
    /// `CALICO_REGISTRY`, validated, ending in `/`.
    pub registry: Option<String>,
    /// `CALICO_IMAGE_PATH`, validated.
    pub image_path: Option<String>,
    /// `CALICO_IMAGE_PULL_SECRET`, validated (a DNS-1123 subdomain): the pull secret's name in the workload cluster's
    /// `tigera-operator` namespace, and the name of the management cluster's ClusterResourceSet Secret that holds it.
    pub pull_secret: Option<String>,
}

/// One validated BGPPeer from `CALICO_ROUTE_REFLECTORS`.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpPeer {
    /// `metadata.name` (DNS-1123 subdomain).
    pub name: String,
    /// The validated `spec`, only known fields, in canonical JSON form.
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// The resolved settings of an opted-in cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub bgp: BgpOption,
    /// `None` only when there is no Cluster to default from and `CALICO_POD_CIDR` is not set
    /// (a KCP or KCT carrying its own annotations).
    pub pod_pool: Option<PodPool>,
    pub encapsulation: Encapsulation,
    pub nat_outgoing: NatOutgoing,
    pub install_calicoctl: bool,
    pub configure_bgp: bool,
    pub as_number: Option<u32>,
    pub route_reflectors: Vec<BgpPeer>,
    pub calico_version: CalicoVersion,
    pub calicoctl: CalicoctlSource,
    pub images: ImageSource,
}

/// One thing wrong with the annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Full annotation key, e.g. `capi-calico.io/CALICO_BLOCK_SIZE`.
    pub key: String,
    /// The value received, if any, in display form: quoted, escaped and truncated by the constructor
    /// (see [`problem::display_value`]), e.g. `"19"` or `"LS0t…" (2048 bytes)`.
    pub value: Option<String>,
    /// For the last line of a capped list (rule `more-problems`): how many problems it stands for; 0 otherwise.
    pub omitted: usize,
    /// Stable rule identifier, used as a metrics label (e.g. `block-size-range`).
    pub rule: &'static str,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// The outcome of reading a set of annotations.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// `CUSTOM_CALICO_DEPLOYMENT` absent or `false`: leave the objects alone.
    NotOptedIn { warnings: Vec<String> },
    /// Opted in and valid.
    OptedIn {
        settings: Box<Settings>,
        warnings: Vec<String>,
    },
    /// At least one problem; all of them are listed.
    Invalid { problems: Vec<Problem> },
}

/// Read the settings from `annotations` (all annotations of an object; keys outside [`PREFIX`] are ignored).
///
/// `network` is the Cluster's network when known (validating a Cluster, or a KCP/KCT whose Cluster was found);
/// `None` when the annotations are on a KCP/KCT itself and no Cluster is known.
///
/// Not opted in: nothing else is validated. Opted in: every key and every combination is checked and all
/// problems are returned together.
pub fn resolve(
    annotations: &BTreeMap<String, String>,
    network: Option<&ClusterNetwork>,
) -> Resolution {
    let ours: BTreeMap<&str, &str> = annotations
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|var| (var, v.as_str())))
        .collect();
    let other_case: Vec<&str> = annotations
        .keys()
        .map(String::as_str)
        .filter(|k| is_prefix_in_other_case(k))
        .collect();
    // A misspelt switch set to "true" (`CUSTOM_CALICO_DEPLOYMNT`) says the user meant to opt in: without this the
    // cluster would be created without Calico, and with CNI none, without a network.
    let misspelt_switch: Vec<(&str, &str)> = ours
        .iter()
        .filter(|(k, v)| {
            **v == "true"
                && **k != keys::CUSTOM_CALICO_DEPLOYMENT
                && keys::closest(k, &[keys::CUSTOM_CALICO_DEPLOYMENT]).is_some()
        })
        .map(|(k, v)| (*k, *v))
        .collect();
    // The same with the prefix spelt in another case (`Capi-Calico.io/CUSTOM_CALICO_DEPLOYMENT: "true"`).
    let other_case_switch: Vec<(&str, &str)> = annotations
        .iter()
        .filter(|(k, v)| {
            *v == "true"
                && is_prefix_in_other_case(k)
                && k.get(PREFIX.len()..).is_some_and(|name| {
                    name == keys::CUSTOM_CALICO_DEPLOYMENT
                        || keys::closest(name, &[keys::CUSTOM_CALICO_DEPLOYMENT]).is_some()
                })
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if !ours.contains_key(keys::CUSTOM_CALICO_DEPLOYMENT)
        && (!misspelt_switch.is_empty() || !other_case_switch.is_empty())
    {
        let meant = format!(
            "did you mean \"{PREFIX}{}\", the master switch? Without it nothing is validated or applied",
            keys::CUSTOM_CALICO_DEPLOYMENT
        );
        let misspelt = misspelt_switch.into_iter().map(|(k, v)| {
            Problem::new(
                &format!("{PREFIX}{k}"),
                Some(v),
                rules::UNKNOWN_KEY,
                format!("is not a known setting: {meant}"),
            )
        });
        let other_case = other_case_switch.into_iter().map(|(k, v)| {
            Problem::new(
                k,
                Some(v),
                rules::UNKNOWN_KEY,
                format!("{OTHER_CASE}: {meant}"),
            )
        });
        return Resolution::Invalid {
            problems: problem::cap(misspelt.chain(other_case).collect()),
        };
    }
    match ours.get(keys::CUSTOM_CALICO_DEPLOYMENT).copied() {
        None | Some("false") => {
            let others: Vec<&str> = ours
                .keys()
                .copied()
                .filter(|k| *k != keys::CUSTOM_CALICO_DEPLOYMENT)
                .collect();
            let mut warnings = if others.is_empty() {
                Vec::new()
            } else {
                vec![ignored_warning(&others)]
            };
            warnings.extend(other_case.iter().map(|k| {
                format!(
                    "{} {OTHER_CASE}",
                    problem::escape(&k.chars().take(60).collect::<String>())
                )
            }));
            Resolution::NotOptedIn { warnings }
        }
        Some("true") if !other_case.is_empty() => {
            let mut problems = match Resolver::new(&ours, network).run() {
                Resolution::Invalid { problems } => problems,
                _ => Vec::new(),
            };
            problems.extend(other_case.iter().map(|k| {
                let fixed = format!("{PREFIX}{}", k.get(PREFIX.len()..).unwrap_or_default());
                Problem::new(
                    k,
                    None,
                    rules::UNKNOWN_KEY,
                    format!("{OTHER_CASE}: write {}", problem::escape(&fixed)),
                )
            }));
            Resolution::Invalid {
                problems: problem::cap(problems),
            }
        }
        Some("true") => Resolver::new(&ours, network).run(),
        Some(other) => {
            let message = match values::parse_bool(other) {
                Err(e) => format!("{}; it is the master switch for custom Calico", e.message),
                Ok(_) => String::from("is invalid"),
            };
            Resolution::Invalid {
                problems: vec![Problem::with_value(
                    keys::CUSTOM_CALICO_DEPLOYMENT,
                    other,
                    rules::OPT_IN_INVALID,
                    message,
                )],
            }
        }
    }
}

/// True when any annotation key starts with [`PREFIX`] exactly. A key spelt `Capi-Calico.io/...` (the API server
/// accepts it: it validates annotation keys lower-cased) does not count: it is never read, and [`resolve`] and the
/// policy say so in a warning or a problem.
pub fn has_settings(annotations: &BTreeMap<String, String>) -> bool {
    annotations.keys().any(|k| k.starts_with(PREFIX))
}

/// What is wrong with a key whose prefix is spelt in another case.
const OTHER_CASE: &str = "is not read: the prefix is capi-calico.io/, in lower case";

/// A key that starts with [`PREFIX`] spelt in another case, such as `Capi-Calico.io/CALICO_BLOCK_SIZE`.
pub fn is_prefix_in_other_case(key: &str) -> bool {
    !key.starts_with(PREFIX)
        && key
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// The warning for a not-opted-in object that carries other settings. Always under 120 characters: names at
/// most one key (truncated) and counts the rest.
fn ignored_warning(others: &[&str]) -> String {
    let first = others
        .first()
        .map(|k| k.chars().take(29).collect::<String>())
        .unwrap_or_default();
    let more = if others.len() > 1 {
        format!(" +{} more", others.len() - 1)
    } else {
        String::new()
    };
    format!(
        "{PREFIX} annotations ignored, {} is not \"true\": {}{more}",
        keys::CUSTOM_CALICO_DEPLOYMENT,
        problem::escape(&first)
    )
}

/// Resolution of an opted-in object: each step reads the annotations, records problems and warnings, and keeps
/// `None` for a value that was present but invalid (so dependent rules do not pile on).
struct Resolver<'a> {
    ours: &'a BTreeMap<&'a str, &'a str>,
    network: Option<&'a ClusterNetwork>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl<'a> Resolver<'a> {
    fn new(ours: &'a BTreeMap<&'a str, &'a str>, network: Option<&'a ClusterNetwork>) -> Self {
        Resolver {
            ours,
            network,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn get(&self, variable: &str) -> Option<&'a str> {
        self.ours.get(variable).copied()
    }

    /// Parse an optional key: `Some(default)` when absent, `Some(value)` when valid, `None` when invalid.
    fn parse<T>(
        &mut self,
        variable: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, values::ValueError>,
    ) -> Option<T> {
        match self.get(variable) {
            None => Some(default),
            Some(raw) => match parse(raw) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problems
                        .push(Problem::with_value(variable, raw, e.rule, e.message));
                    None
                }
            },
        }
    }

    fn run(mut self) -> Resolution {
        // Unknown keys.
        for (variable, value) in self.ours {
            if keys::is_known(variable) {
                continue;
            }
            let message = match keys::closest_key(variable) {
                Some(k) => format!("is not a known setting: did you mean \"{PREFIX}{k}\"?"),
                None => format!(
                    "is not a known setting: known settings are {PREFIX}<{}>",
                    keys::KNOWN_KEYS.join("|")
                ),
            };
            self.problems.push(Problem::new(
                &format!("{PREFIX}{variable}"),
                Some(value),
                rules::UNKNOWN_KEY,
                message,
            ));
        }

        // Single values.
        let bgp = self.parse(
            keys::CALICO_BGP_OPTION,
            BgpOption::Disabled,
            values::parse_bgp_option,
        );
        let explicit_block = self.parse(keys::CALICO_BLOCK_SIZE, None, |raw| {
            values::parse_block_size(raw).map(Some)
        });
        let explicit_cidr = self.parse(keys::CALICO_POD_CIDR, None, |raw| {
            values::parse_pod_cidr(raw).map(Some)
        });
        let encapsulation = self.parse(
            keys::CALICO_ENCAPSULATION,
            Encapsulation::VxlanCrossSubnet,
            values::parse_encapsulation,
        );
        let nat_outgoing = self.parse(
            keys::CALICO_NAT_OUTGOING,
            NatOutgoing::Enabled,
            values::parse_nat_outgoing,
        );
        let install = self.parse(keys::INSTALL_CALICOCTL, false, values::parse_bool);
        let configure = self.parse(
            keys::CONFIGURE_CALICO_BGP_SETTINGS,
            false,
            values::parse_bool,
        );
        let as_number = self.parse(keys::CALICO_BGP_AS_NUMBER, None, |raw| {
            values::parse_as_number(raw).map(Some)
        });
        let version = self.parse(
            keys::CALICO_VERSION,
            checksums::DEFAULT_VERSION,
            values::parse_version,
        );
        // Only calicoctl and the BGP files depend on knowing the release; the delivery does not.
        if let (Some(v), Some(raw)) = (version, self.get(keys::CALICO_VERSION))
            && (install == Some(true) || configure == Some(true))
            && let Err(e) = values::check_not_too_old(v)
        {
            self.problems.push(Problem::with_value(
                keys::CALICO_VERSION,
                raw,
                e.rule,
                e.message,
            ));
        }
        let url = self.parse(
            keys::CALICOCTL_URL,
            values::UrlTemplate {
                template: values::DEFAULT_URL_TEMPLATE.to_string(),
                insecure: false,
            },
            values::parse_url_template,
        );
        let sha_amd64 = self.parse(keys::CALICOCTL_SHA256_AMD64, None, |raw| {
            values::parse_sha256(raw).map(Some)
        });
        let sha_arm64 = self.parse(keys::CALICOCTL_SHA256_ARM64, None, |raw| {
            values::parse_sha256(raw).map(Some)
        });
        let registry = self.parse(keys::CALICO_REGISTRY, None, |raw| {
            values::parse_registry(raw).map(Some)
        });
        let image_path = self.parse(keys::CALICO_IMAGE_PATH, None, |raw| {
            values::parse_image_path(raw).map(Some)
        });
        let pull_secret = self.parse(keys::CALICO_IMAGE_PULL_SECRET, None, |raw| {
            values::parse_pull_secret(raw).map(Some)
        });
        let route_reflectors = self.route_reflectors(as_number.flatten());
        // Only peers that will be applied: calicoctl of that version reads them only then.
        if let (Some(peers), Some(version), Some(true)) = (&route_reflectors, version, configure) {
            for e in peers::fields_newer_than(peers, version) {
                self.problems.push(Problem::new(
                    &problem::full_key(keys::CALICO_ROUTE_REFLECTORS),
                    None,
                    e.rule,
                    e.message,
                ));
            }
        }

        // Combinations.
        let pool_cidr = self.pool_cidr(explicit_cidr, explicit_block);
        // Before the block size is judged: a wrong block size must not hide an encapsulation the pool cannot have.
        self.encapsulation_rules(encapsulation, bgp, pool_cidr);
        let pod_pool = pool_cidr.and_then(|cidr| {
            let block_size = self.pool_block_size(cidr, explicit_block)?;
            Some(PodPool { cidr, block_size })
        });
        if configure == Some(true) {
            self.bgp_prerequisites(install, bgp, as_number, route_reflectors.as_ref());
            if let Some(peers) = &route_reflectors {
                let mesh_needed = encapsulation.is_some_and(Encapsulation::needs_bgp);
                self.warnings.extend(peers::warnings(peers, mesh_needed));
            }
        } else if configure == Some(false) {
            for variable in [keys::CALICO_ROUTE_REFLECTORS, keys::CALICO_BGP_AS_NUMBER] {
                if self.get(variable).is_some_and(|v| !v.is_empty()) {
                    self.warnings.push(format!(
                        "{PREFIX}{variable} is not applied: {} is not \"true\"",
                        keys::CONFIGURE_CALICO_BGP_SETTINGS
                    ));
                }
            }
        }
        let calicoctl = self.calicoctl(version, url, sha_amd64, sha_arm64, install);

        if !self.problems.is_empty() {
            return Resolution::Invalid {
                problems: problem::cap(self.problems),
            };
        }
        let (
            Some(bgp),
            Some(encapsulation),
            Some(nat_outgoing),
            Some(install_calicoctl),
            Some(configure_bgp),
            Some(as_number),
            Some(route_reflectors),
            Some(calico_version),
            Some(calicoctl),
            Some(registry),
            Some(image_path),
            Some(pull_secret),
        ) = (
            bgp,
            encapsulation,
            nat_outgoing,
            install,
            configure,
            as_number,
            route_reflectors,
            version,
            calicoctl,
            registry,
            image_path,
            pull_secret,
        )
        else {
            // Unreachable: every `None` above recorded a problem.
            return Resolution::Invalid {
                problems: self.problems,
            };
        };
        Resolution::OptedIn {
            settings: Box::new(Settings {
                bgp,
                pod_pool,
                encapsulation,
                nat_outgoing,
                install_calicoctl,
                configure_bgp,
                as_number,
                route_reflectors,
                calico_version,
                calicoctl,
                images: ImageSource {
                    registry,
                    image_path,
                    pull_secret,
                },
            }),
            warnings: self.warnings,
        }
    }

    fn route_reflectors(&mut self, cluster_as: Option<u32>) -> Option<Vec<BgpPeer>> {
        let Some(raw) = self.get(keys::CALICO_ROUTE_REFLECTORS) else {
            return Some(Vec::new());
        };
        match peers::parse_route_reflectors(raw, cluster_as) {
            Ok(peers) => Some(peers),
            Err(errors) => {
                for e in errors {
                    let value = e.about_value.then_some(raw);
                    self.problems.push(Problem::new(
                        &problem::full_key(keys::CALICO_ROUTE_REFLECTORS),
                        value,
                        e.rule,
                        e.message,
                    ));
                }
                None
            }
        }
    }

    /// The pool's CIDR: explicit (checked against the Cluster), or the Cluster's first block of the wanted family.
    fn pool_cidr(
        &mut self,
        explicit_cidr: Option<Option<IpNet>>,
        explicit_block: Option<Option<u8>>,
    ) -> Option<IpNet> {
        let cluster_blocks: &[IpNet] = self.network.map_or(&[], |n| n.pod_cidrs.as_slice());
        let listed = || {
            cluster_blocks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cidr = match explicit_cidr {
            None => return None, // invalid CIDR, already reported
            Some(Some(cidr)) => {
                if !cluster_blocks.is_empty()
                    && !cluster_blocks
                        .iter()
                        .any(|block| block.trunc().contains(&cidr))
                {
                    let raw = self.get(keys::CALICO_POD_CIDR).unwrap_or_default();
                    self.problems.push(Problem::with_value(
                        keys::CALICO_POD_CIDR,
                        raw,
                        rules::POD_CIDR_OUTSIDE_CLUSTER,
                        format!(
                            "is not inside the Cluster's pod cidrBlocks ({}): the Calico operator rejects a pool \
                             outside kubeadm's pod subnet; use a range inside them, or leave CALICO_POD_CIDR unset",
                            listed()
                        ),
                    ));
                    return None;
                }
                if cluster_blocks.is_empty() && self.network.is_some() {
                    // kubeadm then writes no podSubnet, and tigera-operator refuses to make a pool without one
                    // ("kubeadm configuration is missing required podSubnet field"). A warning: a v1beta1
                    // KubeadmControlPlane may still set the podSubnet itself.
                    self.warnings.push(format!(
                        "capi-calico: add {cidr} to spec.clusterNetwork.pods.cidrBlocks (the pool needs it)"
                    ));
                }
                cidr
            }
            Some(None) => {
                let wanted = explicit_block.flatten().and_then(values::block_size_family);
                let found = cluster_blocks
                    .iter()
                    .find(|block| wanted.is_none_or(|family| values::Family::of(block) == family))
                    .map(IpNet::trunc);
                match (found, wanted) {
                    (Some(block), _) => {
                        if let Some(err) = values::unusable_pool_range(&block) {
                            self.problems.push(Problem::without_value(
                                keys::CALICO_POD_CIDR,
                                err.rule,
                                format!(
                                    "is not set, and the pool would be the Cluster's pod cidrBlock {block}, which {}; \
                                     set CALICO_POD_CIDR to a usable range inside the cidrBlocks",
                                    err.message
                                ),
                            ));
                            return None;
                        }
                        block
                    }
                    (None, Some(family)) if !cluster_blocks.is_empty() => {
                        let raw = self.get(keys::CALICO_BLOCK_SIZE).unwrap_or_default();
                        self.problems.push(Problem::with_value(
                            keys::CALICO_BLOCK_SIZE,
                            raw,
                            rules::BLOCK_SIZE_FAMILY,
                            format!(
                                "is an {} block size, but the Cluster's pod cidrBlocks ({}) have no {} block; use a \
                                 block size for their family",
                                family.name(),
                                listed(),
                                family.name()
                            ),
                        ));
                        return None;
                    }
                    (None, _) if self.network.is_some() => {
                        // A Cluster: the reconciler builds its Installation's IP pool from this, and has nothing. A
                        // warning, not a denial: a Cluster admitted before this check must still take its updates.
                        self.warnings.push(
                            "capi-calico: no pod CIDR: Calico is not delivered until spec.clusterNetwork.pods.cidrBlocks \
                             is set"
                                .to_string(),
                        );
                        return None;
                    }
                    (None, _) => {
                        if let Some(Some(size)) = explicit_block {
                            self.warnings.push(format!(
                                "{PREFIX}{} {size} is not used here: the IP pool takes the Cluster's settings",
                                keys::CALICO_BLOCK_SIZE,
                            ));
                        }
                        return None;
                    }
                }
            }
        };
        let family = values::Family::of(&cidr);
        if let Some(other) = cluster_blocks
            .iter()
            .find(|block| values::Family::of(block) != family)
        {
            // Short enough for one `Warning:` line with the longest IPv6 CIDR.
            self.warnings.push(format!(
                "capi-calico: dual-stack: Calico pool {cidr} only, none for {other}"
            ));
        }
        Some(cidr)
    }

    /// The block size of the pool `cidr`, checked against it.
    fn pool_block_size(&mut self, cidr: IpNet, explicit_block: Option<Option<u8>>) -> Option<u8> {
        let family = values::Family::of(&cidr);
        let explicit = explicit_block?; // invalid block size: already reported
        let block_size = explicit.unwrap_or(family.default_block_size());
        if let Err(e) = values::check_block_size(block_size, &cidr) {
            let problem = match (explicit, self.get(keys::CALICO_BLOCK_SIZE)) {
                (Some(_), Some(raw)) => {
                    Problem::with_value(keys::CALICO_BLOCK_SIZE, raw, e.rule, e.message)
                }
                _ => Problem::without_value(
                    keys::CALICO_BLOCK_SIZE,
                    e.rule,
                    format!("(not set, default {block_size}) {}", e.message),
                ),
            };
            self.problems.push(problem);
            return None;
        }
        Some(block_size)
    }

    fn encapsulation_rules(
        &mut self,
        encapsulation: Option<Encapsulation>,
        bgp: Option<BgpOption>,
        pool: Option<IpNet>,
    ) {
        let (Some(encapsulation), Some(raw)) =
            (encapsulation, self.get(keys::CALICO_ENCAPSULATION))
        else {
            return; // invalid (reported) or the default VXLANCrossSubnet, which always works
        };
        if encapsulation.needs_bgp() && bgp == Some(BgpOption::Disabled) {
            let why = if encapsulation == Encapsulation::None {
                "unencapsulated pools route pod traffic with BGP"
            } else {
                "IPIP routes are distributed with BGP"
            };
            self.problems.push(Problem::with_value(
                keys::CALICO_ENCAPSULATION,
                raw,
                rules::ENCAPSULATION_NEEDS_BGP,
                format!(
                    "needs {PREFIX}{}=Enabled ({why}; it is Disabled{}); enable BGP or use VXLAN or VXLANCrossSubnet",
                    keys::CALICO_BGP_OPTION,
                    if self.get(keys::CALICO_BGP_OPTION).is_none() { " by default" } else { "" }
                ),
            ));
        }
        if encapsulation.is_ipip()
            && let Some(pool @ IpNet::V6(_)) = pool
        {
            self.problems.push(Problem::with_value(
                keys::CALICO_ENCAPSULATION,
                raw,
                rules::ENCAPSULATION_IPIP_IPV6,
                format!("is not allowed with the IPv6 pool {pool}: IPIP carries IPv4 only; use VXLAN, VXLANCrossSubnet or None"),
            ));
        }
    }

    fn bgp_prerequisites(
        &mut self,
        install: Option<bool>,
        bgp: Option<BgpOption>,
        as_number: Option<Option<u32>>,
        route_reflectors: Option<&Vec<BgpPeer>>,
    ) {
        let needs = format!("{PREFIX}{}=true needs", keys::CONFIGURE_CALICO_BGP_SETTINGS);
        let rule = rules::BGP_SETTINGS_PREREQUISITE;
        let require = |this: &mut Self, variable: &str, what: &str| {
            let problem = match this.get(variable) {
                Some(raw) => {
                    Problem::with_value(variable, raw, rule, format!("must be {what}: {needs} it"))
                }
                None => Problem::without_value(
                    variable,
                    rule,
                    format!("is not set: {needs} it set to {what}"),
                ),
            };
            this.problems.push(problem);
        };
        if install == Some(false) {
            require(
                self,
                keys::INSTALL_CALICOCTL,
                "\"true\" (the BGP settings are applied with calicoctl)",
            );
        }
        if bgp == Some(BgpOption::Disabled) {
            require(
                self,
                keys::CALICO_BGP_OPTION,
                "\"Enabled\" (without BGP the peers do nothing)",
            );
        }
        if as_number == Some(None) {
            self.problems.push(Problem::without_value(
                keys::CALICO_BGP_AS_NUMBER,
                rule,
                format!("is not set: {needs} the cluster's AS number, e.g. a private AS from 64512 to 65534"),
            ));
        }
        if route_reflectors.is_some_and(Vec::is_empty) {
            self.problems.push(Problem::without_value(
                keys::CALICO_ROUTE_REFLECTORS,
                rule,
                format!("is not set or empty: {needs} at least one BGPPeer (the YAML, encoded with `base64 -w 0`)"),
            ));
        }
    }

    fn calicoctl(
        &mut self,
        version: Option<CalicoVersion>,
        url: Option<values::UrlTemplate>,
        sha_amd64: Option<Option<Sha256Hex>>,
        sha_arm64: Option<Option<Sha256Hex>>,
        install: Option<bool>,
    ) -> Option<CalicoctlSource> {
        if let Some(url) = &url
            && url.insecure
        {
            self.warnings.push(format!(
                "{PREFIX}{} uses http://: the download is not encrypted (its SHA-256 is still checked)",
                keys::CALICOCTL_URL
            ));
        }
        if install == Some(false) {
            let set: Vec<&str> = [
                keys::CALICOCTL_URL,
                keys::CALICOCTL_SHA256_AMD64,
                keys::CALICOCTL_SHA256_ARM64,
            ]
            .into_iter()
            .filter(|k| self.get(k).is_some())
            .collect();
            if !set.is_empty() {
                self.warnings.push(format!(
                    "{} not applied: {} is not \"true\"",
                    set.join(", "),
                    keys::INSTALL_CALICOCTL
                ));
            }
        }
        let version = version?;
        let (sha_amd64, sha_arm64) = (sha_amd64?, sha_arm64?);
        let pick = |given: Option<Sha256Hex>, arch: checksums::Arch| {
            given.or_else(|| checksums::builtin(version, arch).map(|s| Sha256Hex(s.to_string())))
        };
        for (given, arch, variable) in [
            (
                &sha_amd64,
                checksums::Arch::Amd64,
                keys::CALICOCTL_SHA256_AMD64,
            ),
            (
                &sha_arm64,
                checksums::Arch::Arm64,
                keys::CALICOCTL_SHA256_ARM64,
            ),
        ] {
            // A mirror serves the very same file, so for a version with a built-in checksum any other digest names
            // another binary, which every node would run as root: refused, not just reported.
            if let (Some(given), Some(builtin), Some(true)) =
                (given, checksums::builtin(version, arch), install)
                && given.0 != builtin
            {
                self.problems.push(Problem::with_value(
                    variable,
                    self.get(variable).unwrap_or_default(),
                    rules::SHA256_NOT_BUILTIN,
                    format!(
                        "is not the SHA-256 of calicoctl {version} for {} ({builtin}); mirrors serve the same file, so \
                         remove the annotation to use the built-in checksum",
                        arch.as_str()
                    ),
                ));
            }
        }
        let amd64 = pick(sha_amd64, checksums::Arch::Amd64);
        let arm64 = pick(sha_arm64, checksums::Arch::Arm64);
        match (&amd64, &arm64) {
            // Nothing is downloaded unless INSTALL_CALICOCTL is "true": a version without checksums is fine then.
            (None, None) if install == Some(true) => {
                let known = checksums::known_versions()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = format!(
                    "has no built-in calicoctl checksum (built in: {known}); set {PREFIX}{} and/or {PREFIX}{} from \
                     the release's SHA256SUMS: an unverified binary is never installed",
                    keys::CALICOCTL_SHA256_AMD64,
                    keys::CALICOCTL_SHA256_ARM64
                );
                let problem = match self.get(keys::CALICO_VERSION) {
                    Some(raw) => Problem::with_value(
                        keys::CALICO_VERSION,
                        raw,
                        rules::VERSION_UNVERIFIED,
                        message,
                    ),
                    None => Problem::without_value(
                        keys::CALICO_VERSION,
                        rules::VERSION_UNVERIFIED,
                        message,
                    ),
                };
                self.problems.push(problem);
                return None;
            }
            (Some(_), None) | (None, Some(_)) if install == Some(true) => {
                let (missing, variable) = if amd64.is_none() {
                    ("amd64", keys::CALICOCTL_SHA256_AMD64)
                } else {
                    ("arm64", keys::CALICOCTL_SHA256_ARM64)
                };
                self.warnings.push(format!(
                    "no {missing} calicoctl checksum for {version}: {missing} nodes will refuse to install it (set {variable})"
                ));
            }
            _ => {}
        }
        Some(CalicoctlSource {
            url_template: url?.template,
            sha256_amd64: amd64,
            sha256_arm64: arm64,
        })
    }
}

#[cfg(test)]
mod tests;
