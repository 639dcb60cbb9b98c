"""The device's budgets as Optuna constraints: a trial whose judged artifact misses a budget is infeasible, so the
sampler steers away from it and the Pareto front holds only models that fit the device.

Optuna (>= 3, the sweeper of the Hydra 1.4 line) calls `constraints_func(frozen_trial)` after each trial and treats
every value <= 0 as satisfied. A sweep job's results are not in the trial (Hydra's sweeper only passes the
objective values back), so this reads them where the sweep callback leaves them: <sweep dir>/<job number>/job.json
names the run directory, whose summary.json holds the budget checks of the judged artifact's verdict.
Trials are numbered like the jobs (one trial per job, in launch order). Imports no ML framework.

    hydra.sweeper.sampler.constraints_func:
      _target_: pipeline.tracking.sweep_constraints.BudgetConstraints
      sweep_dir: ${hydra:sweep.dir}
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.report.schema import Summary

log = logging.getLogger("pipeline")
# budget -> +1 when the value must stay below the limit, -1 when above (frames per second)
BUDGETS = {"latency_ms": 1, "fps": -1, "model_mb": 1, "ram_mb": 1}


def violations(summary: Summary, artifact: str | None = None) -> list[float]:
    """One value per budget in BUDGETS order: (value - limit) / limit (sign flipped for fps); <= 0 when the budget
    is met, 0 when it was not checked (no limit, or nothing measured or estimated to check it against)."""
    row = summary.row(artifact) if artifact else summary.judged
    checks = {c.name: c for c in (row.verdict.checks if row else [])}
    out = []
    for name, sign in BUDGETS.items():
        c = checks.get(name)
        value, limit = (c.value, c.limit) if c else (None, None)
        if value is None or not limit:
            out.append(0.0)
        else:
            out.append(sign * (float(value) - float(limit)) / float(limit))
    return out


class BudgetConstraints:
    """constraints_func for Optuna samplers (TPE, NSGA-II/III, GP): reads the job's summary by trial number."""

    def __init__(self, sweep_dir: str, artifact: str | None = None):
        self.sweep_dir = Path(sweep_dir)
        self.artifact = artifact

    def summary(self, number: int) -> Summary | None:
        job = self.sweep_dir / str(number) / "job.json"
        try:
            rec = json.loads(job.read_text())
            run_dir = rec.get("run_dir") or (rec.get("summary") or {}).get("run_dir")
            return Summary.load(Path(run_dir) / "summary.json") if run_dir else None
        except (OSError, ValueError, TypeError) as e:  # (SchemaError is a ValueError)
            log.warning("budget constraints: no summary for trial %d (%s): treated as within budget", number, e)
            return None

    def __call__(self, trial: Any) -> list[float]:
        s = self.summary(trial.number)
        return violations(s, self.artifact) if s else [0.0] * len(BUDGETS)
