"""The optimizer's search on a tiny model, in seconds: the budget is respected, the front is non-dominated, and a
resumed or widened search re-uses every trial it already made (steps come from the content-addressed cache). The stop
rules and the front are checked on their own with made-up trials (milliseconds)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from pipeline.optimize import front, search

LOG = logging.getLogger("test.optimize")
SIZE = 16


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A narrow MobileNetV2 trained briefly on digits at 16 px (one thread), saved as a zoo artifact."""
    import torch
    from tqdm.auto import tqdm

    from conftest import compose_cfg
    from pipeline import data as data_mod, models
    from pipeline.library import training
    from pipeline.core.artifacts import Artifact

    cfg = compose_cfg([f"model.input_size={SIZE}"])
    data = data_mod.load(cfg.data, SIZE)
    torch.manual_seed(0)
    spec = {"name": "mobilenet_v2", "num_classes": 10, "kwargs": {"width_mult": 0.35, "dropout": 0.0}}
    model = models.build_from_spec(spec)
    training.fit(model, data, training.TrainConfig(epochs=3, lr=0.02, threads=1, augment=False), 0, LOG, tqdm)
    path = models.save_torch(model.eval(), tmp_path_factory.mktemp("teacher"), spec)
    meta = {"input_shape": [1, 3, SIZE, SIZE], "num_classes": 10}
    return Artifact("train", "torch", "fp32", path, meta, key="teacher-key"), data


def _options(budget: float, trials: int = 5, ratio_max: float = 0.6):
    from pipeline.optimize import engine, recover

    kd = dict(batch_size=64, threads=1)
    return engine.Options(
        space=search.Space(0.0, ratio_max, 0.1, ("uniform", "sensitivity"), 4),
        limits=search.Limits(budget, proxy_slack=0.0), budgets={"accuracy_drop": budget}, device={"measured_here": True},
        proxy=recover.Recipe(1, 0.003, **kd), final=recover.Recipe(1, 0.003, **kd), qat=recover.Recipe(1, 1e-4, **kd),
        trials=trials, population=2, seed=0, patience=99, search_fraction=0.2, sensitivity_samples=64, round_to=None)


def _search(teacher, cache, o):
    from pipeline.optimize import engine, store

    source, data = teacher
    st = store.Store(cache, {"source": source.key, "data": store.data_digest(data)}, LOG)
    s = engine.prepare(source, data, o, st, LOG)
    return engine.run_search(s, o, st, LOG), st


BUDGET = 2.0


@pytest.fixture(scope="module")
def first(teacher, tmp_path_factory):
    cache = tmp_path_factory.mktemp("optimize") / "cache"
    return cache, *_search(teacher, cache, _options(BUDGET))


@pytest.mark.slow
def test_search_respects_the_budget_and_its_front_is_non_dominated(first):
    _, found, st = first
    assert len(found.trials) == 5 and st.accounting()["ran"] > 0
    for t in found.trials:  # a trial is feasible exactly when its proxy keeps the budget
        assert t["feasible"] == (t["drop"] <= BUDGET), t
    feasible = [t for t in found.trials if t["feasible"]]
    on_front = [t for t in feasible if t["front"]]
    assert all(not t["front"] for t in found.trials if not t["feasible"])
    for t in on_front:  # nothing feasible beats a front point on accuracy, latency and size at once
        assert not any(front.dominates(u, t) for u in feasible if u is not t)
    for t in feasible:  # and every feasible point off the front is beaten by one on it
        if not t["front"]:
            assert any(front.dominates(u, t) for u in on_front)
    assert len({t["params"]["ratio"] for t in found.trials}) > 1  # the sampler explored


def test_a_resumed_or_widened_search_reuses_every_finished_trial(teacher, first):
    cache, found, st1 = first
    made = {s["key"] for s in st1.ran if s["kind"] == "proxy"}
    again, st2 = _search(teacher, cache, _options(BUDGET))  # resumed: the same trials, nothing made again
    assert not [s for s in st2.ran if s["kind"] in ("proxy", "proxy_latency", "sensitivity", "teacher_logits")]
    assert [(t["params"], t["accuracy"], t["latency_ms"]) for t in again.trials] == \
        [(t["params"], t["accuracy"], t["latency_ms"]) for t in found.trials]
    assert st2.accounting()["saved_seconds"] > 0
    # widened (a wider range, more trials): every finished trial is replayed from the cache first, then it goes on
    wider, st3 = _search(teacher, cache, _options(BUDGET, trials=7, ratio_max=0.8))
    assert [t["params"] for t in wider.trials[:5]] == [t["params"] for t in found.trials]
    assert {s["key"] for s in st3.reused if s["kind"] == "proxy"} >= made
    assert len(wider.trials) == 7


def _fake(values: dict):
    """An evaluate() that returns made-up proxies from the parameters (no model)."""
    def evaluate(p):
        acc = 0.95 - 0.2 * p["ratio"] - 0.01 * p["blocks"]
        return {"accuracy": acc, "drop": 100 * (0.95 - acc), "latency_ms": 10.0 * (1 - p["ratio"]) - 0.5 * p["blocks"],
                "size_mb": 4.0 * (1 - p["ratio"]), **values}
    return evaluate


def test_stop_rules():
    space = search.Space(0.0, 0.8, 0.1, ("uniform",), 4)
    met = search.run(_fake({}), space, search.Limits(5.0, 0.0, latency_ms=9.5, stop_when_met=True), 30, 4, 0, 99,
                     None, LOG)
    assert met.stop_reason.startswith("budget met") and met.trials[-1]["feasible"]
    assert len(met.trials) < 30 and not any(t["feasible"] for t in met.trials[:-1])
    quiet = search.run(_fake({}), space, search.Limits(2.0, 0.0), 40, 4, 0, 3, None, LOG)
    assert quiet.stop_reason.startswith("converged") and len(quiet.trials) < 40
    first = next(i for i, t in enumerate(quiet.trials) if t["feasible"])
    assert len(quiet.trials) >= max(first + 1 + 3, 4)  # patience starts with the first feasible trial
    never = search.run(_fake({}), space, search.Limits(-1.0, 0.0), 12, 4, 0, 3, None, LOG)  # nothing can be feasible
    assert never.stop_reason == "trial budget: 12 trials"
    capped = search.run(_fake({}), space, search.Limits(5.0, 0.0), 6, 4, 0, 99, None, LOG)
    assert capped.stop_reason == "trial budget: 6 trials" and len(capped.trials) == 6
    timed = search.run(_fake({}), space, search.Limits(5.0, 0.0), 6, 4, 0, 99, 0.0, LOG)
    assert timed.stop_reason.startswith("time budget") and not timed.trials


def test_front_and_finalists():
    pts = [{"accuracy": a, "latency_ms": l, "size_mb": s} for a, l, s in
           [(0.9, 1.0, 1.0), (0.8, 2.0, 1.0), (0.95, 3.0, 2.0), (0.9, 1.0, 1.0), (0.7, 0.5, 3.0)]]
    assert front.non_dominated(pts) == [0, 2, 3, 4]  # 1 is beaten by 0; 0 and 3 tie and both stay
    trials = [{**p, "number": i, "key": f"k{i if i != 3 else 0}", "front": i in (0, 2, 3, 4)} for i, p in enumerate(pts)]
    picked = search.finalists(trials, 2)
    assert [t["number"] for t in picked] == [4, 2]  # the fastest and the most accurate; the repeat of 0 once
    assert [t["number"] for t in search.finalists(trials, 5)] == [4, 0, 2]
    none = [{**t, "front": False} for t in trials]  # none feasible: the same spread over the front of all trials
    assert [t["number"] for t in search.finalists(none, 2)] == [4, 2]


def test_near_misses_fill_the_free_finalist_places():
    def trial(n, drop, latency, size=1.0, feasible=False):
        return {"number": n, "key": f"k{n}", "accuracy": 0.9 - drop / 100, "drop": drop, "latency_ms": latency,
                "size_mb": size, "feasible": feasible, "front": feasible}

    limits = search.Limits(1.0, 4.0, model_mb=2.0)
    trials = [trial(0, 0.9, 5.0, feasible=True),
              trial(1, 5.3, 4.0),             # misses accuracy by 0.3, faster: the first near miss
              trial(2, 7.0, 4.5),             # misses by 2.0, faster: the second
              trial(3, 5.2, 5.5),             # misses by 0.2 but slower than the feasible trial: never
              trial(4, 9.5, 3.0),             # misses by 4.5, beyond the slack again: never
              trial(5, 5.1, 3.5, size=3.0),   # misses the size budget too: never
              trial(6, 5.3, 4.0)]             # the same model as 1 suggested again (another key, closer miss ties)
    trials[6]["key"] = "k1"
    picked = search.finalists(trials, 3, limits)
    assert [t["number"] for t in picked] == [1, 2, 0]  # by proxy latency; 1 and its repeat 6 once
    assert [t["number"] for t in search.finalists(trials, 1, limits)] == [0]  # no free place
    assert [t["number"] for t in search.finalists(trials, 3)] == [0]  # without limits: the feasible front only
    none = [{**t, "feasible": False, "front": False} for t in trials]
    assert all(not t["feasible"] for t in search.finalists(none, 3, limits))  # nothing feasible: the old spread
