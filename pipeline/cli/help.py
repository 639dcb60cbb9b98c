"""`python -m pipeline --help`: one line per recipe and device, read from their YAML files (no Hydra composition, no
ML import, so it answers at once), the other choices, and the project's other commands."""
from __future__ import annotations

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[2] / "conf"


def _entries(group: str) -> list[tuple[str, dict]]:
    out = []
    for p in sorted((CONF / group).glob("*.yaml")):
        try:
            out.append((p.stem, yaml.safe_load(p.read_text()) or {}))
        except yaml.YAMLError:
            out.append((p.stem, {"description": "(this file is not valid YAML)"}))
    return out


def text() -> str:
    recipes = [(n, str(d.get("description") or "")) for n, d in _entries("recipe")]
    devices = [(n, f"{d.get('display_name', n)}: deploys {d.get('runtime', '?')} "
                   f"({', '.join(map(str, d.get('formats') or []))})") for n, d in _entries("device")]
    w = max(len(n) for n, _ in recipes + devices) + 2
    rows = lambda items: "\n".join(f"  {n.ljust(w)}{desc}" for n, desc in items)
    others = "\n".join(f"  {g}: {', '.join(n for n, _ in _entries(g))}" for g in ("model", "data", "tracking", "sweep"))
    return f"""pipeline: take a vision model through training, compression, export and benchmarking for an edge device.

Usage: python -m pipeline recipe=NAME device=NAME [key=value ...]
       python -m pipeline recipe=NAME device=NAME --plan        what would run and what the cache reuses; runs nothing
       python -m pipeline -m recipe=NAME device=a,b stages.quantize.calibration_samples=64,256   (a sweep)

Recipes (recipe=NAME):
{rows(recipes)}

Devices (device=NAME):
{rows(devices)}

Other choices (GROUP=OPTION):
{others}

Other commands (edge-pipeline --help lists them all; `edge-pipeline run` is this command):
  edge-pipeline plan recipe=NAME device=NAME          what would run, what the cache reuses, how long it should take
  edge-pipeline benchmark model=NAME                  one model in every format this host runs, timed side by side
  edge-pipeline gate --against champion               this run's model against the registry champion (CI release gate)
  edge-pipeline compare experiment=NAME [sweep=ID]    leaderboard of runs: table, Pareto plot, HTML
  edge-pipeline stages [type=NAME]                    stage types, or one type's parameters with defaults
  mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db   the runs in MLflow (make ui)

Print the resolved recipe:  python -m pipeline recipe=NAME --cfg job --resolve    Hydra's own help: --hydra-help
Exit status: 0 success, 2 invalid configuration (nothing ran), 1 a stage failed (finished stages stay cached)."""
