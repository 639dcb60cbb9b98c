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


def profile(paths: list[Path], threads: int, iterations: int) -> list[tuple[dict, dict, float]]:
    """Per-node counters of each model, the models run alternately (one inference each in turn), so that a change
    in the machine's load reaches all of them alike."""
    import numpy as np
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    reqs, inputs = [], []
    for path in paths:
        compiled = core.compile_model(str(path), "CPU", {props.enable_profiling: True,
                                                          props.inference_num_threads: threads,
                                                          hints.performance_mode: hints.PerformanceMode.LATENCY})
        shape = [d.get_length() if d.is_static else 1 for d in compiled.input(0).get_partial_shape()]  # batch 1
        reqs.append(compiled.create_infer_request())
        inputs.append(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    for _ in range(20):
        for req, x in zip(reqs, inputs):
            req.infer({0: x})
    ms = [defaultdict(float) for _ in paths]
    kernels = [defaultdict(set) for _ in paths]
    total = [0.0 for _ in paths]
    for _ in range(iterations):
        for i, (req, x) in enumerate(zip(reqs, inputs)):
            req.infer({0: x})
            for p in req.profiling_info:
                if p.status != p.Status.EXECUTED:
                    continue
                t = p.real_time.total_seconds() * 1e3
                ms[i][p.node_type] += t
                kernels[i][p.node_type].add(p.exec_type)
                total[i] += t
    n = float(iterations)
    return [({k: v / n for k, v in m.items()}, k, t / n) for m, k, t in zip(ms, kernels, total)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(ROOT / "outputs" / "bench_runtimes"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()
    work = Path(args.workdir)
    (f_ms, f_k, f_tot), (q_ms, q_k, q_tot) = profile([work / "model.xml", work / "model.int8.xml"], args.threads,
                                                     args.iterations)
    print(f"\nOpenVINO per operator type, {args.threads} thread(s), mean of {args.iterations} inferences "
          f"(sum of node times, the two models alternating; load average {os.getloadavg()[0]:.2f})\n")
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
