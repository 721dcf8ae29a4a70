#!/usr/bin/env bash
# Timing precision on loopback (issue 4, "Timing precision"):
#   1. server_delay_ns as an outside observer sees it: wrk -c1 latency on the
#      run route of a group with the delay, minus the same without delay
#      (p50 and p99), for delays from 50 us to 1 s; and the server's own
#      record: server_duration_ns minus the delay.
#   2. client_delay_ns pacing: the client's dispatch lag (sent minus due) at
#      rates the client does not saturate, from its report's summary.
# Usage: bash scripts/precision.sh        (127.0.0.1 only; about 2 minutes)
# Knobs: PRECISION_SECONDS (each wrk run, default 4).
# Needs: cargo, wrk, jq, curl. Figures are only meaningful on an idle machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECS=${PRECISION_SECONDS:-4}
for tool in wrk jq curl cargo; do
  command -v "$tool" >/dev/null || { echo "precision.sh: missing $tool" >&2; exit 2; }
done
cargo build --release --quiet
BIN=$ROOT/target/release/conntest
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" server -p 0 --bind 127.0.0.1 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
  ADDR=$(sed -n 's/.*listening on //p' "$WORK/server.log" | head -1)
  [ -n "$ADDR" ] && break
  sleep 0.05
done
URL=http://$ADDR
echo "# conntest timing precision (scripts/precision.sh), $(date -u '+%F %T UTC')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"

# A group with a delay; prints its id.
group() {
  curl -s "$URL/test-groups/create" -d "{\"run_count\": 100000000, \"server_delay_ns\": $1}" | jq -r .run_group_id
}

# wrk -c1 latency percentile (us) on the run route of group $1.
wrk_latency() {
  cat >"$WORK/post.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/test-groups/$1/" .. counter, nil, "0123456789abcdef0123456789abcdef0123")
end
done = function(summary, latency, requests)
  io.write(string.format("P50 %.3f\nP99 %.3f\n", latency:percentile(50), latency:percentile(99)))
end
LUA
  wrk -t1 -c1 -d"${2}s" -s "$WORK/post.lua" "$URL" | awk '/^P50/{p50=$2} /^P99/{p99=$2} END{print p50, p99}'
}

echo
echo "## 1. server_delay_ns: extra hold beyond the delay"
echo "   wrk -c1, delayed minus undelayed latency; and the server's own record (server_duration_ns - delay)"
base=$(wrk_latency "$(group 0)" "$SECS")
read -r b50 b99 <<<"$base"
printf '   %-12s %14s %14s %16s %16s\n' delay "wrk p50 extra" "wrk p99 extra" "server p50 extra" "server p99 extra"
printf '   %-12s %11s us %11s us   (baseline latency p50 %s us, p99 %s us)\n' 0 - - "$b50" "$b99"
for delay in 50000 200000 1000000 10000000 100000000 1000000000; do
  id=$(group "$delay")
  secs=$SECS
  [ "$delay" -ge 1000000000 ] && secs=$((SECS * 3))
  read -r l50 l99 <<<"$(wrk_latency "$id" "$secs")"
  runs=$(curl -s "$URL/test-groups/$id" | jq -c "[.test_runs[].server_duration_ns - $delay] | sort | [.[(length*0.5|floor)], .[(length*0.99|floor)]]")
  s50=$(jq '.[0]' <<<"$runs")
  s99=$(jq '.[1]' <<<"$runs")
  awk -v d="$delay" -v l50="$l50" -v l99="$l99" -v b50="$b50" -v b99="$b99" -v s50="$s50" -v s99="$s99" \
    'BEGIN { printf "   %-12s %11.1f us %11.1f us %13.1f us %13.1f us\n", d/1000 " us", l50 - b50 - d/1000, l99 - b99 - d/1000, s50/1000, s99/1000 }'
done

echo
echo "## 2. client_delay_ns pacing: dispatch lag (sent minus due), concurrency 4"
printf '   %-14s %12s %12s %10s %10s\n' "pace" "target/s" "achieved/s" "lag p50" "lag p99"
for pace in 1000000 200000 100000 50000; do
  "$BIN" run -r "$URL" --run-count $((2000000000 / pace < 20000 ? 2000000000 / pace : 20000)) \
    --concurrency 4 --client-delay-ns "$pace" -q -f "$WORK/pace.json" || true
  jq -r --arg p "$pace" '.summary | "   \($p|tonumber/1000) us        \(.target_rate_rps|floor)   \(.achieved_rate_rps|floor)   \(.dispatch_lag_ns.p50/1000) us   \(.dispatch_lag_ns.p99/1000) us"' "$WORK/pace.json"
done
