"""The runner copied to a board and run there: `PYTHON device_runner.py SPEC.json` prints one result line.

Self-contained on purpose: it imports only the standard library, numpy and whichever runtime the device has (LiteRT,
tflite-runtime or TensorFlow Lite for .tflite; ONNX Runtime or OpenVINO for .onnx; OpenVINO for an IR; ExecuTorch for
.pte). Nothing of the pipeline package is on the device. Each model is fed random data of the shape, layout and type
its own file declares (a dynamic dimension takes the pipeline's size, in the model's layout). All models are loaded into this one process and timed round-robin, like
pipeline.runtimes.measure on the host, in `repeats` rounds of `iterations` timed runs each.

Exit status: 0 result printed; 3 no runtime for a model's format; 4 the device's disk is full; 1 anything else.
The result (or the error) is one line starting with RESULT_MARK, so runtime log lines on stdout are ignored.
"""
import errno
import json
import os
import platform
import sys
import time

RESULT_MARK = "EDGE_PIPELINE_RESULT "
EXIT_NO_RUNTIME, EXIT_DISK_FULL = 3, 4


class NoRuntime(Exception):
    pass


def _version(dist):
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        return "unknown"


def _rss_kb(field="VmRSS:"):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        for key in ("model name", "Model", "Hardware"):
            for line in info.splitlines():
                if line.startswith(key) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _dim(d):
    """A declared dimension as an int, -1 when it is dynamic (None, -1, a name such as "N", a numpy integer < 1)."""
    try:
        d = int(d)
    except (TypeError, ValueError):
        return -1
    return d if d > 0 else -1


def _fill(declared, want):
    """The shape to feed: the model's declared dimensions, its dynamic ones taken from `want` (the pipeline's input
    shape in the model's layout) where the ranks match, else 1."""
    dims = [_dim(d) for d in declared]
    if want and len(want) == len(dims):
        return [d if d > 0 else max(1, _dim(w)) for d, w in zip(dims, want)]
    return [d if d > 0 else 1 for d in dims]


def _wanted(m):
    """The pipeline's input shape for model spec `m` ([batch, C, H, W]) in the model's own layout."""
    shape = m.get("shape")
    if shape and len(shape) == 4 and m.get("layout") == "NHWC":
        return [shape[0], shape[2], shape[3], shape[1]]
    return shape


def _random_input(np, shape, dtype):
    rng = np.random.default_rng(0)
    shape = [max(1, _dim(d)) for d in shape]
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


class Tflite:
    """LiteRT's Python interpreter under any of its three package names (all run XNNPACK on the CPU)."""

    def __init__(self, np, path, threads, want=None):
        tried = []
        for mod, dist in (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter",
                                                                            "tflite-runtime"),
                          ("tensorflow.lite", "tensorflow")):
            try:
                m = __import__(mod, fromlist=["Interpreter"])
                Interpreter = m.Interpreter
                break
            except ImportError:
                tried.append(dist)
        else:
            raise NoRuntime("tflite: none of " + ", ".join(tried) + " is installed")
        self.runtime, self.version = {"ai-edge-litert": "LiteRT", "tflite-runtime": "tflite-runtime",
                                      "tensorflow": "TensorFlow Lite"}[dist], _version(dist)
        self.it = Interpreter(model_path=path, num_threads=threads)
        for k, d in enumerate(self.it.get_input_details()):  # a dynamic dimension takes the pipeline's size
            shape = _fill(d.get("shape_signature", d["shape"]), want if k == 0 else None)
            if [int(v) for v in d["shape"]] != shape:
                self.it.resize_tensor_input(d["index"], shape)
        self.it.allocate_tensors()
        self.inputs = [(d["index"], _random_input(np, d["shape"], d["dtype"])) for d in self.it.get_input_details()]
        self.out = self.it.get_output_details()[0]["index"]

    def run(self):
        for i, x in self.inputs:
            self.it.set_tensor(i, x)
        self.it.invoke()
        return self.it.get_tensor(self.out)


class OpenVino:
    """OpenVINO's CPU plugin: an IR (model.xml with its model.bin beside it) or an ONNX file."""

    def __init__(self, np, path, threads, want=None):
        try:
            import openvino as ov
        except ImportError:
            raise NoRuntime("openvino: openvino is not installed")
        core = ov.Core()
        model = core.read_model(path)
        for k, inp in enumerate(model.inputs):
            if inp.get_partial_shape().is_dynamic:
                dims = [-1 if d.is_dynamic else d.get_length() for d in inp.get_partial_shape()]
                model.reshape({inp.get_any_name(): _fill(dims, want if k == 0 else None)})
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
        self.req = self.compiled.create_infer_request()
        self.feed = [_random_input(np, list(i.get_shape()), i.get_element_type().to_dtype()) for i in
                     self.compiled.inputs]
        self.runtime, self.version = "OpenVINO CPU", ov.__version__ if hasattr(ov, "__version__") else _version(
            "openvino")
        self.run = lambda: self.req.infer(self.feed)


class Onnx(OpenVino):
    """ONNX Runtime on the CPU, or OpenVINO's CPU plugin when ONNX Runtime is not installed."""

    def __init__(self, np, path, threads, want=None):
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if ort is not None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            # idle spinning threads of one model would take the cores of the next one timed round-robin
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            tmap = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
                    "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(int32)": "int32"}
            self.feed = {i.name: _random_input(np, _fill(i.shape, want if k == 0 else None),
                                               tmap.get(i.type, "float32"))
                         for k, i in enumerate(self.sess.get_inputs())}
            self.runtime, self.version = "onnxruntime CPUExecutionProvider", ort.__version__
            self.run = lambda: self.sess.run(None, self.feed)[0]
            return
        try:
            super().__init__(np, path, threads, want)
        except NoRuntime:
            raise NoRuntime("onnx: neither onnxruntime nor openvino is installed")


class Pte:
    """ExecuTorch's Python runtime (the .pte's delegates, e.g. XNNPACK, are compiled in)."""

    def __init__(self, np, path, threads, want=None):
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError:
            raise NoRuntime("executorch: executorch (with torch) is not installed")
        self.method = Runtime.get().load_program(path).load_method("forward")
        try:  # the program's own input sizes (its batch is fixed when it was exported)
            declared = list(self.method.metadata.input_tensor_meta(0).sizes())
        except Exception:
            declared = [1, *want[1:]] if want else []
        self.inp = [torch.from_numpy(_random_input(np, _fill(declared, want), "float32"))]
        torch.set_num_threads(threads)
        self.runtime, self.version = "ExecuTorch", _version("executorch")
        self.run = lambda: self.method.execute(self.inp)


RUNTIMES = {"tflite": Tflite, "onnx": Onnx, "openvino": OpenVino, "executorch": Pte, "pte": Pte}


def load(np, m, threads):
    kind = RUNTIMES.get(m["fmt"])
    if kind is None:
        raise NoRuntime(m["fmt"] + ": this runner runs .tflite, .onnx, OpenVINO IR and ExecuTorch .pte models only")
    return kind(np, m["file"], threads, _wanted(m))


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        import numpy as np
    except ImportError:
        raise NoRuntime("numpy is not installed")
    threads = int(spec["threads"]) if int(spec["threads"]) > 0 else _cores()
    loaded, out = {}, {}
    for m in spec["models"]:
        rss0, t0 = _rss_kb(), time.perf_counter()
        model = load(np, m, threads)
        model.run()  # the first inference's lazy allocations count as loading
        out[m["name"]] = {"load_ms": (time.perf_counter() - t0) * 1e3, "load_rss_mb": (_rss_kb() - rss0) / 1024,
                          "runtime": model.runtime, "version": model.version}
        loaded[m["name"]] = model
    for _ in range(int(spec["warmup"])):
        for model in loaded.values():
            model.run()
    times = {n: [] for n in loaded}
    per_repeat = {n: [] for n in loaded}
    for _ in range(max(1, int(spec.get("repeats", 1)))):
        rep = {n: [] for n in loaded}
        for _ in range(int(spec["iterations"])):
            for name, model in loaded.items():
                t = time.perf_counter()
                model.run()
                rep[name].append((time.perf_counter() - t) * 1e3)
        for n, ts in rep.items():
            times[n] += ts
            per_repeat[n].append(float(np.percentile(ts, 50)))
    for name, ts in times.items():
        out[name].update(latency_p50_ms=float(np.percentile(ts, 50)), latency_p90_ms=float(np.percentile(ts, 90)),
                         latency_mean_ms=float(np.mean(ts)), repeat_p50_ms=per_repeat[name], samples=len(ts))
    return {"models": out, "cpu": _cpu(), "machine": platform.machine(), "threads": threads, "cores": _cores(),
            "python": platform.python_version(), "numpy": np.__version__, "peak_rss_mb": _rss_kb("VmHWM:") / 1024}


def _emit(obj):
    sys.stdout.write(RESULT_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        _emit(main(sys.argv[1]))
    except NoRuntime as e:
        _emit({"error": "no_runtime", "detail": str(e), "python": sys.executable})
        sys.exit(EXIT_NO_RUNTIME)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            _emit({"error": "disk_full", "detail": str(e)})
            sys.exit(EXIT_DISK_FULL)
        raise
