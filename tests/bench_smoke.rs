//! `scripts/bench.sh` still works end to end: it starts the webhook, the baseline and the replay responders,
//! drives each with the load generator at a fixed rate and at saturation (two rounds), and prints the table and the
//! per-round ratios. Debug binaries, one CPU, one second per row: this checks the benchmark's machinery (and that
//! every request of the mix is answered), not its numbers.

use std::process::Command;

#[test]
fn bench_script_runs_all_three_servers_without_failed_requests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let build = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--bin",
            "capi-calico-webhook",
            "--example",
            "baseline_responder",
            "--example",
            "replay_responder",
            "--example",
            "loadgen",
        ])
        .status()
        .expect("run cargo build");
    assert!(build.success(), "building the benchmark binaries failed");

    let out = Command::new("scripts/bench.sh")
        .current_dir(root)
        .envs([
            ("SKIP_BUILD", "1"),
            ("PROFILE", "debug"),
            ("RATES", "50"),
            ("DURATION", "1"),
            ("WARMUP", "0"),
            ("CONNECTIONS", "2"),
            ("SERVER_CPU", "0"),
            ("CLIENT_CPU", "0"),
            ("ROUNDS", "2"),
        ])
        .output()
        .expect("run scripts/bench.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench.sh failed:\n{stdout}\n{stderr}");

    for server in ["webhook", "baseline", "replay"] {
        for rate in ["50", "saturation", "saturation (round 2)"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {server} | {rate} |")))
                .unwrap_or_else(|| panic!("no {server} row at {rate}:\n{stdout}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // | server | offered | achieved | p50 | p99 | p99.9 | max | failed | RSS | server CPU | client CPU | others |
            let achieved: f64 = cells[3].parse().expect("achieved req/s");
            assert!(achieved > 0.0, "{row}");
            assert_eq!(cells[8], "0", "failed requests: {row}");
            let server_cpu: f64 = cells[10].parse().expect("server CPU %");
            assert!(server_cpu > 0.0, "the server used no CPU: {row}");
        }
    }
    for line in ["round 1: webhook ", "round 2: webhook "] {
        assert!(stdout.contains(line), "no line {line:?}:\n{stdout}");
    }
    assert!(
        stdout.contains("saturated throughput: webhook ")
            && stdout.contains("of the baseline (median of 2 round(s))"),
        "no summary line:\n{stdout}"
    );
}
