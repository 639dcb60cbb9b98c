"""Deploy formats at 224x224: LiteRT fp32 vs full-integer int8 for a phone (pixel7), and the measured int8 choice on
this host (device=host) against the fastest fp32 model, each pair timed in the same run, side by side.

Runs the real pipeline (train -> export -> quantize -> parity -> evaluate -> benchmark) at 224x224 input; the two
devices share the trained model through the cache. Training at 224 costs ~20x the recipe's 48 px, so the bench trains
fewer epochs (--epochs); latency does not depend on how long the model trained.

    python bench/bench_formats.py [--epochs 2] [--iterations 200] [--outputs outputs/bench]
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
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--outputs", default=str(ROOT / "outputs" / "bench"))
    ap.add_argument("--devices", nargs="+", default=["pixel7", "host"])
    ap.add_argument("--max-accuracy-drop", type=float, default=1.0, help="host: top-1 points an int8 candidate may lose")
    args = ap.parse_args()

    from conftest import compose_cfg  # the same composition as the command line
    from pipeline import app
    from pipeline.runtimes import cpu_model

    common = ["recipe=mobilenet_int8", "model.input_size=224", f"stages.train.epochs={args.epochs}",
              f"stages.benchmark.iterations={args.iterations}", "stages.benchmark.warmup=20",
              f"stages.quantize.iterations={args.iterations}", "stages.quantize.warmup=20",
              "stages.parity.min_top1_agreement=null", "tracking=none", f"paths.outputs={args.outputs}"]
    results = {}
    for device in args.devices:
        extra = ([f"stages.quantize.max_accuracy_drop={args.max_accuracy_drop}"] if device == "host"
                 else ["~stages.quantize.iterations", "~stages.quantize.warmup"])
        cfg = compose_cfg([*common, f"device={device}", *extra])
        results[device] = app.run(cfg)

    load = os.getloadavg()
    print(f"\n### Deploy formats, MobileNetV2 1.0 at 224x224, digits ({args.epochs} training epochs at 224 px)\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"load average {load[0]:.2f} / {load[1]:.2f} at the end; date {time.strftime('%Y-%m-%d')}. Batch 1, p50 over "
          f"{args.iterations} runs after 20 warm-up runs, the models of one table timed round-robin in one process.\n")
    for device, s in results.items():
        arts = {a["name"]: a for a in s["artifacts"]}
        f, q = arts["export"], arts["quantize"]
        if device != "host":
            print(f"**device={device}**: {q['measured_on']}\n")
            print("| model | format | precision | runtime | p50 ms | p90 ms | MB | top-1 % | parity vs source |")
            print("|---|---|---|---|---|---|---|---|---|")
            for a in (f, q):
                par = a.get("parity") or {}
                print(f"| {a['name']} | {a['format']} | {a['precision']} | {a['runtime']} | "
                      f"{a['latency_ms']['p50']:.2f} | {a['latency_ms']['p90']:.2f} | {a['size_bytes'] / 1e6:.2f} | "
                      f"{100 * a['accuracy']:.2f} | "
                      f"{'top-1 agreement %.3f, cosine %.4f' % (par['top1_agreement'], par['cosine']) if 'cosine' in par else '-'} |")
            print(f"\nint8 vs fp32: {f['latency_ms']['p50'] / q['latency_ms']['p50']:.2f}x faster, "
                  f"{q['size_bytes'] / f['size_bytes']:.3f}x the size, "
                  f"{100 * (q['accuracy'] - f['accuracy']):+.2f} top-1 points; every operator integer: "
                  f"{q.get('integer_only', 'see summary')}.\n")
        else:
            sel = q["selection"]
            print(f"**device=host** (measured choice, {sel['threads']} thread(s), {sel['cpu']}): chosen "
                  f"**{sel['chosen']}** ({q['format']}), {sel['speedup_vs_fastest_fp32']:.2f}x the fastest fp32 "
                  f"model ({sel['fastest_fp32']}); accuracy budget {sel['budget_points']:g} top-1 points.\n")
            print("| candidate | kind | format | p50 ms | vs fastest fp32 | top-1 % | MB | result |")
            print("|---|---|---|---|---|---|---|---|")
            for c in sel["candidates"]:
                result = "chosen" if c.get("chosen") else c.get("lost_because", "baseline")
                print(f"| {c['name']} | {c['kind']} | {c['format']} | {c['latency_p50_ms']:.2f} | "
                      f"{c['speedup_vs_fastest_fp32']:.2f}x | {100 * c['accuracy']:.2f} | {c['size_bytes'] / 1e6:.2f} | "
                      f"{result} |")
            print()


if __name__ == "__main__":
    main()
