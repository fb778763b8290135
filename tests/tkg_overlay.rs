//! Renders TKG-style cluster templates (tests/fixtures/tkg/) with the real `ytt`, with and without the overlay in
//! deploy/tkg/, and checks what it adds: `capi-calico.io/<NAME>` string annotations on the Cluster, the
//! `cluster.x-k8s.io/cluster-name` label on the KubeadmControlPlane and every KubeadmConfigTemplate, and nothing at
//! all for a cluster that does not opt in.
//!
//! ytt comes from env `YTT_BIN`, else `bin/ytt` (built by `deploy/tkg/build-ytt.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Every setting the webhook knows: the overlay and its defaults file must cover exactly these.
const KEYS: [&str; 17] = capi_calico_webhook::settings::keys::KNOWN_KEYS;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/tkg").join(name)
}

fn ytt() -> PathBuf {
    let path = std::env::var_os("YTT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("bin/ytt"));
    assert!(
        path.is_file(),
        "ytt not found at {} : run deploy/tkg/build-ytt.sh (builds the pinned carvel.dev/ytt into bin/ytt) or set \
         YTT_BIN to a ytt binary",
        path.display()
    );
    path
}

enum Overlay {
    With,
    Without,
}

/// ytt over TKG's defaults, the template, optionally deploy/tkg, and the user's cluster config as data values.
fn ytt_run(template: &str, overlay: Overlay, config: &Path) -> Output {
    let mut cmd = Command::new(ytt());
    cmd.arg("-f")
        .arg(fixture("tkg-defaults.yaml"))
        .arg("-f")
        .arg(fixture(template));
    match overlay {
        Overlay::With => {
            cmd.arg("-f")
                .arg(repo().join("deploy/tkg/capi-calico-values.yaml"));
            cmd.arg("-f")
                .arg(repo().join("deploy/tkg/capi-calico-overlay.yaml"));
        }
        // Our variables still need declaring, as TKG would refuse undeclared ones; only the overlay is left out.
        Overlay::Without => {
            cmd.arg("-f")
                .arg(repo().join("deploy/tkg/capi-calico-values.yaml"));
        }
    }
    cmd.arg("--data-values-file").arg(config);
    cmd.output().expect("ytt runs")
}

fn render(template: &str, overlay: Overlay, config: &Path) -> Vec<Value> {
    let out = ytt_run(template, overlay, config);
    assert!(
        out.status.success(),
        "ytt failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("ytt output parses");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn config_file(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let path = dir.path().join("cluster-config.yaml");
    std::fs::write(&path, body).unwrap();
    path
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .unwrap_or_else(|| panic!("{k}: not a string: {v}"))
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn calico_annotations(cluster: &Value) -> BTreeMap<String, String> {
    string_map(&cluster["metadata"]["annotations"])
        .into_iter()
        .filter(|(k, _)| k.starts_with("capi-calico.io/"))
        .collect()
}

#[test]
fn every_setting_becomes_a_string_annotation_and_kcp_and_kcts_are_labelled() {
    let docs = render(
        "cluster-template.yaml",
        Overlay::With,
        &fixture("cluster-config-bgp.yaml"),
    );
    let clusters = of_kind(&docs, "Cluster");
    assert_eq!(clusters.len(), 1);
    let cluster = clusters[0];
    let want: BTreeMap<String, String> = [
        ("CUSTOM_CALICO_DEPLOYMENT", "true"),
        ("CALICO_BGP_OPTION", "Enabled"),
        ("CALICO_BLOCK_SIZE", "26"),
        ("CALICO_POD_CIDR", "100.96.0.0/12"),
        ("CALICO_ENCAPSULATION", "IPIPCrossSubnet"),
        ("CALICO_NAT_OUTGOING", "Disabled"),
        ("INSTALL_CALICOCTL", "true"),
        ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
        ("CALICO_BGP_AS_NUMBER", "1.10"),
        (
            "CALICO_ROUTE_REFLECTORS",
            "YXBpVmVyc2lvbjogcHJvamVjdGNhbGljby5vcmcvdjMKa2luZDogQkdQUGVlcgptZXRhZGF0YToKICBuYW1lOiByci0xCnNwZWM6CiAgcGVlcklQOiAxMC4wLjAuMQogIGFzTnVtYmVyOiA2NTAwMAo=",
        ),
        ("CALICO_VERSION", "v3.31.7"),
        ("CALICOCTL_URL", "https://mirror.example.com/calico/{version}/calicoctl-linux-{arch}"),
        ("CALICOCTL_SHA256_AMD64", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("CALICOCTL_SHA256_ARM64", "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"),
        ("CALICO_REGISTRY", "registry.example.internal:5000/mirror"),
        ("CALICO_IMAGE_PATH", "calico"),
        ("CALICO_IMAGE_PULL_SECRET", "calico-pull"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("capi-calico.io/{k}"), v.to_string()))
    .collect();
    assert_eq!(calico_annotations(cluster), want);
    assert_eq!(want.len(), KEYS.len(), "the fixture sets every key");

    // What the template had stays.
    assert_eq!(cluster["metadata"]["annotations"]["tkg/plan"], "prod");
    assert_eq!(
        cluster["metadata"]["labels"]["tkg.tanzu.vmware.com/cluster-name"],
        "workload-bgp"
    );
    assert_eq!(cluster["metadata"]["name"], "workload-bgp");

    // The KCP and both worker pools' templates are linked to the Cluster by label.
    let kcps = of_kind(&docs, "KubeadmControlPlane");
    let kcts = of_kind(&docs, "KubeadmConfigTemplate");
    assert_eq!((kcps.len(), kcts.len()), (1, 2));
    for obj in kcps.iter().chain(kcts.iter()) {
        assert_eq!(
            string_map(&obj["metadata"]["labels"]),
            BTreeMap::from([(
                "cluster.x-k8s.io/cluster-name".to_string(),
                "workload-bgp".to_string()
            )]),
            "{}",
            obj["metadata"]["name"]
        );
        assert!(
            obj["metadata"].get("annotations").is_none(),
            "settings go on the Cluster only"
        );
    }

    // Everything else is exactly what the template renders without the overlay.
    let plain = render(
        "cluster-template.yaml",
        Overlay::Without,
        &fixture("cluster-config-bgp.yaml"),
    );
    assert_eq!(plain.len(), docs.len());
    for (with, without) in docs.iter().zip(&plain) {
        let mut stripped = with.clone();
        match with["kind"].as_str().unwrap() {
            "Cluster" => {
                let ann = stripped["metadata"]["annotations"].as_object_mut().unwrap();
                ann.retain(|k, _| !k.starts_with("capi-calico.io/"));
            }
            "KubeadmControlPlane" | "KubeadmConfigTemplate" => {
                stripped["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("labels");
            }
            _ => {}
        }
        assert_eq!(
            &stripped, without,
            "{} {}",
            with["kind"], with["metadata"]["name"]
        );
    }
}

#[test]
fn unset_variables_are_left_to_the_webhook_defaults() {
    let docs = render(
        "cluster-template.yaml",
        Overlay::With,
        &fixture("cluster-config-minimal.yaml"),
    );
    let cluster = of_kind(&docs, "Cluster")[0];
    assert_eq!(
        calico_annotations(cluster),
        BTreeMap::from([
            (
                "capi-calico.io/CUSTOM_CALICO_DEPLOYMENT".to_string(),
                "true".to_string()
            ),
            (
                "capi-calico.io/INSTALL_CALICOCTL".to_string(),
                "true".to_string()
            ),
        ])
    );
    for kind in ["KubeadmControlPlane", "KubeadmConfigTemplate"] {
        for obj in of_kind(&docs, kind) {
            assert_eq!(
                obj["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
                "workload-min"
            );
        }
    }
}

#[test]
fn a_cluster_that_does_not_opt_in_renders_exactly_as_without_the_overlay() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        fixture("cluster-config-off.yaml"),
        config_file(
            &dir,
            "CLUSTER_NAME: plain\nCUSTOM_CALICO_DEPLOYMENT: false\nINSTALL_CALICOCTL: true\n",
        ),
    ] {
        let with = ytt_run("cluster-template.yaml", Overlay::With, &config);
        let without = ytt_run("cluster-template.yaml", Overlay::Without, &config);
        assert!(
            with.status.success(),
            "{}",
            String::from_utf8_lossy(&with.stderr)
        );
        assert!(
            without.status.success(),
            "{}",
            String::from_utf8_lossy(&without.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&with.stdout),
            String::from_utf8_lossy(&without.stdout),
            "byte-identical output for {}",
            config.display()
        );
    }
}

#[test]
fn string_spellings_are_copied_verbatim_for_the_webhook_to_judge() {
    // A value the webhook rejects (wrong case) is still copied, so the user gets the webhook's message with the
    // right spelling instead of a silently ignored setting.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        "CLUSTER_NAME: c\nCNI: none\nCUSTOM_CALICO_DEPLOYMENT: \"true\"\nCALICO_BGP_OPTION: enabled\nCALICO_BGP_AS_NUMBER: 64512\n",
    );
    let docs = render("cluster-template.yaml", Overlay::With, &config);
    let ann = calico_annotations(of_kind(&docs, "Cluster")[0]);
    assert_eq!(ann["capi-calico.io/CUSTOM_CALICO_DEPLOYMENT"], "true");
    assert_eq!(ann["capi-calico.io/CALICO_BGP_OPTION"], "enabled");
    assert_eq!(ann["capi-calico.io/CALICO_BGP_AS_NUMBER"], "64512");
}

#[test]
fn an_unquoted_asdot_as_number_is_refused_with_a_hint() {
    // YAML reads 1.10 as the float 1.1: copying it would silently change the AS number.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        "CLUSTER_NAME: c\nCNI: none\nCUSTOM_CALICO_DEPLOYMENT: true\nCALICO_BGP_AS_NUMBER: 1.10\n",
    );
    let out = ytt_run("cluster-template.yaml", Overlay::With, &config);
    assert!(!out.status.success(), "ytt must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CALICO_BGP_AS_NUMBER") && err.contains("quote it in the cluster config file"),
        "{err}"
    );
}

/// TKG installs its default CNI unless told otherwise, and the ClusterResourceSet would add Calico beside it: an
/// opted-in cluster that keeps TKG's CNI fails to render, naming both variables. Not opted in, CNI is not checked.
#[test]
fn an_opted_in_cluster_must_set_cni_none() {
    let dir = tempfile::tempdir().unwrap();
    for (body, fails) in [
        ("CLUSTER_NAME: c\nCUSTOM_CALICO_DEPLOYMENT: true\n", true),
        (
            "CLUSTER_NAME: c\nCUSTOM_CALICO_DEPLOYMENT: true\nCNI: calico\n",
            true,
        ),
        (
            "CLUSTER_NAME: c\nCUSTOM_CALICO_DEPLOYMENT: true\nCNI: none\n",
            false,
        ),
        ("CLUSTER_NAME: c\nCUSTOM_CALICO_DEPLOYMENT: false\n", false),
    ] {
        for template in ["cluster-template.yaml", "cluster-template-classy.yaml"] {
            let out = ytt_run(template, Overlay::With, &config_file(&dir, body));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(!out.status.success(), fails, "{template} {body:?}: {err}");
            if fails {
                assert!(
                    err.contains("with CUSTOM_CALICO_DEPLOYMENT: true. Set CNI: none"),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn a_clusterclass_cluster_gets_its_annotations_without_kcp_or_kct() {
    let docs = render(
        "cluster-template-classy.yaml",
        Overlay::With,
        &fixture("cluster-config-minimal.yaml"),
    );
    assert_eq!(docs.len(), 1);
    assert_eq!(calico_annotations(&docs[0]).len(), 2);
    assert!(docs[0]["spec"]["topology"].is_object());
}

#[test]
fn the_defaults_file_declares_every_key_and_sets_none_but_the_switch() {
    let out = Command::new(ytt())
        .arg("-f")
        .arg(repo().join("deploy/tkg/capi-calico-values.yaml"))
        .arg("--data-values-inspect")
        .output()
        .expect("ytt runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Value = serde_saphyr::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let declared: Vec<&String> = values.as_object().unwrap().keys().collect();
    let mut want: Vec<&str> = KEYS.to_vec();
    want.sort();
    let mut got: Vec<&str> = declared.iter().map(|s| s.as_str()).collect();
    got.sort();
    assert_eq!(got, want);
    for key in KEYS {
        let expected = if key == "CUSTOM_CALICO_DEPLOYMENT" {
            Value::Bool(false)
        } else {
            Value::Null
        };
        assert_eq!(values[key], expected, "{key}");
    }
    // The overlay copies exactly these keys.
    let overlay =
        std::fs::read_to_string(repo().join("deploy/tkg/capi-calico-overlay.yaml")).unwrap();
    for key in KEYS {
        assert!(
            overlay.contains(&format!("#@   \"{key}\",")),
            "overlay's CALICO_KEYS lacks {key}"
        );
    }
}
