"""int8 ONNX with accuracy control: `nncf.quantize_with_accuracy_control` on an onnx.ModelProto (QDQ output that
ONNX Runtime runs), validated with ONNX Runtime. NNCF reverts the quantized operations that cost most top-1 to float
until the drop is within `max_drop`; the reverted ones are listed by the torch module they came from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _quantized_nodes(model) -> list[str]:
    """Names of the nodes (graph order) that take a DequantizeLinear output computed from an activation."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq_out for i in n.input)]


def _top1(model_proto, items) -> tuple[float, list[float]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(model_proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    hits = [float(int(np.argmax(s.run(None, {name: x})[0][0])) == y) for x, y in items]
    return (float(np.mean(hits)) if hits else 0.0), hits


def _calibration(model, calibration: np.ndarray):
    import nncf

    name = model.graph.input[0].name
    return nncf.Dataset([{name: np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)}
                         for i in range(len(calibration))])


def quantize(fp32_onnx: Path, calibration: np.ndarray, out: Path) -> dict[str, Any]:
    """int8 QDQ ONNX at `out` with NNCF's post-training defaults (`nncf.quantize`), what accuracy control starts
    from. Returns facts for the artifact's meta."""
    import nncf
    import onnx

    from pipeline.convert.openvino import quiet

    if len(calibration) == 0:
        raise ValueError("NNCF int8 needs calibration images; got none (set calibration_samples > 0)")
    model = onnx.load(str(fp32_onnx))
    with quiet():
        q = nncf.quantize(model, _calibration(model, calibration), subset_size=len(calibration))
    onnx.save(q, str(out))
    return {"tool": "nncf quantize (ONNX)", "format": "QDQ", "calibration_samples": int(len(calibration)),
            "quantized_operations": len(_quantized_nodes(q))}


def quantize_with_accuracy_control(fp32_onnx: Path, calibration: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                                   out: Path, max_drop: float) -> dict[str, Any]:
    """int8 QDQ ONNX at `out` whose top-1 on (val_x, val_y) is at most `max_drop` (absolute, 0-1) below the fp32
    model's. Returns facts: top-1 of fp32 / plain NNCF int8 / accuracy-controlled int8, and the layers kept in float."""
    import nncf
    import onnx

    from pipeline.convert.openvino import quiet
    from pipeline.library.diagnose import _layer_names

    if not 0 <= max_drop < 1:
        raise ValueError(f"max_drop is an absolute top-1 drop between 0 and 1 (0.01 = one point), got {max_drop}")
    if len(val_x) == 0 or len(val_x) != len(val_y):
        raise ValueError(f"accuracy control needs labelled validation images; got {len(val_x)} images and "
                         f"{len(val_y)} labels")
    model = onnx.load(str(fp32_onnx))
    name = model.graph.input[0].name
    calib = _calibration(model, calibration)
    items = [(np.ascontiguousarray(val_x[i : i + 1], dtype=np.float32), int(val_y[i])) for i in range(len(val_x))]
    with quiet():
        plain = nncf.quantize(model, calib, subset_size=len(calibration))
        q = nncf.quantize_with_accuracy_control(model, calib, nncf.Dataset(items, lambda it: {name: it[0]}), _top1,
                                                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
                                                subset_size=len(calibration))
    onnx.save(q, str(out))
    acc = {"fp32": _top1(model, items)[0], "int8": _top1(plain, items)[0], "int8_accuracy_control": _top1(q, items)[0]}
    layer = {n.name: _layer_names(model.graph).get(n.output[0], n.name) for n in model.graph.node if n.output}
    in_ac = set(_quantized_nodes(q))
    reverted = list(dict.fromkeys(layer.get(n, n) for n in _quantized_nodes(plain) if n not in in_ac))
    return {"tool": "nncf quantize_with_accuracy_control (ONNX)", "calibration_samples": int(len(calibration)),
            "validation_samples": int(len(val_x)), "max_drop": max_drop, "top1": acc,
            "drop": acc["fp32"] - acc["int8_accuracy_control"], "plain_int8_drop": acc["fp32"] - acc["int8"],
            "met": acc["fp32"] - acc["int8_accuracy_control"] <= max_drop, "reverted_to_float": reverted}
