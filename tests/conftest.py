"""Fixtures: compose real configs with Hydra's compose API, isolated outputs, a real MLflow server on loopback."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from pipeline.core import config

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
config.register()


def compose_cfg(overrides: list[str], outputs: Path | None = None):
    """The config `python -m pipeline <overrides>` would run, with HydraConfig set so ${hydra:...} resolves."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        extra = [f"paths.outputs={outputs}"] if outputs else []
        cfg = compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_struct(cfg, False)
    return cfg


@pytest.fixture
def outputs(tmp_path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def make_cfg(outputs):
    return lambda *overrides: compose_cfg(list(overrides), outputs)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m pipeline ARGS` as a user would; returns the CompletedProcess."""
    # PYTHONPATH: run this checkout's code even from another cwd (an editable install may point at another checkout)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend and served artifacts; stopped after the session."""
    d = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--artifacts-destination", str(d / "artifacts"),
         "--workers", "1"],
        stdout=open(d / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited:\n" + (d / "server.log").read_text()[-3000:])
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start:\n" + (d / "server.log").read_text()[-3000:])
    yield uri
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


# --- reliability report --------------------------------------------------------------------------------------
# tests/reliability/ records what it proved in config.stash; these lines end every test run's output.
RELIABILITY = pytest.StashKey[dict]()


@pytest.fixture
def reliability_results(request) -> dict:
    """A dict shared by the reliability tests and the terminal summary below."""
    stash = request.config.stash
    if RELIABILITY not in stash:
        stash[RELIABILITY] = {}
    return stash[RELIABILITY]


def _merge(into: dict, more: dict) -> None:
    """Add another process's reliability results: kill counts add up, the other records are per test."""
    for k, v in more.items():
        if k == "kill":
            kill = into.setdefault("kill", {})
            for f, n in v.items():
                kill[f] = kill.get(f, 0) + n
        elif isinstance(v, dict):
            into.setdefault(k, {}).update(v)
        else:
            into[k] = v


def pytest_sessionfinish(session):
    """Under pytest-xdist, a worker hands its reliability results to the controller (pytest_testnodedown)."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["reliability"] = json.dumps(session.config.stash.get(RELIABILITY, {}))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    stash = node.config.stash
    if RELIABILITY not in stash:
        stash[RELIABILITY] = {}
    _merge(stash[RELIABILITY], json.loads(getattr(node, "workeroutput", {}).get("reliability", "{}")))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in counts:
        for rep in terminalreporter.stats.get(outcome, []):
            if "bad_input" in getattr(rep, "keywords", {}) and (rep.when == "call" or outcome == "skipped"):
                counts[outcome] += 1
    res = config.stash.get(RELIABILITY, {})
    tr = terminalreporter
    tr.section("reliability")
    total = sum(counts.values())
    tr.write_line(f"bad-input catalogue: {total} entries, {counts['passed']} passed, {counts['failed']} failed, "
                  f"{counts['skipped']} skipped")
    kill = res.get("kill")
    if kill:
        tr.write_line(f"kill points survived: {kill['survived']} of {kill['points']} SIGKILLs "
                      f"({kill['stub']} stub, {kill['real']} real), {kill['corrupt']} corrupt cache entries, "
                      f"{kill['resumed']} resumed runs completed reusing finished stages")
    else:
        tr.write_line("kill points survived: not run")
    fault = res.get("fault")
    for what, f in sorted((fault or {}).items()):
        tr.write_line(f"fault injection ({what}): {f['kills']} SIGKILLs at random points of a real {what}, each "
                      f"followed by a re-run ({f['reruns']} re-runs): 0 corrupt cache entries, 0 MLflow runs left "
                      f"RUNNING, {f['folders']} run folders verified against their summary.json "
                      f"({f['unfinished']} killed before writing one)")
    if not fault:
        tr.write_line("fault injection: not run (tests/reliability/test_fault_injection.py, marked slow)")
    conc = res.get("concurrency")
    if conc:
        tr.write_line(f"concurrency: {conc['processes']} processes on one cache + one SQLite store: "
                      f"{conc['finished']}/{conc['processes']} runs FINISHED, {conc['lost_runs']} lost runs, "
                      f"{conc['corrupt']} corrupt entries, {conc['keys']} stage keys, each computed once: "
                      f"{conc['each_once']}")
    else:
        tr.write_line("concurrency: not run")
