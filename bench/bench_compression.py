"""The compression recipes side by side with their fp32 baselines, one markdown section for bench/RESULTS.md.

Runs the real pipeline for mobilenet_pruned_int8, mobilenet_distilled and mobilenet_qat_int8 (cached stages are
reused: run it twice and only what changed re-runs), on this host with one thread for training and benchmarking
(on a shared 2-core machine, two threads per process oversubscribe the cores and make every number noisier).
Within each recipe, the benchmark stage times all models round-robin in one process, so the ratios are same-run.

    python bench/bench_compression.py [--outputs outputs/bench] [--append bench/RESULTS.md]
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

# recipe -> (the stages trained with one thread, the fp32 baseline artifact of its rows)
RECIPES = {
    "mobilenet_pruned_int8": (["train", "prune"], "export_base"),
    "mobilenet_distilled": (["train", "distill"], "export_teacher"),
    "mobilenet_qat_int8": (["train", "qat", "qat_tflite"], "export"),
}


def overrides(recipe: str, outputs: str) -> list[str]:
    trained, _ = RECIPES[recipe]
    return [f"recipe={recipe}", "device=host", "device.threads=1", "tracking=none", f"paths.outputs={outputs}",
            *[f"stages.{s}.threads=1" for s in trained]]


def _mb(b):
    return f"{b / 1e6:.2f}"


def section(results: dict) -> str:
    from pipeline.runtimes import cpu_model

    load = os.getloadavg()
    lines = [f"\n### Compression recipes, {time.strftime('%Y-%m-%d %H:%M')}\n",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; load average "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end"
             f"{' (the machine was shared with other jobs)' if load[0] > 2.5 else ''}.",
             "Data: scikit-learn digits (1437 train / 360 validation images). Latency on this host, 1 thread, "
             "batch 1, p50: ONNX Runtime (CPUExecutionProvider) for .onnx, LiteRT (XNNPACK) for .tflite; within a "
             "recipe all models are timed round-robin in one process. Each row is compared with the fp32 baseline of "
             "its own format.\n",
             "| recipe | model | format | precision | size MB | size vs base | p50 ms | speed-up vs base | top-1 % | "
             "delta top-1 (points) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, s in results.items():
        arts = {a["name"]: a for a in s["artifacts"]}
        bases = {"onnx": arts[RECIPES[recipe][1]]}
        bases.update({a["format"]: a for a in s["artifacts"]
                      if a["format"] != "onnx" and a["precision"] == "fp32" and a["name"].startswith("export")})
        for a in s["artifacts"]:
            if a["format"] not in bases:
                continue
            base = bases[a["format"]]
            lat, blat = (a["latency_ms"] or {}).get("p50"), (base["latency_ms"] or {}).get("p50")
            timing = f"{lat:.2f} | {blat / lat:.2f}x" if lat and blat else "- | -"
            lines.append(
                f"| {recipe} | {a['name']} | {a['format']} | {a['precision']} | {_mb(a['size_bytes'])} | "
                f"{a['size_bytes'] / base['size_bytes']:.2f}x | {timing} | {100 * a['accuracy']:.2f} | "
                f"{100 * (a['accuracy'] - base['accuracy']):+.2f} |")
    lines.append("")
    for recipe, s in results.items():
        st = {x["name"]: x["metrics"] for x in s["stages"]}
        if "prune" in st:
            m = st["prune"]
            lines.append(f"- {recipe}, prune (structured, 50% of channels, L1, fine-tuned): parameters {m['parameters_before'] / 1e6:.3f} M -> "
                         f"{m['parameters_after'] / 1e6:.3f} M (-{100 * m['parameters_reduction']:.0f}%), MACs "
                         f"{m['macs_before'] / 1e6:.1f} M -> {m['macs_after'] / 1e6:.1f} M "
                         f"(-{100 * m['macs_reduction']:.0f}%) at 48x48; top-1 {100 * m['accuracy_before']:.2f} -> "
                         f"{100 * m['accuracy_pruned']:.2f} right after pruning -> {100 * m['accuracy_after']:.2f} "
                         f"after fine-tuning ({-m['accuracy_drop_points']:+.2f} points); state_dict "
                         f"{_mb(m['file_bytes_before'])} -> {_mb(m['file_bytes_after'])} MB.")
        if "fuse" in st:
            m = st["fuse"]
            lines.append(f"- {recipe}, fuse: {int(m['folded_batchnorms'])} batch norms folded, max |fused - unfused| "
                         f"= {m['max_abs_diff']:.2e}; PyTorch eager p50 {m['unfused_p50_ms']:.2f} -> "
                         f"{m['fused_p50_ms']:.2f} ms ({m['torch_speedup']:.2f}x, 1 thread, this host). ONNX Runtime "
                         f"folds batch norms itself at load time, so the exported graphs run alike.")
        if "distill" in st:
            m = st["distill"]
            lines.append(f"- {recipe}, distill (ResNet-18 teacher -> MobileNetV3-Small, same epochs): teacher top-1 "
                         f"{100 * m['teacher_accuracy']:.2f}; student from scratch {100 * m['scratch_accuracy']:.2f}; "
                         f"student distilled {100 * m['distilled_accuracy']:.2f} "
                         f"({m['distillation_gain_points']:+.2f} points); parameters "
                         f"{m['teacher_parameters'] / 1e6:.2f} M -> {m['student_parameters'] / 1e6:.2f} M.")
        arts = {a["name"]: a for a in s["artifacts"]}
        for suffix, fmt in (("", "ONNX"), ("_tflite", "TFLite")):
            if f"qat{suffix}" in st:
                lines.append(f"- {recipe}, {fmt}: post-training int8 (ptq{suffix}) top-1 "
                             f"{100 * arts[f'ptq{suffix}']['accuracy']:.2f} vs quantization-aware int8 (qat{suffix}) "
                             f"{100 * arts[f'qat{suffix}']['accuracy']:.2f}, fp32 "
                             f"{100 * arts[f'export{suffix}']['accuracy']:.2f}.")
        for a in s["artifacts"]:
            lines += [f"- {n}" for n in a.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", default=str(ROOT / "outputs" / "bench"))
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--append", default=None, help="append the markdown section to this file (e.g. bench/RESULTS.md)")
    args = ap.parse_args()

    from conftest import compose_cfg  # the same composition as the command line
    from pipeline import app

    results = {r: app.run(compose_cfg(overrides(r, args.outputs))) for r in args.recipes}
    text = section(results)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
