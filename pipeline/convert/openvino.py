"""Models -> OpenVINO IR (`ov.convert_model`), int8 with NNCF (`nncf.quantize`), and int8 with accuracy control
(`nncf.quantize_with_accuracy_control`: NNCF ranks the quantized operations by what they cost in accuracy and
reverts the costliest to float until the drop is within `max_drop`).

An IR is `model.xml` (the graph) next to `model.bin` (the weights); the artifact's path is the `.xml`. The IR keeps
fp32 weights (`compress_to_fp16=False`): the precision the CPU computes in is a compile-time choice of the runtime
(`meta["openvino"]["inference_precision"]`, see pipeline/runtimes/openvino_rt.py), so one fp32 IR serves as the
fp32 artifact (f32 pinned) and as OpenVINO's default (the plugin picks bf16 where the CPU has it).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT = "openvino"
PRESETS = ("performance", "mixed")


def quiet():
    """NNCF logs every step at INFO and draws progress bars; torch tracing warns."""
    from pipeline.core.console import quiet as quiet_loggers

    return quiet_loggers(("nncf",), logging.WARNING)


def version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


def ir_files(xml: Path) -> list[Path]:
    """The files of an IR: the graph and its weights."""
    xml = Path(xml)
    return [xml, xml.with_suffix(".bin")]


def ir_size(xml: Path) -> int:
    return sum(p.stat().st_size for p in ir_files(xml) if p.exists())


def _name_io(model) -> None:
    model.inputs[0].get_tensor().set_names({"input"})
    model.outputs[0].get_tensor().set_names({"logits"})


def export_ir(source, input_shape: Sequence[int], path: Path, dynamic_batch: bool = True) -> dict[str, Any]:
    """fp32 IR at `path` (.xml) from an eval-mode torch module or an ONNX file path. Returns facts for the meta."""
    import openvino as ov

    shape = list(input_shape)
    with quiet():
        if isinstance(source, (str, Path)):
            model = ov.convert_model(str(source))
        else:
            import torch

            with torch.no_grad():
                model = ov.convert_model(source.eval(), example_input=torch.zeros([1, *shape[1:]]),
                                         input=[[-1 if dynamic_batch else shape[0], *shape[1:]]])
        _name_io(model)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(path), compress_to_fp16=False)
    return {"converter": f"openvino {version()} convert_model", "dynamic_batch": dynamic_batch,
            "weights": "fp32", "operators": _op_count(model)}


def _op_count(model) -> int:
    return sum(1 for op in model.get_ordered_ops() if op.get_type_name() not in ("Constant", "Parameter", "Result"))


def _dataset(x: np.ndarray):
    import nncf

    return nncf.Dataset([np.ascontiguousarray(x[i : i + 1], dtype=np.float32) for i in range(len(x))])


COMPUTE_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "Add", "Multiply",
               "AvgPool", "MaxPool", "ReduceMean", "Concat")


def quantized_operations(model) -> list[str]:
    """Names of the compute operations (graph order) that take a FakeQuantize output on some input, i.e. that run
    in int8 once the plugin folds the FakeQuantize; walks through the Convert/Reshape/Subtract/Multiply chain NNCF
    leaves on compressed weights."""
    passthrough = {"Convert", "Reshape", "Subtract", "Multiply", "Transpose", "Unsqueeze"}

    def fed_by_fq(node, depth=0) -> bool:
        if node.get_type_name() == "FakeQuantize":
            return True
        if depth > 4 or node.get_type_name() not in passthrough:
            return False
        return any(fed_by_fq(i.get_source_output().get_node(), depth + 1) for i in node.inputs())

    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in COMPUTE_OPS and any(fed_by_fq(i.get_source_output().get_node())
                                                     for i in op.inputs()):
            out.append(op.get_friendly_name())
    return out


def layer_name(friendly_name: str) -> str:
    """The source layer an OpenVINO operation came from: `__module.fc2/aten::linear/Add` -> `fc2`."""
    head = friendly_name.split("/")[0]
    return head.removeprefix("__module.") or friendly_name


def onnx_layer_names(onnx_path: Path) -> dict[str, str]:
    """For an IR converted from ONNX: the ONNX node and tensor names OpenVINO keeps as friendly names -> the torch
    layer they came from (from the exporter's name scopes, see pipeline.library.diagnose), e.g. `node_linear` -> `fc1`."""
    import onnx

    from pipeline.library.diagnose import _layer_names

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    tensors = _layer_names(graph)
    return {**tensors, **{n.name: tensors.get(n.output[0], n.name) for n in graph.node if n.output and n.name}}


def quantize_ir(fp32_xml: Path, calibration: np.ndarray, path: Path, preset: str = "performance",
                fast_bias_correction: bool = True) -> dict[str, Any]:
    """int8 IR at `path` with NNCF post-training quantization (defaults except `preset`). Returns facts."""
    import nncf
    import openvino as ov

    if preset not in PRESETS:
        raise ValueError(f"NNCF preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if len(calibration) == 0:
        raise ValueError("NNCF int8 needs calibration images; got none (set calibration_samples > 0)")
    with quiet():
        model = ov.Core().read_model(str(fp32_xml))
        q = nncf.quantize(model, _dataset(calibration), preset=getattr(nncf.QuantizationPreset, preset.upper()),
                          subset_size=len(calibration), fast_bias_correction=fast_bias_correction)
        ov.save_model(q, str(path), compress_to_fp16=False)
    quantized = quantized_operations(q)
    return {"tool": f"nncf {_nncf_version()} quantize", "preset": preset, "calibration_samples": int(len(calibration)),
            "fast_bias_correction": fast_bias_correction, "quantized_operations": len(quantized)}


def _nncf_version() -> str:
    from importlib import metadata

    return metadata.version("nncf")


def top1_validation(threads: int = 1):
    """NNCF's validation function for classification: top-1 of a compiled model over (image, label) items, with the
    per-item correctness NNCF ranks the operations by."""
    def validate(compiled, items) -> tuple[float, list[float]]:
        request = compiled.create_infer_request()
        hits = []
        for x, y in items:
            request.infer({0: x})
            hits.append(float(int(np.argmax(request.get_output_tensor(0).data[0])) == int(y)))
        return (float(np.mean(hits)) if hits else 0.0), hits

    return validate


def quantize_ir_with_accuracy_control(fp32_xml: Path, calibration: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                                      path: Path, max_drop: float, preset: str = "performance",
                                      max_reverted: int | None = None,
                                      layer_names: dict[str, str] | None = None) -> dict[str, Any]:
    """int8 IR at `path` whose top-1 on (val_x, val_y) is at most `max_drop` (absolute, 0-1) below the fp32 IR's:
    `nncf.quantize_with_accuracy_control`. Returns facts, among them the operations NNCF reverted to float (graph
    order, by source layer name) and the measured top-1 of the fp32, plain int8 and accuracy-controlled models on the
    validation images (each compiled in f32 for the float layers, so the drop is int8's alone). `layer_names` maps
    the IR's operation names to source layers when the IR came from ONNX (onnx_layer_names)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    if not 0 <= max_drop < 1:
        raise ValueError(f"max_drop is an absolute top-1 drop between 0 and 1 (0.01 = one point), got {max_drop}")
    if len(val_x) == 0 or len(val_x) != len(val_y):
        raise ValueError(f"accuracy control needs labelled validation images; got {len(val_x)} images and "
                         f"{len(val_y)} labels")
    items = [(np.ascontiguousarray(val_x[i : i + 1], dtype=np.float32), int(val_y[i])) for i in range(len(val_x))]
    validate = top1_validation()
    core = ov.Core()
    restorer = AdvancedAccuracyRestorerParameters(**({"max_num_iterations": max_reverted} if max_reverted else {}))
    with quiet():
        model = core.read_model(str(fp32_xml))
        plain = nncf.quantize(model, _dataset(calibration), preset=getattr(nncf.QuantizationPreset, preset.upper()),
                              subset_size=len(calibration))
        q = nncf.quantize_with_accuracy_control(
            core.read_model(str(fp32_xml)), _dataset(calibration), nncf.Dataset(items, lambda it: it[0]), validate,
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=getattr(nncf.QuantizationPreset, preset.upper()),
            subset_size=len(calibration), advanced_accuracy_restorer_parameters=restorer)
        ov.save_model(q, str(path), compress_to_fp16=False)
        f32 = {"INFERENCE_PRECISION_HINT": "f32"}
        acc = {name: validate(core.compile_model(m, "CPU", f32), items)[0]
               for name, m in (("fp32", model), ("int8", plain), ("int8_accuracy_control", q))}
    in_plain, in_ac = quantized_operations(plain), set(quantized_operations(q))
    names = layer_names or {}
    reverted = list(dict.fromkeys(names.get(op.split("/")[0]) or layer_name(op) for op in in_plain if op not in in_ac))
    return {"tool": f"nncf {_nncf_version()} quantize_with_accuracy_control", "preset": preset,
            "calibration_samples": int(len(calibration)), "validation_samples": int(len(val_x)),
            "max_drop": max_drop, "top1": acc, "drop": acc["fp32"] - acc["int8_accuracy_control"],
            "plain_int8_drop": acc["fp32"] - acc["int8"], "met": acc["fp32"] - acc["int8_accuracy_control"] <= max_drop,
            "quantized_operations": len(in_ac), "reverted_to_float": reverted}


def default_inference_precision(device: str = "CPU") -> str:
    """The precision the plugin computes float layers in by default on this host (bf16 on CPUs with AVX-512 BF16 or
    AMX, f32 elsewhere)."""
    import openvino as ov
    import openvino.properties.hint as hints

    return ov.Core().get_property(device, hints.inference_precision).get_type_name()


def _copy_ir(src_xml: Path, dst_xml: Path) -> None:
    for s, d in zip(ir_files(src_xml), ir_files(dst_xml)):
        shutil.copyfile(s, d)


def int8_candidate(fp32_xml: Path, meta: dict[str, Any], calibration: np.ndarray, workdir: Path,
                   preset: str = "performance", fast_bias_correction: bool = True) -> tuple[Path, dict[str, Any]]:
    """The measured choice's OpenVINO int8 candidate: NNCF post-training int8 of the fp32 IR. Returns (path, meta);
    the plugin's default precision applies to the layers left in float."""
    path = Path(workdir) / "model.int8.xml"
    facts = quantize_ir(fp32_xml, calibration, path, preset=preset, fast_bias_correction=fast_bias_correction)
    return path, {**meta, "openvino": {**meta.get("openvino", {}), "inference_precision": None},
                  "quantization": facts}


def accuracy_controlled_candidate(fp32_xml: Path, meta: dict[str, Any], calibration: np.ndarray, val_x: np.ndarray,
                                  val_y: np.ndarray, workdir: Path, max_drop: float,
                                  layer_names: dict[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    """int8 with NNCF accuracy control (see quantize_ir_with_accuracy_control). Returns (path, meta); the facts,
    with the operations kept in float, are in meta["quantization"]."""
    path = Path(workdir) / "model.int8ac.xml"
    facts = quantize_ir_with_accuracy_control(fp32_xml, calibration, val_x, val_y, path, max_drop,
                                              layer_names=layer_names)
    return path, {**meta, "openvino": {**meta.get("openvino", {}), "inference_precision": None},
                  "quantization": facts}


def peer_default(fp32_xml: Path, meta: dict[str, Any], workdir: Path) -> tuple[Path, dict[str, Any], str]:
    """What an OpenVINO user gets with its defaults: the fp32 IR compiled with no precision hint (LATENCY hint for
    batch 1). Returns (path, meta, precision), precision being what the CPU plugin picks here (e.g. bf16)."""
    path = Path(workdir) / "model.default.xml"
    _copy_ir(fp32_xml, path)
    precision = default_inference_precision()
    return path, {**meta, "openvino": {**meta.get("openvino", {}), "inference_precision": None,
                                       "default_precision": precision}}, precision
