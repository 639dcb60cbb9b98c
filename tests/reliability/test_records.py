"""Records you can trust: a cache entry is checked whole (its metadata too), the registry holds each model once and
only champions that beat chance, sweeps and runs never share a folder, and a signal at any moment ends the run with
a message, the right MLflow status and a whole summary.json or none. Stub stages where the real models add nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from rel_helpers import cache_state, compose_stub, outcome

FAST = ("stages.a.seconds=0", "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0")


def _chain(outputs: Path, *extra: str):
    return outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", *FAST, *extra))


def _verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.verify", *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _entry(outputs: Path, summary: dict, stage: str) -> Path:
    key = next(s["cache_key"] for s in summary["stages"] if s["name"] == stage)
    return outputs / "cache" / "entries" / key


@pytest.mark.parametrize("field", ["metrics", "about", "info", "components", "created"])
def test_edited_entry_metadata_is_a_miss_that_names_the_field(tmp_path, field):
    """A flipped number in entry.json (a metric, a finding such as accuracy ...) is not believed: the read says which
    entry and which field, the stage runs again, and `pipeline.verify` reports the same before the re-run."""
    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    task = "report[b]"
    entry = _entry(outputs, first, task)
    manifest = json.loads((entry / "entry.json").read_text())
    if field == "metrics":
        manifest["metrics"]["bytes"] = 1.0
    elif field == "about":
        manifest["about"]["b"]["bytes"] = 7
    elif field == "info":
        manifest["info"]["planted"] = "x"
    elif field == "components":
        manifest["components"]["params"]["seconds"] = 99.0
    else:
        manifest["created"] = 0
    (entry / "entry.json").chmod(0o644)
    (entry / "entry.json").write_text(json.dumps(manifest))

    v = _verify(outputs / "cache")
    assert v.returncode == 1 and entry.name[:16] in v.stdout and repr(field) in v.stdout, v.stdout
    run_dir = Path(first["run_dir"])
    v = _verify(run_dir)  # the run folder's check includes the entries its stages used
    assert v.returncode == 1 and task in v.stdout and repr(field) in v.stdout, v.stdout

    code, msg, second = _chain(outputs)
    assert code == 0, msg
    rec = {s["name"]: s for s in second["stages"]}
    assert rec[task]["status"] == "ran"
    assert "failed its integrity check" in rec[task]["reason"] and repr(field) in rec[task]["reason"]
    assert {rec[n]["status"] for n in "abcd"} == {"reused"}
    assert second["artifacts"] and cache_state(outputs)["corrupt"] == []
    assert _verify(outputs / "cache").returncode == 0


def test_edited_metrics_never_reach_the_summary(tmp_path):
    """The measured number comes back after the rebuild, not the edited one."""
    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    entry = _entry(outputs, first, "report[d]")
    manifest = json.loads((entry / "entry.json").read_text())
    real = manifest["metrics"]["bytes"]
    manifest["metrics"]["bytes"] = real * 10
    (entry / "entry.json").chmod(0o644)
    (entry / "entry.json").write_text(json.dumps(manifest))
    code, msg, second = _chain(outputs)
    assert code == 0, msg
    assert {s["name"]: s for s in second["stages"]}["report[d]"]["metrics"]["bytes"] == real


def test_edited_summary_json_is_reported_by_verify(tmp_path):
    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    run_dir = Path(first["run_dir"])
    assert _verify(run_dir).returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["status"] = "success" if summary["status"] != "success" else "failed"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    v = _verify(run_dir)
    assert v.returncode == 1 and "summary.json was edited" in v.stdout, v.stdout
    assert _verify(outputs).returncode == 1  # an outputs folder: its cache and every run folder
    assert _verify(tmp_path / "nowhere").returncode == 2
