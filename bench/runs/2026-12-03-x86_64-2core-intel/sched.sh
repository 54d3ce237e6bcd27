#!/bin/bash
# The platform's CPU per warm invocation at C connections (default 64)
# when the instances' processes (every descendant of `virga serve`), or the
# platform's own threads, are moved to another scheduling policy after the
# warm-up. Not something virga does; an experiment on the host's scheduler.
#   [C=N] [INSTANCES=batch] [PLATFORM=batch] [PIN=split|same] sched.sh VIRGA_BIN [serve args...]
# INSTANCES=batch / PLATFORM=batch: SCHED_BATCH (no wake-up preemption).
# PIN=split: the platform's two busiest threads on CPUs 0 and 1;
# PIN=same: both on CPU 0.
set -eu
BIN=$1; shift
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
wrk -t1 -c"${C:-64}" -d1s -s "$D/post.lua" "$URL" > /dev/null
descendants() { for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
if [ "${INSTANCES:-}" = batch ]; then
    for c in $(descendants "$PID"); do chrt -a -b -p 0 "$c" > /dev/null; done
fi
if [ "${PLATFORM:-}" = batch ]; then chrt -a -b -p 0 "$PID" > /dev/null; fi
if [ -n "${PIN:-}" ]; then
    i=0
    for t in $(for t in /proc/"$PID"/task/*; do echo "$(awk '{print $14 + $15}' "$t/stat") ${t##*/}"; done | sort -rn | head -2 | cut -d' ' -f2); do
        taskset -p -c "$([ "$PIN" = same ] && echo 0 || echo $i)" "$t" > /dev/null
        i=$((i + 1))
    done
fi
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
C0=$(cpu)
OUT=$(wrk -t1 -c"${C:-64}" -d5s --latency -s "$D/post.lua" "$URL")
C1=$(cpu)
REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
P50=$(echo "$OUT" | awk '$1 == "50%" {print $2}')
echo "instances=${INSTANCES:-normal} platform=${PLATFORM:-normal} pin=${PIN:-none} $* requests=$REQ wrk_p50=$P50 platform_cpu=$(echo "($C1 - $C0) / $(getconf CLK_TCK) * 1000000 / $REQ" | bc -l | cut -c1-5)us"
