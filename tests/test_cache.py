"""Runner + cache behaviour, with stub stages (the one place stubs are right: testing the runner itself)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline import app
from pipeline.core.artifacts import Artifact
from pipeline.core.cache import Cache
from pipeline.core.errors import StageError
from pipeline.stages.base import Stage, StageResult

CALLS: list[str] = []


@dataclass
class SourceConfig:
    value: int = 1
    fail: bool = False


class StubSource(Stage):
    type = "test_source"
    Config = SourceConfig
    produces = "torch"

    def run(self, ctx):
        CALLS.append(ctx.name)
        if ctx.params.fail:
            raise RuntimeError("boom")
        p = ctx.workdir / "model.bin"
        p.write_bytes(bytes([ctx.params.value]) * 100)
        return StageResult(Artifact(ctx.name, "torch", "fp32", p, {"input_shape": [1, 3, 8, 8]}))


@dataclass
class StepConfig:
    factor: int = 2
    fail: bool = False


class StubStep(Stage):
    type = "test_step"
    Config = StepConfig
    accepts = ("torch",)
    produces = "torch"
    min_inputs = max_inputs = 1

    def run(self, ctx):
        CALLS.append(ctx.name)
        if ctx.params.fail:
            raise RuntimeError("step exploded")
        data = ctx.input.path.read_bytes() * ctx.params.factor
        p = ctx.workdir / "model.bin"
        p.write_bytes(data)
        return StageResult(Artifact(ctx.name, "torch", "fp32", p, ctx.input.meta), metrics={"size": len(data)})


def run_stubs(cfg, **kw):
    return app.run(cfg, stages=[StubSource, StubStep], **kw).to_dict()


STAGES = {"a": {"type": "test_source"}, "b": {"type": "test_step", "inputs": ["a"]},
          "c": {"type": "test_step", "inputs": ["b"], "factor": 3}}


@pytest.fixture
def stub_cfg(make_cfg):
    def make(*overrides, stages=STAGES):
        cfg = make_cfg("recipe=tiny_int8", "tracking=none", *overrides)
        cfg.stages = OmegaConf.create(stages)
        return cfg
    CALLS.clear()
    return make


def statuses(summary):
    return {s["name"]: s["status"] for s in summary["stages"]}


def test_rerun_reuses_everything_and_says_why(stub_cfg):
    first = run_stubs(stub_cfg())
    assert statuses(first) == {"a": "ran", "b": "ran", "c": "ran"}
    assert all("first run" in s["reason"] for s in first["stages"])
    CALLS.clear()
    second = run_stubs(stub_cfg())
    assert statuses(second) == {"a": "reused", "b": "reused", "c": "reused"}
    assert CALLS == []
    assert all("unchanged" in s["reason"] for s in second["stages"])
    assert [s["cache_key"] for s in first["stages"]] == [s["cache_key"] for s in second["stages"]]


def test_changing_a_parameter_reruns_only_that_stage_and_descendants(stub_cfg):
    run_stubs(stub_cfg())
    CALLS.clear()
    stages = json.loads(json.dumps(STAGES))
    stages["b"]["factor"] = 5
    s = run_stubs(stub_cfg(stages=stages))
    assert statuses(s) == {"a": "reused", "b": "ran", "c": "ran"}
    reasons = {x["name"]: x["reason"] for x in s["stages"]}
    assert "params.factor 2 -> 5" in reasons["b"]
    assert "input 'b' changed" in reasons["c"]
    assert CALLS == ["b", "c"]


def test_force_and_disable(stub_cfg, outputs):
    run_stubs(stub_cfg())
    CALLS.clear()
    s = run_stubs(stub_cfg("cache.force=[b]"))
    assert statuses(s) == {"a": "reused", "b": "ran", "c": "ran"}
    assert "forced" in {x["name"]: x["reason"] for x in s["stages"]}["b"]
    CALLS.clear()
    s = run_stubs(stub_cfg("cache.enabled=false"))
    assert statuses(s) == {"a": "ran", "b": "ran", "c": "ran"}
    assert all("cache disabled" in x["reason"] for x in s["stages"])
    run_dir = Path(s["run_dir"])
    assert not (run_dir / ".nocache").exists()
    assert (run_dir / "artifacts" / "c" / "model.bin").stat().st_size == 100 * 2 * 3


def test_failure_keeps_finished_stages_and_resumes(stub_cfg, outputs):
    stages = json.loads(json.dumps(STAGES))
    stages["b"]["fail"] = True
    with pytest.raises(StageError) as e:
        run_stubs(stub_cfg(stages=stages))
    assert "stage 'b' (test_step) failed: RuntimeError: step exploded" in str(e.value)
    summary = json.loads(next((outputs / "runs").rglob("summary.json")).read_text())
    assert summary["status"] == "failed" and statuses(summary) == {"a": "ran", "b": "failed"}
    assert not list((outputs / "cache" / "tmp").iterdir())  # the failed stage's work dir is gone
    CALLS.clear()
    s = run_stubs(stub_cfg())  # fixed: a is reused, b and c run
    assert statuses(s) == {"a": "reused", "b": "ran", "c": "ran"}


def test_corrupt_entry_is_not_trusted(stub_cfg, outputs):
    s = run_stubs(stub_cfg())
    key_b = {x["name"]: x["cache_key"] for x in s["stages"]}["b"]
    f = outputs / "cache" / "entries" / key_b / "out" / "model.bin"
    f.write_bytes(b"garbage")
    assert Cache(outputs / "cache").lookup(key_b) is None
    CALLS.clear()
    s = run_stubs(stub_cfg())
    assert statuses(s)["b"] == "ran" and "integrity" in {x["name"]: x["reason"] for x in s["stages"]}["b"]


def test_library_version_is_part_of_the_key(stub_cfg, monkeypatch):
    from pipeline.core import codekey

    s1 = run_stubs(stub_cfg())
    monkeypatch.setattr(StubStep, "libraries", ("stub-dist",))
    real = codekey._version
    monkeypatch.setattr(codekey, "_version", lambda d: "999.0" if d == "stub-dist" else real(d))
    CALLS.clear()
    s2 = run_stubs(stub_cfg())
    assert statuses(s2) == {"a": "reused", "b": "ran", "c": "ran"}
    assert "library stub-dist (not used) -> 999.0" in {x["name"]: x["reason"] for x in s2["stages"]}["b"]
    assert s1["stages"][1]["cache_key"] != s2["stages"][1]["cache_key"]


def test_killed_work_dir_never_becomes_an_entry(tmp_path):
    cache = Cache(tmp_path)
    work = cache.workdir("k" * 64)
    (work / "out" / "half.bin").write_bytes(b"partial")
    # the process dies here: nothing was committed
    assert cache.lookup("k" * 64) is None
    entry = cache.commit("k" * 64, work, {"metrics": {}})
    assert cache.lookup("k" * 64).manifest["files"]["half.bin"]["size"] == 7
    assert entry.dir == tmp_path / "entries" / ("k" * 64)


def test_plan_preview_runs_nothing_and_says_what_the_cache_will_reuse(stub_cfg, capsys):
    run_stubs(stub_cfg())
    CALLS.clear()
    stages = {**STAGES, "c": {**STAGES["c"], "factor": 4}}
    rows = {r["task"]: r for r in app.preview(stub_cfg(stages=stages), stages=[StubSource, StubStep])}
    assert CALLS == []  # nothing ran
    assert rows["a"]["will"] == rows["b"]["will"] == "reuse"
    assert rows["c"]["will"] == "run" and "params.factor 3 -> 4" in rows["c"]["reason"]
    out = capsys.readouterr().out
    assert "test_step" in out and "params.factor 3 -> 4" in out
