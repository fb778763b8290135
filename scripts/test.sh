#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs lint and every test.
# Usage: scripts/test.sh            (everything)
#        SKIP_E2E=1 scripts/test.sh (no kube-apiserver suite)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "tools"
scripts/install-test-tools.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked --all-targets

# Fuzzing (fuzz/run.sh) is opt-in: installing cargo-fuzz takes under a minute, but the instrumented build of the
# fuzz crate takes about 9 minutes on a 2-CPU machine. CAPI_CALICO_FUZZ_SECONDS=45 runs each target 45 s.
if [ -n "${CAPI_CALICO_FUZZ_SECONDS:-}" ]; then
  step "fuzz, ${CAPI_CALICO_FUZZ_SECONDS}s per target"
  cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
  fuzz/run.sh all "$CAPI_CALICO_FUZZ_SECONDS"
fi

printf '\nall tests finished in %ss\n' "$(( $(date +%s) - start ))"
