//! The Calico settings model: `capi-calico.io/<VARIABLE>` annotations parsed into typed, validated values.
//!
//! Pure: no I/O. Everything a user can get wrong in an annotation is reported here as a [`Problem`].

use std::collections::BTreeMap;

use ipnet::IpNet;

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
}

/// One thing wrong with the annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Full annotation key, e.g. `capi-calico.io/CALICO_BLOCK_SIZE`.
    pub key: String,
    /// The value received, if any (already truncated/escaped for display by the constructor).
    pub value: Option<String>,
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
    OptedIn { settings: Box<Settings>, warnings: Vec<String> },
    /// At least one problem; all of them are listed.
    Invalid { problems: Vec<Problem> },
}

/// Read the settings from `annotations` (all annotations of an object; keys outside [`PREFIX`] are ignored).
///
/// `network` is the Cluster's network when known (validating a Cluster, or a KCP/KCT whose Cluster was found);
/// `None` when the annotations are on a KCP/KCT itself and no Cluster is known.
pub fn resolve(annotations: &BTreeMap<String, String>, network: Option<&ClusterNetwork>) -> Resolution {
    let _ = (annotations, network);
    Resolution::NotOptedIn { warnings: Vec::new() }
}

/// True when any annotation key starts with [`PREFIX`].
pub fn has_settings(annotations: &BTreeMap<String, String>) -> bool {
    annotations.keys().any(|k| k.starts_with(PREFIX))
}
