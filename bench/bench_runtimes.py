"""Every runtime and precision side by side: MobileNetV2 1.0 at 224x224, one process per thread count, all models
timed round-robin (pipeline.runtimes.measure), so the ratios between them hold whatever the machine's load.

Artifacts (all from the same torch model, the int8 ones calibrated on the same images):
  ORT fp32                    ONNX Runtime, the exported fp32 ONNX model
  ORT int8 <variant>          the project's QDQ variants (pipeline.convert.candidates QDQ_VARIANTS)
  ORT quantize_static default quantize_static with its defaults (peer default)
  OpenVINO default            the fp32 IR compiled with no precision hint (peer default; bf16 where the CPU has it)
  OpenVINO f32                the same IR with f32 pinned
  OpenVINO NNCF int8          nncf.quantize with its defaults
  ExecuTorch XNNPACK fp32/int8
  LiteRT int8                 litert-torch full-integer int8 (peer default of LiteRT's int8 path)

The model is untrained unless --weights names a state_dict of pipeline.models' MobileNetV2 with 10 classes (the
train stage's model.pt); calibration images are random normal (the same for every quantizer). Latency only: this
bench measures no accuracy (the recipes' evaluate stage does).

    python bench/bench_runtimes.py [--threads 1 2] [--iterations 100] [--size 224] [--workdir outputs/bench_runtimes]
Prints a markdown block for bench/RESULTS.md, with the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEER_DEFAULTS = ("ORT quantize_static default", "OpenVINO default", "LiteRT int8")


def build(work: Path, size: int, calib_n: int, weights: str | None) -> list[dict]:
    import numpy as np
    import torch

    from pipeline.convert import executorch as et
    from pipeline.convert import openvino as ovc
    from pipeline.convert.onnx import QdqOptions, export_torch, quantize_qdq
    from pipeline.convert.tflite import export_source
    from pipeline.models import build as build_model
    from pipeline.models import save_torch
    from pipeline.convert.candidates import QDQ_VARIANTS

    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 10).eval()
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    shape = [1, 3, size, size]
    work.mkdir(parents=True, exist_ok=True)
    torch_path = save_torch(model, work / "torch", {"name": "mobilenet_v2", "num_classes": 10, "kwargs": {}})
    calib = np.random.default_rng(0).standard_normal((calib_n, 3, size, size)).astype(np.float32)
    arts: list[dict] = []

    def add(name, fmt, path, meta=None):
        arts.append({"name": name, "fmt": fmt, "path": str(path), "meta": {"input_shape": shape, **(meta or {})},
                     "shape": shape})

    onnx_fp32 = work / "model.onnx"
    export_torch(model, shape, onnx_fp32)
    add("ORT fp32", "onnx", onnx_fp32)
    for cand, opts in QDQ_VARIANTS.items():
        out = work / f"{cand}.onnx"
        quantize_qdq(onnx_fp32, out, calib, QdqOptions(**opts))
        add("ORT quantize_static default" if cand == "ort_defaults" else f"ORT int8 {cand}", "onnx", out)
    xml = work / "model.xml"
    ovc.export_ir(model, shape, xml)
    add(f"OpenVINO default ({ovc.default_inference_precision()})", "openvino", xml, {"openvino": {}})
    add("OpenVINO f32", "openvino", xml, {"openvino": {"inference_precision": "f32"}})
    ovc.quantize_ir(xml, calib, work / "model.int8.xml")
    add("OpenVINO NNCF int8", "openvino", work / "model.int8.xml", {"openvino": {}})
    facts = et.export_pte(model, shape, work / "model.pte")
    add("ExecuTorch XNNPACK fp32", "executorch", work / "model.pte", {"executorch": facts})
    facts = et.quantize_pte(model, shape, calib, work / "model.int8.pte")
    add("ExecuTorch XNNPACK int8", "executorch", work / "model.int8.pte", {"executorch": facts})
    _, layout = export_source("torch", torch_path, shape, work / "model.int8.tflite", "int8", calib, True, "int8")
    add("LiteRT int8", "tflite", work / "model.int8.tflite", {"input_layout": layout})
    return arts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--weights", default=None, help="a MobileNetV2 state_dict (model.pt from the train stage)")
    ap.add_argument("--workdir", default=str(ROOT / "outputs" / "bench_runtimes"))
    args = ap.parse_args()

    from pipeline.artifacts import path_size
    from pipeline.runtimes import cpu_model, isolated

    before = os.getloadavg()
    arts = build(Path(args.workdir), args.size, args.calibration, args.weights)
    results = {t: isolated.measure(arts, t, args.warmup, args.iterations) for t in args.threads}
    after = os.getloadavg()

    def size_mb(a):
        p = Path(a["path"])
        return (path_size(p) + (path_size(p.with_suffix(".bin")) if p.suffix == ".xml" else 0)) / 1e6

    ref = "ORT fp32"
    peers = [a["name"] for a in arts if a["name"].startswith(PEER_DEFAULTS)]
    print(f"\n### Runtimes side by side: MobileNetV2 1.0 at {args.size}x{args.size}, "
          f"{'trained weights' if args.weights else 'untrained'}\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; load average "
          f"{before[0]:.2f} before, {after[0]:.2f} after; date {time.strftime('%Y-%m-%d')}. Each thread count: one "
          f"fresh process, all models loaded and timed round-robin, batch 1, p50 of {args.iterations} runs after "
          f"{args.warmup} warm-up runs. Speed-up = ORT fp32 p50 / model p50 at the same thread count.\n")
    heads = " | ".join(f"{t} thr p50 ms | {t} thr speed-up" for t in args.threads)
    print(f"| model | runtime (as loaded) | MB | {heads} |")
    print("|---|---|---|" + "---|---|" * len(args.threads))
    for a in arts:
        cells = []
        for t in args.threads:
            m = results[t]["models"]
            cells.append(f"{m[a['name']]['latency_p50_ms']:.2f} | {m[ref]['latency_p50_ms'] / m[a['name']]['latency_p50_ms']:.2f}x")
        mark = " (peer default)" if a["name"] in peers else ""
        print(f"| {a['name']}{mark} | {results[args.threads[0]]['models'][a['name']]['runtime']} | "
              f"{size_mb(a):.2f} | {' | '.join(cells)} |")
    for t in args.threads:
        m = results[t]["models"]
        fastest_peer = min(peers, key=lambda n: m[n]["latency_p50_ms"])
        best = min(m, key=lambda n: m[n]["latency_p50_ms"])
        print(f"\n{t} thread(s): fastest peer default {fastest_peer} {m[fastest_peer]['latency_p50_ms']:.2f} ms; "
              f"fastest overall {best} {m[best]['latency_p50_ms']:.2f} ms "
              f"({m[fastest_peer]['latency_p50_ms'] / m[best]['latency_p50_ms']:.2f}x the fastest peer default)")


if __name__ == "__main__":
    main()
