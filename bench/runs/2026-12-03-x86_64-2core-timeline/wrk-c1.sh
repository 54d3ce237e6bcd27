#!/bin/bash
# wrk -c1 for 4 s (after 1 s of warm-up) against the no-op function
# (`fixture.sh`), no tracer attached: p50 and req/s.
#   wrk-c1.sh VIRGA_BIN [serve args...]
set -eu
BIN=$1; shift
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
wrk -t1 -c1 -d1s -s "$D/post.lua" "$URL" > /dev/null
echo "$BIN $* $(wrk -t1 -c1 -d4s --latency -s "$D/post.lua" "$URL" | awk '$1=="50%"{p=$2} /Requests\/sec/{r=$2} END{print "p50=" p, "req/s=" r}')"
