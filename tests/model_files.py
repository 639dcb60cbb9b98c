"""Tiny model files written by the tests themselves (no converter, no download): a .tflite built with LiteRT's own
flatbuffer schema, and an ONNX graph built with onnx.helper."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def tflite(path: Path, shape=(1, 16, 16, 3), custom: str | None = None, dtype: str = "float32") -> Path:
    """One operator from input to output: RELU (runs anywhere), or a CUSTOM operator named `custom` that LiteRT has
    no kernel for. The input keeps `shape` (NHWC by default, as Keras exports)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT()
    m.version = 3
    code = fb.OperatorCodeT()
    op_code = fb.BuiltinOperator.CUSTOM if custom else fb.BuiltinOperator.RELU
    code.builtinCode = code.deprecatedBuiltinCode = op_code
    code.version = 1
    if custom:
        code.customCode = custom
    m.operatorCodes = [code]
    m.buffers = [fb.BufferT() for _ in range(3)]
    g = fb.SubGraphT()
    g.tensors = []
    for i, name in enumerate(("input", "output")):
        t = fb.TensorT()
        t.shape, t.buffer, t.name = list(shape), i + 1, name
        t.type = {"float32": fb.TensorType.FLOAT32, "int8": fb.TensorType.INT8}[dtype]
        if dtype == "int8":
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.05], [0]
            t.quantization = q
        g.tensors.append(t)
    g.inputs, g.outputs, g.name = [0], [1], "main"
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    g.operators = [op]
    m.subgraphs = [g]
    m.description = "edge-pipeline test model"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(b.Output())
    return path


def onnx_classifier(path: Path, size: int = 16, classes: int = 4, batch="N") -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm on a 3 x size x size input: milliseconds per run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((8, classes)).astype(np.float32), "fw")
    fb_ = numpy_helper.from_array(np.zeros(classes, np.float32), "fb")
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         [batch, 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
                          [w, b, fw, fb_])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path
