#!/bin/bash
# Where the time of one warm invocation at c=1 goes, from the kernel's
# syscall tracepoints of every process on the host (wrk, `virga serve`,
# the no-op runtime): 1 s of wrk -c1 against the no-op function
# (`fixture.sh`), then `timeline.py` splits each request into its steps.
#   timeline.sh VIRGA_BIN [serve args...]
# Needs wrk and perf.
set -eu
BIN=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
wrk -t1 -c1 -d1s -s "$D/post.lua" "$URL" > /dev/null
wrk -t1 -c1 -d4s -s "$D/post.lua" "$URL" > "$D/wrk" &
W=$!
sleep 1.5
S='syscalls:sys_enter_'; X='syscalls:sys_exit_'
EV=""
for c in read write recvfrom sendto writev epoll_wait; do EV="$EV -e $S$c -e $X$c"; done
perf record -q -a -o "$D/perf.data" $EV -- sleep 1 2>/dev/null
wait $W
# The runtime: every process below the platform's.
KIDS=$(ps -e -o pid=,ppid= | awk -v p="$PID" '{c[$2] = c[$2] " " $1} END {q = p; while (q != "") {split(q, a, " "); q = ""; for (i in a) {printf "%s,", a[i]; q = q " " c[a[i]]}}}')
perf script -i "$D/perf.data" -F comm,pid,tid,time,event,trace 2>/dev/null \
    | tee "${TRACE:-/dev/null}" | python3 "$HERE/timeline.py" "$PID" "$KIDS"
grep -A1 Latency "$D/wrk" | tail -1
