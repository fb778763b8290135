//! The offline CLI (`check`, `render`): exit codes, messages, and golden rendered output.
//!
//! Goldens live in `tests/golden/cli/`; regenerate them with `UPDATE_GOLDEN=1 cargo test --test cli` and review
//! the diff. The Cluster API example templates from `../shared/fixtures/capi-examples` (present in CI, not in a
//! user's clone) are rendered too when that folder exists; without it those cases print a notice and are skipped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use base64::Engine as _;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/cli").join(name)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_capi-calico-webhook"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the binary");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// `serve` on a free loopback port, without cluster access or metrics listener.
/// `serve` on a free local port without the metrics port, cluster lookup left to the environment.
const SERVE_WITH_LOOKUP: [&str; 5] = [
    "serve",
    "--metrics-listen",
    "off",
    "--listen",
    "127.0.0.1:0",
];

const LOCAL_SERVE: [&str; 6] = [
    "serve",
    "--no-cluster-lookup",
    "--metrics-listen",
    "off",
    "--listen",
    "127.0.0.1:0",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Compare `actual` with the golden file, or rewrite it under UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden/cli").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if want != actual {
        let first = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered output at line {}:\n  golden: {:?}\n  actual: {:?}\n\
             (UPDATE_GOLDEN=1 regenerates it; review the diff)",
            path.display(),
            first + 1,
            want.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    capi_calico_webhook::manifest::parse("output", yaml)
        .expect("render output parses")
        .into_iter()
        .map(|d| d.object)
        .collect()
}

fn render_files(files: &[&Path]) -> (i32, String, String) {
    let mut args = vec!["render".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs, None);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn render_matches_the_goldens_and_is_a_fixed_point() {
    for (name, input) in [
        ("classic-v1beta2.yaml", "classic-v1beta2.yaml"),
        ("classic-v1beta1.yaml", "classic-v1beta1.yaml"),
        ("own-annotations.yaml", "own-annotations.yaml"),
        ("not-opted-in.yaml", "not-opted-in.yaml"),
    ] {
        let (code, stdout, stderr) = render_files(&[&fixture(input)]);
        assert_eq!(code, 0, "{name}: {stderr}");
        golden(name, &stdout);

        // Rendering the rendered output changes nothing: the webhook applied to its own output is a no-op.
        let dir = tempfile::tempdir().expect("tempdir");
        let again = dir.path().join("again.yaml");
        std::fs::write(&again, &stdout).expect("write");
        let (code, second, stderr) = render_files(&[&again]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert_eq!(
            parse_docs(&second),
            parse_docs(&stdout),
            "{name}: render is not idempotent"
        );
    }
}

#[test]
fn render_injects_what_the_contract_says_and_keeps_the_users_entries() {
    let (_, stdout, _) = render_files(&[&fixture("classic-v1beta2.yaml")]);
    let docs = parse_docs(&stdout);
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).expect(k).clone();

    let cluster = kind("Cluster");
    assert_eq!(
        cluster["metadata"]["labels"]["capi-calico.io/cluster"],
        "wl-1"
    );

    let kcp = kind("KubeadmControlPlane");
    let spec = &kcp["spec"]["kubeadmConfigSpec"];
    let pre: Vec<&str> = spec["preKubeadmCommands"]
        .as_array()
        .expect("pre")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        pre[..2],
        [
            "hostnamectl set-hostname \"{{ ds.meta_data.hostname }}\"",
            "echo \"::1 localhost\" >> /etc/hosts"
        ]
    );
    assert_eq!(pre.len(), 3, "{pre:?}");
    assert!(pre[2].contains("/etc/capi-calico/install-calicoctl.sh"));
    // Our post command first, then the user's.
    let post = spec["postKubeadmCommands"].as_array().expect("post");
    assert!(
        post[0].as_str().is_some_and(|c| c.contains("apply-bgp")),
        "{post:?}"
    );
    assert_eq!(post[1], "echo bootstrap done");
    assert_eq!(post.len(), 2);
    let paths: Vec<&str> = spec["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths[0], "/etc/kubernetes/manifests/kube-vip.yaml");
    for p in [
        "/etc/capi-calico/install-calicoctl.sh",
        "/etc/capi-calico/calicoctl.conf",
        "/etc/capi-calico/bgppeers.yaml",
        "/etc/capi-calico/bgpconfiguration.yaml",
        "/etc/capi-calico/apply-bgp.sh",
    ] {
        assert_eq!(
            paths.iter().filter(|x| **x == p).count(),
            1,
            "{p} once in {paths:?}"
        );
    }

    // The KCT had no spec; the workers get calicoctl but never the BGP files.
    let kct = kind("KubeadmConfigTemplate");
    let worker_paths: Vec<&str> = kct["spec"]["template"]["spec"]["files"]
        .as_array()
        .expect("kct files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(
        worker_paths,
        [
            "/etc/capi-calico/install-calicoctl.sh",
            "/etc/capi-calico/calicoctl.conf"
        ]
    );
    assert!(
        kct["spec"]["template"]["spec"]
            .get("postKubeadmCommands")
            .is_none()
    );

    // Not ours: the MachineDeployment comes out as it went in.
    let input =
        capi_calico_webhook::manifest::read(&fixture("classic-v1beta2.yaml").display().to_string())
            .expect("read fixture");
    let md_in = &input
        .iter()
        .find(|d| d.object["kind"] == "MachineDeployment")
        .expect("md")
        .object;
    assert_eq!(&kind("MachineDeployment"), md_in);
}

#[test]
fn check_exit_codes_and_messages() {
    let ok = run(
        &[
            "check",
            &fixture("classic-v1beta2.yaml").display().to_string(),
        ],
        None,
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).starts_with("ok: 4 documents, 3 checked"),
        "{}",
        text(&ok.stdout)
    );

    // Standard input is named as everywhere else in messages.
    let empty = run(&["check", "-"], Some("---\n"));
    assert_eq!(empty.status.code(), Some(2));
    assert_eq!(
        text(&empty.stderr),
        "error: no Kubernetes objects in <stdin>: every document is empty or a List without items\n"
    );
    // Lists nested in a List are read, as kubectl reads them: the invalid Cluster inside is found.
    let invalid = std::fs::read_to_string(fixture("invalid.yaml")).unwrap();
    let first: Value = parse_docs(&invalid).remove(0);
    let nested = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "List", "items": [first]}
    ]});
    let in_lists = run(&["check", "-"], Some(&nested.to_string()));
    assert_eq!(
        in_lists.status.code(),
        Some(1),
        "{}",
        text(&in_lists.stdout)
    );

    let bad = run(
        &["check", &fixture("invalid.yaml").display().to_string()],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    let out = text(&bad.stdout);
    for needle in [
        "(document 1, Cluster broken): denied the request: 3 problems with the capi-calico.io annotations:",
        "capi-calico.io/CALICO_BLOCKSIZE: \"26\" is not a known setting: did you mean",
        "\"capi-calico.io/CALICO_BLOCK_SIZE\"?",
        "capi-calico.io/CALICO_BGP_OPTION: \"enabled\" is not valid: did you mean \"Enabled\"?",
        "did you mean\n    10.0.0.0/16?",
        "(document 2, KubeadmControlPlane broken-cp): denied the request: this object takes its Calico settings \
         from Cluster default/broken, whose annotations are invalid; fix them on the Cluster",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    // Standard input, and the same rejection through render (documents still printed, exit 1).
    let input = std::fs::read_to_string(fixture("invalid.yaml")).expect("read");
    let piped = run(&["check", "-"], Some(&input));
    assert_eq!(piped.status.code(), Some(1));
    assert!(
        text(&piped.stdout).contains("<stdin> (document 1, Cluster broken)"),
        "{}",
        text(&piped.stdout)
    );
    let rendered = run(&["render", "-"], Some(&input));
    assert_eq!(rendered.status.code(), Some(1));
    assert!(text(&rendered.stderr).contains("denied the request"));
    // Nothing for a `render | kubectl apply -f -` pipeline to apply.
    assert!(rendered.stdout.is_empty(), "{}", text(&rendered.stdout));

    // Usage and I/O errors: exit 2.
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = dir.path().display().to_string();
    for (args, stdin, needle) in [
        // Documents kubectl refuses too, and a directory without manifests.
        (
            vec!["check", "-"],
            Some("foo: bar\n---\n{}\n"),
            "apiVersion and kind are required",
        ),
        (
            vec!["check", empty_dir.as_str()],
            None,
            "no .yaml, .yml or .json files",
        ),
        (
            vec!["check", "/nonexistent/cluster.yaml"],
            None,
            "/nonexistent/cluster.yaml",
        ),
        (
            vec!["check", "-"],
            Some("a: [1, 2\n"),
            "not valid YAML or JSON",
        ),
        (
            vec!["check", "-"],
            Some("- just\n- a list\n"),
            "not a Kubernetes object",
        ),
        (
            vec!["render", "--output", "toml", "-"],
            Some(""),
            "invalid value 'toml'",
        ),
        (vec!["check"], None, "required"),
        // No objects at all: kubectl refuses that too.
        (
            vec!["check", "-"],
            Some("# only a comment\n---\n"),
            "no Kubernetes objects",
        ),
        (vec!["render", "-"], Some(""), "no Kubernetes objects"),
    ] {
        let out = run(&args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_kcp_without_its_cluster_gets_a_warning_not_an_error() {
    let input = "apiVersion: controlplane.cluster.x-k8s.io/v1beta2\nkind: KubeadmControlPlane\n\
                 metadata: {name: orphan-cp, namespace: ns}\nspec: {version: v1.33.4}\n";
    let out = run(&["check", "-"], Some(input));
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Warning: <stdin> (document 1, KubeadmControlPlane ns/orphan-cp): capi-calico: no Cluster found"), "{stdout}");
    assert!(
        stdout.contains("cluster.x-k8s.io/cluster-name=<cluster>"),
        "{stdout}"
    );
}

#[test]
fn render_json_output_is_a_list() {
    let out = run(
        &[
            "render",
            "-o",
            "json",
            &fixture("own-annotations.yaml").display().to_string(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let spec = &list["items"][0]["spec"]["template"]["spec"];
    assert_eq!(spec["preKubeadmCommands"][0], json!("echo first"));
    let conf = spec["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == "/etc/capi-calico/calicoctl.conf")
        .expect("data file");
    assert_eq!(conf["encoding"], "base64");
    let text = base64::engine::general_purpose::STANDARD
        .decode(conf["content"].as_str().expect("content"))
        .expect("base64");
    assert!(String::from_utf8(text).expect("utf-8").contains(
        "url_template=https://mirror.example.internal/calico/{version}/calicoctl-linux-{arch}"
    ));
}

#[test]
fn help_explains_the_annotations_on_every_subcommand() {
    for sub in ["serve", "check", "render"] {
        let out = run(&[sub, "--help"], None);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(
            help.contains("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT"),
            "{sub}: {help}"
        );
        assert!(help.contains("CALICO_ROUTE_REFLECTORS"), "{sub}");
    }
    let out = run(&["bundle", "--help"], None);
    assert!(text(&out.stdout).contains("kubectl apply --server-side"));
}

#[test]
fn bundle_sets_the_operator_image_and_refuses_an_unpinned_one() {
    let dir = repo().join("tests/fixtures/delivery");
    let operator = dir.join("synthetic-operator.yaml");
    let operator = operator.to_str().unwrap();
    let crds = dir.join("synthetic-crds.yaml");
    let crds = crds.to_str().unwrap();
    let args = [
        "bundle",
        "--operator",
        operator,
        "--crds",
        crds,
        "--version",
        "v3.31.7",
    ];

    // The synthetic operator's container is not named tigera-operator: said so, exit 2, nothing printed.
    let image = "registry.example.internal/tigera/operator:v1.40.3";
    let out = run(&[&args[..], &["--operator-image", image]].concat(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("exactly one Deployment container named tigera-operator, found 0"),
        "{err}"
    );

    let out = run(
        &[
            &args[..],
            &["--operator-image", "registry.example.internal/operator"],
        ]
        .concat(),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("has no tag or digest"),
        "{}",
        text(&out.stderr)
    );

    // The synthetic operator with its container renamed as upstream names it: the image is replaced.
    let tmp = tempfile::tempdir().unwrap();
    let renamed = tmp.path().join("tigera-operator.yaml");
    let upstream_like = std::fs::read_to_string(operator)
        .unwrap()
        .replace("- name: operator\n", "- name: tigera-operator\n");
    std::fs::write(&renamed, upstream_like).unwrap();
    let out = run(
        &[
            "bundle",
            "--operator",
            renamed.to_str().unwrap(),
            "--crds",
            crds,
            "--version",
            "v3.31.7",
            "--operator-image",
            image,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deployment = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|cm| cm["data"].as_object().unwrap().values())
        .map(|doc| serde_json::from_str::<Value>(doc.as_str().unwrap()).unwrap())
        .find(|doc| doc["kind"] == "Deployment")
        .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        image
    );

    // Errors in either input name the file the user gave, with its flag.
    let broken = tmp.path().join("broken-crds.yaml");
    std::fs::write(&broken, "a: {\n").unwrap();
    let out = run(
        &[
            "bundle",
            "--operator",
            operator,
            "--crds",
            broken.to_str().unwrap(),
            "--version",
            "v3.31.7",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: --crds {}: not valid YAML",
            broken.display()
        )),
        "{err}"
    );
    let empty = tmp.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let out = run(
        &[
            "bundle",
            "--operator",
            empty.to_str().unwrap(),
            "--crds",
            crds,
            "--version",
            "v3.31.7",
        ],
        None,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "--operator {}: contains no Kubernetes objects",
            empty.display()
        )),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_body_memory_budget_smaller_than_one_body() {
    let args = [
        LOCAL_SERVE.as_slice(),
        &[
            "--max-body-bytes",
            "1048576",
            "--max-body-memory-bytes",
            "2097151",
        ],
    ]
    .concat();
    let out = run(&args, None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--max-body-memory-bytes 2097151 is less than twice --max-body-bytes 1048576"),
        "{err}"
    );
    assert!(
        err.contains("set --max-body-memory-bytes to at least 2097152"),
        "{err}"
    );
}

/// The Cluster API example templates, opted in: every KCP/KCT they contain is mutated, everything else unchanged.
#[test]
fn capi_example_templates_render_to_their_goldens() {
    let shared = repo().join("../shared/fixtures/capi-examples");
    if !shared.is_dir() {
        println!(
            "NOTICE: {} not found (it exists in CI, not in a user's clone): the CAPI example goldens are skipped",
            shared.display()
        );
        return;
    }
    let cases: [(&str, &[&str]); 4] = [
        ("capv-v1.16.1.yaml", &["capv-v1.16.1/cluster-template.yaml"]),
        ("capv-v1.13.0.yaml", &["capv-v1.13.0/cluster-template.yaml"]),
        (
            "capi-docker-e2e-classic.yaml",
            &[
                "capi-v1.14.0-docker-e2e-classic/cluster-with-kcp.yaml",
                "capi-v1.14.0-docker-e2e-classic/md.yaml",
            ],
        ),
        (
            "capi-docker-clusterclass.yaml",
            &["capi-v1.14.0-docker-clusterclass/cluster-template-development.yaml"],
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, files) in cases {
        // Opt every Cluster in (INSTALL_CALICOCTL and BGP), leave the rest of the template as it is.
        let mut paths = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let docs =
                capi_calico_webhook::manifest::read(&shared.join(file).display().to_string())
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            let mut out = String::new();
            for mut doc in docs.into_iter().map(|d| d.object) {
                if doc["kind"] == "Cluster" {
                    let annotations = doc["metadata"]
                        .as_object_mut()
                        .expect("metadata")
                        .entry("annotations")
                        .or_insert_with(|| json!({}));
                    for (k, v) in [
                        ("CUSTOM_CALICO_DEPLOYMENT", "true"),
                        ("INSTALL_CALICOCTL", "true"),
                        ("CALICO_BGP_OPTION", "Enabled"),
                        ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
                        ("CALICO_BGP_AS_NUMBER", "65100"),
                        (
                            "CALICO_ROUTE_REFLECTORS",
                            // base64 of one BGPPeer {name: rr-1, peerIP: 192.0.2.1, asNumber: 65100}
                            "YXBpVmVyc2lvbjogcHJvamVjdGNhbGljby5vcmcvdjMKa2luZDogQkdQUGVlcgptZXRhZGF0YToKICBuYW1lOiBy\
                             ci0xCnNwZWM6CiAgcGVlcklQOiAxOTIuMC4yLjEKICBhc051bWJlcjogNjUxMDAK",
                        ),
                    ] {
                        annotations[format!("capi-calico.io/{k}")] = json!(v);
                    }
                    // The templates leave pod CIDRs to variables; give the ones with a placeholder a real block.
                    if let Some(blocks) = doc.pointer_mut("/spec/clusterNetwork/pods/cidrBlocks")
                        && blocks.to_string().contains('$')
                    {
                        *blocks = json!(["192.168.0.0/16"]);
                    }
                }
                out.push_str("---\n");
                out.push_str(&serde_json::to_string(&doc).expect("json"));
                out.push('\n');
            }
            let path = dir.path().join(format!("{i}.yaml"));
            std::fs::write(&path, out).expect("write");
            paths.push(path);
        }
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let (code, stdout, stderr) = render_files(&refs);
        assert_eq!(code, 0, "{name}: {stderr}");
        golden(name, &stdout);
    }
}

/// Start `serve` (the command given, with TMPDIR at `tmp` for its self-signed material) and read its log until it
/// says how to trust its CA (it is serving) or 20 s pass. The child is returned running.
fn started_serve(mut serve: Command, tmp: &std::path::Path) -> (std::process::Child, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = serve
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) {
        let listening = line.contains("trust the CA");
        lines.push(line);
        if listening {
            break;
        }
    }
    (child, lines)
}

/// `--log-format text` writes colour codes only to a terminal: logs piped to a file or a container runtime are plain.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = bin();
    serve.args(LOCAL_SERVE).args(["--log-format", "text"]);
    let (mut child, lines) = started_serve(serve, dir.path());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("serving admission reviews")),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{lines:#?}");
    // The curl hint names the port actually bound, not the 0 asked for.
    let hint = lines
        .iter()
        .find(|l| l.contains("trust the CA"))
        .expect("the self-signed hint");
    assert!(!hint.contains("https://localhost:0/"), "{hint}");
}

/// `serve` raises its soft open-files limit to the hard one (containerd 2 starts containers with 1024, fewer than
/// the connection limit and what the rest of the process needs). prlimit is util-linux's, which
/// scripts/install-test-tools.sh installs.
#[test]
fn serve_raises_the_open_files_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Command::new("prlimit");
    serve
        .arg("--nofile=1024:2048")
        .arg(env!("CARGO_BIN_EXE_capi-calico-webhook"))
        .args(LOCAL_SERVE);
    let (mut child, lines) = started_serve(serve, dir.path());
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("trust the CA")),
        "serve did not start: {lines:#?}"
    );
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open-files line");
    assert_eq!(
        line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        ["2048", "2048"],
        "{line}"
    );
}

/// YAML numbers and booleans as annotation values: kubectl would refuse the file, so `check` does too, naming each
/// value and how to quote it, instead of judging the Cluster without them (an unquoted `true` switch would
/// otherwise read as "not opted in").
#[test]
fn unquoted_annotation_values_are_refused_with_the_quoted_spelling() {
    let manifest = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: c1\n  annotations:\n    \
                    capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: true\n    capi-calico.io/CALICO_BLOCK_SIZE: 19\n    \
                    capi-calico.io/CALICO_BGP_AS_NUMBER: 1.10\n    note: null\nspec:\n  clusterNetwork:\n    pods:\n      cidrBlocks: [100.96.0.0/11]\n";
    let out = run(&["check", "-"], Some(manifest));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "- capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: true is a boolean, not a string: quote it, as \
             capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: \"true\""
        ),
        "{stdout}"
    );
    // A number is never spelt back (YAML may have changed it: 1.10 reads as 1.1): the user quotes their own text.
    assert!(
        stdout.contains(
            "- capi-calico.io/CALICO_BLOCK_SIZE: YAML reads this value as 19, not a string: put the value in quotes \
             exactly as you wrote it"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("capi-calico.io/CALICO_BGP_AS_NUMBER: YAML reads this value as 1.1,"),
        "{stdout}"
    );
    assert!(!stdout.contains("note"), "{stdout}");
}

#[test]
fn objects_of_other_api_groups_may_share_a_name() {
    // Objects of other API groups may share a name (a CloudNativePG Cluster beside a Cluster API one, twice).
    let other = "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: db}\nspec: {instances: 1}\n";
    let out = run(
        &["check", "-"],
        Some(&format!("{other}---\n{}", other.replace("1}", "3}"))),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn a_directory_reads_its_manifest_files_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture_text = std::fs::read_to_string(fixture("classic-v1beta2.yaml")).expect("read");
    // The Cluster and its objects split over two files, plus a file that is not a manifest.
    let (cluster, rest) = fixture_text
        .split_once("\n---\n")
        .expect("two documents or more");
    std::fs::write(dir.path().join("b-objects.yml"), rest).expect("write");
    std::fs::write(dir.path().join("a-cluster.yaml"), cluster).expect("write");
    std::fs::write(dir.path().join("README.md"), "# not YAML: [").expect("write");
    let out = run(&["check", &dir.path().display().to_string()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("ok: 4 documents, 3 checked"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn strict_makes_warnings_fail() {
    // A KCP whose Cluster is not in the input: a warning, exit 0; with --strict, exit 1 and render prints nothing.
    let kcp = "apiVersion: controlplane.cluster.x-k8s.io/v1beta2\nkind: KubeadmControlPlane\nmetadata:\n  \
               name: cp\n  labels: {cluster.x-k8s.io/cluster-name: elsewhere}\nspec: {version: v1.34.1}\n";
    let relaxed = run(&["check", "-"], Some(kcp));
    assert_eq!(relaxed.status.code(), Some(0), "{}", text(&relaxed.stdout));
    assert!(
        text(&relaxed.stdout).contains("Warning: <stdin> (document 1, KubeadmControlPlane cp)")
    );
    let strict = run(&["check", "--strict", "-"], Some(kcp));
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stdout));
    assert!(
        text(&strict.stdout).contains("failed: 3 warnings (--strict)"),
        "{}",
        text(&strict.stdout)
    );
    let render = run(&["render", "--strict", "-"], Some(kcp));
    assert_eq!(render.status.code(), Some(1));
    assert!(render.stdout.is_empty());
}

/// What kubectl would read differently from a naive YAML reader, and outputs that cannot be written.
#[test]
fn inputs_are_read_as_kubectl_reads_them() {
    // YAML 1.1 octal (a Secret volume's mode): rendered as the number kubectl sends, not as 400.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      \
                      volumes:\n      - name: s\n        secret: {secretName: s, defaultMode: 0400}\n";
    let out = run(&["render", "-o", "json", "-"], Some(deployment));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        list["items"][0]["spec"]["template"]["spec"]["volumes"][0]["secret"]["defaultMode"],
        json!(256)
    );

    // UTF-16 with a byte-order mark (Windows PowerShell's `>`), as kubectl reads it: the same render as UTF-8.
    let cluster = std::fs::read_to_string(fixture("classic-v1beta2.yaml")).expect("read");
    let dir = tempfile::tempdir().expect("tmp");
    let utf16 = dir.path().join("cluster-utf16.yaml");
    let bytes: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(cluster.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&utf16, bytes).expect("write");
    let from_utf16 = run(&["render", &utf16.display().to_string()], None);
    let from_utf8 = run(
        &[
            "render",
            &fixture("classic-v1beta2.yaml").display().to_string(),
        ],
        None,
    );
    assert_eq!(
        from_utf16.status.code(),
        Some(0),
        "{}",
        text(&from_utf16.stderr)
    );
    assert_eq!(text(&from_utf16.stdout), text(&from_utf8.stdout));

    // An annotation without a value is the empty string the API server stores, and validated as such.
    let first_annotation = "    capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: \"true\"\n";
    assert!(cluster.contains(first_annotation));
    let empty = cluster.replacen(
        first_annotation,
        &format!("{first_annotation}    capi-calico.io/CALICO_NAT_OUTGOING:\n"),
        1,
    );
    // The same objects twice, the second Cluster with other settings: which settings apply would be ambiguous.
    // (The same file given twice is no ambiguity, and passes.)
    let block = "    capi-calico.io/CALICO_BLOCK_SIZE: \"26\"\n";
    assert!(cluster.contains(block));
    let other = cluster.replacen(block, "    capi-calico.io/CALICO_BLOCK_SIZE: \"27\"\n", 1);
    let twice = format!("{cluster}\n---\n{other}");
    let same_twice = format!("{cluster}\n---\n{cluster}");
    assert_eq!(
        run(&["check", "-"], Some(&same_twice)).status.code(),
        Some(0)
    );
    for (input, needle) in [
        (
            empty,
            "capi-calico.io/CALICO_NAT_OUTGOING: \"\" is not valid",
        ),
        (twice, "is also defined at <stdin> (document 1)"),
    ] {
        let out = run(&["check", "-"], Some(&input));
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains(needle),
            "{needle}: {}",
            text(&out.stdout)
        );
    }

    // Output that cannot be written is an error, not a silent success.
    for args in [vec!["check", "-"], vec!["render", "-"]] {
        let mut child = bin()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(cluster.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("cannot write the output"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// A KubeadmConfigTemplate that MachineDeployments of two Clusters use carries one Cluster's settings: `check` says
/// so when the other Cluster's settings would give its workers other entries, and not when they would not.
#[test]
fn a_template_shared_with_a_cluster_of_other_settings_is_warned_about() {
    let manifest = std::fs::read_to_string(fixture("classic-v1beta2.yaml")).expect("read");
    let second = |annotations: &str| {
        format!(
            "{manifest}\n---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: wl-2\n  \
             namespace: team-a\n  annotations: {annotations}\nspec:\n  clusterNetwork:\n    pods:\n      \
             cidrBlocks: [100.96.0.0/11]\n---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: MachineDeployment\n\
             metadata:\n  name: wl-2-md-0\n  namespace: team-a\nspec:\n  clusterName: wl-2\n  template:\n    \
             spec:\n      clusterName: wl-2\n      bootstrap:\n        configRef:\n          apiGroup: \
             bootstrap.cluster.x-k8s.io\n          kind: KubeadmConfigTemplate\n          name: wl-1-md-0\n"
        )
    };
    let not_opted_in = run(&["check", "-"], Some(&second("{}")));
    let out = text(&not_opted_in.stdout);
    assert_eq!(not_opted_in.status.code(), Some(0), "{out}");
    for line in [
        "Warning: <stdin> (document 3, KubeadmConfigTemplate team-a/wl-1-md-0): capi-calico: MachineDeployments of \
         Cluster wl-2 use this template too",
        "capi-calico: all its workers get Cluster wl-1's capi-calico entries",
        "capi-calico: give each Cluster its own KubeadmConfigTemplate",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    assert_eq!(
        run(&["check", "--strict", "-"], Some(&second("{}")))
            .status
            .code(),
        Some(1)
    );

    // The same settings as wl-1: nothing to say.
    let wl1: Value = parse_docs(&manifest)[0].clone();
    let same = serde_json::to_string(&wl1["metadata"]["annotations"]).expect("json");
    let same = run(&["check", "--strict", "-"], Some(&second(&same)));
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stdout));
}

/// A KCP labelled with a Cluster that the input does not hold, and a KCT whose MachineDeployment names one, are told
/// to create that Cluster, not to label themselves (they are linked already) nor that they may be ClusterClass
/// templates.
#[test]
fn objects_linked_to_a_missing_cluster_are_told_to_create_it() {
    let manifest = "apiVersion: controlplane.cluster.x-k8s.io/v1beta2\nkind: KubeadmControlPlane\nmetadata:\n  \
                    name: cp\n  labels:\n    cluster.x-k8s.io/cluster-name: missing\nspec:\n  version: v1.33.0\n\
                    ---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: MachineDeployment\nmetadata:\n  name: md\n\
                    spec:\n  clusterName: missing\n  template:\n    spec:\n      clusterName: missing\n      \
                    bootstrap:\n        configRef:\n          apiGroup: bootstrap.cluster.x-k8s.io\n          \
                    kind: KubeadmConfigTemplate\n          name: kct\n---\n\
                    apiVersion: bootstrap.cluster.x-k8s.io/v1beta2\nkind: KubeadmConfigTemplate\nmetadata:\n  \
                    name: kct\nspec:\n  template:\n    spec: {}\n";
    let out = run(&["check", "-"], Some(manifest));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.matches("create that Cluster").count(), 2, "{stdout}");
    assert!(
        !stdout.contains("label it") && !stdout.contains("ClusterClass"),
        "{stdout}"
    );
}

/// Documents that name no namespace are looked up in `--namespace` (as `kubectl apply -n` places them), and are
/// printed still naming none.
#[test]
fn documents_without_a_namespace_take_the_namespace_option() {
    let manifest = std::fs::read_to_string(repo().join("tests/fixtures/cli/classic-v1beta2.yaml"))
        .unwrap()
        .replace("  namespace: team-a\n", "");
    assert!(!manifest.contains("namespace: team-a"));
    // In `default` the KCP's Cluster (team-a in the fixture, now namespace-less too) is found all the same: both
    // are in the same implied namespace. Only a Cluster that names its namespace shows the difference.
    let cluster_named = manifest.replacen("  name: ", "  namespace: team-a\n  name: ", 1);
    let plain = run(&["render", "-"], Some(&cluster_named));
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("no Cluster found"),
        "{}",
        text(&plain.stderr)
    );
    assert!(!text(&plain.stdout).contains("/etc/capi-calico/"));
    for flag in ["-n", "--namespace"] {
        let out = run(&["render", flag, "team-a", "-"], Some(&cluster_named));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let rendered = text(&out.stdout);
        assert!(
            rendered.contains("/etc/capi-calico/install-calicoctl.sh"),
            "{rendered}"
        );
        assert_eq!(
            rendered.matches("namespace: team-a").count(),
            1,
            "{rendered}"
        );
        let check = run(
            &["check", flag, "team-a", "--strict", "-"],
            Some(&cluster_named),
        );
        assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    }
    let bad = run(&["check", "-n", "Team_A", "-"], Some(&cluster_named));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not a namespace name"),
        "{}",
        text(&bad.stderr)
    );
}

/// The switches' environment variables take the usual spellings of a boolean (`1`, `yes`, `on`, ...) with their
/// meaning (seen in what `serve` logs about cluster access); anything else stops `serve` before it starts, with exit
/// code 2 and a message naming the flag.
#[test]
fn switch_variables_take_boolean_spellings() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (value, off) in [
        ("1", true),
        ("yes", true),
        ("On", true),
        ("false", false),
        ("0", false),
    ] {
        let mut serve = bin();
        serve
            .args(SERVE_WITH_LOOKUP)
            .env("CAPI_CALICO_NO_CLUSTER_LOOKUP", value)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", dir.path());
        let (mut child, lines) = started_serve(serve, dir.path());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            lines.iter().any(|l| l.contains("trust the CA")),
            "{value}: serve did not start: {lines:#?}"
        );
        // Off by the switch, or (not switched off) tried and not found: two different lines.
        let switched_off = lines
            .iter()
            .any(|l| l.contains("disabled by --no-cluster-lookup"));
        assert_eq!(switched_off, off, "{value}: {lines:#?}");
        assert_eq!(
            lines.iter().any(|l| l.contains("no cluster access")),
            !off,
            "{value}: {lines:#?}"
        );
    }
    let out = bin()
        .args(LOCAL_SERVE)
        .env("CAPI_CALICO_NO_RECONCILER", "maybe")
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run serve");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'maybe'") && stderr.contains("--no-reconciler"),
        "{stderr}"
    );
}

/// In a pod (the API server's Service variables set) `serve` without usable cluster access stops with a message
/// naming `--no-cluster-lookup`, rather than serving ready while injecting nothing; outside a pod it serves.
#[test]
fn serve_in_a_pod_without_cluster_access_stops() {
    // Where a service account token is mounted (tests run in a pod), the in-cluster configuration can be built.
    if std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists() {
        eprintln!(
            "skipped: a service account token is mounted here, so cluster access can be set up"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = |in_pod: bool| {
        let mut serve = bin();
        serve
            .args(SERVE_WITH_LOOKUP)
            .env_remove("KUBECONFIG")
            .env("HOME", dir.path());
        if in_pod {
            serve
                .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
                .env("KUBERNETES_SERVICE_PORT", "1");
        } else {
            serve.env_remove("KUBERNETES_SERVICE_HOST");
        }
        let (mut child, lines) = started_serve(serve, dir.path());
        let serving = lines.iter().any(|l| l.contains("trust the CA"));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        (serving, status, lines)
    };
    let (serving, status, lines) = serve(true);
    assert!(!serving && !status.success(), "{status}: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("--no-cluster-lookup")),
        "{lines:#?}"
    );
    let (serving, _, lines) = serve(false);
    assert!(serving, "{lines:#?}");
}
