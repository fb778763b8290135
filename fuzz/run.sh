#!/usr/bin/env bash
# Run one fuzz target (or all) for a bounded time on the STABLE toolchain.
#
#   fuzz/run.sh <review|annotations|route_reflectors|selector|all> [seconds per target, default 60]
#
# cargo-fuzz drives libFuzzer through rustc flags that are nightly-only when a sanitizer is asked for; here it runs
# with RUSTC_BOOTSTRAP=1 on the installed stable rustc and `--sanitizer none` (Rust code is memory-safe here:
# `#![forbid(unsafe_code)]` in the crate; panics, overflows in debug assertions, timeouts and OOMs are what we hunt).
# FUZZ_SANITIZER=address switches ASan on (works with RUSTC_BOOTSTRAP=1 as well, slower).
#
# Install once:  cargo install --locked cargo-fuzz     (about 40 s here; needs a C++ compiler for libFuzzer)
#
# The committed seeds are fuzz/corpus/<target>/ (read only); new inputs go to fuzz/target/work/<target>/, which is
# kept between runs. MERGE=1 minimises the work corpus back into the committed seeds (then review and commit).
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script exit non-zero; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"

targets=(review annotations route_reflectors selector)
which=${1:?usage: fuzz/run.sh <target|all> [seconds]}
seconds=${2:-60}
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install --locked cargo-fuzz" >&2
  exit 2
fi
if [[ $which == all ]]; then
  selected=("${targets[@]}")
  nice cargo fuzz build --sanitizer "$sanitizer" >&2
else
  selected=("$which")
  nice cargo fuzz build --sanitizer "$sanitizer" "$which" >&2
fi
status=0
for t in "${selected[@]}"; do
  mkdir -p "target/work/$t" "artifacts/$t"
  echo "== fuzz $t for ${seconds}s (sanitizer: $sanitizer)" >&2
  start=$(date +%s)
  if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "target/work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      >"target/work/$t.log" 2>&1; then
    status=1
    echo "!! $t failed; see fuzz/target/work/$t.log and fuzz/artifacts/$t/" >&2
    tail -n 40 "target/work/$t.log" >&2
  fi
  end=$(date +%s)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/work/$t.log" | tail -1)
  echo "== $t: $((end - start)) s, ${runs:-?} executions, work corpus $(find "target/work/$t" -type f | wc -l) inputs" >&2
  if [[ -n "${MERGE:-}" ]]; then
    cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "target/work/$t" -- -merge=1 >/dev/null 2>&1 || true
  fi
done
exit $status
