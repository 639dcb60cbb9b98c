"""Where a run came from: the command that re-runs it, the commit, the library versions. Imports no ML framework."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACKED_LIBRARIES = ("torch", "tensorflow-cpu", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "coremltools",
                     "mlflow", "hydra-core", "omegaconf", "torch-pruning", "scikit-learn", "numpy")


def library_versions() -> dict[str, str]:
    out = {}
    for dist in TRACKED_LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(sweep: dict | bool | None = None) -> str:
    """The command that (re)runs this run. In a sweep job: that job's own overrides; sweep=True: the sweep's command
    itself."""
    if isinstance(sweep, dict):
        return "python -m pipeline " + " ".join(sweep["overrides"])
    args = [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
    return "python -m pipeline " + ("-m " if sweep else "") + " ".join(args)


def overrides(sweep: dict | None = None) -> list[str]:
    """The key=value overrides of this run's command line (a sweep job: its own)."""
    if isinstance(sweep, dict):
        return list(sweep["overrides"])
    return [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
