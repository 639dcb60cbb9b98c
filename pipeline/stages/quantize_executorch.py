"""`quantize_executorch`: int8 `.pte` from a `.pte`'s lineage: PT2E with the XNNPACK quantizer re-exports the PyTorch
model the fp32 program came from (a `.pte` cannot be re-quantized), calibrated on N training images, lowered to
XNNPACK (pipeline.convert.executorch.quantize_pte)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.stages.base import Int8Config, Stage, StageContext, StageResult


@dataclass
class QuantizeExecutorchConfig(Int8Config):
    per_channel: bool = True  # one weight scale per output channel (XNNPACK's recommended int8 scheme)


class QuantizeExecutorch(Stage, type="quantize_executorch", config=QuantizeExecutorchConfig, accepts=("executorch",),
                         produces="executorch", implements=("quantize", "executorch"), inputs=1,
                         reads=("data", "seed", "task")):
    @classmethod
    def check(cls, p: QuantizeExecutorchConfig, cfg) -> list[str]:
        if p.calibration_samples <= 0:
            return [f"calibration_samples must be > 0, got {p.calibration_samples}; 100-500 images is usual"]
        return []

    @classmethod
    def check_lineage(cls, p, upstream, cfg) -> list[str]:
        from pipeline.stages.base import needs_source

        return needs_source(upstream, ("torch",), "int8 ExecuTorch re-exports the PyTorch model the .pte was exported from",
                            "export it with {type: export_executorch} before this stage")

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.convert import remedies
        from pipeline.library import calibration
        from pipeline.convert.executorch import coverage_line, int8_candidate

        p: QuantizeExecutorchConfig = ctx.params
        src = ctx.input
        torch_src = next((a for a in ctx.lineage(src.stage) if a.format == "torch"), None)
        if torch_src is None:
            raise ValueError(f"stage {ctx.name!r}: int8 ExecuTorch needs the PyTorch model the .pte came from, and "
                             f"no torch artifact is upstream of {src.stage!r}; export the .pte from a torch model "
                             f"in this recipe")
        data, seed = ctx.data(), int(ctx.settings.seed)
        judge, scorer, _ = remedies.judge_for(data, ctx.settings.task, seed, src, p.remedy_samples)

        def build(o: dict, d):
            # the .pte computes what its torch source computes: calibrate on what that model is fed
            n = remedies.calibration_count(o, p.calibration_samples, len(data.train_x))
            calib = calibration.inputs(data, n, seed, ctx.name, "torch", torch_src.meta)
            floats = ()
            if o.get("float_edges"):
                from pipeline.models import load_torch

                floats = remedies.edge_modules(load_torch(torch_src.path)[0], len(src.meta.get("output_names") or [0]))
            path, meta = int8_candidate(torch_src.path, {**src.meta}, calib, d, per_channel=o["per_channel"],
                                        float_modules=floats)
            meta["quantization"] = {**meta["quantization"], "calibration_input": calibration.describe(calib)}
            return path, meta

        path, meta, report = remedies.climb("executorch", {"per_channel": p.per_channel}, build, judge("executorch"),
                                            ctx.workdir, ctx.log, p.remedies, False, scorer.describe())
        cov = meta["executorch"]["coverage"]
        ctx.log.info("quantized %s: PT2E XNNPACK int8, %s (%d attempt(s), %s); %s", path.name, report["chosen"],
                     len(report["attempts"]), "within budget" if report["met"] else "BUDGET NOT MET",
                     coverage_line(cov))
        return StageResult(Artifact(ctx.name, "executorch", "int8", path, meta),
                           metrics={"calibration_samples": meta["quantization"]["calibration_samples"],
                                    "portable_operators": cov["portable_operator_count"],
                                    "delegated_operators": cov["xnnpack_operator_count"],
                                    "remedy_attempts": len(report["attempts"]), "within_budget": float(report["met"])},
                           info={"coverage": coverage_line(cov), "remedies": report})
