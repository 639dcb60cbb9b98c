"""`distill`: knowledge distillation. A teacher (the upstream model stage, or a saved checkpoint) trains a smaller
zoo student on soft targets (Hinton et al. 2015): loss = alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE.

Logs the teacher's accuracy, the distilled student's accuracy and, for the honest comparison, the same student trained
from the same initialisation with plain cross-entropy for the same number of epochs (`compare_scratch`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import Dropout, Positive, PositiveInt, UnitInterval
from pipeline.library.training import FinetuneConfig, check_finetune
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class DistillConfig(FinetuneConfig):
    student: str = "mobilenet_v3_small"  # zoo model trained as the student
    student_width_mult: Positive = 1.0  # the student's channel width multiplier
    student_dropout: Dropout = 0.2  # the student's dropout before its classifier
    temperature: Positive = 4.0  # softens both distributions; T^2 keeps the gradient scale
    alpha: UnitInterval = 0.7  # weight of the soft-target loss (1 - alpha: cross-entropy with the labels)
    teacher_checkpoint: Optional[str] = None  # a saved PyTorch artifact (model.pt with its model.json) instead of an input
    compare_scratch: bool = True  # also train the student from scratch with the same budget (twice the time)
    epochs: PositiveInt = 10
    lr: Positive = 0.003


class Distill(Stage, type="distill", config=DistillConfig, accepts=("torch",), produces="torch", inputs=(0, 1),
              reads=("data", "seed", "model.input_size"), libraries=("torch", "numpy")):
    @classmethod
    def check(cls, p: DistillConfig, cfg) -> list[str]:
        from pathlib import Path

        from pipeline import models

        problems = check_finetune(p, min_epochs=1)
        if p.student not in models.ZOO:
            problems.append(f"student: unknown model {p.student!r}; the zoo has {', '.join(sorted(models.ZOO))}")
        if not p.temperature > 0:
            problems.append(f"temperature must be > 0, got {p.temperature}")
        if not 0.0 <= p.alpha <= 1.0:
            problems.append(f"alpha must be between 0 and 1, got {p.alpha}")
        if p.teacher_checkpoint:
            ckpt = Path(p.teacher_checkpoint).expanduser()
            if not ckpt.is_file() or not (ckpt.parent / "model.json").is_file():
                problems.append(f"teacher_checkpoint: {str(ckpt)!r} is not a saved PyTorch model (a model.pt with its "
                                f"model.json beside it, as the train stage writes); give such a file or drop the key "
                                f"and name the teacher stage in inputs")
        return problems


    def run(self, ctx: StageContext) -> StageResult:
        from pathlib import Path

        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        from pipeline import models
        from pipeline.library import training as C
        from pipeline.library.training import fit

        p: DistillConfig = ctx.params
        if bool(ctx.inputs) == bool(p.teacher_checkpoint):
            raise ValueError(f"stage {ctx.name!r} needs exactly one teacher: an input stage (inputs: [STAGE]) or "
                             f"teacher_checkpoint, not {'both' if ctx.inputs else 'neither'}")
        C.set_threads(p)
        data = ctx.data()
        if ctx.inputs:
            teacher_path, meta = ctx.input.path, dict(ctx.input.meta)
            teacher, _ = models.load_torch(teacher_path)
        else:
            teacher_path = Path(p.teacher_checkpoint).expanduser()
            teacher, _ = models.load_torch(teacher_path)
            from pipeline.data.size import hw

            meta = {"input_shape": [1, 3, *hw(ctx.settings.model.input_size)], "num_classes": data.num_classes,
                    "classes": data.classes}
        teacher.eval()
        for t in teacher.parameters():
            t.requires_grad_(False)
        acc_teacher = C.val_accuracy(teacher, data)
        kwargs = {"width_mult": float(p.student_width_mult), "dropout": float(p.student_dropout)}
        torch.manual_seed(ctx.settings.seed)
        student = models.build(p.student, data.num_classes, **kwargs)
        init = {k: v.clone() for k, v in student.state_dict().items()}
        tc = C.train_config(p)
        T, alpha = float(p.temperature), float(p.alpha)

        def kd_loss(logits, xb, yb):
            with torch.no_grad():
                soft = F.log_softmax(teacher(xb) / T, dim=1)
            kl = F.kl_div(F.log_softmax(logits / T, dim=1), soft, reduction="batchmean", log_target=True)
            ce = F.cross_entropy(logits, yb, label_smoothing=p.label_smoothing)
            return alpha * T * T * kl + (1 - alpha) * ce

        metrics = {"teacher_accuracy": acc_teacher}
        info = {}
        if p.compare_scratch:
            ctx.log.info("student %s from scratch (%d epochs, cross-entropy only)", p.student, p.epochs)
            scratch = models.build(p.student, data.num_classes, **kwargs)
            scratch.load_state_dict(init)
            r = fit(scratch, data, tc, ctx.settings.seed, ctx.log, tqdm)
            metrics["scratch_accuracy"] = C.val_accuracy(scratch, data)
            info["scratch_history"] = r["history"]
            del scratch
        ctx.log.info("student %s distilled from %s (T=%g, alpha=%g, %d epochs)", p.student,
                     ctx.input.stage if ctx.inputs else teacher_path, T, alpha, p.epochs)
        student.load_state_dict(init)
        r = fit(student, data, tc, ctx.settings.seed, ctx.log, tqdm, loss_fn=kd_loss)
        info["history"] = r["history"]
        metrics["distilled_accuracy"] = C.val_accuracy(student, data)
        if "scratch_accuracy" in metrics:
            metrics["distillation_gain_points"] = 100 * (metrics["distilled_accuracy"] - metrics["scratch_accuracy"])
        shape = meta["input_shape"]
        t_cx, s_cx = C.complexity(teacher, shape), C.complexity(student, shape)
        metrics.update(teacher_parameters=t_cx["parameters"], student_parameters=s_cx["parameters"],
                       teacher_macs=t_cx["macs"], student_macs=s_cx["macs"])
        ctx.log.info("top-1: teacher %.4f, student distilled %.4f, student from scratch %s; parameters %d -> %d",
                     acc_teacher, metrics["distilled_accuracy"],
                     f"{metrics['scratch_accuracy']:.4f}" if "scratch_accuracy" in metrics else "not trained",
                     t_cx["parameters"], s_cx["parameters"])
        spec = {"name": p.student, "num_classes": data.num_classes, "kwargs": kwargs}
        path = models.save_torch(student.eval(), ctx.workdir, spec)
        meta = {**meta, "arch": spec, "parameters": s_cx["parameters"], "macs": s_cx["macs"],
                "distillation": {k: metrics.get(k) for k in ("teacher_accuracy", "scratch_accuracy",
                                                             "distilled_accuracy")}}
        meta.pop("pruning", None)  # a new network: the teacher's pruning history is not the student's
        return StageResult(Artifact(ctx.name, "torch", "fp32", path, meta), metrics=metrics, info=info)
