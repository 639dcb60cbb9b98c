"""A 4-job sweep (2 devices x 2 calibration sizes) shares the stage cache: `train` runs once.

Measured side by side in one script run, each on a fresh outputs folder:
  1. one full run:   python -m pipeline recipe=R device=D1 stages.quantize.calibration_samples=C1
  2. the sweep:      python -m pipeline -m recipe=R device=D1,D2 stages.quantize.calibration_samples=C1,C2
Target: sweep wall time <= 1.2 x (full run + 4 x the per-job stages), where the per-job stages are those whose
cache key differs between jobs (quantize, evaluate[quantize], benchmark), timed inside the full run.

    python bench/bench_sweep.py [--recipe mobilenet_int8] [--devices host,pixel7] [--calibration 64,256]
                                [--launcher basic|joblib] [--set KEY=VALUE ...] [--record]
    --set adds an override to both runs (e.g. stages.train.epochs=3); --record appends the result to bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.core.host import cpu_model  # noqa: E402  (the machine line every benchmark prints)
PER_JOB = ("quantize", "evaluate[quantize]", "benchmark")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): python -m pipeline {' '.join(args)}\n"
                 + log.read_text()[-3000:])
    return seconds


def summaries(outputs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((outputs / "runs").rglob("summary.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="mobilenet_int8")
    ap.add_argument("--devices", default="host,pixel7")
    ap.add_argument("--calibration", default="64,256")
    ap.add_argument("--launcher", default="basic", choices=("basic", "joblib"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both runs")
    ap.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    a = ap.parse_args()
    devices, calib = a.devices.split(","), a.calibration.split(",")
    assert len(devices) == 2 and len(calib) == 2, "two devices and two calibration sizes"
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    load_before = load_avg()
    try:
        full_out, sweep_out = work / "full", work / "sweep"
        common = [f"recipe={a.recipe}", *a.set]
        t_full = run([*common, f"device={devices[0]}", f"stages.quantize.calibration_samples={calib[0]}",
                      f"paths.outputs={full_out}"], work / "full.log")
        (s_full,) = summaries(full_out)
        stage_s = {s["name"]: s["seconds"] for s in s_full["stages"]}
        t_per_job = sum(stage_s[n] for n in PER_JOB if n in stage_s)
        launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if a.launcher == "joblib" else []
        t_sweep = run(["-m", *common, f"device={a.devices}", f"stages.quantize.calibration_samples={a.calibration}",
                       f"paths.outputs={sweep_out}", *launcher], work / "sweep.log")
        jobs = summaries(sweep_out)
        train_ran = sum(1 for s in jobs for st in s["stages"] if st["name"] == "train" and st["status"] == "ran")
        bound = 1.2 * (t_full + 4 * t_per_job)
        ok = len(jobs) == 4 and train_ran == 1 and t_sweep <= bound
        lines = [
            f"recipe={a.recipe} {' '.join(a.set)}, devices {a.devices}, calibration_samples {a.calibration}, "
            f"launcher {a.launcher}",
            f"one full run:          {t_full:7.1f} s  (train {stage_s.get('train', 0):.1f} s; "
            f"per-job stages {' + '.join(PER_JOB)} = {t_per_job:.1f} s)",
            f"4-job sweep:           {t_sweep:7.1f} s  ({len(jobs)} jobs, train ran {train_ran}x, "
            f"reused {len(jobs) - train_ran}x)",
            f"bound 1.2 x (full + 4 x per-job) = {bound:.1f} s -> sweep / bound = {t_sweep / bound:.2f}  "
            f"{'PASS' if ok else 'FAIL'}",
            f"machine: {cpu_model()}, {os.cpu_count()} cores; load average before {load_before}, after {load_avg()}",
        ]
        print("\n".join(lines))
        if a.record:
            with open(ROOT / "bench" / "RESULTS.md", "a") as f:
                f.write(f"\n## Sweep sharing the stage cache ({time.strftime('%Y-%m-%d')}, bench/bench_sweep.py)\n\n"
                        + "\n".join(f"    {l}" for l in lines) + "\n")
        if not ok:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
