"""Runtime options at batch 1, measured side by side instead of assumed: the same int8 file of EfficientNet-Lite0 (zoo
architecture, 10 classes, random weights: latency does not depend on them) run with and without each option, all in
one fresh process, round-robin, with bootstrap intervals (pipeline.runtimes.measure).

  OpenVINO:      NNCF int8 IR with its dynamic batch, vs compiled for one image (`static_shape`), vs THROUGHPUT hint
  ONNX Runtime:  per-channel QDQ int8 with a dynamic batch, vs the same graph with its batch fixed to 1; and
                 `session.dynamic_block_base=4` (ONNX Runtime's advice for latency-bound thread pools), timed in
                 this process against its default

    python bench/bench_runtime_options.py [--size 128] [--prune 0.5] [--threads 2] [--iterations 200]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(size: int, prune: float, work: Path) -> dict[str, dict]:
    """The int8 files: OpenVINO (NNCF) and ONNX Runtime (per-channel QDQ), the latter also with a fixed batch."""
    import onnx
    import torch

    from pipeline import models
    from pipeline.core.artifacts import Artifact
    from pipeline.library.candidates import Env, build as build_candidate
    from pipeline.convert.onnx import export_torch
    from pipeline.optimize import surgery

    torch.manual_seed(0)
    spec = {"name": "efficientnet_lite0", "num_classes": 10, "kwargs": {"same_padding": True}}
    model = models.build_from_spec(spec).eval()
    shape = [1, 3, size, size]
    if prune:
        groups = surgery.channel_groups(model, shape, 10)
        surgery.prune_channels(model, shape, 10, {g["root"]: prune for g in groups}, 8)
    fp32 = work / "model.onnx"
    export_torch(model, shape, fp32)
    meta = {"input_shape": shape, "num_classes": 10}
    calib = np.random.default_rng(0).standard_normal((32, *shape[1:])).astype(np.float32)
    env = Env(src=Artifact("m", "onnx", "fp32", fp32, meta), torch=None, calib=calib, ir_dir=work / "ir")
    out = {}
    for name in ("ort_per_channel_u8", "openvino_int8"):
        (work / name).mkdir()
        path, m = build_candidate(name, work / name, env)
        out[name] = {"path": path, "meta": m}
    g = onnx.load(str(out["ort_per_channel_u8"]["path"]))
    for v in [*g.graph.input, *g.graph.output]:
        d = v.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    onnx.save(g, str(work / "static.onnx"))
    out["ort_batch1"] = {"path": work / "static.onnx", "meta": meta}
    return out


def session_option(path: Path, args) -> tuple[dict, dict]:
    """ONNX Runtime with and without `session.dynamic_block_base=4` (a session option the runtime module does not
    set), timed round-robin in this process the way pipeline.runtimes.measure does: (p50s, speed-up with interval)."""
    import onnxruntime as ort

    from pipeline.runtimes.measure import intervals, time_round_robin

    def session(extra: dict):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = args.threads, 1, 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as in the measuring process
        for k, v in extra.items():
            so.add_session_config_entry(k, v)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    runs = {"default": session({}), "dynamic_block_base=4": session({"session.dynamic_block_base": "4"})}
    fns = {n: (lambda s=s: s.run(None, {"input": x})) for n, s in runs.items()}
    for f in fns.values():
        for _ in range(20):
            f()
    per, ratios = intervals(time_round_robin(fns, args.iterations, 5))
    return per, ratios["dynamic_block_base=4"]["default"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--prune", type=float, default=0.5, help="share of channels pruned (0: the unmodified network)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()
    from pipeline.runtimes import cpu_model, isolated

    with tempfile.TemporaryDirectory() as d:
        files = build(args.size, args.prune, Path(d))
        ov = files["openvino_int8"]
        models = [
            {"name": "openvino dynamic batch", "fmt": "openvino", "path": str(ov["path"]), "meta": ov["meta"]},
            {"name": "openvino static_shape", "fmt": "openvino", "path": str(ov["path"]),
             "meta": {**ov["meta"], "openvino": {**ov["meta"]["openvino"], "static_shape": True}}},
            {"name": "openvino THROUGHPUT", "fmt": "openvino", "path": str(ov["path"]),
             "meta": {**ov["meta"], "openvino": {**ov["meta"]["openvino"], "performance_mode": "THROUGHPUT"}}},
            {"name": "onnxruntime dynamic batch", "fmt": "onnx", "path": str(files["ort_per_channel_u8"]["path"]),
             "meta": files["ort_per_channel_u8"]["meta"]},
            {"name": "onnxruntime batch fixed to 1", "fmt": "onnx", "path": str(files["ort_batch1"]["path"]),
             "meta": files["ort_batch1"]["meta"]},
        ]
        for m in models:
            m["shape"] = [1, 3, args.size, args.size]
        r = isolated.measure(models, args.threads, 20, args.iterations)
        block = session_option(files["ort_per_channel_u8"]["path"], args)
    base = {"openvino": "openvino dynamic batch", "onnx": "onnxruntime dynamic batch"}
    print(f"\nEfficientNet-Lite0 at {args.size} px, {100 * args.prune:.0f}% of channels pruned, int8, batch 1, "
          f"{args.threads} thread(s); {cpu_model()}, {os.cpu_count()} cores; load average "
          f"{r['load_average']['before'].get('1min')} before, {r['load_average']['after'].get('1min')} after.\n")
    print("| runtime, option | p50 ms (95% CI) | vs its default (95% CI) | verdict |\n|---|---|---|---|")
    for m in models:
        v = r["models"][m["name"]]
        b = base[m["fmt"]]
        sp = r["speedups"][m["name"]][b] if m["name"] != b else None
        print(f"| {m['name']} | {v['latency_p50_ms']:.3f} ({v['latency_p50_ci_low_ms']:.3f}-"
              f"{v['latency_p50_ci_high_ms']:.3f}) | " + (f"{sp['speedup']:.2f}x ({sp['ci'][0]:.2f}-{sp['ci'][1]:.2f})"
                                                          f" | {sp['verdict']}" if sp else "1.00x | (default)") + " |")
    per, sp = block
    print(f"\nONNX Runtime session.dynamic_block_base=4 against its default (same file, both sessions in this "
          f"process, round-robin): p50 {per['dynamic_block_base=4']['latency_p50_ms']:.3f} vs "
          f"{per['default']['latency_p50_ms']:.3f} ms, {sp['speedup']:.2f}x ({sp['ci'][0]:.2f}-{sp['ci'][1]:.2f}), "
          f"{sp['verdict']}.")


if __name__ == "__main__":
    main()
