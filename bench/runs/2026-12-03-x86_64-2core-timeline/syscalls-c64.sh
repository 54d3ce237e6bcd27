#!/bin/bash
# The platform's syscalls and context switches per warm invocation at c=64:
# the afternoon run's syscalls.sh with 64 wrk connections.
#   syscalls-c64.sh VIRGA_BIN [serve args...]
C=64 exec "$(dirname "$0")/../2026-12-03-x86_64-2core-inline/syscalls.sh" "$@"
