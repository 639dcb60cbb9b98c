"""The optimizer end to end, as one plain function the `optimize` stage calls: `optimize(source, data, options, ...)`.

1. splits: a seeded share of the training split is held out as the search split (proxies, sensitivity); the search
   never sees the validation split, which judges the finalists' deployed models only;
2. the unmodified model's numbers, its logits on the training split (the distillation targets), the sensitivity of
   every channel group and removable block (cached steps);
3. the search (pipeline.optimize.search): pruned models, briefly distilled, judged by proxies;
4. the finalists distilled in full; each deployed in every int8 form the device runs, beside the unmodified model's
   own and the peers' defaults (pipeline.optimize.deploy); QAT where post-training int8 misses the budget;
5. all of them timed side by side (or on the device, or estimated), the fastest within every budget chosen
   (pipeline.optimize.choose), the front drawn and tabled;
6. optionally, the resolution study (pipeline.optimize.resolution): the chosen model at smaller inputs, shown apart,
   never chosen.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.optimize import choose, outcome, recover, resolution, search, surgery, trials
from pipeline.optimize.store import Store, data_digest


@dataclass
class Options:
    space: search.Space
    limits: search.Limits
    budgets: dict  # the judge's budgets: accuracy_drop, latency_ms, model_mb, ram_mb (None: not set)
    device: dict
    proxy: recover.Recipe
    final: recover.Recipe
    qat: recover.Recipe
    trials: int = 16
    population: int = 8
    seed: int = 0
    patience: int = 6
    max_minutes: float | None = None
    search_fraction: float = 0.15
    proxy_samples: int | None = None  # training images of a trial's short fine-tune (None: all)
    sensitivity_samples: int = 512
    sensitivity_ratio: float = 0.5
    strength: float = 0.6
    round_to: int | None = 8
    qat_when: str = "if_needed"  # if_needed | never | always
    finalists: int = 3
    calibration_samples: int = 128
    warmup: int = 10
    iterations: int = 50
    threads: int = 1  # timing threads on this host (the device's, capped to the host's cores)
    resolutions: list[int] = field(default_factory=list)  # smaller input sizes for the separate resolution study


def splits(data, fraction: float, seed: int) -> SimpleNamespace:
    """The training split cut into what fine-tuning trains on and the held-out search split (stratified, seeded)."""
    from pipeline.data._common import stratified_split

    tr, se = stratified_split(np.asarray(data.train_y), fraction, seed + 17)
    return SimpleNamespace(train_x=data.train_x[tr], train_y=data.train_y[tr], search_x=data.train_x[se],
                           search_y=data.train_y[se], val_x=data.val_x, val_y=data.val_y)


def _logits(store: Store, source_key: str, teacher, x: np.ndarray) -> np.ndarray:
    def make(out: Path) -> dict:
        np.save(out / "logits.npy", recover.teacher_logits(teacher, x))
        return {"shape": list(x.shape)}

    _, folder, _ = store.step("teacher_logits", {"model": source_key, "images": len(x)}, make)
    return np.load(folder / "logits.npy")


def _sensitivity(s: trials.Search, o: Options) -> dict:
    n = min(o.sensitivity_samples, len(s.split.search_x))
    x, y = s.split.search_x[:n], s.split.search_y[:n]
    score = lambda m: recover.accuracy(m, x, y)
    r, _, _ = s.store.step("sensitivity", {"model": s.source_key, "samples": n, "ratio": o.sensitivity_ratio,
                                           "round_to": o.round_to},
                           lambda out: surgery.sensitivity(s.teacher, s.shape, s.num_classes, score,
                                                           o.sensitivity_ratio, o.round_to, s.log))
    return r


def _reference(s: trials.Search) -> dict:
    from pipeline.library.training import complexity

    ref = {"val_accuracy": recover.accuracy(s.teacher, s.split.val_x, s.split.val_y),
           "search_accuracy": s.score(s.teacher), **complexity(s.teacher, s.shape)}
    if s.measured_here or not s.device.get("estimate_unit"):  # host proxies: their scale (the unmodified model, cached)
        from pipeline.optimize import timing

        r, _, _ = s.store.step("proxy_base", {"model": s.source_key, "threads": timing.PROXY_THREADS},
                               lambda out: timing.host_ratio(s.teacher, s.teacher, s.shape))
        ref["proxy_base_ms"] = r["reference_p50_ms"]
    return ref


def trial_identity(s: trials.Search) -> dict:
    """What decides a trial's result besides its parameters (the search's width is not part of it)."""
    return {"proxy": s.proxy.as_dict(), "seed": s.seed, "round_to": s.round_to, "strength": s.strength,
            "images": len(s.proxy_packed.train_x),
            "search": len(s.split.search_y), "measured_here": s.measured_here,
            "device": None if s.measured_here or not s.device.get("estimate_unit") else trials._device_id(s.device)}


def prepare(source, data, o: Options, store: Store, log) -> trials.Search:
    from pipeline.library import calibration
    from pipeline.models import load_torch

    teacher, spec = load_torch(source.path)  # (its weights keep requires_grad: torch-pruning traces autograd)
    teacher.eval()
    split = splits(data, o.search_fraction, o.seed)
    logits = _logits(store, source.key, teacher, split.train_x)
    packed = recover.packed(split, logits)
    s = trials.Search(store=store, teacher=teacher, spec=spec, source_key=source.key,
                      shape=list(source.meta["input_shape"]), num_classes=int(data.num_classes), split=split,
                      packed=packed, proxy_packed=recover.subset(packed, o.proxy_samples, o.seed),
                      calib=calibration.sample(SimpleNamespace(train_x=split.train_x), o.calibration_samples, o.seed,
                                               "optimize"),
                      sens={}, proxy=o.proxy, final=o.final, qat=o.qat, seed=o.seed, round_to=o.round_to,
                      strength=o.strength, device=o.device, measured_here=bool(o.device.get("measured_here")),
                      threads=o.threads, log=log, source_path=Path(source.path), source_meta=dict(source.meta))
    s.sens = _sensitivity(s, o)
    s.reference = _reference(s)
    return s


def proxy_reference(s: trials.Search) -> float:
    """What the proxy's drop is counted from: the unmodified model put through the same short distillation (cached).
    The teacher's own accuracy on the search split would be the wrong zero: the upstream training saw those images
    (only the optimizer's fine-tunes hold them out), and a short distillation moves any model; the same treatment
    without pruning leaves only what the pruning costs."""
    r, _, _ = trials.proxy(s, {"ratio": 0.0, "allocation": "uniform", "blocks": 0})
    s.reference["proxy_search_accuracy"] = r["accuracy"]
    s.log.info("proxy reference: the unmodified model after the proxy's distillation scores %.4f on the search split "
               "(%.4f before)", r["accuracy"], s.reference["search_accuracy"])
    return r["accuracy"]


def run_search(s: trials.Search, o: Options, store: Store, log) -> search.Outcome:
    """The search over this model's space, replaying first the trials earlier searches of the same identity finished."""
    space = search.Space(**{**o.space.__dict__, "max_blocks": min(o.space.max_blocks, len(s.sens["blocks"]))})
    log.info("search: %d trial(s) at most, NSGA-II population %d; reference top-1 %.4f (search split), %.4f "
             "(validation); %d channel groups, %d removable blocks", o.trials, o.population,
             s.reference["search_accuracy"], s.reference["val_accuracy"], len(s.sens["groups"]), len(s.sens["blocks"]))
    identity = trial_identity(s)
    base = proxy_reference(s)

    def evaluate(p: dict) -> dict:
        r = trials.evaluate(s, p)
        return {**r, "drop_vs_teacher": r["drop"], "drop": 100.0 * (base - r["accuracy"])}

    return search.run(evaluate, space, o.limits, o.trials, o.population, o.seed, o.patience,
                      o.max_minutes * 60 if o.max_minutes else None, log, replay=store.finished_trials(identity),
                      on_trial=lambda i, p: store.remember_trial(identity, i, p))


def optimize(source, data, o: Options, cache_root: Path | None, workdir: Path, log) -> dict[str, Any]:
    """Search, deploy, time and choose. `source`: the unmodified PyTorch artifact (with its cache key). Returns
    {chosen: the row (None when nothing is within the budgets), path: its copy in `workdir`, findings, files (written
    into `workdir`)}."""
    t0 = time.perf_counter()
    store = Store(cache_root, {"source": source.key, "data": data_digest(data)}, log)
    try:
        s = prepare(source, data, o, store, log)
        found = run_search(s, o, store, log)
        log.info("search stopped (%s) after %d trial(s) in %.0f s", found.stop_reason, len(found.trials),
                 found.seconds)
        picked = search.finalists(found.trials, o.finalists, o.limits)
        finals = [(t, *trials.final(s, t)) for t in picked]
        d = choose.decide(s, o, found, finals, workdir)
        d["resolution"] = resolution.study(s, o, d, o.resolutions)
        f = outcome.findings(d, s, o, store.accounting(), time.perf_counter() - t0)
        files = outcome.write(f, d, s, o, workdir)
        path = outcome.keep_chosen(d["chosen"], workdir) if d["chosen"] else None
        return {"chosen": d["chosen"], "path": path, "findings": f, "files": files}
    finally:
        store.close()
