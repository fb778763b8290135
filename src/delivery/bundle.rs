//! The operator bundle: upstream `operator-crds.yaml` and `tigera-operator.yaml` cut into ConfigMaps a
//! ClusterResourceSet can apply.
//!
//! How Cluster API reads a ConfigMap listed in a ClusterResourceSet (`core/reconcilers/clusterresourceset` in v1.14.0,
//! `normalizeData` and `objsFromYamlData`): it takes every key of `data` (never `binaryData`), **sorts the keys**
//! (Go `sort.Strings`, byte order), parses each value as a YAML/JSON stream, sorts the objects *of one value* for
//! creation (`SortForCreate`) and concatenates the values in key order. ConfigMaps are applied in the order of
//! `spec.resources`. So this module puts **exactly one document per data key**, and the key starts with the
//! document's zero-padded position in the bundle (`0004-customresourcedefinition-installations.operator.tigera.io.json`):
//! key order is document order, and `SortForCreate` has nothing to reorder.
//!
//! Each document is stored as compact JSON (valid YAML, which is what CAPI expects). The upstream YAML of the
//! `installations.operator.tigera.io` CRD alone is about 1.46 MB, over the 1 MiB ConfigMap limit, so YAML cannot be
//! kept verbatim; as compact JSON it is about 0.63 MB. Comments are dropped; values are unchanged (tests compare
//! the parsed documents one by one).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    CHUNK_DATA_LIMIT, COUNT_ANNOTATION, DIGEST_ANNOTATION, DeliveryError, INDEX_ANNOTATION,
    ROLE_LABEL, VERSION_LABEL, version_tag,
};
use crate::settings::CalicoVersion;

/// What a bundle ConfigMap holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// CustomResourceDefinitions (`operator-crds.yaml`). Applied first.
    Crds,
    /// The operator: Namespace, RBAC, Deployment (`tigera-operator.yaml`).
    Operator,
}

impl Role {
    /// Label value and name part.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Crds => "crds",
            Role::Operator => "operator",
        }
    }

    fn parse(value: &str) -> Option<Role> {
        match value {
            "crds" => Some(Role::Crds),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// Name of bundle ConfigMap `part` (0-based within its role) of `version`: `calico-v3.31.7-crds-00`.
pub fn chunk_name(version: &str, role: Role, part: usize) -> String {
    format!("calico-{version}-{}-{part:02}", role.as_str())
}

/// One parsed input document, ready to be stored.
struct Doc {
    key: String,
    json: String,
    kind: String,
    name: String,
    input: &'static str,
    index: usize,
}

/// Parse a multi-document YAML (or JSON) stream into objects; empty documents are skipped.
pub fn parse_objects(input: &str, text: &str) -> Result<Vec<Value>, DeliveryError> {
    let values: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, crate::manifest::yaml_options()).map_err(
            |e| DeliveryError::Parse {
                input: input.to_string(),
                message: crate::manifest::plain_yaml_error(&e.to_string()),
            },
        )?;
    let mut out = Vec::new();
    for (i, value) in values.into_iter().filter(|v| !v.is_null()).enumerate() {
        let ok = value.get("apiVersion").and_then(Value::as_str).is_some()
            && value.get("kind").and_then(Value::as_str).is_some()
            && value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some();
        if !ok {
            return Err(DeliveryError::NotAnObject {
                input: input.to_string(),
                index: i + 1,
            });
        }
        out.push(value);
    }
    if out.is_empty() {
        return Err(DeliveryError::EmptyInput {
            input: input.to_string(),
        });
    }
    Ok(out)
}

fn field<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A data key for document `position`: `0004-customresourcedefinition-installations.operator.tigera.io.json`.
/// Only `[-._a-zA-Z0-9]` (the ConfigMap key alphabet); the position prefix makes byte order = document order.
pub fn document_key(position: usize, kind: &str, name: &str) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(max)
            .collect()
    };
    format!(
        "{position:04}-{}-{}.json",
        clean(kind, 60),
        clean(name, 160)
    )
}

fn to_docs(
    input: &'static str,
    text: &str,
    first_position: usize,
    crds_only: bool,
) -> Result<Vec<Doc>, DeliveryError> {
    let objects = parse_objects(input, text)?;
    let mut docs = Vec::with_capacity(objects.len());
    for (i, object) in objects.into_iter().enumerate() {
        let kind = field(&object, "/kind").to_string();
        let name = field(&object, "/metadata/name").to_string();
        if crds_only && kind != "CustomResourceDefinition" {
            return Err(DeliveryError::UnexpectedKind {
                input: input.to_string(),
                index: i + 1,
                kind,
                name,
            });
        }
        let key = document_key(first_position + i, &kind, &name);
        let json = serde_json::to_string(&object)?;
        docs.push(Doc {
            key,
            json,
            kind,
            name,
            input,
            index: i + 1,
        });
    }
    Ok(docs)
}

/// Bytes a document costs in a ConfigMap's `data` (key + value).
fn cost(doc: &Doc) -> usize {
    doc.key.len() + doc.json.len()
}

/// Split documents into consecutive groups of at most `limit` data bytes, keeping their order.
fn pack(docs: Vec<Doc>, limit: usize) -> Result<Vec<Vec<Doc>>, DeliveryError> {
    let mut groups: Vec<Vec<Doc>> = Vec::new();
    let mut current: Vec<Doc> = Vec::new();
    let mut size = 0;
    for doc in docs {
        let c = cost(&doc);
        if c > limit {
            return Err(DeliveryError::DocumentTooLarge {
                input: doc.input.to_string(),
                index: doc.index,
                kind: doc.kind,
                name: doc.name,
                size: c,
                limit,
            });
        }
        if size + c > limit && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        size += c;
        current.push(doc);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    Ok(groups)
}

/// Turn upstream `tigera-operator.yaml` and `operator-crds.yaml` into the bundle ConfigMaps for `version` in
/// `namespace`, in apply order (CRD chunks, then the operator), each with at most [`CHUNK_DATA_LIMIT`] data bytes.
pub fn bundle(
    operator_yaml: &str,
    crds_yaml: &str,
    version: &CalicoVersion,
    namespace: &str,
) -> Result<Vec<Value>, DeliveryError> {
    bundle_with_limit(
        operator_yaml,
        crds_yaml,
        version,
        namespace,
        CHUNK_DATA_LIMIT,
    )
}

/// [`bundle`] with a chosen chunk limit (tests use small limits to exercise splitting).
pub fn bundle_with_limit(
    operator_yaml: &str,
    crds_yaml: &str,
    version: &CalicoVersion,
    namespace: &str,
    limit: usize,
) -> Result<Vec<Value>, DeliveryError> {
    let tag = version_tag(version);
    let crds = to_docs(super::CRDS_INPUT, crds_yaml, 0, true)?;
    let operator = to_docs(super::OPERATOR_INPUT, operator_yaml, crds.len(), false)?;
    let total = crds.len() + operator.len();
    if total > 9999 {
        return Err(DeliveryError::TooManyDocuments { count: total });
    }

    let mut hasher = Sha256::new();
    for doc in crds.iter().chain(operator.iter()) {
        hasher.update(doc.key.as_bytes());
        hasher.update([0]);
        hasher.update(doc.json.as_bytes());
        hasher.update([0]);
    }
    let digest = hex::encode(hasher.finalize());

    let mut parts: Vec<(Role, usize, Vec<Doc>)> = Vec::new();
    for (role, docs) in [(Role::Crds, crds), (Role::Operator, operator)] {
        for (i, group) in pack(docs, limit)?.into_iter().enumerate() {
            parts.push((role, i, group));
        }
    }
    let count = parts.len();
    let mut out = Vec::with_capacity(count);
    for (index, (role, part, docs)) in parts.into_iter().enumerate() {
        let mut data = Map::new();
        for doc in docs {
            data.insert(doc.key, Value::String(doc.json));
        }
        out.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": chunk_name(&tag, role, part),
                "namespace": namespace,
                "labels": {
                    VERSION_LABEL: tag,
                    ROLE_LABEL: role.as_str(),
                },
                "annotations": {
                    INDEX_ANNOTATION: index.to_string(),
                    COUNT_ANNOTATION: count.to_string(),
                    DIGEST_ANNOTATION: digest,
                },
            },
            "data": data,
        }));
    }
    Ok(out)
}

/// Name of the operator's Deployment and of its container in upstream `tigera-operator.yaml`.
pub const OPERATOR_CONTAINER: &str = "tigera-operator";

/// `tigera-operator.yaml` with the operator's image replaced (`bundle --operator-image`), for sites whose nodes
/// pull from a mirror: the `image` of the container named [`OPERATOR_CONTAINER`] in the file's one Deployment that
/// has it. Everything else is unchanged. Returned as a YAML stream of JSON documents (JSON is YAML), which
/// [`bundle`] reads like the upstream file.
pub fn set_operator_image(operator_yaml: &str, image: &str) -> Result<String, DeliveryError> {
    let tag = crate::settings::values::check_image_reference(image)
        .map_err(|why| DeliveryError::OperatorEdit(format!("--operator-image {image:?} {why}")))?;
    edit_operator(operator_yaml, "--operator-image", |_, container| {
        check_init_image_version(container, image, tag)?;
        container["image"] = Value::from(image);
        Ok(())
    })
}

/// Give the operator's pod the image pull secret `secret` (`spec.template.spec.imagePullSecrets`), for a mirror that
/// needs credentials: the Secret must then exist in the `tigera-operator` namespace of every workload cluster of this
/// bundle (`CALICO_IMAGE_PULL_SECRET` delivers it there). Nothing else changes.
pub fn set_operator_pull_secret(
    operator_yaml: &str,
    secret: &str,
) -> Result<String, DeliveryError> {
    // The same name rule as CALICO_IMAGE_PULL_SECRET, which delivers the Secret.
    crate::settings::values::parse_pull_secret(secret).map_err(|e| {
        DeliveryError::OperatorEdit(format!("--operator-pull-secret {secret:?} {}", e.message))
    })?;
    edit_operator(operator_yaml, "--operator-pull-secret", |pod, _| {
        pod.insert(
            "imagePullSecrets".into(),
            serde_json::json!([{ "name": secret }]),
        );
        Ok(())
    })
}

/// Apply `edit` to the pod spec and the container of the one Deployment container named [`OPERATOR_CONTAINER`] in
/// `operator_yaml`, and write the documents back (compact JSON, in order). `flag` names the option in errors.
fn edit_operator(
    operator_yaml: &str,
    flag: &str,
    mut edit: impl FnMut(&mut serde_json::Map<String, Value>, &mut Value) -> Result<(), DeliveryError>,
) -> Result<String, DeliveryError> {
    const INPUT: &str = "tigera-operator.yaml";
    let mut objects = parse_objects(INPUT, operator_yaml)?;
    let mut found = 0;
    for object in objects.iter_mut().filter(|o| o["kind"] == "Deployment") {
        let Some(pod) = object
            .pointer_mut("/spec/template/spec")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let count = pod
            .get("containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for k in 0..count {
            // Indexing by name is safe: only an object has a name equal to a string.
            if pod["containers"][k]["name"] != OPERATOR_CONTAINER {
                continue;
            }
            found += 1;
            // Taken out for the edit, which also gets the pod spec, and put back in place: the order is kept.
            let mut container = std::mem::take(&mut pod["containers"][k]);
            let result = edit(pod, &mut container);
            pod["containers"][k] = container;
            result?;
        }
    }
    if found != 1 {
        return Err(DeliveryError::OperatorEdit(format!(
            "{INPUT}: {flag} needs exactly one Deployment container named {OPERATOR_CONTAINER}, found {found} (is this the upstream tigera-operator.yaml?)"
        )));
    }
    let mut out = String::new();
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(object)?);
        out.push('\n');
    }
    Ok(out)
}

/// The operator's environment names its own version (`TIGERA_OPERATOR_INIT_IMAGE_VERSION`), which it uses for the
/// image of its init step: a mirror image with another tag would run one operator version with another's init.
fn check_init_image_version(
    container: &Value,
    image: &str,
    tag: Option<&str>,
) -> Result<(), DeliveryError> {
    let pinned = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == INIT_IMAGE_VERSION_ENV)
        .and_then(|e| e["value"].as_str());
    match (tag, pinned) {
        (Some(tag), Some(pinned)) if tag != pinned => Err(DeliveryError::OperatorEdit(format!(
            "--operator-image {image:?} has the tag {tag}, but the operator's {INIT_IMAGE_VERSION_ENV} is {pinned}: mirror the operator image under its upstream tag {pinned}"
        ))),
        _ => Ok(()),
    }
}

/// The operator's environment variable that names its own version.
const INIT_IMAGE_VERSION_ENV: &str = "TIGERA_OPERATOR_INIT_IMAGE_VERSION";

/// Wrap objects in a `v1` `List`, the form the `bundle` command should print: JSON that
/// `kubectl apply --server-side -f -` accepts, with no YAML emitter between the chunks and the API server.
pub fn as_list(items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

/// Bytes of a ConfigMap's `data` (keys + values), the quantity the API server limits to 1 MiB.
pub fn data_size(configmap: &Value) -> usize {
    configmap
        .get("data")
        .and_then(Value::as_object)
        .map(|d| {
            d.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0)
}

/// One ConfigMap of a loaded bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleChunk {
    pub name: String,
    pub role: Role,
    pub index: usize,
    /// `data`, keys in byte order.
    pub data: BTreeMap<String, String>,
}

/// A complete, consistent bundle for one version, chunks in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// `vX.Y.Z`.
    pub version: String,
    pub digest: String,
    pub chunks: Vec<BundleChunk>,
}

/// Why no usable bundle exists for a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleProblem {
    /// No ConfigMap labelled with the version.
    Missing { version: String },
    /// Some ConfigMaps exist but they do not form one complete load.
    Incomplete { version: String, detail: String },
}

impl std::fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleProblem::Missing { version } => write!(
                f,
                "no Calico operator bundle for {version} is loaded (ConfigMaps labelled {VERSION_LABEL}={version}); load it with `capi-calico-webhook bundle ... --version {version} | kubectl apply --server-side -f -`"
            ),
            BundleProblem::Incomplete { version, detail } => write!(
                f,
                "the Calico operator bundle for {version} is incomplete or mixes two loads ({detail}); load it again"
            ),
        }
    }
}

fn annotation<'a>(cm: &'a Value, key: &str) -> Option<&'a str> {
    cm.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn label<'a>(cm: &'a Value, key: &str) -> Option<&'a str> {
    cm.pointer("/metadata/labels")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn read_chunk(cm: &Value) -> Result<(BundleChunk, usize, String), String> {
    let name = field(cm, "/metadata/name").to_string();
    let role = label(cm, ROLE_LABEL)
        .and_then(Role::parse)
        .ok_or_else(|| format!("{name}: label {ROLE_LABEL} missing or unknown"))?;
    let number = |key: &str| {
        annotation(cm, key)
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| format!("{name}: annotation {key} missing or not a number"))
    };
    let index = number(INDEX_ANNOTATION)?;
    let count = number(COUNT_ANNOTATION)?;
    let digest = annotation(cm, DIGEST_ANNOTATION)
        .ok_or_else(|| format!("{name}: annotation {DIGEST_ANNOTATION} missing"))?
        .to_string();
    let mut data = BTreeMap::new();
    for (k, v) in cm
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let v = v
            .as_str()
            .ok_or_else(|| format!("{name}: data.{k} is not a string"))?;
        data.insert(k.clone(), v.to_string());
    }
    Ok((
        BundleChunk {
            name,
            role,
            index,
            data,
        },
        count,
        digest,
    ))
}

/// Pick the bundle for `version` (`vX.Y.Z`) out of the bundle namespace's ConfigMaps (as JSON), checking it is
/// complete: indexes `0..count` present once each, one count and one digest across them.
pub fn select_bundle<'a>(
    configmaps: impl IntoIterator<Item = &'a Value>,
    version: &str,
) -> Result<Bundle, BundleProblem> {
    let incomplete = |detail: String| BundleProblem::Incomplete {
        version: version.to_string(),
        detail,
    };
    let mut chunks = Vec::new();
    let mut counts = std::collections::BTreeSet::new();
    let mut digests = std::collections::BTreeSet::new();
    for cm in configmaps {
        if label(cm, VERSION_LABEL) != Some(version) {
            continue;
        }
        let (chunk, count, digest) = read_chunk(cm).map_err(incomplete)?;
        counts.insert(count);
        digests.insert(digest);
        chunks.push(chunk);
    }
    if chunks.is_empty() {
        return Err(BundleProblem::Missing {
            version: version.to_string(),
        });
    }
    if digests.len() != 1 || counts.len() != 1 {
        return Err(incomplete(format!(
            "{} different digests and {} different counts among {} ConfigMaps",
            digests.len(),
            counts.len(),
            chunks.len()
        )));
    }
    chunks.sort_by_key(|c| c.index);
    let count = counts.into_iter().next().unwrap_or(0);
    let indexes: Vec<usize> = chunks.iter().map(|c| c.index).collect();
    // Compared in place: `count` comes from an annotation and could be any number.
    if indexes.len() != count || indexes.iter().enumerate().any(|(i, index)| i != *index) {
        return Err(incomplete(format!(
            "expected ConfigMaps 0..{count}, found indexes {indexes:?}"
        )));
    }
    Ok(Bundle {
        version: version.to_string(),
        digest: digests.into_iter().next().unwrap_or_default(),
        chunks,
    })
}

/// Read bundle ConfigMaps back the way a ClusterResourceSet does: ConfigMaps in bundle order (the order the CRS
/// lists them), each ConfigMap's data keys in byte order, each value parsed as a YAML/JSON stream.
pub fn reassemble(configmaps: &[Value]) -> Result<Vec<Value>, DeliveryError> {
    let mut chunks = Vec::with_capacity(configmaps.len());
    for cm in configmaps {
        let (chunk, _, _) = read_chunk(cm).map_err(DeliveryError::InvalidChunk)?;
        chunks.push(chunk);
    }
    chunks.sort_by_key(|c| c.index);
    let mut docs = Vec::new();
    for chunk in chunks {
        for (key, value) in chunk.data {
            docs.extend(parse_objects(&format!("{}/{key}", chunk.name), &value)?);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: CalicoVersion = CalicoVersion {
        major: 3,
        minor: 31,
        patch: 7,
    };

    fn crd(name: &str, filler: usize) -> String {
        format!(
            "# Source: {name}\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\nspec:\n  group: example.io\n  description: \"{}\"\n  mode: 0644\n",
            "x".repeat(filler)
        )
    }

    fn operator() -> String {
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tigera-operator\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tigera-operator\n  namespace: tigera-operator\nspec:\n  replicas: 1\n".to_string()
    }

    #[test]
    fn splits_in_order_under_the_limit() {
        let crds: Vec<String> = (0..7)
            .map(|i| crd(&format!("c{i}.example.io"), 300))
            .collect();
        let crds_yaml = format!("# header comment\n---\n{}", crds.join("---\n"));
        let out = bundle_with_limit(&operator(), &crds_yaml, &V, "ns", 1000).unwrap();
        assert!(out.len() > 3, "expected several chunks, got {}", out.len());
        for (i, cm) in out.iter().enumerate() {
            assert!(data_size(cm) <= 1000);
            assert_eq!(
                annotation(cm, INDEX_ANNOTATION),
                Some(i.to_string().as_str())
            );
            assert_eq!(label(cm, VERSION_LABEL), Some("v3.31.7"));
            assert_eq!(field(cm, "/metadata/namespace"), "ns");
        }
        assert_eq!(field(&out[0], "/metadata/name"), "calico-v3.31.7-crds-00");
        assert_eq!(
            field(out.last().unwrap(), "/metadata/name"),
            "calico-v3.31.7-operator-00"
        );
        let back = reassemble(&out).unwrap();
        let mut expected = parse_objects("c", &crds_yaml).unwrap();
        expected.extend(parse_objects("o", &operator()).unwrap());
        assert_eq!(back, expected);
        // YAML 1.1 octal kept as Kubernetes reads it.
        assert_eq!(back[0].pointer("/spec/mode"), Some(&json!(420)));
        // Reversing the input order of the ConfigMaps changes nothing: the index annotation orders them.
        let mut reversed = out.clone();
        reversed.reverse();
        assert_eq!(reassemble(&reversed).unwrap(), expected);
        // The selection sees one complete bundle.
        let selected = select_bundle(out.iter(), "v3.31.7").unwrap();
        assert_eq!(selected.chunks.len(), out.len());
    }

    #[test]
    fn operator_image_is_replaced_in_the_operator_container_only() {
        let operator = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tigera-operator\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tigera-operator\n  namespace: tigera-operator\nspec:\n  template:\n    spec:\n      containers:\n        - name: tigera-operator\n          image: quay.io/tigera/operator:v1.40.3\n          env:\n            - {name: MODE, value: \"0644\"}\n        - name: sidecar\n          image: quay.io/other:v1\n";
        let image = "registry.example.internal:5000/tigera/operator:v1.40.3";
        let edited = set_operator_image(operator, image).unwrap();
        let before = parse_objects("a", operator).unwrap();
        let after = parse_objects("b", &edited).unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], before[0]);
        let containers = &after[1]["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], image);
        assert_eq!(containers[1]["image"], "quay.io/other:v1");
        // Only the image changed; a quoted string that looks octal stays a string.
        let mut back = after[1].clone();
        back["spec"]["template"]["spec"]["containers"][0]["image"] =
            Value::from("quay.io/tigera/operator:v1.40.3");
        assert_eq!(back, before[1]);
        assert_eq!(containers[0]["env"][0]["value"], "0644");

        let pinned = operator.replace(
            "            - {name: MODE, value: \"0644\"}\n",
            "            - {name: MODE, value: \"0644\"}\n            - {name: TIGERA_OPERATOR_INIT_IMAGE_VERSION, value: v1.40.3}\n",
        );
        assert!(set_operator_image(&pinned, image).is_ok());
        let err = set_operator_image(&pinned, "registry.example.internal/tigera/operator:v1.41.0")
            .unwrap_err();
        assert!(err.to_string().contains("upstream tag v1.40.3"), "{err}");
        let digest = format!(
            "registry.example.internal/tigera/operator@sha256:{}",
            "ab".repeat(32)
        );
        assert!(set_operator_image(&pinned, &digest).is_ok());

        let err = set_operator_image(operator, "quay.io/tigera/operator").unwrap_err();
        assert!(err.to_string().contains("no tag or digest"), "{err}");
        let err = set_operator_image(&crd("a.example.io", 10), image).unwrap_err();
        assert!(err.to_string().contains("found 0"), "{err}");
    }

    #[test]
    fn operator_pull_secret_is_added_to_the_operator_pod_only() {
        let operator = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tigera-operator\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tigera-operator\nspec:\n  template:\n    spec:\n      serviceAccountName: tigera-operator\n      containers:\n        - name: tigera-operator\n          image: quay.io/tigera/operator:v1.40.3\n      volumes: []\n";
        let edited = set_operator_pull_secret(operator, "calico-pull").unwrap();
        let before = parse_objects("a", operator).unwrap();
        let after = parse_objects("b", &edited).unwrap();
        assert_eq!(after[0], before[0]);
        let pod = &after[1]["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "calico-pull"}]));
        let mut back = after[1].clone();
        back["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("imagePullSecrets");
        assert_eq!(back, before[1]);
        // The pod spec's keys keep their order; the new one comes last.
        let keys: Vec<&String> = pod.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "serviceAccountName",
                "containers",
                "volumes",
                "imagePullSecrets"
            ]
        );
        // Both edits compose, in either order, to the same documents.
        let image = "r.example.com/tigera/operator:v1.40.3";
        let a = set_operator_image(
            &set_operator_pull_secret(operator, "calico-pull").unwrap(),
            image,
        )
        .unwrap();
        let b =
            set_operator_pull_secret(&set_operator_image(operator, image).unwrap(), "calico-pull")
                .unwrap();
        assert_eq!(
            parse_objects("a", &a).unwrap(),
            parse_objects("b", &b).unwrap()
        );

        for bad in ["Calico", "a_b", "", "-a"] {
            let err = set_operator_pull_secret(operator, bad).unwrap_err();
            assert!(err.to_string().contains("is not a Secret name"), "{err}");
        }
        let err = set_operator_pull_secret(&crd("a.example.io", 10), "calico-pull").unwrap_err();
        assert!(
            err.to_string()
                .contains("--operator-pull-secret needs exactly one"),
            "{err}"
        );
    }

    #[test]
    fn deterministic() {
        let crds_yaml = crd("a.example.io", 10);
        let a = bundle(&operator(), &crds_yaml, &V, "ns").unwrap();
        let b = bundle(&operator(), &crds_yaml, &V, "ns").unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn too_large_document_is_an_error() {
        let err = bundle_with_limit(&operator(), &crd("big.example.io", 2000), &V, "ns", 1000)
            .unwrap_err();
        assert!(
            matches!(err, DeliveryError::DocumentTooLarge { ref name, .. } if name == "big.example.io"),
            "{err}"
        );
    }

    #[test]
    fn swapped_inputs_are_rejected() {
        let err = bundle(&crd("a.example.io", 1), &operator(), &V, "ns").unwrap_err();
        assert!(matches!(err, DeliveryError::UnexpectedKind { .. }), "{err}");
        assert!(matches!(
            bundle(&operator(), "# nothing\n", &V, "ns").unwrap_err(),
            DeliveryError::EmptyInput { .. }
        ));
        assert!(matches!(
            bundle(&operator(), "- a\n- b\n", &V, "ns").unwrap_err(),
            DeliveryError::NotAnObject { .. }
        ));
    }

    #[test]
    fn keys_are_configmap_keys() {
        assert_eq!(
            document_key(7, "ClusterRole", "system:calico/x"),
            "0007-clusterrole-system-calico-x.json"
        );
    }

    #[test]
    fn selection_reports_missing_and_mixed_loads() {
        let a = bundle_with_limit(&operator(), &crd("a.example.io", 600), &V, "ns", 1000).unwrap();
        assert_eq!(
            select_bundle(a.iter(), "v3.30.0"),
            Err(BundleProblem::Missing {
                version: "v3.30.0".into()
            })
        );
        // Drop one chunk.
        let partial: Vec<Value> = a.iter().skip(1).cloned().collect();
        assert!(matches!(
            select_bundle(partial.iter(), "v3.31.7"),
            Err(BundleProblem::Incomplete { .. })
        ));
        // Mix with a chunk of a different load.
        let b = bundle_with_limit(&operator(), &crd("b.example.io", 600), &V, "ns", 1000).unwrap();
        let mixed = [a[0].clone(), b[1].clone()];
        assert!(matches!(
            select_bundle(mixed.iter(), "v3.31.7"),
            Err(BundleProblem::Incomplete { .. })
        ));
        // A count no load could have (edited by hand): reported, without building the list it names.
        let mut huge = a.clone();
        for cm in &mut huge {
            cm["metadata"]["annotations"][COUNT_ANNOTATION] = json!(usize::MAX.to_string());
        }
        match select_bundle(huge.iter(), "v3.31.7") {
            Err(BundleProblem::Incomplete { detail, .. }) => {
                assert!(detail.contains("expected ConfigMaps 0.."), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        assert!(select_bundle(a.iter(), "v3.31.7").is_ok());
    }
}
