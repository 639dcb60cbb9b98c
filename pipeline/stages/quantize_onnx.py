"""`quantize_onnx`: ONNX Runtime static int8 quantization (QDQ format, per-channel weights), calibrated on N images
of the training split."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import List

from pipeline.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult

METHODS = ("minmax", "entropy", "percentile")
TYPES = ("int8", "uint8")


@dataclass
class QuantizeOnnxConfig:
    calibration_samples: int = 128  # training images used to calibrate activation ranges
    method: str = "minmax"  # calibration: minmax | entropy | percentile
    per_channel: bool = True  # one weight scale per output channel (keeps depthwise convs accurate)
    activation_type: str = "uint8"  # uint8 | int8 activations
    weight_type: str = "int8"  # int8 | uint8 weights
    reduce_range: bool = False  # 7-bit weights: for CPUs without VNNI, where u8s8 products can saturate
    symmetric_activations: bool = False  # zero-point 0 for activations
    exclude_op_types: List[str] = field(default_factory=list)  # operator types left in float, e.g. [Add]
    preprocess: bool = True  # shape inference + graph optimisation (Conv/BN folding) before quantizing


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.WARNING):
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, level))
    try:
        yield
    finally:
        root.setLevel(old)


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


class QuantizeOnnx(Stage):
    type = "quantize_onnx"
    Config = QuantizeOnnxConfig
    accepts = ("onnx",)
    produces = "onnx"
    implements = ("quantize", "onnx")  # what `type: quantize` resolves to for ONNX Runtime devices
    min_inputs = max_inputs = 1
    uses = ("data", "seed")
    libraries = ("onnxruntime", "onnx", "numpy")
    code = ("data",)

    @classmethod
    def check(cls, p: QuantizeOnnxConfig, cfg) -> list[str]:
        problems = []
        if p.calibration_samples <= 0:
            problems.append(f"calibration_samples must be > 0, got {p.calibration_samples}; 100-500 images is usual")
        if p.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, got {p.method!r}")
        for k in ("activation_type", "weight_type"):
            if getattr(p, k) not in TYPES:
                problems.append(f"{k} must be int8 or uint8, got {getattr(p, k)!r}")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
        from onnxruntime.quantization import quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        p: QuantizeOnnxConfig = ctx.params
        src = ctx.input
        data = ctx.data()
        n_train = len(data.train_x)
        if p.calibration_samples > n_train:
            raise ValueError(f"calibration_samples={p.calibration_samples} is larger than the training split "
                             f"({n_train} images); lower stages.{ctx.name}.calibration_samples")
        rng = np.random.default_rng(ctx.cfg.seed)
        calib = data.train_x[rng.choice(n_train, p.calibration_samples, replace=False)]

        class Reader(CalibrationDataReader):
            def __init__(self, x, name):
                self.it = iter([{name: x[i : i + 1]} for i in range(len(x))])

            def get_next(self):
                return next(self.it, None)

        import onnx

        src_model = onnx.load(str(src.path))
        input_name = src_model.graph.input[0].name
        model_in = src.path
        if p.preprocess:
            model_in = ctx.workdir / "preprocessed.onnx"
            quant_pre_process(str(src.path), str(model_in), skip_symbolic_shape=True)
        out = ctx.workdir / "model.int8.onnx"
        qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        ops = sorted({n.op_type for n in onnx.load(str(model_in)).graph.node} - set(p.exclude_op_types))
        with quiet_root_logger():  # onnxruntime.quantization logs every rewrite at INFO on the root logger
            quantize_static(
                str(model_in), str(out), Reader(calib, input_name),
                quant_format=QuantFormat.QDQ, per_channel=p.per_channel, reduce_range=p.reduce_range,
                activation_type=qtype[p.activation_type], weight_type=qtype[p.weight_type],
                calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                  "percentile": CalibrationMethod.Percentile}[p.method],
                op_types_to_quantize=ops,
                extra_options={"ActivationSymmetric": p.symmetric_activations},
            )
        if model_in != src.path:
            model_in.unlink()
        saved = dedupe_initializers(out)
        ctx.log.info("quantized %s: %d calibration images, %s; %d bytes of duplicate initializers shared",
                     out.name, p.calibration_samples, p.method, saved)
        meta = {**src.meta, "quantization": {"tool": "onnxruntime.quantize_static", "format": "QDQ",
                                             "calibration_samples": p.calibration_samples, "method": p.method,
                                             "per_channel": p.per_channel, "activations": p.activation_type,
                                             "weights": p.weight_type}}
        return StageResult(Artifact(ctx.name, "onnx", "int8", out, meta),
                           metrics={"calibration_samples": p.calibration_samples})
