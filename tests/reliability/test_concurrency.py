"""Four pipeline processes on one cache and one SQLite MLflow store: no corruption, no lost run, each stage key
computed once (the others wait on the key's lock and reuse the entry)."""
from __future__ import annotations

import collections
import json
import os
import subprocess

import pytest

from conftest import ROOT
from rel_helpers import cache_state, mlflow_runs, stub_cmd

PROCESSES = 4


@pytest.mark.slow
def test_four_processes_share_one_cache_and_store(tmp_path, reliability_results):
    outputs = tmp_path / "outputs"
    log = tmp_path / "computed.log"
    env = {**os.environ, "RELIABILITY_COMPUTE_LOG": str(log)}
    procs = []
    for i in range(PROCESSES):
        # a and b are shared by all four; c (and what reads it) differs between the two halves
        cmd = stub_cmd("recipe=stub_chain", f"paths.outputs={outputs}", "stages.a.seconds=2",
                       f"stages.c.factor={3 + i % 2}")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=env))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0] * PROCESSES, "\n\n".join(o[-2000:] for o in outs)

    summaries = [json.loads(p.read_text()) for p in (outputs / "runs").rglob("summary.json")]
    assert len(summaries) == PROCESSES and all(s["status"] == "success" for s in summaries)
    used_keys = {st["cache_key"] for s in summaries for st in s["stages"]}
    computed = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    assert {k[:16] for k in used_keys} == set(computed)
    assert all(n == 1 for n in computed.values()), computed
    assert len(used_keys) == 12  # a, b, report[a], report[b] + 2 x (c, d, report[c], report[d])

    state = cache_state(outputs)
    assert state["corrupt"] == [] and state["tmp"] == []
    assert used_keys <= set(state["valid"])

    runs = mlflow_runs(outputs)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_id for r in parents) == sorted(s["mlflow"]["run_id"] for s in summaries)
    assert [r.info.status for r in parents] == ["FINISHED"] * PROCESSES
    for p in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        assert sorted(c.info.run_name for c in children) == sorted(
            ["a", "b", "c", "d", "report[a]", "report[b]", "report[c]", "report[d]"])
        assert all(c.info.status == "FINISHED" for c in children)
    reused = sum(st["status"] == "reused" for s in summaries for st in s["stages"])
    reliability_results["concurrency"] = {
        "processes": PROCESSES, "finished": sum(r.info.status == "FINISHED" for r in parents),
        "lost_runs": PROCESSES - len(parents), "corrupt": len(state["corrupt"]), "keys": len(used_keys),
        "each_once": f"yes ({sum(computed.values())} computations, {reused} reuses)"}
