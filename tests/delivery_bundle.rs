//! Bundle chunking on the real upstream Calico manifests (when present) and on a committed synthetic fixture.

use std::path::{Path, PathBuf};

use capi_calico_webhook::{
    delivery::{
        CHUNK_DATA_LIMIT, COUNT_ANNOTATION, INDEX_ANNOTATION, ROLE_LABEL, VERSION_LABEL,
        bundle::{
            bundle, bundle_with_limit, data_size, parse_objects, reassemble, select_bundle,
            set_operator_image, set_operator_pull_secret,
        },
    },
    settings::CalicoVersion,
};
use serde_json::Value;

const V3_31_7: CalicoVersion = CalicoVersion {
    major: 3,
    minor: 31,
    patch: 7,
};

/// Kubernetes' limit on one object's data; the whole serialized ConfigMap must also stay below it with room for
/// managedFields.
const ONE_MIB: usize = 1024 * 1024;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `CALICO_FIXTURES_DIR`, else `../shared/fixtures/calico-v3.31.7` beside the repository.
fn upstream_dir() -> PathBuf {
    std::env::var_os("CALICO_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/fixtures/calico-v3.31.7"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_configmap_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Top-level `apiVersion:` lines: an independent count of the objects in a manifest.
fn count_objects(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("apiVersion:"))
        .count()
}

/// Checks every bundle must pass; returns the reassembled documents.
fn check_bundle(chunks: &[Value], limit: usize, operator: &str, crds: &str) -> Vec<Value> {
    assert!(!chunks.is_empty());
    let count = chunks.len().to_string();
    let mut seen_roles = Vec::new();
    for (i, cm) in chunks.iter().enumerate() {
        let name = cm["metadata"]["name"].as_str().unwrap();
        assert!(is_dns1123_subdomain(name), "{name} is not DNS-1123");
        let size = data_size(cm);
        assert!(size <= limit, "{name}: {size} data bytes > {limit}");
        let whole = serde_json::to_vec(cm).unwrap().len();
        assert!(whole < ONE_MIB, "{name}: {whole} bytes serialized");
        assert_eq!(cm["metadata"]["labels"][VERSION_LABEL], "v3.31.7");
        assert_eq!(
            cm["metadata"]["annotations"][INDEX_ANNOTATION],
            i.to_string()
        );
        assert_eq!(cm["metadata"]["annotations"][COUNT_ANNOTATION], count);
        for key in cm["data"].as_object().unwrap().keys() {
            assert!(is_configmap_key(key), "{name}: bad key {key}");
        }
        seen_roles.push(
            cm["metadata"]["labels"][ROLE_LABEL]
                .as_str()
                .unwrap()
                .to_string(),
        );
        eprintln!(
            "{name}: {} documents, {size} data bytes, {whole} bytes serialized",
            cm["data"].as_object().unwrap().len()
        );
    }
    // CRDs strictly before the operator.
    let first_operator = seen_roles.iter().position(|r| r == "operator").unwrap();
    assert!(seen_roles[..first_operator].iter().all(|r| r == "crds"));
    assert!(seen_roles[first_operator..].iter().all(|r| r == "operator"));

    // Nothing lost or reordered: the documents read back the way a CRS reads them equal the input documents,
    // one by one.
    let back = reassemble(chunks).unwrap();
    let mut expected = parse_objects("crds", crds).unwrap();
    expected.extend(parse_objects("operator", operator).unwrap());
    assert_eq!(back.len(), count_objects(crds) + count_objects(operator));
    assert_eq!(back.len(), expected.len());
    for (i, (got, want)) in back.iter().zip(&expected).enumerate() {
        assert!(
            got == want,
            "document {i} ({}) differs",
            want["metadata"]["name"]
        );
    }
    // The reconciler's view: one complete bundle, chunks in the same order.
    let selected = select_bundle(chunks.iter(), "v3.31.7").unwrap();
    let names: Vec<&str> = selected.chunks.iter().map(|c| c.name.as_str()).collect();
    let input_names: Vec<&str> = chunks
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, input_names);
    back
}

#[test]
fn upstream_calico_v3_31_7_bundle() {
    let dir = upstream_dir();
    let (operator_path, crds_path) = (
        dir.join("tigera-operator.yaml"),
        dir.join("operator-crds.yaml"),
    );
    if !operator_path.exists() || !crds_path.exists() {
        println!(
            "NOTICE: skipping the upstream bundle test: {} not found (set CALICO_FIXTURES_DIR to a folder with tigera-operator.yaml and operator-crds.yaml from Calico v3.31.7)",
            dir.display()
        );
        eprintln!(
            "NOTICE: skipping upstream_calico_v3_31_7_bundle: {} not found",
            dir.display()
        );
        return;
    }
    let (operator, crds) = (read(&operator_path), read(&crds_path));
    let chunks = bundle(&operator, &crds, &V3_31_7, "capi-calico-system").unwrap();
    assert!(
        chunks.len() >= 3,
        "2.6 MB of CRDs need at least 2 chunks, plus the operator"
    );
    let back = check_bundle(&chunks, CHUNK_DATA_LIMIT, &operator, &crds);
    assert!(
        back.iter()
            .any(|d| d["metadata"]["name"] == "installations.operator.tigera.io")
    );
    assert!(
        back.iter()
            .any(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "tigera-operator")
    );
    // Deterministic.
    let again = bundle(&operator, &crds, &V3_31_7, "capi-calico-system").unwrap();
    assert_eq!(
        serde_json::to_string(&chunks).unwrap(),
        serde_json::to_string(&again).unwrap()
    );

    // `--operator-image`: the upstream file has exactly one operator container; its image is the only change.
    let image = "registry.example.internal:5000/tigera/operator:v1.40.15";
    let mirrored = set_operator_image(&operator, image).unwrap();
    // Another tag than the one the operator's TIGERA_OPERATOR_INIT_IMAGE_VERSION names is refused.
    let err = set_operator_image(
        &operator,
        "registry.example.internal:5000/tigera/operator:v1.40.3",
    )
    .unwrap_err();
    assert!(err.to_string().contains("upstream tag v1.40.15"), "{err}");
    let edited = bundle(&mirrored, &crds, &V3_31_7, "capi-calico-system").unwrap();
    let edited_back = reassemble(&edited).unwrap();
    assert_eq!(edited_back.len(), back.len());
    let mut changed = Vec::new();
    for (a, b) in back.iter().zip(&edited_back) {
        if a != b {
            changed.push(b.clone());
        }
    }
    assert_eq!(changed.len(), 1, "only the Deployment changes");
    let containers = &changed[0]["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["name"], "tigera-operator");
    assert_eq!(containers[0]["image"], image);

    // `--operator-pull-secret`: likewise only the Deployment changes, by its pod's imagePullSecrets.
    let with_secret = set_operator_pull_secret(&operator, "calico-pull").unwrap();
    let edited_back =
        reassemble(&bundle(&with_secret, &crds, &V3_31_7, "capi-calico-system").unwrap()).unwrap();
    let changed: Vec<&Value> = back
        .iter()
        .zip(&edited_back)
        .filter(|(a, b)| a != b)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(changed.len(), 1, "only the Deployment changes");
    assert_eq!(changed[0]["kind"], "Deployment");
    assert_eq!(
        changed[0]["spec"]["template"]["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "calico-pull"}])
    );
}

#[test]
fn synthetic_bundle_splits_and_reassembles() {
    let dir = manifest_dir().join("tests/fixtures/delivery");
    let operator = read(&dir.join("synthetic-operator.yaml"));
    let crds = read(&dir.join("synthetic-crds.yaml"));
    // Default limit: everything fits, one CRD chunk and one operator chunk.
    let whole = bundle(&operator, &crds, &V3_31_7, "capi-calico-system").unwrap();
    assert_eq!(whole.len(), 2);
    check_bundle(&whole, CHUNK_DATA_LIMIT, &operator, &crds);
    // A small limit forces a chunk per document or two.
    for limit in [800, 1100, 1600] {
        let chunks =
            bundle_with_limit(&operator, &crds, &V3_31_7, "capi-calico-system", limit).unwrap();
        assert!(chunks.len() > 2, "limit {limit}: {} chunks", chunks.len());
        let back = check_bundle(&chunks, limit, &operator, &crds);
        assert_eq!(
            back[0].pointer(
                "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/mode/default"
            ),
            Some(&Value::from(420))
        );
        assert_eq!(
            back[1]
                .pointer("/spec/versions/0/schema/openAPIV3Schema/description")
                .and_then(Value::as_str),
            Some("Literal block\n  with indentation kept.\n")
        );
    }
    // Below the largest document (the Widget CRD, under 800 bytes as JSON): an error naming it.
    let err = bundle_with_limit(&operator, &crds, &V3_31_7, "capi-calico-system", 500).unwrap_err();
    assert!(err.to_string().contains("widgets.example.io"), "{err}");
}
