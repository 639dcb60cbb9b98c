"""The code part of a key on real edits: a copy of the package is planned, a file of it edited, and the tasks' keys
compared (pipeline.core.codekey). One subprocess, a few seconds."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import ROOT

PROBE = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd() / "tests"))
from conftest import compose_cfg
from pipeline.app import prepare
from pipeline.core import codekey
from pipeline.core.cache import Cache
from pipeline.core.runner import Runner

def keys():
    for f in (codekey.parse, codekey.closure):
        f.cache_clear()
    cfg, plan = prepare(compose_cfg(["recipe=tiny_int8", "device=host", "tracking=none"], Path("outputs")))
    runner = Runner(plan, cfg, Cache(Path("outputs") / "cache"), Path("outputs"), None)
    rows = runner.preview()
    for task in plan.tasks:  # what a run remembers, so that the next preview says what changed
        runner.cache.remember(plan.recipe, task.name, runner.components(task))
    return {r["task"]: (r["key"], r["reason"]) for r in rows}

out = {"before": keys()}
for rel in sys.argv[1:]:
    p = Path("pipeline") / rel
    p.write_text(p.read_text() + "\n# edited\n")
    out[rel] = keys()
print(json.dumps(out))
"""


def test_editing_a_file_changes_exactly_the_keys_of_the_tasks_that_reach_it(tmp_path):
    for part in ("pipeline", "conf", "recipes", "tests"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "outputs"))
    edits = ["core/console.py", "models/mobilenet_v2.py", "tasks/classification.py", "runtimes/coreml_rt.py"]
    proc = subprocess.run([sys.executable, "-c", PROBE, *edits], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    changed = {}
    prev = out["before"]
    for rel in edits:
        changed[rel] = {t for t in prev if out[rel][t][0] != prev[t][0]}
        prev = out[rel]
    assert changed["core/console.py"] == set()  # where output goes changes no result
    assert {"train", "export", "quantize"} <= changed["models/mobilenet_v2.py"]  # ... and everything downstream
    assert {"evaluate[export]", "evaluate[quantize]"} <= changed["tasks/classification.py"]
    assert "benchmark" not in changed["tasks/classification.py"] or "train" in changed["tasks/classification.py"]
    assert changed["runtimes/coreml_rt.py"] == set()  # no task of this recipe handles a Core ML model
    # the reason names the file
    assert out["models/mobilenet_v2.py"]["train"][1] == "changed since last run: code changed: models/mobilenet_v2.py"
