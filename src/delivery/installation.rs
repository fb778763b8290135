//! The `operator.tigera.io/v1` Installation `default` and APIServer `default`, rendered from [`Settings`], and the
//! ConfigMap `<cluster>-calico-installation` that carries them to the workload cluster.
//!
//! Deterministic: the objects are built field by field in a fixed order and serialized with `serde_json`
//! (`preserve_order`), so equal settings give byte-identical ConfigMaps.
//!
//! The operator's own rules (`tigera/operator` `validateCustomResource`, `ValidatePools`) are checked again here, so
//! that a combination the operator would refuse (IPIP or no encapsulation without BGP, IPIP on IPv6, a pool smaller
//! than its block) is reported on the management cluster instead of as a degraded TigeraStatus in the workload
//! cluster.

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{DeliveryError, MANAGED_BY, MANAGED_BY_LABEL};
use crate::settings::{BgpOption, Encapsulation, NatOutgoing, PodPool, Settings};

/// Data key of the Installation in the ConfigMap (sorted before [`APISERVER_KEY`]).
pub const INSTALLATION_KEY: &str = "00-installation.json";
/// Data key of the APIServer in the ConfigMap.
pub const APISERVER_KEY: &str = "01-apiserver.json";

/// `<cluster>-calico-installation`.
pub fn installation_configmap_name(cluster: &str) -> String {
    format!("{cluster}-calico-installation")
}

fn bgp_str(bgp: BgpOption) -> &'static str {
    match bgp {
        BgpOption::Enabled => "Enabled",
        BgpOption::Disabled => "Disabled",
    }
}

fn encapsulation_str(e: Encapsulation) -> &'static str {
    match e {
        Encapsulation::Ipip => "IPIP",
        Encapsulation::IpipCrossSubnet => "IPIPCrossSubnet",
        Encapsulation::Vxlan => "VXLAN",
        Encapsulation::VxlanCrossSubnet => "VXLANCrossSubnet",
        Encapsulation::None => "None",
    }
}

fn nat_str(n: NatOutgoing) -> &'static str {
    match n {
        NatOutgoing::Enabled => "Enabled",
        NatOutgoing::Disabled => "Disabled",
    }
}

/// The operator's pool and Installation rules, for one pool.
fn check(settings: &Settings, pool: &PodPool) -> Result<(), DeliveryError> {
    let unsupported = |m: String| Err(DeliveryError::Unsupported(m));
    let ipip = matches!(
        settings.encapsulation,
        Encapsulation::Ipip | Encapsulation::IpipCrossSubnet
    );
    if pool.cidr.trunc() != pool.cidr {
        return unsupported(format!(
            "CALICO_POD_CIDR {} is not a network address (did you mean {}?)",
            pool.cidr,
            pool.cidr.trunc()
        ));
    }
    let (min, max, family) = match pool.cidr {
        IpNet::V4(_) => (20, 32, "IPv4"),
        IpNet::V6(_) => (116, 128, "IPv6"),
    };
    if pool.block_size < min || pool.block_size > max {
        return unsupported(format!(
            "CALICO_BLOCK_SIZE {} is outside {min}..={max}, the range for an {family} pool",
            pool.block_size
        ));
    }
    if pool.cidr.prefix_len() > pool.block_size {
        return unsupported(format!(
            "CALICO_POD_CIDR {} is smaller than one block of /{}",
            pool.cidr, pool.block_size
        ));
    }
    if ipip && matches!(pool.cidr, IpNet::V6(_)) {
        return unsupported(format!(
            "CALICO_ENCAPSULATION {} is not available on an IPv6 pool ({}); use VXLAN, VXLANCrossSubnet or None",
            encapsulation_str(settings.encapsulation),
            pool.cidr
        ));
    }
    let needs_bgp = ipip || settings.encapsulation == Encapsulation::None;
    if needs_bgp && settings.bgp == BgpOption::Disabled {
        return unsupported(format!(
            "CALICO_ENCAPSULATION {} needs CALICO_BGP_OPTION Enabled (routes come from BGP); use VXLAN or VXLANCrossSubnet with BGP disabled",
            encapsulation_str(settings.encapsulation)
        ));
    }
    Ok(())
}

/// The Installation `default` and the APIServer `default`.
pub fn render_documents(settings: &Settings) -> Result<(Value, Value), DeliveryError> {
    let pool = settings.pod_pool.ok_or_else(|| {
        DeliveryError::Unsupported(
            "no pod CIDR: set spec.clusterNetwork.pods.cidrBlocks on the Cluster".into(),
        )
    })?;
    check(settings, &pool)?;
    let (pool_name, autodetection_key) = match pool.cidr {
        IpNet::V4(_) => ("default-ipv4-ippool", "nodeAddressAutodetectionV4"),
        IpNet::V6(_) => ("default-ipv6-ippool", "nodeAddressAutodetectionV6"),
    };
    let mut network = serde_json::Map::new();
    network.insert("bgp".into(), json!(bgp_str(settings.bgp)));
    network.insert(
        "ipPools".into(),
        json!([{
            "name": pool_name,
            "cidr": pool.cidr.to_string(),
            "blockSize": pool.block_size,
            "encapsulation": encapsulation_str(settings.encapsulation),
            "natOutgoing": nat_str(settings.nat_outgoing),
            "nodeSelector": "all()",
        }]),
    );
    // The address a node's kubelet reports as InternalIP, never an address that merely sits on an interface
    // (a kube-vip / keepalived control-plane VIP moves between nodes during a rollout).
    network.insert(
        autodetection_key.into(),
        json!({ "kubernetes": "NodeInternalIP" }),
    );
    let mut spec = serde_json::Map::new();
    spec.insert(
        "cni".into(),
        json!({ "type": "Calico", "ipam": { "type": "Calico" } }),
    );
    spec.insert("calicoNetwork".into(), Value::Object(network));
    // Only when set, so that the Installation of a cluster without these settings stays byte for byte the same.
    if let Some(registry) = &settings.images.registry {
        spec.insert("registry".into(), json!(registry));
    }
    if let Some(image_path) = &settings.images.image_path {
        spec.insert("imagePath".into(), json!(image_path));
    }
    // The operator reads pull secrets from its own namespace, tigera-operator, where the ClusterResourceSet puts it.
    if let Some(secret) = &settings.images.pull_secret {
        spec.insert("imagePullSecrets".into(), json!([{ "name": secret }]));
    }
    let installation = json!({
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": { "name": "default" },
        "spec": spec,
    });
    let apiserver = json!({
        "apiVersion": "operator.tigera.io/v1",
        "kind": "APIServer",
        "metadata": { "name": "default" },
        "spec": {},
    });
    Ok((installation, apiserver))
}

/// The ConfigMap `<cluster>-calico-installation` in `namespace` holding the Installation and the APIServer as
/// pretty-printed JSON (one document per key; key order = apply order). No ownerReference: the caller adds it.
pub fn installation_configmap(
    cluster: &str,
    namespace: &str,
    settings: &Settings,
) -> Result<Value, DeliveryError> {
    let (installation, apiserver) = render_documents(settings)?;
    let mut installation_text = serde_json::to_string_pretty(&installation)?;
    installation_text.push('\n');
    let mut apiserver_text = serde_json::to_string_pretty(&apiserver)?;
    apiserver_text.push('\n');
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": installation_configmap_name(cluster),
            "namespace": namespace,
            "labels": {
                super::CLUSTER_LABEL: cluster,
                MANAGED_BY_LABEL: MANAGED_BY,
            },
        },
        "data": {
            INSTALLATION_KEY: installation_text,
            APISERVER_KEY: apiserver_text,
        },
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::settings::{CalicoVersion, CalicoctlSource, ImageSource};

    pub(crate) fn settings(
        bgp: BgpOption,
        encapsulation: Encapsulation,
        nat_outgoing: NatOutgoing,
        cidr: &str,
        block_size: u8,
    ) -> Settings {
        Settings {
            bgp,
            pod_pool: Some(PodPool {
                cidr: cidr.parse().unwrap(),
                block_size,
            }),
            encapsulation,
            nat_outgoing,
            install_calicoctl: false,
            configure_bgp: false,
            as_number: None,
            route_reflectors: Vec::new(),
            calico_version: CalicoVersion {
                major: 3,
                minor: 31,
                patch: 7,
            },
            calicoctl: CalicoctlSource {
                url_template: "https://example.invalid/{version}/{arch}".into(),
                sha256_amd64: None,
                sha256_arm64: None,
            },
            images: ImageSource::default(),
        }
    }

    const ENCAPSULATIONS: [Encapsulation; 5] = [
        Encapsulation::Ipip,
        Encapsulation::IpipCrossSubnet,
        Encapsulation::Vxlan,
        Encapsulation::VxlanCrossSubnet,
        Encapsulation::None,
    ];

    fn golden_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/delivery")
            .join(name)
    }

    /// Compare with a golden file; `UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, actual: &str) {
        let path = golden_path(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        pretty_assertions::assert_eq!(expected, actual, "golden file {}", path.display());
    }

    /// Every combination: BGP on/off x 5 encapsulations x NAT on/off x IPv4/IPv6. Valid ones render the
    /// Installation (compact JSON), invalid ones the reason.
    #[test]
    fn matrix_matches_golden() {
        let mut out = String::new();
        for (cidr, block) in [("10.244.0.0/16", 26u8), ("fd00:10:244::/56", 122u8)] {
            for bgp in [BgpOption::Enabled, BgpOption::Disabled] {
                for enc in ENCAPSULATIONS {
                    for nat in [NatOutgoing::Enabled, NatOutgoing::Disabled] {
                        let s = settings(bgp, enc, nat, cidr, block);
                        let line = match render_documents(&s) {
                            Ok((inst, _)) => serde_json::to_string(&inst).unwrap(),
                            Err(e) => format!("ERROR {e}"),
                        };
                        out.push_str(&format!(
                            "# cidr={cidr} blockSize={block} bgp={bgp:?} encapsulation={enc:?} nat={nat:?}\n{line}\n"
                        ));
                    }
                }
            }
        }
        golden("installation-matrix.golden", &out);
    }

    #[test]
    fn configmap_matches_golden_and_is_deterministic() {
        let s = settings(
            BgpOption::Enabled,
            Encapsulation::VxlanCrossSubnet,
            NatOutgoing::Enabled,
            "192.168.0.0/16",
            26,
        );
        let a = installation_configmap("prod-1", "team-a", &s).unwrap();
        let b = installation_configmap("prod-1", "team-a", &s.clone()).unwrap();
        let text = serde_json::to_string_pretty(&a).unwrap();
        assert_eq!(text, serde_json::to_string_pretty(&b).unwrap());
        golden("installation-configmap.golden.json", &format!("{text}\n"));
    }

    #[test]
    fn rules() {
        let v4 = |bgp, enc| settings(bgp, enc, NatOutgoing::Enabled, "10.0.0.0/16", 26);
        assert!(render_documents(&v4(BgpOption::Disabled, Encapsulation::Vxlan)).is_ok());
        for enc in [
            Encapsulation::Ipip,
            Encapsulation::IpipCrossSubnet,
            Encapsulation::None,
        ] {
            assert!(render_documents(&v4(BgpOption::Disabled, enc)).is_err());
            assert!(render_documents(&v4(BgpOption::Enabled, enc)).is_ok());
        }
        let v6 = |enc| {
            settings(
                BgpOption::Enabled,
                enc,
                NatOutgoing::Disabled,
                "fd00::/48",
                122,
            )
        };
        assert!(render_documents(&v6(Encapsulation::Ipip)).is_err());
        let (inst, _) = render_documents(&v6(Encapsulation::Vxlan)).unwrap();
        assert_eq!(
            inst.pointer("/spec/calicoNetwork/nodeAddressAutodetectionV6/kubernetes"),
            Some(&json!("NodeInternalIP"))
        );
        assert!(
            inst.pointer("/spec/calicoNetwork/nodeAddressAutodetectionV4")
                .is_none()
        );
        // Block sizes and masks.
        let bad = [
            ("10.0.0.0/16", 33),
            ("10.0.0.0/16", 19),
            ("10.0.0.0/27", 26),
            ("10.0.0.1/16", 26),
            ("fd00::/48", 26),
        ];
        for (cidr, block) in bad {
            let s = settings(
                BgpOption::Enabled,
                Encapsulation::Vxlan,
                NatOutgoing::Enabled,
                cidr,
                block,
            );
            assert!(render_documents(&s).is_err(), "{cidr} /{block}");
        }
        let mut none = v4(BgpOption::Enabled, Encapsulation::Vxlan);
        none.pod_pool = None;
        assert!(render_documents(&none).is_err());
    }

    #[test]
    fn image_source_sets_registry_image_path_and_pull_secret_only_when_given() {
        let mut s = settings(
            BgpOption::Enabled,
            Encapsulation::VxlanCrossSubnet,
            NatOutgoing::Enabled,
            "192.168.0.0/16",
            26,
        );
        let (plain, _) = render_documents(&s).unwrap();
        assert!(plain["spec"].get("registry").is_none());
        assert!(plain["spec"].get("imagePath").is_none());
        assert!(plain["spec"].get("imagePullSecrets").is_none());

        s.images = ImageSource {
            registry: Some("registry.example.internal:5000/mirror/".into()),
            image_path: Some("calico-mirror".into()),
            pull_secret: Some("calico-pull".into()),
        };
        let (inst, _) = render_documents(&s).unwrap();
        assert_eq!(
            inst["spec"]["registry"],
            json!("registry.example.internal:5000/mirror/")
        );
        assert_eq!(inst["spec"]["imagePath"], json!("calico-mirror"));
        assert_eq!(
            inst["spec"]["imagePullSecrets"],
            json!([{ "name": "calico-pull" }])
        );
        // The rest of the Installation is unchanged.
        let mut without = inst.clone();
        let spec = without["spec"].as_object_mut().unwrap();
        spec.remove("registry");
        spec.remove("imagePath");
        spec.remove("imagePullSecrets");
        assert_eq!(without, plain);
    }
}
