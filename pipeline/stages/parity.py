"""`parity`: every produced model against the model it was made from, on the same validation images.

For each input artifact, its source is the next artifact up its lineage (int8 .tflite <- fp32 .tflite <- PyTorch).
Both run in their own runtimes on the same N images, and EVERY output tensor is compared with the source's output of
the same position (a detector's heatmap and boxes, a segmenter's logits): cosine (mean and worst sample), max and mean
absolute error, SNR in dB (pipeline.library.parity_metrics). The task (`task`, pipeline.tasks) adds what the outputs mean:
top-1 agreement for a classifier, mAP@.5 of the model's detections against the source's confident ones for a
detector, the share of pixels of the same class (and their mIoU) for a segmenter; none need labels. Each task has
default thresholds (pipeline/tasks say which and why; a label-free model is held to every output's cosine and SNR)
that the recipe may tighten or loosen. A link below them fails the stage with CheckFailed: the failed model's row
carries its problems, and the error names the first stage along the lineage whose artifact diverged, so "accuracy
fell" becomes "the int8 conversion broke it", with the remedies already tried or the fixes worth trying. A model
fine-tuned from an imported one is not held to it (training changes a model on purpose); its conversions are held to
it instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import FORMATS
from pipeline.core.bounds import Finite, NonNegative, PositiveInt, UnitInterval, between
from pipeline.core.errors import CheckFailed, NotRunnableHere
from pipeline.core.results import Findings
from pipeline.stages.base import FAILURE_DIR, Stage, StageContext, StageResult

# Task agreement thresholds: parameter -> (task, agreement metric it bounds from below)
AGREEMENT = {"min_top1_agreement": ("classification", "top1_agreement"),
             "min_map50_agreement": ("detection", "map50_agreement"),
             "min_pixel_agreement": ("segmentation", "pixel_agreement"),
             "min_miou_agreement": ("segmentation", "miou_agreement")}


@dataclass
class ParityConfig:
    samples: PositiveInt = 256  # validation images every model and its source run on (the first N of the split)
    # apply the task's default thresholds (pipeline/tasks: classification top-1 agreement 0.97, detection mAP@.5
    # agreement 0.9, segmentation pixel agreement 0.97, task none: every output's cosine 0.99 and SNR 20 dB) wherever
    # the recipe gives no value; false = only the thresholds set here
    task_defaults: bool = True
    min_top1_agreement: Optional[UnitInterval] = None  # classification: fail below this share of identical top-1 (default 0.97)
    min_map50_agreement: Optional[UnitInterval] = None  # detection: fail below this mAP@.5 against the source's detections (default 0.9)
    min_pixel_agreement: Optional[UnitInterval] = None  # segmentation: fail below this share of same-class pixels (default 0.97)
    min_miou_agreement: Optional[UnitInterval] = None  # segmentation: fail below this mIoU against the source's classes
    min_cosine: Optional[between(-1, 1)] = None  # fail when any output's mean cosine similarity is below this (task none: 0.99)
    min_snr_db: Optional[Finite] = None  # fail when any output's signal-to-noise ratio is below this, dB (task none: 20)
    max_abs_error: Optional[NonNegative] = None  # fail when any output's largest absolute difference is above this
    batch_size: PositiveInt = 64  # images per inference call
    diagnose_samples: PositiveInt = 8  # when an int8 model fails: images of the per-layer comparison with its float source
    diagnose_memory_mb: PositiveInt = 2048  # the per-layer comparison holds at most this many MB of activations at once


THRESHOLDS = (*AGREEMENT, "min_cosine", "min_snr_db", "max_abs_error")


def given(p: ParityConfig) -> dict[str, float]:
    """The thresholds the recipe sets itself (the rest come from the task's defaults)."""
    return {k: getattr(p, k) for k in THRESHOLDS if getattr(p, k) is not None}


def compare(ref, got) -> dict[str, float]:
    """Agreement of two classifiers' logit arrays [N, classes]: top-1 agreement plus the tensor metrics."""
    import numpy as np

    from pipeline.library import parity_metrics

    m = parity_metrics.compare_tensor(ref, got, "logits")
    return {"top1_agreement": float((np.asarray(ref).argmax(1) == np.asarray(got).argmax(1)).mean()),
            "max_abs_error": m["max_abs_error"], "cosine": m["cosine"], "cosine_min": m["cosine_min"]}


def violations(m: dict[str, float], p: ParityConfig, per_output: dict | None = None) -> list[str]:
    """Thresholds broken: task agreement first, then every output tensor's (or the worst values `m` holds)."""
    from pipeline.library import parity_metrics

    out = []
    names = {"top1_agreement": "top-1 agreement", "map50_agreement": "mAP@.5 agreement",
             "pixel_agreement": "pixel agreement", "miou_agreement": "mIoU agreement"}
    for key, (_, metric) in AGREEMENT.items():
        limit = getattr(p, key)
        if limit is not None and metric in m and m[metric] < limit:
            out.append(f"{names[metric]} {m[metric]:.4f} < {key} {limit:g}")
    if per_output:
        return out + parity_metrics.violations(per_output, p.min_cosine, p.min_snr_db, p.max_abs_error)
    if p.min_cosine is not None and m["cosine"] < p.min_cosine:
        out.append(f"cosine {m['cosine']:.4f} < min_cosine {p.min_cosine:g}")
    if p.max_abs_error is not None and m["max_abs_error"] > p.max_abs_error:
        out.append(f"max abs error {m['max_abs_error']:.4g} > max_abs_error {p.max_abs_error:g}")
    return out


def _finite(m: dict, drop: bool = False) -> dict:
    """JSON and MLflow take no infinities: an identical output's SNR (inf) becomes None in the summary (with the
    cosine of 1 and the error of 0 saying why) and is left out of the metrics."""
    import math

    out = {}
    for k, v in m.items():
        if isinstance(v, float) and not math.isfinite(v):
            if not drop:
                out[k] = None
        else:
            out[k] = v
    return out


class Parity(Stage, type="parity", config=ParityConfig, accepts=FORMATS, inputs=(1, None), reads=("data", "task"),
             libraries=("onnxruntime", "torch", "ai-edge-litert", "tensorflow-cpu", "coremltools", "numpy",
                        "pycocotools", "scikit-learn")):
    @classmethod
    def check(cls, p: ParityConfig, cfg) -> list[str]:
        from pipeline import tasks

        task = str(cfg.get("task", "classification"))
        problems = tasks.check_name(task)
        for key, (owner, _) in AGREEMENT.items():
            if getattr(p, key) is not None and owner != task:
                fits = [k for k, (t, _) in AGREEMENT.items() if t == task]
                problems.append(f"{key} applies to task {owner}, but task={task!r}: remove it"
                                + (f" or use {' / '.join(fits)}" if fits else " (per-output thresholds: min_cosine, "
                                   "min_snr_db, max_abs_error)"))
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import runtimes

        p: ParityConfig = ctx.params
        data = ctx.data()
        x = data.val_x[: p.samples]
        labels = None if data.val_y is None else data.val_y[: p.samples]
        outputs: dict[str, object] = {}

        def run_model(a):
            if a.stage not in outputs:
                try:
                    model = runtimes.load(a.format, a.path, a.meta, threads=0)
                    outputs[a.stage] = (runtimes.predict_all_outputs(model, x, p.batch_size), model.runtime)
                except NotRunnableHere as e:
                    outputs[a.stage] = (None, str(e))
            return outputs[a.stage]

        about, metrics, failures, links = {}, {}, [], []
        for name, a in ctx.inputs.items():
            chain = ctx.lineage(a.stage)
            if len(chain) < 2:  # a model nothing was made from (the trained one): nothing to compare with
                about[a.stage] = Findings(parity={"source": None})
                continue
            src = chain[1]
            skip = _not_comparable(a, src)
            if skip:
                about[a.stage] = Findings(parity={"source": src.stage, "skipped": skip})
                ctx.log.info("%s vs %s: not compared: %s", a.stage, src.stage, skip)
                continue
            (got, rt_got), (ref, rt_ref) = run_model(a), run_model(src)
            if got is None or ref is None:
                why = rt_got if got is None else rt_ref
                about[a.stage] = Findings(parity={"source": src.stage, "not_runnable": why})
                ctx.log.info("%s vs %s: %s", a.stage, src.stage, why)
                continue
            m, per_output, bad, found = _link(ctx, a, src, got, ref, labels, data)
            about[a.stage] = Findings(parity={**found, "samples": len(x), "runtime": rt_got, "source_runtime": rt_ref})
            metrics.update({f"{a.stage}.{k}": v for k, v in _finite(m, drop=True).items()})
            if len(per_output) > 1:
                metrics.update({f"{a.stage}.{o}.{k}": v for o, vals in per_output.items()
                                for k, v in _finite(vals, drop=True).items()})
            links.append((len(chain), a, src, m, bad))
            if bad:
                failures.append((len(chain), a, src, bad))
        if failures:
            raise CheckFailed(_failure_message(ctx, failures, links, x, p), about)
        return StageResult(metrics=metrics, about=about)


def _not_comparable(a, src) -> str | None:
    """Why a model is not held to its source: a training stage changed it on purpose (a fine-tuned model, often
    with a new head for other classes). Its conversions are then compared with it, not with the pretrained file."""
    if a.meta.get("finetune") and not src.meta.get("finetune"):
        ft = a.meta["finetune"] if isinstance(a.meta["finetune"], dict) else {}
        had, now = ft.get("head_classes") or [src.meta.get("num_classes"), a.meta.get("num_classes")]
        head = f" with a new head ({had} -> {now} classes)" if ft.get("head_replaced") or had != now else ""
        return (f"'{a.stage}' was fine-tuned from '{src.stage}'{head}: training changes a model on purpose, so parity "
                f"holds its conversions to it instead")
    return None


def _link(ctx: StageContext, a, src, got, ref, labels, data):
    """One model against its source: per-output tensor metrics, the task's agreement, the thresholds broken.
    Returns (worst metrics + agreement, per-output metrics, problems, the parity findings)."""
    from pipeline import tasks
    from pipeline.library import parity_metrics

    p: ParityConfig = ctx.params
    names = list(src.meta.get("output_names") or a.meta.get("output_names") or [])
    if len(names) != len(ref):
        names = ["logits"] if len(ref) == 1 else [f"output_{i}" for i in range(len(ref))]
    if len(got) != len(ref):
        raise ValueError(f"parity: stage '{a.stage}' gives {len(got)} outputs but its source '{src.stage}' "
                         f"gives {len(ref)} ({', '.join(names)}); a conversion dropped or added an output")
    per_output = parity_metrics.compare_outputs(ref, got, names)
    task = tasks.for_model(ctx.settings.task, src.meta, data.num_classes or None)
    agreement = task.agreement(ref, got, labels if task.needs_labels else None)
    m = {**parity_metrics.worst(per_output), **agreement}
    limits = task.parity_thresholds_for(given(p), p.task_defaults)
    bad = task.parity_problems(agreement, per_output, given(p), p.task_defaults)
    found = {"source": src.stage, **_finite(m), "task": task.name,
             "outputs": {o: _finite(v) for o, v in per_output.items()}, "thresholds": limits,
             "ok": not bad, "problems": [f"parity against '{src.stage}': {b}" for b in bad]}
    shown = "; ".join(f"{o}: cosine {v['cosine']:.5f}, max |error| {v['max_abs_error']:.4g}, SNR "
                      f"{v['snr_db']:.1f} dB" for o, v in per_output.items())
    agreed = ", ".join(f"{k} {v:.4f}" for k, v in agreement.items())
    if agreed and len(ref[0]) < len(data.val_x):  # its top-1 is not evaluate's: say on which images
        agreed += (f" on the first {len(ref[0])} of {len(data.val_x)} validation images (stages.{ctx.name}.samples; "
                   f"the evaluate stage scores all of them)")
    ctx.log.info("%s (%s %s) vs %s (%s): %s%s%s", a.stage, a.format, a.precision, src.stage, src.format,
                 shown, f"; {agreed}" if agreed else "", "" if not bad else "  <- " + "; ".join(bad))
    return m, per_output, bad, found


def _failure_message(ctx: StageContext, failures: list, links: list, x, p: ParityConfig) -> str:
    """The failure sentence: the first stage along the lineage whose model broke, what broke, what agreed upstream,
    where int8 parted from float, and the fixes worth trying there."""
    from pipeline.library import parity_metrics

    failures.sort(key=lambda f: f[0])  # nearest the root first: the first stage that broke the model
    depth, a, src, bad = failures[0]
    key = next((k for k in ("top1_agreement", "map50_agreement", "pixel_agreement") if k in links[0][3]), "cosine")
    ok = [f"{l[1].stage} ({l[3][key]:.3f})" for l in sorted(links, key=lambda l: l[0])
          if not l[4] and l[0] < depth and key in l[3]]
    later = [f[1].stage for f in failures[1:]]
    int8 = a.precision.startswith("int8")
    tried = (a.meta.get("remedies") or {}).get("attempts") or []
    fixes = parity_metrics.FIXES if int8 and not tried else ()
    layer = _diverging_layer(ctx, a, src, x, p) if int8 else ""
    return (f"parity: stage '{a.stage}' ({a.format} {a.precision}) diverged from its source '{src.stage}' "
            f"({src.format} {src.precision}) on {len(x)} validation images: {'; '.join(bad)}."
            + (f" Upstream links agreed: {', '.join(ok)}." if ok else "")
            + (f" Downstream stages also off: {', '.join(later)}." if later else "")
            + (f" {layer}." if layer else "")
            + (f" Tried at '{a.stage}': {'; '.join(t['name'] for t in tried)}"
               + (" (its remedies are off: remedies=false)." if len(tried) == 1 else ".") if tried else "")
            + f" Look at stage '{a.stage}' first (its parameters, calibration, operators)."
            + (f" Fixes worth trying there: {'; '.join(fixes)}." if fixes else ""))


def _diverging_layer(ctx: StageContext, a, src, x, p) -> str:
    """Where an int8 model that lost parity parts from its float source of the same format: the per-layer
    comparison of pipeline.library.diagnose, written (JSON + PNG) where the runner keeps a failed stage's diagnosis. Returns
    the sentence for the error message, or why there is none."""
    from pipeline.library import diagnose

    if a.format != src.format or a.format not in ("onnx", "tflite"):
        return (f"No per-layer comparison: it needs an int8 and a float model of the same format (onnx or tflite), "
                f"here {a.format} vs {src.format}")
    try:
        from pipeline import runtimes

        xs = runtimes.adapt_input(a.format, a.meta, x[: min(len(x), p.diagnose_samples)])  # what the model takes
        report = diagnose.first_diverging_layer(a.format, src.path, a.path, xs, meta=a.meta,
                                                memory_mb=p.diagnose_memory_mb)
        files = diagnose.write(report, ctx.workdir / FAILURE_DIR, stem=f"diverging_layer_{a.stage}")
    except Exception as e:  # the diagnosis must not hide the parity failure itself
        ctx.log.warning("per-layer comparison of %s with %s failed: %s", a.stage, src.stage, e)
        return f"No per-layer comparison ({type(e).__name__}: {str(e)[:200]})"
    ctx.log.info("%s: %s", a.stage, diagnose.message(report))
    return (f"Per-layer, int8 against float: {diagnose.message(report)} "
            f"(reports/{ctx.name}/{files[0].name} and .png in the run folder)")

