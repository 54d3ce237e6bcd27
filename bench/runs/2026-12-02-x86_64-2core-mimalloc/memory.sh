#!/bin/bash
# Resident memory of the platform and of its two no-op instances: started,
# after 10 s of wrk c=64, and after 40 s idle (the platform trims every
# 30 s, an idle instance after 10 s). RSS and anonymous kB from /proc.
#   memory.sh VIRGA_BIN [serve args...]
set -eu
BIN=$1; shift
. "$(dirname "$0")/../2026-12-02-x86_64-2core-wakeups/fixture.sh"
serve "$BIN" "$@"
mem() { awk '/^VmRSS|^RssAnon/ {printf "%s %s ", $1, $2}' "/proc/$1/status"; }
show() {
    echo "$1: platform $(mem $PID)"
    for p in $(pgrep -f "exe worker"); do echo "$1: instance $(mem "$p")"; done
}
curl -s -o /dev/null -X POST -d '{}' "$URL"; sleep 1
show started
wrk -t1 -c64 -d10s -s "$D/post.lua" "$URL" | awk '/requests in/ {print "load:", $1, "requests"}'
show loaded
sleep 40
show idle
