#!/bin/bash
# Interleaved runs of the overhead bench, one per binary per round:
#   ab.sh ROUNDS VIRGA_BIN...
# Each binary is copied over target/release/virga (which the bench starts)
# in turn; VIRGA_BENCH_SECS (default 1 here) sets the seconds per c=64
# measurement. Prints per run: platform CPU per invocation at c=64
# (max_concurrency 2), virga's and the bare server's c=1 p50, and the
# platform's share at c=1 with the default threads and with --threads 1.
set -eu
R=$1; shift
cd "$(dirname "$0")/../../.."
cp target/release/virga target/release/virga.ab-saved
trap 'mv target/release/virga.ab-saved target/release/virga' EXIT
cargo bench -p virga-cli --bench overhead --no-run 2>&1 \
    | grep -o 'target/release/deps/overhead-[0-9a-f]*' | head -1 > /tmp/ab-bench.$$
BENCH=$(cat /tmp/ab-bench.$$); rm -f /tmp/ab-bench.$$
for _ in $(seq "$R"); do
    for b in "$@"; do
        cp "$b" target/release/virga
        out=$(VIRGA_BENCH_SECS=${VIRGA_BENCH_SECS:-1} VIRGA_BENCH_ROUNDS=1 "$BENCH" --bench 2>&1)
        echo "$b" \
            "c64_platform=$(echo "$out" | awk '/^noop, max_concurrency 2 / {print $(NF-2)}')" \
            "$(echo "$out" | grep -oE 'virga p50 [0-9]+ us, bare p50 [0-9]+ us' | tr ' ,' '_ ')" \
            "share=$(echo "$out" | sed -n 's/.*duration_ms), p50: \([0-9]*\) us.*/\1/p')us" \
            "share_threads1=$(echo "$out" | sed -n 's/.*share p50 \([0-9]*\) us.*/\1/p')us"
    done
done
