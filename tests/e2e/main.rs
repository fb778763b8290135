//! End-to-end tests against a real kube-apiserver + etcd, driven through `kubectl`.
//!
//! `cargo test --test e2e` (harness = false: this file has its own `main`). The binaries come from
//! `e2e/build-tools.sh` (see e2e/README.md). One control plane is started for the whole run, the
//! Cluster API CRDs are installed into it, and the scenarios run one after another, each in its
//! own namespace. Positional arguments filter scenarios by substring:
//! `cargo test --test e2e -- v1beta1`.
//!
//! Environment: `E2E_SKIP=1` (skip when the tools are missing), `E2E_BIN_DIR`, `E2E_BIN_ROOT`,
//! `E2E_CRD_DIR`, `E2E_KEEP=1` (keep the temp dir), `E2E_WEBHOOK_BIN`, `E2E_WEBHOOK_CONFIG`,
//! `E2E_UPDATE_GOLDEN=1` (rewrite tests/fixtures/e2e/kubectl-rejection.txt).

#[macro_use]
mod harness;
mod calico;
mod certs;
mod delivery;
mod lookup;
mod smoke;
mod webhook;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

use harness::{Harness, Skip, TestResult, Tools};

pub type Scenario = (&'static str, fn(&mut Harness) -> TestResult);

/// Every scenario, in run order.
fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend_from_slice(smoke::SCENARIOS);
    all.extend_from_slice(calico::SCENARIOS);
    all.extend_from_slice(lookup::SCENARIOS);
    all.extend_from_slice(delivery::SCENARIOS);
    all.extend_from_slice(calico::LAST);
    all
}

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();

    let tools = match Tools::locate() {
        Ok(t) => t,
        Err(msg) if std::env::var("E2E_SKIP").as_deref() == Ok("1") => {
            println!("e2e: E2E_SKIP=1 and the tools are missing; skipping.\n{msg}");
            println!("0 passed, 0 failed, {} skipped", selected.len());
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("e2e: {msg}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "e2e: {} (tools: {})",
        tools.versions,
        tools.kube_apiserver.display()
    );
    if selected.is_empty() {
        println!("e2e: no scenario matches {filters:?}");
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    harness::install_signal_handler();

    let t0 = Instant::now();
    let crd_dir = tools.crd_dir.clone();
    let started = catch_unwind(AssertUnwindSafe(|| -> TestResult<Harness> {
        let mut h = Harness::start(tools)?;
        let t_ready = t0.elapsed();
        let names = h.install_crds(&crd_dir)?;
        println!(
            "e2e: control plane ready in {:.1}s ({}), {} CRDs established in {:.1}s more",
            t_ready.as_secs_f64(),
            h.server,
            names.len(),
            (t0.elapsed() - t_ready).as_secs_f64()
        );
        Ok(h)
    }));
    let mut h = match started {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            println!("control plane setup ... FAILED\n  {e}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            println!("control plane setup ... FAILED (panicked)");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };

    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in &selected {
        let t = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(|| f(&mut h)));
        let secs = t.elapsed().as_secs_f64();
        match res {
            Ok(Ok(())) => {
                passed += 1;
                println!("scenario {name} ... ok ({secs:.1}s)");
            }
            Ok(Err(e)) if e.is::<Skip>() => {
                skipped += 1;
                println!("scenario {name} ... {e}");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("scenario {name} ... FAILED ({secs:.1}s)\n  {e}");
                h.dump_logs(40);
            }
            Err(panic) => {
                failed += 1;
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("scenario {name} ... FAILED (panicked: {msg})");
                h.dump_logs(40);
            }
        }
    }
    for name in ["kube-apiserver", "etcd"] {
        if let Some(mb) = h.proc(name).and_then(|p| p.rss_mib()) {
            println!("e2e: {name} RSS at the end: {mb} MiB");
        }
    }
    drop(h);
    println!("e2e: total {:.1}s", t0.elapsed().as_secs_f64());
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
