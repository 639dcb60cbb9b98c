"""One model in every format and precision the back ends here can make: the candidates the measured int8 choice
(`select_int8`) and the cross-format benchmark (`benchmark_formats`) build, score and time side by side.

A candidate is made from the input ONNX model (ONNX Runtime's QDQ variants, NNCF, the OpenVINO IRs) or from the
PyTorch model upstream of it (LiteRT, ExecuTorch, Core ML); frameworks are imported inside the builders. Each one ends
in one of three states, the table's status (pipeline.library.side_by_side builds, scores and times them):
  ran          built, evaluated and timed here;
  not_runnable built (its size is known) or not, but this host cannot run it: Core ML off macOS, a precision the CPU
               lacks, or no PyTorch model to make it from;
  failed       its converter or runtime raised: the first line of the error is the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.core.artifacts import path_size

RAN, NOT_RUNNABLE, FAILED = "ran", "not_runnable", "failed"


@dataclass(frozen=True)
class Candidate:
    """One model to build and time: which back end runs it, in which precision, made how, with which settings."""

    backend: str  # onnxruntime | openvino | executorch | litert | coreml
    format: str  # artifact format
    precision: str  # fp32 | bf16 | fp16 | int8 | default (OpenVINO: what the plugin picks on this CPU)
    build: str  # how it is made (see `build`)
    options: dict = field(default_factory=dict)  # builder options / runtime settings recorded in the meta
    peer_default: bool = False  # what a user of that back end gets with its documented defaults
    accuracy_control: bool = False  # NNCF accuracy control: built only when asked for (see select_int8)
    counterpart: Optional[str] = None  # accuracy control: the plain int8 candidate it is compared with
    about: str = ""


def _qdq(**kw) -> dict:
    return {"per_channel": True, "activation_type": "uint8", "weight_type": "int8", **kw}


CANDIDATES: dict[str, Candidate] = {
    "ort_fp32": Candidate("onnxruntime", "onnx", "fp32", "input", about="the input ONNX model (accuracy reference)"),
    "ort_defaults": Candidate("onnxruntime", "onnx", "int8", "ort_qdq",
                              _qdq(per_channel=False, activation_type="int8", preprocess=False), peer_default=True,
                              about="quantize_static with its defaults: per-tensor, s8 activations, no pre-processing"),
    "ort_per_channel_u8": Candidate("onnxruntime", "onnx", "int8", "ort_qdq", _qdq()),
    "ort_per_channel_s8": Candidate("onnxruntime", "onnx", "int8", "ort_qdq", _qdq(activation_type="int8")),
    "ort_per_channel_u8_float_add": Candidate("onnxruntime", "onnx", "int8", "ort_qdq",
                                              _qdq(exclude_op_types=["Add"])),
    "ort_per_channel_u8_float_tail": Candidate("onnxruntime", "onnx", "int8", "ort_qdq", _qdq(float_tail=True),
                                               about="the outputs' decoding left in float (a detector's boxes and "
                                                     "scores keep their own ranges)"),
    "ort_nncf_int8": Candidate("onnxruntime", "onnx", "int8", "nncf_onnx", about="nncf.quantize on the ONNX model"),
    "ort_int8_accuracy_control": Candidate("onnxruntime", "onnx", "int8", "nncf_onnx_ac", accuracy_control=True,
                                           counterpart="ort_nncf_int8",
                                           about="nncf.quantize_with_accuracy_control on the ONNX model"),
    "litert_fp32": Candidate("litert", "tflite", "fp32", "litert", {"precision": "fp32"}),
    "litert_int8": Candidate("litert", "tflite", "int8", "litert", {"precision": "int8"}, peer_default=True,
                             about="litert-torch full-integer int8 (PT2E), LiteRT's int8 path"),
    "openvino_fp32": Candidate("openvino", "openvino", "fp32", "openvino", {"inference_precision": "f32"}),
    "openvino_default": Candidate("openvino", "openvino", "default", "openvino", {"inference_precision": None},
                                  peer_default=True, about="the fp32 IR compiled with no hint (the plugin's choice)"),
    "openvino_bf16": Candidate("openvino", "openvino", "bf16", "openvino", {"inference_precision": "bf16"}),
    "openvino_f16": Candidate("openvino", "openvino", "fp16", "openvino", {"inference_precision": "f16"}),
    "openvino_int8": Candidate("openvino", "openvino", "int8", "openvino_int8", {"performance_mode": "LATENCY"},
                               about="nncf.quantize with its defaults (performance preset)"),
    "openvino_int8_throughput": Candidate("openvino", "openvino", "int8", "openvino_int8",
                                          {"performance_mode": "THROUGHPUT"}),
    "openvino_int8_accuracy_control": Candidate("openvino", "openvino", "int8", "openvino_ac", accuracy_control=True,
                                                counterpart="openvino_int8",
                                                about="nncf.quantize_with_accuracy_control on the IR"),
    "executorch_fp32": Candidate("executorch", "executorch", "fp32", "executorch", peer_default=True,
                                 about="torch.export lowered to XNNPACK, ExecuTorch's documented path"),
    "executorch_int8": Candidate("executorch", "executorch", "int8", "executorch_int8",
                                 about="PT2E with the XNNPACK quantizer, lowered to XNNPACK"),
    "coreml_fp16": Candidate("coreml", "coreml", "fp16", "coreml", {"precision": "fp16"}, peer_default=True,
                             about="ML Program with fp16 compute, coremltools' default"),
    "coreml_int8": Candidate("coreml", "coreml", "int8-weights", "coreml_int8",
                             about="fp16 package with int8 weights (coremltools.optimize linear quantization)"),
}
# quantize_qdq options of the ONNX Runtime QDQ variants (bench/bench_runtimes.py builds the same ones)
QDQ_VARIANTS = {n: dict(c.options) for n, c in CANDIDATES.items()
                if c.build == "ort_qdq" and "float_tail" not in c.options}  # (QdqOptions fields only)
# What a user of each back end gets from its documented int8 path with its defaults: ONNX Runtime's quantize_static,
# litert-torch's PT2E full-integer int8, NNCF's quantize on OpenVINO, ExecuTorch's XNNPACK quantizer. The optimizer's
# speed-up is measured against the fastest of these made from the unmodified model.
PEER_DEFAULT_INT8 = ("ort_defaults", "litert_int8", "openvino_int8", "executorch_int8")
REFERENCE = "ort_fp32"  # the input model: the accuracy every drop is measured from
COREML_TARGET = "iOS17"  # minimum deployment target of the Core ML candidates (int8 weights need iOS16 or later)


class Unbuildable(Exception):
    """A candidate this input cannot make (e.g. no PyTorch model upstream), with the reason as its message."""


def not_runnable(c: Candidate) -> str | None:
    """Why candidate `c` cannot run on this host, or None: the runtime module's `not_runnable_here`, given the
    settings when it takes them (OpenVINO: a precision the CPU plugin lacks)."""
    from pipeline import runtimes

    return runtimes.not_runnable_reason(c.format, {"openvino": c.options} if c.format == "openvino" else {})


@dataclass
class Env:
    """What every builder needs: the input ONNX artifact, the PyTorch artifact upstream (or None), the calibration
    images (the same for every candidate), NNCF's labelled images and target for accuracy control, the folder the
    OpenVINO IRs are shared in, and what builders convert once and share (the fp32 IR)."""

    src: Any
    torch: Any
    calib: Any  # the pipeline's images; each builder adapts them to what its model is fed (`calibration_for`)
    ir_dir: Path
    method: str = "minmax"
    ac_data: tuple | None = None
    ac_target: float = 0.5
    shared: dict = field(default_factory=dict)


def _need_torch(env: Env, what: str):
    if env.torch is None:
        raise Unbuildable(f"not built: {what} is made from the PyTorch model, and none is upstream of "
                          f"{env.src.stage!r}")
    return env.torch


def _fp32_ir(env: Env):
    """The fp32 OpenVINO IR of the input ONNX model, converted once and shared by the OpenVINO candidates."""
    from pipeline.convert import openvino as ovc

    if "ir" not in env.shared:
        env.ir_dir.mkdir(parents=True, exist_ok=True)
        xml = env.ir_dir / "model.xml"
        facts = ovc.export_ir(env.src.path, env.src.meta["input_shape"], xml)
        env.shared["ir"] = (xml, {**env.src.meta, "openvino": {"device": "CPU", **facts}})
    return env.shared["ir"]


def _fed_as(c: Candidate, env: Env) -> tuple[str, dict]:
    """(format, meta) whose signature a candidate's calibration images must follow: models made from the PyTorch
    model (LiteRT, ExecuTorch, Core ML) take what it takes; ONNX Runtime and OpenVINO candidates what the input ONNX
    takes."""
    if c.backend in ("litert", "executorch", "coreml") and env.torch is not None:
        return "torch", env.torch.meta
    return ("openvino" if c.format == "openvino" else "onnx"), env.src.meta


def calibration_for(c: Candidate, env: Env, x=None):
    """Images `x` (default: the calibration images) as candidate `c`'s model is fed them at evaluation: the one input
    path (pipeline.runtimes.adapt_input), so that a model with its own preprocessing is calibrated on what it sees."""
    from pipeline import runtimes

    return runtimes.adapt_input(*_fed_as(c, env), env.calib if x is None else x)


def build(name: str, d: Path, env: Env) -> tuple[Any, dict]:
    """Make candidate `name` in directory `d`; returns (path, meta). The convert/ library functions do the work."""
    c = CANDIDATES[name]
    src, calib = env.src, calibration_for(c, env)
    if c.build == "input":
        return src.path, src.meta
    if c.build == "ort_qdq":
        return _build_qdq(c, d, env)
    if c.build in ("nncf_onnx", "nncf_onnx_ac"):
        from pipeline.convert import nncf_onnx

        path = d / "model.int8.onnx"
        if c.build == "nncf_onnx":
            facts = nncf_onnx.quantize(src.path, calib, path)
        else:
            vx, vy = env.ac_data
            vx = calibration_for(c, env, vx)
            facts = nncf_onnx.quantize_with_accuracy_control(src.path, calib, vx, vy, path,
                                                             min(env.ac_target, 99.0) / 100.0)
        return path, {**src.meta, "quantization": facts}
    if c.build == "litert":
        return _build_litert(c, d, env, calib)
    if c.build in ("openvino", "openvino_int8", "openvino_ac"):
        return _build_openvino(c, d, env, calib)
    if c.build in ("executorch", "executorch_int8"):
        from pipeline.convert import executorch as etc

        torch_src = _need_torch(env, "a .pte")
        if c.build == "executorch":
            return etc.peer_default(torch_src.path, src.meta, d)
        return etc.int8_candidate(torch_src.path, src.meta, calib, d)
    if c.build in ("coreml", "coreml_int8"):
        return _build_coreml(c, d, env)
    raise ValueError(f"internal: candidate {name!r} has no builder {c.build!r}")


def _build_qdq(c: Candidate, d: Path, env: Env) -> tuple[Any, dict]:
    import logging

    from pipeline.convert import onnx as onnx_convert

    path = d / "model.int8.onnx"
    opts = {k: v for k, v in c.options.items() if k != "float_tail"}
    # ERROR: the defaults candidate skips ONNX Runtime's pre-processing on purpose, and it says so
    facts = onnx_convert.quantize_qdq(env.src.path, path, calibration_for(c, env),
                                      onnx_convert.QdqOptions(method=env.method, **opts), logging.ERROR,
                                      float_tail=bool(c.options.get("float_tail")))
    facts.pop("duplicate_initializer_bytes_saved")
    return path, {**env.src.meta, "quantization": facts}


def _build_litert(c: Candidate, d: Path, env: Env, calib) -> tuple[Any, dict]:
    from pipeline.convert.tflite import export_source
    from pipeline.runtimes import tflite_rt

    torch_src = _need_torch(env, "a .tflite")
    path = d / f"model.{c.options['precision']}.tflite"
    int8 = c.options["precision"] == "int8"
    facts, layout = export_source("torch", torch_src.path, env.src.meta["input_shape"], path,
                                  c.options["precision"], calib if int8 else None)
    info = tflite_rt.inspect(path)
    meta = {**env.src.meta, "input_layout": layout,
            "tflite": {**facts, **{k: info[k] for k in ("operators", "operator_count", "float_operators",
                                                       "integer_only", "inputs", "outputs")}}}
    if int8:
        meta["quantization"] = {"tool": facts.get("quantizer"), "precision": "int8",
                                "calibration_samples": len(calib), "io": "int8"}
    return path, meta


def _build_openvino(c: Candidate, d: Path, env: Env, calib) -> tuple[Any, dict]:
    from pipeline.convert import openvino as ovc

    xml, meta = _fp32_ir(env)
    if c.build == "openvino":
        return xml, {**meta, "openvino": {**meta["openvino"], **c.options}}
    if c.build == "openvino_int8":
        if "int8_ir" not in env.shared:
            env.shared["int8_ir"] = ovc.int8_candidate(xml, meta, calib, env.ir_dir)
        path, qmeta = env.shared["int8_ir"]
        return path, {**qmeta, "openvino": {**qmeta["openvino"], **c.options}}
    vx, vy = env.ac_data
    vx = calibration_for(c, env, vx)
    return ovc.accuracy_controlled_candidate(xml, meta, calib, vx, vy, d, min(env.ac_target, 99.0) / 100.0,
                                             layer_names=ovc.onnx_layer_names(env.src.path))


def _build_coreml(c: Candidate, d: Path, env: Env) -> tuple[Any, dict]:
    """An ML Program package (coremltools converts on Linux; only macOS runs it), so its size is known here."""
    from pipeline.convert import coreml
    from pipeline.models import load_torch

    torch_src = _need_torch(env, "a Core ML package")
    if "coreml_fp16" not in env.shared:
        model, _ = load_torch(torch_src.path)
        path = d.parent / "_coreml_fp16" / "model.mlpackage"
        path.parent.mkdir(parents=True, exist_ok=True)
        converter = coreml.convert_torch(model, env.src.meta["input_shape"], path, "fp16", COREML_TARGET)
        env.shared["coreml_fp16"] = (path, {**env.src.meta, "coreml": {"converter": converter,
                                                                       "deployment_target": COREML_TARGET,
                                                                       "compute_precision": "fp16"}})
    path, meta = env.shared["coreml_fp16"]
    if c.build == "coreml":
        return path, meta
    out = d / "model.mlpackage"
    coreml.compress_weights(path, out, "int8", 8, True)
    return out, {**meta, "quantization": {"tool": "coremltools.optimize.coreml", "mode": "int8"}}


def size(fmt: str, path) -> int:
    """Bytes on disk; an OpenVINO IR counts its weights (.bin)."""
    if fmt == "openvino":
        from pipeline.convert.openvino import ir_size

        return ir_size(path)
    return path_size(path)


def settings(c: Candidate, meta: dict, threads: int) -> str:
    """The runtime settings a candidate is timed with, in words."""
    bits = [f"{threads} thr"]
    q = meta.get("quantization") or {}
    if c.build == "ort_qdq":
        bits.append(f"QDQ {'per-channel' if c.options['per_channel'] else 'per-tensor'} "
                    f"{'u8' if c.options['activation_type'] == 'uint8' else 's8'} act")
        if c.options.get("exclude_op_types"):
            bits.append("float " + "/".join(c.options["exclude_op_types"]))
        if c.options.get("float_tail"):
            bits.append("float output decoding")
    elif c.format == "onnx":
        bits.append("graph opt ALL" if c.build == "input" else "QDQ (NNCF)")
    elif c.format == "openvino":
        ov = meta.get("openvino") or {}
        bits.append(str(ov.get("performance_mode") or "LATENCY"))
        if c.precision != "int8":
            bits.append(f"{ov.get('inference_precision') or 'default'} compute")
        if ov.get("num_streams"):
            bits.append(f"{ov['num_streams']} streams")
    elif c.format == "executorch":
        bits.append("XNNPACK")
    elif c.format == "tflite":
        bits.append("XNNPACK" + (" full-integer" if q else ""))
    elif c.format == "coreml":
        bits = [f"{COREML_TARGET}, ML Program"]
    return ", ".join(bits)


def sources(given, lineage, model_cfg, num_classes: int, workdir: Path, log) -> tuple[Any, Any, bool]:
    """The ONNX and PyTorch models the candidates are made from: (onnx artifact, torch artifact or None, untrained).

    `given`: the input artifact (torch or onnx), or None to build zoo model `model_cfg.name` with `num_classes`
    outputs and random weights (untrained: fine for latency and size, meaningless for a task metric). A PyTorch
    input is exported to ONNX here; an ONNX input takes the PyTorch model upstream of it, if any."""
    from pipeline.core.artifacts import Artifact

    untrained = given is None
    if given is None:
        from pipeline import models

        size = int(model_cfg.input_size)
        spec = {"name": str(model_cfg.name), "num_classes": int(num_classes), "kwargs": models.arch_kwargs(model_cfg)}
        model = models.build(spec["name"], spec["num_classes"], **spec["kwargs"]).eval()
        path = models.save_torch(model, workdir / "_zoo", spec)
        meta = {"input_shape": [1, 3, size, size], "num_classes": int(num_classes), "arch": spec,
                "parameters": sum(t.numel() for t in model.parameters()), **models.output_facts(model)}
        given = Artifact("zoo", "torch", "fp32", path, meta)
        log.info("%s (%d px, %d classes, %.2f M parameters) built from the zoo with random weights", spec["name"],
                 size, num_classes, meta["parameters"] / 1e6)
    if given.format == "onnx":
        return given, next((a for a in lineage(given.stage) if a.format == "torch"), None), untrained
    from pipeline.convert.onnx import export_torch
    from pipeline.models import load_torch

    model, _ = load_torch(given.path)
    onnx_path = workdir / "_onnx" / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    err = export_torch(model, given.meta["input_shape"], onnx_path, output_names=given.meta.get("output_names"))
    log.info("exported %s to ONNX (max |torch - onnx| = %.2e)", given.stage, err)
    return Artifact(given.stage, "onnx", "fp32", onnx_path, {**given.meta, "opset": 18}), given, untrained
