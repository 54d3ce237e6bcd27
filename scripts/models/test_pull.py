"""Tests of the model converters (python3 -m unittest scripts/models/test_pull.py)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))

try:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, TensorProto
except ImportError:  # the test script installs them; skip elsewhere
    onnx = None

import pull


@unittest.skipIf(onnx is None, "numpy and onnx are not installed")
class FillWeights(unittest.TestCase):
    def light_model(self):
        """A 'light' graph as the onnx wheel ships them: weights stand in as ConstantOfShape."""
        shape = numpy_helper.from_array(np.array([4, 3, 3, 3], dtype=np.int64), "w__SHAPE")
        bias_shape = numpy_helper.from_array(np.array([4], dtype=np.int64), "b__SHAPE")
        nodes = [
            helper.make_node("ConstantOfShape", ["w__SHAPE"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("ConstantOfShape", ["b__SHAPE"], ["b"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        ]
        g = helper.make_graph(
            nodes, "light",
            # As in the wheel's graphs, the stand-ins' shapes are graph inputs too.
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
             helper.make_tensor_value_info("w__SHAPE", TensorProto.INT64, [4]),
             helper.make_tensor_value_info("b__SHAPE", TensorProto.INT64, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
            [shape, bias_shape],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])

    def test_real_values_win_over_stand_ins(self):
        m = self.light_model()
        m.graph.initializer.append(numpy_helper.from_array(np.full(4, 0.5, dtype=np.float32), "b"))
        out = pull.fill_weights(m, seed=1)
        inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
        self.assertTrue(np.all(inits["b"] == 0.5))
        self.assertEqual(sum(t.name == "b" for t in out.graph.initializer), 1)

    def test_scales_behind_unsqueeze_become_ones(self):
        shape = numpy_helper.from_array(np.array([3], dtype=np.int64), "s__SHAPE")
        axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
        nodes = [
            helper.make_node("ConstantOfShape", ["s__SHAPE"], ["s"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("Unsqueeze", ["s", "axes"], ["s3"]),
            helper.make_node("Mul", ["x", "s3"], ["y"]),
        ]
        g = helper.make_graph(
            nodes, "scale",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
            [shape, axes],
        )
        m = pull.fill_weights(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), seed=3)
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        self.assertTrue(np.all(inits["s"] == 1.0))

    def test_stand_ins_become_seeded_initializers(self):
        m = pull.fill_weights(self.light_model(), seed=7)
        onnx.checker.check_model(m)
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        self.assertEqual(inits["w"].shape, (4, 3, 3, 3))
        self.assertTrue(np.all(inits["b"] == 0))
        self.assertGreater(float(np.std(inits["w"])), 0.1)
        self.assertNotIn("w__SHAPE", inits)
        self.assertEqual([n.op_type for n in m.graph.node], ["Conv"])
        self.assertEqual([i.name for i in m.graph.input], ["x"])
        again = {t.name: numpy_helper.to_array(t) for t in pull.fill_weights(self.light_model(), seed=7).graph.initializer}
        self.assertTrue(np.array_equal(again["w"], inits["w"]), "the same seed gives the same weights")
        self.assertEqual(pull.input_side(m), 8)


if __name__ == "__main__":
    unittest.main()


def legacy_torch_bytes(tensors):
    """Writes `tensors` (name -> float32 array) as torch.save did before 1.6,
    with a stand-in 'torch' module so no torch is needed."""
    import collections
    import io
    import pickle
    import struct
    import types

    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called here")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        class Storage:
            def __init__(self, key, data):
                self.key, self.data = key, data

        class Tensor:
            def __init__(self, storage, shape):
                self.storage, self.shape = storage, shape

            def __reduce__(self):
                stride = [int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape))]
                return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, Storage):
                    return ("storage", FloatStorage, obj.key, "cpu", obj.data.size, None)
                return None

        storages = [Storage(str(i), a.astype(np.float32).ravel()) for i, a in enumerate(tensors.values())]
        state = collections.OrderedDict((n, Tensor(st, a.shape)) for (n, a), st in zip(tensors.items(), storages))
        f = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(state)
        pickle.dump([st.key for st in storages], f, protocol=2)
        for st in storages:
            f.write(struct.pack("<q", st.data.size))
            f.write(st.data.tobytes())
        return f.getvalue()
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]


def lite0_state_dict(rng):
    """Random weights with the names and shapes of EfficientNet-Lite0."""
    sd = {}

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32)

    def bn(name, c):
        sd[name + ".weight"] = np.ones(c, np.float32)
        sd[name + ".bias"] = np.zeros(c, np.float32)
        sd[name + ".running_mean"] = np.zeros(c, np.float32)
        sd[name + ".running_var"] = np.ones(c, np.float32)

    conv("_conv_stem", 32, 3, 3)
    bn("_bn0", 32)
    b = 0
    for repeats, k, stride, expand, cin, cout in pull.EFFNET_LITE0_STAGES:
        for r in range(repeats):
            inp = cin if r == 0 else cout
            mid = inp * expand
            p = f"_blocks.{b}"
            if expand != 1:
                conv(p + "._expand_conv", mid, inp, 1)
                bn(p + "._bn0", mid)
            sd[p + "._depthwise_conv.weight"] = rng.normal(0, 0.3, (mid, 1, k, k)).astype(np.float32)
            bn(p + "._bn1", mid)
            conv(p + "._project_conv", cout, mid, 1)
            bn(p + "._bn2", cout)
            b += 1
    conv("_conv_head", 1280, 320, 1)
    bn("_bn1", 1280)
    sd["_fc.weight"] = rng.normal(0, 0.01, (1000, 1280)).astype(np.float32)
    sd["_fc.bias"] = np.zeros(1000, np.float32)
    return sd


@unittest.skipIf(onnx is None, "numpy and onnx are not installed")
class EfficientNet(unittest.TestCase):
    def test_legacy_torch_files_load_without_torch(self):
        want = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b.bias": np.array([1.5, -2.0], np.float32)}
        got = pull.load_legacy_torch(legacy_torch_bytes(want))
        self.assertEqual(list(got), ["a.weight", "b.bias"])
        for k in want:
            self.assertTrue(np.array_equal(got[k], want[k]), k)

    def test_same_padding_matches_tensorflow(self):
        self.assertEqual(pull.same_pads(224, 3, 2), ([0, 0, 1, 1], 112))
        self.assertEqual(pull.same_pads(112, 3, 1), ([1, 1, 1, 1], 112))
        self.assertEqual(pull.same_pads(56, 5, 2), ([1, 1, 2, 2], 28))

    def test_the_graph_is_valid_and_runs(self):
        from onnx.reference import ReferenceEvaluator

        sd = lite0_state_dict(np.random.default_rng(0))
        model = pull.efficientnet_lite0(sd, image=32)
        onnx.checker.check_model(model)
        self.assertEqual(sum(n.op_type == "Add" for n in model.graph.node), 9, "residual blocks")
        x = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
        (logits,) = ReferenceEvaluator(model).run(None, {"image": x})
        self.assertEqual(logits.shape, (1, 1000))
        self.assertTrue(np.all(np.isfinite(logits)))

    def test_imagenet_labels_are_read_as_data(self):
        meta = '_IMAGENET_CATEGORIES = ["tench", "goldfish"]\n_OTHER = 1\n'
        self.assertEqual(pull.imagenet_labels(meta), ["tench", "goldfish"])


@unittest.skipIf(onnx is None, "numpy and onnx are not installed")
class Bert(unittest.TestCase):
    def tiny(self, rng, hidden=8, heads=2, layers=2, vocab=20, ffn=16):
        w = {
            "embeddings.word_embeddings.weight": rng.normal(size=(vocab, hidden)),
            "embeddings.position_embeddings.weight": rng.normal(size=(16, hidden)),
            "embeddings.token_type_embeddings.weight": rng.normal(size=(2, hidden)),
            "embeddings.LayerNorm.weight": np.ones(hidden), "embeddings.LayerNorm.bias": np.zeros(hidden),
        }
        for i in range(layers):
            p = f"encoder.layer.{i}"
            for name, (o, n) in {".attention.self.query": (hidden, hidden), ".attention.self.key": (hidden, hidden),
                                 ".attention.self.value": (hidden, hidden), ".attention.output.dense": (hidden, hidden),
                                 ".intermediate.dense": (ffn, hidden), ".output.dense": (hidden, ffn)}.items():
                w[p + name + ".weight"] = rng.normal(scale=0.3, size=(o, n))
                w[p + name + ".bias"] = rng.normal(scale=0.1, size=o)
            for ln in (".attention.output.LayerNorm", ".output.LayerNorm"):
                w[p + ln + ".weight"] = np.ones(hidden)
                w[p + ln + ".bias"] = np.zeros(hidden)
        config = {"hidden_size": hidden, "num_attention_heads": heads, "num_hidden_layers": layers, "layer_norm_eps": 1e-12}
        return pull.bert_encoder({k: v.astype(np.float32) for k, v in w.items()}, config)

    def test_padding_does_not_change_real_tokens(self):
        from onnx.reference import ReferenceEvaluator

        model = self.tiny(np.random.default_rng(0))
        onnx.checker.check_model(model)
        ev = ReferenceEvaluator(model)
        ids = np.array([[1, 5, 7, 2, 0, 0]], dtype=np.int64)
        mask = np.array([[1, 1, 1, 1, 0, 0]], dtype=np.int64)
        pos = np.arange(6, dtype=np.int64)[None]
        (padded,) = ev.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos})
        (short,) = ev.run(None, {"input_ids": ids[:, :4], "attention_mask": mask[:, :4], "position_ids": pos[:, :4]})
        self.assertEqual(padded.shape, (1, 6, 8))
        self.assertTrue(np.allclose(padded[:, :4], short, atol=1e-5))

    def test_safetensors_are_read(self):
        import json as _json
        import struct as _struct

        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        header = _json.dumps({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {}}).encode()
        data = _struct.pack("<Q", len(header)) + header + a.tobytes()
        got = pull.load_safetensors(data)
        self.assertTrue(np.array_equal(got["a"], a))


class OrtLibrary(unittest.TestCase):
    """virga models pull --engine ort, on a fake onnxruntime wheel (no download)."""

    def fake_wheel(self, path, lib=b"\x7fELF not really onnxruntime", record_lib=None):
        import base64
        import hashlib
        import zipfile

        digest = base64.urlsafe_b64encode(hashlib.sha256(record_lib or lib).digest()).rstrip(b"=").decode()
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(pull.ORT_LIB, lib)
            z.writestr(pull.ORT_LICENSE, "MIT License\n")
            z.writestr("onnxruntime/capi/onnxruntime_pybind11_state.so", b"python binding, not wanted")
            z.writestr("onnxruntime-1.31.1.dist-info/RECORD",
                       f"{pull.ORT_LIB},sha256={digest},{len(lib)}\nonnxruntime-1.31.1.dist-info/RECORD,,\n")
        return path

    def test_the_library_is_extracted_recorded_and_kept(self):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "models")
            os.makedirs(os.path.join(out, "onnxruntime"))
            old = os.path.join(out, "onnxruntime", "libonnxruntime.so.1.20.0")
            open(old, "wb").close()
            wheel = self.fake_wheel(os.path.join(d, "onnxruntime.whl"))
            manifest = {}
            target = pull.install_ort_library(out, wheel, manifest)
            self.assertEqual(os.path.basename(target), "libonnxruntime.so.1.31.1")
            with open(target, "rb") as f:
                self.assertEqual(f.read(), b"\x7fELF not really onnxruntime")
            self.assertTrue(os.access(target, os.X_OK))
            self.assertFalse(os.path.exists(old), "another version is replaced")
            self.assertEqual(sorted(os.listdir(os.path.join(out, "onnxruntime"))), ["LICENSE", "libonnxruntime.so.1.31.1"])
            entry = manifest["onnxruntime"]
            self.assertEqual(entry["file"], os.path.join("onnxruntime", "libonnxruntime.so.1.31.1"))
            self.assertEqual(entry["package"], "onnxruntime==1.31.1")
            self.assertIn("MIT", entry["license"])
            self.assertEqual(entry["size"], os.path.getsize(target))
            self.assertEqual(entry["sha256"], pull.sha256(target))
            self.assertEqual(entry["source_sha256"], pull.sha256(wheel))
            # Pulling again has nothing to do (no download is attempted).
            pull.write_ort_library(out, os.path.join(d, "cache"), manifest)
            self.assertFalse(os.path.exists(os.path.join(d, "cache")))

    def test_a_library_that_does_not_match_the_record_is_refused(self):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            wheel = self.fake_wheel(os.path.join(d, "onnxruntime.whl"), record_lib=b"something else")
            with self.assertRaises(SystemExit) as e:
                pull.install_ort_library(os.path.join(d, "models"), wheel, {})
            self.assertIn("RECORD", str(e.exception))
            self.assertFalse(os.path.exists(os.path.join(d, "models", "onnxruntime", "libonnxruntime.so.1.31.1")))
