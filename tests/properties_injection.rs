//! End-to-end properties of the injection, through the public API the webhook runs (`Webhook::handle` on an
//! AdmissionReview body, `settings::resolve`, `mutation::desired`). The mutation layer's own properties (idempotent
//! patch over arbitrary file/command lists, YAML round trip of arbitrary strings) are in `src/mutation/tests.rs`;
//! these add what needs the whole path, over generated settings and objects:
//!
//! * rendering is deterministic: the same review gives byte-identical answers;
//! * the mutation applied to its own output yields no patch (and passes /validate);
//! * every user file and command is preserved, in order;
//! * for accepted settings, the injected commands are exactly the constant set, and every injected data file parses
//!   back to the validated value (calicoctl.conf, bgppeers*.yaml, bgpconfiguration.yaml; scripts are the constants);
//! * a value with shell metacharacters, quotes, newlines or NULs in any annotation is rejected, or injected only
//!   inside a data file, never in a command;
//! * the server's pruned reading of the object (`admission::prune`) decides exactly as the full object does.

use std::collections::BTreeMap;

use base64::Engine as _;
use capi_calico_webhook::admission::Webhook;
use capi_calico_webhook::admission::api::{Endpoint, Outcome};
use capi_calico_webhook::admission::policy::{self, Kind};
use capi_calico_webhook::admission::prune;
use capi_calico_webhook::cluster::NoLookup;
use capi_calico_webhook::mutation::{
    self, APPLY_COMMAND, APPLY_SCRIPT, APPLY_SCRIPT_PATH, BGP_CONFIGURATION_PATH,
    CALICOCTL_CONF_PATH, INSTALL_COMMAND, INSTALL_SCRIPT, INSTALL_SCRIPT_PATH, Target,
};
use capi_calico_webhook::settings::{self, PREFIX, Resolution, Settings, keys};
use proptest::prelude::*;
use serde_json::{Value, json};

const UID: &str = "4a7f0c1e-5b2d-4e6f-8a9b-0c1d2e3f4a5b";

fn review(object: &Value, operation: &str) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap();
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": "x"},
            "name": object["metadata"]["name"], "namespace": "team-a", "operation": operation,
            "userInfo": {"username": "tester"}, "object": object,
        }
    }))
    .unwrap()
}

struct Answer {
    outcome: Outcome,
    bytes: Vec<u8>,
    response: Value,
}

/// One webhook for every case, as the server has: its settings and injection memos fill up across cases.
static WEBHOOK: std::sync::LazyLock<Webhook<NoLookup>> =
    std::sync::LazyLock::new(|| Webhook::new(NoLookup));

/// `body` through the shared webhook (with its memos).
fn handle(endpoint: Endpoint, body: &[u8]) -> Answer {
    handle_with(&WEBHOOK, endpoint, body)
}

fn handle_with(webhook: &Webhook<NoLookup>, endpoint: Endpoint, body: &[u8]) -> Answer {
    let reply = futures::executor::block_on(webhook.handle(endpoint, body));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    Answer {
        outcome: reply.decision.outcome,
        response: v["response"].clone(),
        bytes: reply.body,
    }
}

fn patched(object: &Value, response: &Value) -> Value {
    let Some(patch) = response["patch"].as_str() else {
        return object.clone();
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_slice(&bytes).unwrap();
    mutation::apply(object, &ops).unwrap()
}

fn spec_of(object: &Value, target: Target) -> Value {
    object
        .pointer(target.spec_pointer())
        .cloned()
        .unwrap_or(Value::Null)
}

fn list(spec: &Value, field: &str) -> Vec<Value> {
    spec[field].as_array().cloned().unwrap_or_default()
}

fn user_files(spec: &Value) -> Vec<Value> {
    list(spec, "files")
        .into_iter()
        .filter(|f| !f["path"].as_str().is_some_and(mutation::is_ours_path))
        .collect()
}

fn user_commands(spec: &Value, field: &str) -> Vec<Value> {
    list(spec, field)
        .into_iter()
        .filter(|c| !c.as_str().is_some_and(mutation::is_ours_command))
        .collect()
}

fn our_commands(spec: &Value, field: &str) -> Vec<String> {
    list(spec, field)
        .into_iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .filter(|c| mutation::is_ours_command(c))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Generators

/// Settings annotations from pools of valid values (and some combinations `resolve` refuses; the properties
/// that need accepted settings skip those).
fn calico_annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let peer = (
        "[a-z][a-z0-9-]{0,8}[a-z0-9]",
        any::<[u8; 4]>(),
        // Route reflectors peer inside the cluster's AS: asNumber absent or the cluster's (filled in below).
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            "has(node-role.kubernetes.io/control-plane)",
            "rack == 'r1' && zone in {'a', 'b'}",
            "all()",
            "!has(route-reflector)",
        ])),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(name, ip, asn, selector, keep)| {
            let mut spec = serde_json::Map::new();
            spec.insert(
                "peerIP".into(),
                json!(format!("{}.{}.{}.{}", 10, ip[1], ip[2], ip[3].max(1))),
            );
            if asn {
                spec.insert("asNumber".into(), json!("CLUSTER_AS"));
            }
            if let Some(s) = selector {
                spec.insert("nodeSelector".into(), json!(s));
            }
            if let Some(k) = keep {
                spec.insert("keepOriginalNextHop".into(), json!(k));
            }
            json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec})
        });
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec!["Enabled", "Disabled"]),
        prop::sample::select(vec![
            "IPIP",
            "IPIPCrossSubnet",
            "VXLAN",
            "VXLANCrossSubnet",
            "None",
        ]),
        prop::option::of(prop::sample::select(vec!["Enabled", "Disabled"])),
        prop::sample::select(vec![64_512u32, 65_100, 65_534, 4_200_000, 1, 23_456_789]),
        prop::collection::vec(peer, 1..4),
        prop::option::of((
            prop::sample::select(vec!["v3.31.7", "v3.30.2", "v3.28.1"]),
            "[0-9a-f]{64}",
            "[0-9a-f]{64}",
        )),
        prop::option::of("[a-z0-9-]{1,12}"),
    )
        .prop_map(
            |(install, bgp_cfg, bgp, encap, nat, asn, peers, version, url)| {
                let mut a = BTreeMap::new();
                let mut put = |k: &str, v: String| {
                    a.insert(format!("{PREFIX}{k}"), v);
                };
                put(keys::CUSTOM_CALICO_DEPLOYMENT, "true".into());
                // resolve's combination rules: BGP settings need calicoctl and BGP; IPIP and None need BGP.
                let bgp_cfg = bgp_cfg && install && bgp == "Enabled";
                let encap = if bgp == "Disabled" && (encap.starts_with("IPIP") || encap == "None") {
                    "VXLAN"
                } else {
                    encap
                };
                put(keys::CALICO_BGP_OPTION, bgp.into());
                put(keys::CALICO_ENCAPSULATION, encap.into());
                if let Some(nat) = nat {
                    put(keys::CALICO_NAT_OUTGOING, nat.into());
                }
                if install {
                    put(keys::INSTALL_CALICOCTL, "true".into());
                }
                if bgp_cfg {
                    put(keys::CONFIGURE_CALICO_BGP_SETTINGS, "true".into());
                    put(keys::CALICO_BGP_AS_NUMBER, asn.to_string());
                    let yaml = peers
                        .iter()
                        .map(|p| {
                            serde_json::to_string(p)
                                .unwrap()
                                .replace("\"CLUSTER_AS\"", &asn.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join("\n---\n");
                    put(
                        keys::CALICO_ROUTE_REFLECTORS,
                        base64::engine::general_purpose::STANDARD.encode(yaml),
                    );
                }
                if let Some((v, amd, arm)) = version {
                    put(keys::CALICO_VERSION, v.into());
                    put(keys::CALICOCTL_SHA256_AMD64, amd);
                    put(keys::CALICOCTL_SHA256_ARM64, arm);
                }
                if let Some(seg) = url {
                    put(
                        keys::CALICOCTL_URL,
                        format!(
                            "https://mirror.example.com/{seg}/calicoctl-{{version}}-linux-{{arch}}"
                        ),
                    );
                }
                a
            },
        )
}

fn user_file() -> impl Strategy<Value = Value> {
    ("[a-z]{1,8}", "\\PC{0,40}", prop::sample::select(vec!["0644", "0600", "0755"])).prop_map(|(name, content, mode)| {
        json!({"path": format!("/etc/user/{name}"), "owner": "root:root", "permissions": mode, "content": content})
    })
}

fn user_command() -> impl Strategy<Value = Value> {
    "[a-z][a-z0-9 ./'\"$|&;-]{0,30}".prop_map(|s| json!(s))
}

/// A KCP or KCT (v1beta1 or v1beta2) carrying `annotations`, with generated user files and commands (each list
/// possibly absent).
fn object(annotations: BTreeMap<String, String>) -> impl Strategy<Value = (Value, Target)> {
    (
        any::<bool>(),
        prop::sample::select(vec!["v1beta1", "v1beta2"]),
        prop::option::of(prop::collection::vec(user_file(), 0..4)),
        prop::option::of(prop::collection::vec(user_command(), 0..4)),
        prop::option::of(prop::collection::vec(user_command(), 0..4)),
    )
        .prop_map(move |(kcp, version, files, pre, post)| {
            let mut spec = serde_json::Map::new();
            spec.insert("users".into(), json!([{"name": "capv"}]));
            if let Some(f) = files {
                spec.insert("files".into(), Value::Array(f));
            }
            if let Some(p) = pre {
                spec.insert("preKubeadmCommands".into(), Value::Array(p));
            }
            if let Some(p) = post {
                spec.insert("postKubeadmCommands".into(), Value::Array(p));
            }
            let meta = json!({"name": "wl-1-x", "namespace": "team-a", "annotations": annotations.clone()});
            if kcp {
                (
                    json!({"apiVersion": format!("controlplane.cluster.x-k8s.io/{version}"),
                           "kind": "KubeadmControlPlane", "metadata": meta,
                           "spec": {"version": "v1.33.4", "replicas": 3, "kubeadmConfigSpec": spec}}),
                    Target::ControlPlane,
                )
            } else {
                (
                    json!({"apiVersion": format!("bootstrap.cluster.x-k8s.io/{version}"),
                           "kind": "KubeadmConfigTemplate", "metadata": meta,
                           "spec": {"template": {"spec": spec}}}),
                    Target::Workers,
                )
            }
        })
}

fn accepted(annotations: &BTreeMap<String, String>) -> Option<Settings> {
    match settings::resolve(annotations, None) {
        Resolution::OptedIn { settings, .. } => Some(*settings),
        _ => None,
    }
}

/// The `key=value` lines of calicoctl.conf (after the comment), as the installer reads them. A key seen twice (a
/// value that smuggled in a line of its own) fails the case.
fn conf_lines(content: &str) -> Result<BTreeMap<String, String>, TestCaseError> {
    let mut conf = BTreeMap::new();
    for line in content
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| TestCaseError::fail(format!("not key=value: {line:?}")))?;
        if conf.insert(k.to_string(), v.to_string()).is_some() {
            return Err(TestCaseError::fail(format!("{k} twice in {content:?}")));
        }
    }
    Ok(conf)
}

fn check_data_files(
    spec: &Value,
    settings: &Settings,
    target: Target,
) -> Result<(), TestCaseError> {
    // Ours are base64 (cloud-init renders plain contents as Jinja); decoded here to the bytes on the node.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for f in list(spec, "files") {
        let Some(path) = f["path"].as_str().filter(|p| mutation::is_ours_path(p)) else {
            continue;
        };
        prop_assert_eq!(&f["encoding"], "base64", "{}", path);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(f["content"].as_str().unwrap_or_default())
            .map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        let text =
            String::from_utf8(bytes).map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        files.insert(path.to_string(), text);
    }
    if !settings.install_calicoctl {
        prop_assert!(files.is_empty(), "{files:?}");
        return Ok(());
    }
    prop_assert_eq!(&files[INSTALL_SCRIPT_PATH], INSTALL_SCRIPT);
    let conf = conf_lines(&files[CALICOCTL_CONF_PATH])?;
    // Exactly the keys the installer reads, each once.
    let keys: Vec<&str> = conf.keys().map(String::as_str).collect();
    let mut want_keys = vec!["url_template", "version"];
    if settings.calicoctl.sha256_amd64.is_some() {
        want_keys.insert(0, "sha256_amd64");
    }
    if settings.calicoctl.sha256_arm64.is_some() {
        want_keys.insert(want_keys.len() - 2, "sha256_arm64");
    }
    prop_assert_eq!(keys, want_keys);
    let v = settings.calico_version;
    prop_assert_eq!(
        &conf["version"],
        &format!("v{}.{}.{}", v.major, v.minor, v.patch)
    );
    prop_assert_eq!(&conf["url_template"], &settings.calicoctl.url_template);
    prop_assert_eq!(
        conf.get("sha256_amd64"),
        settings.calicoctl.sha256_amd64.as_ref().map(|s| &s.0)
    );
    prop_assert_eq!(
        conf.get("sha256_arm64"),
        settings.calicoctl.sha256_arm64.as_ref().map(|s| &s.0)
    );
    let bgp = settings.configure_bgp && target == Target::ControlPlane;
    prop_assert_eq!(files.contains_key(APPLY_SCRIPT_PATH), bgp);
    if !bgp {
        prop_assert_eq!(files.len(), 2, "{:?}", files.keys());
        return Ok(());
    }
    prop_assert_eq!(&files[APPLY_SCRIPT_PATH], APPLY_SCRIPT);
    let config: Vec<Value> = serde_saphyr::from_multiple(&files[BGP_CONFIGURATION_PATH]).unwrap();
    prop_assert_eq!(config.len(), 1);
    prop_assert_eq!(
        &config[0]["spec"]["asNumber"],
        &json!(settings.as_number.unwrap())
    );
    prop_assert_eq!(&config[0]["spec"]["nodeToNodeMeshEnabled"], &json!(false));
    // bgppeers.yaml, bgppeers-2.yaml, ...: in order, together exactly the validated peers.
    let mut peers = Vec::new();
    for n in 1.. {
        let path = if n == 1 {
            mutation::BGP_PEERS_PATH.to_string()
        } else {
            format!("/etc/capi-calico/bgppeers-{n}.yaml")
        };
        let Some(text) = files.get(&path) else { break };
        peers.extend(serde_saphyr::from_multiple::<Value>(text).unwrap());
    }
    prop_assert_eq!(peers.len(), settings.route_reflectors.len());
    for (got, want) in peers.iter().zip(&settings.route_reflectors) {
        prop_assert_eq!(&got["kind"], &json!("BGPPeer"));
        prop_assert_eq!(&got["metadata"]["name"], &json!(want.name));
        prop_assert_eq!(&got["spec"], &Value::Object(want.spec.clone()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn injection_round_trip((object, target) in calico_annotations().prop_flat_map(object)) {
        let annotations = settings_of(&object);
        let body = review(&object, "CREATE");
        let first = handle(Endpoint::Mutate, &body);
        // Deterministic: the same review, the same bytes, from the memos (second call) and without them (a new
        // webhook).
        prop_assert_eq!(&first.bytes, &handle(Endpoint::Mutate, &body).bytes);
        prop_assert_eq!(&first.bytes, &handle_with(&Webhook::new(NoLookup), Endpoint::Mutate, &body).bytes);
        let Some(settings) = accepted(&annotations) else {
            prop_assert_eq!(first.outcome, Outcome::Denied);
            return Ok(());
        };
        prop_assert!(matches!(first.outcome, Outcome::Mutated | Outcome::Allowed), "{}", first.response);
        let after = patched(&object, &first.response);
        let (before_spec, after_spec) = (spec_of(&object, target), spec_of(&after, target));

        // Its own output needs no patch, on CREATE and UPDATE, and /validate agrees.
        for op in ["CREATE", "UPDATE"] {
            let again = handle(Endpoint::Mutate, &review(&after, op));
            prop_assert_eq!(again.outcome, Outcome::Allowed, "{}", again.response);
            let check = handle(Endpoint::Validate, &review(&after, op));
            prop_assert_eq!(check.outcome, Outcome::Allowed, "{}", check.response);
        }
        // User entries kept, in order.
        prop_assert_eq!(user_files(&before_spec), user_files(&after_spec));
        for field in ["preKubeadmCommands", "postKubeadmCommands"] {
            prop_assert_eq!(user_commands(&before_spec, field), user_commands(&after_spec, field));
        }
        // Exactly the constant commands.
        let want_pre: Vec<String> = if settings.install_calicoctl { vec![INSTALL_COMMAND.into()] } else { vec![] };
        let want_post: Vec<String> = if settings.configure_bgp && target == Target::ControlPlane {
            vec![APPLY_COMMAND.into()]
        } else {
            vec![]
        };
        prop_assert_eq!(our_commands(&after_spec, "preKubeadmCommands"), want_pre);
        prop_assert_eq!(our_commands(&after_spec, "postKubeadmCommands"), want_post);
        // Every data file parses back to the validated value.
        check_data_files(&after_spec, &settings, target)?;
    }

    #[test]
    fn hostile_values_never_reach_a_command(
        base in calico_annotations(),
        (key, hostile, needs) in hostile_annotation(),
        kcp in any::<bool>(),
    ) {
        let mut annotations = base;
        annotations.extend(needs);
        annotations.insert(format!("{PREFIX}{key}"), hostile.clone());
        let (object, target) = if kcp {
            (json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                    "metadata": {"name": "cp", "namespace": "team-a", "annotations": annotations},
                    "spec": {"version": "v1.33.4", "kubeadmConfigSpec": {"preKubeadmCommands": ["echo user"]}}}),
             Target::ControlPlane)
        } else {
            (json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
                    "metadata": {"name": "md", "namespace": "team-a", "annotations": annotations},
                    "spec": {"template": {"spec": {"preKubeadmCommands": ["echo user"]}}}}),
             Target::Workers)
        };
        let answer = handle(Endpoint::Mutate, &review(&object, "CREATE"));
        match answer.outcome {
            // Only what the settings rules refuse: a valid value with metacharacters is not denied for them.
            Outcome::Denied => prop_assert!(accepted(&annotations).is_none(), "{}", answer.response),
            Outcome::Mutated | Outcome::Allowed => {
                let spec = spec_of(&patched(&object, &answer.response), target);
                // Every data file parses back to exactly the validated settings: the value cannot have added a line,
                // a key or a YAML document of its own.
                if let Some(settings) = accepted(&annotations) {
                    check_data_files(&spec, &settings, target)?;
                }
                for field in ["preKubeadmCommands", "postKubeadmCommands"] {
                    for c in list(&spec, field) {
                        let c = c.as_str().unwrap();
                        prop_assert!(
                            c == "echo user" || c == INSTALL_COMMAND || c == APPLY_COMMAND,
                            "unexpected command {c:?}"
                        );
                    }
                }
                // Wherever the value went, it is inside a file's content, not a command or a path.
                for f in list(&spec, "files") {
                    let path = f["path"].as_str().unwrap();
                    prop_assert!(mutation::is_ours_path(path), "{path}");
                    prop_assert!(hostile.len() < 4 || !path.contains(&hostile), "{path}");
                }
            }
            Outcome::Error => prop_assert!(false, "error answer: {}", answer.response),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// The server decides on the pruned object; the CLI on the full one. Both must give the same verdict, on a
    /// fresh object, on its own mutated output, and with the spec's other keys present or not (the patch removes a
    /// kubeadm spec only when nothing else is in it).
    #[test]
    fn pruned_object_decides_like_the_full_object(
        (object, _target) in calico_annotations().prop_flat_map(object),
        drop_users in any::<bool>(),
        spec_null in any::<bool>(),
        template_metadata in any::<bool>(),
    ) {
        let mut object = object;
        let kind = Kind::of_object(&object).unwrap();
        // Annotations outside capi-calico.io/ are not read (kubectl's copy of the manifest, someone else's).
        let manifest = object.to_string();
        object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(manifest);
        object["metadata"]["annotations"]["example.com/CALICO_BLOCK_SIZE"] = json!("19");
        if template_metadata && kind == Kind::ConfigTemplate {
            object["spec"]["template"]["metadata"] = json!({"labels": {"tier": "workers"}});
        }
        let spec = match kind {
            Kind::ControlPlane => &mut object["spec"]["kubeadmConfigSpec"],
            _ => &mut object["spec"]["template"]["spec"],
        };
        if drop_users {
            spec.as_object_mut().unwrap().remove("users");
        }
        if spec_null && spec.as_object().is_some_and(|m| m.is_empty()) {
            *spec = Value::Null;
        }
        let decide = |endpoint, o: &Value| {
            futures::executor::block_on(policy::decide(&NoLookup, endpoint, kind, o)).verdict
        };
        let mut seen = vec![object.clone()];
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let full = decide(endpoint, &object);
            prop_assert_eq!(&full, &decide(endpoint, &pruned(&object)));
            if let (Endpoint::Mutate, capi_calico_webhook::admission::Verdict::Allow { patch, .. }) = (endpoint, &full) {
                let mut after = object.clone();
                json_patch::patch(&mut after, patch).unwrap();
                seen.push(after);
            }
        }
        // The injected object again, and under settings that inject nothing (every entry of ours is removed, and
        // with it a kubeadm spec, template or spec left empty).
        let mut nothing = seen.last().unwrap().clone();
        let annotations = &mut nothing["metadata"]["annotations"];
        annotations[format!("{PREFIX}INSTALL_CALICOCTL")] = json!("false");
        annotations[format!("{PREFIX}CONFIGURE_CALICO_BGP_SETTINGS")] = json!("false");
        seen.push(nothing);
        for o in &seen[1..] {
            for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
                prop_assert_eq!(decide(endpoint, o), decide(endpoint, &pruned(o)));
            }
        }
    }
}

/// The object as the server reads it out of a review.
fn pruned(object: &Value) -> Value {
    prune::read(&serde_json::to_vec(object).unwrap()).unwrap()
}

fn settings_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// A hostile annotation: its key, its value, and the other settings it needs to be accepted at all. Mostly
/// [`hostile_string`] under any key (which the strict grammars refuse); also values that are valid although they
/// carry shell metacharacters: a route reflector whose `nodeSelector` compares a label with a quoted string of them
/// (`CALICO_ROUTE_REFLECTORS`, with the BGP settings it needs), and a `CALICOCTL_URL` with `~` in its path.
fn hostile_annotation() -> impl Strategy<Value = (&'static str, String, BTreeMap<String, String>)> {
    // Everything a single-quoted selector string may hold (no single quote, no control character): the shell
    // pieces of [`hostile_string`] that qualify, and some YAML syntax.
    let pieces: Vec<&str> = SHELL_PIECES
        .iter()
        .copied()
        .filter(|p| !p.contains('\'') && !p.chars().any(char::is_control))
        .chain(["---", ": ", "{", "}"])
        .collect();
    let literal = prop::collection::vec(prop::sample::select(pieces), 1..6)
        .prop_map(|pieces| pieces.concat());
    let route_reflector = literal.prop_map(|junk| {
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr-1\nspec:\n  peerIP: 10.0.0.1\n  \
             asNumber: 65100\n  nodeSelector: {}\n",
            serde_json::to_string(&format!("rack == '{junk}'")).unwrap()
        );
        let needs = [
            (keys::INSTALL_CALICOCTL, "true"),
            (keys::CONFIGURE_CALICO_BGP_SETTINGS, "true"),
            (keys::CALICO_BGP_OPTION, "Enabled"),
            (keys::CALICO_ENCAPSULATION, "IPIP"),
            (keys::CALICO_BGP_AS_NUMBER, "65100"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect();
        (
            keys::CALICO_ROUTE_REFLECTORS,
            base64::engine::general_purpose::STANDARD.encode(yaml),
            needs,
        )
    });
    let url = prop::collection::vec(
        prop::sample::select(vec!["~", "~~", "-~", "~.", "~/"]),
        1..3,
    )
    .prop_map(|t| {
        let t = t.concat();
        (
            keys::CALICOCTL_URL,
            format!("https://mirror.example.com/{t}/calicoctl-{{version}}-linux-{{arch}}{t}"),
            BTreeMap::new(),
        )
    });
    let anywhere = (
        prop::sample::select(keys::KNOWN_KEYS.to_vec()),
        hostile_string(),
    )
        .prop_map(|(key, value)| (key, value, BTreeMap::new()));
    prop_oneof![6 => anywhere, 3 => route_reflector, 1 => url]
}

/// Shell metacharacters, quotes, newlines, NULs and the URL template's placeholders: what hostile values are made of.
const SHELL_PIECES: &[&str] = &[
    "$(id)",
    "`id`",
    ";",
    "&&",
    "||",
    "|",
    "'",
    "\"",
    "\\",
    "\n",
    "\r\n",
    "\0",
    "${IFS}",
    "#",
    "*",
    "?",
    "~",
    "<",
    ">",
    ">>",
    "&",
    "!",
    "\t",
    " ",
    "{version}",
    "{arch}",
    "\n---\n",
    "=",
    "%0a",
];

/// Strings built around [`SHELL_PIECES`], sometimes wrapped around a valid value.
fn hostile_string() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(SHELL_PIECES.to_vec());
    let valid = prop::sample::select(vec![
        "true",
        "Enabled",
        "None",
        "26",
        "65100",
        "v3.31.7",
        "100.96.0.0/12",
        "https://mirror.example/calicoctl-{version}-linux-{arch}",
    ]);
    (valid, prop::collection::vec(piece, 1..5), any::<bool>()).prop_map(|(v, pieces, before)| {
        let junk: String = pieces.concat();
        if before {
            format!("{junk}{v}")
        } else {
            format!("{v}{junk}")
        }
    })
}

/// Not a property: a guard that `hostile_values_never_reach_a_command` checks both of its branches, i.e. that some
/// hostile values are accepted (and their data files then checked) and most are refused.
#[test]
fn hostile_generator_reaches_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (calico_annotations(), hostile_annotation());
    let (mut accepted_keys, mut refused, total) = (BTreeMap::<&str, usize>::new(), 0, 600);
    for _ in 0..total {
        let (mut annotations, (key, hostile, needs)) =
            strategy.new_tree(&mut runner).unwrap().current();
        annotations.extend(needs);
        annotations.insert(format!("{PREFIX}{key}"), hostile);
        match settings::resolve(&annotations, None) {
            Resolution::OptedIn { .. } => *accepted_keys.entry(key).or_default() += 1,
            Resolution::Invalid { .. } => refused += 1,
            Resolution::NotOptedIn { .. } => {}
        }
    }
    let accepted: usize = accepted_keys.values().sum();
    eprintln!(
        "hostile values: {accepted} accepted ({accepted_keys:?}), {refused} refused, of {total}"
    );
    assert!(
        accepted >= 10,
        "only {accepted}/{total} hostile cases accepted: {accepted_keys:?}"
    );
    assert!(
        refused * 2 >= total,
        "only {refused}/{total} hostile cases refused"
    );
}

/// Not a property: a guard that the generator is useful, i.e. most generated settings are accepted.
#[test]
fn generator_mostly_produces_accepted_settings() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = calico_annotations();
    let (mut ok, total) = (0, 300);
    let mut rejected = BTreeMap::<String, usize>::new();
    for _ in 0..total {
        let a = strategy.new_tree(&mut runner).unwrap().current();
        match settings::resolve(&a, None) {
            Resolution::OptedIn { .. } => ok += 1,
            Resolution::Invalid { problems } => {
                for p in problems {
                    *rejected.entry(p.rule.to_string()).or_default() += 1;
                }
            }
            Resolution::NotOptedIn { .. } => {}
        }
    }
    assert!(
        ok * 3 >= total,
        "only {ok}/{total} accepted; rules: {rejected:?}"
    );
}

/// Through the whole handler: a Cluster UPDATE whose stored object (`oldObject`) had another pool gets the warning;
/// the same UPDATE without a pool change, and a CREATE, get none.
#[test]
fn a_cluster_update_that_changes_the_pool_is_warned_about() {
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/reviews/cluster-valid.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let old = fixture["request"]["object"].clone();
    let block = format!("{PREFIX}CALICO_BLOCK_SIZE");
    let mut changed = old.clone();
    let was = old["metadata"]["annotations"][&block]
        .as_str()
        .unwrap_or("28")
        .to_string();
    let now = if was == "27" { "26" } else { "27" };
    changed["metadata"]["annotations"][&block] = json!(now);
    let with_old = |new: &Value| {
        let mut review: Value = serde_json::from_slice(&review(new, "UPDATE")).unwrap();
        review["request"]["oldObject"] = old.clone();
        serde_json::to_vec(&review).unwrap()
    };
    let pool_warning = |answer: &Answer| {
        answer.response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| {
                w.as_str()
                    .unwrap_or_default()
                    .contains("the Calico pool changes")
            })
    };
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let answer = handle(endpoint, &with_old(&changed));
        assert_eq!(answer.response["allowed"], true, "{}", answer.response);
        assert!(pool_warning(&answer), "{}", answer.response);
        assert!(!pool_warning(&handle(endpoint, &with_old(&old))));
        assert!(!pool_warning(&handle(
            endpoint,
            &review(&changed, "CREATE")
        )));
    }
}
