#!/bin/bash
# capi-calico-webhook's apply-bgp.sh, run by the unit capi-calico-apply-bgp (docs/injection.md).
# Once Calico answers: BGPPeers FIRST, then the BGPConfiguration (mesh off). Failures are retried until a deadline.
# CAPI_CALICO_* variables: tests only.
# Exit codes: 0 applied (now or before), 1 deadline passed, 2 what no later run can fix.
set -eu
set -o pipefail

dir="${CAPI_CALICO_DIR:-/etc/capi-calico}"
kubeconfig="${CAPI_CALICO_KUBECONFIG:-/etc/kubernetes/admin.conf}"
log_dir="${CAPI_CALICO_LOG_DIR:-/var/log/capi-calico}"
state_dir="${CAPI_CALICO_STATE_DIR:-/var/lib/capi-calico}"
deadline_seconds="${CAPI_CALICO_DEADLINE_SECONDS:-1800}"
attempt_timeout="${CAPI_CALICO_ATTEMPT_TIMEOUT:-120}"
retry_sleep="${CAPI_CALICO_RETRY_SLEEP:-5}"
# As install-calicoctl.sh: the first writable of these (/opt/bin where /usr is read-only).
read -ra dirs <<<"${CAPI_CALICO_INSTALL_DIRS:-/usr/local/bin /opt/bin}"
for bin_dir in "${dirs[@]}"; do
  { mkdir -p "$bin_dir" && [ -w "$bin_dir" ]; } 2>/dev/null && break
done
calicoctl="${CAPI_CALICO_CALICOCTL:-$bin_dir/calicoctl}"
# From a timed-out run's TERM to its KILL, s.
kill_after=10
log_file=""

PATH="${PATH:-/usr/bin:/bin}"
export PATH

if mkdir -p "$log_dir" 2>/dev/null && touch "$log_dir/apply-bgp.log" 2>/dev/null; then
  log_file="$log_dir/apply-bgp.log"
  # Past 1 MiB the log is moved to .1.
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

# Seconds since boot: a clock step (NTP at boot) does not move the deadline.
now() {
  local up
  if { read -r up _ </proc/uptime; } 2>/dev/null; then echo "${up%.*}"; else date +%s; fi
}
deadline=$(($(now) + deadline_seconds))

remaining() {
  echo $((deadline - $(now)))
}

# retry WHAT CMD...: until CMD succeeds; exit 1 past the deadline, 2 at once when CMD exits 100 (hopeless).
retry() {
  what="$1"
  shift
  delay="$retry_sleep"
  tries=1
  while :; do
    rc=0
    output="$("$@" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then
      if [ -n "$output" ]; then
        log "$what: ok (attempt $tries): $(squash "$output")"
      else
        log "$what: ok (attempt $tries)"
      fi
      return 0
    fi
    [ "$rc" -ne 100 ] || die 2 "$what: $(squash "$output")"
    left="$(remaining)"
    log "$what: not yet (attempt $tries): $(squash "$output")"
    [ "$left" -gt 0 ] || die 1 "deadline of ${deadline_seconds}s passed while waiting for: $what"
    [ "$delay" -le "$left" ] || delay="$left"
    sleep "$delay"
    tries=$((tries + 1))
    delay=$((delay * 2))
    [ "$delay" -le 60 ] || delay=60
    [ "$delay" -ge 1 ] || delay=1
    [ "$retry_sleep" -ne 0 ] || delay=0
  done
}

have_kubeconfig() {
  [ -r "$kubeconfig" ] || { echo "$kubeconfig does not exist yet" && return 1; }
}

have_timeout=""
if command -v timeout >/dev/null 2>&1; then
  have_timeout=1
fi

# bounded CAP WHAT CMD...: CMD, stopped by `timeout` after min(time left, CAP) s.
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

# Create "default" only if `get` says "does not exist"; a lost race: the next try patches.
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
# What was applied last, to which cluster (its CA): no second run.
digest="$(cat -- "${peer_files[@]}" "$conf_file" <(grep -m 1 'certificate-authority-data' "$kubeconfig" || true) |
  sha256sum | cut -d ' ' -f 1)"
if [ "$(cat -- "$state_dir/applied" 2>/dev/null || true)" = "$digest" ]; then
  log "already applied (files and cluster CA sha256 $digest); nothing to do"
  exit 0
fi
# The installer verifies (fast) or installs the pinned binary: never one on PATH or unverified (tests: none).
installer="$dir/install-calicoctl.sh"
[ -x "$calicoctl" ] || [ -r "$installer" ] || die 2 "calicoctl is not installed at $calicoctl, nor $installer"
# Its last words (all in install-calicoctl.log). Exit codes 2, 3, 4 cannot change on another run.
have_calicoctl() {
  local out rc=0
  [ -r "$installer" ] || return 0
  out="$(bounded "$deadline_seconds" "$installer" /bin/bash "$installer" 2>&1)" || rc=$?
  printf 'installer exit %s: %s\n' "$rc" "$(printf '%s\n' "$out" | tail -n 2)"
  case "$rc" in 2 | 3 | 4) echo "fix it, then: systemctl restart capi-calico-apply-bgp" && return 100 ;; esac
  return "$rc"
}
retry "install calicoctl at $calicoctl" have_calicoctl
# The unit's proxy is for that download: calicoctl reaches the API server directly.
unset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy
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
