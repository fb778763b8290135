//! Cluster API's kubeadm bootstrap writes `files` and the kubeadm commands into cloud-init user-data that starts
//! with `## template: jinja`, so cloud-init renders all of it with Jinja2 before it writes a file or runs a command.
//! These tests render what the webhook injects (through `render`, as the webhook patches it) with Jinja2 as
//! cloud-init does, and check that it comes out byte for byte unchanged, also when a validated value holds Jinja
//! markup. As a control that the renderer is live, the plain node scripts must fail to render (their `${#var}`
//! opens a Jinja comment): that failure is why every injected file is base64.
//!
//! Needs a python3 with jinja2 (`scripts/install-test-tools.sh` installs Debian's python3-jinja2); without one the
//! tests print a NOTICE and do nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A python3 that can import jinja2; without one, a NOTICE that the check did not run.
fn python() -> Option<&'static str> {
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import jinja2"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        // scripts/test.sh installs python3-jinja2 and sets this: there, a skip would hide a missing check.
        assert!(
            std::env::var_os("CAPI_CALICO_REQUIRE_TEST_TOOLS").is_none_or(|v| v != "1"),
            "no python3 with jinja2, and CAPI_CALICO_REQUIRE_TEST_TOOLS=1"
        );
        eprintln!(
            "NOTICE: no python3 with jinja2; the Jinja rendering was NOT checked (CI installs it)"
        );
    }
    found
}

/// Renders each text of a JSON list as cloud-init does (undefined instance data renders empty rather than failing,
/// as users' own `{{ ds.meta_data... }}` would be defined on a node) and answers `{"ok": text}` or
/// `{"error": "..."}` for each.
const RENDER: &str = r#"
import json, sys, jinja2
env = jinja2.Environment(undefined=jinja2.ChainableUndefined, keep_trailing_newline=True)
out = []
for text in json.load(sys.stdin):
    try:
        out.append({"ok": env.from_string(text).render()})
    except jinja2.TemplateError as e:
        out.append({"error": type(e).__name__ + ": " + str(e)})
json.dump(out, sys.stdout)
"#;

/// Run `program args` with `input` on stdin; its stdout, or a panic with its stderr.
fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn jinja(py: &str, texts: &[String]) -> Vec<Value> {
    let input = serde_json::to_vec(texts).expect("json");
    serde_json::from_slice(&run_with_input(py, &["-c", RENDER], &input)).expect("renderer output")
}

/// `render -o json` of a manifest given on stdin.
fn render(manifest: &str) -> Value {
    let out = run_with_input(
        env!("CARGO_BIN_EXE_capi-calico-webhook"),
        &["render", "-o", "json", "-"],
        manifest.as_bytes(),
    );
    serde_json::from_slice(&out).expect("json")
}

/// For each rendered KCP/KCT, the user-data fragment holding what the webhook injected: a `## template: jinja`
/// cloud-config with our `files` entries as written in the object and our commands.
fn injected_user_data(list: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for item in list["items"].as_array().expect("items") {
        let spec = match item["kind"].as_str() {
            Some("KubeadmControlPlane") => &item["spec"]["kubeadmConfigSpec"],
            Some("KubeadmConfigTemplate") => &item["spec"]["template"]["spec"],
            _ => continue,
        };
        let list = |field: &str| spec[field].as_array().cloned().unwrap_or_default();
        let files: Vec<Value> = list("files")
            .into_iter()
            .filter(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/etc/capi-calico/"))
            })
            .collect();
        let commands: Vec<Value> = list("preKubeadmCommands")
            .into_iter()
            .chain(list("postKubeadmCommands"))
            .filter(|c| c.as_str().is_some_and(|c| c.contains("/etc/capi-calico/")))
            .collect();
        assert!(!files.is_empty(), "nothing injected into {item}");
        let body = json!({"write_files": files, "runcmd": commands});
        out.push(format!(
            "## template: jinja\n#cloud-config\n{}\n",
            serde_json::to_string_pretty(&body).expect("json")
        ));
    }
    out
}

/// Each text rendered to itself, byte for byte (a short report on failure: the texts are ~20 KB).
fn assert_unchanged(texts: &[String], rendered: &[Value]) {
    assert_eq!(texts.len(), rendered.len());
    for (text, answer) in texts.iter().zip(rendered) {
        let Some(out) = answer["ok"].as_str() else {
            panic!("Jinja2 refused the injected entries: {}", answer["error"]);
        };
        if out != text {
            let at = text
                .bytes()
                .zip(out.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(text.len().min(out.len()));
            let from = at.saturating_sub(40);
            panic!(
                "Jinja2 changed the injected entries at byte {at}: {:?} became {:?}",
                &text[from..(at + 40).min(text.len())],
                &out[from..(at + 40).min(out.len())]
            );
        }
    }
}

#[test]
fn injected_entries_render_unchanged_and_plain_scripts_would_not() {
    let Some(py) = python() else {
        return;
    };
    let manifest = std::fs::read_to_string(repo().join("tests/fixtures/cli/classic-v1beta2.yaml"))
        .expect("fixture");
    let user_data = injected_user_data(&render(&manifest));
    assert!(user_data.len() >= 2, "want a KCP and a KCT");
    assert_unchanged(&user_data, &jinja(py, &user_data));

    // The control: the scripts as plain contents break the whole user-data.
    let scripts: Vec<String> = ["install-calicoctl.sh", "apply-bgp.sh"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(repo().join("src/mutation/scripts").join(f)).expect("script")
        })
        .collect();
    for rendered in jinja(py, &scripts) {
        let error = rendered["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("TemplateSyntaxError"), "{rendered}");
    }
}

/// A validated value holding Jinja markup (a BGPPeer selector comparing a label with `{{ 7*7 }}`) reaches the node
/// file as written, and is never evaluated.
#[test]
fn jinja_markup_in_a_value_is_never_evaluated() {
    let Some(py) = python() else {
        return;
    };
    let peer = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr-1\nspec:\n  \
                peerIP: 192.0.2.10\n  asNumber: 64513\n  nodeSelector: rack == \"{{ 7*7 }}\"\n";
    let reflectors = base64::engine::general_purpose::STANDARD.encode(peer);
    let manifest = format!(
        "apiVersion: controlplane.cluster.x-k8s.io/v1beta2\nkind: KubeadmControlPlane\nmetadata:\n  name: cp\n  \
         namespace: team-a\n  annotations:\n    capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: \"true\"\n    \
         capi-calico.io/INSTALL_CALICOCTL: \"true\"\n    capi-calico.io/CALICO_BGP_OPTION: Enabled\n    capi-calico.io/CALICO_ENCAPSULATION: IPIP\n    \
         capi-calico.io/CONFIGURE_CALICO_BGP_SETTINGS: \"true\"\n    capi-calico.io/CALICO_BGP_AS_NUMBER: \"64512\"\n    \
         capi-calico.io/CALICO_ROUTE_REFLECTORS: {reflectors}\nspec:\n  version: v1.33.4\n  kubeadmConfigSpec: {{}}\n"
    );
    let list = render(&manifest);
    let user_data = injected_user_data(&list);
    assert_unchanged(&user_data, &jinja(py, &user_data));
    // The peers file, decoded as cloud-init decodes it, holds the markup literally.
    let peers = list["items"][0]["spec"]["kubeadmConfigSpec"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == "/etc/capi-calico/bgppeers.yaml")
        .expect("peers file")
        .clone();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(peers["content"].as_str().expect("content"))
        .expect("base64");
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(text.contains("{{ 7*7 }}"), "{text}");
}
