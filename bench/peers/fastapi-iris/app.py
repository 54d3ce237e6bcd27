"""The FastAPI peer of virga's `iris` function: the same model (ONNX, from
`make_model.py`), the same request and answer shapes.

A plain `def` endpoint (FastAPI runs it on its thread pool, as most
deployments do) with a pydantic body; onnxruntime with one intra-op thread
per worker process. IRIS_MODEL names the .onnx file.
"""
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.environ.get("IRIS_MODEL", "iris-logistic.onnx"), options, providers=["CPUExecutionProvider"]
)
classes = json.loads(session.get_modelmeta().description)["classes"]

app = FastAPI()


class Instances(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(body: Instances):
    x = np.asarray(body.instances, dtype=np.float32)
    labels = session.run(None, {"input": x})[0]
    return {"predictions": [classes[i] for i in labels]}
