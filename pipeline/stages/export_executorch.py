"""`export_executorch`: PyTorch -> ExecuTorch `.pte` (torch.export, `to_edge_transform_and_lower`), fp32, lowered to
XNNPACK (CPU) or Core ML (Apple devices); the delegate coverage is read back from the file
(pipeline.convert.executorch)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import one_of
from pipeline.convert.executorch import PARTITIONERS
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class ExportExecutorchConfig:
    partitioner: one_of(*PARTITIONERS) = "xnnpack"  # xnnpack (CPU: Android, iOS, Linux) | coreml (Apple; the .pte then runs on Apple only)


# implements: what `type: export` builds with stages.export.format=executorch
class ExportExecutorch(Stage, type="export_executorch", config=ExportExecutorchConfig, accepts=("torch",),
                       produces="executorch", implements=("export", "executorch"), inputs=1,
                       reads=("data", "device.deployment_target")):
    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        from pipeline import runtimes
        from pipeline.convert.executorch import coverage_line, export_pte
        from pipeline.models import load_torch

        p: ExportExecutorchConfig = ctx.params
        src = ctx.input
        model, _ = load_torch(src.path)
        path = ctx.workdir / "model.pte"
        target = ctx.settings.device.deployment_target if p.partitioner == "coreml" else None
        facts = export_pte(model, src.meta["input_shape"], path, p.partitioner, target)
        meta = {**src.meta, "input_shape": facts["input_shape"], "executorch": facts}
        metrics = {"portable_operators": facts["coverage"]["portable_operator_count"],
                   "delegated_operators": facts["coverage"]["xnnpack_operator_count"]}
        err = None
        if p.partitioner == "xnnpack":  # a Core ML-lowered program runs on Apple devices only
            x = ctx.data().val_x[:8].astype(np.float32)
            got = runtimes.load("executorch", path, meta, threads=1).predict(x)
            ref = runtimes.load("torch", src.path, src.meta, threads=1).predict(x)
            err = metrics["export_max_abs_error"] = float(np.abs(ref - got).max())
        ctx.log.info("exported %s (%s; %s%s)", path.name, p.partitioner, coverage_line(facts["coverage"]),
                     "" if err is None else f"; max |torch - executorch| on 8 images = {err:.2e}")
        return StageResult(Artifact(ctx.name, "executorch", "fp32", path, meta), metrics=metrics,
                           info={"coverage": coverage_line(facts["coverage"])})
