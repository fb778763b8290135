//! Reading only the parts of an admitted object that the policy looks at.
//!
//! An AdmissionReview carries the whole object: `managedFields`, the kubeadm configuration, the machine template,
//! status. Building all of it as a `serde_json::Value` cost more than every other step of a decision together, so
//! the server reads the object through [`object`], which keeps the paths listed in [`OBJECT`] and skips the rest
//! with `serde::de::IgnoredAny` (which allocates nothing). Two kinds of skipping keep the policy's answers exactly
//! those it gives on the full object (`tests` check this on every fixture and on generated objects):
//!
//! - [`Others::Drop`]: the key disappears (metadata fields, status: nothing reads them);
//! - [`Others::Null`]: the key stays with a `null` value, because the patch looks at which keys a kubeadm spec has
//!   (it removes a spec left empty, and never a spec the user wrote other fields into);
//! - [`Others::Prefixed`]: only keys with the prefix stay (annotations: the policy reads `capi-calico.io/` keys only).
//!
//! A value that is not an object where the tree expects one is kept whole, so type errors read the same.
//! Anything new the policy reads from the admitted object must be added to [`OBJECT`].
//!
//! What is kept is bounded: a `serde_json::Value` takes ~80 bytes however short its JSON text is, so a body of
//! `[0,0,0,…]` under a kept path would cost 40 times its size in memory (a 3 MiB object: ~120 MiB), outside the
//! transport's body budget. [`budgeted`] counts the values kept while reading one review; past
//! [`MAX_KEPT_VALUES`] the rest is skipped and the caller learns it, and the webhook then denies the object with a
//! message instead of deciding on a part of it.

use std::cell::Cell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What to keep of one JSON value.
#[derive(Debug, Clone, Copy)]
pub enum Node {
    /// The whole value.
    Keep,
    /// For an object: the listed keys, pruned further; `others` says what happens to the rest.
    Object {
        fields: &'static [(&'static str, Node)],
        others: Others,
    },
}

/// What happens to the keys of an object that [`Node::Object`] does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Others {
    /// Skip the key and its value.
    Drop,
    /// Keep the key, with a `null` value.
    Null,
    /// Keep the key and its whole value when the key starts with the prefix (in any case); skip it otherwise. For annotations:
    /// the settings live under `capi-calico.io/`, and `kubectl.kubernetes.io/last-applied-configuration` alone can
    /// be a copy of the whole manifest, escaped.
    Prefixed(&'static str),
}

/// A kubeadm config spec (KCP `spec.kubeadmConfigSpec`, KCT `spec.template.spec`): the three lists the webhook
/// owns entries in, and the names of the other keys.
const KUBEADM_SPEC: Node = Node::Object {
    fields: &[
        ("files", Node::Keep),
        ("preKubeadmCommands", Node::Keep),
        ("postKubeadmCommands", Node::Keep),
    ],
    others: Others::Null,
};

/// `metadata.annotations`: only the `capi-calico.io/` keys (in any case).
const SETTINGS_ANNOTATIONS: Node = Node::Object {
    fields: &[],
    others: Others::Prefixed(crate::settings::PREFIX),
};

/// What the policy reads of a Cluster, KubeadmControlPlane or KubeadmConfigTemplate (one tree for the three kinds:
/// the object is read before the request's `kind` is known, and no path of one kind exists in another).
pub const OBJECT: Node = Node::Object {
    fields: &[
        ("apiVersion", Node::Keep),
        ("kind", Node::Keep),
        (
            "metadata",
            Node::Object {
                fields: &[
                    ("name", Node::Keep),
                    ("namespace", Node::Keep),
                    ("labels", Node::Keep),
                    ("annotations", SETTINGS_ANNOTATIONS),
                ],
                others: Others::Drop,
            },
        ),
        (
            "spec",
            Node::Object {
                fields: &[
                    // Cluster: the pod CIDRs the Calico pool must fit in.
                    ("clusterNetwork", Node::Keep),
                    // KubeadmControlPlane.
                    ("kubeadmConfigSpec", KUBEADM_SPEC),
                    // KubeadmConfigTemplate.
                    (
                        "template",
                        Node::Object {
                            fields: &[("spec", KUBEADM_SPEC)],
                            others: Others::Null,
                        },
                    ),
                ],
                others: Others::Null,
            },
        ),
    ],
    others: Others::Drop,
};

/// What the policy reads of `oldObject`: a Cluster's settings and pod CIDRs, to warn about changes that a running
/// cluster cannot follow. Everything else, the old kubeadm lists of a KCP included, is skipped.
pub const OLD_OBJECT: Node = Node::Object {
    fields: &[
        (
            "metadata",
            Node::Object {
                fields: &[("annotations", SETTINGS_ANNOTATIONS)],
                others: Others::Drop,
            },
        ),
        (
            "spec",
            Node::Object {
                fields: &[("clusterNetwork", Node::Keep)],
                others: Others::Drop,
            },
        ),
    ],
    others: Others::Drop,
};

/// The most values kept from one review (object and `oldObject` together). Cluster API allows 200 `files` and 1000
/// commands in each kubeadm list, which with labels and settings makes a few thousand values at most.
pub const MAX_KEPT_VALUES: usize = 20_000;

thread_local! {
    /// Values that may still be kept in the current [`budgeted`] call (`usize::MAX` outside one: unbounded).
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Whether the current [`budgeted`] call ran out.
    static EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Run `read` (a synchronous deserialization) with a budget of [`MAX_KEPT_VALUES`] kept values; the second part of
/// the answer says whether the budget ran out (what was read is then incomplete).
pub fn budgeted<T>(read: impl FnOnce() -> T) -> (T, bool) {
    /// Puts the enclosing state back however `read` ends (a panic included: the handler catches panics, and the
    /// worker thread goes on serving).
    struct Restore(usize, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEFT.set(self.0);
            EXCEEDED.set(self.1);
        }
    }
    let _restore = Restore(LEFT.replace(MAX_KEPT_VALUES), EXCEEDED.replace(false));
    let value = read();
    (value, EXCEEDED.get())
}

/// Take one value from the budget: false (and the call marked as exceeded) when none is left.
fn charge() -> bool {
    let left = LEFT.get();
    if left == 0 {
        EXCEEDED.set(true);
        return false;
    }
    LEFT.set(left - 1);
    true
}

/// `deserialize_with` for an optional admitted object, pruned by [`OBJECT`].
pub fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    optional(OBJECT, deserializer)
}

/// `deserialize_with` for the optional `oldObject`, pruned by [`OLD_OBJECT`].
pub fn old_object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    optional(OLD_OBJECT, deserializer)
}

fn optional<'de, D: Deserializer<'de>>(
    node: Node,
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    struct OptionVisitor(Node);
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.0.deserialize(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptionVisitor(node))
}

/// Read an object's JSON text pruned by [`OBJECT`], as the server reads `request.object` (for tests and tools that
/// hold the object alone; unbounded).
pub fn read(json: &[u8]) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = OBJECT.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

impl<'de> DeserializeSeed<'de> for Node {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self {
            Node::Keep => KEEP.deserialize(deserializer),
            Node::Object { fields, others } => deserializer.deserialize_any(Build {
                prune: Some((fields, others)),
            }),
        }
    }
}

/// Builds a value: an object key by key as [`Node::Object`] says when `prune` is set, anything else whole (as
/// `Value`'s own visitor would), each kept entry taken from the [`budgeted`] budget: past it, the rest of a list or
/// object is skipped.
#[derive(Clone, Copy)]
struct Build {
    prune: Option<(&'static [(&'static str, Node)], Others)>,
}

/// A list element, kept whole when the budget has room for it (charged only once the element is known to exist, so a
/// list that ends exactly at the budget is not taken for one that went past it).
struct Charged;

impl<'de> DeserializeSeed<'de> for Charged {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Value>, D::Error> {
        if charge() {
            KEEP.deserialize(deserializer).map(Some)
        } else {
            <IgnoredAny as serde::Deserialize>::deserialize(deserializer).map(|_| None)
        }
    }
}

/// A whole value.
const KEEP: Build = Build { prune: None };

/// Whether an unlisted key stays, with its value whole.
fn keeps_whole(others: Others, key: &str) -> bool {
    // In any case: the settings say when a key's prefix is spelt in another case.
    matches!(others, Others::Prefixed(prefix)
        if key.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)))
}

impl<'de> DeserializeSeed<'de> for Build {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Build {
    fn pruned_map<'de, A: MapAccess<'de>>(
        self,
        fields: &'static [(&'static str, Node)],
        others: Others,
        mut access: A,
    ) -> Result<Value, A::Error> {
        let mut out = Map::with_capacity(8);
        while let Some(key) = access.next_key::<String>()? {
            let child = fields.iter().find(|(name, _)| *name == key);
            let kept = child.is_some() || keeps_whole(others, &key) || others == Others::Null;
            if kept && !charge() {
                access.next_value::<IgnoredAny>()?;
                continue;
            }
            match child {
                Some((_, child)) => {
                    let value = access.next_value_seed(*child)?;
                    out.insert(key, value);
                }
                None if keeps_whole(others, &key) => {
                    let value = access.next_value_seed(KEEP)?;
                    out.insert(key, value);
                }
                None => {
                    access.next_value::<IgnoredAny>()?;
                    if others == Others::Null {
                        out.insert(key, Value::Null);
                    }
                }
            }
        }
        Ok(Value::Object(out))
    }
}

impl<'de> Visitor<'de> for Build {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        if let Some((fields, others)) = self.prune {
            return self.pruned_map(fields, others, access);
        }
        let mut out = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if charge() {
                let value = access.next_value_seed(KEEP)?;
                out.insert(key, value);
            } else {
                access.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(element) = access.next_element_seed(Charged)? {
            out.extend(element);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        KEEP.deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read_str(text: &str) -> Value {
        read(text.as_bytes()).expect("pruned read")
    }

    #[test]
    fn kept_values_are_bounded_and_the_caller_told() {
        let many = |n: usize| {
            serde_json::to_vec(&json!({
                "metadata": {"name": "t", "labels": {"a": "b"}},
                "spec": {"template": {"spec": {"files": vec![0; n], "preKubeadmCommands": ["echo"]}}}
            }))
            .expect("encode")
        };
        // (values in `files`, budget exceeded, `files` entries kept: at least, at most)
        for (n, exceeded, kept) in [
            (10, false, 10..=10),
            (
                MAX_KEPT_VALUES / 2,
                false,
                MAX_KEPT_VALUES / 2..=MAX_KEPT_VALUES / 2,
            ),
            // The budget also paid for the keys and values read before `files`.
            (
                MAX_KEPT_VALUES * 3,
                true,
                MAX_KEPT_VALUES - 20..=MAX_KEPT_VALUES - 1,
            ),
        ] {
            let body = many(n);
            let (value, over) = budgeted(|| read(&body));
            let value = value.expect("read");
            assert_eq!(over, exceeded, "{n}");
            let files = value
                .pointer("/spec/template/spec/files")
                .and_then(Value::as_array);
            let len = files.map_or(0, Vec::len);
            assert!(kept.contains(&len), "{n}: kept {len}");
        }
        // Exceeded exactly when something was left out, at the boundary too.
        let last = |n: usize| {
            serde_json::to_vec(&json!({"spec": {"template": {"spec": {"files": vec![0; n]}}}}))
                .expect("encode")
        };
        for n in MAX_KEPT_VALUES - 8..MAX_KEPT_VALUES + 2 {
            let body = last(n);
            let (value, over) = budgeted(|| read(&body));
            let kept = value
                .expect("read")
                .pointer("/spec/template/spec/files")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            assert_eq!(over, kept < n, "{n} values, {kept} kept");
        }
        // Outside `budgeted`, reading is unbounded, and a call does not leak its state into the next.
        let files_read = |body: &[u8]| {
            read(body)
                .expect("read")
                .pointer("/spec/template/spec/files")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        };
        let body = many(MAX_KEPT_VALUES * 2);
        assert_eq!(files_read(&body), MAX_KEPT_VALUES * 2);
        let (_, over) = budgeted(|| read(&many(1)));
        assert!(!over);
        // A panic inside leaves the thread unbounded again.
        let caught = std::panic::catch_unwind(|| budgeted(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(files_read(&body), MAX_KEPT_VALUES * 2);
    }

    #[test]
    fn keeps_listed_paths_nulls_spec_siblings_drops_the_rest() {
        let full = json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
            "kind": "KubeadmControlPlane",
            "metadata": {
                "name": "c", "namespace": "ns", "labels": {"a": "b"},
                "annotations": {
                    "capi-calico.io/CALICO_BLOCK_SIZE": "26",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}",
                    "capi-calico.io": "no slash, not a setting",
                    "Capi-Calico.io/CALICO_BLOCK_SIZE": "26"
                },
                "managedFields": [{"manager": "kubectl"}], "uid": "u", "generation": 3
            },
            "spec": {
                "replicas": 3,
                "version": "v1.33.0",
                "kubeadmConfigSpec": {
                    "clusterConfiguration": {"apiServer": {"extraArgs": [{"name": "a", "value": "b"}]}},
                    "files": [{"path": "/etc/x", "content": "a\nb", "owner": "root:root"}],
                    "preKubeadmCommands": ["echo one"],
                    "postKubeadmCommands": null
                }
            },
            "status": {"ready": true}
        });
        let want = json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
            "kind": "KubeadmControlPlane",
            "metadata": {
                "name": "c", "namespace": "ns", "labels": {"a": "b"},
                "annotations": {"capi-calico.io/CALICO_BLOCK_SIZE": "26", "Capi-Calico.io/CALICO_BLOCK_SIZE": "26"}
            },
            "spec": {
                "replicas": null,
                "version": null,
                "kubeadmConfigSpec": {
                    "clusterConfiguration": null,
                    "files": [{"path": "/etc/x", "content": "a\nb", "owner": "root:root"}],
                    "preKubeadmCommands": ["echo one"],
                    "postKubeadmCommands": null
                }
            }
        });
        assert_eq!(read_str(&full.to_string()), want);
    }

    #[test]
    fn values_of_an_unexpected_type_are_kept_whole() {
        let cases = [
            json!({"spec": "a string"}),
            json!({"spec": {"kubeadmConfigSpec": [1, 2, {"files": 3}]}}),
            json!({"spec": {"template": {"spec": 7.5}}}),
            json!({"spec": {"kubeadmConfigSpec": {"files": {"not": "a list"}}}}),
            json!({"metadata": {"labels": [true, null, -1]}}),
            json!({"spec": null}),
        ];
        for case in cases {
            assert_eq!(read_str(&case.to_string()), case, "{case}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_like_serde_json() {
        let text = r#"{"metadata":{"name":"a","name":"b"},"kind":"K","kind":"L"}"#;
        assert_eq!(
            read_str(text),
            json!({"metadata": {"name": "b"}, "kind": "L"})
        );
    }

    /// Of `oldObject` only a Cluster's settings and pod CIDRs are kept: an old KCP's kubeadm lists, managedFields
    /// and other annotations are skipped.
    #[test]
    fn old_objects_keep_only_the_settings_and_the_cluster_network() {
        let old = json!({
            "apiVersion": "x/v1", "kind": "KubeadmControlPlane",
            "metadata": {"name": "n", "managedFields": [{"manager": "m"}],
                         "annotations": {"capi-calico.io/A": "1", "other": "2"}},
            "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["10.0.0.0/8"]}},
                     "kubeadmConfigSpec": {"files": [{"path": "/etc/capi-calico/x", "content": "big"}]}},
            "status": {"ready": true}
        });
        let text = old.to_string();
        let mut deserializer = serde_json::Deserializer::from_slice(text.as_bytes());
        let pruned = OLD_OBJECT.deserialize(&mut deserializer).expect("reads");
        assert_eq!(
            pruned,
            json!({"metadata": {"annotations": {"capi-calico.io/A": "1"}},
                   "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["10.0.0.0/8"]}}}})
        );
    }

    #[test]
    fn null_and_missing_objects_are_none() {
        #[derive(serde::Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "object")]
            object: Option<Value>,
        }
        for text in [r#"{"object":null}"#, "{}"] {
            let holder: Holder = serde_json::from_str(text).expect("json");
            assert_eq!(holder.object, None, "{text}");
        }
    }
}
