"""Helpers of the reliability tests: run the pipeline (in-process or as a command), and inspect what it left behind."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reliability_stubs
from conftest import ROOT, compose_cfg
from pipeline import app
from pipeline.core.cache import Cache
from pipeline.core.errors import PipelineError

HERE = Path(__file__).resolve().parent
STUB_CONF = HERE / "conf"
DRIVER = HERE / "stub_pipeline.py"


def outcome(cfg) -> tuple[int, str, dict | None]:
    """Run in-process as the command line would: (exit status, message, summary). Any other exception is a bug and
    propagates (the test fails with its traceback)."""
    try:
        return 0, "", app.run(cfg, stages=reliability_stubs.STAGES).to_dict()
    except PipelineError as e:
        return e.exit_code, str(e), None


def stub_cmd(*args: str) -> list[str]:
    return [sys.executable, str(DRIVER), *args]


def run_stub_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` with the stub stages registered and the stub recipes on the search path."""
    return subprocess.run(stub_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def compose_stub(outputs: Path, *overrides: str):
    """The config of a stub recipe (tests/reliability/conf/recipe/NAME.yaml)."""
    return compose_cfg([f"hydra.searchpath=[file://{STUB_CONF}]", *overrides], outputs)


def cache_state(outputs: Path) -> dict:
    """valid / corrupt entry keys and leftover work folders of the cache under `outputs`."""
    root = outputs / "cache"
    cache = Cache(root)
    entries = sorted(p.name for p in (root / "entries").iterdir()) if (root / "entries").is_dir() else []
    valid = [k for k in entries if cache.lookup(k) is not None]
    tmp = sorted(p.name for p in (root / "tmp").iterdir()) if (root / "tmp").is_dir() else []
    return {"valid": valid, "corrupt": sorted(set(entries) - set(valid)), "tmp": tmp}


def mlflow_runs(outputs: Path) -> list:
    """Every run of the embedded store under `outputs` (empty if there is none)."""
    db = outputs / "mlflow.db"
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=50000) if exps else []


def assert_nothing_written(root: Path) -> None:
    """Exit 2 promise: no outputs folder content, no run directory, no cache, no MLflow store."""
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    assert leftovers == [], f"written although the configuration was refused: {leftovers}"


def assert_nothing_partial(outputs: Path, failed: str | None = None) -> dict:
    """Exit 1 promise: the cache holds only complete entries and no work folder; the failed stage made no entry and
    published nothing; no MLflow run is left RUNNING and the parent run says FAILED. Returns the last summary."""
    state = cache_state(outputs)
    assert state["corrupt"] == [], state
    assert state["tmp"] == [], f"work folders left in the cache: {state['tmp']}"
    summaries = sorted((outputs / "runs").rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(summaries[-1].read_text()) if summaries else None
    if summary is not None and failed is not None:
        assert summary["status"] == "failed"
        rec = {s["name"]: s for s in summary["stages"]}[failed]
        assert rec["status"] == "failed"
        assert rec["cache_key"] not in state["valid"] and rec["cache_key"] not in state["corrupt"]
        assert not (Path(summary["run_dir"]) / "artifacts" / failed).exists()
    runs = mlflow_runs(outputs)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    if summary is not None and summary["mlflow"]["run_id"]:
        parent = {r.info.run_id: r for r in runs}[summary["mlflow"]["run_id"]]
        assert parent.info.status == ("FAILED" if summary["status"] == "failed" else "FINISHED")
    return summary


def write_images(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    """A folder of `n` small PNG images per class; each class has its own mean colour so a model can learn it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for ci, (name, n) in enumerate(classes.items()):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.zeros((size, size, 3)) + (ci * 80) % 255
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def kill_fractions(n: int, rng) -> list[float]:
    """`n` moments across a run's span, one drawn at random inside each of n equal slices of [0.05, 0.95]: every phase
    of the run (start-up, each stage, logging, publishing, the summary) gets a kill, with a fraction of the count a
    uniform draw needs to cover them. Shuffled, so that kills early and late interleave with the resumed runs."""
    points = [0.05 + 0.9 * (i + rng.random()) / n for i in range(n)]
    rng.shuffle(points)
    return points


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str):
    """A tmpfs mounted at `where` with mount `options` (size=3m, ro): a small or read-only disk; skips without root."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}): needs root/CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
