#!/usr/bin/env bash
# Installs the tools the test suite uses that a fresh machine lacks. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "please install: ${missing[*]} (apt-get install ${missing[*]})" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The node scripts are linted by shellcheck; the script tests run them with curl, and with wget for the fallback case
# (setsid and nohup too, for the detached BGP apply), and systemd-analyze verifies the BGP apply's unit; openssl checks deploy/certs/make-certs.sh's output; a C++
# compiler builds libFuzzer for the fuzz step.
command -v shellcheck >/dev/null || apt_install shellcheck
command -v systemd-analyze >/dev/null || apt_install systemd
command -v curl >/dev/null || apt_install curl
# The wget tests run it from a fixed PATH (/usr/local/bin:/usr/bin:/bin:...), not the caller's.
[ -x /usr/bin/wget ] || [ -x /usr/local/bin/wget ] || [ -x /bin/wget ] || apt_install wget
command -v setsid >/dev/null || apt_install util-linux
# scripts/bench.sh (run by tests/bench_smoke.rs) pins the servers and the load generator with taskset.
command -v taskset >/dev/null || apt_install util-linux
# tests/cli.rs starts serve under prlimit (util-linux) to check that it raises its open-files limit.
command -v prlimit >/dev/null || apt_install util-linux
command -v nohup >/dev/null || apt_install coreutils
command -v openssl >/dev/null || apt_install openssl
command -v c++ >/dev/null || apt_install g++
# tests/cloud_init_jinja.rs renders the injected entries with Jinja2, as cloud-init does with CAPI's user-data.
/usr/bin/python3 -c 'import jinja2' 2>/dev/null || apt_install python3-jinja2
echo "shellcheck: $(shellcheck --version | sed -n 's/^version: //p')"

# kubectl renders the kustomizations in tests/deploy_manifests.rs (the e2e suite builds its own, version-matched).
command -v kubectl >/dev/null || echo "kubectl not found: tests/deploy_manifests.rs will use bin/e2e's kubectl when built" >&2

# ytt renders the TKG overlay in tests/tkg_overlay.rs.
deploy/tkg/build-ytt.sh

# kube-apiserver, etcd and kubectl for the end-to-end suite, built from Go modules and cached by version in bin/e2e
# (a cold build takes about 17 minutes on 2 cores; a warm one under a second).
e2e/build-tools.sh
