"""MLflow gets each format in its best form: ONNX through the onnx flavor with a signature, TFLite (and Core ML) as
files plus model_meta.json with input/output names, shapes, dtypes and quantization parameters read from the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.artifacts import Artifact
from pipeline.runtimes import describe
from pipeline.tracking.tracker import Tracker, local_uri


@pytest.fixture
def onnx_model(tmp_path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.fixture
def int8_tflite(tmp_path) -> Path:
    keras = pytest.importorskip("keras")
    from pipeline.convert.tflite import convert_keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inp)))
    path = tmp_path / "model.int8.tflite"
    calib = np.random.default_rng(0).standard_normal((16, 4, 4, 3)).astype(np.float32)
    convert_keras(model, path, "int8", calib)
    return path


def test_describe_reads_interfaces(onnx_model, int8_tflite):
    d = describe("onnx", onnx_model)
    assert d["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 4]}]
    assert d["outputs"][0]["name"] == "logits"
    t = describe("tflite", int8_tflite, {"input_layout": "NHWC", "quantization": {"precision": "int8"}})
    assert t["inputs"][0]["dtype"] == "int8" and t["inputs"][0]["shape"] == [1, 4, 4, 3]
    q = t["inputs"][0]["quantization"]
    assert q["scale"][0] > 0 and len(q["zero_point"]) == 1
    assert t["integer_only"] and t["input_layout"] == "NHWC" and t["quantization"] == {"precision": "int8"}


def test_tracker_logs_onnx_flavor_and_tflite_metadata(tmp_path, onnx_model, int8_tflite):
    import mlflow.onnx
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    uri = local_uri(tmp_path)
    tr = Tracker(uri, "meta", tmp_path / "mlartifacts")
    rid = tr.start("r", {}, {})
    tr.log_model(rid, Artifact("export", "onnx", "fp32", onnx_model, {}))
    client = MlflowClient(uri)
    paths = {f.path for f in client.list_artifacts(rid)}
    assert {"onnx_model", "model_meta.json"} <= paths
    local = client.download_artifacts(rid, "onnx_model")
    sig = Model.load(local).signature
    assert sig.inputs.input_names() == ["input"] and sig.outputs.input_names() == ["logits"]
    assert mlflow.onnx.load_model(local).graph.output[0].name == "logits"

    rid2 = tr.start("r2", {}, {})
    tr.log_model(rid2, Artifact("quantize", "tflite", "int8", int8_tflite, {"input_layout": "NHWC"}))
    assert {f.path for f in client.list_artifacts(rid2)} == {"model_meta.json"}
    meta = json.loads(Path(client.download_artifacts(rid2, "model_meta.json")).read_text())
    assert meta["format"] == "tflite" and meta["inputs"][0]["quantization"]["scale"]
