"""LiteRT (ai-edge-litert; tf.lite.Interpreter is deprecated) on the CPU, and a reader of .tflite flatbuffers.

`predict` takes the pipeline's float32 NCHW batch whatever the file wants: it transposes for NHWC models (Keras) and
quantizes/dequantizes int8 inputs and outputs with the scale and zero point stored in the file. `inspect` reads the
flatbuffer itself (not the interpreter, whose delegate hides the operators) to say which operators compute in float.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}


class TfliteModel:
    def __init__(self, path: Path, meta: dict[str, Any], threads: int):
        from importlib import metadata

        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ValueError(load_error(path, meta, e)) from e
        self.inp = self.interpreter.get_input_details()[0]
        self.outs = self.interpreter.get_output_details()
        self.out = self.outs[0]
        self.output_names = [o["name"] for o in self.outs]
        self.nhwc = meta.get("input_layout") == "NHWC"
        self.runtime = f"LiteRT {metadata.version('ai-edge-litert')} CPU (XNNPACK)"
        self.threads = threads

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.inp["dtype"]
        if dtype in (np.int8, np.uint8, np.int16):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
        return x.astype(dtype)

    @staticmethod
    def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
        if detail["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zero = detail["quantization"]
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def predict_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 NCHW batch -> every output as float32 (int8 outputs dequantized with their own scale), in the
        file's output order; the file's batch is 1, so a batch runs sample by sample."""
        x = np.asarray(x, dtype=np.float32)
        if self.nhwc:
            x = x.transpose(0, 2, 3, 1)
        it, outs = self.interpreter, [[] for _ in self.outs]
        for i in range(len(x)):
            it.set_tensor(self.inp["index"], np.ascontiguousarray(self._quantize(x[i : i + 1])))
            it.invoke()
            for k, d in enumerate(self.outs):
                outs[k].append(self._dequantize(it.get_tensor(d["index"]), d))
        return [np.concatenate(o) for o in outs]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW batch -> the first output (a classifier's logits)."""
        return self.predict_outputs(x)[0]


def load_error(path: Path, meta: dict[str, Any], e: BaseException) -> str:
    """Why LiteRT refused the file, named by the file the user knows (not the cache's copy), with a fix that works."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    name = repr(meta.get("imported_from") or path.name)
    custom = unresolved_custom_ops(str(e))
    if custom:
        return (f"LiteRT cannot run {name}: it uses custom operator(s) {', '.join(map(repr, custom))} that LiteRT's "
                f"built-in operators do not include (nothing is registered for them here). Convert the model again "
                f"with built-in operators only (TFLiteConverter: target_spec.supported_ops = [TFLITE_BUILTINS]), or "
                f"import the model it came from (.onnx, .pt2, .keras)")
    if meta.get("imported_from"):
        return (f"LiteRT cannot load {name}: {first}. The file is not a TFLite model LiteRT "
                f"{_litert_version()} can run; export it again or supply another file")
    return (f"LiteRT cannot load {name}: {first}. Export it again (the stage that made it: "
            f"re-run with cache.force=[STAGE]) or report the converter's output as a bug")


def unresolved_custom_ops(text: str) -> list[str]:
    """Custom operator names in LiteRT's "Encountered unresolved custom op: NAME." messages."""
    import re

    return sorted(set(re.findall(r"unresolved custom op: ([^.\s]+)", text)))


def _litert_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def load(path: Path, meta: dict[str, Any], threads: int) -> TfliteModel:
    return TfliteModel(path, meta, threads)


def custom_problem(path: Path | str) -> str | None:
    """Why LiteRT cannot run the file's custom operators, or None. The flatbuffer names them; LiteRT itself decides
    which it has (its built-in resolver includes a few, e.g. TFLite_Detection_PostProcess), so a file that names any
    is loaded once to ask it."""
    custom = inspect(path).get("custom_operators") or []
    if not custom:
        return None
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_path=str(path), num_threads=1).allocate_tensors()
    except (ValueError, RuntimeError) as e:
        missing = unresolved_custom_ops(str(e)) or custom
        return (f"uses custom operator(s) {', '.join(map(repr, missing))} that LiteRT's built-in operators do not "
                f"include, so no stage could run it. Convert the model again with built-in operators only "
                f"(TFLiteConverter: target_spec.supported_ops = [TFLITE_BUILTINS]), or import the model it came from "
                f"(.onnx, .pt2, .keras)")
    return None


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def inspect(path: Path | str) -> dict[str, Any]:
    """What the flatbuffer holds: operator counts, the operators that compute in float, I/O tensors and their
    quantization, weight tensor types. An operator "computes in float" when any of its tensors is a float type;
    QUANTIZE/DEQUANTIZE at the model's edges (float I/O) are listed apart as conversions, not computation."""
    from ai_edge_litert import schema_py_generated as fb

    buf = Path(path).read_bytes()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    op_names, type_names = _enum_names(fb.BuiltinOperator), _enum_names(fb.TensorType)
    g = model.subgraphs[0]
    ttype = lambda i: type_names.get(g.tensors[i].type, str(g.tensors[i].type))
    graph_in, graph_out = set(g.inputs), set(g.outputs)
    ops: Counter = Counter()
    float_ops: Counter = Counter()
    edge_conversions: list[str] = []
    weight_types: Counter = Counter()
    custom: set[str] = set()
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ops[name] += 1
        if name == "CUSTOM":
            cc = code.customCode
            custom.add(cc.decode() if isinstance(cc, bytes) else str(cc or "?"))
        ins = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outs = list(op.outputs if op.outputs is not None else [])
        for i in ins:  # constant inputs (weights, biases) with their storage type
            b = g.tensors[i].buffer
            if 0 < b < len(model.buffers) and model.buffers[b].data is not None and len(model.buffers[b].data):
                weight_types[ttype(i).lower()] += int(len(model.buffers[b].data))
        if any(ttype(i) in FLOAT_TYPES for i in ins + outs):
            at_edge = (name == "QUANTIZE" and set(ins) <= graph_in) or (name == "DEQUANTIZE" and set(outs) <= graph_out)
            if at_edge:
                edge_conversions.append(name)
            else:
                float_ops[name] += 1

    def io(indices):
        out = []
        for i in indices:
            t = g.tensors[i]
            q = t.quantization
            scale = list(map(float, q.scale)) if q is not None and q.scale is not None else []
            zero = list(map(int, q.zeroPoint)) if q is not None and q.zeroPoint is not None else []
            out.append({"name": t.name.decode() if isinstance(t.name, bytes) else t.name,
                        "shape": [int(s) for s in t.shape], "dtype": ttype(i).lower(),
                        **({"quantization": {"scale": scale, "zero_point": zero}} if scale else {})})
        return out

    return {"operators": dict(sorted(ops.items())), "operator_count": sum(ops.values()),
            "float_operators": dict(sorted(float_ops.items())), "integer_only": not float_ops,
            "edge_conversions": edge_conversions, "constant_bytes_by_type": dict(weight_types),
            "custom_operators": sorted(custom),
            "inputs": io(g.inputs), "outputs": io(g.outputs)}


def describe(path: Path | str, meta: dict[str, Any]) -> dict[str, Any]:
    """The interface read from the flatbuffer (pipeline.runtimes.describe)."""
    info = inspect(path)
    return {k: info[k] for k in ("inputs", "outputs", "operators", "float_operators", "integer_only")}
