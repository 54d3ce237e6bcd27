#!/bin/bash
# The platform's CPU and syscalls per warm invocation with a no-op built
# with the official runtime client (`bench/peers/lambda-noop`), by wrk.
#   [C=N] official.sh VIRGA_BIN NOOP_PROGRAM [serve args...]   (C: wrk connections, default 64)
# Needs wrk and perf.
set -eu
BIN=$1; NOOP=$2; shift 2
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
D=$(mktemp -d); trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
fixture "[\"$NOOP\"]"
"$BIN" serve --addr 127.0.0.1:0 --data-dir "$D/data" --functions "$D/fns" --max-memory-mb 200000000 "$@" > "$D/out" 2> "$D/log" &
PID=$!
for _ in $(seq 50); do grep -q "127.0.0.1:" "$D/out" 2>/dev/null && break; sleep 0.2; done
URL=http://$(grep -o "127.0.0.1:[0-9]*" "$D/out" | head -1)/2015-03-31/functions/noop2/invocations
wrk -t1 -c"${C:-64}" -d1s -s "$D/post.lua" "$URL" > /dev/null
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
C0=$(cpu)
perf stat -x, -o "$D/stat" -p "$PID" -e syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_accept4,context-switches -- sleep 5 & SP=$!
OUT=$(wrk -t1 -c"${C:-64}" -d5s --latency -s "$D/post.lua" "$URL")
C1=$(cpu)
wait $SP; REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
P50=$(echo "$OUT" | awk '$1 == "50%" {print $2}')
echo "$NOOP $* c=${C:-64} requests=$REQ p50=$P50 platform_cpu=$(echo "($C1 - $C0) / $(getconf CLK_TCK) * 1000000 / $REQ" | bc -l | cut -c1-5)us"
awk -F, -v r="$REQ" '/syscalls|context/ {n = $3; sub(/.*sys_enter_/, "", n); printf "%s=%.2f ", n, $1 / r} END {print ""}' "$D/stat"
