"""`qat`: quantization-aware fine-tuning of a PyTorch model, then int8 export to ONNX (QDQ) or to TFLite.

Flow (PT2E, torchao): fold batch norms into their convolutions -> torch.export with a dynamic batch -> insert fake
quantizers (litert-torch's PT2E quantizer: symmetric int8 weights per channel, int8 activations) -> fine-tune with the
same fit() as the train stage -> convert to int8 -> export. Activation ranges are learned during the fine-tuning, not
calibrated afterwards, which is what separates QAT from the post-training int8 of quantize_onnx (put side by side in
the recipe mobilenet_qat_int8).

Batch norms are folded before the fake quantizers go in (no BN statistics are updated during QAT): litert-torch
0.10's conv+bn QAT annotator does not run with torchao 0.18 (it hands torch.export a function), and a short fine-tune
from a trained model does not need moving BN statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import Positive, PositiveInt, at_least, between, one_of
from pipeline.library.training import FinetuneConfig, check_finetune
from pipeline.stages.base import Stage, StageContext, StageResult

FORMATS = ("onnx", "tflite")


@dataclass
class QatConfig(FinetuneConfig):
    format: one_of(*FORMATS) = "onnx"  # int8 artifact to export: onnx (QDQ, ONNX Runtime) | tflite (LiteRT)
    per_channel: bool = True  # one weight scale per output channel
    opset: at_least(7, integer=True) = 18  # ONNX opset (format=onnx)
    epochs: PositiveInt = 3  # quantization-aware fine-tuning epochs
    lr: Positive = 0.0005  # peak learning rate: small, the model is already trained
    label_smoothing: between(0, 1, hi_open=True) = 0.0


class Qat(Stage, type="qat", config=QatConfig, accepts=("torch",), produces="onnx", inputs=1, reads=("data", "seed"),
          libraries=("onnxscript",)):
    @classmethod
    def output_format(cls, params, device) -> str | None:
        return params.format if params is not None and params.format in FORMATS else "onnx"

    @classmethod
    def check(cls, p: QatConfig, cfg) -> list[str]:
        return check_finetune(p, min_epochs=1)

    def run(self, ctx: StageContext) -> StageResult:
        import copy
        import warnings

        import torch
        from tqdm.auto import tqdm

        from pipeline import models
        from pipeline.library import training as C
        from pipeline.convert.qat import check_int8_artifact, prepare_qat, to_onnx, to_tflite
        from pipeline.library.training import fit

        p: QatConfig = ctx.params
        src = ctx.input
        model, spec, data, acc_fp32 = C.start_finetune(ctx, p)
        folded = copy.deepcopy(model).eval()
        models.fold_batchnorm(folded)
        shape = src.meta["input_shape"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared, quantizer = prepare_qat(folded, shape, p.per_channel)
            ctx.log.info("fake quantizers inserted; quantization-aware fine-tuning for %d epoch(s)", p.epochs)
            r = fit(prepared, data, C.train_config(p), ctx.settings.seed, ctx.log, tqdm)
            acc_fake = C.val_accuracy(prepared, data)
            from torchao.quantization.pt2e import allow_exported_model_train_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

            # ONNX wants int8 weight constants (folded); the LiteRT converter wants float weights with their q/dq pair.
            converted = convert_pt2e(prepared, fold_quantize=(p.format == "onnx"))
            allow_exported_model_train_eval(converted)
            acc_int8_torch = C.val_accuracy(converted, data)
            x = torch.from_numpy(data.val_x[:1])
            if p.format == "onnx":
                path = ctx.workdir / "model.int8.onnx"
                to_onnx(converted, x, path, p.opset)
            else:
                path = ctx.workdir / "model.int8.tflite"
                to_tflite(converted, x, path, quantizer)
        check = check_int8_artifact(p.format, path, converted, data.val_x[:8])
        metrics = {"accuracy_fp32_input": acc_fp32, "accuracy_fake_quant": acc_fake,
                   "accuracy_int8_torch": acc_int8_torch, **check}
        ctx.log.info("QAT int8 (%s): top-1 %.4f in PyTorch (fp32 input model %.4f); max |%s - torch int8| = %.3g",
                     p.format, acc_int8_torch, acc_fp32, p.format, check["export_max_abs_error"])
        meta = {**src.meta, "quantization": {"tool": "qat: torchao PT2E + litert-torch PT2EQuantizer",
                                             "format": "QDQ" if p.format == "onnx" else "TFLite int8",
                                             "per_channel": p.per_channel, "weights": "int8",
                                             "activations": "uint8" if p.format == "onnx" else "int8",
                                             "epochs": p.epochs}}
        if p.format == "tflite":
            meta["io_dtype"] = "int8"  # input and output tensors are int8 with their scale/zero point in the model
        return StageResult(Artifact(ctx.name, p.format, "int8", path, meta), metrics=metrics,
                           info={"history": r["history"]})
