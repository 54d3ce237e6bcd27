#!/usr/bin/env python3
"""Writes the iris logistic regression as an ONNX graph, offline.

Reads a `.model` file written by `virga models train --algorithm logistic
--dataset iris` (linfa-logistic's multinomial fit: logits = x @ params +
intercept, the class is the argmax) and writes the same coefficients as
MatMul -> Add -> ArgMax, so both servers answer with one model.

    python make_model.py iris-logistic.model iris-logistic.onnx
"""
import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main(src, dst):
    with open(src) as f:
        m = json.load(f)
    fitted = m["fitted"]
    if fitted["kind"] != "multinomial-logistic":
        sys.exit(f"error: {src} is a {fitted['kind']} model, not multinomial-logistic")
    p = fitted["model"]
    # ndarray's serde form: {"v": 1, "dim": [...], "data": [...]}, row-major.
    w = np.array(p["params"]["data"], dtype=np.float32).reshape(p["params"]["dim"])
    b = np.array(p["intercept"]["data"], dtype=np.float32).reshape(p["intercept"]["dim"])
    n_features = w.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "iris-logistic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", n_features])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["n"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    # Opset 13 and IR 8: within what every onnxruntime of the last years reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.doc_string = json.dumps({"classes": m["classes"]})
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    print(f"wrote {dst}: {n_features} features, classes {m['classes']}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
