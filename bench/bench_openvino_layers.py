"""Where OpenVINO spends its time, per operator type: the default (fp32 IR, bf16 compute where the CPU has it)
against NNCF int8, from OpenVINO's own per-node counters (ov.properties.enable_profiling, `get_profiling_info`).

Reads the IRs that bench/bench_runtimes.py leaves in its workdir (model.xml, model.int8.xml). Per-operator evidence
for the table there: which kinds of layer int8 speeds up and which it does not.

    python bench/bench_openvino_layers.py [--workdir outputs/bench_runtimes] [--threads 1] [--iterations 200]
Prints a Markdown table: per operator type, ms per inference (mean over the iterations) and kernel names.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def profile(path: Path, threads: int, iterations: int) -> tuple[dict, dict, float]:
    import numpy as np
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {props.enable_profiling: True, props.inference_num_threads: threads,
                                                      hints.performance_mode: hints.PerformanceMode.LATENCY})
    req = compiled.create_infer_request()
    shape = list(compiled.input(0).shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20):
        req.infer({0: x})
    ms: dict[str, float] = defaultdict(float)
    kernels: dict[str, set] = defaultdict(set)
    total = 0.0
    for _ in range(iterations):
        req.infer({0: x})
        for p in req.profiling_info:
            if p.status != p.Status.EXECUTED:
                continue
            t = p.real_time.total_seconds() * 1e3
            ms[p.node_type] += t
            kernels[p.node_type].add(p.exec_type)
            total += t
    n = float(iterations)
    return {k: v / n for k, v in ms.items()}, kernels, total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(ROOT / "outputs" / "bench_runtimes"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()
    work = Path(args.workdir)
    f_ms, f_k, f_tot = profile(work / "model.xml", args.threads, args.iterations)
    q_ms, q_k, q_tot = profile(work / "model.int8.xml", args.threads, args.iterations)
    print(f"\nOpenVINO per operator type, {args.threads} thread(s), mean of {args.iterations} inferences "
          f"(sum of node times; load average {os.getloadavg()[0]:.2f})\n")
    print("| operator type | default ms | default kernels | NNCF int8 ms | int8 kernels | ratio |")
    print("|---|---|---|---|---|---|")
    for t in sorted(set(f_ms) | set(q_ms), key=lambda t: -(f_ms.get(t, 0) + q_ms.get(t, 0))):
        a, b = f_ms.get(t, 0.0), q_ms.get(t, 0.0)
        if a + b < 0.01:
            continue
        ratio = f"{a / b:.2f}x" if a and b else "-"
        print(f"| {t} | {a:.3f} | {', '.join(sorted(f_k.get(t, ())))} | {b:.3f} | {', '.join(sorted(q_k.get(t, ())))} "
              f"| {ratio} |")
    print(f"| **all** | **{f_tot:.3f}** | | **{q_tot:.3f}** | | **{f_tot / q_tot:.2f}x** |")


if __name__ == "__main__":
    main()
