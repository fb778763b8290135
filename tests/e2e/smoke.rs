//! Smoke scenarios: the control plane, the CAPI CRDs and kubectl behave as the webhook scenarios
//! will rely on. None of these needs our webhook, except `webhook_serve_smoke`.

use std::time::Duration;

use serde_json::Value;

use crate::Scenario;
use crate::harness::{Harness, Output, TestResult, repo_root, yaml_docs};

pub const SCENARIOS: &[Scenario] = &[
    ("control_plane_and_crds", control_plane_and_crds),
    (
        "v1beta2_classic_cluster_apply_and_read_back",
        v1beta2_classic_cluster_apply_and_read_back,
    ),
    (
        "v1beta1_objects_without_conversion_webhook",
        v1beta1_objects_without_conversion_webhook,
    ),
    ("reapply_keeps_generation", reapply_keeps_generation),
    (
        "webhook_registration_reaches_127_0_0_1",
        webhook_registration_reaches_127_0_0_1,
    ),
    ("webhook_serve_smoke", webhook_serve_smoke),
];

pub fn fixture(name: &str) -> TestResult<String> {
    let p = repo_root().join("tests/e2e/fixtures").join(name);
    std::fs::read_to_string(&p).map_err(|e| fail!("{}: {e}", p.display()))
}

/// `kind.version.group` for kubectl (e.g. `kubeadmcontrolplane.v1beta1.controlplane.cluster.x-k8s.io`),
/// so a read-back uses exactly the version that was written.
pub fn qualified(obj: &Value) -> String {
    let api = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default().to_lowercase();
    match api.split_once('/') {
        Some((group, version)) => format!("{kind}.{version}.{group}"),
        None => kind,
    }
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// Every field of `expected` is in `actual` with the same value (arrays: same length, each
/// element contained). Returns the JSON paths that differ.
pub fn contains(actual: &Value, expected: &Value, path: &str, diffs: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => contains(av, ev, &format!("{path}.{k}"), diffs),
                    None => diffs.push(format!("{path}.{k}: missing (expected {ev})")),
                }
            }
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => {
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                contains(av, ev, &format!("{path}[{i}]"), diffs);
            }
        }
        (a, e) if a == e => {}
        (a, e) => diffs.push(format!("{path}: got {a}, expected {e}")),
    }
}

fn ensure_contains(actual: &Value, expected: &Value, what: &str) -> TestResult {
    let mut diffs = Vec::new();
    contains(actual, expected, "", &mut diffs);
    ensure!(
        diffs.is_empty(),
        "{what} differs from what was applied:\n  {}",
        diffs.join("\n  ")
    );
    Ok(())
}

/// `metadata.generation` and `metadata.resourceVersion` of the stored `obj`: equal pairs mean nothing was written.
pub fn generation_and_rv(h: &Harness, obj: &Value, ns: &str) -> TestResult<(i64, String)> {
    let got = h.get_json(&qualified(obj), ns, name_of(obj))?;
    Ok((
        got["metadata"]["generation"].as_i64().unwrap_or(-1),
        got["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

// ---------------------------------------------------------------------------------------------

/// Server and client versions match, and every CAPI CRD is installed without a conversion
/// webhook (the API server defaults `spec.conversion.strategy` to `None`).
fn control_plane_and_crds(h: &mut Harness) -> TestResult {
    let v: Value = serde_json::from_str(&h.kubectl_ok(&["version", "-o", "json"], None)?)?;
    let server = v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    let client = v["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        server == client && server.starts_with("v1."),
        "kubectl {client} vs kube-apiserver {server}"
    );
    ensure!(!h.crds.is_empty(), "no CRDs installed");
    for name in h.crds.clone() {
        let crd: Value =
            serde_json::from_str(&h.kubectl_ok(&["get", "crd", &name, "-o", "json"], None)?)?;
        let strategy = crd["spec"]["conversion"]["strategy"]
            .as_str()
            .unwrap_or("<unset>");
        ensure!(strategy == "None", "{name}: conversion strategy {strategy}");
        let storage: Vec<&str> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .filter_map(|v| v["name"].as_str())
            .collect();
        ensure!(
            storage == ["v1beta2"],
            "{name}: storage versions {storage:?}"
        );
    }
    for kind in [
        "clusters.cluster.x-k8s.io",
        "machinedeployments.cluster.x-k8s.io",
        "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
        "kubeadmconfigtemplates.bootstrap.cluster.x-k8s.io",
    ] {
        ensure!(h.crds.iter().any(|c| c == kind), "CRD {kind} not installed");
    }
    Ok(())
}

/// `kubectl apply -f` of a v1beta2 classic cluster (Cluster, KCP, KCT, MachineDeployment), then
/// every object read back with `kubectl get -o json` contains exactly what was applied.
fn v1beta2_classic_cluster_apply_and_read_back(h: &mut Harness) -> TestResult {
    let ns = h.create_namespace("smoke-v1beta2")?;
    let yaml = fixture("classic-v1beta2.yaml")?;
    let out = h.apply(&ns, &yaml)?;
    let docs = yaml_docs(&yaml)?;
    ensure!(docs.len() == 4, "fixture has {} documents", docs.len());
    for d in &docs {
        ensure!(
            out.stdout.contains(&format!("/{} created", name_of(d))),
            "apply output does not mention {} created:\n{}",
            name_of(d),
            out.stdout
        );
        let got = h.get_json(&qualified(d), &ns, name_of(d))?;
        ensure!(
            got["apiVersion"] == d["apiVersion"],
            "apiVersion {}",
            got["apiVersion"]
        );
        ensure!(
            got["metadata"]["generation"] == 1,
            "generation {}",
            got["metadata"]["generation"]
        );
        ensure_contains(&got["spec"], &d["spec"], &format!("{} spec", d["kind"]))?;
        ensure_contains(
            &got["metadata"]["labels"],
            &d["metadata"]["labels"],
            "labels",
        )?;
        // and nothing else crept into spec (the API server adds no defaults to these fields)
        let mut extra = Vec::new();
        contains(&d["spec"], &got["spec"], "", &mut extra);
        ensure!(
            extra.is_empty(),
            "{} spec has more than applied: {extra:?}",
            d["kind"]
        );
    }
    Ok(())
}

/// What the API server does with v1beta1 objects when the CRDs' conversion strategy is `None`
/// (no CAPI conversion webhook). Asserts the behaviour found with v1.37.2 + CAPI v1.14.0 CRDs;
/// e2e/README.md "Findings" explains it.
fn v1beta1_objects_without_conversion_webhook(h: &mut Harness) -> TestResult {
    let ns = h.create_namespace("smoke-v1beta1")?;
    let yaml = fixture("classic-v1beta1.yaml")?;
    let docs = yaml_docs(&yaml)?;
    // (1) accepted: validated against the v1beta1 schema, with a deprecation warning
    let out = h.apply_server_side(&ns, &yaml, "e2e-smoke")?;
    ensure!(
        out.stderr.contains("KubeadmControlPlane is deprecated"),
        "no deprecation warning: {}",
        out.stderr
    );

    let mut stored_specs = Vec::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let (group, _) = d["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .split_once('/')
            .unwrap_or_default();
        let resource = format!("{group}/{}s", kind.to_lowercase());
        let stored = h
            .etcd_get(&resource, &ns, name_of(d))?
            .ok_or_else(|| fail!("{kind} not in etcd"))?;
        // (2) stored as the storage version: only apiVersion is rewritten ...
        ensure!(
            stored["apiVersion"] == format!("{group}/v1beta2").as_str(),
            "{kind} stored as {}",
            stored["apiVersion"]
        );
        // ... and every field the v1beta2 schema does not know is pruned (nothing is converted)
        let mut missing = Vec::new();
        contains(&stored["spec"], &d["spec"], ".spec", &mut missing);
        let mut extra = Vec::new();
        contains(&d["spec"], &stored["spec"], ".spec", &mut extra);
        ensure!(
            extra.is_empty(),
            "{kind}: stored spec has fields the manifest lacks: {extra:?}"
        );
        println!(
            "  {kind}: {} v1beta1-only field(s) dropped: {}",
            missing.len(),
            missing.join("; ")
        );
        // (3) both versions read back the stored content, only apiVersion differs
        for version in ["v1beta1", "v1beta2"] {
            let q = format!("{}.{version}.{group}", kind.to_lowercase());
            let got = h.get_json(&q, &ns, name_of(d))?;
            ensure!(
                got["apiVersion"] == format!("{group}/{version}").as_str(),
                "{q}: {}",
                got["apiVersion"]
            );
            ensure!(
                got["spec"] == stored["spec"],
                "{q} differs from etcd: {} vs {}",
                got["spec"],
                stored["spec"]
            );
        }
        stored_specs.push(stored["spec"].clone());
    }
    let (cluster, kcp, kct) = (&stored_specs[0], &stored_specs[1], &stored_specs[2]);
    ensure!(
        cluster["controlPlaneRef"]
            == serde_json::json!({"kind": "KubeadmControlPlane", "name": "legacy-control-plane"}),
        "Cluster controlPlaneRef {}",
        cluster["controlPlaneRef"]
    );
    ensure!(
        kcp["machineTemplate"] == serde_json::json!({}),
        "KCP machineTemplate {}",
        kcp["machineTemplate"]
    );
    ensure!(
        kcp["kubeadmConfigSpec"]["clusterConfiguration"]["apiServer"]["extraArgs"]
            == serde_json::json!({}),
        "KCP extraArgs {}",
        kcp["kubeadmConfigSpec"]["clusterConfiguration"]
    );
    // the fields the webhook injects into have the same shape in both versions and survive
    for (spec, want) in [
        (
            &kcp["kubeadmConfigSpec"],
            &docs[1]["spec"]["kubeadmConfigSpec"],
        ),
        (
            &kct["template"]["spec"],
            &docs[2]["spec"]["template"]["spec"],
        ),
    ] {
        for f in ["preKubeadmCommands", "files"] {
            ensure!(
                spec[f] == want[f],
                "{f}: stored {} vs applied {}",
                spec[f],
                want[f]
            );
        }
    }

    // (4) the stored objects violate the v1beta2 schema: an update through v1beta2 (kubectl
    // label, a merge patch) is rejected for the KCT; through v1beta1 it works
    let out = h.kubectl(
        &[
            "label",
            "kubeadmconfigtemplate.v1beta2.bootstrap.cluster.x-k8s.io",
            "legacy-md-0",
            "-n",
            &ns,
            "e2e=v1beta2",
        ],
        None,
    )?;
    ensure!(
        !out.success && out.stderr.contains("kubeletExtraArgs"),
        "label via v1beta2: {out:?}"
    );
    h.kubectl_ok(
        &[
            "label",
            "kubeadmconfigtemplate.v1beta1.bootstrap.cluster.x-k8s.io",
            "legacy-md-0",
            "-n",
            &ns,
            "e2e=v1beta1",
        ],
        None,
    )?;

    // (5) re-applying the identical v1beta1 manifest bumps metadata.generation although the
    // stored spec does not change (generation is computed before the storage pruning)
    let before: Vec<i64> = docs
        .iter()
        .map(|d| generation_and_rv(h, d, &ns).map(|g| g.0))
        .collect::<TestResult<_>>()?;
    h.apply_server_side(&ns, &yaml, "e2e-smoke")?;
    for (i, d) in docs.iter().enumerate() {
        let (gen_after, _) = generation_and_rv(h, d, &ns)?;
        ensure!(
            gen_after == before[i] + 1,
            "{}: generation {} -> {gen_after}",
            d["kind"],
            before[i]
        );
        let q2 = qualified(d).replace(".v1beta1.", ".v1beta2.");
        ensure!(
            h.get_json(&q2, &ns, name_of(d))?["spec"] == stored_specs[i],
            "{}: spec changed",
            d["kind"]
        );
    }
    Ok(())
}

/// Applying the same manifest again, client-side and server-side, changes nothing: same
/// `metadata.generation`, same resourceVersion (no write at all).
fn reapply_keeps_generation(h: &mut Harness) -> TestResult {
    let yaml = fixture("classic-v1beta2.yaml")?;
    let docs = yaml_docs(&yaml)?;

    // server-side apply twice
    let ns = h.create_namespace("smoke-ssa")?;
    h.apply_server_side(&ns, &yaml, "e2e-smoke")?;
    unchanged_by_second_apply(h, &docs, &ns, "SSA", "serverside-applied", || {
        h.apply_server_side(&ns, &yaml, "e2e-smoke")
    })?;

    // client-side apply twice
    let ns = h.create_namespace("smoke-csa")?;
    h.apply(&ns, &yaml)?;
    unchanged_by_second_apply(h, &docs, &ns, "apply", " unchanged", || h.apply(&ns, &yaml))?;
    Ok(())
}

/// Re-apply with `apply` (the documents are already applied in `ns`): kubectl reports `says` for each of the four
/// documents, and every object keeps generation 1 and its resourceVersion (nothing was written).
fn unchanged_by_second_apply(
    h: &Harness,
    docs: &[Value],
    ns: &str,
    what: &str,
    says: &str,
    apply: impl FnOnce() -> TestResult<Output>,
) -> TestResult {
    let first: Vec<(i64, String)> = docs
        .iter()
        .map(|d| generation_and_rv(h, d, ns))
        .collect::<TestResult<_>>()?;
    let out = apply()?;
    ensure!(
        out.stdout.matches(says).count() == 4,
        "second {what}:\n{}",
        out.stdout
    );
    for (d, before) in docs.iter().zip(&first) {
        let after = generation_and_rv(h, d, ns)?;
        ensure!(
            before.0 == 1 && after == *before,
            "{} after a second {what}: {before:?} -> {after:?}",
            d["kind"]
        );
    }
    Ok(())
}

/// The registration helper without our server: register the sample configs (rewritten to
/// https://127.0.0.1:PORT/...) with nothing listening on PORT. The stored configs carry the URL
/// and CA, and the API server really calls that URL (failurePolicy Fail => the apply is
/// rejected with "failed calling webhook ... https://127.0.0.1:PORT/mutate"). After
/// unregistering, the same apply passes.
fn webhook_registration_reaches_127_0_0_1(h: &mut Harness) -> TestResult {
    let ns = h.create_namespace("smoke-whreg")?;
    h.kubectl_ok(
        &["label", "namespace", &ns, "capi-calico-e2e/webhook=sample"],
        None,
    )?;
    let port = crate::harness::free_port()?; // nothing listens here
    let ids = h.register_webhooks(&fixture("webhook-configs.sample.yaml")?, port)?;
    let res = (|| -> TestResult {
        let m: Value = serde_json::from_str(&h.kubectl_ok(
            &[
                "get",
                "mutatingwebhookconfiguration",
                "capi-calico-e2e-sample",
                "-o",
                "json",
            ],
            None,
        )?)?;
        let hook = &m["webhooks"][0];
        let url = format!("https://127.0.0.1:{port}/mutate");
        ensure!(
            hook["clientConfig"]["url"] == url.as_str(),
            "clientConfig {}",
            hook["clientConfig"]
        );
        ensure!(
            hook["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "no caBundle"
        );
        ensure!(
            hook["clientConfig"].get("service").is_none(),
            "service kept"
        );
        ensure!(
            hook["failurePolicy"] == "Fail" && hook["matchPolicy"] == "Equivalent",
            "policy changed: {hook}"
        );

        let cluster = fixture("classic-v1beta2.yaml")?;
        let cluster = cluster.split("\n---").next().unwrap_or_default();
        // the API server learns about new configs through an informer: retry for a while
        let out = dry_run_until(h, &ns, cluster, "the webhook called", |out| {
            !out.success && out.stderr.contains("failed calling webhook")
        })?;
        ensure!(
            out.stderr.contains("mutate.e2e-sample.capi-calico.io") && out.stderr.contains(&url),
            "unexpected error: {}",
            out.stderr
        );
        Ok(())
    })();
    h.unregister_webhooks(&ids)?;
    res?;
    let cluster = fixture("classic-v1beta2.yaml")?;
    let cluster = cluster.split("\n---").next().unwrap_or_default();
    dry_run_until(h, &ns, cluster, "accepted after unregistering", |out| {
        out.success
    })?;
    Ok(())
}

/// `kubectl apply --dry-run=server` of `yaml` in `ns`, again every 200 ms for up to 20 s until `done` holds for its
/// output (the API server learns of webhook configurations through an informer, a moment after they are written).
fn dry_run_until(
    h: &Harness,
    ns: &str,
    yaml: &str,
    what: &str,
    done: impl Fn(&crate::harness::Output) -> bool,
) -> TestResult<crate::harness::Output> {
    let start = std::time::Instant::now();
    loop {
        let out = h.kubectl(
            &["apply", "--dry-run=server", "-n", ns, "-f", "-"],
            Some(yaml),
        )?;
        if done(&out) {
            return Ok(out);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "never {what}; last: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Start `capi-calico-webhook serve` and register it (E2E_WEBHOOK_CONFIG or the sample config): a Cluster with an
/// invalid master switch is then denied with the webhook's message (so the webhook is in the path), and a
/// server-side dry-run apply of the classic cluster passes through it.
fn webhook_serve_smoke(h: &mut Harness) -> TestResult {
    let config = match std::env::var("E2E_WEBHOOK_CONFIG") {
        Ok(p) => std::fs::read_to_string(&p).map_err(|e| fail!("{p}: {e}"))?,
        Err(_) => fixture("webhook-configs.sample.yaml")?,
    };
    let ns = h.create_namespace("smoke-serve")?;
    h.kubectl_ok(
        &["label", "namespace", &ns, "capi-calico-e2e/webhook=sample"],
        None,
    )?;
    let port = h.start_webhook(&[])?;
    let ids = h.register_webhooks(&config, port)?;
    // The API server picks new webhook configurations up through an informer: wait until a Cluster the webhook must
    // deny is denied by it.
    let invalid = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: smoke-invalid\n  \
                   annotations:\n    capi-calico.io/CUSTOM_CALICO_DEPLOYMENT: \"maybe\"\n";
    let yaml = fixture("classic-v1beta2.yaml")?;
    let res = dry_run_until(h, &ns, invalid, "denied an invalid master switch", |out| {
        !out.success
            && out
                .stderr
                .contains("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT")
    })
    .and_then(|_| {
        dry_run_until(h, &ns, &yaml, "applied through the webhook", |out| {
            out.success
        })
    });
    h.unregister_webhooks(&ids)?;
    h.stop(crate::webhook::WEBHOOK_PROC);
    res.map(|_| ())
}
