//! Calico delivery (issue 6) through the real API server: the reconciler in `serve` (running as a
//! user with only the shipped RBAC, see [`crate::calico::ensure_webhook`]) writes the bundle
//! copies, the Installation ConfigMap and the ClusterResourceSet of opted-in Clusters; deleting
//! the Cluster removes them through kube-controller-manager's garbage collector (built by
//! `e2e/build-tools.sh` from the same wrapper module; without it the ownerReferences are asserted
//! and the deletion part is skipped with a notice).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Scenario;
use crate::calico::{CLUSTER_LABEL, STATUS_ANNOTATION, e2e_fixture, ensure_webhook, to_yaml};
use crate::harness::{Harness, Proc, TestResult, free_port, repo_root, yaml_docs};
use crate::smoke::name_of;
use crate::webhook::webhook_binary;

pub const SCENARIOS: &[Scenario] = &[
    (
        "delivery_opted_in_cluster_gets_crs_installation_bundle",
        delivery_opted_in_cluster_gets_crs_installation_bundle,
    ),
    (
        "delivery_bundle_missing_reported_on_cluster",
        delivery_bundle_missing_reported_on_cluster,
    ),
    (
        "delivery_apply_failure_reported_on_cluster",
        delivery_apply_failure_reported_on_cluster,
    ),
    (
        "delivery_real_calico_operator_bundle",
        delivery_real_calico_operator_bundle,
    ),
    (
        "delivery_version_change_retires_the_old_copies",
        delivery_version_change_retires_the_old_copies,
    ),
    (
        "rbac_shipped_roles_sufficient_and_used",
        rbac_shipped_roles_sufficient_and_used,
    ),
    (
        "policy_narrows_the_webhooks_own_writes",
        policy_narrows_the_webhooks_own_writes,
    ),
];

const BUNDLE_NS: &str = "capi-calico-system";
const VERSION: &str = "v3.31.7";
const KCM: &str = "kube-controller-manager";

/// `capi-calico-webhook bundle` of the synthetic operator manifests, applied server-side into
/// `capi-calico-system` as the docs say. Returns the bundle ConfigMaps as loaded.
fn load_synthetic_bundle(h: &Harness, version: &str) -> TestResult<Vec<Value>> {
    let dir = repo_root().join("tests/fixtures/delivery");
    load_bundle(
        h,
        &dir.join("synthetic-operator.yaml"),
        &dir.join("synthetic-crds.yaml"),
        version,
        &[],
    )
}

/// `capi-calico-webhook bundle --operator OPERATOR --crds CRDS --version VERSION [EXTRA...] | kubectl apply
/// --server-side -f -`, then the loaded ConfigMaps in index order.
fn load_bundle(
    h: &Harness,
    operator: &std::path::Path,
    crds: &std::path::Path,
    version: &str,
    extra: &[&str],
) -> TestResult<Vec<Value>> {
    let out = Command::new(webhook_binary())
        .args(["bundle", "--operator"])
        .arg(operator)
        .arg("--crds")
        .arg(crds)
        .args(["--version", version])
        .args(extra)
        .stderr(Stdio::piped())
        .output()?;
    ensure!(
        out.status.success(),
        "bundle: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8(out.stdout)?;
    h.kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=capi-calico-bundle",
            "-f",
            "-",
        ],
        Some(&list),
    )?
    .check("kubectl apply --server-side (bundle)")?;
    let sel = format!("capi-calico.io/calico-version={version}");
    let got: Value = serde_json::from_str(&h.kubectl_ok(
        &["get", "cm", "-n", BUNDLE_NS, "-l", &sel, "-o", "json"],
        None,
    )?)?;
    let mut items = got["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|c| {
        c["metadata"]["annotations"]["capi-calico.io/bundle-index"]
            .as_str()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    ensure!(
        items.len() >= 2,
        "bundle: {} ConfigMaps loaded",
        items.len()
    );
    Ok(items)
}

fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> TestResult<Option<T>>) -> TestResult<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        ensure!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn list(h: &Harness, resource: &str, ns: &str) -> TestResult<Vec<Value>> {
    let v: Value =
        serde_json::from_str(&h.kubectl_ok(&["get", resource, "-n", ns, "-o", "json"], None)?)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// `kind/<field>` of each entry of a list of references (ownerReferences, a CRS's resources).
fn kind_and(references: &Value, field: &str) -> Vec<String> {
    references
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or("?"),
                r[field].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn status_of(cluster: &Value) -> Option<Value> {
    cluster["metadata"]["annotations"][STATUS_ANNOTATION]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Poll (up to `secs`) until Cluster `ns/name` reports `reason` in its delivery status: the Cluster, and that status.
fn reported(
    h: &Harness,
    ns: &str,
    name: &str,
    reason: &str,
    secs: u64,
) -> TestResult<(Value, Value)> {
    poll(&format!("{reason} on Cluster {name}"), secs, || {
        let c = h.get_json("clusters.cluster.x-k8s.io", ns, name)?;
        Ok(status_of(&c)
            .filter(|s| s["reason"] == reason)
            .map(|s| (c, s)))
    })
}

/// resourceVersion of every ConfigMap and ClusterResourceSet in `ns`, plus the Cluster's.
fn versions(h: &Harness, ns: &str) -> TestResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for r in ["configmaps", "clusterresourcesets", "clusters"] {
        for o in list(h, r, ns)? {
            out.insert(
                format!("{r}/{}", name_of(&o)),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    Ok(out)
}

/// Start kube-controller-manager with only the garbage collector, if it was built. `None` (and a
/// notice) when the binary is missing.
fn ensure_gc(h: &mut Harness) -> TestResult<Option<()>> {
    if h.proc(KCM).is_some() {
        return Ok(Some(()));
    }
    let bin = h
        .tools
        .kubectl
        .parent()
        .map(|d| d.join(KCM))
        .unwrap_or_default();
    if !bin.exists() {
        // scripts/test.sh builds it and sets this: there, a skip would hide a missing check.
        if std::env::var_os("CAPI_CALICO_REQUIRE_TEST_TOOLS").is_some_and(|v| v == "1") {
            return Err(format!(
                "{} not built, and CAPI_CALICO_REQUIRE_TEST_TOOLS=1",
                bin.display()
            )
            .into());
        }
        println!(
            "  NOTICE: {} not built (e2e/build-tools.sh builds it); garbage collection not run, ownerReferences asserted only",
            bin.display()
        );
        return Ok(None);
    }
    let args: Vec<String> = vec![
        format!("--kubeconfig={}", h.kubeconfig.display()),
        "--controllers=garbagecollector".into(),
        "--use-service-account-credentials=false".into(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()?),
        format!("--cert-dir={}", h.dir().join("kcm-certs").display()),
        format!("--authentication-kubeconfig={}", h.kubeconfig.display()),
        format!("--authorization-kubeconfig={}", h.kubeconfig.display()),
        "--concurrent-gc-syncs=5".into(),
        "-v=1".into(),
    ];
    let log = h.dir().join("logs/kube-controller-manager.log");
    let mut p = Proc::spawn(KCM, &bin, &args, log)?;
    std::thread::sleep(Duration::from_millis(500));
    if let Some(st) = p.exited() {
        return Err(fail!(
            "kube-controller-manager exited ({st}):\n{}",
            p.log_tail(30)
        ));
    }
    h.procs.push(p);
    Ok(Some(()))
}

/// Apply an opted-in Cluster and check what the reconciler writes, field by field; re-applying
/// and an unrelated Cluster update change nothing; a Cluster that is not opted in gets nothing;
/// deleting the Clusters removes what they owned (garbage collector).
fn delivery_opted_in_cluster_gets_crs_installation_bundle(h: &mut Harness) -> TestResult {
    ensure_webhook(h)?;
    let bundle = load_synthetic_bundle(h, VERSION)?;
    let gc = ensure_gc(h)?;
    let ns = h.create_namespace("delivery")?;
    let docs = yaml_docs(&e2e_fixture("classic-calico.yaml")?)?;
    let cluster = docs[0].clone();
    let mut second = cluster.clone();
    second["metadata"]["name"] = json!("calico-b");
    let cyaml = to_yaml(std::slice::from_ref(&cluster));
    h.apply(&ns, &cyaml)?;
    h.apply(&ns, &second.to_string())?;
    let t = Instant::now();
    let (stored, _) = reported(h, &ns, "calico", "Delivered", 30)?;
    println!("  delivered in {:.1}s", t.elapsed().as_secs_f64());
    let status = status_of(&stored).unwrap_or_default();
    ensure!(
        status["type"] == "CalicoDelivered" && status["status"] == "True",
        "status {status}"
    );
    let uid = stored["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owner = |controller: bool| {
        let mut o = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "calico", "uid": uid});
        if controller {
            o["controller"] = json!(true);
        }
        o
    };
    ensure!(
        stored["metadata"]["labels"][CLUSTER_LABEL] == "calico",
        "Cluster label {}",
        stored["metadata"]
    );

    // bundle copies: same data, labels and annotations as the loaded bundle, one owner per Cluster
    let (second_stored, _) = reported(h, &ns, "calico-b", "Delivered", 30)?;
    let b_uid = second_stored["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cms = list(h, "configmaps", &ns)?;
    let cm = |name: &str| -> TestResult<&Value> {
        cms.iter()
            .find(|c| name_of(c) == name)
            .ok_or_else(|| fail!("ConfigMap {name} not in {ns}"))
    };
    let mut names = Vec::new();
    for b in &bundle {
        let name = name_of(b);
        let copy = cm(name)?;
        ensure!(
            copy["data"] == b["data"],
            "{name}: data differs from the bundle"
        );
        for k in [
            "capi-calico.io/calico-version",
            "capi-calico.io/bundle-role",
        ] {
            ensure!(
                copy["metadata"]["labels"][k] == b["metadata"]["labels"][k],
                "{name}: label {k}"
            );
        }
        for k in [
            "capi-calico.io/bundle-index",
            "capi-calico.io/bundle-count",
            "capi-calico.io/bundle-digest",
        ] {
            ensure!(
                copy["metadata"]["annotations"][k] == b["metadata"]["annotations"][k],
                "{name}: annotation {k}"
            );
        }
        let mut owners: Vec<Value> = copy["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        owners.sort_by_key(|o| o["name"].as_str().unwrap_or_default().to_string());
        let mut b_owner = owner(false);
        b_owner["name"] = json!("calico-b");
        b_owner["uid"] = json!(b_uid);
        ensure!(
            owners == vec![owner(false), b_owner],
            "{name}: ownerReferences {owners:?}"
        );
        names.push(name.to_string());
    }
    ensure!(
        names.iter().take_while(|n| n.contains("-crds-")).count()
            + names.iter().filter(|n| n.contains("-operator-")).count()
            == names.len()
            && names.iter().any(|n| n.contains("-operator-")),
        "bundle chunk order {names:?}"
    );

    // the Installation ConfigMap
    let inst = cm("calico-calico-installation")?;
    ensure!(
        inst["metadata"]["ownerReferences"] == json!([owner(true)]),
        "installation ownerReferences {}",
        inst["metadata"]["ownerReferences"]
    );
    let keys: Vec<&String> = inst["data"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    ensure!(
        keys == ["00-installation.json", "01-apiserver.json"],
        "installation keys {keys:?}"
    );
    let installation: Value = serde_json::from_str(
        inst["data"]["00-installation.json"]
            .as_str()
            .unwrap_or("null"),
    )?;
    let apiserver: Value =
        serde_json::from_str(inst["data"]["01-apiserver.json"].as_str().unwrap_or("null"))?;
    ensure!(
        installation["apiVersion"] == "operator.tigera.io/v1"
            && installation["kind"] == "Installation"
            && installation["metadata"]["name"] == "default",
        "installation {installation}"
    );
    let net = &installation["spec"]["calicoNetwork"];
    let want_pool = json!({
        "name": "default-ipv4-ippool", "cidr": "192.168.0.0/17", "blockSize": 26,
        "encapsulation": "IPIPCrossSubnet", "natOutgoing": "Enabled", "nodeSelector": "all()"
    });
    ensure!(net["bgp"] == "Enabled", "bgp {}", net["bgp"]);
    ensure!(
        net["ipPools"] == json!([want_pool]),
        "ipPools {}",
        net["ipPools"]
    );
    ensure!(
        net["nodeAddressAutodetectionV4"] == json!({"kubernetes": "NodeInternalIP"})
            && net.get("nodeAddressAutodetectionV6").is_none(),
        "autodetection {net}"
    );
    ensure!(
        installation["spec"]["cni"] == json!({"type": "Calico", "ipam": {"type": "Calico"}}),
        "cni {}",
        installation["spec"]["cni"]
    );
    ensure!(
        apiserver["kind"] == "APIServer" && apiserver["metadata"]["name"] == "default",
        "apiserver {apiserver}"
    );

    // the ClusterResourceSet
    let crs = h.get_json(
        "clusterresourcesets.addons.cluster.x-k8s.io",
        &ns,
        "calico-calico",
    )?;
    ensure!(
        crs["apiVersion"] == "addons.cluster.x-k8s.io/v1beta2",
        "CRS apiVersion {}",
        crs["apiVersion"]
    );
    ensure!(
        crs["metadata"]["ownerReferences"] == json!([owner(true)]),
        "CRS ownerReferences {}",
        crs["metadata"]["ownerReferences"]
    );
    ensure!(
        crs["spec"]["clusterSelector"] == json!({"matchLabels": {CLUSTER_LABEL: "calico"}}),
        "CRS selector {}",
        crs["spec"]["clusterSelector"]
    );
    ensure!(
        crs["spec"]["strategy"] == "Reconcile",
        "strategy {}",
        crs["spec"]["strategy"]
    );
    let mut want_res: Vec<Value> = names
        .iter()
        .map(|n| json!({"kind": "ConfigMap", "name": n}))
        .collect();
    want_res.push(json!({"kind": "ConfigMap", "name": "calico-calico-installation"}));
    ensure!(
        crs["spec"]["resources"] == json!(want_res),
        "CRS resources {} (want {})",
        crs["spec"]["resources"],
        json!(want_res)
    );
    // the selector selects exactly this Cluster
    let sel = format!("{CLUSTER_LABEL}=calico");
    let selected = h.kubectl_ok(
        &["get", "clusters", "-n", &ns, "-l", &sel, "-o", "name"],
        None,
    )?;
    ensure!(
        selected.trim() == "cluster.cluster.x-k8s.io/calico",
        "CRS selector selects {selected:?}"
    );

    // Cluster API says in the set's status whether it applied it; the reconciler reads that (again every minute
    // until it says applied) and reports a failure on the Cluster. No CAPI controller runs here, so the status is
    // written as CAPI's would be: a pull Secret of the wrong type (CAPI then applies nothing of the set), then
    // applied. A metadata change of the Cluster makes the reconciler look at once.
    let crs_status = |status: &str, reason: &str, message: &str, touch: &str| -> TestResult {
        // For the set's current generation, as Cluster API writes it.
        let generation = h.get_json(
            "clusterresourcesets.addons.cluster.x-k8s.io",
            &ns,
            "calico-calico",
        )?["metadata"]["generation"]
            .clone();
        let patch = json!({"status": {"conditions": [{"type": "ResourcesApplied", "status": status,
            "reason": reason, "message": message, "lastTransitionTime": "2026-11-27T00:00:00Z",
            "observedGeneration": generation}]}});
        h.kubectl_ok(
            &[
                "patch",
                "-n",
                &ns,
                "clusterresourcesets.addons.cluster.x-k8s.io",
                "calico-calico",
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        )?;
        h.annotate_cluster(&ns, "calico", &format!("e2e/crs-check={touch}"))?
            .check("kubectl annotate")?;
        Ok(())
    };
    crs_status(
        "False",
        "WrongSecretType",
        "Secret type of resource calico-pull is not supported",
        "1",
    )?;
    let (_, failed) = reported(h, &ns, "calico", "NotApplied", 30)?;
    let message = failed["message"].as_str().unwrap_or_default();
    ensure!(
        failed["status"] == "False"
            && message.contains("has not applied the ClusterResourceSet calico-calico")
            && message
                .contains("WrongSecretType: Secret type of resource calico-pull is not supported")
            && message.contains("addons.cluster.x-k8s.io/resource-set"),
        "{failed}"
    );
    // A change of the set (here: the Cluster gains a pull Secret, which the set lists) makes that verdict stale; the
    // status stays NotApplied until Cluster API has looked at the new generation, instead of flapping to Delivered.
    let generation_of_set = || -> TestResult<Value> {
        Ok(h.get_json(
            "clusterresourcesets.addons.cluster.x-k8s.io",
            &ns,
            "calico-calico",
        )?["metadata"]["generation"]
            .clone())
    };
    let before = generation_of_set()?;
    let pull_secret = |value: &str| {
        h.annotate_cluster(
            &ns,
            "calico",
            &format!("capi-calico.io/CALICO_IMAGE_PULL_SECRET{value}"),
        )?
        .check("kubectl annotate")
    };
    pull_secret("=calico-pull")?;
    poll("the set changed by the pull Secret", 30, || {
        Ok((generation_of_set()? != before).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let c = h.get_json("clusters.cluster.x-k8s.io", &ns, "calico")?;
    ensure!(
        status_of(&c).is_some_and(|s| s["reason"] == "NotApplied"),
        "status after the set changed: {:?}",
        status_of(&c)
    );
    pull_secret("-")?;
    poll("the set back without the pull Secret", 30, || {
        let crs = h.get_json(
            "clusterresourcesets.addons.cluster.x-k8s.io",
            &ns,
            "calico-calico",
        )?;
        Ok((!crs["spec"]["resources"].to_string().contains("calico-pull")).then_some(()))
    })?;
    crs_status("True", "Applied", "", "2")?;
    // Delivered again once Cluster API applied the set.
    reported(h, &ns, "calico", "Delivered", 30)?;

    // re-apply (client-side, server-side) and an unrelated Cluster update (which triggers a
    // reconcile): nothing the reconciler owns is rewritten
    let before = versions(h, &ns)?;
    h.apply(&ns, &cyaml)?;
    h.kubectl_ok(
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        Some(&cyaml),
    )?;
    h.kubectl_ok(
        &["label", "-n", &ns, "cluster", "calico", "e2e/touched=yes"],
        None,
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let after = versions(h, &ns)?;
    let changed: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v) && !k.starts_with("clusters/"))
        .map(|(k, _)| k)
        .collect();
    ensure!(
        changed.is_empty(),
        "rewritten after a no-op re-apply: {changed:?}"
    );
    ensure!(
        after.keys().collect::<Vec<_>>() == before.keys().collect::<Vec<_>>(),
        "objects appeared/disappeared: {before:?} -> {after:?}"
    );

    // CAPI's status updates of the Cluster cost the reconciler no request.
    crate::calico::status_updates_cost_no_request(
        h,
        &ns,
        "calico",
        &["configmaps", "clusterresourcesets", "clusters"],
        "the delivery reconciler",
    )?;

    // a Cluster that is not opted in gets nothing
    let ns_off = h.create_namespace("delivery-off")?;
    let mut off = cluster.clone();
    off["metadata"]["annotations"] = json!({});
    // Copied from an opted-in Cluster's stored manifest: the webhook removes it (it would select a CRS).
    off["metadata"]["labels"] = json!({ CLUSTER_LABEL: "calico" });
    let out = h.apply(&ns_off, &off.to_string())?;
    ensure!(
        out.stderr.contains("removed label capi-calico.io/cluster"),
        "no warning about the removed label: {}",
        out.stderr
    );
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        list(h, "configmaps", &ns_off)?.is_empty(),
        "ConfigMaps for a Cluster not opted in"
    );
    ensure!(
        list(h, "clusterresourcesets", &ns_off)?.is_empty(),
        "CRS for a Cluster not opted in"
    );
    let c = h.get_json("clusters.cluster.x-k8s.io", &ns_off, "calico")?;
    ensure!(
        c["metadata"]["labels"].get(CLUSTER_LABEL).is_none() && status_of(&c).is_none(),
        "Cluster not opted in was changed: {}",
        c["metadata"]
    );

    // deletion (needs the garbage collector: without it, say so instead of passing)
    if gc.is_none() {
        return Err(Box::new(crate::harness::Skip(
            "kube-controller-manager is not built: everything but the deletion by the garbage collector was checked"
                .into(),
        )));
    }
    h.kubectl_ok(
        &["delete", "-n", &ns, "cluster", "calico", "--wait=true"],
        None,
    )?;
    let t = Instant::now();
    poll("garbage collection of calico's objects", 60, || {
        let cms = list(h, "configmaps", &ns)?;
        let crs = list(h, "clusterresourcesets", &ns)?;
        let inst_gone = !cms
            .iter()
            .any(|c| name_of(c) == "calico-calico-installation");
        let crs_gone = !crs.iter().any(|c| name_of(c) == "calico-calico");
        let copies_trimmed = names.iter().all(|n| {
            cms.iter().find(|c| name_of(c) == n).is_some_and(|c| {
                c["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.len() == 1 && o[0]["name"] == "calico-b")
            })
        });
        Ok((inst_gone && crs_gone && copies_trimmed).then_some(()))
    })?;
    println!(
        "  garbage collector: calico's Installation ConfigMap and CRS deleted, shared copies kept for calico-b ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    h.kubectl_ok(
        &["delete", "-n", &ns, "cluster", "calico-b", "--wait=true"],
        None,
    )?;
    poll("garbage collection of everything", 60, || {
        Ok((list(h, "configmaps", &ns)?.is_empty()
            && list(h, "clusterresourcesets", &ns)?.is_empty())
        .then_some(()))
    })?;
    println!("  garbage collector: everything gone after the second Cluster");
    Ok(())
}

/// Two Clusters of one namespace on v3.30.7, then moved to v3.31.7 one after the other: the first move takes that
/// Cluster off the old copies (which stay for the second), the second deletes them, although each also lists a
/// ClusterResourceSet as owner, as Cluster API makes it (added here by hand: no CAPI controllers run). Each move
/// replaces the Cluster's ClusterResourceSet (a new uid), so that Cluster API's record of what it applied starts
/// afresh; the deletion orphans (the garbage collector takes the old set off the copies it owned).
fn delivery_version_change_retires_the_old_copies(h: &mut Harness) -> TestResult {
    const OLD: &str = "v3.30.7";
    ensure_webhook(h)?;
    if ensure_gc(h)?.is_none() {
        return Err(Box::new(crate::harness::Skip(
            "kube-controller-manager is not built: a replaced ClusterResourceSet is deleted with orphan propagation, \
             which only its garbage collector completes"
                .into(),
        )));
    }
    let old_bundle = load_synthetic_bundle(h, OLD)?;
    load_synthetic_bundle(h, VERSION)?;
    let ns = h.create_namespace("retire")?;
    let mut cluster = yaml_docs(&e2e_fixture("classic-calico.yaml")?)?[0].clone();
    cluster["metadata"]["annotations"]["capi-calico.io/CALICO_VERSION"] = json!(OLD);
    let mut second = cluster.clone();
    second["metadata"]["name"] = json!("calico-b");
    h.apply(&ns, &cluster.to_string())?;
    h.apply(&ns, &second.to_string())?;
    let delivered = |name: &str, version: &str| {
        poll(&format!("{name} delivered with {version}"), 30, || {
            let c = h.get_json("clusters.cluster.x-k8s.io", &ns, name)?;
            let done = status_of(&c).is_some_and(|s| {
                s["reason"] == "Delivered"
                    && s["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(&format!("Calico {version}:")))
            });
            Ok(done.then(|| {
                c["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }))
        })
    };
    let uid = delivered("calico", OLD)?;
    let uid_b = delivered("calico-b", OLD)?;
    let old_names: Vec<String> = old_bundle.iter().map(|b| name_of(b).to_string()).collect();
    let owner_uids = |cm: &Value| -> Vec<String> {
        let mut uids = kind_and(&cm["metadata"]["ownerReferences"], "uid");
        uids.sort();
        uids
    };
    // What Cluster API's ClusterResourceSet controller does to every ConfigMap a set lists: both sets become owners.
    let mut set_uid = BTreeMap::new();
    for set in ["calico-calico", "calico-b-calico"] {
        let crs = h.get_json("clusterresourcesets.addons.cluster.x-k8s.io", &ns, set)?;
        let add = json!([{"op": "add", "path": "/metadata/ownerReferences/-", "value": {
            "apiVersion": "addons.cluster.x-k8s.io/v1beta2", "kind": "ClusterResourceSet",
            "name": set, "uid": crs["metadata"]["uid"]}}]);
        for name in &old_names {
            let patch = [
                "patch",
                "-n",
                &ns,
                "configmap",
                name,
                "--type=json",
                "-p",
                &add.to_string(),
            ];
            h.kubectl_ok(&patch, None)?;
        }
        set_uid.insert(
            set,
            format!(
                "ClusterResourceSet/{}",
                crs["metadata"]["uid"].as_str().unwrap_or("?")
            ),
        );
    }
    let move_to_current = |name: &str| -> TestResult {
        let version = format!("capi-calico.io/CALICO_VERSION={VERSION}");
        let args = [
            "annotate",
            "--overwrite",
            "-n",
            &ns,
            "cluster",
            name,
            &version,
        ];
        h.kubectl_ok(&args, None)?;
        delivered(name, VERSION).map(drop)
    };
    let replaced = |set: &str| -> TestResult {
        let before = &set_uid[set];
        poll(&format!("{set} replaced, listing {VERSION}"), 30, || {
            let found = list(h, "clusterresourcesets", &ns)?
                .into_iter()
                .find(|c| name_of(c) == set);
            Ok(found.filter(|c| {
                let listed = c["spec"]["resources"].to_string();
                c["metadata"]["deletionTimestamp"].is_null()
                    && *before
                        != format!(
                            "ClusterResourceSet/{}",
                            c["metadata"]["uid"].as_str().unwrap_or("?")
                        )
                    && !listed.contains(OLD)
                    && listed.contains(VERSION)
            }))
        })
        .map(drop)
    };
    // The first Cluster moves: it and its set come off the old copies, which stay for the second.
    move_to_current("calico")?;
    replaced("calico-calico")?;
    let t = Instant::now();
    poll("calico taken off the old copies", 30, || {
        let mut left = Vec::new();
        for name in &old_names {
            left.push(owner_uids(&h.get_json("configmap", &ns, name)?));
        }
        let mut want = vec![
            set_uid["calico-b-calico"].clone(),
            format!("Cluster/{uid_b}"),
        ];
        want.sort();
        Ok(left.iter().all(|u| *u == want).then_some(()))
    })?;
    println!(
        "  calico moved to {VERSION}: taken off {} old copies, kept for calico-b ({:.1}s)",
        old_names.len(),
        t.elapsed().as_secs_f64()
    );

    // Someone's own ClusterResourceSet lists the first old copy (and, as CAPI does, owns it): that copy must stay.
    let (kept, deleted) = old_names
        .split_first()
        .ok_or_else(|| fail!("no old copies"))?;
    let user_set = json!({"apiVersion": "addons.cluster.x-k8s.io/v1beta2", "kind": "ClusterResourceSet",
        "metadata": {"name": "user-set", "namespace": ns},
        "spec": {"clusterSelector": {"matchLabels": {"team": "x"}}, "resources": [{"kind": "ConfigMap", "name": kept}]}});
    h.apply(&ns, &user_set.to_string())?;
    let user_set = h.get_json(
        "clusterresourcesets.addons.cluster.x-k8s.io",
        &ns,
        "user-set",
    )?;
    let add = json!([{"op": "add", "path": "/metadata/ownerReferences/-", "value": {
        "apiVersion": "addons.cluster.x-k8s.io/v1beta2", "kind": "ClusterResourceSet",
        "name": "user-set", "uid": user_set["metadata"]["uid"]}}]);
    h.kubectl_ok(
        &[
            "patch",
            "-n",
            &ns,
            "configmap",
            kept,
            "--type=json",
            "-p",
            &add.to_string(),
        ],
        None,
    )?;

    // The second moves: the other old copies are deleted, the ClusterResourceSet owners notwithstanding.
    move_to_current("calico-b")?;
    replaced("calico-b-calico")?;
    let t = Instant::now();
    poll("the old copies deleted", 30, || {
        let cms = list(h, "configmaps", &ns)?;
        Ok((!cms.iter().any(|c| deleted.iter().any(|n| n == name_of(c)))).then_some(cms))
    })
    .and_then(|cms| {
        let copy = cms.iter().find(|c| name_of(c) == kept.as_str());
        ensure!(
            copy.is_some_and(|c| owner_uids(c)
                == [format!(
                    "ClusterResourceSet/{}",
                    user_set["metadata"]["uid"].as_str().unwrap_or("?")
                )]),
            "the copy user-set lists: {copy:?}"
        );
        Ok(cms)
    })
    .and_then(|cms| {
        let new_copies: Vec<&Value> = cms
            .iter()
            .filter(|c| name_of(c).starts_with(&format!("calico-{VERSION}-")))
            .collect();
        let mut both = vec![format!("Cluster/{uid}"), format!("Cluster/{uid_b}")];
        both.sort();
        ensure!(
            !new_copies.is_empty() && new_copies.iter().all(|c| owner_uids(c) == both),
            "the new copies: {new_copies:?}"
        );
        Ok(())
    })?;
    println!(
        "  calico-b moved: {} old copies deleted, the one user-set lists kept ({:.1}s); the new ones owned by both Clusters",
        deleted.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A Cluster whose CALICO_VERSION has no bundle loaded: the status annotation says
/// BundleMissing, a Warning Event is published on the Cluster, and nothing is written.
fn delivery_bundle_missing_reported_on_cluster(h: &mut Harness) -> TestResult {
    ensure_webhook(h)?;
    let ns = h.create_namespace("delivery-missing")?;
    let mut cluster = yaml_docs(&e2e_fixture("classic-calico.yaml")?)?[0].clone();
    cluster["metadata"]["annotations"]["capi-calico.io/CALICO_VERSION"] = json!("v3.30.7");
    let out = h.apply(&ns, &cluster.to_string())?;
    ensure!(
        out.stderr
            .contains("Warning: capi-calico: no Calico operator bundle v3.30.7 is loaded"),
        "no admission warning for the missing bundle: {}",
        out.stderr
    );
    let (_, status) = reported(h, &ns, "calico", "BundleMissing", 30)?;
    ensure!(
        status["status"] == "False"
            && status["message"]
                .as_str()
                .is_some_and(|m| m.contains("v3.30.7")),
        "status {status}"
    );
    let event = poll("the BundleMissing Event", 30, || {
        let evs = list(h, "events.v1.events.k8s.io", &ns)?;
        Ok(evs.into_iter().find(|e| {
            e["reason"] == "BundleMissing"
                && e["regarding"]["kind"] == "Cluster"
                && e["regarding"]["name"] == "calico"
        }))
    })?;
    ensure!(
        event["type"] == "Warning"
            && event["note"]
                .as_str()
                .is_some_and(|n| n.contains("v3.30.7"))
            && event["reportingController"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
        "event {event}"
    );
    ensure!(
        list(h, "clusterresourcesets", &ns)?.is_empty(),
        "a CRS was written"
    );
    ensure!(
        list(h, "configmaps", &ns)?.is_empty(),
        "ConfigMaps were written"
    );
    Ok(())
}

/// A write the API server refuses is reported on the Cluster (ApplyFailed, with the API server's words) and
/// retried: here the Installation ConfigMap already exists with another controller, which the API server refuses to
/// give a second one. Once that ConfigMap is gone, the next pass delivers.
fn delivery_apply_failure_reported_on_cluster(h: &mut Harness) -> TestResult {
    ensure_webhook(h)?;
    load_synthetic_bundle(h, VERSION)?;
    let ns = h.create_namespace("delivery-fails")?;
    // The other controller exists (the garbage collector, when it runs, would delete an object whose owner does not).
    h.apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "elsewhere"}})
            .to_string(),
    )?;
    let elsewhere = h.get_json("configmaps", &ns, "elsewhere")?;
    let blocker = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "calico-calico-installation",
        "labels": {"app.kubernetes.io/managed-by": "someone-else"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "elsewhere",
                             "uid": elsewhere["metadata"]["uid"], "controller": true}]}});
    h.apply(&ns, &blocker.to_string())?;
    let cluster = yaml_docs(&e2e_fixture("classic-calico.yaml")?)?[0].clone();
    h.apply(&ns, &cluster.to_string())?;
    let (_, status) = reported(h, &ns, "calico", "ApplyFailed", 30)?;
    let message = status["message"].as_str().unwrap_or_default();
    println!("  reported: {message}");
    ensure!(
        status["status"] == "False"
            && message.contains(&format!("Calico {VERSION}: writing the bundle copies"))
            && message.contains("calico-calico-installation"),
        "status {status}"
    );
    h.kubectl_ok(
        &[
            "delete",
            "configmap",
            "-n",
            &ns,
            "calico-calico-installation",
        ],
        None,
    )?;
    // Nothing else changes: the failed pass is retried on its own (30 s, doubling while the inputs stay the same).
    let t = Instant::now();
    let (cluster, _) = reported(h, &ns, "calico", "Delivered", 150)?;
    println!(
        "  retried and delivered {:.0?} after the blocker went",
        t.elapsed()
    );
    let installation = h.get_json("configmaps", &ns, "calico-calico-installation")?;
    let owners = installation["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        owners.iter().any(|o| o["kind"] == "Cluster"
            && o["uid"] == cluster["metadata"]["uid"]
            && o["controller"] == true),
        "the Installation copy is controlled by the Cluster: {owners:?}"
    );
    Ok(())
}

/// The real upstream operator manifests of Calico v3.31.7 (2.6 MB of CRDs; CI has them beside the
/// repository), loaded under the label v3.29.7 (the synthetic bundle holds v3.31.7 here): the API
/// server takes the ~870 KB ConfigMaps through server-side apply, and the reconciler copies them
/// into the Cluster's namespace unchanged and lists them CRDs first.
fn delivery_real_calico_operator_bundle(h: &mut Harness) -> TestResult {
    let root = repo_root();
    let Some(dir) = [
        root.join("../shared/fixtures/calico-v3.31.7"),
        std::path::PathBuf::from("/work/shared/fixtures/calico-v3.31.7"),
    ]
    .into_iter()
    .find(|d| d.join("operator-crds.yaml").exists()) else {
        return Err(Box::new(crate::harness::Skip(
            "the upstream Calico v3.31.7 manifests (../shared/fixtures/calico-v3.31.7) are not here".into(),
        )));
    };
    ensure_webhook(h)?;
    let version = "v3.29.7";
    let t = Instant::now();
    // Loaded for a mirror, as docs/delivery.md shows for an air-gapped site.
    let operator_image = "registry.example.internal/tigera/operator:v1.40.15";
    let bundle = load_bundle(
        h,
        &dir.join("tigera-operator.yaml"),
        &dir.join("operator-crds.yaml"),
        version,
        &[
            "--operator-image",
            operator_image,
            "--operator-pull-secret",
            "calico-pull",
        ],
    )?;
    let sizes: Vec<usize> = bundle
        .iter()
        .map(|c| {
            c["data"]
                .as_object()
                .map(|m| m.values().map(|v| v.as_str().map_or(0, str::len)).sum())
                .unwrap_or(0)
        })
        .collect();
    println!(
        "  loaded {} ConfigMaps ({sizes:?} data bytes) in {:.1}s",
        bundle.len(),
        t.elapsed().as_secs_f64()
    );
    ensure!(
        sizes.iter().all(|s| *s < 1_000_000),
        "a chunk is too big: {sizes:?}"
    );
    let ns = h.create_namespace("delivery-real")?;
    let mut cluster = yaml_docs(&e2e_fixture("classic-calico.yaml")?)?[0].clone();
    let annotations = &mut cluster["metadata"]["annotations"];
    annotations["capi-calico.io/CALICO_VERSION"] = json!(version);
    annotations["capi-calico.io/CALICO_REGISTRY"] = json!("registry.example.internal:5000");
    annotations["capi-calico.io/CALICO_IMAGE_PATH"] = json!("mirror/calico");
    annotations["capi-calico.io/CALICO_IMAGE_PULL_SECRET"] = json!("calico-pull");
    h.apply(&ns, &cluster.to_string())?;
    reported(h, &ns, "calico", "Delivered", 60)?;
    let mut images = Vec::new();
    let mut pull_secrets = Vec::new();
    for b in &bundle {
        let copy = h.get_json("configmap", &ns, name_of(b))?;
        ensure!(copy["data"] == b["data"], "{}: copy differs", name_of(b));
        for doc in copy["data"]
            .as_object()
            .into_iter()
            .flat_map(|d| d.values())
        {
            let doc: Value = serde_json::from_str(doc.as_str().unwrap_or("null"))?;
            if doc["kind"] == "Deployment" {
                pull_secrets.push(doc["spec"]["template"]["spec"]["imagePullSecrets"].clone());
                images.extend(
                    doc["spec"]["template"]["spec"]["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c["image"].as_str().unwrap_or_default().to_string()),
                );
            }
        }
    }
    ensure!(
        images == [operator_image],
        "operator image in the delivered copies: {images:?}"
    );
    ensure!(
        pull_secrets == [json!([{"name": "calico-pull"}])],
        "operator pull secrets in the delivered copies: {pull_secrets:?}"
    );
    let crs = h.get_json(
        "clusterresourcesets.addons.cluster.x-k8s.io",
        &ns,
        "calico-calico",
    )?;
    let listed = kind_and(&crs["spec"]["resources"], "name");
    // The pull secret after the operator (its namespace) and before the Installation (which names it).
    let mut want: Vec<String> = bundle
        .iter()
        .map(|b| format!("ConfigMap/{}", name_of(b)))
        .collect();
    want.push("Secret/calico-pull".into());
    want.push("ConfigMap/calico-calico-installation".into());
    ensure!(listed == want, "CRS resources {listed:?}, want {want:?}");
    println!(
        "  delivered {listed:?} in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The rendered Installation and APIServer against the operator's own schema: the real CRDs installed, both
    // created in a strict server-side dry run (an unknown or mistyped field is an error, not pruned).
    let inst = h.get_json("configmap", &ns, "calico-calico-installation")?;
    let mut docs = Vec::new();
    for key in ["00-installation.json", "01-apiserver.json"] {
        docs.push(serde_json::from_str::<Value>(
            inst["data"][key].as_str().unwrap_or("null"),
        )?);
    }
    ensure!(
        docs[0]["spec"]["registry"] == "registry.example.internal:5000/"
            && docs[0]["spec"]["imagePath"] == "mirror/calico"
            && docs[0]["spec"]["imagePullSecrets"] == json!([{"name": "calico-pull"}]),
        "image source in the Installation: {}",
        docs[0]["spec"]
    );
    let t = Instant::now();
    h.install_crds(&dir)?;
    let out = h
        .kubectl(
            &["create", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&crate::harness::list_of(docs)),
        )?
        .check("strict server-side dry run of the rendered Installation and APIServer")?;
    println!(
        "  Calico CRDs installed and the Installation accepted in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        out.stdout.trim().replace('\n', "; ")
    );
    Ok(())
}

/// deploy/base's ValidatingAdmissionPolicy, as the webhook's own user (the same client certificate the webhook
/// runs with in every scenario, which all pass under it): what RBAC grants it everywhere is narrowed to ConfigMaps
/// it labels as its own and, on a Cluster, to the status annotation.
fn policy_narrows_the_webhooks_own_writes(h: &mut Harness) -> TestResult {
    ensure_webhook(h)?;
    let as_webhook = h.dir().join("webhook-user.kubeconfig");
    let kubeconfig = format!("--kubeconfig={}", as_webhook.display());
    let ns = h.create_namespace("policy")?;
    let configmap = |name: &str, labelled: bool| {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "namespace": ns}, "data": {"a": "b"}});
        if labelled {
            cm["metadata"]["labels"] =
                json!({"app.kubernetes.io/managed-by": "capi-calico-webhook"});
        }
        cm.to_string()
    };
    let apply_as_webhook = |body: String| {
        h.kubectl(
            &[
                &kubeconfig,
                "apply",
                "--server-side",
                "--field-manager=capi-calico-webhook",
                "-f",
                "-",
            ],
            Some(&body),
        )
    };
    let refusals_before = policy_refusals(h)?;
    // Not labelled as ours: refused, with the policy's message. Labelled: admitted (the control). The API server
    // loads a new policy a moment after it is created: until then a probe may pass (under a new name each time).
    let t = Instant::now();
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let out = apply_as_webhook(configmap(&format!("foreign-{attempt}"), false))?;
        if !out.success || t.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(
        !out.success
            && out.stderr.contains(
                "capi-calico-webhook creates, changes and deletes only ConfigMaps and ClusterResourceSets labelled"
            ),
        "an unlabelled ConfigMap: {out:?}"
    );
    apply_as_webhook(configmap("ours", true))?.check("a labelled ConfigMap")?;
    // Someone else's ConfigMap cannot be taken over by adding the label.
    h.apply(&ns, &configmap("someone-elses", false))?;
    let out = apply_as_webhook(configmap("someone-elses", true))?;
    ensure!(
        !out.success
            && out
                .stderr
                .contains("capi-calico-webhook creates, changes and deletes only ConfigMaps"),
        "taking over a ConfigMap: {out:?}"
    );

    // A Cluster: of its metadata, the status annotation only. (Its spec is not compared: see the policy's header.)
    let cluster = yaml_docs(&e2e_fixture("classic-calico.yaml")?)?[0].clone();
    h.apply(&ns, &cluster.to_string())?;
    let patch_as_webhook = |body: &str| {
        h.kubectl(
            &[
                &kubeconfig,
                "patch",
                "-n",
                &ns,
                "cluster",
                "calico",
                "--type=merge",
                "-p",
                body,
            ],
            None,
        )
    };
    patch_as_webhook(r#"{"metadata":{"annotations":{"status.capi-calico.io/delivery":"{}"}}}"#)?
        .check("the status annotation")?;
    for (what, body) in [
        (
            "an ownerReference",
            r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"x","uid":"00000000-0000-0000-0000-000000000001"}]}}"#,
        ),
        (
            "a finalizer",
            r#"{"metadata":{"finalizers":["example.com/block"]}}"#,
        ),
        (
            "a setting",
            r#"{"metadata":{"annotations":{"capi-calico.io/CALICO_BLOCK_SIZE":"27"}}}"#,
        ),
        ("a label", r#"{"metadata":{"labels":{"team":"x"}}}"#),
    ] {
        let out = patch_as_webhook(body)?;
        ensure!(
            !out.success
                && out.stderr.contains(
                    "capi-calico-webhook changes no metadata of a Cluster but the annotation status.capi-calico.io/delivery"
                ),
            "{what}: {out:?}"
        );
    }
    // Deleting: only a ConfigMap labelled as ours.
    let delete_as_webhook =
        |name: &str| h.kubectl(&[&kubeconfig, "delete", "-n", &ns, "configmap", name], None);
    let out = delete_as_webhook("someone-elses")?;
    ensure!(
        !out.success
            && out
                .stderr
                .contains("capi-calico-webhook creates, changes and deletes only ConfigMaps"),
        "deleting someone else's ConfigMap: {out:?}"
    );
    delete_as_webhook("ours")?.check("deleting a labelled ConfigMap")?;
    // Nor someone else's ClusterResourceSet (RBAC grants delete on every set; the policy narrows it to ours).
    let user_set = json!({"apiVersion": "addons.cluster.x-k8s.io/v1beta2", "kind": "ClusterResourceSet",
        "metadata": {"name": "team-set", "namespace": ns},
        "spec": {"clusterSelector": {"matchLabels": {"team": "x"}}, "resources": [{"kind": "ConfigMap", "name": "x"}]}});
    h.apply(&ns, &user_set.to_string())?;
    let out = h.kubectl(
        &[
            &kubeconfig,
            "delete",
            "-n",
            &ns,
            "clusterresourceset",
            "team-set",
        ],
        None,
    )?;
    ensure!(
        !out.success
            && out
                .stderr
                .contains("capi-calico-webhook creates, changes and deletes only ConfigMaps and ClusterResourceSets"),
        "deleting someone else's ClusterResourceSet: {out:?}"
    );

    // The audit log shows these refusals as `rbac_shipped_roles_sufficient_and_used` looks for them (a 422 naming
    // the policy), so that scenario would see one in the webhook's own traffic.
    let refusals = policy_refusals(h)? - refusals_before;
    ensure!(refusals >= 8, "{refusals} refusals in the audit log");
    Ok(())
}

/// Requests of the webhook's user that deploy/base's ValidatingAdmissionPolicy refused, in the audit log so far.
fn policy_refusals(h: &Harness) -> TestResult<usize> {
    let audit = std::fs::read_to_string(h.audit_log())?;
    Ok(audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|ev| {
            ev["user"]["username"] == crate::calico::WEBHOOK_USER
                && ev["responseStatus"]["code"] == 422
                && ev["responseStatus"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("capi-calico-webhook-own-writes"))
        })
        .count())
}

/// The webhook ran as a user bound only to deploy/base's roles: from the API server's audit log,
/// none of its requests was forbidden (sufficient), and every verb it is granted was used, apart
/// from the ones listed here with the reason they cannot show up in an audit log.
fn rbac_shipped_roles_sufficient_and_used(h: &mut Harness) -> TestResult {
    use crate::calico::{WEBHOOK_USER, deploy_base};
    ensure_webhook(h)?;
    // one cache miss of the label lookup: the direct GET of a Cluster
    let ns = h.create_namespace("rbac")?;
    let kcp = json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
        "metadata": {"name": "rbac-cp", "labels": {"cluster.x-k8s.io/cluster-name": "absent"}},
        "spec": {"version": "v1.34.1", "machineTemplate": {"spec": {"infrastructureRef": {
            "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachineTemplate", "name": "x"}}}}
    });
    h.kubectl_ok(
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(&kcp.to_string()),
    )?;
    // granted: (group, resource, verb, where) from the shipped roles
    let mut granted = std::collections::BTreeSet::new();
    for d in yaml_docs(&deploy_base(h)?)? {
        let scope = match d["kind"].as_str() {
            Some("ClusterRole") => "cluster",
            Some("Role") => "namespaced",
            _ => continue,
        };
        for rule in d["rules"].as_array().into_iter().flatten() {
            for g in rule["apiGroups"].as_array().into_iter().flatten() {
                for r in rule["resources"].as_array().into_iter().flatten() {
                    for v in rule["verbs"].as_array().into_iter().flatten() {
                        granted.insert(format!(
                            "{}/{} {} ({scope})",
                            g.as_str().unwrap_or(""),
                            r.as_str().unwrap_or(""),
                            v.as_str().unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    let text = std::fs::read_to_string(h.audit_log())?;
    let mut used = std::collections::BTreeSet::new();
    let mut forbidden = Vec::new();
    let mut n = 0;
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if ev["user"]["username"] != WEBHOOK_USER {
            continue;
        }
        n += 1;
        let o = &ev["objectRef"];
        let key = format!(
            "{}/{}{} {}",
            o["apiGroup"].as_str().unwrap_or(""),
            o["resource"].as_str().unwrap_or(""),
            o["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default(),
            ev["verb"].as_str().unwrap_or("")
        );
        // 403: RBAC (unless an admission webhook denied). 422 naming the policy: the ValidatingAdmissionPolicy on the webhook's own writes (other 422s
        // are the objects' own schema, e.g. scenario 8's v1beta1 KCP served as v1beta2 without CAPI's conversion).
        let status = &ev["responseStatus"];
        let refused_by_policy = status["code"] == 422
            && status["message"]
                .as_str()
                .is_some_and(|m| m.contains("capi-calico-webhook-own-writes"));
        // A 403 with our webhook's denial is the webhook refusing the linker's change (scenario 6's LinkFailed
        // Event), not RBAC.
        let denied_by_webhook = status["message"]
            .as_str()
            .is_some_and(|m| m.contains("admission webhook"));
        if (status["code"] == 403 && !denied_by_webhook) || refused_by_policy {
            forbidden.push(format!("{key} {} {}", status["code"], ev["requestURI"]));
        }
        used.insert(key);
    }
    ensure!(n > 0, "no audit events for {WEBHOOK_USER}");
    if !used.contains("addons.cluster.x-k8s.io/clusterresourcesets patch") {
        return Err(Box::new(crate::harness::Skip(
            "run it together with the delivery scenarios (nothing was delivered)".into(),
        )));
    }
    ensure!(
        forbidden.is_empty(),
        "forbidden requests of the shipped RBAC: {forbidden:?}"
    );
    println!("  {n} audited requests; used: {used:?}");
    // Not visible in an audit log: `create` on configmaps/clusterresourcesets is authorized by the
    // API server inside a server-side apply PATCH that creates the object (audited as `patch`).
    // `get` on machinedeployments: the lookup reads them only through list/watch (cache) and one
    // LIST on a miss; it is granted together with clusters (issue 3 asks for get/list/watch).
    // `patch` on events: only for the series of a repeated Event.
    let invisible = [
        "/configmaps create",
        "addons.cluster.x-k8s.io/clusterresourcesets create",
        "cluster.x-k8s.io/machinedeployments get",
        "events.k8s.io/events patch",
    ];
    let unused: Vec<&String> = granted
        .iter()
        .filter(|g| {
            let gv = g.split(" (").next().unwrap_or("");
            !used.contains(gv) && !invisible.contains(&gv)
        })
        .collect();
    ensure!(
        unused.is_empty(),
        "granted but never used: {unused:?} (granted {granted:?})"
    );

    // `create` is needed although only `patch` shows in the audit log: a server-side apply that
    // creates the object is refused without it
    let role = |verbs: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "probe"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs.split(',').collect::<Vec<_>>()}]
        })
        .to_string()
    };
    h.kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&role("patch")))?;
    h.kubectl_ok(
        &[
            "create",
            "rolebinding",
            "probe",
            "-n",
            &ns,
            "--role=probe",
            "--user=rbac-probe",
        ],
        None,
    )?;
    let cm =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"probe"},"data":{"a":"b"}}"#;
    let ssa = [
        "--as=rbac-probe",
        "apply",
        "--server-side",
        "--field-manager=probe",
        "-n",
        &ns,
        "-f",
        "-",
    ];
    let out = h.kubectl(&ssa, Some(cm))?;
    ensure!(
        !out.success && out.stderr.contains("forbidden") && out.stderr.contains("create"),
        "server-side apply creating a ConfigMap with only `patch`: {out:?}"
    );
    h.kubectl_ok(
        &["apply", "-n", &ns, "-f", "-"],
        Some(&role("patch,create")),
    )?;
    let t = Instant::now();
    loop {
        let out = h.kubectl(&ssa, Some(cm))?;
        if out.success {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "with create and patch: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
