"""`prune`: magnitude pruning of a PyTorch model, then fine-tuning.

structured:   whole channels are removed with torch-pruning's dependency graph (coupled layers such as residual adds
              and depthwise convolutions are pruned together), so the network really shrinks: fewer parameters, fewer
              MACs, a smaller file and a faster model in every runtime. The pruned widths are recorded in the
              architecture spec (`resized`), so the model still loads without unpickling.
unstructured: the globally smallest weights are set to zero (made permanent after fine-tuning). The tensors keep their
              shapes: dense runtimes (ONNX Runtime, TFLite, Core ML) store and run the zeros, so neither the file nor
              the latency improve; only a compressed download does. The summary says so (the pay-off check).
Logs sparsity, parameters, MACs, dense and gzip file sizes, accuracy before pruning, right after it and after
fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import PositiveInt, between, one_of
from pipeline.library.training import FinetuneConfig, check_finetune
from pipeline.stages.base import Stage, StageContext, StageResult

METHODS = ("structured", "unstructured")
IMPORTANCES = ("l1", "l2", "bn_scale")
SCHEDULES = ("oneshot", "gradual")


@dataclass
class PruneConfig(FinetuneConfig):
    method: one_of(*METHODS) = "structured"  # structured (remove channels) | unstructured (zero single weights)
    amount: between(0, 1, hi_open=True) = 0.5  # structured: share of channels removed per layer; unstructured: share of weights zeroed
    importance: one_of(*IMPORTANCES) = "l1"  # structured channel ranking: l1 | l2 (weight norms) | bn_scale (|gamma| of the BN)
    skip_layers: List[str] = field(default_factory=list)  # module paths (or prefixes) never pruned; the classifier
    #                                                       output layer is always kept
    schedule: one_of(*SCHEDULES) = "oneshot"  # oneshot: prune, then fine-tune | gradual: over the first half of the fine-tune
    #                            epochs, a pruning step before each epoch; the second half only fine-tunes
    round_to: Optional[PositiveInt] = None  # structured: keep channel counts multiples of N (runtimes like 4 or 8)


class Prune(Stage, type="prune", config=PruneConfig, accepts=("torch",), produces="torch", inputs=1,
            reads=("data", "seed"), libraries=("torch", "torch-pruning", "numpy")):
    @classmethod
    def check(cls, p: PruneConfig, cfg) -> list[str]:
        problems = check_finetune(p, min_epochs=2 if p.schedule == "gradual" else 0)
        if p.amount == 0:  # the bounds refuse the rest of the range outside (0, 1)
            problems.append("amount 0 prunes nothing: give a share in (0, 1), or remove the prune stage")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        import torch
        import torch.nn.utils.prune as torch_prune
        from tqdm.auto import tqdm

        from pipeline import models
        from pipeline.library import training as C
        from pipeline.library.training import fit

        p: PruneConfig = ctx.params
        src = ctx.input
        model, spec, data, acc_before = C.start_finetune(ctx, p)
        shape = src.meta["input_shape"]
        before = {**C.complexity(model, shape), **C.sizes(src.path), "accuracy": acc_before}
        skip = skipped_modules(model, p.skip_layers, data.num_classes)
        ctx.log.info("%s pruning of %s (%s, %s): %.0f%% %s; layers kept whole: %s", p.method, src.stage, p.schedule,
                     p.importance if p.method == "structured" else "global magnitude", 100 * p.amount,
                     "of channels" if p.method == "structured" else "of weights", ", ".join(sorted(skip)) or "-")
        steps = max(1, p.epochs // 2) if p.schedule == "gradual" else 1
        # gradual: one epoch after each pruning step, the remaining epochs after the last one; oneshot: all after it
        step_epochs = [1] * (steps - 1) + [p.epochs - (steps - 1)] if p.schedule == "gradual" else [p.epochs]
        history, acc_pruned = [], None
        if p.method == "structured":
            pruner = structured_pruner(model, p, shape, skip, steps)
            for step in range(steps):
                pruner.step()
                if step == 0 or step == steps - 1:
                    acc_pruned = C.val_accuracy(model, data)
                if step_epochs[step]:
                    history += fit(model, data, C.train_config(p, epochs=step_epochs[step]), ctx.settings.seed + step,
                                   ctx.log, tqdm)["history"]
        else:
            targets = [(m, "weight") for n, m in model.named_modules()
                       if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and n not in skip]
            done = 0.0
            for step in range(steps):
                goal = p.amount * (step + 1) / steps
                zero_more = (goal - done) / (1.0 - done)  # torch.nn.utils.prune counts the still-unpruned weights
                torch_prune.global_unstructured(targets, torch_prune.L1Unstructured, amount=zero_more)
                done = goal
                if step == 0 or step == steps - 1:
                    acc_pruned = C.val_accuracy(model, data)
                if step_epochs[step]:
                    history += fit(model, data, C.train_config(p, epochs=step_epochs[step]), ctx.settings.seed + step,
                                   ctx.log, tqdm)["history"]
            for m, name in targets:
                torch_prune.remove(m, name)  # permanent: weight = weight_orig * mask
        model.eval()
        new_spec = dict(spec)
        if p.method == "structured":
            new_spec["resized"] = models.resized_layers(model, models.build_from_spec(C.base_spec(spec)))
        path = models.save_torch(model, ctx.workdir, new_spec)
        reloaded, _ = models.load_torch(path)  # the spec must rebuild exactly this network
        with torch.inference_mode():
            x = torch.from_numpy(data.val_x[:8])
            if not torch.allclose(reloaded(x), model(x), atol=1e-5):
                raise RuntimeError("the pruned model does not reload from its spec (model.json); please report this")
        after = {**C.complexity(model, shape), **C.sizes(path), "accuracy": C.val_accuracy(model, data)}
        sp = C.sparsity(model)
        metrics = {
            "sparsity": sp, "accuracy_before": before["accuracy"], "accuracy_pruned": acc_pruned,
            "accuracy_after": after["accuracy"],
            "accuracy_drop_points": 100 * (before["accuracy"] - after["accuracy"]),
            "parameters_before": before["parameters"], "parameters_after": after["parameters"],
            "macs_before": before["macs"], "macs_after": after["macs"],
            "parameters_reduction": 1 - after["parameters"] / before["parameters"],
            "macs_reduction": 1 - after["macs"] / before["macs"],
            "file_bytes_before": before["file_bytes"], "file_bytes_after": after["file_bytes"],
            "gzip_bytes_before": before["gzip_bytes"], "gzip_bytes_after": after["gzip_bytes"],
        }
        ctx.log.info("parameters %d -> %d (-%.0f%%), MACs %.1f M -> %.1f M (-%.0f%%), sparsity %.0f%%, file %.2f -> "
                     "%.2f MB (gzip %.2f -> %.2f MB), top-1 %.4f -> %.4f (pruned) -> %.4f (fine-tuned)",
                     before["parameters"], after["parameters"], 100 * metrics["parameters_reduction"],
                     before["macs"] / 1e6, after["macs"] / 1e6, 100 * metrics["macs_reduction"], 100 * sp,
                     before["file_bytes"] / 1e6, after["file_bytes"] / 1e6, before["gzip_bytes"] / 1e6,
                     after["gzip_bytes"] / 1e6, before["accuracy"], acc_pruned, after["accuracy"])
        pruning = {"method": p.method, "amount": p.amount, "sparsity": sp, "unpruned": src.stage,
                   "parameters_reduction": metrics["parameters_reduction"], "macs_reduction": metrics["macs_reduction"],
                   "file_bytes_before": before["file_bytes"], "file_bytes_after": after["file_bytes"],
                   "gzip_bytes_before": before["gzip_bytes"], "gzip_bytes_after": after["gzip_bytes"]}
        meta = {**src.meta, "arch": new_spec, "parameters": after["parameters"], "macs": after["macs"],
                "pruning": pruning}
        return StageResult(Artifact(ctx.name, "torch", src.precision, path, meta),
                           metrics={k: float(v) for k, v in metrics.items() if v is not None},
                           info={"history": history, "skipped_layers": sorted(skip)})


def skipped_modules(model, patterns: list[str], num_classes: int) -> set[str]:
    """Module paths kept whole: those named (or prefixed) in skip_layers, plus the layer that outputs the logits."""
    from torch import nn

    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    unknown = [s for s in patterns if not any(n == s or n.startswith(s + ".") for n in names)]
    if unknown:
        raise ValueError(f"skip_layers: {unknown} match no Conv2d/Linear layer of the model; layers are named like "
                         f"{', '.join(names[:4])} ...")
    skip = {n for n in names if any(n == s or n.startswith(s + ".") for s in patterns)}
    outs = [n for n, m in model.named_modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    if outs:
        skip.add(outs[-1])
    return skip


def structured_pruner(model, p: PruneConfig, input_shape, skip: set[str], steps: int):
    import torch
    import torch_pruning as tp

    importance = {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
                  "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
                  "bn_scale": lambda: tp.importance.BNScaleImportance()}[p.importance]()
    mods = dict(model.named_modules())
    return tp.pruner.MetaPruner(model, torch.zeros(1, *input_shape[1:]), importance=importance,
                                pruning_ratio=p.amount, iterative_steps=steps,
                                ignored_layers=[mods[n] for n in skip], round_to=p.round_to)
