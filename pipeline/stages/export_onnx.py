"""`export_onnx`: PyTorch -> ONNX (torch.onnx dynamo exporter), dynamic batch, checked with onnx.checker and against
PyTorch on every output (pipeline.convert.onnx.export_torch); the graph's outputs keep the model's output names."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import at_least
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class ExportOnnxConfig:
    opset: at_least(7, integer=True) = 18  # ONNX opset version
    dynamic_batch: bool = True  # batch dimension left symbolic


# implements: what `type: export` resolves to for ONNX Runtime devices; onnxscript: the dynamo exporter's op library,
# imported by torch.onnx
class ExportOnnx(Stage, type="export_onnx", config=ExportOnnxConfig, accepts=("torch",), produces="onnx",
                 implements=("export", "onnx"), inputs=1, libraries=("onnxscript",)):
    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.convert.onnx import export_torch
        from pipeline.models import load_torch

        src = ctx.input
        model, _ = load_torch(src.path)
        path = ctx.workdir / "model.onnx"
        err = export_torch(model, src.meta["input_shape"], path, ctx.params.opset, ctx.params.dynamic_batch,
                           src.meta.get("output_names"))
        ctx.log.info("exported %s (max |torch - onnx| = %.2e)", path.name, err)
        return StageResult(Artifact(ctx.name, "onnx", "fp32", path, {**src.meta, "opset": ctx.params.opset}),
                           metrics={"export_max_abs_error": err})
