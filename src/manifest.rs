//! Reading and writing manifest files for the CLI: multi-document YAML or JSON.

use serde_json::Value;

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML or JSON: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: document {index} is not a Kubernetes object (a mapping)")]
    NotAnObject { path: String, index: usize },
}

/// One document of an input file.
#[derive(Debug, Clone)]
pub struct Document {
    /// File name ([`STDIN_NAME`] for standard input).
    pub path: String,
    /// 1-based position in the file.
    pub index: usize,
    /// 1-based position among the `items` of a `kind: List` document; `None` for a plain document.
    pub item: Option<usize>,
    pub object: Value,
}

impl Document {
    /// `document N` or `document N, item M`, for messages.
    pub fn position(&self) -> String {
        match self.item {
            Some(item) => format!("document {}, item {item}", self.index),
            None => format!("document {}", self.index),
        }
    }

    /// `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        let field = |p: &str| self.object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let ns = field("/metadata/namespace");
        let name = field("/metadata/name");
        let kind = field("/kind");
        if ns.is_empty() {
            format!("{kind} {name}")
        } else {
            format!("{kind} {ns}/{name}")
        }
    }
}

/// How manifests are read: Kubernetes' YAML 1.1 meaning of numbers (`0644` is octal, as kubectl reads it), and
/// budgets far above any real manifest (a `kustomize build` with Calico's CRDs is a few thousand documents) that
/// still stop a hostile one.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 32_000_000,
            max_nodes: 8_000_000,
            max_depth: 256,
            max_documents: 10_000,
        },
        legacy_octal_numbers: true,
    }
}

/// Every value of `text`: a stream of JSON values when it starts like JSON and reads as JSON, otherwise YAML
/// documents (YAML's flow style also starts with `{`).
fn values(path: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let parse_error = |message: String| ManifestError::Parse {
        path: path.to_string(),
        message,
    };
    let as_yaml = || serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options());
    if text.trim_start().starts_with(['{', '[']) {
        let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect();
        return match json {
            Ok(values) => Ok(values),
            Err(json_error) => as_yaml().map_err(|yaml_error| {
                parse_error(format!(
                    "as JSON: {json_error}; as YAML: {}",
                    plain_yaml_error(&yaml_error.to_string())
                ))
            }),
        };
    }
    as_yaml().map_err(|e| parse_error(plain_yaml_error(&e.to_string())))
}

/// A `kind: List` or any other `…List` kind with an `items` array (or `items:` left empty, which YAML reads as null:
/// no items), as kubectl flattens them.
fn list_items(object: &serde_json::Map<String, Value>) -> Option<&[Value]> {
    let kind = object.get("kind").and_then(Value::as_str)?;
    if !kind.ends_with("List") {
        return None;
    }
    match object.get("items")? {
        Value::Array(items) => Some(items),
        Value::Null => Some(&[]),
        _ => None,
    }
}

/// serde-saphyr's messages in a user's words: a few of them address the program that calls it ("set
/// DuplicateKeyPolicy in Options if acceptable", "rejected by the configured policy").
pub fn plain_yaml_error(message: &str) -> String {
    message
        .replace(
            ", set DuplicateKeyPolicy in Options if acceptable",
            " (a key is given twice in one mapping)",
        )
        .replace(
            " rejected by the configured policy",
            " is not a number Kubernetes can store (JSON has no infinity or NaN): quote it if it is text",
        )
}

/// `value`, or the items of the List it is, flattened however deep Lists are nested in Lists (as kubectl does).
fn flatten_lists(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(mut map) if list_items(&map).is_some() => {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten_lists(item, out);
                }
            }
        }
        other => out.push(other),
    }
}

/// An annotation written without a value (`key:` or `key: ~` in YAML) is stored by the API server as the empty
/// string; read it that way, so that it is validated as what the cluster will hold.
fn null_annotations_as_empty(object: &mut Value) {
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for value in annotations.values_mut().filter(|v| v.is_null()) {
            *value = Value::String(String::new());
        }
    }
}

/// Parse `text` (from `path`) into documents. Empty documents are skipped; a `kind: List` is flattened, with any
/// List in its items.
pub fn parse(path: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    let mut index = 0;
    for value in values(path, text)? {
        if value.is_null() {
            continue;
        }
        index += 1;
        let not_an_object = || ManifestError::NotAnObject {
            path: path.to_string(),
            index,
        };
        let listed = match &value {
            Value::Object(map) => list_items(map).is_some(),
            _ => return Err(not_an_object()),
        };
        let mut items = Vec::new();
        flatten_lists(value, &mut items);
        for (n, mut object) in items.into_iter().enumerate() {
            if !object.is_object() {
                return Err(not_an_object());
            }
            null_annotations_as_empty(&mut object);
            docs.push(Document {
                path: path.to_string(),
                index,
                item: listed.then_some(n + 1),
                object,
            });
        }
    }
    Ok(docs)
}

/// A manifest's text as kubectl reads it: UTF-8 (a byte-order mark is skipped by the parser), or UTF-16 with a
/// byte-order mark, little- or big-endian (what Windows PowerShell's `>` writes).
fn decode(bytes: Vec<u8>) -> std::io::Result<String> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let from_utf16 = |rest: &[u8], unit: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return Err(invalid(
                "stream did not contain valid UTF-16: an odd number of bytes",
            ));
        }
        let units: Vec<u16> = rest.chunks_exact(2).map(|c| unit([c[0], c[1]])).collect();
        String::from_utf16(&units).map_err(|_| invalid("stream did not contain valid UTF-16"))
    };
    match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => from_utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => from_utf16(rest, u16::from_be_bytes),
        _ => String::from_utf8(bytes).map_err(|_| invalid("stream did not contain valid UTF-8")),
    }
}

/// How messages name standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Read a file (`-` is stdin, named [`STDIN_NAME`] in messages).
pub fn read(path: &str) -> Result<Vec<Document>, ManifestError> {
    let bytes = if path == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    let text = bytes.and_then(decode);
    let name = if path == "-" { STDIN_NAME } else { path };
    let text = text.map_err(|source| ManifestError::Read {
        path: name.to_string(),
        source,
    })?;
    parse(name, &text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_utf8_and_utf16_with_a_byte_order_mark() {
        let text = "kind: X\nmetadata: {name: \"ü\"}\n";
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for bytes in [text.as_bytes().to_vec(), le.clone(), be] {
            assert_eq!(decode(bytes).expect("decodes"), text);
        }
        let odd = le[..le.len() - 1].to_vec();
        assert!(
            decode(odd)
                .unwrap_err()
                .to_string()
                .contains("odd number of bytes")
        );
        // A lone surrogate, and bytes that are neither.
        assert!(decode(vec![0xFF, 0xFE, 0x00, 0xD8]).is_err());
        assert!(
            decode(vec![b'a', 0xFF])
                .unwrap_err()
                .to_string()
                .contains("valid UTF-8")
        );
    }

    /// The parser's messages that address its caller are said in the user's terms; a List whose `items:` is left
    /// empty has no items (not a document of its own).
    #[test]
    fn parser_messages_in_plain_words_and_empty_lists() {
        for (text, said, not_said) in [
            (
                "kind: X\nmetadata:\n  name: a\n  name: b\n",
                "duplicate mapping key: name (a key is given twice in one mapping)",
                "DuplicateKeyPolicy",
            ),
            (
                "kind: X\nmetadata: {name: a}\ndata: {v: .inf}\n",
                "is not a number Kubernetes can store",
                "configured policy",
            ),
        ] {
            let message = parse("f.yaml", text).unwrap_err().to_string();
            assert!(
                message.contains(said) && !message.contains(not_said),
                "{message}"
            );
        }
        for text in [
            "apiVersion: v1\nkind: List\nitems:\n",
            "apiVersion: v1\nkind: List\nitems: []\n",
        ] {
            assert_eq!(parse("f.yaml", text).expect("parses").len(), 0, "{text}");
        }
    }

    #[test]
    fn parses_yaml_json_and_lists() {
        let cases: [(&str, usize); 6] = [
            ("a: 1\n---\nb: 2\n", 2),
            ("---\n---\nkind: X\n", 1),
            ("{\"kind\": \"X\"}\n{\"kind\": \"Y\"}", 2),
            ("kind: List\nitems:\n- kind: A\n- kind: B\n", 2),
            // Lists in a List are flattened too, as kubectl does: the Cluster inside is checked.
            (
                "kind: List\nitems:\n- kind: A\n- kind: ConfigMapList\n  items:\n  - kind: List\n    items:\n    - kind: B\n    - kind: C\n",
                3,
            ),
            ("", 0),
        ];
        for (text, count) in cases {
            let docs = parse("t", text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(docs.len(), count, "{text:?}");
        }
        // Messages tell the items of a List apart.
        let docs = parse(
            "t",
            "kind: X\n---\nkind: List\nitems:\n- kind: A\n- kind: B\n",
        )
        .expect("parses");
        let positions: Vec<String> = docs.iter().map(Document::position).collect();
        assert_eq!(
            positions,
            ["document 1", "document 2, item 1", "document 2, item 2"]
        );
    }

    #[test]
    fn reads_like_kubectl() {
        // YAML 1.1 octal, as kubectl reads file modes; a number stays an integer.
        let docs = parse("t", "kind: X\nspec: {mode: 0400, other: 0644, n: 12}\n").expect("parses");
        assert_eq!(
            docs[0].object["spec"],
            json!({"mode": 256, "other": 420, "n": 12})
        );
        // YAML flow style starting with `{`, and JSON followed by YAML documents.
        for text in [
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n",
            "{\"kind\": \"A\"}\n---\nkind: B\n",
        ] {
            assert!(parse("t", text).is_ok_and(|d| !d.is_empty()), "{text:?}");
        }
        // Any `...List` kind with items is flattened; a kind that only ends in "List" without items is an object.
        let docs = parse(
            "t",
            "kind: ClusterList\nitems:\n- kind: Cluster\n- kind: Cluster\n",
        )
        .expect("parses");
        assert_eq!(docs.len(), 2);
        let docs = parse("t", "kind: ThingList\nspec: {}\n").expect("parses");
        assert_eq!(docs[0].object["kind"], "ThingList");
        // A key without a value is the empty string the API server would store.
        let docs = parse(
            "t",
            "kind: X\nmetadata:\n  annotations:\n    a:\n    b: ~\n    c: \"v\"\n",
        )
        .expect("parses");
        assert_eq!(
            docs[0].object["metadata"]["annotations"],
            json!({"a": "", "b": "", "c": "v"})
        );
        // Many documents: a kustomize build with Calico's CRDs is thousands.
        let many = "kind: ConfigMap\n---\n".repeat(3000);
        assert_eq!(parse("t", &many).map(|d| d.len()).ok(), Some(3000));
    }

    #[test]
    fn rejects_non_objects_and_garbage() {
        for text in ["- a\n- b\n", "just a string", "a: [1, 2\n", "{\"a\": 1"] {
            assert!(parse("t", text).is_err(), "{text:?} should fail");
        }
    }
}
