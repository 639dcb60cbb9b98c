"""`benchmark_formats`: one model in every format and precision the back ends of this host can build and run, timed
side by side: ONNX Runtime fp32 and its int8 variants, LiteRT fp32 and int8, OpenVINO fp32 / default / f16 / int8,
ExecuTorch fp32 and int8, and Core ML fp16 and int8 (built for their size; Core ML runs only on macOS, so no number).

The model is the stage's input (a PyTorch model, or an ONNX file whose PyTorch source is upstream), or, with no input,
the zoo model `model.name` built with random weights: its latency and size are real, its task metric is n/a. Every
candidate is built from the same model with the same calibration images (pipeline.library.candidates, the builders
select_int8 uses), evaluated on the validation split when the model is a trained classifier of the data's classes,
and timed in one fresh process, all models round-robin, with bootstrap intervals (pipeline.runtimes.measure). The table
(format, status with the reason, size, metric, p50 with its interval, FPS, speed-up against the fastest fp32 model
with its interval, peer defaults flagged) is printed after the run, written as benchmark_formats.csv / .json and
shown on the run card (`edge-pipeline benchmark model=NAME` runs recipes/benchmark.yaml).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.core.bounds import NonNegativeInt, PositiveInt
from pipeline.library import candidates as cands
from pipeline.library import side_by_side as sbs
from pipeline.stages.base import Stage, StageContext, StageResult

# every candidate but the accuracy-controlled ones (they trade latency for accuracy against a budget: select_int8's
# job) and openvino_bf16 (OpenVINO's default already computes in bf16 wherever the CPU can)
DEFAULT_CANDIDATES = [n for n, c in cands.CANDIDATES.items() if not c.accuracy_control and n != "openvino_bf16"]


@dataclass
class BenchmarkFormatsConfig:
    candidates: List[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))  # which formats and precisions to build and time
    num_classes: PositiveInt = 1000  # outputs of the zoo model built when the stage has no input (its head is untrained)
    calibration_samples: PositiveInt = 64  # training images every int8 candidate is calibrated on (the same for all)
    method: str = "minmax"  # ONNX Runtime calibration: minmax | entropy | percentile
    eval_samples: Optional[PositiveInt] = None  # validation images for the task metric (null = all)
    warmup: NonNegativeInt = 10  # untimed runs of each model
    iterations: PositiveInt = 50  # timed runs of each model (p50 and its interval over these)


class BenchmarkFormats(Stage, type="benchmark_formats", config=BenchmarkFormatsConfig, accepts=("torch", "onnx"),
                       inputs=(0, 1), reads=("data", "host", "seed", "device.threads", "model", "task")):
    @classmethod
    def check(cls, p: BenchmarkFormatsConfig, cfg) -> list[str]:
        from pipeline import models

        problems = []
        unknown = [c for c in p.candidates if c not in cands.CANDIDATES]
        if unknown or not p.candidates:
            problems.append(f"candidates: unknown {unknown or '(empty list)'}; choose from "
                            f"{', '.join(cands.CANDIDATES)}")
        if p.method not in ("minmax", "entropy", "percentile"):
            problems.append(f"method must be minmax, entropy or percentile, got {p.method!r}")
        if models.framework(str(cfg.model.name)) != "torch":
            problems.append(f"model.name: {cfg.model.name!r} is not a PyTorch zoo model; the candidates are made from "
                            f"PyTorch and ONNX models (import one with an import_model stage as this stage's input)")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.library import calibration
        from pipeline.runtimes import host_threads

        p: BenchmarkFormatsConfig = ctx.params
        data = ctx.data()
        root = ctx.workdir / "candidates"
        given = next(iter(ctx.inputs.values()), None)
        src, torch_src, untrained = cands.sources(given, ctx.lineage, ctx.settings.model, p.num_classes, root, ctx.log)
        env = cands.Env(src=src, torch=torch_src, ir_dir=root / "_openvino_ir", method=p.method,
                        calib=calibration.sample(data, p.calibration_samples, ctx.settings.seed, ctx.name))
        names = list(dict.fromkeys([cands.REFERENCE, *p.candidates]))
        score, metric_na = _scorer(data, p.eval_samples, untrained, str(ctx.settings.task), src.stage)
        progress = lambda k, n, name: ctx.log.info("candidate %d of %d: %s", k, n, name)
        built, skipped = sbs.build_and_score(names, root, env, score, ctx.log, progress)
        for name, s in skipped.items():
            ctx.log.info("%s: %s", name, s["reason"])
        if not built:
            raise RuntimeError("no candidate runs here: " + "; ".join(f"{n}: {s['reason']}" for n, s in skipped.items()))
        threads = host_threads(int(ctx.settings.device.threads))
        t0 = time.perf_counter()
        measured = sbs.time_side_by_side(built, skipped, threads, p.warmup, p.iterations)
        ctx.log.info("timed %d models side by side in %.1f s", len(built), time.perf_counter() - t0)
        ref = built.get(cands.REFERENCE, {}).get("accuracy")
        if metric_na is None and not any(b["accuracy"] is not None for b in built.values()):
            metric_na = f"the model's outputs are not the data's {data.num_classes} classes (fine-tune it first)"
        rows = sbs.rows(built, measured, ref, threads)
        table = [rows[n] if n in rows else {**sbs.skipped_rows({n: skipped[n]})[0]} for n in names
                 if n in rows or n in skipped]
        fastest = sbs.fastest(rows, "precision", "fp32")
        doc = {"model": {"name": src.stage if given is not None else str(ctx.settings.model.name),
                         "input_shape": list(src.meta["input_shape"]), "untrained": untrained},
               "metric": "top-1", "metric_na": metric_na, "reference": fastest["name"] if fastest else None,
               "threads": threads, "cpu": measured["cpu"], "load_average": measured["load_average"],
               "iterations": p.iterations, "rows": table,
               "files": {"csv": "benchmark_formats.csv", "json": "benchmark_formats.json"}}
        sbs.write_csv(ctx.workdir / "benchmark_formats.csv", table)
        (ctx.workdir / "benchmark_formats.json").write_text(json.dumps(doc, indent=1, default=str))
        shutil.rmtree(root)  # the candidates are measured, not kept: the table lists them
        metrics = {"candidates": len(names), "ran": len(built), "not_run": len(skipped)}
        metrics.update({f"{r['name']}.latency_p50_ms": r["latency_p50_ms"] for r in rows.values()})
        return StageResult(metrics=metrics, info={"formats": doc},
                           files=["benchmark_formats.csv", "benchmark_formats.json"])


def _scorer(data, eval_samples, untrained: bool, task: str, model: str):
    """(score(name, model) -> top-1 or None, why the metric is n/a or None). A metric is computed only for a trained
    classifier whose outputs are the data's classes; anything else would be a number that measures nothing."""
    if untrained:
        return (lambda n, m: None), ("untrained head: the zoo model was built with random weights (latency and size "
                                     "are real); give the stage a trained model (inputs: [train]) for a metric")
    if task != "classification":
        return ((lambda n, m: None),
                f"task {task!r}: this table scores classifiers only; the evaluate stage scores {task}")
    from pipeline import runtimes

    x, y = data.val_x, data.val_y
    if eval_samples:
        x, y = x[:eval_samples], y[:eval_samples]
    n_classes = int(data.num_classes)

    def score(name: str, m) -> float | None:
        logits = runtimes.predict_all(m, x, 64)
        if logits.shape[-1] != n_classes:
            return None
        return float((logits.argmax(1) == y).mean())

    return score, None
