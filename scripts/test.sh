#!/usr/bin/env bash
# Runs every test: the model converters' (Python) and the workspace's.
# Installs what the tests need first: python3 (the test runtimes are Python
# custom runtimes), numpy and onnx (converters) and, where pip can fetch it,
# the AWS CLI (one test invokes through it; it skips without it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip
fi
if ! command -v aws >/dev/null 2>&1; then
    python3 -m pip install -q awscli 2>/dev/null \
        || echo "note: the AWS CLI could not be installed; its test will skip"
fi

# The model converters (virga models pull) are Python with numpy and onnx.
python3 -m pip install -q numpy "onnx==1.23.2" 2>/dev/null \
    || echo "note: numpy/onnx could not be installed; the converter tests will skip"
python3 -m unittest discover -s scripts/models -p 'test_*.py'

cargo test --workspace --locked "$@"
