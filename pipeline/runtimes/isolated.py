"""Timing in a fresh process: `python -m pipeline.runtimes.measure` loads every model into one new interpreter and
times them round-robin, so ratios are side by side and nothing this process imported (or leaked) skews them."""
from __future__ import annotations

import json
import subprocess
import sys


def measure(models: list[dict], threads: int, warmup: int, iterations: int) -> dict:
    """models: [{name, fmt, path, meta, shape}]; returns pipeline.runtimes.measure.measure's result."""
    args = {"models": models, "threads": threads, "warmup": warmup, "iterations": iterations}
    proc = subprocess.run([sys.executable, "-m", "pipeline.runtimes.measure", json.dumps(args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring process failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
