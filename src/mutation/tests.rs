//! Unit tests: desired(), the canonical YAML, patch() on fixtures, verify(), limits and conflicts.

use std::path::PathBuf;

use json_patch::PatchOperation;
use pretty_assertions::assert_eq;
use serde_json::{Map, Value, json};

use super::render;
use super::*;
use crate::settings::{
    BgpOption, BgpPeer, CalicoVersion, CalicoctlSource, Encapsulation, NatOutgoing, Settings,
    Sha256Hex,
};

const SHA_AMD64: &str = "1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113";
const SHA_ARM64: &str = "d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda";

pub(crate) fn peer(name: &str, spec: Value) -> BgpPeer {
    let Value::Object(spec) = spec else {
        panic!("spec must be an object")
    };
    BgpPeer {
        name: name.into(),
        spec,
    }
}

pub(crate) fn settings(install: bool, bgp: bool) -> Settings {
    Settings {
        bgp: if bgp { BgpOption::Enabled } else { BgpOption::Disabled },
        pod_pool: None,
        encapsulation: Encapsulation::VxlanCrossSubnet,
        nat_outgoing: NatOutgoing::Enabled,
        install_calicoctl: install,
        configure_bgp: bgp,
        as_number: bgp.then_some(64512),
        route_reflectors: if bgp {
            vec![
                peer("rr-1", json!({"peerIP": "192.0.2.10", "asNumber": 64513})),
                peer("rr-2", json!({"peerIP": "[2001:db8::1]:179", "asNumber": 64513, "keepOriginalNextHop": true})),
            ]
        } else {
            Vec::new()
        },
        calico_version: CalicoVersion { major: 3, minor: 31, patch: 7 },
        calicoctl: CalicoctlSource {
            url_template: "https://github.com/projectcalico/calico/releases/download/{version}/calicoctl-linux-{arch}"
                .into(),
            sha256_amd64: Some(Sha256Hex(SHA_AMD64.into())),
            sha256_arm64: Some(Sha256Hex(SHA_ARM64.into())),
        },
        images: Default::default(),
    }
}

pub(crate) fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mutation")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn spec_of(obj: &Value, target: Target) -> Option<&Map<String, Value>> {
    let mut cur = obj;
    for k in target.spec_path() {
        cur = cur.get(*k)?;
    }
    cur.as_object()
}

fn list_of(obj: &Value, target: Target, field: &str) -> Vec<Value> {
    spec_of(obj, target)
        .and_then(|s| s.get(field))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn user_files(obj: &Value, target: Target) -> Vec<Value> {
    list_of(obj, target, "files")
        .into_iter()
        .filter(|f| {
            !f.get("path")
                .and_then(Value::as_str)
                .is_some_and(is_ours_path)
        })
        .collect()
}

fn user_cmds(obj: &Value, target: Target, field: &str) -> Vec<Value> {
    list_of(obj, target, field)
        .into_iter()
        .filter(|c| !c.as_str().is_some_and(is_ours_command))
        .collect()
}

/// No empty list or object on the path to, or directly inside, the kubeadm config spec (unless the user's object
/// already had that very empty list, which is theirs to keep).
fn assert_no_empty_containers(before: &Value, obj: &Value, target: Target) {
    let mut cur = obj;
    for k in target.spec_path() {
        match cur.get(*k) {
            Some(v) => {
                assert!(
                    v.as_object().is_some_and(|m| !m.is_empty()),
                    "{k} is empty or not an object in {obj}"
                );
                cur = v;
            }
            None => return,
        }
    }
    for field in ["files", "preKubeadmCommands", "postKubeadmCommands"] {
        let was_empty = spec_of(before, target).and_then(|s| s.get(field)) == Some(&json!([]));
        if let Some(v) = cur.get(field).filter(|_| !was_empty) {
            assert!(
                v.as_array().is_some_and(|a| !a.is_empty()),
                "{field} is empty in {obj}"
            );
        }
    }
}

/// Patch, apply, and check every invariant; returns the patched object.
fn roundtrip(before: &Value, target: Target, inj: &Injection) -> Value {
    let ops = patch(before, target, inj).expect("patch");
    let after = apply(before, &ops).expect("apply");
    // Idempotent: a second pass changes nothing, and verify is satisfied.
    let again = patch(&after, target, inj).expect("patch again");
    assert!(again.is_empty(), "second patch not empty: {again:?}");
    assert_eq!(verify(&after, target, inj), Vec::<String>::new());
    // Deterministic.
    assert_eq!(ops, patch(before, target, inj).expect("patch"));
    // User entries keep content and order.
    assert_eq!(user_files(before, target), user_files(&after, target));
    for f in ["preKubeadmCommands", "postKubeadmCommands"] {
        assert_eq!(user_cmds(before, target, f), user_cmds(&after, target, f));
    }
    // Exactly our entries, each once.
    let ours: Vec<Value> = list_of(&after, target, "files")
        .into_iter()
        .filter(|f| {
            f.get("path")
                .and_then(Value::as_str)
                .is_some_and(is_ours_path)
        })
        .collect();
    let mut want: Vec<Value> = inj.files.iter().map(InjectedFile::to_json).collect();
    let mut got = ours.clone();
    let key = |v: &Value| v["path"].as_str().unwrap_or_default().to_string();
    want.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, want);
    for (f, d) in [
        ("preKubeadmCommands", &inj.pre_kubeadm_commands),
        ("postKubeadmCommands", &inj.post_kubeadm_commands),
    ] {
        let mine: Vec<String> = list_of(&after, target, f)
            .into_iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .filter(|c| is_ours_command(c))
            .collect();
        assert_eq!(
            mine,
            d.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{f}"
        );
    }
    assert_no_empty_containers(before, &after, target);
    // Everything outside the spec's lists is untouched.
    let strip = |v: &Value| {
        let mut v = v.clone();
        let mut cur = &mut v;
        for k in target.spec_path() {
            match cur.get_mut(*k) {
                Some(n) => cur = n,
                None => return v,
            }
        }
        if let Some(m) = cur.as_object_mut() {
            for f in ["files", "preKubeadmCommands", "postKubeadmCommands"] {
                m.remove(f);
            }
        }
        v
    };
    let mut b = strip(before);
    let mut a = strip(&after);
    prune_empty(&mut b);
    prune_empty(&mut a);
    assert_eq!(b, a);
    after
}

fn prune_empty(v: &mut Value) {
    if let Value::Object(m) = v {
        for (_, c) in m.iter_mut() {
            prune_empty(c);
        }
        m.retain(|_, c| !c.is_null() && !c.as_object().is_some_and(Map::is_empty));
    }
}

fn op_paths(ops: &[PatchOperation]) -> Vec<String> {
    ops.iter()
        .map(|op| {
            let (kind, path) = match op {
                PatchOperation::Add(o) => ("add", o.path.to_string()),
                PatchOperation::Remove(o) => ("remove", o.path.to_string()),
                PatchOperation::Replace(o) => ("replace", o.path.to_string()),
                PatchOperation::Move(o) => ("move", o.path.to_string()),
                PatchOperation::Copy(o) => ("copy", o.path.to_string()),
                PatchOperation::Test(o) => ("test", o.path.to_string()),
            };
            format!("{kind} {path}")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// desired()

#[test]
fn desired_install_only_is_the_same_for_both_targets() {
    let s = settings(true, false);
    for target in [Target::ControlPlane, Target::Workers] {
        let inj = desired(&s, target).unwrap();
        let paths: Vec<&str> = inj.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec![INSTALL_SCRIPT_PATH, CALICOCTL_CONF_PATH]);
        assert_eq!(inj.files[0].permissions, "0755");
        assert_eq!(inj.files[0].owner, "root:root");
        assert_eq!(inj.files[0].content, INSTALL_SCRIPT);
        assert_eq!(inj.pre_kubeadm_commands, vec![INSTALL_COMMAND]);
        assert!(inj.post_kubeadm_commands.is_empty());
    }
}

#[test]
fn desired_bgp_only_for_control_plane() {
    let s = settings(true, true);
    let cp = desired(&s, Target::ControlPlane).unwrap();
    let paths: Vec<&str> = cp.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            INSTALL_SCRIPT_PATH,
            CALICOCTL_CONF_PATH,
            BGP_PEERS_PATH,
            BGP_CONFIGURATION_PATH,
            APPLY_SCRIPT_PATH,
            APPLY_UNIT_PATH
        ]
    );
    assert_eq!(cp.file(BGP_PEERS_PATH).unwrap().permissions, "0600");
    assert_eq!(cp.file(BGP_CONFIGURATION_PATH).unwrap().permissions, "0600");
    assert_eq!(cp.file(APPLY_SCRIPT_PATH).unwrap().permissions, "0755");
    assert_eq!(cp.file(APPLY_UNIT_PATH).unwrap().permissions, "0644");
    assert_eq!(cp.post_kubeadm_commands, vec![APPLY_COMMAND]);

    let workers = desired(&s, Target::Workers).unwrap();
    assert!(
        workers.files.iter().all(|f| !f.path.contains("bgp")),
        "workers got BGP files"
    );
    assert!(workers.post_kubeadm_commands.is_empty());
    assert_eq!(
        workers,
        desired(&settings(true, false), Target::Workers).unwrap()
    );
}

#[test]
fn desired_nothing_without_install() {
    let inj = desired(&settings(false, false), Target::ControlPlane).unwrap();
    assert!(inj.is_empty());
}

#[test]
fn desired_rejects_inconsistent_settings() {
    let mut s = settings(true, true);
    s.install_calicoctl = false;
    assert!(matches!(
        desired(&s, Target::ControlPlane),
        Err(MutationError::InvalidSettings(_))
    ));
    let mut s = settings(true, true);
    s.as_number = None;
    assert!(matches!(
        desired(&s, Target::ControlPlane),
        Err(MutationError::InvalidSettings(_))
    ));
    let mut s = settings(true, true);
    s.route_reflectors.clear();
    assert!(matches!(
        desired(&s, Target::ControlPlane),
        Err(MutationError::InvalidSettings(_))
    ));
    let mut s = settings(true, false);
    s.calicoctl.sha256_amd64 = None;
    s.calicoctl.sha256_arm64 = None;
    assert!(matches!(
        desired(&s, Target::Workers),
        Err(MutationError::InvalidSettings(_))
    ));
    let mut s = settings(true, false);
    s.calicoctl.url_template = "https://example.com/{version}/x-{arch}\nversion=evil".into();
    assert!(matches!(
        desired(&s, Target::Workers),
        Err(MutationError::InvalidSettings(_))
    ));
    let mut s = settings(true, false);
    s.calicoctl.sha256_arm64 = Some(Sha256Hex("ABC".into()));
    assert!(matches!(
        desired(&s, Target::Workers),
        Err(MutationError::InvalidSettings(_))
    ));
}

#[test]
fn commands_are_constants_and_values_only_in_files() {
    let mut s = settings(true, true);
    s.calicoctl.url_template =
        "https://mirror.example.com/calico/{version}/calicoctl-{arch}".into();
    let inj = desired(&s, Target::ControlPlane).unwrap();
    assert_eq!(inj.pre_kubeadm_commands, vec![INSTALL_COMMAND]);
    assert_eq!(inj.post_kubeadm_commands, vec![APPLY_COMMAND]);
    for c in inj
        .pre_kubeadm_commands
        .iter()
        .chain(&inj.post_kubeadm_commands)
    {
        for value in [
            "mirror.example.com",
            "v3.31.7",
            SHA_AMD64,
            "64512",
            "rr-1",
            "192.0.2.10",
        ] {
            assert!(!c.contains(value), "{value} leaked into command {c}");
        }
    }
    let conf = &inj.file(CALICOCTL_CONF_PATH).unwrap().content;
    assert!(
        conf.contains(
            "url_template=https://mirror.example.com/calico/{version}/calicoctl-{arch}\n"
        )
    );
    assert!(conf.contains("version=v3.31.7\n"));
    assert!(conf.contains(&format!("sha256_amd64={SHA_AMD64}\n")));
    assert!(conf.contains(&format!("sha256_arm64={SHA_ARM64}\n")));
}

#[test]
fn conf_omits_a_missing_checksum() {
    let mut s = settings(true, false);
    s.calicoctl.sha256_arm64 = None;
    let inj = desired(&s, Target::Workers).unwrap();
    let conf = &inj.file(CALICOCTL_CONF_PATH).unwrap().content;
    assert!(!conf.contains("sha256_arm64"));
    assert!(conf.contains("sha256_amd64="));
}

/// Bootstrap providers start cloud-init user-data with `## template: jinja`, so cloud-init renders the `files` and
/// commands of a KCP/KCT as Jinja. Nothing the webhook injects may carry Jinja markup: the commands are constants
/// without it, and every file is base64, even when a (validated) value holds braces.
#[test]
fn injected_entries_carry_no_jinja_markup() {
    let mut s = settings(true, true);
    s.route_reflectors[0].spec.insert(
        "nodeSelector".into(),
        json!("a == '{{ 7*7 }}' && b == '{% raw %}' && c == '{#'"),
    );
    let inj = desired(&s, Target::ControlPlane).unwrap();
    let peers = inj.file(BGP_PEERS_PATH).expect("peers file");
    assert!(
        peers.content.contains("{{ 7*7 }}"),
        "the test needs the braces in the file"
    );
    let markers = ["{{", "{%", "{#"];
    for f in &inj.files {
        let entry = serde_json::to_string(&f.to_json()).unwrap();
        for m in markers {
            assert!(!entry.contains(m), "{} carries {m}", f.path);
        }
        assert_eq!(f.to_json()["encoding"], "base64");
    }
    for c in inj
        .pre_kubeadm_commands
        .iter()
        .chain(&inj.post_kubeadm_commands)
    {
        for m in markers {
            assert!(!c.contains(m), "{c} carries {m}");
        }
    }
}

#[test]
fn every_file_is_base64_of_its_content() {
    use base64::Engine as _;
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    for f in &inj.files {
        let entry = f.to_json();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(entry["content"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, f.content.as_bytes(), "{}", f.path);
    }
}

#[test]
fn scripts_and_commands_fit_capi_limits() {
    for (name, s) in [("install", INSTALL_SCRIPT), ("apply", APPLY_SCRIPT)] {
        assert!(
            s.len() <= MAX_FILE_BYTES,
            "{name} has {} bytes; its base64 would not fit CAPI's {MAX_CONTENT_CHARS} characters",
            s.len()
        );
    }
    for (name, s) in [
        ("install", INSTALL_SCRIPT),
        ("apply", APPLY_SCRIPT),
        ("install cmd", INSTALL_COMMAND),
        ("apply cmd", APPLY_COMMAND),
    ] {
        assert!(
            s.chars().count() <= MAX_CONTENT_CHARS,
            "{name} has {} chars",
            s.chars().count()
        );
        assert!(!s.is_empty());
    }
    assert!(INSTALL_SCRIPT.starts_with("#!/bin/bash\n"));
    assert!(APPLY_SCRIPT.starts_with("#!/bin/bash\n"));
    assert!(INSTALL_SCRIPT.contains("\nset -eu\n"));
    assert!(APPLY_SCRIPT.contains("\nset -eu\n"));
    for s in [INSTALL_SCRIPT, APPLY_SCRIPT] {
        assert!(!s.contains("eval "), "scripts never eval");
        assert!(!s.contains("source "), "scripts never source");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Canonical YAML

#[test]
fn bgp_files_parse_back_to_the_validated_values() {
    let s = settings(true, true);
    let inj = desired(&s, Target::ControlPlane).unwrap();
    let peers_yaml = &inj.file(BGP_PEERS_PATH).unwrap().content;
    let docs: Vec<Value> = serde_saphyr::from_multiple(peers_yaml).unwrap();
    assert_eq!(docs.len(), s.route_reflectors.len());
    for (doc, p) in docs.iter().zip(&s.route_reflectors) {
        assert_eq!(doc["apiVersion"], "projectcalico.org/v3");
        assert_eq!(doc["kind"], "BGPPeer");
        assert_eq!(doc["metadata"], json!({"name": p.name}));
        assert_eq!(doc["spec"], Value::Object(p.spec.clone()));
        assert_eq!(doc.as_object().unwrap().len(), 4);
    }
    let conf: Vec<Value> =
        serde_saphyr::from_multiple(&inj.file(BGP_CONFIGURATION_PATH).unwrap().content).unwrap();
    assert_eq!(
        conf,
        vec![json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": false, "asNumber": 64512}
        })]
    );
}

#[test]
fn canonical_yaml_is_exact() {
    let p = peer(
        "rr-1",
        json!({"peerIP": "192.0.2.10", "asNumber": 64513, "nodeSelector": "", "filters": ["a", "b"],
               "password": {"secretKeyRef": {"name": "bgp", "key": "pw"}}}),
    );
    assert_eq!(
        render::peer_document(&p),
        "---\napiVersion: \"projectcalico.org/v3\"\nkind: \"BGPPeer\"\nmetadata:\n  name: \"rr-1\"\nspec:\n  \
         asNumber: 64513\n  filters:\n    - \"a\"\n    - \"b\"\n  nodeSelector: \"\"\n  password:\n    \
         secretKeyRef:\n      key: \"pw\"\n      name: \"bgp\"\n  peerIP: \"192.0.2.10\"\n"
    );
    // One line of JSON (calicoctl's patch takes JSON only; `create -f` reads it as YAML).
    assert_eq!(
        render::bgp_configuration(65000),
        "{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"BGPConfiguration\",\"metadata\":{\"name\":\"default\"},\
         \"spec\":{\"asNumber\":65000,\"nodeToNodeMeshEnabled\":false}}\n"
    );
}

/// Split a file the way calicoctl does: at every "\n---", dropping the rest of the marker line.
fn calicoctl_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("\n---") {
        chunks.push(rest[..i].to_string());
        let after = &rest[i + 4..];
        rest = match after.find('\n') {
            Some(j) => &after[j + 1..],
            None => "",
        };
    }
    if !rest.is_empty() {
        chunks.push(rest.to_string());
    }
    chunks
}

#[test]
fn every_calicoctl_chunk_is_one_resource() {
    let mut s = settings(true, true);
    s.route_reflectors.extend(many_peers(100));
    s.route_reflectors.push(peer(
        "tricky",
        json!({"peerSelector": "a == '\n---\nkind: x'", "asNumber": 1}),
    ));
    let inj = desired(&s, Target::ControlPlane).unwrap();
    let mut names = Vec::new();
    for f in inj.files.iter().filter(|f| f.path.ends_with(".yaml")) {
        let chunks = calicoctl_chunks(&f.content);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&f.content).unwrap();
        assert_eq!(chunks.len(), docs.len(), "{}", f.path);
        for (chunk, doc) in chunks.iter().zip(&docs) {
            let parsed: Value =
                serde_saphyr::from_str(chunk).unwrap_or_else(|e| panic!("{e}: {chunk}"));
            assert_eq!(&parsed, doc);
            assert!(
                parsed["kind"].is_string() && parsed["apiVersion"] == "projectcalico.org/v3",
                "{chunk}"
            );
            names.push(parsed["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    let mut want: Vec<String> = s.route_reflectors.iter().map(|p| p.name.clone()).collect();
    want.push("default".into());
    assert_eq!(names, want);
}

#[test]
fn awkward_strings_survive_the_yaml_round_trip() {
    let nasty = [
        "on",
        "no",
        "yes",
        "0755",
        "1e3",
        "null",
        "~",
        "",
        " lead",
        "trail ",
        "a: b",
        "- x",
        "#c",
        "'q'",
        "\"dq\"",
        "back\\slash",
        "new\nline",
        "tab\there",
        "\u{85}nel",
        "\u{2028}ls",
        "é",
        "日本",
        "😀",
        "{a}",
        "[b]",
        "*anchor",
        "&x",
        "!tag",
        "%dir",
        "@at",
        "`tick`",
        "$(id)",
        "a\r\nb",
        "\u{7f}",
        "\u{1}",
    ];
    for (i, s) in nasty.iter().enumerate() {
        let p = peer(
            "p",
            json!({"nodeSelector": s, "list": [s, {"k": s}], "nested": {"x": [[s]]}, "n": i, "b": true, "z": null}),
        );
        let text = render::peer_document(&p);
        assert!(text.is_ascii(), "{text}");
        let back: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{s:?}: {e}\n{text}"));
        assert_eq!(
            back[0]["spec"],
            Value::Object(p.spec.clone()),
            "{s:?}\n{text}"
        );
    }
}

#[test]
fn awkward_keys_are_quoted() {
    let p = peer(
        "p",
        json!({"on": 1, "y": 2, "a b": 3, "Off": 4, "ok-key.x": 5}),
    );
    let text = render::peer_document(&p);
    assert!(
        text.contains("\"on\": 1") && text.contains("\"y\": 2") && text.contains("\"Off\": 4"),
        "{text}"
    );
    assert!(text.contains("ok-key.x: 5"));
    let back: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(back[0]["spec"], Value::Object(p.spec));
}

fn many_peers(n: usize) -> Vec<BgpPeer> {
    (0..n)
        .map(|i| {
            peer(
                &format!("rr-{i:03}"),
                json!({
                    "peerSelector": format!("rack == 'r{i}' && role == 'route-reflector' && zone in {{'a', 'b', 'c'}}"),
                    "nodeSelector": format!("!has(route-reflector) && rack == 'r{i}'"),
                    "asNumber": 64513
                }),
            )
        })
        .collect()
}

#[test]
fn large_peer_sets_are_split_in_order() {
    let mut s = settings(true, true);
    s.route_reflectors = many_peers(120);
    let inj = desired(&s, Target::ControlPlane).unwrap();
    let peer_files: Vec<&InjectedFile> = inj
        .files
        .iter()
        .filter(|f| f.path.contains("bgppeers"))
        .collect();
    assert!(
        peer_files.len() >= 3,
        "expected a split, got {}",
        peer_files.len()
    );
    let mut all = Vec::new();
    for (i, f) in peer_files.iter().enumerate() {
        assert_eq!(f.path, peers_path(i + 1));
        assert!(f.content.len() <= MAX_FILE_BYTES);
        assert!(f.encoded_content().len() <= MAX_CONTENT_CHARS);
        assert_eq!(f.permissions, "0600");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&f.content).unwrap();
        all.extend(docs);
    }
    let names: Vec<&str> = all
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    let want: Vec<String> = s.route_reflectors.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, want);
    // File order: peers 1..n, then configuration, then the script and its unit (apply-bgp.sh reads peers first).
    let paths: Vec<&str> = inj.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths[2], BGP_PEERS_PATH);
    assert_eq!(paths[3], "/etc/capi-calico/bgppeers-2.yaml");
    assert_eq!(
        &paths[paths.len() - 3..],
        &[BGP_CONFIGURATION_PATH, APPLY_SCRIPT_PATH, APPLY_UNIT_PATH]
    );
    // And it still patches cleanly.
    roundtrip(&fixture("kcp-v1beta2.json"), Target::ControlPlane, &inj);
}

/// A second peers file after a settings change goes right after the first, as in a fresh injection, not after our
/// other files: Cluster API's topology controller compares its dry run of the stored object (patched by us) with
/// one of the template (injected afresh) and rolls the machines on any difference. User entries stay where they are.
#[test]
fn a_new_peers_file_is_placed_in_injection_order() {
    let one = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let mut s = settings(true, true);
    s.route_reflectors = many_peers(120);
    let more = desired(&s, Target::ControlPlane).unwrap();
    let base = fixture("kcp-v1beta2.json");
    let stored = apply(&base, &patch(&base, Target::ControlPlane, &one).unwrap()).unwrap();
    let updated = apply(
        &stored,
        &patch(&stored, Target::ControlPlane, &more).unwrap(),
    )
    .unwrap();
    let fresh = apply(&base, &patch(&base, Target::ControlPlane, &more).unwrap()).unwrap();
    let files = |o: &Value| o["spec"]["kubeadmConfigSpec"]["files"].clone();
    assert_eq!(files(&updated), files(&fresh));
    // Idempotent from there, and a user file added after ours stays after them.
    assert!(
        patch(&updated, Target::ControlPlane, &more)
            .unwrap()
            .is_empty()
    );
    let mut with_user = stored.clone();
    with_user["spec"]["kubeadmConfigSpec"]["files"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "/etc/user-late.conf", "content": "x"}));
    let updated = apply(
        &with_user,
        &patch(&with_user, Target::ControlPlane, &more).unwrap(),
    )
    .unwrap();
    let paths: Vec<String> = files(&updated)
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths.last().map(String::as_str),
        Some("/etc/user-late.conf")
    );
    let ours: Vec<&str> = paths
        .iter()
        .map(String::as_str)
        .filter(|p| p.starts_with(DIR))
        .collect();
    let want: Vec<&str> = more.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(ours, want);
}

#[test]
fn a_single_huge_peer_is_refused() {
    let mut s = settings(true, true);
    s.route_reflectors = vec![peer(
        "huge",
        json!({"peerSelector": "x".repeat(MAX_CONTENT_CHARS)}),
    )];
    let err = desired(&s, Target::ControlPlane).unwrap_err();
    assert!(matches!(err, MutationError::TooLarge(_)));
    assert!(err.to_string().contains("huge"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// patch() on fixtures

const FIXTURES: &[(&str, Target)] = &[
    ("kcp-v1beta1.json", Target::ControlPlane),
    ("kcp-v1beta2.json", Target::ControlPlane),
    (
        "kcp-v1beta2-no-kubeadmconfigspec.json",
        Target::ControlPlane,
    ),
    ("kct-v1beta1.json", Target::Workers),
    ("kct-v1beta2.json", Target::Workers),
    ("kct-v1beta2-no-spec.json", Target::Workers),
];

#[test]
fn fixtures_roundtrip_for_every_settings_variant() {
    let variants = [
        settings(true, false),
        settings(true, true),
        settings(false, false),
    ];
    for (name, target) in FIXTURES {
        let before = fixture(name);
        for s in &variants {
            let inj = desired(s, *target).unwrap();
            let after = roundtrip(&before, *target, &inj);
            if inj.is_empty() {
                assert_eq!(
                    after, before,
                    "{name}: empty injection must not change a clean object"
                );
                assert!(patch(&before, *target, &inj).unwrap().is_empty());
            }
            // Switching settings on an injected object: only the difference is patched, still idempotent.
            for s2 in &variants {
                let inj2 = desired(s2, *target).unwrap();
                let after2 = roundtrip(&after, *target, &inj2);
                // Going back to the original settings gives the same object as a direct injection.
                let back = roundtrip(&after2, *target, &inj);
                assert_eq!(back, after, "{name}: switching settings back is not stable");
            }
        }
    }
}

#[test]
fn workers_never_get_bgp() {
    for (name, target) in FIXTURES.iter().filter(|(_, t)| *t == Target::Workers) {
        let inj = desired(&settings(true, true), *target).unwrap();
        let after = roundtrip(&fixture(name), *target, &inj);
        let text = after.to_string();
        assert!(!text.contains("bgp"), "{name}: {text}");
        assert!(!text.contains("apply-bgp"), "{name}");
    }
}

#[test]
fn minimal_ops_append_after_user_entries_and_put_our_post_command_first() {
    let before = fixture("kcp-v1beta1.json");
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let ops = patch(&before, Target::ControlPlane, &inj).unwrap();
    let files = "add /spec/kubeadmConfigSpec/files/-".to_string();
    assert_eq!(
        op_paths(&ops),
        vec![
            files.clone(),
            files.clone(),
            files.clone(),
            files.clone(),
            files.clone(),
            files,
            "add /spec/kubeadmConfigSpec/preKubeadmCommands/-".into(),
            "replace /spec/kubeadmConfigSpec/postKubeadmCommands".into(),
        ]
    );
    let after = apply(&before, &ops).unwrap();
    let pre = list_of(&after, Target::ControlPlane, "preKubeadmCommands");
    assert_eq!(pre.len(), 4);
    assert_eq!(
        pre[3], INSTALL_COMMAND,
        "our pre command runs after the user's (and after the drop-in loop)"
    );
    // Our post command runs first (under Ignition's `set -e` a failing user command would stop it).
    let post = list_of(&after, Target::ControlPlane, "postKubeadmCommands");
    assert_eq!(
        post,
        vec![
            json!(APPLY_COMMAND),
            json!("echo control plane ready > /var/log/cp-ready")
        ]
    );
}

#[test]
fn missing_lists_and_parents_are_created_in_one_add() {
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    let ops = patch(&fixture("kct-v1beta2-no-spec.json"), Target::Workers, &inj).unwrap();
    assert_eq!(op_paths(&ops), vec!["add /spec"]);
    let after = apply(&fixture("kct-v1beta2-no-spec.json"), &ops).unwrap();
    assert_eq!(
        after["spec"],
        json!({"template": {"spec": {
            "files": inj.files.iter().map(InjectedFile::to_json).collect::<Vec<_>>(),
            "preKubeadmCommands": [INSTALL_COMMAND]
        }}})
    );

    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let ops = patch(
        &fixture("kcp-v1beta2-no-kubeadmconfigspec.json"),
        Target::ControlPlane,
        &inj,
    )
    .unwrap();
    assert_eq!(op_paths(&ops), vec!["add /spec/kubeadmConfigSpec"]);

    let ops = patch(&fixture("kcp-v1beta2.json"), Target::ControlPlane, &inj).unwrap();
    assert_eq!(
        op_paths(&ops),
        vec![
            "add /spec/kubeadmConfigSpec/files",
            "add /spec/kubeadmConfigSpec/preKubeadmCommands",
            "add /spec/kubeadmConfigSpec/postKubeadmCommands"
        ]
    );

    // A KCT whose spec exists but has no template.
    let obj = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "KubeadmConfigTemplate",
                     "metadata": {"name": "x"}, "spec": {}});
    let ops = patch(&obj, Target::Workers, &inj).unwrap();
    assert_eq!(op_paths(&ops), vec!["add /spec/template"]);
    roundtrip(&obj, Target::Workers, &inj);
    // `spec: null` counts as missing.
    let obj = json!({"kind": "KubeadmConfigTemplate", "spec": null});
    roundtrip(&obj, Target::Workers, &inj);
}

#[test]
fn nothing_to_inject_on_a_clean_object_is_no_patch() {
    let inj = Injection::default();
    for (name, target) in FIXTURES {
        assert!(
            patch(&fixture(name), *target, &inj).unwrap().is_empty(),
            "{name}"
        );
        assert!(verify(&fixture(name), *target, &inj).is_empty(), "{name}");
    }
}

#[test]
fn emptied_parents_are_removed_not_left_empty() {
    // KCT without spec: inject, then disable -> the object is exactly as before (no `spec: {}` left behind).
    let before = fixture("kct-v1beta2-no-spec.json");
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    let injected = roundtrip(&before, Target::Workers, &inj);
    let ops = patch(&injected, Target::Workers, &Injection::default()).unwrap();
    assert_eq!(op_paths(&ops), vec!["remove /spec"]);
    assert_eq!(apply(&injected, &ops).unwrap(), before);

    // v1beta2 KCP with no kubeadmConfigSpec: same, the spec level is removed.
    let before = fixture("kcp-v1beta2-no-kubeadmconfigspec.json");
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let injected = roundtrip(&before, Target::ControlPlane, &inj);
    let ops = patch(&injected, Target::ControlPlane, &Injection::default()).unwrap();
    assert_eq!(op_paths(&ops), vec!["remove /spec/kubeadmConfigSpec"]);

    // v1beta1 KCP: kubeadmConfigSpec is required there, so it stays as `{}` (allowed in v1beta1).
    let mut v1 = before.clone();
    v1["apiVersion"] = json!("controlplane.cluster.x-k8s.io/v1beta1");
    let injected = roundtrip(&v1, Target::ControlPlane, &inj);
    let after = apply(
        &injected,
        &patch(&injected, Target::ControlPlane, &Injection::default()).unwrap(),
    )
    .unwrap();
    assert_eq!(after["spec"]["kubeadmConfigSpec"], json!({}));

    // A list holding only our entries is removed, not emptied.
    let before = fixture("kcp-v1beta2.json");
    let injected = roundtrip(&before, Target::ControlPlane, &inj);
    let after = roundtrip(&injected, Target::ControlPlane, &Injection::default());
    assert_eq!(after, before);
}

#[test]
fn stale_entries_are_removed_and_user_entries_kept() {
    let before = fixture("kcp-v1beta1.json");
    let full = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let injected = roundtrip(&before, Target::ControlPlane, &full);
    let install_only = desired(&settings(true, false), Target::ControlPlane).unwrap();
    let ops = patch(&injected, Target::ControlPlane, &install_only).unwrap();
    // Four BGP files (indices 4 to 7 after two user + two install files) and the post command, removed from the end.
    assert_eq!(
        op_paths(&ops),
        vec![
            "remove /spec/kubeadmConfigSpec/files/7",
            "remove /spec/kubeadmConfigSpec/files/6",
            "remove /spec/kubeadmConfigSpec/files/5",
            "remove /spec/kubeadmConfigSpec/files/4",
            "remove /spec/kubeadmConfigSpec/postKubeadmCommands/0",
        ]
    );
    let after = roundtrip(&injected, Target::ControlPlane, &install_only);
    assert_eq!(
        list_of(&after, Target::ControlPlane, "postKubeadmCommands"),
        vec![json!("echo control plane ready > /var/log/cp-ready")]
    );
    // Unknown files of ours (e.g. from a future version or an old split) are stale too.
    let mut obj = after.clone();
    obj["spec"]["kubeadmConfigSpec"]["files"]
        .as_array_mut()
        .unwrap()
        .insert(
            1,
            json!({"path": "/etc/capi-calico/bgppeers-7.yaml", "content": "x"}),
        );
    let problems = verify(&obj, Target::ControlPlane, &install_only);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("unexpected /etc/capi-calico/bgppeers-7.yaml"),
        "{problems:?}"
    );
    let ops = patch(&obj, Target::ControlPlane, &install_only).unwrap();
    assert_eq!(
        op_paths(&ops),
        vec!["remove /spec/kubeadmConfigSpec/files/1"]
    );
    assert_eq!(apply(&obj, &ops).unwrap(), after);
}

#[test]
fn altered_entries_are_replaced_in_place() {
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let mut obj = fixture("kcp-v1beta1.json");
    let spec = &mut obj["spec"]["kubeadmConfigSpec"];
    // Our install script placed first (before user files), with changed content and an extra field.
    spec["files"].as_array_mut().unwrap().insert(
        0,
        json!({"path": INSTALL_SCRIPT_PATH, "owner": "root:root", "permissions": "0777", "content": "echo hacked", "append": true}),
    );
    // Our pre command in the middle of the user's commands.
    spec["preKubeadmCommands"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!(INSTALL_COMMAND));
    // The post command of an earlier release, then ours duplicated around a user command.
    spec["postKubeadmCommands"] = json!([
        patch::RETIRED_COMMANDS[0],
        APPLY_COMMAND,
        "echo user",
        APPLY_COMMAND
    ]);

    let problems = verify(&obj, Target::ControlPlane, &inj);
    let text = problems.join("\n");
    assert!(
        text.contains(
            "/etc/capi-calico/install-calicoctl.sh was altered (append, content, encoding, permissions differ"
        ),
        "{text}"
    );
    assert!(text.contains("appears 2 times"), "{text}");
    assert!(
        text.contains("unexpected command of capi-calico-webhook: `if command -v systemd-run"),
        "{text}"
    );
    assert!(
        text.contains("/etc/capi-calico/calicoctl.conf is missing"),
        "{text}"
    );

    let ops = patch(&obj, Target::ControlPlane, &inj).unwrap();
    let after = apply(&obj, &ops).unwrap();
    let spec = &after["spec"]["kubeadmConfigSpec"];
    assert_eq!(spec["files"][0], inj.files[0].to_json(), "kept at index 0");
    assert_eq!(
        spec["preKubeadmCommands"][1], INSTALL_COMMAND,
        "kept at index 1"
    );
    assert_eq!(spec["preKubeadmCommands"].as_array().unwrap().len(), 4);
    assert_eq!(
        spec["postKubeadmCommands"],
        json!([APPLY_COMMAND, "echo user"])
    );
    roundtrip(&obj, Target::ControlPlane, &inj);

    // The retired command alone is rewritten in place, before the user's command.
    let mut obj = fixture("kcp-v1beta1.json");
    obj["spec"]["kubeadmConfigSpec"]["postKubeadmCommands"] =
        json!([patch::RETIRED_COMMANDS[0], "echo user"]);
    let after = apply(&obj, &patch(&obj, Target::ControlPlane, &inj).unwrap()).unwrap();
    assert_eq!(
        after["spec"]["kubeadmConfigSpec"]["postKubeadmCommands"],
        json!([APPLY_COMMAND, "echo user"])
    );
}

/// An object injected by the previous release (d645e1e: a transient unit started by systemd-run, the BGP
/// configuration applied whole) is upgraded in place: the retired post command becomes the current one at the same
/// index, the unit file is added, the scripts replaced, nothing is duplicated, and the upgraded object needs no
/// further patch. Every retired command is upgraded the same way.
#[test]
fn an_object_injected_by_the_previous_release_is_upgraded_in_place() {
    let old = fixture("kcp-injected-before-the-apply-unit.json");
    for retired in patch::RETIRED_COMMANDS {
        let mut other = fixture("kcp-v1beta1.json");
        other["spec"]["kubeadmConfigSpec"]["postKubeadmCommands"] = json!([retired, "echo user"]);
        let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
        let upgraded = roundtrip(&other, Target::ControlPlane, &inj);
        assert_eq!(
            upgraded["spec"]["kubeadmConfigSpec"]["postKubeadmCommands"],
            json!([APPLY_COMMAND, "echo user"])
        );
    }
    let annotations = crate::cluster::string_map(old.pointer("/metadata/annotations"));
    let crate::settings::Resolution::OptedIn { settings, .. } =
        crate::settings::resolve(&annotations, None)
    else {
        panic!("the fixture's own settings resolve");
    };
    let inj = desired(&settings, Target::ControlPlane).unwrap();
    let post_before = old["spec"]["kubeadmConfigSpec"]["postKubeadmCommands"].clone();
    assert!(
        post_before.as_array().unwrap().iter().any(|c| {
            c.as_str()
                .is_some_and(|c| patch::RETIRED_COMMANDS.contains(&c))
        }),
        "the fixture holds a retired command"
    );
    let upgraded = roundtrip(&old, Target::ControlPlane, &inj);
    let spec = &upgraded["spec"]["kubeadmConfigSpec"];
    let post = spec["postKubeadmCommands"].as_array().unwrap();
    assert_eq!(post.len(), post_before.as_array().unwrap().len());
    // Rewritten, and first (where this release puts it), the user's commands in their order after it.
    assert_eq!(post[0], APPLY_COMMAND);
    let users = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .filter(|c| c.as_str().is_some_and(|c| !is_ours_command(c)))
            .cloned()
            .collect()
    };
    assert_eq!(users(&post[1..]), users(post_before.as_array().unwrap()));
    // Its pre command, without `|| true`, is rewritten where it was too.
    let pre_before = old["spec"]["kubeadmConfigSpec"]["preKubeadmCommands"].clone();
    let install_at = pre_before
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == "/bin/bash /etc/capi-calico/install-calicoctl.sh")
        .expect("the fixture holds the previous install command");
    let pre = spec["preKubeadmCommands"].as_array().unwrap();
    assert_eq!(pre.len(), pre_before.as_array().unwrap().len());
    assert_eq!(pre[install_at], INSTALL_COMMAND);
    let paths: Vec<&str> = spec["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(
        paths.iter().filter(|p| **p == APPLY_UNIT_PATH).count(),
        1,
        "{paths:?}"
    );
    assert!(verify(&upgraded, Target::ControlPlane, &inj).is_empty());
}

/// The directory is reserved, and a user entry in it is refused with a message naming it: never taken over, never
/// dropped. Commands are ours only when they are exactly one of ours.
#[test]
fn user_entries_in_the_reserved_directory_are_refused_not_taken_over() {
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let cases: [(&str, Value, &str); 4] = [
        (
            "preKubeadmCommands",
            json!("grep -q proxy /etc/capi-calico/../environment && setup-proxy.sh"),
            "preKubeadmCommands: the command `grep -q proxy /etc/capi-calico/../environment && setup-proxy.sh` \
             mentions /etc/capi-calico/",
        ),
        (
            "postKubeadmCommands",
            json!("/etc/capi-calico/apply-bgp.sh &"),
            "postKubeadmCommands: the command `/etc/capi-calico/apply-bgp.sh &` mentions /etc/capi-calico/",
        ),
        (
            "files",
            json!({"path": "/etc/capi-calico/my-notes.txt", "content": "x"}),
            "file \"/etc/capi-calico/my-notes.txt\" is in /etc/capi-calico/, which capi-calico-webhook reserves",
        ),
        (
            "files",
            json!({"path": "/etc/capi-calico/bgppeers-01.yaml", "content": "x"}),
            "file \"/etc/capi-calico/bgppeers-01.yaml\" is in /etc/capi-calico/",
        ),
    ];
    for (field, entry, message) in cases.clone() {
        let mut obj = fixture("kcp-v1beta1.json");
        let list = obj["spec"]["kubeadmConfigSpec"][field]
            .as_array_mut()
            .expect("the fixture has the list");
        list.insert(0, entry.clone());
        match patch(&obj, Target::ControlPlane, &inj) {
            Err(MutationError::Conflict(m)) => {
                assert_eq!(m.len(), 1, "{m:?}");
                assert!(m[0].contains(message), "{m:?}");
            }
            other => panic!("{entry}: expected a conflict, got {other:?}"),
        }
        let problems = verify(&obj, Target::ControlPlane, &inj).join("\n");
        assert!(problems.contains(message), "{problems}");
    }
    // Every conflict of the three lists is named at once, in list order.
    let mut obj = fixture("kcp-v1beta1.json");
    let spec = &mut obj["spec"]["kubeadmConfigSpec"];
    for (field, entry, _) in &cases {
        spec[field]
            .as_array_mut()
            .expect("list")
            .push(entry.clone());
    }
    match patch(&obj, Target::ControlPlane, &inj) {
        Err(e @ MutationError::Conflict(_)) => {
            let MutationError::Conflict(all) = &e else {
                unreachable!()
            };
            assert_eq!(all.len(), cases.len(), "{all:?}");
            assert!(
                e.to_string().starts_with(&format!(
                    "{} conflicts with existing entries: ",
                    cases.len()
                )),
                "{e}"
            );
            for (_, _, message) in &cases {
                assert!(
                    all.iter().any(|m| m.contains(message)),
                    "{message}: {all:?}"
                );
            }
        }
        other => panic!("expected conflicts, got {other:?}"),
    }
    // Named up to 25, the rest counted.
    let mut obj = fixture("kcp-v1beta1.json");
    obj["spec"]["kubeadmConfigSpec"]["preKubeadmCommands"] = json!(
        (0..30)
            .map(|i| format!("cat /etc/capi-calico/x{i}"))
            .collect::<Vec<_>>()
    );
    let text = patch(&obj, Target::ControlPlane, &inj)
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("30 conflicts with existing entries: "),
        "{text}"
    );
    assert!(
        text.ends_with("; and 5 more") && text.contains("x24") && !text.contains("x25"),
        "{text}"
    );
    for (path, ours) in [
        ("/etc/capi-calico/bgppeers-2.yaml", true),
        ("/etc/capi-calico/bgppeers-50.yaml", true),
        ("/etc/capi-calico/bgppeers-1.yaml", false),
        ("/etc/capi-calico/bgppeers-02.yaml", false),
        ("/etc/capi-calico/bgppeers-.yaml", false),
        ("/etc/capi-calico/bgppeers-2.yml", false),
        ("/etc/capi-calico/bgppeers-2x.yaml", false),
        ("/etc/capi-calico/bgppeers-99999.yaml", false),
        ("/etc/other/bgppeers-2.yaml", false),
    ] {
        assert_eq!(is_ours_path(path), ours, "{path}");
    }
    assert!(!is_ours_command(&format!("{INSTALL_COMMAND} ")));
    assert!(is_ours_command(patch::RETIRED_COMMANDS[0]));
}

#[test]
fn our_commands_in_the_wrong_list_are_moved() {
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    let mut obj = fixture("kct-v1beta2.json");
    obj["spec"]["template"]["spec"]["postKubeadmCommands"] =
        json!(["echo worker joined", INSTALL_COMMAND]);
    let after = roundtrip(&obj, Target::Workers, &inj);
    assert_eq!(
        after["spec"]["template"]["spec"]["postKubeadmCommands"],
        json!(["echo worker joined"])
    );
    assert_eq!(
        after["spec"]["template"]["spec"]["preKubeadmCommands"],
        json!(["sysctl --system", INSTALL_COMMAND])
    );
}

#[test]
fn duplicates_of_ours_collapse_to_the_first() {
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    let mut obj = fixture("kct-v1beta2.json");
    let spec = &mut obj["spec"]["template"]["spec"];
    let f0 = inj.files[0].to_json();
    let f1 = inj.files[1].to_json();
    spec["files"] = json!([f0, {"path": "/etc/a", "content": "a"}, f0, f1, f1]);
    spec["preKubeadmCommands"] = json!([INSTALL_COMMAND, "sysctl --system", INSTALL_COMMAND]);
    let ops = patch(&obj, Target::Workers, &inj).unwrap();
    assert_eq!(
        op_paths(&ops),
        vec![
            "remove /spec/template/spec/files/4",
            "remove /spec/template/spec/files/2",
            "remove /spec/template/spec/preKubeadmCommands/2"
        ]
    );
    let after = roundtrip(&obj, Target::Workers, &inj);
    assert_eq!(
        after["spec"]["template"]["spec"]["files"],
        json!([f0, {"path": "/etc/a", "content": "a"}, f1])
    );
}

#[test]
fn reserved_paths_and_collisions() {
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    // A user file at one of our paths with other content is ours to replace (the directory is reserved).
    let mut obj = fixture("kct-v1beta2.json");
    obj["spec"]["template"]["spec"]["files"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": CALICOCTL_CONF_PATH, "content": "version=v0.0.1"}));
    let after = roundtrip(&obj, Target::Workers, &inj);
    // Replaced, and the missing installer goes before it, in injection order (as a fresh injection has them).
    assert_eq!(
        after["spec"]["template"]["spec"]["files"][1],
        inj.files[0].to_json()
    );
    assert_eq!(
        after["spec"]["template"]["spec"]["files"][2],
        inj.files[1].to_json()
    );

    // Paths that alias into the directory are refused rather than guessed at.
    for path in [
        "/etc//capi-calico/calicoctl.conf",
        "/etc/./capi-calico/x",
        "/etc/capi-calico",
        "/tmp/../etc/capi-calico/y",
    ] {
        let mut obj = fixture("kct-v1beta2.json");
        obj["spec"]["template"]["spec"]["files"]
            .as_array_mut()
            .unwrap()
            .push(json!({"path": path, "content": "x"}));
        let err = patch(&obj, Target::Workers, &inj).unwrap_err();
        assert!(matches!(err, MutationError::Conflict(_)), "{path}: {err}");
        assert!(err.to_string().contains(path), "{err}");
        assert!(!verify(&obj, Target::Workers, &inj).is_empty());
    }
    // A user calicoctl binary collides with the installer only when INSTALL_CALICOCTL is on, at either place the
    // installer may put it.
    for path in [CALICOCTL_BINARY_PATH, CALICOCTL_FALLBACK_PATH] {
        let mut obj = fixture("kct-v1beta2.json");
        obj["spec"]["template"]["spec"]["files"]
            .as_array_mut()
            .unwrap()
            .push(json!({"path": path, "contentFrom": {"secret": {"name": "s", "key": "k"}}}));
        let err = patch(&obj, Target::Workers, &inj).unwrap_err();
        assert!(err.to_string().contains("INSTALL_CALICOCTL"), "{err}");
        assert!(err.to_string().contains(path), "{err}");
        assert!(
            patch(&obj, Target::Workers, &Injection::default())
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn limits_are_enforced() {
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    let with = |files: usize, pre: usize| {
        let mut obj = fixture("kct-v1beta2-no-spec.json");
        let mut spec = Map::new();
        if files > 0 {
            spec.insert(
                "files".into(),
                Value::Array(
                    (0..files)
                        .map(|i| json!({"path": format!("/etc/u/{i}"), "content": "x"}))
                        .collect(),
                ),
            );
        }
        if pre > 0 {
            spec.insert(
                "preKubeadmCommands".into(),
                Value::Array((0..pre).map(|i| json!(format!("echo {i}"))).collect()),
            );
        }
        obj["spec"] = json!({"template": {"spec": spec}});
        obj
    };
    roundtrip(&with(198, 999), Target::Workers, &inj);
    let err = patch(&with(199, 1), Target::Workers, &inj).unwrap_err();
    assert!(matches!(err, MutationError::TooLarge(_)));
    assert!(
        err.to_string()
            .contains("spec.template.spec.files would have 201 entries"),
        "{err}"
    );
    let err = patch(&with(1, 1000), Target::Workers, &inj).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.template.spec.preKubeadmCommands would have 1001 entries"),
        "{err}"
    );
    // Replacing our own entries in a full list is fine (no growth).
    let mut full = with(198, 999);
    let injected = roundtrip(&full, Target::Workers, &inj);
    full = injected.clone();
    full["spec"]["template"]["spec"]["files"][198]["content"] = json!("altered");
    roundtrip(&full, Target::Workers, &inj);

    // Too many peer files for the remaining room.
    let mut s = settings(true, true);
    s.route_reflectors = many_peers(120);
    let inj = desired(&s, Target::ControlPlane).unwrap();
    let mut obj = fixture("kcp-v1beta2.json");
    obj["spec"]["kubeadmConfigSpec"]["files"] = Value::Array(
        (0..195)
            .map(|i| json!({"path": format!("/etc/u/{i}"), "content": "x"}))
            .collect(),
    );
    assert!(matches!(
        patch(&obj, Target::ControlPlane, &inj),
        Err(MutationError::TooLarge(_))
    ));
}

#[test]
fn malformed_objects_are_errors() {
    let inj = desired(&settings(true, false), Target::Workers).unwrap();
    for obj in [
        json!("string"),
        json!({"spec": "x"}),
        json!({"spec": {"template": []}}),
        json!({"spec": {"template": {"spec": {"files": {"path": "/x"}}}}}),
        json!({"spec": {"template": {"spec": {"preKubeadmCommands": "echo"}}}}),
    ] {
        assert!(
            matches!(
                patch(&obj, Target::Workers, &inj),
                Err(MutationError::Malformed(_))
            ),
            "{obj}"
        );
        assert!(!verify(&obj, Target::Workers, &inj).is_empty(), "{obj}");
    }
    // Entries we cannot recognise are the user's and are kept.
    let obj = json!({"spec": {"template": {"spec": {"files": [42, {"content": "no path"}], "preKubeadmCommands": [7]}}}});
    let after = roundtrip(&obj, Target::Workers, &inj);
    assert_eq!(after["spec"]["template"]["spec"]["files"][0], 42);
    assert_eq!(
        after["spec"]["template"]["spec"]["preKubeadmCommands"][0],
        7
    );
}

#[test]
fn verify_reports_missing_entries() {
    let inj = desired(&settings(true, true), Target::ControlPlane).unwrap();
    let problems = verify(&fixture("kcp-v1beta2.json"), Target::ControlPlane, &inj);
    assert_eq!(problems.len(), inj.files.len() + 2, "{problems:?}");
    assert!(problems.contains(
        &"spec.kubeadmConfigSpec.files: /etc/capi-calico/apply-bgp.sh is missing".to_string()
    ));
    assert!(problems.iter().any(|p| {
        p.starts_with("spec.kubeadmConfigSpec.postKubeadmCommands: the command `if command")
    }));
}

#[test]
fn apply_reports_bad_patches() {
    let op = PatchOperation::Remove(json_patch::RemoveOperation {
        path: json_patch::jsonptr::PointerBuf::parse("/nope").unwrap(),
    });
    assert!(matches!(
        apply(&json!({}), &[op]),
        Err(MutationError::Apply(_))
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// The shared CAPI examples (when present)

fn substitute_placeholders(text: &str) -> String {
    // clusterctl `${VAR}` / `${VAR:-default}` / `${VAR:=default}` placeholders -> a plain token.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str("placeholder");
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn shared_capi_examples_roundtrip() {
    let dir = std::env::var_os("CAPI_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/capi-examples")
        });
    if !dir.is_dir() {
        eprintln!(
            "NOTICE: {} not found; the shared CAPI example fixtures were not exercised",
            dir.display()
        );
        return;
    }
    let mut seen = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = substitute_placeholders(&std::fs::read_to_string(&p).unwrap());
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for doc in docs {
                let target = match doc.get("kind").and_then(Value::as_str) {
                    Some("KubeadmControlPlane") => Target::ControlPlane,
                    Some("KubeadmConfigTemplate") => Target::Workers,
                    _ => continue,
                };
                for s in [settings(true, true), settings(true, false)] {
                    let inj = desired(&s, target).unwrap();
                    let after = roundtrip(&doc, target, &inj);
                    let back = roundtrip(&after, target, &Injection::default());
                    let mut a = back.clone();
                    let mut b = doc.clone();
                    prune_empty(&mut a);
                    prune_empty(&mut b);
                    assert_eq!(a, b, "{}", p.display());
                }
                seen.push(format!("{}:{}", p.display(), doc["metadata"]["name"]));
            }
        }
    }
    assert!(
        seen.len() >= 4,
        "expected KCPs and KCTs in the shared examples, saw {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Property tests

mod props {
    use proptest::prelude::*;

    use super::*;

    fn command() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "[a-z ]{1,12}".prop_map(|s| json!(format!("echo {s}"))),
            1 => Just(json!(INSTALL_COMMAND)),
            1 => Just(json!(APPLY_COMMAND)),
            1 => Just(json!(patch::RETIRED_COMMANDS[0])),
        ]
    }

    fn file() -> impl Strategy<Value = Value> {
        let s = settings(true, true);
        let ours: Vec<Value> = desired(&s, Target::ControlPlane)
            .unwrap()
            .files
            .iter()
            .map(InjectedFile::to_json)
            .collect();
        prop_oneof![
            4 => "[a-z]{1,8}".prop_map(|s| json!({"path": format!("/etc/user/{s}"), "content": s})),
            2 => proptest::sample::select(ours),
            1 => (2u32..9).prop_map(|n| json!({"path": format!("/etc/capi-calico/bgppeers-{n}.yaml"), "content": "stale"})),
        ]
    }

    fn object() -> impl Strategy<Value = Value> {
        (
            proptest::option::of(proptest::collection::vec(file(), 0..8)),
            proptest::option::of(proptest::collection::vec(command(), 0..8)),
            proptest::option::of(proptest::collection::vec(command(), 0..8)),
        )
            .prop_map(|(files, pre, post)| {
                let mut spec = Map::new();
                spec.insert("users".into(), json!([{"name": "u"}]));
                if let Some(f) = files {
                    spec.insert("files".into(), Value::Array(f));
                }
                if let Some(p) = pre {
                    spec.insert("preKubeadmCommands".into(), Value::Array(p));
                }
                if let Some(p) = post {
                    spec.insert("postKubeadmCommands".into(), Value::Array(p));
                }
                json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                       "spec": {"version": "v1.34.0", "kubeadmConfigSpec": spec}})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

        #[test]
        fn patch_is_idempotent_and_keeps_user_entries(obj in object(), variant in 0usize..3) {
            let s = [settings(true, true), settings(true, false), settings(false, false)][variant].clone();
            let inj = desired(&s, Target::ControlPlane).unwrap();
            let ops = patch(&obj, Target::ControlPlane, &inj).unwrap();
            let problems = verify(&obj, Target::ControlPlane, &inj);
            prop_assert_eq!(ops.is_empty(), problems.is_empty(), "ops {:?} problems {:?}", ops, problems);
            roundtrip(&obj, Target::ControlPlane, &inj);
        }

        #[test]
        fn yaml_round_trips_arbitrary_strings(s in any::<String>(), k in "[a-zA-Z][a-zA-Z0-9]{0,10}") {
            let p = peer("p", json!({ k: s, "list": [s] }));
            let text = render::peer_document(&p);
            let back: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
            prop_assert_eq!(&back[0]["spec"], &Value::Object(p.spec.clone()));
        }
    }
}

#[test]
fn matches_agrees_with_comparing_the_json() {
    let file = InjectedFile::new(
        "/etc/capi-calico/calicoctl.conf",
        "root:root",
        "0644",
        "a\nb".into(),
    );
    let exact = file.to_json();
    let mut cases = vec![
        exact.clone(),
        json!(null),
        json!("text"),
        json!([exact.clone()]),
    ];
    for key in ["path", "owner", "permissions", "encoding", "content"] {
        let mut changed = exact.clone();
        changed[key] = json!("other");
        cases.push(changed);
        let mut not_text = exact.clone();
        not_text[key] = json!(7);
        cases.push(not_text);
        let mut missing = exact.clone();
        missing.as_object_mut().expect("object").remove(key);
        cases.push(missing);
    }
    let mut extra = exact.clone();
    extra["append"] = json!(true);
    cases.push(extra);
    let mut plain = exact.clone();
    plain["content"] = json!("a\nb");
    cases.push(plain);
    let mut reordered = serde_json::Map::new();
    for key in ["content", "encoding", "permissions", "owner", "path"] {
        reordered.insert(key.into(), exact[key].clone());
    }
    cases.push(Value::Object(reordered));
    for case in &cases {
        assert_eq!(file.matches(case), *case == exact, "{case}");
    }
}
