#!/bin/bash
# Who wakes a thread through a futex in `virga serve` at c=1: FUTEX_WAKE
# (op 129) with their user stacks, 0.5 s of wrk -c1 against the no-op
# function. Then: perf script -i futex.data
#   futex-c1.sh VIRGA_BIN
set -eu
BIN=$1
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN"
wrk -t1 -c1 -d1s -s "$D/post.lua" "$URL" > /dev/null
wrk -t1 -c1 -d3s -s "$D/post.lua" "$URL" > /dev/null &
W=$!
sleep 1
perf record -q -o ${OUT:-futex.data} -e syscalls:sys_enter_futex --filter 'op == 129' --call-graph dwarf,16384 -p $PID -- sleep 0.5 2>/dev/null
wait $W
