#!/bin/bash
# The platform's user-space instructions per warm invocation, counted by
# callgrind: repeatable whatever else the host is doing (two runs of the
# same build agree within 1%). `virga serve --threads 1 --isolation off`
# under valgrind (the jail re-executes /proc/self/exe, which valgrind
# cannot); the no-op runtime is the same binary by path. wrk c=16: 4 s to
# warm, then 10 s counted between two dumps.
#   instructions.sh VIRGA_BIN     prints requests, instructions, per invocation
# Leaves the dump in $OUT (default ./last.callgrind) for callgrind-costs.py.
set -eu
BIN=$(realpath "$1"); OUT=${OUT:-$PWD/last.callgrind}
D=$(mktemp -d); trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
. "$(dirname "$0")/fixture.sh"
fixture "[\"$BIN\", \"worker\"]"
valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$D/cg.%p" "$BIN" serve --addr 127.0.0.1:0 \
    --data-dir "$D/data" --functions "$D/fns" --threads 1 --isolation off \
    > "$D/out" 2> "$D/log" &
PID=$!
for _ in $(seq 150); do grep -q "127.0.0.1:" "$D/out" 2>/dev/null && break; sleep 0.2; done
URL=http://$(grep -o "127.0.0.1:[0-9]*" "$D/out" | head -1)/2015-03-31/functions/noop2/invocations
wrk -t1 -c16 -d4s -s "$D/post.lua" "$URL" > /dev/null
callgrind_control -d $PID > /dev/null 2>&1; sleep 1
RUN=$(wrk -t1 -c16 -d10s -s "$D/post.lua" "$URL")
callgrind_control -d $PID > /dev/null 2>&1; sleep 1
REQ=$(echo "$RUN" | awk '/requests in/ {print $1}')
cp "$(ls -t "$D"/cg.*.* | head -1)" "$OUT"
IR=$(awk '/^summary:/ {print $2}' "$OUT")
echo "requests=$REQ instructions=$IR per_invocation=$((IR / REQ))"
