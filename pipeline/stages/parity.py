"""`parity`: every produced model against the model it was made from, on the same validation images.

For each input artifact, its source is the next artifact up its lineage (int8 .tflite <- fp32 .tflite <- PyTorch).
Both run in their own runtimes on the same N images; the stage reports top-1 agreement, max absolute error and cosine
similarity of the logits. With thresholds in the recipe, a link below them fails the run, and the error names the
first stage along the lineage whose artifact diverged, so "accuracy fell" becomes "the int8 conversion broke it".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.artifacts import FORMATS
from pipeline.bounds import NonNegative, PositiveInt, UnitInterval, between
from pipeline.errors import NotRunnableHere
from pipeline.results import Findings
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class ParityConfig:
    samples: PositiveInt = 256  # validation images every model and its source run on (the first N of the split)
    min_top1_agreement: Optional[UnitInterval] = None  # fail below this share of identical top-1 predictions, e.g. 0.97
    min_cosine: Optional[between(-1, 1)] = None  # fail below this mean cosine similarity of the logits, e.g. 0.99
    max_abs_error: Optional[NonNegative] = None  # fail above this largest absolute logit difference
    batch_size: PositiveInt = 64  # images per inference call


def compare(ref, got) -> dict[str, float]:
    """Agreement of two logit arrays [N, classes]."""
    import numpy as np

    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
            "max_abs_error": float(np.abs(ref - got).max()), "cosine": float(cos.mean()), "cosine_min": float(cos.min())}


def violations(m: dict[str, float], p: ParityConfig) -> list[str]:
    out = []
    if p.min_top1_agreement is not None and m["top1_agreement"] < p.min_top1_agreement:
        out.append(f"top-1 agreement {m['top1_agreement']:.4f} < min_top1_agreement {p.min_top1_agreement:g}")
    if p.min_cosine is not None and m["cosine"] < p.min_cosine:
        out.append(f"cosine {m['cosine']:.4f} < min_cosine {p.min_cosine:g}")
    if p.max_abs_error is not None and m["max_abs_error"] > p.max_abs_error:
        out.append(f"max abs error {m['max_abs_error']:.4g} > max_abs_error {p.max_abs_error:g}")
    return out


class Parity(Stage):
    type = "parity"
    Config = ParityConfig
    accepts = FORMATS
    reads = ("data",)
    libraries = ("onnxruntime", "torch", "ai-edge-litert", "tensorflow-cpu", "coremltools", "numpy")
    min_inputs = 1

    @classmethod
    def check(cls, p: ParityConfig, cfg) -> list[str]:
        problems = []
        if p.samples < 1 or p.batch_size < 1:
            problems.append(f"samples and batch_size must be >= 1 (got {p.samples}, {p.batch_size})")
        if p.min_top1_agreement is not None and not 0 <= p.min_top1_agreement <= 1:
            problems.append(f"min_top1_agreement is a share between 0 and 1, got {p.min_top1_agreement}")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import runtimes

        p: ParityConfig = ctx.params
        x = ctx.data().val_x[: p.samples]
        outputs: dict[str, object] = {}

        def run_model(a):
            if a.stage not in outputs:
                try:
                    model = runtimes.load(a.format, a.path, a.meta, threads=0)
                    outputs[a.stage] = (runtimes.predict_all(model, x, p.batch_size), model.runtime)
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
            (got, rt_got), (ref, rt_ref) = run_model(a), run_model(src)
            if got is None or ref is None:
                why = rt_got if got is None else rt_ref
                about[a.stage] = Findings(parity={"source": src.stage, "not_runnable": why})
                ctx.log.info("%s vs %s: %s", a.stage, src.stage, why)
                continue
            m = compare(ref, got)
            bad = violations(m, p)
            about[a.stage] = Findings(parity={"source": src.stage, **m, "samples": len(x), "runtime": rt_got,
                                              "source_runtime": rt_ref, "ok": not bad})
            metrics.update({f"{a.stage}.{k}": v for k, v in m.items()})
            links.append((len(chain), a, src, m, bad))
            ctx.log.info("%s (%s %s) vs %s (%s): top-1 agreement %.4f, max |error| %.4g, cosine %.5f%s", a.stage,
                         a.format, a.precision, src.stage, src.format, m["top1_agreement"], m["max_abs_error"],
                         m["cosine"], "" if not bad else "  <- " + "; ".join(bad))
            if bad:
                failures.append((len(chain), a, src, bad))
        if failures:
            failures.sort(key=lambda f: f[0])  # nearest the root first: the first stage that broke the model
            depth, a, src, bad = failures[0]
            ok = [f"{l[1].stage} ({l[3]['top1_agreement']:.3f})" for l in sorted(links, key=lambda l: l[0])
                  if not l[4] and l[0] < depth]
            later = [f[1].stage for f in failures[1:]]
            raise RuntimeError(
                f"parity: stage '{a.stage}' ({a.format} {a.precision}) diverged from its source '{src.stage}' "
                f"({src.format} {src.precision}) on {len(x)} validation images: {'; '.join(bad)}."
                + (f" Upstream links agreed: {', '.join(ok)}." if ok else "")
                + (f" Downstream stages also off: {', '.join(later)}." if later else "")
                + f" Look at stage '{a.stage}' first (its parameters, calibration, operators).")
        return StageResult(metrics=metrics, about=about)
