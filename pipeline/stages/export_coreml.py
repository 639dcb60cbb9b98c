"""`export_coreml` (PyTorch -> Core ML ML Program) and `quantize_coreml` (weight compression of a Core ML package).

Conversion and compression run on Linux (coremltools 9 converts a torch.export program; it warns that torch 2.13 is
untested; pipeline/convert/coreml.py); running the package needs macOS, so on other hosts evaluate/benchmark/parity report "not runnable on this
host" and the package is inspected instead: operators, how its weights are stored (read back from the MIL program),
size. The minimum deployment target comes from the device profile (iPhone 15: iOS17).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import Artifact, path_size
from pipeline.core.bounds import PositiveInt, between
from pipeline.convert.coreml import package_facts
from pipeline.stages.base import Stage, StageContext, StageResult

PRECISIONS = ("fp16", "fp32")
MODES = ("int8", "palettize")


@dataclass
class ExportCoremlConfig:
    precision: str = "fp16"  # compute precision of the ML Program: fp16 (Core ML's default, ANE-friendly) | fp32
    deployment_target: Optional[str] = None  # e.g. iOS17; null = the device's deployment_target


@dataclass
class QuantizeCoremlConfig:
    mode: str = "int8"  # int8: linear (symmetric, per-channel) int8 weights | palettize: n-bit k-means look-up tables
    nbits: between(1, 8, integer=True) = 4  # palettize: bits per weight index (1, 2, 3, 4, 6 or 8)
    per_channel: bool = True  # int8: one scale per output channel
    calibration_samples: PositiveInt = 128  # recipe-wide calibration size; Core ML weight compression is data-free (unused)


class ExportCoreml(Stage, type="export_coreml", config=ExportCoremlConfig, accepts=("torch",), produces="coreml",
                   implements=("export", "coreml"), inputs=1, reads=("device.deployment_target",)):
    @classmethod
    def check(cls, p: ExportCoremlConfig, cfg) -> list[str]:
        problems = []
        if p.precision not in PRECISIONS:
            problems.append(f"precision must be fp16 or fp32, got {p.precision!r}")
        if not (p.deployment_target or cfg.device.get("deployment_target")):
            problems.append(f"Core ML needs a minimum deployment target and device {cfg.device.name!r} names none: "
                            f"set deployment_target (e.g. iOS17) on this stage")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.convert.coreml import convert_torch
        from pipeline.models import load_torch

        p: ExportCoremlConfig = ctx.params
        src = ctx.input
        target_name = p.deployment_target or ctx.settings.device.deployment_target
        model, _ = load_torch(src.path)
        path = ctx.workdir / "model.mlpackage"
        converter = convert_torch(model, src.meta["input_shape"], path, p.precision, target_name)
        facts = package_facts(path)
        ctx.log.info("exported %s (ML Program, %s compute, %s, %d operators, %.2f MB)", path.name, p.precision,
                     target_name, facts["operator_count"] or 0, path_size(path) / 1e6)
        meta = {**src.meta, "coreml": {**facts, "deployment_target": target_name, "compute_precision": p.precision,
                                       "converter": converter}}
        return StageResult(Artifact(ctx.name, "coreml", p.precision, path, meta),
                           metrics={"operators": facts["operator_count"] or 0})


class QuantizeCoreml(Stage, type="quantize_coreml", config=QuantizeCoremlConfig, accepts=("coreml",),
                     produces="coreml", implements=("quantize", "coreml"), inputs=1):
    @classmethod
    def check(cls, p: QuantizeCoremlConfig, cfg) -> list[str]:
        problems = []
        if p.mode not in MODES:
            problems.append(f"mode must be int8 or palettize, got {p.mode!r}")
        if p.mode == "palettize" and p.nbits not in (1, 2, 3, 4, 6, 8):
            problems.append(f"nbits must be one of 1, 2, 3, 4, 6, 8 for palettization, got {p.nbits}")
        if p.calibration_samples <= 0:
            problems.append(f"calibration_samples must be > 0, got {p.calibration_samples}")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.convert.coreml import compress_weights

        p: QuantizeCoremlConfig = ctx.params
        src = ctx.input
        path = ctx.workdir / "model.mlpackage"
        precision = compress_weights(src.path, path, p.mode, p.nbits, p.per_channel)
        facts = package_facts(path)
        ratio = path_size(path) / max(1, path_size(src.path))
        share = facts["weight_share_by_dtype"] or {}
        ctx.log.info("compressed %s (%s): %.2fx the size of %s; weights stored as %s", path.name, p.mode, ratio,
                     src.stage, ", ".join(f"{k} {v:.1%}" for k, v in sorted(share.items(), key=lambda kv: -kv[1])))
        meta = {**src.meta, "coreml": {**src.meta.get("coreml", {}), **facts},
                "quantization": {"tool": "coremltools.optimize.coreml", "mode": p.mode,
                                 **({"nbits": p.nbits} if p.mode == "palettize" else {"per_channel": p.per_channel}),
                                 "calibration_samples": None, "note": "weight-only compression is data-free"}}
        return StageResult(Artifact(ctx.name, "coreml", precision, path, meta),
                           metrics={"size_ratio_to_source": ratio, "int8_weight_share": share.get("int8", 0.0)},
                           info={"calibration_samples": "not used: Core ML weight compression needs no data"})
