#!/usr/bin/env bash
# Side-by-side figures on loopback (issue 4, "Speed, side by side"), in one run:
#
#   1. conntest client vs wrk, both driving the same conntest server's run
#      route (POST /test-groups/ID/N, 36-byte body) at concurrency 1 and 50:
#      requests/s and p50. The conntest figures are end to end (group fetch,
#      run, comparison, report file), from its report and from the process's
#      own wall time.
#   2. conntest server (1 loop thread) under wrk -c50 vs nginx (1 worker)
#      answering a bare `return 200;`, and --threads 2 vs 2 workers; every run
#      wrk got an answer for must be in the server's record.
#   3. memory and the post-run phases: client peak RSS for a 1 000 000-run
#      group at concurrency 50 and its time from the last run to the report
#      written (fetch, compare, report; LOG_LEVEL=debug's phases), the report's
#      size in full and with --runs failed; server RSS growth per recorded
#      run and how fast it streams the group's JSON (curl) against how fast
#      the client takes it in.
#   4. the release binary's size against the original's 8 MB.
#   5. scale-out: runs/s of one server with the memory store vs one with
#      `--store redis://` (a Redis on loopback started here) at concurrency
#      50, conntest client and wrk each, and 3 replicas sharing that Redis
#      behind nginx round-robin; ratios Redis/memory (target >= 0.5x).
#
# Usage: bash scripts/bench.sh          (from any directory; 127.0.0.1 only)
# Knobs: BENCH_SECONDS (each wrk run, default 8), BENCH_RUNS_C1 (50000),
#        BENCH_RUNS_C50 (50000), BENCH_RUNS_MEM (1000000),
#        BENCH_SECTIONS (which sections, default "1 2 3 4 5"; 2 needs 1),
#        BENCH_REPORT_DIR (where the client's reports go, default /dev/shm
#        when it is writable: the program's own work, not the disk's; the
#        fsync's wait on a disk shows in LOG_LEVEL=debug's summary line).
# Needs: cargo, wrk, nginx, redis-server, jq, curl; /usr/bin/time (package `time`) for peak
# RSS, else VmHWM is sampled from /proc every 50 ms.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECS=${BENCH_SECONDS:-8}
RUNS_C1=${BENCH_RUNS_C1:-50000}
RUNS_C50=${BENCH_RUNS_C50:-50000}
RUNS_MEM=${BENCH_RUNS_MEM:-1000000}
SECTIONS=" ${BENCH_SECTIONS:-1 2 3 4 5} "
section() { [[ $SECTIONS == *" $1 "* ]]; }
BODY=3b6f1c2e-8a4d-4f6b-9c1e-7d2a5b8e0f13 # 36 bytes, every run
ORIGINAL_BYTES=8000000                    # the original Go binary: 8 MB
WRK=${WRK:-$(command -v wrk || echo /usr/bin/wrk)}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
REDIS=${REDIS:-$(command -v redis-server || echo /usr/bin/redis-server)}

for tool in "$WRK" "$NGINX" "$REDIS" jq curl cargo; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench.sh: missing $tool (apt-get install -y wrk nginx redis-server jq curl)" >&2
    exit 2
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/conntest-bench.XXXXXX")
if [ -n "${BENCH_REPORT_DIR:-}" ]; then
  REPORTS=$(mktemp -d "$BENCH_REPORT_DIR/conntest-bench.XXXXXX")
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then
  REPORTS=$(mktemp -d /dev/shm/conntest-bench.XXXXXX)
else
  REPORTS=$TMP
fi
PIDS=()

# Stops one process we started: TERM, up to 5 s, then KILL.
stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  rm -rf "$TMP" "$REPORTS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

fmt0() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
fmt1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

# A TCP port on 127.0.0.1 nobody listens on, below the kernel's ephemeral
# range so no outgoing connection holds it.
free_port() {
  local low p i
  low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 12000 ] || low=32768
  for i in $(seq 50); do
    p=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "bench.sh: no free port found" >&2
  return 1
}

# start_server NAME [ARGS...]: a conntest server on 127.0.0.1, ephemeral
# port; sets SERVER_PID and URL.
start_server() {
  local log="$TMP/$1.log" port="" i
  shift
  : >"$log" # exists before the first look, however fast that comes
  "$BIN" server --bind 127.0.0.1 -p 0 "$@" 2>"$log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for i in $(seq 200); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "bench.sh: the conntest server did not start:" >&2
    cat "$log" >&2
    exit 1
  fi
  URL="http://127.0.0.1:$port"
}

# start_nginx WORKERS [PORT...]: nginx answering `return 200;`, or with
# ports a round-robin load balancer in front of 127.0.0.1:PORT... (HTTP/1.1
# and keep-alive to them; `proxy_next_upstream off` so no run is replayed
# to a second server; no buffering, so the group record streams through
# and no temporary file is written: run as root, nginx's workers could not
# write in $TMP); sets NGINX_PID, NGINX_URL.
start_nginx() {
  local dir="$TMP/nginx-$1" workers=$1 port attempt i p upstream="" location="return 200;"
  shift
  if [ $# -gt 0 ]; then
    for p in "$@"; do upstream+="server 127.0.0.1:$p; "; done
    upstream="upstream servers { ${upstream}keepalive 64; }"
    location="proxy_pass http://servers; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_next_upstream off; proxy_buffering off; proxy_request_buffering off;"
  fi
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    $upstream
    server {
        listen 127.0.0.1:$port;
        location / { $location }
    }
}
EOF
    : >"$dir/error.log"
    "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" 2>>"$dir/error.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    NGINX_URL="http://127.0.0.1:$port"
    for i in $(seq 100); do
      curl -fsS -o /dev/null "$NGINX_URL/healthz" 2>/dev/null && return 0
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$NGINX_PID"
  done
  echo "bench.sh: nginx did not start:" >&2
  cat "$dir/error.log" >&2
  exit 1
}

# start_redis: redis-server on a free 127.0.0.1 port, nothing kept on
# disk; sets REDIS_PID, REDIS_PORT, STORE (the --store URL).
start_redis() {
  local attempt i pong
  mkdir -p "$TMP/redis"
  for attempt in 1 2 3 4 5; do
    REDIS_PORT=$(free_port)
    "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" --daemonize no &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    STORE="redis://127.0.0.1:$REDIS_PORT/0"
    for i in $(seq 100); do
      pong=$( (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&3 && timeout 1 head -c 5 <&3) 2>/dev/null || true)
      [ "$pong" = "+PONG" ] && return 0
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$REDIS_PID"
  done
  echo "bench.sh: redis-server did not start:" >&2
  cat "$TMP/redis/redis.log" >&2
  exit 1
}

create_group() { # URL RUNS CONCURRENCY -> id
  curl -fsS -X POST "$1/test-groups/create" \
    -d "{\"description\":\"bench.sh\",\"run_count\":$2,\"concurrency\":$3,\"data\":\"$BODY\"}" |
    jq -r .run_group_id
}
recorded_runs() { # URL ID -> runs the server recorded
  curl -fsS "$1/test-groups" | jq --arg id "$2" '.[] | select(.run_group_id == $id) | .recorded_runs'
}
delete_group() { curl -fsS -o /dev/null -X DELETE "$1/test-groups/$2"; }
rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

# run_measured CMD...: runs CMD; sets RC, ELAPSED_NS and PEAK_KB (peak RSS).
run_measured() {
  local t0 pid hwm
  RC=0
  PEAK_KB=0
  t0=$(date +%s%N)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -o "$TMP/time.txt" "$@" || RC=$?
    PEAK_KB=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$TMP/time.txt")
  else
    "$@" &
    pid=$!
    PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do
      hwm=$(rss_kb "$pid" VmHWM 2>/dev/null || true)
      [ -n "$hwm" ] && PEAK_KB=$hwm
      sleep 0.05
    done
    wait "$pid" || RC=$?
  fi
  ELAPSED_NS=$(($(date +%s%N) - t0))
}

# The wrk script: POST /test-groups/ID/N, N counting up, the same 36-byte body.
cat >"$TMP/run.lua" <<EOF
local group, counter = "none", 0
function init(args) group = args[1] or group end
wrk.method = "POST"
wrk.body = "$BODY"
function request()
  counter = counter + 1
  return wrk.format(nil, "/test-groups/" .. group .. "/" .. counter)
end
EOF

# run_wrk CONNS URL GROUP NAME: one wrk thread, SECS seconds; sets W_RPS,
# W_COUNT (requests completed), W_P50_US, W_ERRORS.
run_wrk() {
  local out="$TMP/wrk-$4.txt"
  "$WRK" -t1 -c"$1" -d"${SECS}s" --timeout 5s --latency -s "$TMP/run.lua" "$2" -- "$3" >"$out" 2>&1
  W_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  W_COUNT=$(awk '/ requests in / { print $1 }' "$out")
  W_P50_US=$(awk '$1 == "50%" {
      v = $2
      if (v ~ /us$/) { sub(/us$/, "", v); print v }
      else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
      else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    }' "$out")
  W_ERRORS=$(grep -E 'Socket errors|Non-2xx' "$out" | tr -s ' ' | paste -sd ';' - || true)
  if [ -z "$W_RPS" ] || [ -z "$W_COUNT" ] || [ -z "$W_P50_US" ]; then
    echo "bench.sh: could not read wrk's output:" >&2
    cat "$out" >&2
    exit 1
  fi
}

# run_client URL RUNS CONCURRENCY: conntest client on a fresh group; sets
# C_RPS (report's throughput_rps), C_P50_US, C_PROC_RPS (runs / process wall
# time), C_PASSED, C_PEAK_KB, C_WALL_S.
run_client() {
  local id report="$REPORTS/report.json"
  id=$(create_group "$1" "$2" "$3")
  run_measured "$BIN" client -r "$1" -g "$id" -f "$report" -q
  if [ "$RC" -ne 0 ]; then
    echo "bench.sh: conntest client exited $RC (test failed?):" \
      "$(jq -c '.summary | {failed, not_sent, stopped_early, errors: (.errors | with_entries(select(.value > 0))),
        discrepancies: (.discrepancies | with_entries(select(.value > 0)))}' "$report" 2>/dev/null)" \
      "first errors: $(jq -c '[.results[] | select(.error != null) | .error][0:3]' "$report" 2>/dev/null)" >&2
  fi
  C_RPS=$(jq '.summary.throughput_rps' "$report")
  C_P50_US=$(jq '.summary.client_duration_ns.p50 / 1000' "$report")
  C_PASSED=$(jq '.summary.passed' "$report")
  C_DRIVE_S=$(jq '.summary.wall_time_ns / 1e7 | round / 100' "$report")
  C_PROC_RPS=$(awk -v n="$2" -v t="$ELAPSED_NS" 'BEGIN { print n * 1e9 / t }')
  C_WALL_S=$(awk -v t="$ELAPSED_NS" 'BEGIN { printf "%.2f", t / 1e9 }')
  C_PEAK_KB=$PEAK_KB
  rm -f "$report"
  delete_group "$1" "$id"
}

# wrk_on_server CONNS URL NAME: wrk on a fresh group's run route, then checks
# the record; sets the W_* figures and W_RECORDED, W_CHECK.
wrk_on_server() {
  local id
  id=$(create_group "$2" 1000000 "$1")
  run_wrk "$1" "$2" "$id" "$3"
  sleep 0.2 # let the last answers in flight be recorded
  W_RECORDED=$(recorded_runs "$2" "$id")
  # wrk counts answers it read before it stopped; up to CONNS more may have
  # been in flight then, recorded by the server but not counted by wrk.
  if [ "$W_RECORDED" -ge "$W_COUNT" ] && [ "$W_RECORDED" -le $((W_COUNT + $1)) ]; then
    W_CHECK="ok: every answered run recorded ($((W_RECORDED - W_COUNT)) more were in flight when wrk stopped)"
  else
    W_CHECK="MISMATCH: wrk counted $W_COUNT answers, the server recorded $W_RECORDED"
  fi
  delete_group "$2" "$id"
}

row() { printf '  %-44s %4s %10s %10s %10s  %s\n' "$@"; }

# ---------------------------------------------------------------- build

echo "# conntest side-by-side benchmark (scripts/bench.sh)"
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
  dirty=""
  [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=" + uncommitted changes"
  echo "commit:  $(git rev-parse --short HEAD)$dirty"
fi
echo "tools:   $("$WRK" --version 2>&1 | head -n 1 | cut -d' ' -f1-2), $("$NGINX" -v 2>&1 | sed 's/.*version: //')"
echo "each wrk run: ${SECS} s, 1 thread (-t1); every request POST /test-groups/ID/N with a 36-byte body"
echo

cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/conntest"
[ -x "$BIN" ] || {
  echo "bench.sh: no binary at $BIN" >&2
  exit 1
}

# ---------------------------------------------------------------- 1. client vs wrk
if section 1; then
start_server main
MAIN_URL=$URL
MAIN_PID=$SERVER_PID
echo "## 1. conntest client vs wrk, the same conntest server (1 loop thread) at $MAIN_URL"
row "" conc "runs" "req/s" "p50 us" ""
declare -A WK_RPS WK_P50 WK_COUNT
for conc in 1 50; do
  runs=$RUNS_C1
  [ "$conc" -eq 50 ] && runs=$RUNS_C50
  run_client "$MAIN_URL" "$runs" "$conc"
  row "conntest client (report throughput_rps)" "$conc" "$runs" "$(fmt0 "$C_RPS")" "$(fmt1 "$C_P50_US")" "passed=$C_PASSED"
  row "conntest client (runs / process wall time)" "$conc" "$runs" "$(fmt0 "$C_PROC_RPS")" "" "process ${C_WALL_S} s (runs ${C_DRIVE_S} s), peak RSS $((C_PEAK_KB / 1024)) MiB"
  wrk_on_server "$conc" "$MAIN_URL" "main-c$conc"
  WK_RPS[$conc]=$W_RPS
  WK_P50[$conc]=$W_P50_US
  WK_COUNT[$conc]=$W_COUNT
  row "wrk -t1 -c$conc" "$conc" "$W_COUNT" "$(fmt0 "$W_RPS")" "$(fmt1 "$W_P50_US")" "${W_ERRORS:-no errors}"
  echo "    server record after wrk: $W_CHECK"
  echo "    ratio client/wrk at c$conc: req/s $(ratio "$C_RPS" "$W_RPS") (process $(ratio "$C_PROC_RPS" "$W_RPS")), p50 $(ratio "$C_P50_US" "$W_P50_US")  [target: req/s >= 1.00x, p50 <= 1.05x; process >= 0.80x at c50]"
done
echo
fi

# ---------------------------------------------------------------- 2. server vs nginx
if section 2; then
echo "## 2. conntest server vs nginx \`return 200;\`, both under wrk -t1 -c50"
SRV1_RPS=${WK_RPS[50]}
SRV1_P50=${WK_P50[50]}
stop_pid "$MAIN_PID"
start_nginx 1
run_wrk 50 "$NGINX_URL" none nginx1
stop_pid "$NGINX_PID"
row "" conc "requests" "req/s" "p50 us" ""
row "conntest server, 1 loop thread (from 1.)" 50 "${WK_COUNT[50]}" "$(fmt0 "$SRV1_RPS")" "$(fmt1 "$SRV1_P50")" "records every run"
row "nginx, worker_processes 1" 50 "$W_COUNT" "$(fmt0 "$W_RPS")" "$(fmt1 "$W_P50_US")" "${W_ERRORS:-no errors}"
echo "    ratio conntest/nginx, 1 thread each: req/s $(ratio "$SRV1_RPS" "$W_RPS")  [target >= 0.80x]"

start_server threads2 --threads 2
wrk_on_server 50 "$URL" threads2
SRV2_RPS=$W_RPS
SRV2_P50=$W_P50_US
SRV2_COUNT=$W_COUNT
SRV2_CHECK=$W_CHECK
stop_pid "$SERVER_PID"
start_nginx 2
run_wrk 50 "$NGINX_URL" none nginx2
stop_pid "$NGINX_PID"
row "conntest server --threads 2" 50 "$SRV2_COUNT" "$(fmt0 "$SRV2_RPS")" "$(fmt1 "$SRV2_P50")" ""
row "nginx, worker_processes 2" 50 "$W_COUNT" "$(fmt0 "$W_RPS")" "$(fmt1 "$W_P50_US")" "${W_ERRORS:-no errors}"
echo "    server record after wrk (--threads 2): $SRV2_CHECK"
echo "    ratio conntest/nginx, 2 threads each: req/s $(ratio "$SRV2_RPS" "$W_RPS")  (wrk's own thread shares the 2 cores)"
echo
fi

# ---------------------------------------------------------------- 3. memory
if section 3; then
echo "## 3. memory and post-run phases, $RUNS_MEM-run group at concurrency 50 (fixed 36-byte body), reports in $REPORTS"
start_server memory
MEM_URL=$URL
MEM_PID=$SERVER_PID
# Baseline: the client's fixed cost, from a small test.
id=$(create_group "$MEM_URL" 1000 50)
run_measured "$BIN" client -r "$MEM_URL" -g "$id" -q -f "$REPORTS/mem.json"
BASE_KB=$PEAK_KB
delete_group "$MEM_URL" "$id"
sleep 0.2
# post_run LOG: seconds from "the runs are done" to the report written, from
# the client's LOG_LEVEL=debug lines (RFC 3339 times of one day).
post_run() {
  awk '/the runs are done|wrote the report in/ {
      split(substr($1, 12, 18), t, ":"); s = t[1] * 3600 + t[2] * 60 + t[3]
      if ($0 ~ /the runs are done/) a = s; else b = s
    } END { if (a && b) printf "%.2f", b - a; else print "n/a" }' "$1"
}
phases() { sed -n 's/.*DEBUG //p' "$1" | grep -E '^(fetched|wrote|compared|synced)' | paste -sd ';' - | sed 's/;/; /g'; }
SRV_BEFORE_KB=$(rss_kb "$MEM_PID" VmRSS)
id=$(create_group "$MEM_URL" "$RUNS_MEM" 50)
LOG_LEVEL=debug run_measured "$BIN" client -r "$MEM_URL" -g "$id" -q -f "$REPORTS/mem.json" 2>"$TMP/mem-full.log"
MEM_RC=$RC
MEM_PEAK_KB=$PEAK_KB
MEM_WALL_S=$(awk -v t="$ELAPSED_NS" 'BEGIN { printf "%.1f", t / 1e9 }')
FULL_POST_S=$(post_run "$TMP/mem-full.log")
FULL_PHASES=$(phases "$TMP/mem-full.log")
FULL_BYTES=$(stat -c %s "$REPORTS/mem.json")
rm -f "$REPORTS/mem.json"
SRV_AFTER_KB=$(rss_kb "$MEM_PID" VmRSS)
SRV_HWM_KB=$(rss_kb "$MEM_PID" VmHWM)
MEM_RECORDED=$(recorded_runs "$MEM_URL" "$id")
# The server alone: the group's JSON streamed to curl, best of 3.
STREAM_S=""
for _ in 1 2 3; do
  t=$(curl -fsS -o /dev/null -w '%{time_total} %{size_download}' "$MEM_URL/test-groups/$id")
  STREAM_BYTES=${t#* }
  STREAM_S=$(awk -v a="${t%% *}" -v b="$STREAM_S" 'BEGIN { print (b == "" || a < b) ? a : b }')
done
delete_group "$MEM_URL" "$id"
id=$(create_group "$MEM_URL" "$RUNS_MEM" 50)
LOG_LEVEL=debug run_measured "$BIN" client -r "$MEM_URL" -g "$id" -q --runs failed -f "$REPORTS/mem.json" 2>"$TMP/mem-failed.log"
SMALL_POST_S=$(post_run "$TMP/mem-failed.log")
SMALL_PHASES=$(phases "$TMP/mem-failed.log")
SMALL_BYTES=$(stat -c %s "$REPORTS/mem.json")
rm -f "$REPORTS/mem.json"
delete_group "$MEM_URL" "$id"
stop_pid "$MEM_PID"
per_run() { awk -v kb="$1" -v n="$2" 'BEGIN { printf "%.1f", kb * 1024 / n }'; }
echo "  client: exit $MEM_RC, ${MEM_WALL_S} s; peak RSS $((MEM_PEAK_KB / 1024)) MiB = $(per_run "$MEM_PEAK_KB" "$RUNS_MEM") B/run;" \
  "minus a 1000-run test's peak ($((BASE_KB / 1024)) MiB): $(per_run $((MEM_PEAK_KB - BASE_KB)) $((RUNS_MEM - 1000))) B/run" \
  "(the body is the group's 36-byte data, the same every run, held once)  [target <= 200 B/run]"
echo "  post-run (last run to report written: fetch, compare, report): ${FULL_POST_S} s  [target <= 1.5 s for 1000000 runs]"
echo "    phases: $FULL_PHASES"
echo "    with --runs failed: ${SMALL_POST_S} s; phases (nothing written during the fetch): $SMALL_PHASES"
echo "  report size: full $FULL_BYTES bytes ($(awk -v b="$FULL_BYTES" -v n="$RUNS_MEM" 'BEGIN { printf "%.0f", b / n }') B/run);" \
  "--runs failed (a passing test) $SMALL_BYTES bytes"
echo "  server streams the group's JSON ($STREAM_BYTES bytes) to curl in $STREAM_S s" \
  "($(awk -v b="$STREAM_BYTES" -v t="$STREAM_S" 'BEGIN { printf "%.0f", b / t / 1e6 }') MB/s); the client's fetch (server and client at once) is in the phases above"
echo "  server: recorded $MEM_RECORDED runs; VmRSS $((SRV_BEFORE_KB / 1024)) -> $((SRV_AFTER_KB / 1024)) MiB" \
  "(peak $((SRV_HWM_KB / 1024)) MiB while streaming the group to the client):" \
  "growth $(per_run $((SRV_AFTER_KB - SRV_BEFORE_KB)) "$MEM_RECORDED") B/run; the data itself is one shared" \
  "36-byte body (consecutive equal bodies share one allocation), ~0 B/run, so all of it is overhead  [target < 200 B/run]"
echo
fi

# ---------------------------------------------------------------- 4. size
if section 4; then
SIZE=$(stat -c %s "$BIN")
echo "## 4. release binary: $SIZE bytes ($(awk -v s="$SIZE" 'BEGIN { printf "%.2f", s / 1e6 }') MB) vs the original's 8 MB: $(ratio "$SIZE" "$ORIGINAL_BYTES")"
echo
fi

# ---------------------------------------------------------------- 5. scale-out
if section 5; then
echo "## 5. scale-out: the memory store vs --store redis:// (Redis on loopback), concurrency 50, $RUNS_C50 runs"
start_redis
echo "  $("$REDIS" --version | cut -d' ' -f1-3), $STORE"
row "" conc "runs" "runs/s" "p50 us" ""
# scale_row NAME URL: the client, then wrk, on URL; sets S_C_RPS, S_W_RPS.
scale_row() {
  run_client "$2" "$RUNS_C50" 50
  S_C_RPS=$C_RPS
  row "$1, conntest client" 50 "$RUNS_C50" "$(fmt0 "$C_RPS")" "$(fmt1 "$C_P50_US")" "passed=$C_PASSED"
  wrk_on_server 50 "$2" "scale-$1"
  S_W_RPS=$W_RPS
  row "$1, wrk -t1" 50 "$W_COUNT" "$(fmt0 "$W_RPS")" "$(fmt1 "$W_P50_US")" "${W_ERRORS:-no errors}"
  echo "    server record after wrk: $W_CHECK"
}
start_server scale-memory
scale_row "1 server, memory" "$URL"
MEMORY_C_RPS=$S_C_RPS MEMORY_W_RPS=$S_W_RPS
stop_pid "$SERVER_PID"
start_server scale-redis --store "$STORE"
scale_row "1 server, redis" "$URL"
REDIS_C_RPS=$S_C_RPS REDIS_W_RPS=$S_W_RPS
stop_pid "$SERVER_PID"
REPLICA_PIDS=() REPLICA_PORTS=()
for replica in 1 2 3; do
  start_server "replica$replica" --store "$STORE"
  REPLICA_PIDS+=("$SERVER_PID")
  REPLICA_PORTS+=("${URL##*:}")
done
start_nginx 1 "${REPLICA_PORTS[@]}"
scale_row "3 servers, redis, nginx" "$NGINX_URL"
stop_pid "$NGINX_PID"
for pid in "${REPLICA_PIDS[@]}"; do stop_pid "$pid"; done
stop_pid "$REDIS_PID"
echo "    ratio redis/memory, 1 server: client $(ratio "$REDIS_C_RPS" "$MEMORY_C_RPS"), wrk $(ratio "$REDIS_W_RPS" "$MEMORY_W_RPS")  [target >= 0.50x]"
echo "    ratio 3 servers behind nginx/1 server, redis: client $(ratio "$S_C_RPS" "$REDIS_C_RPS"), wrk $(ratio "$S_W_RPS" "$REDIS_W_RPS")  ($(nproc) cores shared by the servers, Redis, nginx and the load)"
echo
fi

echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
