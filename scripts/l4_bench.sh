#!/usr/bin/env bash
# Raw TCP and UDP runs (issue 12) side by side with their peers, on loopback,
# in one run, so the ratios compare like with like:
#   1. UDP ping-pong at concurrency 1: conntest's round-trip p50 against
#      sockperf ping-pong's (Debian's sockperf), 36-byte data (72-byte datagrams).
#   2. UDP at concurrency 50: conntest's datagrams/s (runs/s; each run is a
#      datagram each way, every one checked against the server's record)
#      against iperf3 -u at the same datagram size, unlimited rate.
#   3. TCP with a fresh connection per run: conntest's runs/s against a
#      small Python peer doing connect, send, receive the echo, close, in a
#      loop against a Python echo server.
# Usage: scripts/l4_bench.sh   (RUNS=50000 by default; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-50000}"
cargo build --release --quiet
BIN=target/release/conntest
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); UDP=$(free_port); TCP=$(free_port)
LOG_LEVEL=warn $BIN server --bind 127.0.0.1 -p "$HTTP" --udp-port "$UDP" --tcp-port "$TCP" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.05; done
URL="http://127.0.0.1:$HTTP"
group() { curl -sf "$URL/test-groups/create" -d "$1" | jq -r .run_group_id; }
run() { # $1: config JSON; prints the report's summary
  local id; id=$(group "$1")
  $BIN client -r "$URL" -g "$id" -q --runs failed -f "$WORK/r.json" || true
  jq -c .summary "$WORK/r.json"
}

echo "== 1. UDP ping-pong, concurrency 1, p50 round trip"
S=$(run "{\"run_count\": $RUNS, \"concurrency\": 1, \"protocol\": \"udp\"}")
C1=$(jq .client_duration_ns.p50 <<<"$S")
echo "conntest: p50 $C1 ns, passed $(jq .passed <<<"$S"), jitter to/from server $(jq .l4.jitter_to_server_ns <<<"$S")/$(jq .l4.jitter_from_server_ns <<<"$S") ns"
SP=$(free_port)
sockperf server -i 127.0.0.1 -p "$SP" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
SOUT=$(sockperf ping-pong -i 127.0.0.1 -p "$SP" -m 72 -t 5 2>&1 || true)
# sockperf prints one-way latency (half the round trip): the p50 line.
SP50=$(grep -E "percentile 50.000" <<<"$SOUT" | grep -oE "[0-9]+\.[0-9]+" | tail -1)
SRTT=$(python3 -c "print(round(2*1000*$SP50))")
echo "sockperf ping-pong: one-way p50 ${SP50} us => round trip ${SRTT} ns"
python3 -c "print('ratio conntest/sockperf p50: %.2fx (target within 10%%)' % ($C1/$SRTT))"

echo "== 2. UDP, concurrency 50, datagrams/s"
S=$(run "{\"run_count\": $((RUNS * 4)), \"concurrency\": 50, \"protocol\": \"udp\"}")
CR=$(jq .throughput_rps <<<"$S")
echo "conntest: $CR runs/s (each a datagram there and back), lost to/from server $(jq .l4.lost_to_server <<<"$S")/$(jq .l4.lost_from_server <<<"$S"), passed $(jq .passed <<<"$S")"
IP=$(free_port)
iperf3 -s -1 -B 127.0.0.1 -p "$IP" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
IJ=$(iperf3 -c 127.0.0.1 -p "$IP" -u -b 0 -l 72 -t 5 -J)
IPS=$(jq '.end.sum.packets / .end.sum.seconds' <<<"$IJ")
ILOSS=$(jq '.end.sum.lost_percent' <<<"$IJ")
echo "iperf3 -u -b 0 -l 72: $IPS datagrams/s one way, lost $ILOSS%"
python3 -c "print('ratio conntest/iperf3 datagrams/s: %.2fx (target >= 1; counting one way: %.2fx)' % ($CR/$IPS, 2*$CR/$IPS))"

echo "== 3. TCP, a fresh connection per run, runs/s"
S=$(run "{\"run_count\": $RUNS, \"concurrency\": 1, \"protocol\": \"tcp\"}")
CT=$(jq .throughput_rps <<<"$S")
echo "conntest: $CT runs/s, connect p50 $(jq .connect_ns.p50 <<<"$S") ns, passed $(jq .passed <<<"$S")"
EP=$(free_port)
python3 - "$EP" <<'PY' &
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
PT=$(python3 - "$EP" "$RUNS" <<'PY'
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
)
echo "python connect-send-recv-close peer: $PT connections/s"
python3 -c "print('ratio conntest/peer connections/s: %.2fx' % ($CT/$PT))"
