"""LiteRT's two Python APIs on one .tflite: the `Interpreter` (what pipeline.runtimes.tflite_rt uses) against
`CompiledModel` (LiteRT's newer API), timed alternately in one process, and whether they give the same output.

    python bench/bench_litert_api.py [MODEL.tflite] [--threads 1] [--iterations 200]
Default model: the int8 .tflite that bench/bench_runtimes.py leaves in outputs/bench_runtimes/.
Also prints what each API reports about the input tensor: the runtime layer needs the input's quantization scale and
zero point to feed a full-integer model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "outputs" / "bench_runtimes" / "model.int8.tflite"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()

    import numpy as np
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.options import Options

    cm = CompiledModel.from_file(args.model, options=Options(hardware_accelerators=HardwareAccelerator.CPU,
                                                             cpu_options=CpuOptions(num_threads=args.threads)))
    sig = next(iter(cm.get_signature_list()))
    cm_in = next(iter(cm.get_input_tensor_details(sig).values()))
    cm_out = next(iter(cm.get_output_tensor_details(sig).values()))
    it = Interpreter(model_path=args.model, num_threads=args.threads)
    it.allocate_tensors()
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    dtype = np.dtype(d_in["dtype"])
    rng = np.random.default_rng(0)
    x = (rng.integers(-128, 127, d_in["shape"]) if dtype.kind == "i" else rng.standard_normal(d_in["shape"])).astype(dtype)
    ins, outs = cm.create_input_buffers(0), cm.create_output_buffers(0)
    n_out = int(np.prod(cm_out["shape"]))
    a, b = [], []
    for i in range(args.iterations + 20):
        t = time.perf_counter()
        ins[0].write(x)
        cm.run_by_index(0, ins, outs)
        y_cm = np.asarray(outs[0].read(n_out, np.dtype(cm_out["dtype"])))
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        it.set_tensor(d_in["index"], x)
        it.invoke()
        y_it = it.get_tensor(d_out["index"])
        b.append(time.perf_counter() - t)
    a, b = a[20:], b[20:]
    print(f"{args.model}: {args.threads} thread(s), p50 of {args.iterations} alternating runs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  CompiledModel p50 {1e3 * statistics.median(a):.2f} ms; Interpreter p50 {1e3 * statistics.median(b):.2f} ms;"
          f" same output: {np.array_equal(y_cm.ravel(), y_it.ravel())}")
    print(f"  CompiledModel input details: {cm_in}")
    print(f"  Interpreter input quantization: {d_in.get('quantization')}")


if __name__ == "__main__":
    main()
