#!/bin/bash
# Installed by capi-calico-webhook as /etc/capi-calico/apply-bgp.sh on control-plane machines and started from
# postKubeadmCommands in the background (a transient systemd unit, capi-calico-apply-bgp), so it never blocks the
# bootstrap.
#
# It waits until the API server answers with the admin kubeconfig and Calico is installed (ClusterInformation
# "default" exists), then applies the BGPPeers FIRST and the BGPConfiguration (node-to-node mesh off) SECOND:
# turning the mesh off before the route-reflector peerings exist would cut every BGP session.
# Peers are in bgppeers.yaml, then bgppeers-2.yaml, bgppeers-3.yaml, ... (applied in that order, stopping at the first
# number that does not exist). Every failure is retried until an overall deadline.
#
# Environment (for tests; unset on a node):
#   CAPI_CALICO_DIR               directory of the YAML files (default /etc/capi-calico)
#   CAPI_CALICO_KUBECONFIG        admin kubeconfig          (default /etc/kubernetes/admin.conf)
#   CAPI_CALICO_LOG_DIR           log directory             (default /var/log/capi-calico)
#   CAPI_CALICO_DEADLINE_SECONDS  overall deadline          (default 1800)
#   CAPI_CALICO_RETRY_SLEEP       first back-off, seconds   (default 5; doubled per failure, at most 60)
#   CAPI_CALICO_CALICOCTL         calicoctl binary          (default /usr/local/bin/calicoctl, the pinned one
#                                 install-calicoctl.sh verified; never another calicoctl found on PATH)
#
# Exit codes: 0 applied, 1 deadline passed, 2 bad environment or missing files.
set -eu
set -o pipefail

dir="${CAPI_CALICO_DIR:-/etc/capi-calico}"
kubeconfig="${CAPI_CALICO_KUBECONFIG:-/etc/kubernetes/admin.conf}"
log_dir="${CAPI_CALICO_LOG_DIR:-/var/log/capi-calico}"
deadline_seconds="${CAPI_CALICO_DEADLINE_SECONDS:-1800}"
retry_sleep="${CAPI_CALICO_RETRY_SLEEP:-5}"
calicoctl="${CAPI_CALICO_CALICOCTL:-/usr/local/bin/calicoctl}"
log_file=""

PATH="${PATH:-/usr/bin:/bin}"
export PATH

if mkdir -p "$log_dir" 2>/dev/null && touch "$log_dir/apply-bgp.log" 2>/dev/null; then
  log_file="$log_dir/apply-bgp.log"
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

for pair in "CAPI_CALICO_DEADLINE_SECONDS=$deadline_seconds" "CAPI_CALICO_RETRY_SLEEP=$retry_sleep"; do
  case "${pair#*=}" in
    '' | *[!0-9]*) die 2 "${pair%%=*} must be a non-negative integer, got '${pair#*=}'" ;;
  esac
done

[ -r "$dir/bgppeers.yaml" ] || die 2 "$dir/bgppeers.yaml is missing"
[ -r "$dir/bgpconfiguration.yaml" ] || die 2 "$dir/bgpconfiguration.yaml is missing"

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
      log "$what: ok (attempt $tries)"
      return 0
    fi
    left="$(remaining)"
    log "$what: not yet (attempt $tries): $(printf '%s' "$output" | tr '\n' ' ' | cut -c 1-500)"
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

calicoctl_() {
  if [ ! -x "$calicoctl" ]; then
    echo "calicoctl is not installed at $calicoctl"
    return 127
  fi
  KUBECONFIG="$kubeconfig" DATASTORE_TYPE=kubernetes "$calicoctl" "$@"
}

log "start: ${#peer_files[@]} peer file(s), deadline ${deadline_seconds}s"
retry "admin kubeconfig $kubeconfig" have_kubeconfig
retry "Calico ready (calicoctl get clusterinformation default)" calicoctl_ get clusterinformation default
for f in "${peer_files[@]}"; do
  retry "apply BGPPeers from $f" calicoctl_ apply -f "$f"
done
retry "apply BGPConfiguration default (node-to-node mesh off) from $dir/bgpconfiguration.yaml" \
  calicoctl_ apply -f "$dir/bgpconfiguration.yaml"
log "done: BGPPeers applied, then BGPConfiguration default"
