#!/bin/bash
# A warm no-op invocation's CPU on both sides, driven by wrk at c=64.
#   measure.sh VIRGA_BIN ROUNDS [serve args...]
# Per 5 s round: req/s; CPU per invocation of the `virga serve` process and
# of its two instances' runtime processes (/proc/PID/stat); voluntary
# context switches per invocation of each side (all threads).
# FN_ENV="{ K = \"v\" }" sets the function's env; BATCH=1 moves the
# runtimes to SCHED_BATCH (chrt) after the warm-up. Needs wrk.
set -eu
BIN=$1; ROUNDS=$2; shift 2
. "$(dirname "$0")/fixture.sh"
serve "$BIN" "$@"
TICKS=$(getconf CLK_TCK)
wrk -t1 -c64 -d2s -s "$D/post.lua" "$URL" > /dev/null
W=$(pgrep -f "exe worker" | tr '\n' ' ')
if [ -n "${BATCH:-}" ]; then for p in $W; do chrt -b -a -p 0 "$p"; done; fi
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
vcs() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {s += $2} END {print s}'; }
sum() { local t=0; for p in $W; do t=$((t + $($1 "$p"))); done; echo $t; }
per() { echo "($1) / $REQ" | bc -l | cut -c1-5; }
for r in $(seq "$ROUNDS"); do
    p0=$(cpu $PID); v0=$(vcs $PID); w0=$(sum cpu); wv0=$(sum vcs)
    OUT=$(wrk -t1 -c64 -d5s -s "$D/post.lua" "$URL")
    p1=$(cpu $PID); v1=$(vcs $PID); w1=$(sum cpu); wv1=$(sum vcs)
    REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
    RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
    echo "$* rps=$RPS platform_us=$(per "($p1 - $p0) / $TICKS * 1000000") platform_vcs=$(per "$v1 - $v0") runtimes_us=$(per "($w1 - $w0) / $TICKS * 1000000") runtimes_vcs=$(per "$wv1 - $wv0")"
done
