"""Per-layer profile of a model artifact: op type, output shape, MACs, parameters, weight and activation bytes,
precision. ONNX and TFLite are read directly; a PyTorch model is profiled through its ONNX export.

Operators are named in TFLite's vocabulary (CONV_2D, DEPTHWISE_CONV_2D, ...) whatever the format, so that the
delegates' documented operator lists (coverage.py) apply to every artifact; `source_op` keeps the original name.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "int32": 4, "int64": 8}
# Operators that only rename or reshape memory: no kernel of their own.
NO_COST = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "IDENTITY", "SHAPE"}


@dataclass
class Layer:
    name: str
    op: str  # TFLite-vocabulary operator name
    source_op: str  # the artifact's own operator name (ONNX op_type, TFLite builtin)
    output_shape: list[int]
    macs: int = 0  # multiply-accumulates
    params: int = 0  # weight + bias elements
    weight_bytes: int = 0
    input_bytes: int = 0  # activation bytes read (non-constant inputs)
    output_bytes: int = 0  # activation bytes written
    precision: str = "fp32"  # fp32 | fp16 | int8 (what the operator computes in)
    inputs: list[str] = field(default_factory=list)  # layers whose outputs it reads
    attrs: dict[str, Any] = field(default_factory=dict)  # e.g. groups, kernel, clip range

    @property
    def output_elements(self) -> int:
        return math.prod(self.output_shape) if self.output_shape else 0


@dataclass
class Profile:
    format: str
    precision: str  # the artifact's headline precision
    layers: list[Layer]
    source: str = ""  # what was read (file, or "ONNX export of ...")

    def totals(self) -> dict[str, Any]:
        ls = self.layers
        peak_act = max((l.input_bytes + l.output_bytes for l in ls), default=0)
        weights = sum(l.weight_bytes for l in ls)
        return {"layers": len(ls), "macs": sum(l.macs for l in ls), "params": sum(l.params for l in ls),
                "weight_bytes": weights, "activation_bytes": sum(l.output_bytes for l in ls),
                "peak_activation_bytes": peak_act,
                "ram_estimate_mb": (weights + peak_act) / 1e6,
                "precisions": sorted({l.precision for l in ls})}

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "precision": self.precision, "source": self.source, "totals": self.totals(),
                "layers": [{**asdict(l), "output_elements": l.output_elements} for l in self.layers]}

    def with_precision(self, precision: str) -> "Profile":
        """The same graph as if every operator ran at `precision` (weights and activations re-sized)."""
        b = BYTES[precision]
        out = []
        for l in self.layers:
            ob = BYTES.get(l.precision, 4)
            out.append(Layer(**{**asdict(l), "precision": precision, "weight_bytes": l.params * b,
                                "input_bytes": l.input_bytes // ob * b, "output_bytes": l.output_bytes // ob * b}))
        return Profile(self.format, precision, out, self.source + f" (as {precision})")


def profile_artifact(fmt: str, path: Path | str, meta: dict | None = None) -> Profile:
    """Profile an artifact of format `fmt`. Raises ValueError for formats that cannot be read here."""
    path = Path(path)
    if fmt == "onnx":
        return profile_onnx(path)
    if fmt == "tflite":
        return profile_tflite(path)
    if fmt == "torch":
        return profile_torch(path, meta or {})
    raise ValueError(f"cannot profile a {fmt} artifact: profile its ONNX or TFLite export instead")


# --- ONNX ------------------------------------------------------------------------------------------------------------
_ONNX_DTYPE = {1: "fp32", 10: "fp16", 3: "int8", 2: "int8", 6: "int32", 7: "int64", 11: "fp32"}
_ONNX_SIMPLE = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "HardSwish": "HARD_SWISH", "Tanh": "TANH", "Add": "ADD",
                "Mul": "MUL", "Sub": "SUB", "Div": "DIV", "ReduceMean": "MEAN", "GlobalAveragePool": "MEAN",
                "AveragePool": "AVERAGE_POOL_2D", "MaxPool": "MAX_POOL_2D", "Reshape": "RESHAPE", "Flatten": "RESHAPE",
                "Squeeze": "RESHAPE", "Unsqueeze": "RESHAPE", "Identity": "IDENTITY", "Transpose": "TRANSPOSE",
                "Concat": "CONCATENATION", "Pad": "PAD", "Softmax": "SOFTMAX", "BatchNormalization": "BATCH_NORM",
                "LeakyRelu": "LEAKY_RELU", "PRelu": "PRELU", "Shape": "SHAPE", "Gather": "GATHER",
                "Slice": "STRIDED_SLICE", "Split": "SPLIT", "ConvTranspose": "TRANSPOSE_CONV", "Sqrt": "SQRT",
                "Exp": "EXP", "Max": "MAXIMUM", "Min": "MINIMUM", "ReduceMax": "REDUCE_MAX", "Cast": "CAST"}
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def profile_onnx(path: Path) -> Profile:
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # shapes stay partial; MACs of layers without shapes are 0
        pass
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts: dict[str, Any] = {n: numpy_helper.to_array(t) for n, t in inits.items() if t.ByteSize() < 4096}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]  # symbolic batch -> 1
        shapes[vi.name], dtypes[vi.name] = dims, _ONNX_DTYPE.get(tt.elem_type, "fp32")
    for name, t in inits.items():
        shapes[name], dtypes[name] = list(t.dims), _ONNX_DTYPE.get(t.data_type, "fp32")

    # Q/DQ pairs mark int8 tensors (QDQ format): see through them to the real producer and the weights.
    producer: dict[str, Any] = {o: n for n in g.node for o in n.output}
    quantized: set[str] = set()  # tensors that are dequantized from int8 (activations or weights)

    def real(t: str) -> str:
        """Follow DequantizeLinear <- QuantizeLinear back to the float tensor they wrap."""
        seen = 0
        while t in producer and producer[t].op_type in _QDQ and seen < 4:
            n = producer[t]
            if n.op_type == "DequantizeLinear":
                quantized.add(t)
            t = n.input[0]
            seen += 1
        return t

    def is_weight(t: str) -> bool:
        r = real(t)
        return r in inits or (r in producer and producer[r].op_type == "Constant")

    layer_of: dict[str, str] = {}  # tensor -> name of the layer that produced it
    layers: list[Layer] = []
    for i, n in enumerate(g.node):
        if n.op_type in _QDQ or n.op_type == "Constant":
            continue
        name = n.name or f"{n.op_type}_{i}"
        out = n.output[0]
        out_shape = shapes.get(out, [])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        acts = [t for t in n.input if t and not is_weight(t)]
        weights = [t for t in n.input if t and is_weight(t)]
        w_elems = sum(math.prod(shapes.get(real(t), [])) for t in weights
                      if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose", "BatchNormalization", "PRelu"))
        any_q = any(t in quantized or real(t) != t for t in acts)
        w_q = any(real(t) != t for t in weights)
        out_q = any(c.op_type == "QuantizeLinear" for c in g.node if out in c.input)
        if acts and any_q and (w_q or not weights or n.op_type not in ("Conv", "Gemm", "MatMul")):
            prec = "int8"
        elif w_q and n.op_type in ("Conv", "Gemm", "MatMul"):
            prec = "int8"
        else:
            prec = dtypes.get(out, "fp32") if dtypes.get(out, "fp32") in ("fp32", "fp16") else "fp32"
        if out_q and prec == "fp32" and any_q:
            prec = "int8"
        ab = BYTES.get(prec, 4)
        op, macs = _onnx_op(n.op_type, attrs, out_shape, [shapes.get(real(t), []) for t in weights],
                            [shapes.get(real(t), []) for t in acts], consts, [real(t) for t in n.input])
        w_bytes = w_elems * (1 if w_q else BYTES.get(dtypes.get(real(weights[0]), "fp32"), 4)) if weights else 0
        layer = Layer(name=name, op=op, source_op=n.op_type, output_shape=out_shape, macs=int(macs),
                      params=int(w_elems), weight_bytes=int(w_bytes),
                      input_bytes=int(sum(math.prod(shapes.get(real(t), [0])) for t in acts) * ab),
                      output_bytes=int(math.prod(out_shape) * ab) if out_shape else 0, precision=prec,
                      inputs=[layer_of[real(t)] for t in acts if real(t) in layer_of],
                      attrs={k: v for k, v in attrs.items() if isinstance(v, (int, float))})
        if op == "RELU6":
            layer.attrs["clip"] = [0, 6]
        for o in n.output:
            layer_of[o] = name
        layers.append(layer)
    precs = {l.precision for l in layers if l.macs}
    head = "int8" if "int8" in precs else ("fp16" if "fp16" in precs else "fp32")
    return Profile("onnx", head, layers, str(path))


def _onnx_op(op_type: str, attrs: dict, out: list[int], wshapes: list[list[int]], ashapes: list[list[int]],
             consts: dict, inputs: list[str]) -> tuple[str, int]:
    out_elems = math.prod(out) if out else 0
    if op_type in ("Conv", "ConvTranspose"):
        w = wshapes[0] if wshapes else []
        group = int(attrs.get("group", 1))
        macs = out_elems * math.prod(w[1:]) if w else 0  # W: [Cout, Cin/group, kh, kw]
        if op_type == "ConvTranspose":
            return "TRANSPOSE_CONV", (math.prod(ashapes[0]) * (w[1] * math.prod(w[2:])) if w and ashapes else 0)
        cin = ashapes[0][1] if ashapes and len(ashapes[0]) > 1 else None
        if group > 1 and cin is not None and group == cin and len(w) > 1 and w[1] == 1:
            return "DEPTHWISE_CONV_2D", macs
        return "CONV_2D", macs
    if op_type in ("Gemm", "MatMul"):
        if wshapes:
            w = wshapes[0]
            k = w[0] if op_type == "MatMul" or not attrs.get("transB") else w[-1]
            return "FULLY_CONNECTED", out_elems * k
        a = ashapes[0] if ashapes else []
        return "BATCH_MATMUL", out_elems * (a[-1] if a else 0)
    if op_type == "Clip":
        lo, hi = (consts.get(inputs[1]) if len(inputs) > 1 else None), (consts.get(inputs[2]) if len(inputs) > 2 else None)
        lo = float(lo) if lo is not None else attrs.get("min")
        hi = float(hi) if hi is not None else attrs.get("max")
        if lo == 0 and hi == 6:
            return "RELU6", 0
        if lo == 0 and hi is None:
            return "RELU", 0
        if lo == -1 and hi == 1:
            return "RELU_N1_TO_1", 0
        return "CLIP", 0
    if op_type == "Resize":
        return ("RESIZE_NEAREST_NEIGHBOR" if attrs.get("mode", b"nearest") in (b"nearest", "nearest")
                else "RESIZE_BILINEAR"), 0
    if op_type in ("AveragePool", "MaxPool"):
        k = attrs.get("kernel_shape", [1, 1])
        return _ONNX_SIMPLE[op_type], out_elems * math.prod(k)
    if op_type in ("ReduceMean", "GlobalAveragePool"):
        return "MEAN", math.prod(ashapes[0]) if ashapes else 0
    return _ONNX_SIMPLE.get(op_type, f"ONNX:{op_type}"), 0


# --- TFLite ----------------------------------------------------------------------------------------------------------
_TFL_DTYPE = {"float32": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8", "int32": "int32",
              "int64": "int64", "int16": "int8"}


def profile_tflite(path: Path) -> Profile:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API has no op list; this is what the LiteRT analyzer uses
    produced = {o: op for op in ops for o in op["outputs"]}
    graph_inputs = {t["index"] for t in interp.get_input_details()}

    def dt(i: int) -> str:
        return _TFL_DTYPE.get(np.dtype(tensors[i]["dtype"]).name, "fp32")

    def shape(i: int) -> list[int]:
        return [int(x) for x in tensors[i]["shape"]]

    def const(i: int) -> bool:
        return i >= 0 and i not in produced and i not in graph_inputs

    # fp16 weights arrive through DEQUANTIZE ops on constants: those are part of the weight, not a layer.
    weight_deq = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"
                  and const(op["inputs"][0])}
    layer_of: dict[int, str] = {}
    layers = []
    for op in ops:
        if op["op_name"] == "DEQUANTIZE" and op["outputs"][0] in weight_deq:
            continue
        ins = [i for i in op["inputs"] if i >= 0]
        w = [weight_deq.get(i, i) for i in ins if const(weight_deq.get(i, i))]
        acts = [i for i in ins if not const(weight_deq.get(i, i))]
        out = op["outputs"][0]
        oshape = shape(out)
        name = f"{op['op_name'].lower()}_{op['index']}"
        # QUANTIZE is the float->int8 boundary and runs as an int8 op (delegates that take int8 take it)
        prec = dt(out) if op["op_name"] == "QUANTIZE" or not acts else dt(acts[0])
        if prec not in ("fp32", "fp16", "int8"):
            prec = "fp32"
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
            wmain = [i for i in w if len(shape(i)) >= 2]
            ws = shape(wmain[0]) if wmain else []
            params = sum(math.prod(shape(i)) for i in w)
            wbytes = sum(math.prod(shape(i)) * BYTES.get(dt(i), 4) for i in w)
        else:
            ws, params, wbytes = [], 0, 0
        oe = math.prod(oshape) if oshape else 0
        name_op = op["op_name"]
        if name_op == "CONV_2D" and ws:
            macs = oe * math.prod(ws[1:])  # W: [Cout, kh, kw, Cin]
        elif name_op == "DEPTHWISE_CONV_2D" and ws:
            macs = oe * ws[1] * ws[2]  # W: [1, kh, kw, Cout]
        elif name_op == "FULLY_CONNECTED" and ws:
            macs = oe * ws[-1]  # W: [out, in]
        elif name_op in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN") and acts:
            macs = math.prod(shape(acts[0]))
        else:
            macs = 0
        ab = BYTES.get(prec, 4)
        layer = Layer(name=name, op=name_op, source_op=name_op, output_shape=oshape, macs=int(macs),
                      params=int(params), weight_bytes=int(wbytes),
                      input_bytes=int(sum(math.prod(shape(i)) for i in acts) * ab), output_bytes=int(oe * ab),
                      precision=prec, inputs=[layer_of[i] for i in acts if i in layer_of])
        for o in op["outputs"]:
            layer_of[o] = name
        layers.append(layer)
    precs = {l.precision for l in layers if l.macs}
    head = "int8" if "int8" in precs else ("fp16" if any(dt(i) == "fp16" for i in weight_deq.values()) else "fp32")
    return Profile("tflite", head, layers, str(path))


# --- PyTorch (through its ONNX export) -------------------------------------------------------------------------------
def profile_torch(path: Path, meta: dict) -> Profile:
    from pipeline.models import load_torch

    model, _ = load_torch(path)
    shape = meta.get("input_shape") or [1, 3, 224, 224]
    return profile_torch_module(model, shape, f"ONNX export of {path}")


def profile_torch_module(model, input_shape: list[int], source: str = "PyTorch module") -> Profile:
    """Export `model` to ONNX in a temporary folder (the same exporter as export_onnx) and profile that graph."""
    import warnings

    import torch

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_path = Path(d) / "model.onnx"
        prog = torch.onnx.export(model.eval(), (torch.zeros(input_shape),), input_names=["input"],
                                 output_names=["logits"], opset_version=18, dynamo=True, verbose=False)
        prog.save(str(onnx_path))
        prof = profile_onnx(onnx_path)
    prof.format, prof.source = "torch", source
    return prof
