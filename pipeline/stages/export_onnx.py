"""`export_onnx`: PyTorch -> ONNX (torch.onnx dynamo exporter), dynamic batch, checked with onnx.checker."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class ExportOnnxConfig:
    opset: int = 18  # ONNX opset version
    dynamic_batch: bool = True  # batch dimension left symbolic


class ExportOnnx(Stage):
    type = "export_onnx"
    Config = ExportOnnxConfig
    accepts = ("torch",)
    produces = "onnx"
    implements = ("export", "onnx")  # what `type: export` resolves to for ONNX Runtime devices
    min_inputs = max_inputs = 1
    libraries = ("torch", "onnx", "onnxscript")

    def run(self, ctx: StageContext) -> StageResult:
        import warnings

        import onnx
        import torch

        from pipeline.models import load_torch

        src = ctx.input
        model, _ = load_torch(src.path)
        shape = src.meta["input_shape"]
        x = torch.zeros(shape)
        path = ctx.workdir / "model.onnx"
        dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},) if ctx.params.dynamic_batch else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, (x,), input_names=["input"], output_names=["logits"],
                                     opset_version=ctx.params.opset, dynamic_shapes=dyn, dynamo=True, verbose=False)
            prog.save(str(path))
        onnx.checker.check_model(str(path), full_check=True)
        with torch.inference_mode():
            ref = model(x).numpy()
        from pipeline.runtimes import load

        got = load("onnx", path, threads=1).predict(x.numpy())
        err = float(abs(ref - got).max())
        ctx.log.info("exported %s (max |torch - onnx| = %.2e)", path.name, err)
        return StageResult(Artifact(ctx.name, "onnx", "fp32", path, {**src.meta, "opset": ctx.params.opset}),
                           metrics={"export_max_abs_error": err})
