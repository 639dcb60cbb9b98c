"""PyTorch -> ONNX (the dynamo exporter) and ONNX Runtime static int8 quantization (QDQ). Library functions: the
export_onnx, quantize_onnx and select_int8 stages call them."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from pipeline.core.bounds import one_of
from pipeline.core.console import quiet

METHODS = ("minmax", "entropy", "percentile")
TYPES = ("int8", "uint8")


@dataclass
class QdqOptions:
    """How ONNX Runtime's quantize_static quantizes (the quantize_onnx stage's parameters besides calibration)."""

    method: one_of(*METHODS) = "minmax"  # calibration: minmax | entropy | percentile
    per_channel: bool = True  # one weight scale per output channel (keeps depthwise convs accurate)
    activation_type: one_of(*TYPES) = "uint8"  # uint8 | int8 activations
    weight_type: one_of(*TYPES) = "int8"  # int8 | uint8 weights
    reduce_range: bool = False  # 7-bit weights: for CPUs without VNNI, where u8s8 products can saturate
    symmetric_activations: bool = False  # zero-point 0 for activations
    exclude_op_types: List[str] = field(default_factory=list)  # operator types left in float, e.g. [Add]
    preprocess: bool = True  # shape inference + graph optimisation (Conv/BN folding) before quantizing


def export_torch(model, input_shape, path: Path, opset: int = 18, dynamic_batch: bool = True,
                 output_names: list[str] | None = None) -> float:
    """Export `model` to `path`, check it with onnx.checker and against PyTorch; returns max |torch - onnx| over
    every output. `output_names`: one per output the module returns, in order (default: the module's
    `output_names`, else "logits" for a one-output model)."""
    import warnings

    import numpy as np
    import onnx
    import torch

    from pipeline.runtimes import load, outputs_of

    x = torch.zeros(input_shape)
    with torch.inference_mode():
        out = model(x)
    ref = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]
    names = list(output_names or getattr(model, "output_names", None) or
                 (["logits"] if len(ref) == 1 else [f"output_{i}" for i in range(len(ref))]))
    dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (x,), input_names=["input"], output_names=names, opset_version=opset,
                                 dynamic_shapes=dyn, dynamo=True, verbose=False)
        prog.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    got = outputs_of(load("onnx", path, threads=1), x.numpy())
    return float(max(np.abs(r - g).max() for r, g in zip(ref, got)))


COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MIN_QDQ_OPSET = 13  # DequantizeLinear's `axis` (per-channel weights) arrived in opset 13


def tail_nodes(model) -> list[str]:
    """The nodes between the last layers with weights and the graph's outputs (a detector's decoding: reshapes,
    sigmoids, box arithmetic, the concat of boxes and scores): walking back from every output, up to (not into) a
    Conv / Gemm / MatMul. Left in float, they keep each output's own range: one int8 scale for a concat of pixel
    coordinates (0-640) and scores (0-1) rounds every score to 0 or 2.5."""
    producer = {t: n for n in model.graph.node for t in n.output}
    out, todo, seen = [], [o.name for o in model.graph.output], set()
    while todo:
        n = producer.get(todo.pop())
        if n is None or n.name in seen or n.op_type in COMPUTE:
            continue
        seen.add(n.name)
        out.append(n.name)
        todo += list(n.input)
    return out


def quantize_qdq(src: Path, out: Path, calibration, p: QdqOptions, log_level: int = logging.WARNING,
                 float_tail: bool = False) -> dict:
    """Static int8 quantization of the ONNX model `src` into `out`, calibrated on `calibration` (N, C, H, W).
    float_tail: leave `tail_nodes` (the outputs' decoding) in float. Returns the `quantization` facts for the
    artifact's meta."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, x, name):
            self.it = iter([{name: x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    head = onnx.load(str(src), load_external_data=False)
    input_name = head.graph.input[0].name
    model_in = Path(src)
    opset = next((o.version for o in head.opset_import if o.domain in ("", "ai.onnx")), MIN_QDQ_OPSET)
    if opset < MIN_QDQ_OPSET:  # an older file (Paddle, early exporters): per-channel QDQ needs `axis`, from opset 13
        from onnx import version_converter

        model_in = out.with_name("opset13.onnx")
        onnx.save(version_converter.convert_version(onnx.load(str(src)), MIN_QDQ_OPSET), str(model_in))
    if p.preprocess:
        pre = out.with_name("preprocessed.onnx")
        quant_pre_process(str(model_in), str(pre), skip_symbolic_shape=True)
        if model_in != Path(src):
            model_in.unlink()
        model_in = pre
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    graph_model = onnx.load(str(model_in))
    ops = sorted({n.op_type for n in graph_model.graph.node} - set(p.exclude_op_types))
    excluded = tail_nodes(graph_model) if float_tail else []
    with quiet(("root",), log_level, silence_warnings=False):  # it logs every rewrite on the root logger
        quantize_static(
            str(model_in), str(out), Reader(calibration, input_name),
            quant_format=QuantFormat.QDQ, per_channel=p.per_channel, reduce_range=p.reduce_range,
            activation_type=qtype[p.activation_type], weight_type=qtype[p.weight_type],
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[p.method],
            op_types_to_quantize=ops, nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": p.symmetric_activations},
        )
    if model_in != Path(src):
        model_in.unlink()
    saved = dedupe_initializers(out)
    return {"tool": "onnxruntime.quantize_static", "format": "QDQ", "calibration_samples": len(calibration),
            "method": p.method, "per_channel": p.per_channel, "activations": p.activation_type,
            "weights": p.weight_type, "duplicate_initializer_bytes_saved": saved,
            **({"float_nodes": excluded} if excluded else {})}


def dedupe_initializers(path) -> int:
    """Make nodes share initializers with identical contents; returns the bytes saved.

    quantize_static stores every bias scale as a separate copy of its weight's scale (same values); at MobileNetV2
    size that is ~2% of the int8 file.
    """
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    keep = []
    for t in g.initializer:
        sig = (t.data_type, tuple(t.dims), t.raw_data) if t.raw_data else None
        if sig is not None and sig in first:
            rename[t.name] = first[sig]
        else:
            if sig is not None:
                first[sig] = t.name
            keep.append(t)
    if not rename:
        return 0
    before = path.stat().st_size
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.save(model, str(path))
    return before - path.stat().st_size
