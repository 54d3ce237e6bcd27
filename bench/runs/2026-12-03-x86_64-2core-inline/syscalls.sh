#!/bin/bash
# The platform's syscalls and context switches per warm invocation at c=1
# (or at C=N, the wrk connections).
#   [C=N] syscalls.sh VIRGA_BIN [serve args...]
# wrk -c1 for 5 s against the no-op function (`fixture.sh`) while
# `perf stat` counts the `virga serve` process's syscalls (all threads)
# and /proc/PID/stat its CPU time.
# Needs wrk and perf.
set -eu
BIN=$1; shift
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
wrk -t1 -c"${C:-1}" -d1s -s "$D/post.lua" "$URL" > /dev/null
perf stat -x, -o "$D/stat" -p "$PID" \
    -e 'syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_pread64,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,context-switches' \
    -- sleep 5 &
SP=$!
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
C0=$(cpu)
OUT=$(wrk -t1 -c"${C:-1}" -d5s --latency -s "$D/post.lua" "$URL")
C1=$(cpu)
wait $SP
REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
P50=$(echo "$OUT" | awk '$1 == "50%" {print $2}')
CPU=$(echo "($C1 - $C0) / $(getconf CLK_TCK) * 1000000 / $REQ" | bc -l | cut -c1-5)
echo "$BIN $* requests=$REQ wrk_p50=$P50 per invocation: platform_cpu=${CPU}us $(awk -F, -v r="$REQ" \
    '/syscalls|context/ {n = $3; sub(/.*sys_enter_/, "", n); printf "%s=%.2f ", n, $1 / r}' "$D/stat")"
