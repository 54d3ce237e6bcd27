#!/bin/bash
# Interleaved A/B of two `virga` builds at c=64: RUNS (default 3) rounds of
# `syscalls-c64.sh` (platform CPU and syscalls per warm invocation) on
# each, then one `threads.sh` (per-thread CPU and switches) on each.
#   ab.sh VIRGA_A VIRGA_B
set -eu
H=$(dirname "$0")/..
for _ in $(seq "${RUNS:-3}"); do
    for b in "$1" "$2"; do "$H/2026-12-03-x86_64-2core-timeline/syscalls-c64.sh" "$b"; done
done
for b in "$1" "$2"; do "$H/2026-12-03-x86_64-2core-intel/threads.sh" "$b"; done
