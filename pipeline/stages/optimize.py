"""`optimize`: the fastest model for the device that keeps its accuracy: depth and channel pruning searched with
Optuna's NSGA-II under the budgets (budget.accuracy_drop, latency_ms, model_mb, ram_mb), accuracy won back by
distillation from the unmodified model, QAT where post-training int8 misses, every int8 form the device deploys
(runtime options included), all timed side by side with the peers' defaults of the unmodified model. The chosen model
is the artifact, in its own format; optimize.md / optimize_front.png / optimize.json hold the front, the lineage and
the search. A thin adapter over pipeline.optimize (the library explains each step)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import (one_of, NonNegative, NonNegativeInt, OpenUnitInterval, Positive, PositiveInt, UnitInterval,
                             at_least, between)
from pipeline.core.results import Findings
from pipeline.stages.base import FAILURE_DIR, Stage, StageContext, StageResult

QAT_WHEN = ("if_needed", "never", "always")


@dataclass
class OptimizeConfig:
    trials: PositiveInt = 16  # Optuna trials at most (each: prune, a short distillation, a latency proxy)
    population: at_least(2, integer=True) = 8  # NSGA-II population size
    patience: PositiveInt = 6  # stop after this many trials in a row add nothing to the feasible front
    max_minutes: Optional[Positive] = None  # stop the search after this long (the finalists are still trained)
    ratio_min: between(0, 1, hi_open=True) = 0.0  # smallest share of channels pruned (global, before allocation)
    ratio_max: between(0, 1, hi_open=True) = 0.75  # largest share
    ratio_step: Positive = 0.05  # grid of the share (cached trials are met again on a grid)
    allocations: List[str] = field(default_factory=lambda: ["uniform", "sensitivity"])  # per-group allocation tried
    max_blocks: NonNegativeInt = 99  # residual blocks the search may remove (capped to the model's; 0 = no depth)
    search_fraction: OpenUnitInterval = 0.15  # share of the training split held out to judge trials (never trained on)
    sensitivity_samples: PositiveInt = 512  # search-split images the sensitivity analysis scores on
    sensitivity_ratio: OpenUnitInterval = 0.5  # share of a group's channels pruned to measure its sensitivity
    allocation_strength: UnitInterval = 0.6  # sensitivity allocation: group ratios from (1+s) to (1-s) x the share
    round_to: Optional[PositiveInt] = 8  # channel counts stay multiples of this (SIMD kernels like 4 or 8)
    proxy_epochs: PositiveInt = 1  # distillation epochs of a trial (the proxy)
    proxy_samples: Optional[PositiveInt] = None  # training images a trial distils on (per-class share); null = all
    final_epochs: NonNegativeInt = 5  # more distillation epochs for each finalist
    finalists: PositiveInt = 3  # trials of the feasible front distilled in full, deployed and timed
    lr: Positive = 0.002  # peak learning rate of the distillation (one-cycle AdamW)
    batch_size: at_least(2, integer=True) = 64
    temperature: Positive = 4.0  # distillation temperature
    alpha: UnitInterval = 0.7  # weight of the teacher's soft targets (1 - alpha: the labels)
    qat: one_of(*QAT_WHEN) = "if_needed"  # quantization-aware distillation: if_needed (post-training int8 misses) | never | always
    qat_epochs: PositiveInt = 2
    qat_lr: Positive = 0.0002
    proxy_slack: NonNegative = 2.0  # top-1 points a trial's proxy may exceed the budget by (a short fine-tune recovers less)
    calibration_samples: PositiveInt = 128  # training images every int8 model is calibrated on
    warmup: NonNegativeInt = 10  # untimed runs of each finalist model
    iterations: PositiveInt = 50  # timed runs of each (round-robin, bootstrap intervals)
    threads: at_least(0, integer=True, note="0 = measured") = 0  # fine-tuning threads; 0 = measured once
    # smaller input sizes for a separate resolution study of the chosen model (shown, never chosen: the input is fixed)
    resolutions: List[PositiveInt] = field(default_factory=list)


class Optimize(Stage, type="optimize", config=OptimizeConfig, accepts=("torch",), inputs=1,
               reads=("data", "seed", "budget", "device", "cache.enabled", "cache.dir", "paths.outputs"),
               libraries=("optuna", "torch-pruning")):
    @classmethod
    def output_format(cls, params, device):
        """Decided by measurement: one of the formats the device deploys that the optimizer builds."""
        from pipeline.optimize.deploy import SUPPORTED

        formats = [f for f in (device.get("formats") or []) if f in SUPPORTED] if device is not None else []
        return tuple(formats) or SUPPORTED

    @classmethod
    def check(cls, p: OptimizeConfig, cfg) -> list[str]:
        from pipeline.optimize.deploy import SUPPORTED
        from pipeline.optimize.search import ALLOCATIONS

        problems = []
        if p.ratio_min > p.ratio_max:
            problems.append(f"ratio_min {p.ratio_min} is above ratio_max {p.ratio_max}")
        bad = [a for a in p.allocations if a not in ALLOCATIONS]
        if bad or not p.allocations:
            problems.append(f"allocations: {bad or '(empty)'}; choose from {', '.join(ALLOCATIONS)}")
        too_big = [r for r in p.resolutions if r >= int(cfg.model.input_size)]
        if too_big:
            problems.append(f"resolutions: {too_big} are not below model.input_size={cfg.model.input_size}; the study "
                            f"shows smaller inputs beside the fixed one")
        dev = cfg.device
        if not any(f in SUPPORTED for f in dev.get("formats") or []):
            problems.append(f"device {dev.name!r} deploys {', '.join(dev.get('formats') or []) or 'nothing'}; the "
                            f"optimizer builds and times {', '.join(SUPPORTED)} (Core ML cannot be timed or profiled "
                            f"from Linux): choose a device that deploys one of them")
        if not dev.get("measured_here") and not dev.get("connection") and not dev.get("estimate_unit"):
            problems.append(f"device {dev.name!r} is neither this host, nor connected (device.connection), nor "
                            f"modelled (estimate_unit): there is no latency to optimize for")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pathlib import Path

        from pipeline.optimize import engine

        p: OptimizeConfig = ctx.params
        src = ctx.input
        opts = self._options(ctx, p, src)
        # the optimizer's steps live in the run's stage cache (cache.dir, or <outputs>/cache), keyed by their own code
        cache_dir = ctx.settings.cache.dir
        root = None if not ctx.settings.cache.enabled else (
            Path(cache_dir).expanduser().resolve() if cache_dir else Path(ctx.settings.paths.outputs).expanduser() / "cache")
        result = engine.optimize(src, ctx.data(), opts, root, ctx.workdir, ctx.log)
        f = result["findings"]
        if result["chosen"] is None:
            (ctx.workdir / FAILURE_DIR).mkdir(exist_ok=True)
            for name in result["files"]:  # the front, kept in the run folder although the stage failed
                (ctx.workdir / name).rename(ctx.workdir / FAILURE_DIR / name)
            raise RuntimeError(f"no optimized model is within the budgets: {f['why_none']}; see optimize.md")
        c = result["chosen"]
        meta = {**c["meta"], "optimization": {k: f[k] for k in ("speedup_vs_peer_default", "accuracy_drop",
                                                                 "peer_default", "lineage")}}
        metrics = {k: float(f[k]) for k in ("speedup_vs_peer_default", "accuracy_drop") if f.get(k) is not None}
        metrics.update(trials=float(f["search"]["trials"]), search_wall_seconds=float(f["search"]["wall_seconds"]),
                       cache_saved_seconds=float(f["search"]["cache"]["saved_seconds"]))
        return StageResult(Artifact(ctx.name, c["format"], c["precision"], result["path"], meta), metrics=metrics,
                           files=result["files"], info={"optimization": {"chosen": f["chosen"],
                                                                         "stop_reason": f["search"]["stop_reason"]}},
                           about={ctx.name: Findings(optimization=f)})

    @staticmethod
    def _options(ctx: StageContext, p: OptimizeConfig, src):
        from pipeline.devices import budgets as budgets_mod
        from pipeline.optimize import engine, recover, search
        from pipeline.runtimes import host_threads

        device, b = ctx.settings.device.to_dict(), ctx.settings.budget
        eff = budgets_mod.effective(device, {"latency_ms": b.latency_ms, "model_mb": b.model_mb, "ram_mb": b.ram_mb,
                                             "max_accuracy_drop": b.accuracy_drop})
        budgets = {"accuracy_drop": float(b.accuracy_drop), "latency_ms": eff["latency_ms"],
                   "model_mb": eff["model_mb"], "ram_mb": eff["ram_mb"]}
        threads = p.threads
        if threads == 0:
            from pipeline.models import load_torch

            threads = recover.probe_threads(load_torch(src.path)[0], src.meta["input_shape"], p.batch_size, ctx.log)
        kd = dict(batch_size=p.batch_size, temperature=p.temperature, alpha=p.alpha, threads=threads)
        return engine.Options(
            space=search.Space(p.ratio_min, p.ratio_max, p.ratio_step, tuple(p.allocations), p.max_blocks),
            limits=search.Limits(budgets["accuracy_drop"], p.proxy_slack, budgets["model_mb"], budgets["latency_ms"],
                                 stop_when_met=b.latency_ms is not None),
            budgets=budgets, device=device, proxy=recover.Recipe(p.proxy_epochs, p.lr, **kd),
            final=recover.Recipe(p.final_epochs, p.lr, **kd), qat=recover.Recipe(p.qat_epochs, p.qat_lr, **kd),
            trials=p.trials, population=p.population, seed=int(ctx.settings.seed), patience=p.patience,
            max_minutes=p.max_minutes, search_fraction=p.search_fraction, proxy_samples=p.proxy_samples,
            sensitivity_samples=p.sensitivity_samples,
            sensitivity_ratio=p.sensitivity_ratio, strength=p.allocation_strength, round_to=p.round_to,
            qat_when=p.qat, finalists=p.finalists, calibration_samples=p.calibration_samples, warmup=p.warmup,
            iterations=p.iterations, threads=host_threads(int(device.get("threads") or 0)),
            resolutions=list(p.resolutions))
