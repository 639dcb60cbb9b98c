"""mobilenet_int8 at 224x224: fp32 vs int8 ONNX Runtime latency (same run, side by side), size ratio, accuracy delta.

Runs the real pipeline (train -> export_onnx -> quantize_onnx -> evaluate -> benchmark) at 224x224 input, once per
thread count; the expensive stages are cached, so only the benchmark re-runs for the second thread count.
Training at 224 costs ~20x more than the recipe's 48 px, so the bench trains fewer epochs (--epochs).

    python bench/bench_int8.py [--epochs 4] [--threads 1 2] [--outputs outputs/bench]
Prints a markdown block for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--outputs", default=str(ROOT / "outputs" / "bench"))
    args = ap.parse_args()

    from conftest import compose_cfg  # the same composition as the command line
    from pipeline import app
    from pipeline.runtimes import cpu_model

    rows = []
    for threads in args.threads:
        cfg = compose_cfg(["recipe=mobilenet_int8", "device=host", "stages.quantize.format=onnx",  # ONNX int8, not the
                           f"device.threads={threads}", "model.input_size=224",  # measured choice (bench_formats.py)
                           f"stages.train.epochs={args.epochs}", f"stages.benchmark.iterations={args.iterations}",
                           "stages.benchmark.warmup=20", "tracking=none", f"paths.outputs={args.outputs}"])
        s = app.run(cfg)
        arts = {a["name"]: a for a in s["artifacts"]}
        rows.append((threads, arts["export"], arts["quantize"]))

    load = os.getloadavg()
    print(f"\n### mobilenet_int8, MobileNetV2 1.0 at 224x224, digits ({args.epochs} training epochs at 224 px)\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"load average {load[0]:.2f} / {load[1]:.2f} at the end; date {time.strftime('%Y-%m-%d')}.")
    print("Latency: ONNX Runtime CPUExecutionProvider (intra-op thread spinning off), batch 1, p50 over "
          f"{args.iterations} runs after 20 warm-up runs, fp32 and int8 timed round-robin in one process.\n")
    print("| threads | fp32 p50 ms | int8 p50 ms | speed-up | fp32 MB | int8 MB | size ratio | fp32 top-1 | int8 top-1 | delta (points) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads, f, q in rows:
        print(f"| {threads} | {f['latency_ms']['p50']:.2f} | {q['latency_ms']['p50']:.2f} | "
              f"{f['latency_ms']['p50'] / q['latency_ms']['p50']:.2f}x | {f['size_bytes'] / 1e6:.2f} | "
              f"{q['size_bytes'] / 1e6:.2f} | {q['size_bytes'] / f['size_bytes']:.3f} | {100 * f['accuracy']:.2f} | "
              f"{100 * q['accuracy']:.2f} | {100 * (q['accuracy'] - f['accuracy']):+.2f} |")


if __name__ == "__main__":
    main()
