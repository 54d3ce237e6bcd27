#!/bin/bash
# The `virga serve` process's user and system CPU per warm invocation, wrk
# c=64 on the no-op function (the wakeups run's fixture), 5 s rounds.
#   user-sys.sh VIRGA_BIN ROUNDS [serve args...]
set -eu
BIN=$1; ROUNDS=$2; shift 2
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
TICKS=$(getconf CLK_TCK)
wrk -t1 -c64 -d2s -s "$D/post.lua" "$URL" > /dev/null
for r in $(seq "$ROUNDS"); do
    read u0 s0 < <(awk '{print $14, $15}' /proc/$PID/stat)
    OUT=$(wrk -t1 -c64 -d5s -s "$D/post.lua" "$URL")
    read u1 s1 < <(awk '{print $14, $15}' /proc/$PID/stat)
    REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
    RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
    echo "$* rps=$RPS user_us=$(echo "($u1-$u0)/$TICKS*1000000/$REQ" | bc -l | cut -c1-5) sys_us=$(echo "($s1-$s0)/$TICKS*1000000/$REQ" | bc -l | cut -c1-5)"
done
