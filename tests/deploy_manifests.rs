//! Renders every kustomization under `deploy/` with the real `kubectl kustomize` and checks the objects the cluster
//! would receive: kinds, the Deployment's hardening and availability, the webhook registrations, the exact RBAC,
//! both certificate paths (the static one end to end through `deploy/certs/make-certs.sh` and openssl), and the
//! matchConditions CEL evaluated on a table of old/new objects.
//!
//! Needs `kubectl` (env `KUBECTL`, else `kubectl` on PATH) and, for the static-certs path, `bash` and `openssl`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

const NAMESPACE: &str = "capi-calico-system";
const SERVICE: &str = "capi-calico-webhook";
const TLS_SECRET: &str = "capi-calico-webhook-tls";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// `kubectl kustomize DIR`, parsed into one JSON value per document.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{} kustomize` ({e}); install kubectl or set KUBECTL to its path",
                kubectl()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).expect("kustomize output parses as YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kind_name(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_string(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn base() -> Vec<Value> {
    kustomize(&repo().join("deploy/base"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `deploy/base`, the static-certs overlay and the script in a temp dir, with the certificates made by
/// the real script (so the test never writes keys into the work tree).
struct StaticCerts {
    dir: tempfile::TempDir,
}

impl StaticCerts {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deploy = dir.path().join("deploy");
        copy_dir(&repo().join("deploy/base"), &deploy.join("base"));
        std::fs::create_dir_all(deploy.join("overlays/static-certs")).unwrap();
        std::fs::copy(
            repo().join("deploy/overlays/static-certs/kustomization.yaml"),
            deploy.join("overlays/static-certs/kustomization.yaml"),
        )
        .unwrap();
        copy_dir(&repo().join("deploy/certs"), &deploy.join("certs"));
        let s = StaticCerts { dir };
        s.make_certs(&[]);
        s
    }
    fn overlay(&self) -> PathBuf {
        self.dir.path().join("deploy/overlays/static-certs")
    }
    fn certs(&self) -> PathBuf {
        self.overlay().join("certs")
    }
    fn make_certs(&self, args: &[&str]) {
        // No OUTDIR argument: checks the script's default location relative to itself.
        run(Command::new("bash")
            .arg(self.dir.path().join("deploy/certs/make-certs.sh"))
            .args(args));
    }
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.certs().join(file)).unwrap()
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64");
    String::from_utf8(bytes).expect("UTF-8 PEM")
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering and kinds

#[test]
fn every_kustomization_under_deploy_renders() {
    let mut dirs = Vec::new();
    let mut stack = vec![repo().join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() == "kustomization.yaml" {
                dirs.push(path.parent().unwrap().to_path_buf());
            }
        }
    }
    dirs.sort();
    let rel: Vec<String> = dirs
        .iter()
        .map(|d| d.strip_prefix(repo()).unwrap().display().to_string())
        .filter(|d| d != "deploy/overlays/static-certs/certs") // generated by make-certs.sh, git-ignored
        .collect();
    assert!(rel.contains(&"deploy/base".to_string()), "{rel:?}");
    assert!(
        rel.contains(&"deploy/overlays/cert-manager".to_string()),
        "{rel:?}"
    );
    assert!(
        rel.contains(&"deploy/overlays/static-certs".to_string()),
        "{rel:?}"
    );
    let static_certs = StaticCerts::new();
    for dir in &rel {
        let docs = if dir == "deploy/overlays/static-certs" {
            kustomize(&static_certs.overlay())
        } else {
            kustomize(&repo().join(dir))
        };
        assert!(
            docs.len() >= 11,
            "{dir} rendered only {} objects",
            docs.len()
        );
        for doc in &docs {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{dir}: {doc}"
            );
        }
    }
}

#[test]
fn base_has_exactly_the_expected_objects() {
    let docs = base();
    let got: BTreeSet<(String, String)> = docs.iter().map(kind_name).collect();
    let want: BTreeSet<(String, String)> = [
        ("Namespace", NAMESPACE),
        ("ServiceAccount", SERVICE),
        ("ClusterRole", "capi-calico-webhook-lookup"),
        ("ClusterRoleBinding", "capi-calico-webhook-lookup"),
        ("ClusterRole", "capi-calico-webhook-reconciler"),
        ("ClusterRoleBinding", "capi-calico-webhook-reconciler"),
        ("ClusterRole", "capi-calico-webhook-linker"),
        ("ClusterRoleBinding", "capi-calico-webhook-linker"),
        ("Role", "capi-calico-webhook-bundles"),
        ("RoleBinding", "capi-calico-webhook-bundles"),
        ("Deployment", SERVICE),
        ("Service", SERVICE),
        ("PodDisruptionBudget", SERVICE),
        ("MutatingWebhookConfiguration", SERVICE),
        ("ValidatingWebhookConfiguration", SERVICE),
        (
            "ValidatingAdmissionPolicy",
            "capi-calico-webhook-own-writes",
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "capi-calico-webhook-own-writes",
        ),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(docs.len(), want.len(), "duplicate objects");
    // Every namespaced object lives in the webhook's namespace.
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        );
        if !cluster_scoped {
            assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{kind}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deployment, Service, PDB

fn duration_secs(s: &str) -> u64 {
    let n = s
        .strip_suffix('s')
        .unwrap_or_else(|| panic!("duration {s} not in seconds"));
    n.parse().unwrap()
}

#[test]
fn deployment_is_highly_available_and_hardened() {
    let docs = base();
    let dep = find(&docs, "Deployment", SERVICE);
    let spec = &dep["spec"];
    let pod = &spec["template"]["spec"];
    assert!(
        spec["replicas"].as_u64().unwrap() >= 2,
        "at least 2 replicas"
    );
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);

    // Spread across nodes, in a way that still schedules on a one-node (kind bootstrap) cluster.
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let by_host = spread
        .iter()
        .find(|c| c["topologyKey"] == "kubernetes.io/hostname")
        .expect("a spread constraint across nodes");
    assert_eq!(by_host["maxSkew"], 1);
    assert_eq!(
        by_host["labelSelector"]["matchLabels"], spec["selector"]["matchLabels"],
        "the spread constraint counts this Deployment's Pods"
    );
    assert_eq!(strs(&by_host["matchLabelKeys"]), ["pod-template-hash"]);
    assert_eq!(by_host["nodeTaintsPolicy"], "Honor");

    // Pod-level security.
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], SERVICE);
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let csc = &c["securityContext"];
    assert_eq!(csc["runAsNonRoot"], true);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["privileged"], false);
    assert_eq!(strs(&csc["capabilities"]["drop"]), ["ALL"]);
    assert!(csc["capabilities"].get("add").is_none());
    assert_eq!(csc["seccompProfile"]["type"], "RuntimeDefault");

    // Command line: the flags the binary accepts, certificates from the mounted directory.
    let args = strs(&c["args"]);
    assert_eq!(args[0], "serve");
    let flag = |name: &str| -> String {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("--{name} missing from {args:?}"))
            .to_string()
    };
    assert_eq!(flag("listen"), "0.0.0.0:8443");
    assert_eq!(flag("metrics-listen"), "0.0.0.0:9090");
    assert_eq!(flag("tls-cert-file"), "/certs/tls.crt");
    assert_eq!(flag("tls-key-file"), "/certs/tls.key");
    assert_eq!(flag("log-format"), "json");

    // Ports and probes: readiness over HTTPS on the admission port, liveness over HTTP on the metrics port.
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("https".into(), 8443), ("metrics".into(), 9090)])
    );
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(
        (ready["path"].as_str(), ready["port"].as_str()),
        (Some("/readyz"), Some("https"))
    );
    assert_eq!(ready["scheme"], "HTTPS");
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(
        (live["path"].as_str(), live["port"].as_str()),
        (Some("/healthz"), Some("metrics"))
    );
    assert_eq!(live["scheme"], "HTTP");
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = &c[probe];
        assert!(p["timeoutSeconds"].as_u64().unwrap() <= p["periodSeconds"].as_u64().unwrap());
    }

    // Requests and limits are set (their values are placeholders until measured).
    for section in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][section][res].is_string(),
                "resources.{section}.{res}"
            );
        }
    }

    // The grace period covers the preStop sleep plus the drain deadline.
    let drain = duration_secs(&flag("drain-timeout"));
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + drain {drain}s"
    );

    // The certificate Secret is mounted as a directory (no subPath: the `..data` symlink swap must reach us).
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/certs")
        .expect("a mount at /certs");
    assert!(
        mount.get("subPath").is_none(),
        "subPath mounts never see Secret updates"
    );
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["secret"]["secretName"], TLS_SECRET);
}

#[test]
fn service_and_pdb_select_the_webhook_pods() {
    let docs = base();
    let dep = find(&docs, "Deployment", SERVICE);
    let pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let selects = |selector: &Value| {
        let sel = selector.as_object().unwrap();
        assert!(!sel.is_empty());
        sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    let svc = find(&docs, "Service", SERVICE);
    assert!(selects(&svc["spec"]["selector"]));
    let https = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 443)
        .expect("port 443");
    assert_eq!(https["targetPort"], "https");

    let pdb = find(&docs, "PodDisruptionBudget", SERVICE);
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    let min = pdb["spec"]["minAvailable"]
        .as_u64()
        .expect("minAvailable as a number");
    assert!(
        min >= 1 && min < dep["spec"]["replicas"].as_u64().unwrap(),
        "a drain can still evict one Pod"
    );
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
}

// ---------------------------------------------------------------------------------------------------------------
// Webhook configurations

fn webhook<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let conf = find(docs, kind, SERVICE);
    let hooks = conf["webhooks"].as_array().unwrap();
    assert_eq!(
        hooks.len(),
        1,
        "{kind}: one webhook serving all three kinds"
    );
    &hooks[0]
}

fn match_condition(docs: &[Value], kind: &str) -> String {
    let conds = webhook(docs, kind)["matchConditions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        conds.len(),
        1,
        "{kind}: conditions are ANDed; ours is one OR-expression"
    );
    assert_eq!(conds[0]["name"], "spec-or-calico-settings-changed");
    conds[0]["expression"].as_str().unwrap().to_string()
}

#[test]
fn webhook_configurations_match_only_our_objects() {
    let docs = base();
    for (kind, name, path) in [
        (
            "MutatingWebhookConfiguration",
            "mutate.capi-calico.io",
            "/mutate",
        ),
        (
            "ValidatingWebhookConfiguration",
            "validate.capi-calico.io",
            "/validate",
        ),
    ] {
        let hook = webhook(&docs, kind);
        assert_eq!(hook["name"], name);
        assert_eq!(
            hook["clientConfig"]["service"],
            json!({"namespace": NAMESPACE, "name": SERVICE, "path": path, "port": 443}),
            "{kind}"
        );
        assert!(hook["clientConfig"].get("url").is_none());
        assert_eq!(strs(&hook["admissionReviewVersions"]), ["v1"]);
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        let timeout = hook["timeoutSeconds"]
            .as_u64()
            .expect("timeoutSeconds set explicitly");
        assert!(
            (1..=5).contains(&timeout),
            "{kind}: short timeout, got {timeout}"
        );

        let rules: BTreeSet<(String, String)> = hook["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(
                    strs(&r["apiVersions"]),
                    ["v1beta2"],
                    "{kind}: register v1beta2 only"
                );
                assert_eq!(strs(&r["operations"]), ["CREATE", "UPDATE"], "{kind}");
                assert_eq!(r["scope"], "Namespaced");
                let groups = strs(&r["apiGroups"]);
                let resources = strs(&r["resources"]);
                assert_eq!(
                    (groups.len(), resources.len()),
                    (1, 1),
                    "{kind}: one group/resource per rule"
                );
                (groups[0].clone(), resources[0].clone())
            })
            .collect();
        assert_eq!(
            rules,
            BTreeSet::from([
                ("cluster.x-k8s.io".to_string(), "clusters".to_string()),
                (
                    "controlplane.cluster.x-k8s.io".to_string(),
                    "kubeadmcontrolplanes".to_string()
                ),
                (
                    "bootstrap.cluster.x-k8s.io".to_string(),
                    "kubeadmconfigtemplates".to_string()
                ),
            ]),
            "{kind}: no status subresources, no other kinds"
        );

        let exprs = hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        let excluded = exprs
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .expect("namespace name exclusion");
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(
            strs(&excluded["values"])
                .into_iter()
                .collect::<BTreeSet<_>>(),
            BTreeSet::from(["kube-system".to_string(), NAMESPACE.to_string()])
        );
        let opt_out = exprs
            .iter()
            .find(|e| e["key"] == "capi-calico.io/webhook")
            .expect("per-namespace opt-out label");
        assert_eq!(opt_out["operator"], "NotIn");
        assert_eq!(strs(&opt_out["values"]), ["disabled"]);
        assert!(
            hook.get("objectSelector").is_none(),
            "an objectSelector would let users bypass validation"
        );

        // Both fail closed (the reasons are in docs/deploy.md).
        assert_eq!(hook["failurePolicy"], "Fail", "{kind}");
    }
    assert_eq!(
        webhook(&docs, "MutatingWebhookConfiguration")["reinvocationPolicy"],
        "IfNeeded"
    );
    assert_eq!(
        match_condition(&docs, "MutatingWebhookConfiguration"),
        match_condition(&docs, "ValidatingWebhookConfiguration"),
        "the two webhooks must see the same requests"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC

fn rules_of(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    assert!(g != "*" && r != "*" && v != "*", "no wildcards: {rule}");
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

fn triples(list: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    list.iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn rbac_is_exactly_the_least_set_split_by_feature() {
    let docs = base();
    // The only namespaced grant: reading the operator bundles loaded into the webhook's own namespace.
    let roles = all_of(&docs, "Role");
    assert_eq!(roles.len(), 1);
    let bundles = find(&docs, "Role", "capi-calico-webhook-bundles");
    assert_eq!(bundles["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        rules_of(bundles),
        triples(&[("", "configmaps", &["get", "list", "watch"])])
    );
    let binding = find(&docs, "RoleBinding", "capi-calico-webhook-bundles");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": SERVICE, "namespace": NAMESPACE}])
    );
    assert_eq!(all_of(&docs, "ClusterRole").len(), 3);

    // Admission lookups (issue 3): read Clusters and MachineDeployments, nothing else.
    let lookup = rules_of(find(&docs, "ClusterRole", "capi-calico-webhook-lookup"));
    assert_eq!(
        lookup,
        triples(&[
            ("cluster.x-k8s.io", "clusters", &["get", "list", "watch"]),
            (
                "cluster.x-k8s.io",
                "machinedeployments",
                &["get", "list", "watch"]
            ),
        ])
    );
    // Calico delivery (issue 6): server-side apply of its outputs, Events, annotations on Clusters. ConfigMaps are
    // read by name only (no list/watch of every ConfigMap of the cluster), deleted only to retire an unused bundle
    // copy, ClusterResourceSets only to replace one after a version change (the admission policy limits both to
    // ours), no Secrets.
    let reconciler = rules_of(find(&docs, "ClusterRole", "capi-calico-webhook-reconciler"));
    assert_eq!(
        reconciler,
        triples(&[
            ("", "configmaps", &["get", "create", "patch", "delete"]),
            (
                "addons.cluster.x-k8s.io",
                "clusterresourcesets",
                &["get", "create", "patch", "delete"]
            ),
            ("cluster.x-k8s.io", "clusters", &["patch"]),
            ("events.k8s.io", "events", &["create", "patch"]),
        ])
    );

    // Template linker (src/cluster/linker.rs): read and label KCPs and KCTs, see whether a KCP has Machines, and
    // report what it cannot link as an Event; nothing else.
    let linker = rules_of(find(&docs, "ClusterRole", "capi-calico-webhook-linker"));
    assert_eq!(
        linker,
        triples(&[
            (
                "controlplane.cluster.x-k8s.io",
                "kubeadmcontrolplanes",
                &["get", "patch"]
            ),
            (
                "bootstrap.cluster.x-k8s.io",
                "kubeadmconfigtemplates",
                &["get", "patch"]
            ),
            ("cluster.x-k8s.io", "machines", &["list"]),
            ("events.k8s.io", "events", &["create", "patch"]),
        ])
    );

    for name in [
        "capi-calico-webhook-lookup",
        "capi-calico-webhook-reconciler",
        "capi-calico-webhook-linker",
    ] {
        let binding = find(&docs, "ClusterRoleBinding", name);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": SERVICE, "namespace": NAMESPACE}])
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates: cert-manager

#[test]
fn cert_manager_overlay_issues_the_serving_certificate_and_injects_the_ca() {
    let docs = kustomize(&repo().join("deploy/overlays/cert-manager"));
    let certs = all_of(&docs, "Certificate");
    assert_eq!(certs.len(), 2, "a CA and a serving certificate");
    let ca = find(&docs, "Certificate", "capi-calico-webhook-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    let ca_issuer = find(&docs, "Issuer", "capi-calico-webhook-ca");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let selfsigned = find(&docs, "Issuer", "capi-calico-webhook-selfsigned");
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        selfsigned["metadata"]["name"]
    );

    let serving = find(&docs, "Certificate", SERVICE);
    assert_eq!(serving["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        serving["spec"]["issuerRef"]["name"],
        "capi-calico-webhook-ca"
    );
    assert_eq!(
        serving["spec"]["secretName"], TLS_SECRET,
        "the Secret the Deployment mounts"
    );
    assert_eq!(
        strs(&serving["spec"]["dnsNames"]),
        [
            "capi-calico-webhook.capi-calico-system.svc",
            "capi-calico-webhook.capi-calico-system.svc.cluster.local"
        ]
    );
    assert!(strs(&serving["spec"]["usages"]).contains(&"server auth".to_string()));

    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let conf = find(&docs, kind, SERVICE);
        assert_eq!(
            conf["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/{SERVICE}"),
            "{kind}"
        );
        // The patch only added an annotation: the webhook itself is the base's.
        assert_eq!(conf["webhooks"], find(&base(), kind, SERVICE)["webhooks"]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates: static, made by deploy/certs/make-certs.sh

fn openssl(args: &[&str]) -> String {
    run(Command::new("openssl").args(args))
}

#[test]
fn static_certs_overlay_carries_the_generated_ca_and_serving_certificate() {
    let s = StaticCerts::new();
    let docs = kustomize(&s.overlay());
    let ca_pem = s.read("ca.crt");

    // caBundle of both configurations decodes to the CA the script made.
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let hook = webhook(&docs, kind);
        assert_eq!(unb64(&hook["clientConfig"]["caBundle"]), ca_pem, "{kind}");
        // The patch merged into the base's webhook instead of replacing it.
        assert!(hook["rules"].as_array().unwrap().len() == 3 && hook["matchConditions"].is_array());
    }

    // The Secret holds the files, under the name the Deployment mounts.
    let secret = find(&docs, "Secret", TLS_SECRET);
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    // kustomize wraps long base64 values over lines; the API server's decoder skips the newlines.
    let data = |key: &str| -> String {
        let v = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("Secret data {key}"));
        v.chars().filter(|c| !c.is_ascii_whitespace()).collect()
    };
    assert_eq!(data("tls.crt"), b64(&s.read("tls.crt")));
    assert_eq!(data("tls.key"), b64(&s.read("tls.key")));
    assert_eq!(data("ca.crt"), b64(&ca_pem));

    // The serving certificate verifies against the bundle and names the Service.
    let bundle = s.dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        unb64(&webhook(&docs, "ValidatingWebhookConfiguration")["clientConfig"]["caBundle"]),
    )
    .unwrap();
    let tls = s.certs().join("tls.crt");
    let verify = openssl(&[
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        bundle.to_str().unwrap(),
        tls.to_str().unwrap(),
    ]);
    assert!(verify.contains(": OK"), "{verify}");
    let ext = openssl(&[
        "x509",
        "-in",
        tls.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName,basicConstraints,extendedKeyUsage",
    ]);
    assert!(
        ext.contains(
            "DNS:capi-calico-webhook.capi-calico-system.svc, DNS:capi-calico-webhook.capi-calico-system.svc.cluster.local"
        ),
        "{ext}"
    );
    assert!(
        ext.contains("CA:FALSE") && ext.contains("TLS Web Server Authentication"),
        "{ext}"
    );
    let key = s.certs().join("tls.key");
    let key_pub = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    let cert_pub = openssl(&["x509", "-in", tls.to_str().unwrap(), "-noout", "-pubkey"]);
    assert_eq!(key_pub, cert_pub, "tls.key belongs to tls.crt");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["ca.key", "tls.key"] {
            let mode = std::fs::metadata(s.certs().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} must not be readable by others");
        }
    }
}

#[test]
fn make_certs_renews_with_the_same_ca_and_rotates_the_ca_with_overlap() {
    let s = StaticCerts::new();
    let ca_before = s.read("ca.crt");
    let tls_before = s.read("tls.crt");

    // Renewal: new serving certificate, same CA, so caBundle does not change.
    s.make_certs(&[]);
    assert_eq!(s.read("ca.crt"), ca_before);
    assert_ne!(s.read("tls.crt"), tls_before);
    let docs = kustomize(&s.overlay());
    assert_eq!(
        unb64(&webhook(&docs, "MutatingWebhookConfiguration")["clientConfig"]["caBundle"]),
        ca_before
    );

    // CA rotation: the bundle trusts the new and the previous CA.
    s.make_certs(&["--rotate-ca"]);
    let ca_after = s.read("ca.crt");
    assert_ne!(ca_after, ca_before);
    let docs = kustomize(&s.overlay());
    let bundle = unb64(&webhook(&docs, "MutatingWebhookConfiguration")["clientConfig"]["caBundle"]);
    assert_eq!(bundle, format!("{ca_after}{ca_before}"));

    // Bad input is refused before anything is written.
    let out = Command::new("bash")
        .arg(s.dir.path().join("deploy/certs/make-certs.sh"))
        .args(["--namespace", "Bad_Name"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--namespace is not supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// matchConditions, evaluated
//
// The expression is evaluated with the `cel` crate (cel-rust), a CEL interpreter independent of the API server's
// cel-go. It checks the logic (which updates are sent), not the API server's type checking or cost estimation:
// the e2e suite registers these very configurations with a real kube-apiserver.

fn send(expression: &str, operation: &str, object: Value, old: Value) -> bool {
    // The API server's CEL environment includes the strings extension (lowerAscii).
    let mut env = cel::Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension");
    let env = std::sync::Arc::new(env);
    let program = env.compile(expression).expect("the matchCondition parses");
    let mut ctx = cel::Context::with_env(env);
    ctx.add_variable("request", json!({"operation": operation}))
        .unwrap();
    ctx.add_variable("object", object).unwrap();
    ctx.add_variable("oldObject", old).unwrap();
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => b,
        other => panic!("matchCondition did not yield a bool: {other:?}"),
    }
}

fn kcp(labels: Value, annotations: Value, spec: Value) -> Value {
    let mut meta =
        json!({"name": "c1-control-plane", "namespace": "tenants", "resourceVersion": "1"});
    if !labels.is_null() {
        meta["labels"] = labels;
    }
    if !annotations.is_null() {
        meta["annotations"] = annotations;
    }
    let mut obj = json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane", "metadata": meta});
    if !spec.is_null() {
        obj["spec"] = spec;
    }
    obj
}

#[test]
fn match_conditions_send_creates_and_relevant_updates_only() {
    let docs = base();
    let expr = match_condition(&docs, "MutatingWebhookConfiguration");
    let spec = json!({"replicas": 3, "version": "v1.33.0", "kubeadmConfigSpec": {"preKubeadmCommands": ["echo hi"]}});
    let spec_scaled = json!({"replicas": 5, "version": "v1.33.0", "kubeadmConfigSpec": {"preKubeadmCommands": ["echo hi"]}});
    let calico = json!({"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true", "capi-calico.io/INSTALL_CALICOCTL": "true"});
    let calico_changed = json!({"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true", "capi-calico.io/INSTALL_CALICOCTL": "false"});
    let with_other = |base: &Value, key: &str, value: &str| {
        let mut m = base.clone();
        m[key] = json!(value);
        m
    };
    let n = Value::Null;

    struct Case {
        what: &'static str,
        op: &'static str,
        new: Value,
        old: Value,
        want: bool,
    }
    let cases = vec![
        Case {
            what: "CREATE without annotations or labels",
            op: "CREATE",
            new: kcp(n.clone(), n.clone(), spec.clone()),
            old: n.clone(),
            want: true,
        },
        Case {
            what: "CREATE of a KCT-like object without spec",
            op: "CREATE",
            new: kcp(n.clone(), n.clone(), n.clone()),
            old: n.clone(),
            want: true,
        },
        Case {
            what: "UPDATE, nothing but metadata bookkeeping, no annotations anywhere",
            op: "UPDATE",
            new: {
                let mut o = kcp(n.clone(), n.clone(), spec.clone());
                o["metadata"]["resourceVersion"] = json!("2");
                o["metadata"]["finalizers"] = json!(["kubeadm.controlplane.cluster.x-k8s.io"]);
                o["metadata"]["ownerReferences"] = json!([{"kind": "Cluster", "name": "c1"}]);
                o
            },
            old: kcp(n.clone(), n.clone(), spec.clone()),
            want: false,
        },
        Case {
            what: "UPDATE of spec (scale)",
            op: "UPDATE",
            new: kcp(n.clone(), n.clone(), spec_scaled.clone()),
            old: kcp(n.clone(), n.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE adding spec to an object without one",
            op: "UPDATE",
            new: kcp(n.clone(), n.clone(), json!({})),
            old: kcp(n.clone(), n.clone(), n.clone()),
            want: true,
        },
        Case {
            what: "UPDATE of an object without spec, metadata only",
            op: "UPDATE",
            new: kcp(json!({"x": "y"}), n.clone(), n.clone()),
            old: kcp(n.clone(), n.clone(), n.clone()),
            want: false,
        },
        Case {
            what: "UPDATE adding an unrelated label",
            op: "UPDATE",
            new: kcp(json!({"team": "a"}), calico.clone(), spec.clone()),
            old: kcp(n.clone(), calico.clone(), spec.clone()),
            want: false,
        },
        Case {
            what: "UPDATE changing an unrelated annotation next to ours",
            op: "UPDATE",
            new: kcp(n.clone(), with_other(&calico, "note", "b"), spec.clone()),
            old: kcp(n.clone(), with_other(&calico, "note", "a"), spec.clone()),
            want: false,
        },
        Case {
            what: "UPDATE adding the first unrelated annotation",
            op: "UPDATE",
            new: kcp(n.clone(), json!({"note": "a"}), spec.clone()),
            old: kcp(n.clone(), n.clone(), spec.clone()),
            want: false,
        },
        Case {
            what: "UPDATE changing one of our annotations",
            op: "UPDATE",
            new: kcp(n.clone(), calico_changed.clone(), spec.clone()),
            old: kcp(n.clone(), calico.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE adding one of our annotations with the prefix in another case",
            op: "UPDATE",
            new: kcp(
                n.clone(),
                with_other(&calico, "Capi-Calico.io/CALICO_NAT_OUTGOING", "Disabled"),
                spec.clone(),
            ),
            old: kcp(n.clone(), calico.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE removing an annotation with the prefix in another case",
            op: "UPDATE",
            new: kcp(n.clone(), json!({"note": "a"}), spec.clone()),
            old: kcp(
                n.clone(),
                json!({"note": "a", "CAPI-CALICO.IO/CALICO_NAT_OUTGOING": "Disabled"}),
                spec.clone(),
            ),
            want: true,
        },
        Case {
            what: "topology dry run of the current object (nothing else changes)",
            op: "UPDATE",
            new: kcp(
                n.clone(),
                with_other(&calico, "topology.cluster.x-k8s.io/dry-run", ""),
                spec.clone(),
            ),
            old: kcp(n.clone(), calico.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE adding our annotations to an object without annotations",
            op: "UPDATE",
            new: kcp(n.clone(), calico.clone(), spec.clone()),
            old: kcp(n.clone(), n.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE removing all annotations, ours among them",
            op: "UPDATE",
            new: kcp(n.clone(), n.clone(), spec.clone()),
            old: kcp(n.clone(), calico.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE removing one of our annotations, others stay",
            op: "UPDATE",
            new: kcp(n.clone(), json!({"note": "a"}), spec.clone()),
            old: kcp(n.clone(), with_other(&calico, "note", "a"), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE by the Cluster controller adding cluster-name",
            op: "UPDATE",
            new: kcp(
                json!({"cluster.x-k8s.io/cluster-name": "c1"}),
                n.clone(),
                spec.clone(),
            ),
            old: kcp(n.clone(), n.clone(), spec.clone()),
            want: true,
        },
        Case {
            what: "UPDATE keeping cluster-name, adding another label",
            op: "UPDATE",
            new: kcp(
                json!({"cluster.x-k8s.io/cluster-name": "c1", "x": "1"}),
                n.clone(),
                spec.clone(),
            ),
            old: kcp(
                json!({"cluster.x-k8s.io/cluster-name": "c1"}),
                n.clone(),
                spec.clone(),
            ),
            want: false,
        },
        Case {
            what: "UPDATE removing our capi-calico.io/cluster label",
            op: "UPDATE",
            new: kcp(json!({"x": "1"}), calico.clone(), spec.clone()),
            old: kcp(
                json!({"x": "1", "capi-calico.io/cluster": "c1"}),
                calico.clone(),
                spec.clone(),
            ),
            want: true,
        },
        Case {
            what: "UPDATE by the template linker changing capi-calico.io/refresh",
            op: "UPDATE",
            new: kcp(
                json!({"capi-calico.io/cluster": "c1", "capi-calico.io/refresh": "0123456789abcdef"}),
                n.clone(),
                spec.clone(),
            ),
            old: kcp(
                json!({"capi-calico.io/cluster": "c1"}),
                n.clone(),
                spec.clone(),
            ),
            want: true,
        },
        Case {
            what: "UPDATE keeping capi-calico.io/refresh",
            op: "UPDATE",
            new: kcp(
                json!({"capi-calico.io/refresh": "0123456789abcdef", "x": "2"}),
                n.clone(),
                spec.clone(),
            ),
            old: kcp(
                json!({"capi-calico.io/refresh": "0123456789abcdef", "x": "1"}),
                n.clone(),
                spec.clone(),
            ),
            want: false,
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let got = send(&expr, case.op, case.new, case.old);
        if got != case.want {
            failures.push(format!(
                "{}: expected {}, got {}",
                case.what, case.want, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "matchCondition table:\n{}",
        failures.join("\n")
    );
}

/// The Deployment's command line is one the binary accepts, and the server it describes keeps its drain inside the
/// pod's termination grace period.
#[test]
fn deployment_args_are_accepted_by_the_binary() {
    use clap::Parser;

    let docs = base();
    let dep = find(&docs, "Deployment", SERVICE);
    let pod = &dep["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    let cli = capi_calico_webhook::cli::Cli::try_parse_from(
        std::iter::once("capi-calico-webhook".to_string()).chain(args),
    )
    .unwrap_or_else(|e| panic!("the Deployment's args are rejected by the binary: {e}"));
    let capi_calico_webhook::cli::Command::Serve(serve) = cli.command else {
        panic!("the Deployment must run `serve`");
    };
    let config = serve.server_config().expect("server config");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    let pre_stop = container
        .pointer("/lifecycle/preStop/sleep/seconds")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let needed = pre_stop + (config.shutdown_delay + config.drain_timeout).as_secs();
    assert!(
        needed < grace,
        "preStop {pre_stop}s + drain {needed}s must fit in {grace}s"
    );
    assert!(
        config.request_timeout.as_secs() < webhook_timeout_seconds(&docs),
        "the server's request deadline must be below the webhook timeoutSeconds"
    );
}

fn webhook_timeout_seconds(docs: &[Value]) -> u64 {
    [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .iter()
    .flat_map(|kind| {
        find(docs, kind, SERVICE)["webhooks"]
            .as_array()
            .expect("webhooks")
            .iter()
            .map(|w| w["timeoutSeconds"].as_u64().expect("timeoutSeconds"))
            .collect::<Vec<_>>()
    })
    .min()
    .expect("at least one webhook")
}
