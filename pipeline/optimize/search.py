"""The search: Optuna's NSGA-II (multi-objective, constrained) over depth, channel pruning ratio and its allocation,
each trial judged by cheap proxies: a short distillation on the training split, accuracy on held-out training images
(the search split), latency from a side-by-side ratio on this host or the device estimate, size from the parameters.

Optuna 2.10 (what hydra-optuna-sweeper 1.3 pins) is driven directly with ask/tell: its NSGAIISampler takes
`constraints_func` (constrained domination: a feasible trial beats any infeasible one). The constraints are the
budgets: accuracy drop <= budget + `proxy_slack` (a short fine-tune recovers less than the final one), int8 size <=
model_mb, latency <= latency_ms (when a latency budget is set).

Stop rule: the trial budget, the time budget, or the first of
  - budget met: a feasible trial meets a latency budget the user set (budget.latency_ms; a device's default budget
    constrains the search but does not end it),
  - converged: once a trial is feasible, `patience` trials in a row added nothing to the feasible Pareto front (after
    one population).
The sampler is seeded and every trial's steps come from the cache; a search first replays the trials earlier searches
finished (pipeline.optimize.store's index) where they fit its space, so a resumed or widened search (more trials, a
wider range) re-uses every finished trial for free and then continues.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.optimize import front as front_mod

ALLOCATIONS = ("uniform", "sensitivity")


@dataclass(frozen=True)
class Space:
    ratio_min: float = 0.0
    ratio_max: float = 0.75
    ratio_step: float = 0.05
    allocations: tuple[str, ...] = ALLOCATIONS
    max_blocks: int = 0  # removable residual blocks the search may take out (0: depth is not searched)


@dataclass
class Limits:
    accuracy_drop: float  # points, against the unmodified model on the same images
    proxy_slack: float = 1.0  # points added to the drop budget for a short fine-tune's proxy
    model_mb: float | None = None
    latency_ms: float | None = None
    stop_when_met: bool = False  # the user set the latency budget: the first feasible trial ends the search


@dataclass
class Outcome:
    trials: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    seconds: float = 0.0


def suggest(trial, space: Space) -> dict[str, Any]:
    ratio = trial.suggest_float("ratio", space.ratio_min, space.ratio_max, step=space.ratio_step)
    allocation = trial.suggest_categorical("allocation", list(space.allocations))
    blocks = trial.suggest_int("blocks", 0, space.max_blocks) if space.max_blocks > 0 else 0
    return {"ratio": round(float(ratio), 4), "allocation": allocation, "blocks": int(blocks)}


def constraints(t: dict, limits: Limits) -> list[float]:
    """<= 0 where a budget is kept (Optuna's convention)."""
    out = [t["drop"] - (limits.accuracy_drop + limits.proxy_slack)]
    out.append(t["size_mb"] - limits.model_mb if limits.model_mb else -1.0)
    out.append(t["latency_ms"] - limits.latency_ms if limits.latency_ms else -1.0)
    return out


def mark_front(trials: list[dict]) -> None:
    feasible = [t for t in trials if t["feasible"]]
    keep = {feasible[i]["number"] for i in front_mod.non_dominated(feasible)}
    for t in trials:
        t["front"] = t["number"] in keep


def fits(params: dict, space: Space) -> bool:
    """A finished trial's parameters lie in `space` (on its grid): it can be replayed there."""
    steps = (params["ratio"] - space.ratio_min) / space.ratio_step
    return (space.ratio_min - 1e-9 <= params["ratio"] <= space.ratio_max + 1e-9 and abs(steps - round(steps)) < 1e-6
            and params["allocation"] in space.allocations and params["blocks"] <= space.max_blocks)


def run(evaluate: Callable[[dict], dict], space: Space, limits: Limits, n_trials: int, population: int, seed: int,
        patience: int, max_seconds: float | None, log, replay: list[dict] = (), on_trial=None) -> Outcome:
    """`evaluate(params) -> {accuracy, drop, latency_ms, size_mb, ...}` (cached by the caller). `replay`: parameters
    of trials finished before, tried first where they fit the space (their steps come from the cache); `on_trial(number,
    params)` hears of each finished trial. Returns every trial with its proxies, feasibility and front membership, and why the
    search stopped."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constraints_func is "experimental" in 2.10
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed,
                                                constraints_func=lambda ft: ft.user_attrs["constraints"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for params in [p for p in replay if fits(p, space)][:n_trials]:
        study.enqueue_trial({"ratio": params["ratio"], "allocation": params["allocation"],
                             **({"blocks": params["blocks"]} if space.max_blocks > 0 else {})})
    out, t0, quiet = Outcome(), time.perf_counter(), 0
    for i in range(n_trials):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            out.stop_reason = f"time budget: {max_seconds / 60:.0f} min spent after {i} trial(s)"
            break
        trial = study.ask()
        params = suggest(trial, space)
        r = {"number": i, "params": params, **evaluate(params)}
        cons = constraints(r, limits)
        r["feasible"] = all(c <= 0 for c in cons)
        trial.set_user_attr("constraints", cons)
        study.tell(trial, [r["accuracy"], r["latency_ms"], r["size_mb"]])
        if on_trial is not None:
            on_trial(i, params)
        before = {t["number"] for t in out.trials if t.get("front")}
        out.trials.append(r)
        mark_front(out.trials)
        added = r.get("front") and r["number"] not in before
        # patience counts only once something is feasible: until then the constrained sampler is still finding the
        # feasible region, which is progress of its own
        quiet = 0 if added or not any(t["feasible"] for t in out.trials) else quiet + 1
        log.info("trial %d %s: top-1 %.4f (drop %.2f), %.3f ms, %.2f MB, %s%s [%s]", i, params, r["accuracy"],
                 r["drop"], r["latency_ms"], r["size_mb"], "feasible" if r["feasible"] else "misses a budget",
                 ", on the front" if r.get("front") else "", r.get("step", ""))
        if limits.stop_when_met and limits.latency_ms and r["feasible"]:
            out.stop_reason = f"budget met by trial {i} ({r['latency_ms']:.3f} ms <= {limits.latency_ms:g} ms)"
            break
        if quiet >= patience and i + 1 >= population:
            out.stop_reason = f"converged: {patience} trials in a row added nothing to the feasible front"
            break
    else:
        out.stop_reason = f"trial budget: {n_trials} trials"
    out.seconds = time.perf_counter() - t0
    return out


def finalists(trials: list[dict], k: int, limits: Limits | None = None) -> list[dict]:
    """Up to k trials of the feasible front for the full fine-tune: the fastest, the most accurate and evenly between
    (by proxy latency). With no feasible trial (a proxy too short to recover within the slack), the same spread over
    the front of all trials: the full fine-tune and the validation split then say what each keeps.

    Where the feasible front holds fewer than k trials, `limits` given, the free places go to near misses: trials
    faster (by proxy) than every trial picked, which kept every other budget and missed the accuracy one by at most
    its slack again, the closest miss first. The proxy ranks, the full distillation decides: a finalist that is still
    outside the budget on the validation split is shown and never chosen."""
    def unique(ts):  # a trial the sampler suggested again is the same model (the same cached steps)
        return list({t.get("key", t["number"]): t for t in reversed(ts)}.values())[::-1]

    pool = [t for t in trials if t.get("front")]
    if not pool:
        everyone = unique(trials)
        pool = [everyone[i] for i in front_mod.non_dominated(everyone)]
    front = sorted(unique(pool), key=lambda t: (t["latency_ms"], t["number"]))
    if len(front) > k:
        picks = sorted({round(j * (len(front) - 1) / (k - 1)) for j in range(k)}) if k > 1 else [0]
        return [front[j] for j in picks]
    if limits is None or not any(t.get("front") for t in trials):  # no feasible front: nothing is a near miss of it
        return front
    taken = {t.get("key", t["number"]) for t in front}
    near = []
    for t in unique(trials):
        acc, *others = constraints(t, limits)  # by how much each budget is kept (<= 0) or missed
        if (t.get("key", t["number"]) not in taken and 0 < acc <= limits.proxy_slack and all(c <= 0 for c in others)
                and t["latency_ms"] < front[0]["latency_ms"]):
            near.append((acc, t["number"], t))
    return sorted(front + [t for *_, t in sorted(near)[:k - len(front)]], key=lambda t: (t["latency_ms"], t["number"]))
