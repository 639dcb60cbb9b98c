"""Remedies before failure: when an int8 model misses its budget, try what a practitioner would, cheapest first, and
report every attempt. Shared by the quantize stages of every back end (a stage gives how to build one attempt; this
module decides which attempts, judges each against the float model, and keeps the best).

The ladders, cheapest first (each step is tried only if the model is still outside its budget):
  onnx        per-channel weights; 4x the calibration images; entropy, then percentile calibration; float islands
              (the outputs' decoding after the last weighted layers); NNCF's int8 (its fast bias correction); NNCF
              accuracy control (the costliest layers back to float; needs labels)
  tflite      per-channel weights; 4x the calibration images; min-max calibration; 16x8 (int16 activations, int8
              weights, ai-edge-quantizer: the mixed precision LiteRT offers)
  openvino    4x the calibration images; NNCF's mixed preset (asymmetric activations); full bias correction instead
              of fast; NNCF accuracy control (needs labels)
  executorch  per-channel weights; 4x the calibration images; float islands (first and last layers in float)
A step that helped and is free at run time (per-channel weights, more calibration images) stays on for the later
steps; the others are alternatives tried on top of what stayed on.

"Within budget" is parity's rule (pipeline.convert.scoring in parity mode: the task's agreement metric and every
output's cosine/SNR against the float model, the task's default thresholds), judged on training images set apart
from the calibration ones: the parity stage then judges the chosen model on the validation split, which no attempt
saw. When no attempt meets the budget the best one is kept (parity then fails, naming what was tried and where the
model parts from float).
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

MORE_CALIBRATION = 4  # "more calibration images": this many times the recipe's count (capped at the training split)


@dataclass(frozen=True)
class Step:
    name: str  # in words, for the report
    change: dict  # the build options it sets
    keeps: bool = False  # stays on for the later steps when it helped (free at run time)
    needs: str = ""  # "labels": only for a labelled classification task (NNCF validates top-1)


_PER_CHANNEL = Step("per-channel weights", {"per_channel": True}, keeps=True)
_MORE = Step(f"{MORE_CALIBRATION}x the calibration images", {"calibration_factor": MORE_CALIBRATION}, keeps=True)
_EDGES = Step("float islands (first and last layers in float)", {"float_edges": True})
LADDERS: dict[str, tuple[Step, ...]] = {
    "onnx": (_PER_CHANNEL, _MORE, Step("entropy calibration", {"method": "entropy"}),
             Step("percentile calibration", {"method": "percentile"}),
             Step("float islands (the outputs' decoding in float)", {"float_tail": True}),
             Step("NNCF int8 (fast bias correction)", {"tool": "nncf"}),
             Step("NNCF accuracy control (costliest layers back to float)", {"tool": "nncf_ac"}, needs="labels")),
    # (no float islands: litert-torch's PT2E quantizer refuses a module left unquantized, `set_module_name(m, None)`)
    "tflite": (_PER_CHANNEL, _MORE, Step("min-max calibration", {"observer": "minmax"}),
               Step("16x8 (int16 activations, int8 weights)", {"scheme": "a16w8"})),
    "openvino": (_MORE, Step("NNCF mixed preset (asymmetric activations)", {"preset": "mixed"}),
                 Step("full bias correction", {"fast_bias_correction": False}),
                 Step("NNCF accuracy control (costliest layers back to float)", {"accuracy_control": True},
                      needs="labels")),
    "executorch": (_PER_CHANNEL, _MORE, _EDGES),
}


def _key(score) -> tuple:
    """Better first: within budget, fewer thresholds broken, then the task's agreement (or the worst output's SNR)."""
    f = score.fidelity
    main = next((f[k] for k in ("top1_agreement", "map50_agreement", "pixel_agreement") if f.get(k) is not None),
                f.get("snr_db") if f.get("snr_db") is not None else float("inf") if f.get("cosine") == 1.0
                else f.get("cosine", 0.0))
    return (score.passed, -len(score.problems), main)


def climb(backend: str, base: dict[str, Any], build: Callable[[dict, Path], tuple[Path, dict]],
          judge: Callable[[Path, dict], Any], workdir: Path, log: logging.Logger, enabled: bool = True,
          labels: bool = False, budget: str = "") -> tuple[Path, dict, dict]:
    """Build with the recipe's options (`base`); while outside the budget, try the back end's ladder. `build(options,
    directory)` makes one attempt and returns (path, meta); `judge(path, meta)` returns its
    pipeline.convert.scoring.Score. Returns the kept attempt's (path, meta) moved into `workdir`, and the report
    {"met", "budget", "chosen", "attempts": [{name, options, passed, fidelity, problems} ...]}."""
    steps = [s for s in LADDERS[backend] if labels or s.needs != "labels"]
    skipped = [s.name for s in LADDERS[backend] if s not in steps]
    root = Path(workdir) / "attempts"
    attempts, best, current, last = [], None, dict(base), None
    for i, step in enumerate([Step("as configured", {}), *steps]):
        if i and (not enabled or best["score"].passed):
            break
        options = {**current, **step.change}
        if i and options == current:
            continue  # (the recipe already asked for it)
        directory = root / f"{i:02d}"
        directory.mkdir(parents=True)
        try:
            path, meta = build(options, directory)
            score = judge(path, meta)
        except Exception as e:  # an attempt the back end cannot make is reported, and the ladder goes on
            if i == 0:
                raise
            log.warning("remedy %r could not be made: %s: %s", step.name, type(e).__name__, str(e).splitlines()[0:1])
            attempts.append({"name": step.name, "options": options, "passed": False, "error":
                             f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"})
            continue
        attempts.append({"name": step.name, "options": options, **score.to_dict()})
        log.info("%s %s: %s%s", "int8" if not i else "remedy", repr(step.name),
                 "within budget" if score.passed else "; ".join(score.problems),
                 "" if not score.fidelity else " (" + ", ".join(
                     f"{k} {v:.4f}" for k, v in score.fidelity.items() if v is not None) + ")")
        if best is None or _key(score) > _key(best["score"]):
            best = {"path": path, "meta": meta, "score": score, "name": step.name}
        if step.keeps and (last is None or _key(score) >= _key(last)):
            current = options
        last = score if last is None or _key(score) >= _key(last) else last
    kept = _keep(best["path"], Path(workdir))
    shutil.rmtree(root, ignore_errors=True)  # the other attempts are reported, not kept
    report = {"met": best["score"].passed, "budget": budget, "chosen": best["name"], "attempts": attempts,
              "not_tried": [f"{n} (needs labelled classification data)" for n in skipped]}
    if not report["met"]:
        log.warning("no attempt brought the int8 model within budget (%s); kept the best: %r", budget, best["name"])
    return kept, {**best["meta"], "remedies": report}, report


def _keep(path: Path, workdir: Path) -> Path:
    """Move the kept attempt (an OpenVINO IR: its .xml and .bin) to the stage's work directory."""
    out = workdir / path.name
    shutil.move(str(path), out)
    if path.suffix == ".xml" and path.with_suffix(".bin").exists():
        shutil.move(str(path.with_suffix(".bin")), out.with_suffix(".bin"))
    return out


def calibration_count(options: dict, base_count: int, available: int) -> int:
    """Calibration images an attempt draws: the recipe's count times its factor, at most the training split."""
    return max(1, min(int(base_count * options.get("calibration_factor", 1)), available))


def edge_modules(model, outputs: int = 1) -> list[str]:
    """The modules a float island keeps in float: the first layer with weights (it sees the raw input's range) and
    the last `outputs` layers with weights (they write the model's outputs, where int8's error is not averaged away
    by later layers)."""
    names = [n for n, m in model.named_modules()
             if n and not list(m.children()) and getattr(m, "weight", None) is not None]
    if not names:
        return []
    return list(dict.fromkeys([names[0], *names[-max(1, outputs):]]))


def judge_against(reference_outputs, task, names, x, thresholds: dict | None = None):
    """A `judge` for climb: the attempt run on images `x` (the pipeline's batch; each runtime adapts it) and held to
    `reference_outputs` with parity's rule (pipeline.convert.scoring, parity mode)."""
    from pipeline import runtimes
    from pipeline.convert.scoring import Scorer

    scorer = Scorer(task, None, thresholds=thresholds, names=names)
    scorer.reference(reference_outputs)

    def judge(fmt: str):
        def run(path: Path, meta: dict):
            model = runtimes.load(fmt, path, meta, threads=0)
            return scorer.score(runtimes.predict_all_outputs(model, x, 32))
        return run

    return judge, scorer


def judge_for(data, task_name: str, seed: int, reference, samples: int = 128):
    """Everything a quantize stage needs to judge its attempts against the float model `reference` (an artifact):
    check images (training images drawn apart from the calibration sample's seed; the validation split stays for
    parity), the reference's outputs on them, the task. Returns (judge factory by format, scorer, labels available
    for NNCF's top-1 accuracy control)."""
    from pipeline import runtimes, tasks
    from pipeline.library import calibration

    x = calibration.sample(data, min(samples, len(data.train_x)), seed + 7919, "remedies")
    ref = runtimes.predict_all_outputs(runtimes.load(reference.format, reference.path, reference.meta, threads=0),
                                       x, 32)
    task = tasks.for_model(task_name, reference.meta, data.num_classes or None)
    judge, scorer = judge_against(ref, task, reference.meta.get("output_names"), x)
    return judge, scorer, task.name == "classification" and getattr(data, "train_y", None) is not None


def accuracy_control_data(data, seed: int, n: int, fmt: str, meta: dict):
    """Labelled training images for NNCF's accuracy control, as the model of (fmt, meta) takes them."""
    import numpy as np

    from pipeline import runtimes

    n = min(n, len(data.train_x))
    idx = np.random.default_rng(int(seed) + 1).choice(len(data.train_x), n, replace=False)
    return runtimes.adapt_input(fmt, meta, data.train_x[idx]), data.train_y[idx]
