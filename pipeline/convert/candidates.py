"""The int8 and float candidates every back end here can make from one model: ONNX Runtime fp32 and its QDQ int8
variants, NNCF int8 on ONNX (plain and accuracy-controlled), LiteRT fp32 and full-integer int8, OpenVINO fp32 / its
default / bf16 / f16 / NNCF int8 (plain and accuracy-controlled), ExecuTorch XNNPACK fp32 and int8. A library: the
measured int8 choice (stages/select.py) and the optimizer (pipeline/optimize) build the same candidates the same way.

`build(name, candidate, directory, env)` makes one; `env` holds what they share: the fp32 ONNX source artifact
(`src`), the PyTorch model upstream of it (`torch`, None when there is none), the calibration images (`calib`), the
ONNX Runtime calibration method (`method`), labelled images for accuracy control (`ac_data`) and its target drop
(`ac_target`, points), where the shared OpenVINO IRs go (`ir_dir`) and a dict for them (`shared`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Candidate:
    """One model the choice may time: which back end runs it, in which precision, made how, with which settings."""

    backend: str  # onnxruntime | openvino | executorch | litert
    format: str  # artifact format
    precision: str  # fp32 | bf16 | fp16 | int8 | default (OpenVINO: what the plugin picks on this CPU)
    build: str  # how it is made (see _build)
    options: dict = field(default_factory=dict)  # builder options / runtime settings recorded in the meta
    peer_default: bool = False  # what a user of that back end gets with its documented defaults
    accuracy_control: bool = False  # NNCF accuracy control: built only when needed (see `accuracy_control`)
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
    "openvino_int8_static": Candidate("openvino", "openvino", "int8", "openvino_int8",
                                      {"performance_mode": "LATENCY", "static_shape": True},
                                      about="NNCF int8 compiled for one image (shape-specialised kernels)"),
    "openvino_int8_accuracy_control": Candidate("openvino", "openvino", "int8", "openvino_ac", accuracy_control=True,
                                                counterpart="openvino_int8",
                                                about="nncf.quantize_with_accuracy_control on the IR"),
    "executorch_fp32": Candidate("executorch", "executorch", "fp32", "executorch", peer_default=True,
                                 about="torch.export lowered to XNNPACK, ExecuTorch's documented path"),
    "executorch_int8": Candidate("executorch", "executorch", "int8", "executorch_int8",
                                 about="PT2E with the XNNPACK quantizer, lowered to XNNPACK"),
}
# What a user of each back end gets from its documented int8 path with its defaults: ONNX Runtime's quantize_static,
# litert-torch's PT2E full-integer int8, NNCF's quantize on OpenVINO, ExecuTorch's XNNPACK quantizer. The optimizer's
# speed-up is measured against the fastest of these made from the unmodified model.
PEER_DEFAULT_INT8 = ("ort_defaults", "litert_int8", "openvino_int8", "executorch_int8")
# quantize_qdq options of the ONNX Runtime QDQ variants (bench/bench_runtimes.py builds the same ones)
QDQ_VARIANTS = {n: dict(c.options) for n, c in CANDIDATES.items() if c.build == "ort_qdq"}


class Unbuildable(Exception):
    """A candidate this recipe cannot make (e.g. no PyTorch model upstream), with the reason as its message."""


def need_torch(env: dict, what: str):
    if env["torch"] is None:
        raise Unbuildable(f"not built: {what} is made from the PyTorch model, and none is upstream of "
                           f"{env['src'].stage!r}")
    return env["torch"]


def fp32_ir(env: dict):
    """The fp32 OpenVINO IR of the input ONNX model, converted once and shared by the OpenVINO candidates."""
    from pipeline.convert import openvino as ovc

    if "ir" not in env["shared"]:
        xml = env["ir_dir"] / "model.xml"
        facts = ovc.export_ir(env["src"].path, env["src"].meta["input_shape"], xml)
        env["shared"]["ir"] = (xml, {**env["src"].meta, "openvino": {"device": "CPU", **facts}})
    return env["shared"]["ir"]


def build(name: str, c: Candidate, d, env: dict) -> tuple[Any, dict]:
    """Make candidate `name` in directory `d`; returns (path, meta). Library functions do the work."""
    import logging

    src, calib = env["src"], env["calib"]
    shape = src.meta["input_shape"]
    if c.build == "input":
        return src.path, src.meta
    if c.build == "ort_qdq":
        from pipeline.convert import onnx as onnx_convert

        path = d / "model.int8.onnx"
        # ERROR: the defaults candidate skips ONNX Runtime's pre-processing on purpose, and it says so
        facts = onnx_convert.quantize_qdq(src.path, path, calib,
                                          onnx_convert.QdqOptions(method=env["method"], **c.options), logging.ERROR)
        facts.pop("duplicate_initializer_bytes_saved")
        return path, {**src.meta, "quantization": facts}
    if c.build in ("nncf_onnx", "nncf_onnx_ac"):
        from pipeline.convert import nncf_onnx

        path = d / "model.int8.onnx"
        if c.build == "nncf_onnx":
            facts = nncf_onnx.quantize(src.path, calib, path)
        else:
            vx, vy = env["ac_data"]
            facts = nncf_onnx.quantize_with_accuracy_control(src.path, calib, vx, vy, path,
                                                             min(env["ac_target"], 99.0) / 100.0)
        return path, {**src.meta, "quantization": facts}
    if c.build == "litert":
        from pipeline.convert.tflite import export_source
        from pipeline.runtimes import tflite_rt

        torch_src = need_torch(env, "a .tflite")
        path = d / f"model.{c.options['precision']}.tflite"
        int8 = c.options["precision"] == "int8"
        facts, layout = export_source("torch", torch_src.path, shape, path, c.options["precision"],
                                      calib if int8 else None)
        info = tflite_rt.inspect(path)
        meta = {**src.meta, "input_layout": layout,
                "tflite": {**facts, **{k: info[k] for k in ("operators", "operator_count", "float_operators",
                                                           "integer_only", "inputs", "outputs")}}}
        if int8:
            meta["quantization"] = {"tool": facts.get("quantizer"), "precision": "int8",
                                    "calibration_samples": len(calib), "io": "int8"}
        return path, meta
    if c.build in ("openvino", "openvino_int8", "openvino_ac"):
        from pipeline.convert import openvino as ovc

        xml, meta = fp32_ir(env)
        if c.build == "openvino":
            return xml, {**meta, "openvino": {**meta["openvino"], **c.options}}
        if c.build == "openvino_int8":
            if "int8_ir" not in env["shared"]:
                env["shared"]["int8_ir"] = ovc.int8_candidate(xml, meta, calib, env["ir_dir"])
            path, qmeta = env["shared"]["int8_ir"]
            return path, {**qmeta, "openvino": {**qmeta["openvino"], **c.options}}
        vx, vy = env["ac_data"]
        return ovc.accuracy_controlled_candidate(xml, meta, calib, vx, vy, d, min(env["ac_target"], 99.0) / 100.0,
                                                 layer_names=ovc.onnx_layer_names(src.path))
    if c.build in ("executorch", "executorch_int8"):
        from pipeline.convert import executorch as etc

        torch_src = need_torch(env, "a .pte")
        if c.build == "executorch":
            return etc.peer_default(torch_src.path, src.meta, d)
        return etc.int8_candidate(torch_src.path, src.meta, calib, d)
    raise ValueError(f"internal: candidate {name!r} has no builder {c.build!r}")
