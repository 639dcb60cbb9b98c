"""What a run is judged on: the recipe's `objective` read from summary.json. Imports no ML framework.

Used three ways, so the three agree: the entry point returns these values to a sweeper (Optuna), the registry moves
alias `champion` only when the first metric improves, and `python -m pipeline.tracking.compare` ranks runs by it.
"""
from __future__ import annotations

import difflib
import math
from typing import Any

from pipeline.report.schema import ArtifactRow, Summary
from pipeline.core.errors import ConfigError


def _latency(row: ArtifactRow) -> float | None:
    return (row.latency_ms or {}).get("p50")


def _device_latency(row: ArtifactRow) -> float | None:
    """A device latency *estimate* (pipeline.devices.estimator), never a measurement."""
    v = (row.estimate or {}).get("latency_ms")
    return float(v) if isinstance(v, (int, float)) else None


# name -> (direction, how to read it from a summary artifact row, what it is)
METRICS: dict[str, tuple[str, Any, str]] = {
    "accuracy": ("maximize", lambda r: r.accuracy, "the task's primary metric on the validation split (0-1)"),
    "latency_ms": ("minimize", _latency, "p50 latency measured on this host"),
    "size_mb": ("minimize", lambda r: r.size_bytes / 1e6, "file size, MB"),
    "device_latency_ms": ("minimize", _device_latency, "latency estimated for the device (not measured)"),
}


def check(cfg: Any, producers: list[str]) -> None:
    """Refuse an unknown objective metric or artifact before anything runs."""
    problems = []
    metrics = list(cfg.objective.metrics)
    if not metrics:
        problems.append("objective.metrics: empty; name at least one of " + ", ".join(METRICS))
    for i, m in enumerate(metrics):
        if m not in METRICS:
            close = difflib.get_close_matches(str(m), list(METRICS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(f"objective.metrics[{i}]: unknown metric {m!r}.{hint} Choices: {', '.join(METRICS)}.")
    if problems:
        raise ConfigError(problems)


def directions(metrics: list[str]) -> list[str]:
    return [METRICS[m][0] for m in metrics]


def values(summary: Summary, metrics: list[str]) -> dict[str, float | None]:
    """{metric: value or None} for the judged artifact; None where the number does not exist (e.g. Core ML on Linux)."""
    row = summary.judged
    out: dict[str, float | None] = {}
    for m in metrics:
        v = METRICS[m][1](row) if row else None
        out[m] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


def better(metric: str, new: float | None, old: float | None) -> bool:
    """True when `new` strictly beats `old` on `metric` (a tie keeps the incumbent)."""
    if new is None:
        return False
    if old is None:
        return True
    return new > old if METRICS[metric][0] == "maximize" else new < old


def summarize(summary: Summary, cfg: Any) -> dict:
    """The `objective` entry of summary.json: what sweepers, the registry and compare rank by."""
    metrics = list(cfg.objective.metrics)
    return {"metrics": metrics, "directions": directions(metrics), "values": values(summary, metrics)}
