//! The JSON text of the node scripts' file contents, computed once. A first injection's patch carries both scripts,
//! base64-encoded (~14 KB); scanning them again for characters to escape was the largest part of encoding a
//! response after the base64 of the patch itself. [`Patch`] serialises a JSON patch exactly as `serde_json` would,
//! byte for byte, but writes a script's precomputed text instead.

use std::sync::LazyLock;

use json_patch::PatchOperation;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::mutation::{self, SCRIPTS};

/// Each script's `content` as it stands in the object (base64), with its JSON text.
static ENCODED: LazyLock<Vec<(String, Box<RawValue>)>> = LazyLock::new(|| {
    SCRIPTS
        .iter()
        .filter_map(|text| {
            let content = mutation::encode_content(text);
            let raw = serde_json::value::to_raw_value(&content).ok()?;
            Some((content, raw))
        })
        .collect()
});

/// serde_json's JSON text of `text` when it is the injected `content` of one of the scripts.
pub fn encoded(text: &str) -> Option<&'static RawValue> {
    ENCODED
        .iter()
        .find(|(content, _)| content == text)
        .map(|(_, raw)| &**raw)
}

/// A JSON patch, serialised as `serde_json::to_vec(&[PatchOperation])` would, with the scripts pre-encoded.
pub struct Patch<'a>(pub &'a [PatchOperation]);

impl Serialize for Patch<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for op in self.0 {
            seq.serialize_element(&Op(op))?;
        }
        seq.end()
    }
}

struct Op<'a>(&'a PatchOperation);

impl Serialize for Op<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // json_patch's own field order: op, path, value.
        let (name, path, value) = match self.0 {
            PatchOperation::Add(op) => ("add", &op.path, &op.value),
            PatchOperation::Replace(op) => ("replace", &op.path, &op.value),
            other => return other.serialize(serializer),
        };
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("op", name)?;
        map.serialize_entry("path", path)?;
        map.serialize_entry("value", &Text(value))?;
        map.end()
    }
}

/// A `Value` whose script strings are written from their precomputed text.
struct Text<'a>(&'a Value);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::String(s) => match encoded(s) {
                Some(raw) => raw.serialize(serializer),
                None => serializer.serialize_str(s),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Text(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &Text(value))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{
        AddOperation, MoveOperation, RemoveOperation, ReplaceOperation, TestOperation,
    };
    use serde_json::json;

    use super::*;

    /// A script's `content` as injected (base64).
    fn content(script: &str) -> String {
        mutation::encode_content(script)
    }

    #[test]
    fn every_script_has_its_text_and_nothing_else_does() {
        for script in SCRIPTS {
            let raw = encoded(&content(script)).expect("a script");
            assert_eq!(
                raw.get(),
                serde_json::to_string(&content(script)).expect("json")
            );
        }
        let first = content(SCRIPTS[0]);
        let altered = format!("{first}A");
        for other in ["", "echo", SCRIPTS[0], &first[1..], &altered] {
            assert!(encoded(other).is_none(), "{other:.30}");
        }
    }

    #[test]
    fn patches_are_byte_identical_to_serde_json() {
        let at = |p: &str| PointerBuf::parse(p).expect("pointer");
        let file = |content: &str| json!({"path": "/etc/capi-calico/x.sh", "owner": "root:root", "permissions": "0755", "content": content});
        let patch = [
            PatchOperation::Add(AddOperation {
                path: at("/spec/kubeadmConfigSpec/files"),
                value: json!([
                    file(&content(SCRIPTS[0])),
                    file(&content(SCRIPTS[1])),
                    file("a \"quoted\"\n\u{1}line")
                ]),
            }),
            PatchOperation::Add(AddOperation {
                path: at("/spec/kubeadmConfigSpec/files/-"),
                value: file(&content(SCRIPTS[1])),
            }),
            PatchOperation::Replace(ReplaceOperation {
                path: at("/spec/kubeadmConfigSpec/preKubeadmCommands/0"),
                value: json!("bash /etc/capi-calico/install-calicoctl.sh"),
            }),
            PatchOperation::Remove(RemoveOperation {
                path: at("/spec/kubeadmConfigSpec/files/3"),
            }),
            PatchOperation::Add(AddOperation {
                path: at("/metadata/labels/capi-calico.io~1cluster"),
                value: json!({"n": null, "b": true, "i": -3, "f": 1.5, "a": [], "s": SCRIPTS[0], "u": "ü\u{2028}"}),
            }),
            PatchOperation::Move(MoveOperation {
                from: at("/a"),
                path: at("/b"),
            }),
            PatchOperation::Test(TestOperation {
                path: at("/c"),
                value: json!(SCRIPTS[1]),
            }),
        ];
        for n in 0..=patch.len() {
            let ops = &patch[..n];
            assert_eq!(
                serde_json::to_vec(&Patch(ops)).expect("patch"),
                serde_json::to_vec(ops).expect("serde_json"),
                "first {n} operations"
            );
        }
    }
}
