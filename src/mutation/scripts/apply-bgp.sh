#!/bin/bash
# capi-calico-webhook: /etc/capi-calico/apply-bgp.sh, run on control-plane machines by the unit
# capi-calico-apply-bgp (see the webhook's docs/injection.md). Once Calico answers, it applies the BGPPeers FIRST and
# the BGPConfiguration (mesh off) SECOND: mesh off before the peerings exist would cut every BGP session. Failures
# are retried until a deadline. On success it records a digest of its files and the cluster's CA.
#
# The CAPI_CALICO_* environment variables are for tests only (see the docs).
#
# Exit codes: 0 applied (now or before), 1 deadline passed, 2 bad environment or missing files.
set -eu
set -o pipefail

dir="${CAPI_CALICO_DIR:-/etc/capi-calico}"
kubeconfig="${CAPI_CALICO_KUBECONFIG:-/etc/kubernetes/admin.conf}"
log_dir="${CAPI_CALICO_LOG_DIR:-/var/log/capi-calico}"
state_dir="${CAPI_CALICO_STATE_DIR:-/var/lib/capi-calico}"
deadline_seconds="${CAPI_CALICO_DEADLINE_SECONDS:-1800}"
attempt_timeout="${CAPI_CALICO_ATTEMPT_TIMEOUT:-120}"
retry_sleep="${CAPI_CALICO_RETRY_SLEEP:-5}"
calicoctl="${CAPI_CALICO_CALICOCTL:-/usr/local/bin/calicoctl}"
# From a timed-out run's TERM to its KILL, s.
kill_after=10
log_file=""

PATH="${PATH:-/usr/bin:/bin}"
export PATH

if mkdir -p "$log_dir" 2>/dev/null && touch "$log_dir/apply-bgp.log" 2>/dev/null; then
  log_file="$log_dir/apply-bgp.log"
  # The unit may run many times: past 1 MiB the log is moved to .1 (one previous kept).
  if [ "$(wc -c <"$log_file")" -gt 1048576 ]; then
    mv -f -- "$log_file" "$log_file.1" && : >"$log_file"
  fi
fi

log() {
  line="$(date -u '+%Y-%m-%dT%H:%M:%SZ') apply-bgp: $*"
  printf '%s\n' "$line"
  if [ -n "$log_file" ]; then
    printf '%s\n' "$line" >>"$log_file" 2>/dev/null || true
  fi
}

die() {
  code="$1"
  shift
  log "ERROR: $*"
  exit "$code"
}

# One line of at most 500 characters, for the log.
squash() {
  printf '%s' "$1" | tr '\n' ' ' | cut -c 1-500
}

for pair in "CAPI_CALICO_DEADLINE_SECONDS=$deadline_seconds" "CAPI_CALICO_RETRY_SLEEP=$retry_sleep" \
  "CAPI_CALICO_ATTEMPT_TIMEOUT=$attempt_timeout"; do
  case "${pair#*=}" in
    '' | *[!0-9]*) die 2 "${pair%%=*} must be a non-negative integer, got '${pair#*=}'" ;;
  esac
done
[ "$attempt_timeout" -ge 1 ] || die 2 "CAPI_CALICO_ATTEMPT_TIMEOUT must be at least 1"

conf_file="$dir/bgpconfiguration.yaml"
[ -r "$dir/bgppeers.yaml" ] || die 2 "$dir/bgppeers.yaml is missing"
[ -r "$conf_file" ] || die 2 "$conf_file is missing"

peer_files=("$dir/bgppeers.yaml")
n=2
while [ -e "$dir/bgppeers-$n.yaml" ]; do
  peer_files+=("$dir/bgppeers-$n.yaml")
  n=$((n + 1))
done

start="$(date +%s)"
deadline=$((start + deadline_seconds))

remaining() {
  echo $((deadline - $(date +%s)))
}

# retry DESCRIPTION COMMAND...: run COMMAND until it succeeds; exit 1 once the deadline has passed.
retry() {
  what="$1"
  shift
  delay="$retry_sleep"
  tries=1
  while :; do
    if output="$("$@" 2>&1)"; then
      if [ -n "$output" ]; then
        log "$what: ok (attempt $tries): $(squash "$output")"
      else
        log "$what: ok (attempt $tries)"
      fi
      return 0
    fi
    left="$(remaining)"
    log "$what: not yet (attempt $tries): $(squash "$output")"
    if [ "$left" -le 0 ]; then
      die 1 "deadline of ${deadline_seconds}s passed while waiting for: $what"
    fi
    if [ "$delay" -gt "$left" ]; then
      delay="$left"
    fi
    sleep "$delay"
    tries=$((tries + 1))
    delay=$((delay * 2))
    if [ "$delay" -gt 60 ]; then
      delay=60
    fi
    if [ "$delay" -lt 1 ]; then
      delay=1
    fi
    if [ "$retry_sleep" -eq 0 ]; then
      delay=0
    fi
  done
}

have_kubeconfig() {
  if [ -r "$kubeconfig" ]; then
    return 0
  fi
  echo "$kubeconfig does not exist yet"
  return 1
}

have_timeout=""
if command -v timeout >/dev/null 2>&1; then
  have_timeout=1
fi

# bounded CAP WHAT COMMAND...: COMMAND, stopped by `timeout` after min(time left, CAP) seconds.
bounded() {
  local bound="$1" what="$2" rc=0
  shift 2
  if [ -z "$have_timeout" ]; then
    "$@"
    return
  fi
  [ "$(remaining)" -ge "$bound" ] || bound="$(remaining)"
  [ "$bound" -ge 1 ] || bound=1
  timeout --kill-after="$kill_after" "$bound" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "$what did not finish within ${bound}s and was stopped (exit $rc)"
  fi
  return "$rc"
}

# The pinned calicoctl, each run bounded by CAPI_CALICO_ATTEMPT_TIMEOUT.
export KUBECONFIG="$kubeconfig" DATASTORE_TYPE=kubernetes
calicoctl_() {
  bounded "$attempt_timeout" "calicoctl $1 ${2:-}" "$calicoctl" "$@"
}

# Create "default" only when `get` fails with "... does not exist: BGPConfiguration(default) ..." (any other failure:
# retry). Losing a create race to another machine ("already exists") fails this attempt; the next one patches.
bgp_configuration() {
  local out
  if out="$(calicoctl_ get bgpconfiguration default 2>&1)"; then
    echo "BGPConfiguration default exists: patching only the fields set in $conf_file."
    calicoctl_ patch bgpconfiguration default --patch "$(<"$conf_file")"
    return
  fi
  case "$out" in
    *"does not exist"*) ;;
    *)
      printf '%s\n' "$out"
      return 1
      ;;
  esac
  echo "BGPConfiguration default does not exist: creating it from $conf_file."
  if out="$(calicoctl_ create -f "$conf_file" 2>&1)"; then
    printf '%s\n' "$out"
    return 0
  fi
  printf '%s\n' "$out"
  case "$out" in
    *"already exists"*) echo "Created meanwhile by another control-plane machine: the next attempt patches it." ;;
  esac
  return 1
}

log "start: ${#peer_files[@]} peer file(s), deadline ${deadline_seconds}s"
if [ -z "$have_timeout" ]; then
  log "WARNING: timeout (coreutils) not found: a hung calicoctl run is not stopped, the deadline is only checked between runs"
fi
retry "admin kubeconfig $kubeconfig" have_kubeconfig
# What this machine applied last, to which cluster (its CA; a reused host may join another cluster): the same files
# need no second run (a reboot, a restart of the unit).
digest="$(cat -- "${peer_files[@]}" "$conf_file" <(grep -m 1 'certificate-authority-data' "$kubeconfig" || true) |
  sha256sum | cut -d ' ' -f 1)"
if [ "$(cat -- "$state_dir/applied" 2>/dev/null || true)" = "$digest" ]; then
  log "already applied (files and cluster CA sha256 $digest); nothing to do"
  exit 0
fi
# If the pre command's install failed, run the installer again, retried. Never a calicoctl on PATH.
installer="$dir/install-calicoctl.sh"
[ -x "$calicoctl" ] || [ -r "$installer" ] || die 2 "calicoctl is not installed at $calicoctl, nor $installer"
have_calicoctl() {
  [ ! -x "$calicoctl" ] || return 0
  echo "calicoctl is not installed at $calicoctl: running $installer"
  bounded "$deadline_seconds" "$installer" /bin/bash "$installer" 2>&1
}
retry "calicoctl installed at $calicoctl" have_calicoctl
retry "Calico ready (calicoctl get clusterinformation default)" calicoctl_ get clusterinformation default
for f in "${peer_files[@]}"; do
  retry "apply BGPPeers from $f" calicoctl_ apply -f "$f"
done
retry "BGPConfiguration default (node-to-node mesh off): create or patch from $conf_file" bgp_configuration
log "done: BGPPeers applied, then BGPConfiguration default created or patched"
if mkdir -p -- "$state_dir" && printf '%s\n' "$digest" >"$state_dir/applied"; then
  log "recorded in $state_dir/applied"
else
  log "WARNING: could not record the digest in $state_dir/applied: the next run applies again"
fi
