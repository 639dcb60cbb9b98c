"""Run events: the runner and `app.run` announce what happens; listeners (MLflow tracking, the model registry, the
console) act on it. Adding a listener touches neither the runner nor `app.run`'s control flow. Imports nothing heavy.

Events, in order:
  run_started(run)                   before the first task (the MLflow parent run opens here)
  task_finished(run, record, out)    each task ran, was reused or failed (out: its cache folder, None on failure)
  summary_ready(run, summary)        the summary is built, not yet written; may be interrupted by a signal
  run_succeeded(run, summary)        the run succeeded and is being recorded, signals held (the registry registers
                                     here and adds its outcome to the summary); not called for a failed or killed run
  run_finished(run, summary, path)   summary.json is written (or path is None: it could not be); signals held
  run_closed(run, status)            always, last: success | failed | killed
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline")


@dataclass
class RunInfo:
    """What listeners know about the run."""

    recipe: str
    device: str
    cfg: Any  # the resolved config
    run_dir: Path
    outputs: Path
    command: str
    sweep: dict | None = None  # the sweep job's context, if this run is one job of a multirun
    overrides: list[str] = field(default_factory=list)  # the command line's overrides (what makes this run differ)
    mlflow: dict = field(default_factory=lambda: {"tracking_uri": None, "experiment": None, "run_id": None})
    card: dict = field(default_factory=dict)  # the run card's pictures, title -> file (written by the card listener)


class Listener:
    """Base class: every hook does nothing unless overridden."""

    def run_started(self, run: RunInfo) -> None: ...

    def task_finished(self, run: RunInfo, record: Any, out: Path | None) -> None: ...

    def summary_ready(self, run: RunInfo, summary: dict) -> None: ...

    def run_succeeded(self, run: RunInfo, summary: dict) -> None: ...

    def run_finished(self, run: RunInfo, summary: dict, path: Path | None) -> None: ...

    def run_closed(self, run: RunInfo, status: str) -> None: ...


class Events:
    """Calls every listener's hook in order. `run_closed` reaches every listener even if one of them raises."""

    def __init__(self, run: RunInfo, listeners: list[Listener]):
        self.run, self.listeners = run, list(listeners)

    def run_started(self) -> None:
        for lst in self.listeners:
            lst.run_started(self.run)

    def task_finished(self, record: Any, out: Path | None) -> None:
        for lst in self.listeners:
            lst.task_finished(self.run, record, out)

    def summary_ready(self, summary: dict) -> None:
        for lst in self.listeners:
            lst.summary_ready(self.run, summary)

    def run_succeeded(self, summary: dict) -> None:
        for lst in self.listeners:
            lst.run_succeeded(self.run, summary)

    def run_finished(self, summary: dict, path: Path | None) -> None:
        for lst in self.listeners:
            lst.run_finished(self.run, summary, path)

    def run_closed(self, status: str) -> None:
        for lst in self.listeners:
            try:
                lst.run_closed(self.run, status)
            except Exception as e:  # closing the others matters more
                log.warning("while closing the run, %s failed: %s", type(lst).__name__, e)
