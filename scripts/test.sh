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

printf '\nall tests finished in %ss\n' "$(( $(date +%s) - start ))"
