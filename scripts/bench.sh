#!/usr/bin/env bash
# Macro benchmark: the release webhook (`serve --no-cluster-lookup`), the baseline responder
# (examples/baseline_responder.rs, same transport, allow-everything handler) and the replay responder
# (examples/replay_responder.rs: the baseline's handler answering with the webhook's own responses, precomputed,
# so it pays for the transport of the ~20 KB patches but does no policy work), each pinned to CPU 0, loaded over
# HTTPS keep-alive by examples/loadgen.rs pinned to CPU 1, at fixed rates and at saturation. Prints one markdown
# table: p50/p99/p99.9/max latency (from the request's due time: no coordinated omission), throughput, failed
# requests, peak RSS (VmHWM of the server since its start), and how much of the server's CPU other processes took
# during the row (the machine is shared: a noisy row says so).
#
# usage: scripts/bench.sh
# env:   RATES="500 1000 2000"  DURATION=10 (s per row)  WARMUP=2 (s, not recorded)  CONNECTIONS=16
#        BODIES="kcp-inject.json kct-inject.json ..." (tests/fixtures/reviews/, sent round-robin)
#        SKIP_BUILD=1 (use the binaries already built)  SERVER_CPU=0  CLIENT_CPU=1
#        ROUNDS=3 (saturation rows per server: after the first round, which also runs the fixed rates, each further
#        round starts the three servers again, in a rotated order, and measures saturation only; the ratio to the
#        baseline is taken within each round, and the summary gives their median: this VM's speed drifts by tens of
#        percent over minutes, so one pair of rows can compare a fast phase with a slow one)
#        MICRO=1 (then run the in-process benchmark too: `cargo bench --bench admission -- --sample-count 500`, its
#        tables after the macro table; MICRO=0 skips it; always skipped with PROFILE=debug)
#        PROFILE=debug (debug binaries: only to check that the script works, as tests/bench_smoke.rs does)
#        IDLE=spin (the load generator busy-polls instead of sleeping between responses, so that waking it is not
#        charged to the server: see examples/loadgen.rs and docs/performance.md)
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"500 1000 2000"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-16}
BODIES=${BODIES:-"kcp-inject.json kct-inject.json cluster-valid.json kcp-injected.json kct-injected.json"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
IDLE=${IDLE:-sleep}
ROUNDS=${ROUNDS:-3}
MICRO=${MICRO:-1}
if [[ $MICRO != 0 && $MICRO != 1 ]]; then
  echo "MICRO must be 0 or 1, got '$MICRO'" >&2
  exit 2
fi
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
  echo "ROUNDS must be a positive integer, got '$ROUNDS'" >&2
  exit 2
fi

PROFILE=${PROFILE:-release}
profile_flag=()
[[ $PROFILE == release ]] && profile_flag=(--release)
if [[ -z "${SKIP_BUILD:-}" ]]; then
  nice cargo build --locked "${profile_flag[@]}" --bin capi-calico-webhook --example baseline_responder --example replay_responder \
    --example loadgen >&2
fi
BIN=target/$PROFILE/capi-calico-webhook
BASELINE=target/$PROFILE/examples/baseline_responder
REPLAY=target/$PROFILE/examples/replay_responder
LOADGEN=target/$PROFILE/examples/loadgen

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

body_args=()
for b in $BODIES; do body_args+=(--body "tests/fixtures/reviews/$b"); done

field() { # field NAME JSON
  sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"
}
us_to_ms() { awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }
kib_to_mib() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# Busy ticks of one CPU (user nice system irq softirq steal) and of one process (utime stime), from /proc.
cpu_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

rows=()
declare -A saturated # label -> saturated throughput of each round, space-separated
run_server() { # run_server LABEL PORT ROUND RATES COMMAND... (RATES: the fixed rates to run before saturation)
  local label=$1 port=$2 round=$3 fixed=$4
  shift 4
  taskset -c "$SERVER_CPU" "$@" 2>"$work/$label-$round.log" &
  server_pid=$!
  wait_port "$port"
  local rate out hwm cpu0 client0 own0 t0 others own client
  for rate in $fixed 0; do
    cpu0=$(cpu_ticks "$SERVER_CPU"); client0=$(cpu_ticks "$CLIENT_CPU"); own0=$(proc_ticks "$server_pid"); t0=$(date +%s.%N)
    out=$(taskset -c "$CLIENT_CPU" "$LOADGEN" --url "https://127.0.0.1:$port/mutate" --ca "$work/$label-tls/ca.crt" \
      "${body_args[@]}" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" --idle "$IDLE")
    if [[ -z "$(field throughput "$out")" ]]; then
      echo "the load generator reported no throughput for $label at rate $rate: $out" >&2
      exit 1
    fi
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$server_pid/status")
    # Share of the server's CPU busy outside the server process while the row ran: other tenants of the machine, and
    # kernel work not charged to the process (softirq of the loopback traffic).
    others=$(awk -v c="$(( $(cpu_ticks "$SERVER_CPU") - cpu0 ))" -v o="$(( $(proc_ticks "$server_pid") - own0 ))" \
      -v t0="$t0" -v t1="$(date +%s.%N)" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { v = 100 * (c - o) / hz / (t1 - t0); printf "%.0f", v < 0 ? 0 : v }')
    # The server's own CPU time over the row, warm-up included: near 100 % at saturation means the server, not the
    # load generator, was the limit.
    own=$(awk -v o="$(( $(proc_ticks "$server_pid") - own0 ))" -v t0="$t0" -v t1="$(date +%s.%N)" \
      -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * o / hz / (t1 - t0) }')
    # How busy the load generator's CPU was: near 100 % means the load generator may have been the limit.
    client=$(awk -v c="$(( $(cpu_ticks "$CLIENT_CPU") - client0 ))" -v t0="$t0" -v t1="$(date +%s.%N)" \
      -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * c / hz / (t1 - t0) }')
    echo "$label rate=$rate $out VmHWM=${hwm}kB server-cpu=${own}% client-cpu${CLIENT_CPU}=${client}% others-on-cpu${SERVER_CPU}=${others}%" >&2
    local shown_rate=$rate
    if [[ $rate == 0 ]]; then
      shown_rate="saturation"
      [[ $round != 1 ]] && shown_rate="saturation (round $round)"
      saturated[$label]+="$(field throughput "$out") "
    fi
    rows+=("| $label | $shown_rate | $(field throughput "$out") | $(us_to_ms "$(field p50_us "$out")") | $(us_to_ms "$(field p99_us "$out")") | $(us_to_ms "$(field p999_us "$out")") | $(us_to_ms "$(field max_us "$out")") | $(field failed "$out") | $(kib_to_mib "$hwm") | $own | $client | $others |")
  done
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

start_one() { # start_one LABEL ROUND RATES
  case $1 in
    webhook) run_server webhook 18443 "$2" "$3" "$BIN" serve --listen 127.0.0.1:18443 --self-signed-dir "$work/webhook-tls" \
      --metrics-listen off --no-cluster-lookup --log-format json ;;
    baseline) run_server baseline 18444 "$2" "$3" "$BASELINE" --listen 127.0.0.1:18444 \
      --self-signed-dir "$work/baseline-tls" ;;
    replay) run_server replay 18445 "$2" "$3" "$REPLAY" --listen 127.0.0.1:18445 --self-signed-dir "$work/replay-tls" \
      "${body_args[@]}" ;;
  esac
}
order=(webhook baseline replay)
for round in $(seq 1 "$ROUNDS"); do
  fixed=""
  [[ $round == 1 ]] && fixed=$RATES
  for server in "${order[@]}"; do start_one "$server" "$round" "$fixed"; done
  order=("${order[@]:1}" "${order[0]}")
done

echo
echo "$(date -u +%Y-%m-%d) · $(nproc) CPUs · $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1) · server on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU"
echo "bodies (round-robin): $BODIES · $CONNECTIONS keep-alive HTTP/1.1 connections · ${DURATION}s per row after ${WARMUP}s warm-up · load generator idles by: $IDLE · $ROUNDS saturation round(s)"
echo
echo "| server | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | failed | peak RSS MiB | server CPU % | CPU $CLIENT_CPU (load generator) busy % | CPU $SERVER_CPU busy outside the server % |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
# One line per round, then the medians (of the rounds' ratios, not a ratio of medians: each round compares servers
# measured minutes apart).
awk -v w="${saturated[webhook]}" -v b="${saturated[baseline]}" -v r="${saturated[replay]}" '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  BEGIN {
    n = split(w, W, " "); split(b, B, " "); split(r, R, " ")
    if (n < 1) { print "no saturation round was measured"; exit 1 }
    for (i = 1; i <= n; i++) {
      if (B[i] == 0) { print "round " i ": the baseline answered nothing at saturation"; exit 1 }
      pw[i] = 100 * W[i] / B[i]; pr[i] = 100 * R[i] / B[i]
      printf "round %d: webhook %.0f req/s = %.1f%% of baseline %.0f req/s; replay %.0f req/s = %.1f%%\n", i, W[i], pw[i], B[i], R[i], pr[i]
    }
    printf "saturated throughput: webhook %.1f%% of the baseline (median of %d round(s)); replay of the webhook'"'"'s responses: %.1f%%\n", median(pw, n), n, median(pr, n)
  }'

# The in-process numbers (divan medians and allocations per case, percentiles of single calls, phases of a review),
# measured after the macro table so that the two never share the CPUs.
if [[ $MICRO == 1 && $PROFILE == release ]]; then
  echo
  echo "In-process benchmark (cargo bench --bench admission -- --sample-count 500):"
  cargo bench --locked --bench admission -- --sample-count 500
fi
