"""`export_openvino`: PyTorch or ONNX -> OpenVINO IR (`ov.convert_model`; model.xml + model.bin, fp32 weights), and
how the runtime compiles it: device plugin, performance hint, the precision float layers compute in
(pipeline.convert.openvino, pipeline.runtimes.openvino_rt)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import PositiveInt
from pipeline.runtimes.openvino_rt import DEVICES, MODES, PRECISIONS
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class ExportOpenvinoConfig:
    # precision the plugin computes float layers in: f32 | bf16 | f16 | null = the plugin's default (bf16 on CPUs
    # with AVX-512 BF16 or AMX: what an OpenVINO user gets without asking)
    inference_precision: Optional[str] = "f32"
    performance_mode: str = "LATENCY"  # OpenVINO performance hint: LATENCY | THROUGHPUT | CUMULATIVE_THROUGHPUT
    device: str = "CPU"  # OpenVINO device plugin: CPU | GPU | NPU | AUTO (GPU/NPU run where that hardware is)
    num_streams: Optional[PositiveInt] = None  # parallel inference streams; null = what the hint picks
    dynamic_batch: bool = True  # batch dimension left dynamic in the IR


def check_runtime_settings(p) -> list[str]:
    problems = []
    if p.inference_precision is not None and p.inference_precision not in PRECISIONS:
        problems.append(f"inference_precision must be one of {', '.join(PRECISIONS)} or null (the plugin's "
                        f"default), got {p.inference_precision!r}")
    if str(p.performance_mode).upper() not in MODES:
        problems.append(f"performance_mode must be one of {', '.join(MODES)}, got {p.performance_mode!r}")
    if str(p.device).upper().split(".")[0] not in DEVICES:
        problems.append(f"device must be one of {', '.join(DEVICES)}, got {p.device!r}")
    return problems


# implements: what `type: export` builds for OpenVINO devices
class ExportOpenvino(Stage, type="export_openvino", config=ExportOpenvinoConfig, accepts=("torch", "onnx"),
                     produces="openvino", implements=("export", "openvino"), inputs=1, reads=("data",)):
    @classmethod
    def check(cls, p: ExportOpenvinoConfig, cfg) -> list[str]:
        return check_runtime_settings(p)

    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        from pipeline import runtimes
        from pipeline.convert.openvino import default_inference_precision, export_ir

        p: ExportOpenvinoConfig = ctx.params
        src = ctx.input
        path = ctx.workdir / "model.xml"
        if src.format == "torch":
            from pipeline.models import load_torch

            source = load_torch(src.path)[0]
        else:
            source = src.path
        facts = export_ir(source, src.meta["input_shape"], path, p.dynamic_batch)
        settings = {"device": p.device, "performance_mode": p.performance_mode, "num_streams": p.num_streams,
                    "inference_precision": p.inference_precision}
        meta = {**src.meta, "openvino": {**settings, **facts}}
        model = runtimes.load("openvino", path, meta, threads=1)
        x = ctx.data().val_x[:8].astype(np.float32)
        err = float(np.abs(runtimes.load(src.format, src.path, src.meta, threads=1).predict(x) - model.predict(x)).max())
        precision = p.inference_precision or default_inference_precision(p.device)
        precision = {"f32": "fp32", "f16": "fp16"}.get(precision, precision)
        ctx.log.info("exported %s (%d operators); runs as %s; max |%s - openvino| on 8 images = %.2e", path.name,
                     facts["operators"], model.runtime, src.format, err)
        return StageResult(Artifact(ctx.name, "openvino", precision, path, meta),
                           metrics={"export_max_abs_error": err, "operators": facts["operators"]},
                           info={"runtime": model.runtime})
