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
    /// File name (`-` for stdin).
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

/// Parse `text` (from `path`) into documents. Empty documents are skipped; a `kind: List` is flattened.
pub fn parse(path: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let values: Vec<Value> = if text.trim_start().starts_with(['{', '[']) {
        let mut out = Vec::new();
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            out.push(value.map_err(|e| ManifestError::Parse {
                path: path.to_string(),
                message: e.to_string(),
            })?);
        }
        out
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?
    };
    let mut docs = Vec::new();
    let mut index = 0;
    for value in values {
        if value.is_null() {
            continue;
        }
        index += 1;
        let (items, listed) = match value {
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => (
                map.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                true,
            ),
            Value::Object(_) => (vec![value], false),
            _ => {
                return Err(ManifestError::NotAnObject {
                    path: path.to_string(),
                    index,
                });
            }
        };
        for (n, object) in items.into_iter().enumerate() {
            if !object.is_object() {
                return Err(ManifestError::NotAnObject {
                    path: path.to_string(),
                    index,
                });
            }
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

/// Read a file (`-` is stdin).
pub fn read(path: &str) -> Result<Vec<Document>, ManifestError> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| ManifestError::Read {
        path: path.to_string(),
        source,
    })?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_json_and_lists() {
        let cases: [(&str, usize); 5] = [
            ("a: 1\n---\nb: 2\n", 2),
            ("---\n---\nkind: X\n", 1),
            ("{\"kind\": \"X\"}\n{\"kind\": \"Y\"}", 2),
            ("kind: List\nitems:\n- kind: A\n- kind: B\n", 2),
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
    fn rejects_non_objects_and_garbage() {
        for text in ["- a\n- b\n", "just a string", "a: [1, 2\n", "{\"a\": 1"] {
            assert!(parse("t", text).is_err(), "{text:?} should fail");
        }
    }
}
