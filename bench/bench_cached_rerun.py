"""What a fully cached re-run costs, against importing the libraries it needs, and where the difference goes.

    python bench/bench_cached_rerun.py [--recipe tiny_int8] [--repeats 3] [--outputs DIR]

In one go on the same clone: (1) `import torch, onnxruntime, mlflow` in a fresh interpreter, `repeats` times;
(2) one run of the recipe to fill the cache, then `repeats` re-runs in which every stage is reused, interleaved with
`repeats` such re-runs with tracking=none and `repeats` imports of only what a re-run imports (MLflow, its SQL store,
Hydra: a re-run that reuses every stage imports no ML framework); (3) one more
re-run under cProfile, broken down into: imports, MLflow (store open, parent run, nested runs, artifacts, registry),
cache keys (hashing the stage code, settings and files), the data fingerprint, Hydra composition, the rest. Prints a
Markdown block for bench/RESULTS.md, with the machine's load average (a busy machine makes every figure larger).
"""
from __future__ import annotations

import argparse
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import torch, onnxruntime, mlflow"
# What a fully cached re-run imports (no ML framework: nothing runs): MLflow with its SQL store, Hydra.
NEEDED = "import mlflow, mlflow.store.tracking.sqlalchemy_store, hydra, omegaconf"

# (label, predicate on a pstats function key (file, line, name)) -- inclusive time of the outermost match
BUCKETS = [
    ("MLflow: nested stage runs", lambda f: f[0].endswith("pipeline/tracking.py") and f[2] == "log_stage"),
    ("MLflow: open store + experiment", lambda f: f[0].endswith("pipeline/tracking.py") and f[2] == "__init__"),
    ("MLflow: parent run, params, metrics, files", lambda f: f[0].endswith("pipeline/tracking.py")
     and f[2] in ("start", "log_params", "log_metrics", "log_files", "set_tags", "end", "close_orphans")),
    ("MLflow: model registry", lambda f: f[0].endswith("pipeline/registry.py") and f[2] == "register"),
    ("MLflow: store schema check (sqlalchemy/alembic)", lambda f: "mlflow/store/db/utils.py" in f[0]
     and f[2] in ("_initialize_tables", "_verify_schema", "create_sqlalchemy_engine_with_retry")),
    ("cache keys (hashing)", lambda f: f[0].endswith("pipeline/cache.py") and f[2] in ("digest", "file_sha256")),
    ("data fingerprint", lambda f: "pipeline/data" in f[0] and f[2] == "fingerprint"),
    ("Hydra compose", lambda f: "hydra/_internal/config_loader_impl.py" in f[0] and f[2] == "load_configuration"),
]


def load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"
    except OSError:
        return "load average unknown"


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return dt


def breakdown(prof: Path) -> tuple[float, list[tuple[str, float]]]:
    st = pstats.Stats(str(prof))
    total = max(v[3] for v in st.stats.values())  # the outermost frame's cumulative time
    out = []
    for label, pred in BUCKETS:
        hits = {f: v for f, v in st.stats.items() if pred(f)}
        # outermost only: drop a match that is called by another match
        outer = [v for f, v in hits.items() if not any(c in hits for c in v[4])]
        out.append((label, sum(v[3] for v in outer)))
    imports = [v for f, v in st.stats.items() if f[2] == "_find_and_load" and "importlib" in f[0]]
    out.insert(0, ("imports (all modules)", max((v[3] for v in imports), default=0.0)))
    return total, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tiny_int8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--outputs", default=None, help="outputs folder (default: a temporary one, removed after)")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    outputs = Path(a.outputs) if a.outputs else Path(tempfile.mkdtemp(prefix="bench-cached-"))
    run = [sys.executable, "-m", "pipeline", f"recipe={a.recipe}", f"paths.outputs={outputs}"]
    try:
        print(f"# {load()}", file=sys.stderr)
        imports = [timed([sys.executable, "-c", IMPORTS], env) for _ in range(a.repeats)]
        first = timed(run, env)
        reruns, untracked, needed = [], [], []
        for _ in range(a.repeats):  # interleaved, so a change of load hits all alike
            reruns.append(timed(run, env))
            untracked.append(timed([*run, "tracking=none"], env))
            needed.append(timed([sys.executable, "-c", NEEDED], env))
        imports += [timed([sys.executable, "-c", IMPORTS], env) for _ in range(a.repeats)]  # interleaved in time
        prof = outputs / "rerun.prof"
        timed([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "pipeline", f"recipe={a.recipe}",
               f"paths.outputs={outputs}"], env)
        total, parts = breakdown(prof)
    finally:
        if not a.outputs:
            shutil.rmtree(outputs, ignore_errors=True)
    imp, rr = statistics.median(imports), statistics.median(reruns)
    print(f"### Fully cached re-run of `recipe={a.recipe}` ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python bench/bench_cached_rerun.py --recipe {a.recipe} --repeats {a.repeats}`, {load()} at the end.\n")
    print("| what | seconds (median) |\n|---|---|")
    print(f"| `{IMPORTS}` in a fresh interpreter | {imp:.2f} (of {', '.join(f'{x:.2f}' for x in imports)}) |")
    print(f"| first run (fills the cache) | {first:.2f} |")
    print(f"| fully cached re-run, wall | {rr:.2f} (of {', '.join(f'{x:.2f}' for x in reruns)}) |")
    un, nd = statistics.median(untracked), statistics.median(needed)
    print(f"| ratio re-run / imports | **{rr / imp:.2f}x** (target <= 1.2x) |")
    print(f"| `{NEEDED}` (what the re-run imports) | {nd:.2f} (of {', '.join(f'{x:.2f}' for x in needed)}) |")
    print(f"| ratio re-run / its own imports | **{rr / nd:.2f}x** |")
    print(f"| fully cached re-run with tracking=none | {un:.2f} (of {', '.join(f'{x:.2f}' for x in untracked)}) |\n")
    print(f"Where a cached re-run's time goes (cProfile, {total:.2f} s in the profiled process; inclusive times, "
          f"the buckets overlap with imports where a step imports):\n")
    print("| part | seconds | share |\n|---|---|---|")
    for label, s in parts:
        print(f"| {label} | {s:.2f} | {100 * s / total:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
