#!/bin/bash
# Where the platform's CPU goes at c=64: `perf record -g` on the `virga serve`
# process for 5 s of wrk (64 connections) against the no-op function
# (`fixture.sh`), after 1 s of warm-up. Prints the split by binary and the
# top symbols; leaves perf.data in $OUT (default ./perf.data).
#   perf.sh VIRGA_BIN [serve args...]
set -eu
BIN=$1; shift; OUT=${OUT:-$PWD/perf.data}
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
wrk -t1 -c64 -d1s -s "$D/post.lua" "$URL" > /dev/null
perf record -q -F 4999 -g -p "$PID" -o "$OUT" -- sleep 5 &
SP=$!
wrk -t1 -c64 -d5s -s "$D/post.lua" "$URL" | grep Requests
wait $SP
perf report -i "$OUT" --no-children --sort dso -q -g none 2>/dev/null | head -5
perf report -i "$OUT" --no-children --sort sym -q -g none 2>/dev/null | head -12
perf report -i "$OUT" --children --sort sym -q -g none 2>/dev/null |
    grep -E " (__send|__GI___writev|__libc_recv|epoll_wait|sock_def_readable)$"
