#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first:
# python3 (the test runtimes are Python custom runtimes) and, where pip can
# fetch it, the AWS CLI (one test invokes through it; it skips without it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip
fi
if ! command -v aws >/dev/null 2>&1; then
    python3 -m pip install -q awscli 2>/dev/null \
        || echo "note: the AWS CLI could not be installed; its test will skip"
fi

cargo test --workspace --locked "$@"
