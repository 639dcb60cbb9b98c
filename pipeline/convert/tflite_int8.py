"""Full-integer int8 TFLite from PyTorch that holds on real models: litert-torch's PT2E quantizer, with the three
things its defaults miss (measured in bench/RESULTS.md with bench/bench_pretrained.py).

1. Conv + ReLU6 observed after the clamp. litert-torch 0.10 fuses only conv + ReLU; after a conv + ReLU6 (every block
   of MobileNetV2 and EfficientNet-Lite) the ReLU6 shared the conv's observer, so the [0, 6] tensor was quantized with
   the range of the unclamped convolution. On pretrained EfficientNet-Lite0 this alone took top-1 agreement with fp32
   from 0.50 to 0.75-0.76, level with ONNX Runtime int8 (0.76) on the same images and calibration.
2. Per-channel weights (TFLite's own default): per-tensor loses most of the agreement of pretrained EfficientNet-Lite
   in both runtimes (0.15 TFLite, 0.25 ONNX Runtime on Lite0).
3. Hard-sigmoid (MobileNetV3's squeeze-excite gate) has no annotator and is lowered to ADD/MUL in float, so those
   stayed in float with QUANTIZE/DEQUANTIZE around them (9 of each in MobileNetV3-Small, 8 in Large). `int8_ready`
   rewrites every nn.Hardsigmoid as relu6(x + 3) * (1/6) written with torch.add / hardtanh / torch.mul, which the
   quantizer annotates: the same function in float (2e-14 apart) and every operator integer. Hard-swish needs
   nothing: litert-torch lowers it to TFLite's integer HARD_SWISH.

`convert` is the whole flow (prepare, calibrate, convert, export, read back the operators); `quantizer` and
`int8_ready` are the pieces for a caller that runs its own flow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DEFAULTS = {"per_channel": True}


def int8_ready(model):
    """Rewrite, in place, the modules whose int8 conversion would leave float operators; returns (model, count).
    Only nn.Hardsigmoid today (see module doc). A functional F.hardsigmoid call inside a forward is not reached:
    use the module form in models meant for int8."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class QuantizableHardsigmoid(nn.Module):
        """hardsigmoid(x) = relu6(x + 3) / 6, written with operators litert-torch's PT2E quantizer annotates."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.mul(F.hardtanh(torch.add(x, 3.0), 0.0, 6.0), 1.0 / 6.0)

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Hardsigmoid):
                setattr(parent, name, QuantizableHardsigmoid())
                count += 1
    return model, count


OBSERVERS = ("histogram", "minmax")


def annotate_conv_clamp(gm, config, filter_fn=None, relu6_only: bool = False) -> None:
    """Conv followed by a clamp (aten.hardtanh; `relu6_only`: only ReLU6's 0..6) as one quantized unit: no quantizer
    between them, one on the clamp's output.

    litert-torch 0.10 fuses only conv + ReLU; a conv + ReLU6 got its output observer on the conv, and hardtanh then
    shares that observer, so the [0, 6] tensor was quantized with the range of the unclamped convolution (often
    5-10x wider: 3 bits of resolution lost), and ONNX Runtime could not drop the Clip (Conv -> Q -> DQ -> Clip -> Q in
    float, slower than fp32). Observed after the clamp, the range is [0, <=6] and ONNX Runtime and LiteRT both fuse
    it into the integer convolution. The same annotation as litert-torch's conv_relu, for the clamp."""
    import torch
    from litert_torch.quantize import pt2e_quantizer_utils as u
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    convs = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default):
            continue
        low = n.args[1] if len(n.args) > 1 else n.kwargs.get("min_val", -1.0)
        high = n.args[2] if len(n.args) > 2 else n.kwargs.get("max_val", 1.0)
        conv = n.args[0]
        if (relu6_only and (low, high) != (0.0, 6.0)) or not isinstance(conv, torch.fx.Node) \
                or conv.op != "call_function" or conv.target not in convs or len(conv.users) != 1:
            continue
        qmap = {conv.args[0]: u.get_input_act_qspec(config), conv.args[1]: u.get_weight_qspec(config)}
        partition = [n, conv, conv.args[1]]
        bias = conv.args[2] if len(conv.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            qmap[bias] = u.get_bias_qspec(config)
            partition.append(bias)
        if u._is_annotated(partition) or (filter_fn and any(not filter_fn(p) for p in partition)):
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
        n.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=u.get_output_act_qspec(config),
                                                                   _annotated=True)
        u._mark_nodes_as_annotated(partition)


def quantizer(per_channel: bool = True, observer: str = "histogram", fuse_clamp: bool = True):
    """litert-torch's PT2E quantizer: symmetric int8 weights (per channel by default) and int8 activations whose
    ranges come from `observer`: "histogram" (litert-torch's default, picks the range that minimises the
    quantization error of the observed histogram) or "minmax" (the observed extremes, what ONNX Runtime's MinMax
    calibration does). fuse_clamp: observe conv + ReLU6 after the clamp (see annotate_conv_clamp)."""
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e.observer import MinMaxObserver

    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}, got {observer!r}")
    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False)
    if observer == "minmax":
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)

    class Quantizer(pt2e_quantizer.PT2EQuantizer):
        def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
            if quantization_config is not None and fuse_clamp:
                annotate_conv_clamp(model, quantization_config, filter_fn)
            return super()._annotate_all_static_patterns(model, quantization_config, filter_fn)

    return Quantizer().set_global(config)


def convert(model, example_input: np.ndarray, path: Path, calibration: np.ndarray, per_channel: bool = True,
            io: str = "int8", observer: str = "histogram", rewrite: bool = True,
            fuse_clamp: bool = True) -> dict[str, Any]:
    """An eval-mode torch module -> full-integer int8 .tflite at `path`, calibrated on `calibration` (float32 NCHW
    images, run one at a time since the exported graph has batch 1). rewrite=False skips `int8_ready` (to measure
    what it changes). Returns facts for the artifact's metadata,
    among them `float_operators` read back from the file (empty = every operator integer)."""
    import copy

    import litert_torch
    import torch
    from litert_torch.quantize import quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    from pipeline.runtimes import tflite_rt

    if calibration is None or not len(calibration):
        raise ValueError("full-integer int8 needs calibration images")
    if io not in ("int8", "float"):
        raise ValueError(f"io must be int8 or float, got {io!r}")
    model = copy.deepcopy(model).eval()
    model, rewritten = int8_ready(model) if rewrite else (model, 0)
    x = (torch.from_numpy(np.ascontiguousarray(example_input, np.float32)),)
    q = quantizer(per_channel, observer, fuse_clamp)
    try:  # strict export records source functions, which the annotators of add/mul/cat need
        gm, strict = torch.export.export(model, x, strict=True).module(), True
    except Exception:  # dynamo cannot trace every model: non-strict export, and the facts say so
        gm, strict = torch.export.export(model, x).module(), False
    gm = quantize_pt2e.prepare_pt2e(gm, q)
    with torch.no_grad():
        for i in range(len(calibration)):
            gm(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1], np.float32)))
    gm = quantize_pt2e.convert_pt2e(gm, fold_quantize=False)
    edge = litert_torch.convert(gm, x, quant_config=quant_config.QuantConfig(pt2e_quantizer=q))
    edge.export(str(path))
    if io == "float":
        from pipeline.convert.tflite import float_io

        float_io(Path(path))
    info = tflite_rt.inspect(path)
    return {"converter": f"litert-torch {litert_torch.__version__}",
            "quantizer": f"litert-torch PT2EQuantizer (symmetric int8 weights{', per channel' if per_channel else ''}; "
                         f"int8 activations, {observer} calibration{', conv+ReLU6 observed after the clamp' if fuse_clamp else ''})",
            "calibration_samples": int(len(calibration)), "strict_export": strict,
            "rewritten_hardsigmoid": rewritten, "float_operators": info["float_operators"],
            "integer_only": info["integer_only"]}


def convert_a16w8(model, example_input: np.ndarray, path: Path, calibration: np.ndarray) -> dict[str, Any]:
    """16x8 .tflite: int16 activations and int8 weights, what TFLite offers when int8 activations lose too much.
    The fp32 file from litert-torch is quantized by ai-edge-quantizer's static_wi8_ai16 recipe, calibrated on
    `calibration` (float32 NCHW, fed one image at a time through the file's signature). Integer kernels, but
    XNNPACK has none for int16 activations: it runs on LiteRT's reference kernels, slower than int8 (the benchmark
    says by how much)."""
    import tempfile

    import litert_torch
    import torch
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer import recipe

    from pipeline.convert.tflite import quiet_converters
    from pipeline.runtimes import tflite_rt

    if calibration is None or not len(calibration):
        raise ValueError("16x8 quantization needs calibration images")
    with quiet_converters(), tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.fp32.tflite"
        litert_torch.convert(model.eval(), (torch.from_numpy(np.ascontiguousarray(example_input, np.float32)),)
                             ).export(str(fp32))
        q = aeq.Quantizer(str(fp32), recipe.static_wi8_ai16())
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(fp32))
        key, sig = next(iter(it.get_signature_list().items()))
        name = sig["inputs"][0]
        data = {key: [{name: np.ascontiguousarray(calibration[i : i + 1], np.float32)} for i in range(len(calibration))]}
        result = q.quantize(q.calibrate(data))
        Path(path).write_bytes(bytes(result.quantized_model))
    info = tflite_rt.inspect(path)
    return {"converter": f"litert-torch {litert_torch.__version__} + ai-edge-quantizer static_wi8_ai16",
            "quantizer": "ai-edge-quantizer 16x8 (int16 activations, int8 weights, min-max calibration)",
            "calibration_samples": int(len(calibration)), "float_operators": info["float_operators"],
            "integer_only": info["integer_only"]}
