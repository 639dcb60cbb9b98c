"""The registry against a real MLflow store: one version per model file (a re-run says "same as vN"), each version
linked to its run's LoggedModel, no version for a model that does not beat chance for its task, and nothing from a
recipe that turns registering off (the smoke test)."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import compose_cfg
from rel_helpers import compose_stub, outcome
from pipeline.report import objective
import summaries
from pipeline.report.schema import Summary
from pipeline.tracking import registry, tracker as tracking
from pipeline.core.artifacts import Artifact
from pipeline.core.runner import TaskRecord

FAST = ("stages.a.seconds=0", "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0")


def _cfg(min_score=None):
    return OmegaConf.create({"device": {"name": "pixel7", "display_name": "Pixel 7"},
                             "objective": {"metrics": ["accuracy"]}, "gate": {"artifact": None},
                             "registry": {"enabled": True, "name": None, "min_score": min_score}})


def _run(outputs: Path, cfg, accuracy, data: bytes = b"\0" * 1000, task="classification", samples=None,
         classes=None, logged_model=False):
    """One pipeline-shaped run in the store (a parent run, a nested `quantize` run holding the file) registered."""
    tracker = tracking.Tracker(tracking.local_uri(outputs), "demo", outputs / "mlartifacts")
    tracker.start("demo@pixel7", {}, {"recipe": "demo"})
    out = outputs / f"out-{tracker.run_id}"
    out.mkdir(parents=True)
    (out / "model.int8.onnx").write_bytes(data)
    rec = TaskRecord("quantize", "quantize", "quantize_onnx", ["export"], status="ran",
                     artifact=Artifact("quantize", "onnx", "int8", out / "model.int8.onnx"))
    rid = tracker.log_stage(rec, out)
    from pipeline.core.cache import file_sha256

    sha = file_sha256(out / "model.int8.onnx")
    row = summaries.row("quantize", "onnx", "int8", len(data), accuracy, cache_key=f"key-{sha}", sha256=sha)
    stages = []
    if samples:
        stages.append({"name": "evaluate[quantize]", "type": "evaluate", "inputs": ["quantize"], "status": "ran",
                       "seconds": 1.0, "cache_key": "k", "reason": "", "metrics": {"samples": samples,
                                                                                "classes": classes}})
    mlflow = {"run_id": tracker.run_id}
    if logged_model:
        lm = tracker.client.create_logged_model(tracker.experiment_id, name="demo-quantize", source_run_id=rid)
        mlflow["logged_models"] = {"quantize": lm.model_id}
    summary = Summary.from_dict(summaries.summary([row], task={"name": task}, stages=stages, mlflow=mlflow))
    summary.objective = objective.summarize(summary, cfg)
    result = registry.register(tracker, summary, cfg, outputs)
    tracker.end("FINISHED")
    return result, summary


def test_the_same_file_is_registered_once_and_linked_to_its_logged_models(tmp_path):
    outputs = tmp_path / "outputs"
    client = MlflowClient(tracking.local_uri(outputs))
    r1, s1 = _run(outputs, _cfg(), 0.9, logged_model=True)
    r2, s2 = _run(outputs, _cfg(), 0.9, logged_model=True)  # a re-run: the same bytes
    r3, _ = _run(outputs, _cfg(), 0.9)
    assert r1["registered"] and r1["version"] == "1" and "same_as" not in r1
    assert r2["registered"] and r2["same_as"] == "1" and r2["version"] == "1" and "same as v1" in r2["reason"]
    assert r3["same_as"] == "1"
    assert [v.version for v in client.search_model_versions("name='demo-pixel7'")] == [1]
    mv = client.get_model_version("demo-pixel7", "1")
    assert mv.tags["logged_model_id"] == s1.mlflow["logged_models"]["quantize"]
    for s in (s1, s2):  # both runs' LoggedModels say which version they are (MLflow's own tag, read by its UI)
        lm = client.get_logged_model(s.mlflow["logged_models"]["quantize"])
        assert lm.tags["mlflow.modelVersions"] == '[{"name": "demo-pixel7", "version": 1}]'
    r4, _ = _run(outputs, _cfg(), 0.95, data=b"\1" * 1000)  # another file: a new version
    assert r4["version"] == "2" and r4["champion_moved"]


@pytest.mark.parametrize("accuracy,samples,moved", [(0.10, 200, None), (0.13, 50, None), (0.30, 200, True)],
                         ids=["at chance", "within noise", "above chance"])
@pytest.mark.slow
def test_a_classifier_must_beat_chance(tmp_path, accuracy, samples, moved):
    outputs = tmp_path / "outputs"
    r, _ = _run(outputs, _cfg(), accuracy, samples=samples, classes=10)
    if moved is None:
        assert not r["registered"] and "does not beat chance" in r["reason"] and "10 classes" in r["reason"], r
        assert MlflowClient(tracking.local_uri(outputs)).search_registered_models() == []
    else:
        assert r["registered"] and r["champion_moved"] is moved


def test_detector_and_segmenter_floors(tmp_path):
    r, _ = _run(tmp_path / "a", _cfg(), 0.03, task="detection")
    assert not r["registered"] and "mAP 0.05" in r["reason"]
    r, _ = _run(tmp_path / "b", _cfg(), 0.08, task="segmentation", samples=40, classes=11)
    assert not r["registered"] and "constant prediction among 11 classes" in r["reason"]
    r, _ = _run(tmp_path / "c", _cfg(min_score=0.02), 0.03, task="detection")  # a stated floor
    assert r["registered"] and r["champion_moved"]


def test_unmeasured_task_metric_is_never_champion(tmp_path):
    r, _ = _run(tmp_path / "outputs", _cfg(), None)
    assert r["registered"] and not r["champion_moved"] and "cannot be shown to beat chance" in r["reason"]


def test_smoke_recipe_registers_nothing(tmp_path):
    assert compose_cfg(["recipe=tiny_int8"], tmp_path).registry.enabled is False
    outputs = tmp_path / "outputs"
    code, msg, summary = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=local", *FAST,
                                              "registry.enabled=false"))
    assert code == 0, msg
    assert summary["registry"] == {"registered": False, "reason": summary["registry"]["reason"]}
    assert "registry.enabled=false" in summary["registry"]["reason"]
    assert MlflowClient(tracking.local_uri(outputs)).search_registered_models() == []


def test_rerunning_a_recipe_reuses_its_version(tmp_path):
    """End to end: the second run of the same recipe reuses every stage, so its model is the same file."""
    outputs = tmp_path / "outputs"
    cfg = lambda: compose_stub(outputs, "recipe=stub_chain", "tracking=local", *FAST)
    code, msg, first = outcome(cfg())
    assert code == 0, msg
    code, msg, second = outcome(cfg())
    assert code == 0, msg
    assert first["registry"]["version"] == "1" and second["registry"]["same_as"] == "1"
    client = MlflowClient(tracking.local_uri(outputs))
    assert [v.version for v in client.search_model_versions("name='stub_chain-host'")] == [1]
    lm = client.get_logged_model(second["mlflow"]["logged_models"][second["registry"]["artifact"]])
    assert '"version": 1' in lm.tags["mlflow.modelVersions"]


@pytest.mark.bad_input
def test_a_registered_model_name_that_would_break_the_search_is_refused(tmp_path):
    import reliability_stubs
    from pipeline import app
    from pipeline.core.errors import ConfigError

    cfg = compose_stub(tmp_path / "outputs", "recipe=stub_chain")
    cfg.registry.name = "it's"  # (a YAML file can say it; Hydra's command line would want it quoted)
    with pytest.raises(ConfigError, match="registry.name: \"it's\" cannot name a registered model"):
        app.prepare(cfg, stages=reliability_stubs.STAGES)


@pytest.mark.slow
def test_two_processes_registering_the_same_file_make_one_version(tmp_path):
    """Two jobs of a sweep that judge the same file finish at once: the check and the creation are one step under
    the registry's lock."""
    import subprocess
    import sys

    from conftest import ROOT

    outputs = tmp_path / "outputs"
    _run(outputs, _cfg(), 0.9, data=b"\2" * 10)  # the store exists before the race (its creation is serialised anyway)
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path[:0] = {[str(here), str(here.parent), str(ROOT)]!r}\n"
            f"from pathlib import Path\nimport test_registry_once as t\n"
            f"r, _ = t._run(Path({str(outputs)!r}), t._cfg(), 0.95)\nprint('RESULT', r.get('version'), r.get('same_as'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    results = sorted(line.split()[1:] for o in outs for line in o.splitlines() if line.startswith("RESULT"))
    assert results == [["2", "2"], ["2", "None"]], results  # one made v2, the other found it
    assert len(MlflowClient(tracking.local_uri(outputs)).search_model_versions("name='demo-pixel7'")) == 2
