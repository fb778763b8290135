//! Our webhook process and its registration with the test API server.
//!
//! [`Harness::start_webhook`] runs `capi-calico-webhook serve` with a serving certificate signed
//! by the harness CA, and [`Harness::register_webhooks`] applies the Mutating/Validating
//! WebhookConfigurations of a manifest unchanged except for `clientConfig`, which becomes
//! `url: https://127.0.0.1:PORT/<service path>` plus our CA as `caBundle`.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{Harness, Proc, TestResult, free_port, list_of, repo_root, yaml_docs};

pub const WEBHOOK_PROC: &str = "capi-calico-webhook";

/// The webhook binary: `E2E_WEBHOOK_BIN`, else the one cargo built for this test target
/// (`CARGO_BIN_EXE_capi-calico-webhook`), else `target/debug/capi-calico-webhook`.
pub fn webhook_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("E2E_WEBHOOK_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_capi-calico-webhook") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("target/debug/capi-calico-webhook"),
    }
}

/// Rewrite every `clientConfig` of the Mutating/ValidatingWebhookConfigurations in `yaml` to
/// `url: https://127.0.0.1:{port}{path}` (path from `clientConfig.service.path`, else an existing
/// URL's path, else `/`) and set `caBundle`. Everything else (rules, failurePolicy, matchPolicy,
/// sideEffects, timeouts, matchConditions, ...) is kept as shipped. Other documents are dropped.
pub fn rewrite_webhook_configs(yaml: &str, port: u16, ca_pem: &str) -> TestResult<Vec<Value>> {
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut out = Vec::new();
    for mut doc in yaml_docs(yaml)? {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind != "MutatingWebhookConfiguration" && kind != "ValidatingWebhookConfiguration" {
            continue;
        }
        for hook in doc["webhooks"].as_array_mut().into_iter().flatten() {
            let cc = &hook["clientConfig"];
            let path = match (cc["service"]["path"].as_str(), cc["url"].as_str()) {
                (Some(p), _) => p.to_string(),
                (None, Some(url)) => url
                    .splitn(4, '/')
                    .nth(3)
                    .map(|p| format!("/{p}"))
                    .unwrap_or_else(|| "/".into()),
                (None, None) => "/".into(),
            };
            hook["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": ca_b64,
            });
        }
        // cert-manager's CA injection has nothing to do here
        if let Some(ann) = doc["metadata"]["annotations"].as_object_mut() {
            ann.remove("cert-manager.io/inject-ca-from");
        }
        out.push(doc);
    }
    Ok(out)
}

impl Harness {
    /// Start `capi-calico-webhook serve` on 127.0.0.1:PORT with a serving cert from the harness CA
    /// and the admin kubeconfig; wait until the port accepts connections. Returns the port.
    pub fn start_webhook(&mut self, extra_args: &[&str]) -> TestResult<u16> {
        let kubeconfig = self.kubeconfig.clone();
        self.start_webhook_as(&kubeconfig, extra_args)
    }

    /// [`Harness::start_webhook`] with another kubeconfig (e.g. a user that has only the shipped
    /// RBAC).
    pub fn start_webhook_as(
        &mut self,
        kubeconfig: &std::path::Path,
        extra_args: &[&str],
    ) -> TestResult<u16> {
        let dir = self.dir().join("webhook");
        fs::create_dir_all(&dir)?;
        let leaf = self
            .ca
            .server("capi-calico-webhook", &["127.0.0.1", "localhost"])?;
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        fs::write(&crt, &leaf.cert_pem)?;
        fs::write(&key, &leaf.key_pem)?;
        let port = free_port()?;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--tls-cert-file".into(),
            crt.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let log = self.dir().join("logs/webhook.log");
        let mut p = Proc::spawn(WEBHOOK_PROC, &webhook_binary(), &args, log)?;
        let start = Instant::now();
        loop {
            if let Some(st) = p.exited() {
                return Err(fail!(
                    "webhook exited ({st}) before listening on 127.0.0.1:{port}:\n{}",
                    p.log_tail(30)
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(fail!(
                    "webhook did not listen on 127.0.0.1:{port} within 30s:\n{}",
                    p.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.procs.push(p);
        Ok(port)
    }

    /// Apply the webhook configurations of `yaml` (e.g. the deploy manifest), rewritten by
    /// [`rewrite_webhook_configs`] for `port`. Returns `(kind, name)` of each. The API server
    /// picks them up through an informer, so callers should probe until the hook is active.
    pub fn register_webhooks(&self, yaml: &str, port: u16) -> TestResult<Vec<(String, String)>> {
        let docs = rewrite_webhook_configs(yaml, port, &self.ca.cert_pem)?;
        ensure!(
            !docs.is_empty(),
            "no Mutating/ValidatingWebhookConfiguration in the given YAML"
        );
        let ids: Vec<(String, String)> = docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap_or_default().to_string(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=e2e-harness",
                "-f",
                "-",
            ],
            Some(&list_of(docs)),
        )?
        .check("kubectl apply (webhook configurations)")?;
        Ok(ids)
    }

    /// Delete webhook configurations registered by [`Harness::register_webhooks`].
    pub fn unregister_webhooks(&self, ids: &[(String, String)]) -> TestResult {
        for (kind, name) in ids {
            self.kubectl_ok(
                &["delete", &kind.to_lowercase(), name, "--ignore-not-found"],
                None,
            )?;
        }
        Ok(())
    }
}
