#!/usr/bin/env bash
# Raw TCP and UDP runs (issue 12) side by side with their peers, on loopback,
# in one run: each round runs conntest and then the peer, rounds alternate,
# and the medians are compared, so a busy neighbour weighs on both alike.
#   1. UDP ping-pong at concurrency 1: conntest's round-trip p50 against
#      sockperf ping-pong's (Debian's sockperf; it prints half the round
#      trip), 36-byte data (72-byte datagrams). Measured with client and
#      server on one core, on two cores, and where the scheduler puts them:
#      on a small machine the placement moves a loopback round trip from
#      ~12 us (one core: a wake-up is a context switch) to ~35 us (two: an
#      idle core must be woken), for any program, so each placement is
#      compared with itself.
#   2. UDP at concurrency 50: conntest's runs/s (each run is a datagram
#      there and an echo back, both checked against what was sent and the
#      server's record) against iperf3 -u -b 0 at the same datagram size:
#      iperf3's datagrams sent/s (the target: conntest's runs/s at least
#      that), received/s and loss (iperf3 sends one way, unpaced, and
#      loses what the receiver cannot take).
#   3. TCP with a fresh connection per run: conntest's runs/s against a
#      connect, send, receive the echo, close loop in C (and in Python),
#      each against an echo server in the same language.
# Usage: scripts/l4_bench.sh   (RUNS=50000 ROUNDS=5 SECONDS_PER=3; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-50000}"
ROUNDS="${ROUNDS:-5}"
SECS="${SECONDS_PER:-3}"
cargo build --release --quiet
BIN=$PWD/target/release/conntest
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { python3 -c 'import sys, statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
# $1: a cpu list for taskset, or "" for none; the rest: the command.
on() { local cpus=$1; shift; if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi; }
# Likewise in the background, output to the log; sets LAST to its pid (the
# program's own, so it can be stopped).
spawn() {
  local cpus=$1; shift
  if [ -n "$cpus" ]; then taskset -c "$cpus" "$@" >>"$WORK/peers.log" 2>&1 &
  else "$@" >>"$WORK/peers.log" 2>&1 & fi
  LAST=$!; pids+=("$LAST")
}
stop() { if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }

HTTP=0; URL=""; SERVER=""; LAST=""
start_server() { # $1: cpus
  stop "$SERVER"
  HTTP=$(free_port)
  LOG_LEVEL=warn spawn "$1" "$BIN" server --bind 127.0.0.1 -p "$HTTP" --udp-port 0 --tcp-port 0
  SERVER=$LAST
  URL="http://127.0.0.1:$HTTP"
  for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.05; done
}
run() { # $1: cpus of the client, $2: config JSON; prints the report's summary
  local id; id=$(curl -sf "$URL/test-groups/create" -d "$2" | jq -r .run_group_id)
  on "$1" "$BIN" client -r "$URL" -g "$id" -q --runs failed -f "$WORK/r.json" || true
  jq -c .summary "$WORK/r.json"
}
SP=""; SPPORT=0
start_sockperf() { # $1: cpus
  stop "$SP"
  SPPORT=$(free_port)
  spawn "$1" sockperf server -i 127.0.0.1 -p "$SPPORT"
  SP=$LAST; sleep 0.3
}

echo "== 1. UDP ping-pong, concurrency 1: round-trip p50 (median of $ROUNDS rounds, alternating)"
CORES=$(nproc)
placements=("one core:0:0" "free::")
[ "$CORES" -ge 2 ] && placements=("one core:0:0" "two cores:0:1" "free::")
for placement in "${placements[@]}"; do
  IFS=: read -r name scpu ccpu <<<"$placement"
  start_server "$scpu"; start_sockperf "$scpu"
  c=(); s=(); failed=0
  for _ in $(seq "$ROUNDS"); do
    S=$(run "$ccpu" "{\"run_count\": $RUNS, \"concurrency\": 1, \"protocol\": \"udp\"}")
    c+=("$(jq .client_duration_ns.p50 <<<"$S")")
    [ "$(jq .passed <<<"$S")" = true ] || failed=$((failed + 1))
    OUT=$(on "$ccpu" sockperf ping-pong -i 127.0.0.1 -p "$SPPORT" -m 72 -t "$SECS" 2>&1 || true)
    half=$(grep -E "percentile 50.000" <<<"$OUT" | grep -oE "[0-9]+\.[0-9]+" | tail -1)
    s+=("$(python3 -c "print(round(2000*$half))")")
  done
  C=$(median "${c[@]}"); SR=$(median "${s[@]}")
  echo "$name: conntest p50 ${C} ns (rounds: ${c[*]}; failed tests: $failed), sockperf ${SR} ns (rounds: ${s[*]}): ratio $(ratio "$C" "$SR")x (target <= 1.10)"
done

echo "== 2. UDP, concurrency 50: conntest runs/s against iperf3 -u -b 0 -l 72 datagrams/s (median of $ROUNDS rounds)"
start_server ""
cr=(); lt=(); lf=(); is=(); ir=(); il=()
for _ in $(seq "$ROUNDS"); do
  S=$(run "" "{\"run_count\": $((RUNS * 4)), \"concurrency\": 50, \"protocol\": \"udp\"}")
  cr+=("$(jq .throughput_rps <<<"$S")")
  lt+=("$(jq .l4.loss_to_server_percent <<<"$S")"); lf+=("$(jq .l4.loss_from_server_percent <<<"$S")")
  IP=$(free_port)
  spawn "" iperf3 -s -1 -B 127.0.0.1 -p "$IP"
  sleep 0.3
  IJ=$(iperf3 -c 127.0.0.1 -p "$IP" -u -b 0 -l 72 -t "$SECS" -J)
  is+=("$(jq '.end.sum_sent.packets / .end.sum_sent.seconds' <<<"$IJ")")
  ir+=("$(jq '(.end.sum_received.packets - .end.sum_received.lost_packets) / .end.sum_received.seconds' <<<"$IJ")")
  il+=("$(jq '.end.sum_received.lost_percent' <<<"$IJ")")
done
CR=$(median "${cr[@]}"); IS=$(median "${is[@]}"); IR=$(median "${ir[@]}")
echo "conntest: $CR runs/s (rounds: ${cr[*]}), lost to/from server $(median "${lt[@]}")%/$(median "${lf[@]}")%"
echo "iperf3: sent $IS datagrams/s, received $IR/s, lost $(median "${il[@]}")% (rounds sent: ${is[*]})"
echo "ratio conntest runs/s / iperf3 sent/s: $(ratio "$CR" "$IS")x (target >= 1); / received/s: $(ratio "$CR" "$IR")x"

echo "== 3. TCP, a fresh connection per run, runs/s (median of $ROUNDS rounds)"
cat >"$WORK/peer.c" <<'C'
/* The C peer: `peer server PORT` echoes one message per connection;
   `peer client PORT N` connects, sends 72 bytes, reads the echo, closes, N
   times, and prints connections/s. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[2]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char buf[4096]; int one = 1;
  if (!strcmp(argv[1], "server")) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4096)) return 1;
    for (;;) {
      int c = accept(l, 0, 0); if (c < 0) continue;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n > 0) send(c, buf, n, 0);
      close(c);
    }
  }
  long n = atol(argv[3]); memset(buf, 'x', 72);
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n; i++) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c, (void *)&a, sizeof a)) return 1;
    send(c, buf, 72, 0);
    for (ssize_t got = 0, k; got < 72 && (k = recv(c, buf + 72, sizeof buf - 72, 0)) > 0;) got += k;
    close(c);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("%f\n", n / ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9));
  return 0;
}
C
cc -O2 -o "$WORK/peer" "$WORK/peer.c"
CP=$(free_port)
spawn "" "$WORK/peer" server "$CP"
PP=$(free_port)
python3 - "$PP" >>"$WORK/peers.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    d = c.recv(4096)
    if d: c.sendall(d)
    c.close()
PY
pids+=($!)
sleep 0.5
stop "$SP"
ct=(); cc_=(); py=()
for _ in $(seq "$ROUNDS"); do
  S=$(run "" "{\"run_count\": $((RUNS / 2)), \"concurrency\": 1, \"protocol\": \"tcp\"}")
  ct+=("$(jq .throughput_rps <<<"$S")")
  cc_+=("$("$WORK/peer" client "$CP" $((RUNS / 2)))")
  py+=("$(python3 - "$PP" $((RUNS / 10)) <<'PY'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
msg = b"x" * 72
t = time.perf_counter()
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(msg); got = b""
    while len(got) < len(msg):
        got += c.recv(4096)
    c.close()
print(n / (time.perf_counter() - t))
PY
)")
done
CT=$(median "${ct[@]}"); CC=$(median "${cc_[@]}"); PY=$(median "${py[@]}")
echo "conntest: $CT runs/s (rounds: ${ct[*]}); C peer: $CC connections/s (rounds: ${cc_[*]}); Python peer: $PY/s"
echo "ratio conntest / C peer: $(ratio "$CT" "$CC")x; / Python peer: $(ratio "$CT" "$PY")x"
