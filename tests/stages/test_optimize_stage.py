"""recipe=optimize end to end on a tiny model (24 px digits, ONNX Runtime and OpenVINO only, one thread): the chosen
model is the run's judged artifact, its findings hold speedup_vs_peer_default (timed side by side) and accuracy_drop
(against the unmodified fp32 model), the front is written, an identical run reuses the stage, and a widened search
re-uses every trial of the first one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose_cfg
from pipeline.library.candidates import PEER_DEFAULT_INT8

pytestmark = pytest.mark.slow  # trains a tiny teacher, searches, deploys and times: minutes on 2 busy cores

TINY = ["recipe=optimize", "device=host", "device.formats=[onnx,openvino]", "tracking=none", "model.input_size=24",
        "model.width_mult=0.5", "stages.train.epochs=6", "stages.train.lr=0.01", "stages.train.threads=1",
        "stages.optimize.trials=4", "stages.optimize.population=2", "stages.optimize.proxy_epochs=2",
        "stages.optimize.final_epochs=2", "stages.optimize.finalists=1", "stages.optimize.threads=1",
        "stages.optimize.iterations=20", "stages.optimize.warmup=2", "stages.optimize.sensitivity_samples=64",
        "stages.parity.min_top1_agreement=0.5", "~stages.profile", "budget.accuracy_drop=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pipeline.app import run

    out = tmp_path_factory.mktemp("optimize") / "outputs"
    first = run(compose_cfg(TINY, out)).to_dict()
    again = run(compose_cfg(TINY, out)).to_dict()
    wider = run(compose_cfg([*TINY, "stages.optimize.trials=6", "stages.optimize.ratio_max=0.8"], out)).to_dict()
    return first, again, wider


def _row(summary, name):
    return next(a for a in summary["artifacts"] if a["name"] == name)


def test_the_chosen_model_is_judged_with_its_speedup_and_drop(runs):
    first, _, _ = runs
    assert first["status"] == "success" and first["gate"]["artifact"] == "optimize"
    row = _row(first, "optimize")
    o = row["optimization"]
    assert o["speedup_vs_peer_default"] > 0 and len(o["speedup_vs_peer_default_interval"]) == 2
    assert o["peer_default"].split("/")[0] == "unmodified" and o["peer_default"].split("/")[1] in PEER_DEFAULT_INT8
    assert o["accuracy_drop"] <= 2.0 and o["latency_source"] == "host"
    # the same validation images as the evaluate stage, in the same runtime: the same top-1
    assert row["accuracy"] == pytest.approx(o["accuracy"], abs=1e-9)
    ok = [r for r in o["front"] if r.get("within_budget")]
    chosen = next(r for r in o["front"] if r.get("chosen"))
    assert chosen["latency_ms"] == min(r["latency_ms"] for r in ok)  # the fastest within every budget
    assert all(r["drop"] <= 2.0 for r in ok)
    folder = Path(first["run_dir"]) / Path(row["path"]).parent
    for name in ("optimize.md", "optimize_front.png", "optimize.json"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "optimize.json").read_text())["chosen"] == o["chosen"]
    assert o["lineage"]["candidate"] == chosen["name"]


def test_an_identical_run_reuses_and_a_widened_search_reuses_every_trial(runs):
    first, again, wider = runs
    assert {s["name"]: s["status"] for s in again["stages"]}["optimize"] == "reused"
    trials = first["stages"][[s["name"] for s in first["stages"]].index("optimize")]["metrics"]["trials"]
    o = _row(wider, "optimize")["optimization"]["search"]
    assert o["trials"] >= trials
    assert o["cache"]["by_kind"]["proxy"]["reused"] >= 1 and o["cache"]["saved_seconds"] > 0
    first_params = [t["params"] for t in _row(first, "optimize")["optimization"]["search"]["trial_table"]]
    assert [t["params"] for t in o["trial_table"][:len(first_params)]] == first_params
    assert all(t["step"] == "reused" for t in o["trial_table"][:len(first_params)])
