#!/bin/bash
# Each thread of `virga serve`: voluntary and involuntary context switches
# and CPU time per warm invocation, over 5 s of wrk at C connections
# (default 64) against the no-op function (`fixture.sh`), after 1 s of
# warm-up. Threads that did nothing are left out.
#   [C=N] threads.sh VIRGA_BIN [serve args...]
set -eu
BIN=$1; shift
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
wrk -t1 -c"${C:-64}" -d1s -s "$D/post.lua" "$URL" > /dev/null
# tid comm voluntary involuntary cpu_ticks
snap() {
    for t in /proc/"$PID"/task/*; do
        echo "${t##*/} $(tr ' ' _ < "$t/comm") $(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status") $(awk '{print $14 + $15}' "$t/stat")"
    done | sort
}
snap > "$D/s0"
OUT=$(wrk -t1 -c"${C:-64}" -d5s -s "$D/post.lua" "$URL")
snap > "$D/s1"
REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
echo "$BIN $* requests=$REQ; per invocation:"
join "$D/s0" "$D/s1" | awk -v r="$REQ" -v hz="$(getconf CLK_TCK)" '
    $7 + $8 + $9 > $3 + $4 + $5 {
        printf "  %-7s %-16s voluntary=%.3f involuntary=%.3f cpu=%.2fus\n",
            $1, $2, ($7 - $3) / r, ($8 - $4) / r, ($9 - $5) / hz * 1e6 / r
    }'
