#!/bin/bash
# A warm no-op invocation's cost to `virga serve`, driven by wrk.
#   measure.sh VIRGA_BIN c64 [serve args...]   5 s rounds at concurrency 64:
#       req/s and the platform process's CPU per invocation (/proc/PID/stat)
#   measure.sh VIRGA_BIN c1 [serve args...]    wrk's p50 at concurrency 1
# ROUNDS (default 3) sets the c64 rounds. Needs wrk (Debian: apt install wrk).
set -eu
BIN=$1; MODE=$2; shift 2
D=$(mktemp -d); trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
mkdir -p "$D/fns"
cat > "$D/fns/noop2.toml" <<M
name = "noop2"
runtime = "command"
command = ["virga-worker"]
handler = "echo"
memory_mb = 1769
timeout_ms = 3000
max_concurrency = 2
max_queue = 1000
keep_alive_ms = 600000
M
cat > "$D/post.lua" <<L
wrk.method = "POST"
wrk.body = '{"ping":1}'
wrk.headers["Content-Type"] = "application/json"
L
RUST_LOG=info "$BIN" serve --addr 127.0.0.1:0 --data-dir "$D/data" --functions "$D/fns" \
    --max-memory-mb 200000000 "$@" > "$D/out" 2> "$D/log" &
PID=$!
for _ in $(seq 50); do grep -q "127.0.0.1:" "$D/out" 2>/dev/null && break; sleep 0.2; done
URL=http://$(grep -o "127.0.0.1:[0-9]*" "$D/out" | head -1)/2015-03-31/functions/noop2/invocations
TICKS=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
if [ "$MODE" = c1 ]; then
    wrk -t1 -c1 -d1s -s "$D/post.lua" "$URL" > /dev/null
    wrk -t1 -c1 -d4s --latency -s "$D/post.lua" "$URL" | grep -E "^ +50%"
    exit 0
fi
wrk -t1 -c64 -d2s -s "$D/post.lua" "$URL" > /dev/null
for r in $(seq "${ROUNDS:-3}"); do
    c0=$(cpu)
    OUT=$(wrk -t1 -c64 -d5s -s "$D/post.lua" "$URL")
    c1=$(cpu)
    REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
    RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
    echo "round $r: req=$REQ rps=$RPS platform_us=$(echo "($c1 - $c0) / $TICKS * 1000000 / $REQ" | bc -l | cut -c1-6)"
done
