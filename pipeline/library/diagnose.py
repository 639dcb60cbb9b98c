"""The first diverging layer: where an int8 model's activations part from its float model's.

Both models run on the same images with every intermediate tensor exposed; the activations of each layer, in the
float graph's order, are compared (cosine similarity, signal-to-noise ratio). The first layer whose cosine falls under
the threshold is named; the error entered at that layer or at the quantization of its inputs. Written as JSON + PNG.

Only activations are compared (graph inputs and what operators compute), never weights, biases or constants. The
comparison streams within a memory cap (`memory_mb`, default 2 GB): the activations are exposed a group at a time,
as many as fit, both models run image by image and only running sums are kept, so a 640 px detector with hundreds of
layers costs several passes instead of all its tensors for all images at once (which took more than 24 GB).

ONNX (QDQ int8 vs fp32): each float tensor is paired with the int8 model's value after its QuantizeLinear /
DequantizeLinear pair (what the next layer receives), found by following the pair in the graph (ONNX Runtime's
quantizer and NNCF name them differently). Both graphs run with graph optimisations off so that every tensor exists; QDQ then
computes each layer in float on dequantized values, which differs from ONNX Runtime's fused int8 kernels only by
their requantization rounding.

TFLite (int8 vs fp32 .tflite): the group's tensors are added to a copy of the flatbuffer's outputs (LiteRT's
`experimental_preserve_all_tensors` would keep every tensor); tensors are matched by name, int8 ones dequantized with
their scale and zero point.

Written here: the grouping, the graph order, the cosine, the first layer under threshold and the report
(qdq_loss_debug keeps every tensor of every image in memory; LiteRT has no comparison of two models).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# A group's activations of one image (both models) get 1/HEADROOM of the cap: the runtime holds each output once
# more while handing it over, and the models' own working memory and the comparison's arithmetic need the rest
# (measured: a comparison that held at once would take 2.4 GB, capped at 200 MB, peaked 151 MB above the loaded
# models; a quarter of the cap for the outputs themselves is what keeps the whole under it).
HEADROOM = 4
DEFAULT_COSINE = 0.98  # a per-layer cosine under this is a layer whose int8 activations no longer follow the float


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Cosine (mean over images) and SNR in dB of `got` against `ref` (same shape, first axis = images)."""
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    num = (r * g).sum(1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(r).sum(1) == np.abs(g).sum(1), 1.0, 0.0))
    noise = ((r - g) ** 2).sum()
    snr = float("inf") if noise == 0 else float(10 * np.log10(max((r ** 2).sum(), 1e-300) / noise))
    return {"cosine": float(cos.mean()), "snr_db": snr, "max_abs_error": float(np.abs(r - g).max())}


def _scopes(node) -> list[str]:
    for m in node.metadata_props:
        if m.key == "pkg.torch.onnx.name_scopes":
            try:
                return [s for s in json.loads(m.value.replace("'", '"')) if s]
            except ValueError:
                return []
    return []


def _layer_names(graph) -> dict[str, str]:
    """tensor -> the layer that produced it, named after the torch module (from the exporter's name scopes: `fc2`,
    `features.3.conv.0`); a functional op outside any module is named after the module feeding it
    (`relu (after fc0)`); graphs from other exporters keep their node names."""
    producer = {t: n for n in graph.node for t in n.output}
    module: dict[str, str] = {}

    def module_of(node, depth=0) -> str | None:
        sc = _scopes(node)
        if len(sc) >= 2:
            return sc[-2]
        if depth > 8:
            return None
        for t in node.input:
            if t in producer:
                m = module_of(producer[t], depth + 1)
                if m:
                    return m
        return None

    for n in graph.node:
        sc = _scopes(n)
        if len(sc) >= 2:
            name = sc[-2]
        elif sc:
            up = next((module_of(producer[t]) for t in n.input if t in producer), None)
            name = f"{sc[0]} (after {up})" if up else sc[0]
        else:
            name = n.name or n.op_type
        for t in n.output:
            module[t] = name
    return module


class _Stats:
    """Running comparison of one tensor over images, so that no tensor is kept after its image: per-image cosine,
    and the sums SNR and the largest error need."""

    def __init__(self):
        self.cos, self.noise, self.signal, self.max_err = [], 0.0, 0.0, 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        m = compare(ref[None], got[None])
        self.cos.append(m["cosine"])
        r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        self.noise += float(((r - g) ** 2).sum())
        self.signal += float((r ** 2).sum())
        self.max_err = max(self.max_err, m["max_abs_error"])

    def result(self) -> dict[str, float]:
        snr = float("inf") if self.noise == 0 else float(10 * np.log10(max(self.signal, 1e-300) / self.noise))
        return {"cosine": float(np.mean(self.cos)), "snr_db": snr, "max_abs_error": self.max_err}


def groups(sizes: list[int], budget: int) -> list[list[int]]:
    """Consecutive index groups whose byte sizes add up to at most `budget` each (a larger tensor alone)."""
    out, cur, used = [], [], 0
    for i, n in enumerate(sizes):
        if cur and used + n > budget:
            out.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    return out + ([cur] if cur else [])


def _onnx_activation_tensors(graph) -> list[tuple[str, str, int]]:
    """(tensor, op type, bytes per image) of every float activation in graph order: graph inputs and node outputs,
    leaving out weights and everything computed from constants alone (shapes, folded scales). Sizes come from ONNX
    shape inference with the batch dimension set to 1; an unknown size counts as the largest known one."""
    import onnx

    const = {t.name for t in graph.initializer}
    vi = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    out = [(i.name, "input") for i in graph.input if i.name not in const]
    for n in graph.node:
        if n.op_type == "Constant" or (n.input and all(i in const or not i for i in n.input)):
            const.update(n.output)
            continue
        out += [(t, n.op_type) for t in n.output if t]

    def nbytes(name):
        v = vi.get(name)
        tt = v.type.tensor_type if v is not None else None
        if tt is None or tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            return None if tt is None else -1  # -1: not a float tensor
        dims = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 0) for i, d in enumerate(tt.shape.dim)]
        return 4 * int(np.prod(dims)) if all(dims) else None

    sizes = [(t, op, nbytes(t)) for t, op in out]
    known = max([b for _, _, b in sizes if b and b > 0] or [4])
    return [(t, op, b if b is not None else known) for t, op, b in sizes if b != -1]


def _onnx_session(model, outputs: list[str]):
    """An ONNX Runtime session of `model` with `outputs` exposed, graph optimisations off (every tensor exists and
    an int8 QDQ model computes each layer on dequantized values)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                          for t in outputs if t not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def onnx_layers(fp32_path: Path, int8_path: Path, x: np.ndarray, threshold: float = DEFAULT_COSINE,
                memory_mb: int = 2048) -> dict[str, Any]:
    """Per-layer comparison of an int8 QDQ ONNX model with the fp32 ONNX model it was quantized from: each float
    activation against the value the int8 model hands on after its QuantizeLinear/DequantizeLinear pair (the
    naming of ONNX Runtime's quantizer, as its qdq_loss_debug pairs them).

    Streams: the activations are taken a group at a time (as many as fit a quarter of `memory_mb` for one image of both
    models, HEADROOM), each group's two models run image by image and only running sums are kept, so a 640 px detector with
    hundreds of layers is compared within the cap (several passes instead of one)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import DEQUANT_OUTPUT_SUFFIX, QUANT_INPUT_SUFFIX

    ref_model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    q_model = onnx.load(str(int8_path))
    q_tensors = {t for n in q_model.graph.node for t in n.output} | {i.name for i in q_model.graph.input}
    # what follows a tensor's QuantizeLinear -> DequantizeLinear pair, whoever named them (NNCF keeps the float
    # tensor's name on the Q input; ONNX Runtime renames it <t>_QuantizeLinear_Input and gives <t> to the DQ output)
    q_of = {n.output[0]: n.input[0] for n in q_model.graph.node if n.op_type == "QuantizeLinear"}
    after_qdq = {q_of[n.input[0]]: n.output[0] for n in q_model.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in q_of}
    names = _layer_names(ref_model.graph)
    pairs = []  # (layer, op, float tensor, the int8 model's tensor after Q/DQ, bytes per image)
    quantized = False
    for t, op, size in _onnx_activation_tensors(ref_model.graph):
        post = after_qdq.get(t) or after_qdq.get(t + QUANT_INPUT_SUFFIX) or (
            t + DEQUANT_OUTPUT_SUFFIX if t + DEQUANT_OUTPUT_SUFFIX in q_tensors else None)
        quantized |= post is not None
        post = post or t  # (a tensor the quantizer left in float keeps its name)
        if post in q_tensors:
            pairs.append((names.get(t, t) if op != "input" else t, op, t, post, size))
    if not quantized:
        raise ValueError(f"{int8_path} and {fp32_path} share no quantized tensor: compare an int8 QDQ model with the "
                         f"fp32 model it was quantized from")
    name = ref_model.graph.input[0].name
    stats = [_Stats() for _ in pairs]
    for g in groups([2 * size for *_, size in pairs], memory_mb * 2 ** 20 // HEADROOM):
        ref_s = _onnx_session(ref_model, [pairs[i][2] for i in g])
        q_s = _onnx_session(q_model, [pairs[i][3] for i in g])
        for k in range(len(x)):
            feed = {name: np.ascontiguousarray(x[k : k + 1], dtype=np.float32)}
            ref = dict(zip([o.name for o in ref_s.get_outputs()], ref_s.run(None, feed)))
            got = dict(zip([o.name for o in q_s.get_outputs()], q_s.run(None, feed)))
            for i in g:
                r, q = ref.get(pairs[i][2]), got.get(pairs[i][3])
                if r is not None and q is not None and r.shape == q.shape:
                    stats[i].add(r[0] if r.shape[:1] == (1,) else r, q[0] if q.shape[:1] == (1,) else q)
                ref.pop(pairs[i][2], None)
            del ref, got
        del ref_s, q_s
    layers = [{"index": 0, "layer": layer, "op_type": op, "tensor": t, **st.result()}
              for (layer, op, t, _, _), st in zip(pairs, stats) if st.cos]
    for i, l in enumerate(layers):
        l["index"] = i
    return _report("onnx", fp32_path, int8_path, layers, threshold, len(x))


def _tflite_activations(path: Path) -> tuple[list[tuple[str, int, int]], Any]:
    """(name, tensor index, bytes) of every activation of a .tflite in execution order: graph inputs and operator
    outputs whose buffer holds no data (weights, biases and int32 constants have one), and the flatbuffer object."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(Path(path).read_bytes())
    g = model.subgraphs[0]
    const = lambda i: 0 < g.tensors[i].buffer < len(model.buffers) and model.buffers[g.tensors[i].buffer].data is not None \
        and len(model.buffers[g.tensors[i].buffer].data) > 0
    order = list(g.inputs) + [i for op in g.operators for i in (op.outputs if op.outputs is not None else []) if i >= 0]
    out, seen = [], set()
    for i in order:
        t = g.tensors[i]
        if i in seen or const(i):
            continue
        seen.add(i)
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        shape = [max(int(d), 1) for d in (t.shape if t.shape is not None else [])]
        out.append((name, i, 4 * int(np.prod(shape)) if shape else 4))
    return out, model


def _tflite_interpreter(model, indices: list[int]):
    """A LiteRT interpreter of `model` (flatbuffer object) with the tensors `indices` added to its outputs; only
    those stay alive after a run (no experimental_preserve_all_tensors, which keeps every tensor of the model)."""
    import copy

    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    m = copy.copy(model)
    g = copy.copy(model.subgraphs[0])
    g.outputs = list(g.outputs) + [i for i in indices if i not in set(g.outputs)]
    m.subgraphs = [g, *model.subgraphs[1:]]
    m.signatureDefs = None  # (the signature lists the original outputs only)
    it = Interpreter(model_content=bytes(fbu.convert_object_to_bytearray(m)), num_threads=2)
    it.allocate_tensors()
    return it


def tflite_layers(fp32_path: Path, int8_path: Path, x: np.ndarray, threshold: float = DEFAULT_COSINE,
                  nhwc: bool = False, memory_mb: int = 2048) -> dict[str, Any]:
    """Per-layer comparison of an int8 .tflite with the fp32 .tflite of the same model: activations only (operator
    outputs; never weights, biases or int32 constants), matched by name, int8 ones dequantized with their scale and
    zero point. Streams like onnx_layers: a group of activations at a time, image by image, running sums only."""
    ref_acts, ref_model = _tflite_activations(fp32_path)
    got_acts, got_model = _tflite_activations(int8_path)
    got_index = {n: i for n, i, _ in got_acts}
    pairs = [(n, i, got_index[n], b) for n, i, b in ref_acts if n and n in got_index]
    if not pairs:
        raise ValueError(f"{int8_path} and {fp32_path} share no activation tensor names: compare two .tflite files "
                         f"converted from the same model by the same converter")

    def feed(it, xi):
        d = it.get_input_details()[0]
        xi = xi.transpose(0, 2, 3, 1) if nhwc else xi
        if d["dtype"] in (np.int8, np.uint8, np.int16):
            s, z = d["quantization"]
            xi = np.clip(np.round(xi / s) + z, np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
        it.set_tensor(d["index"], xi.astype(d["dtype"]))
        it.invoke()

    def value(it, index):
        d = next(o for o in it.get_output_details() if o["index"] == index)
        v = it.get_tensor(index)
        s, z = d["quantization"]
        return (v.astype(np.float32) - z) * s if v.dtype in (np.int8, np.uint8, np.int16) and s else v.astype(np.float32)

    stats = [_Stats() for _ in pairs]
    for grp in groups([2 * b for *_, b in pairs], memory_mb * 2 ** 20 // HEADROOM):
        ref_it = _tflite_interpreter(ref_model, [pairs[i][1] for i in grp])
        got_it = _tflite_interpreter(got_model, [pairs[i][2] for i in grp])
        for k in range(len(x)):
            feed(ref_it, x[k : k + 1])
            feed(got_it, x[k : k + 1])
            for i in grp:
                r, q = value(ref_it, pairs[i][1]), value(got_it, pairs[i][2])
                if r.shape == q.shape:
                    stats[i].add(r, q)
        del ref_it, got_it
    layers = [{"index": 0, "layer": n, "op_type": "", "tensor": n, **st.result()}
              for (n, *_), st in zip(pairs, stats) if st.cos]
    for i, l in enumerate(layers):
        l["index"] = i
    return _report("tflite", fp32_path, int8_path, layers, threshold, len(x))


def _report(fmt: str, fp32_path, int8_path, layers: list[dict], threshold: float, n: int) -> dict[str, Any]:
    first = next((l for l in layers if l["cosine"] < threshold), None)
    return {"format": fmt, "reference": str(fp32_path), "int8": str(int8_path), "images": n,
            "threshold_cosine": threshold, "layers": layers, "first_diverging": first,
            "worst": min(layers, key=lambda l: l["cosine"]) if layers else None}


def first_diverging_layer(fmt: str, fp32_path: Path, int8_path: Path, x: np.ndarray,
                          threshold: float = DEFAULT_COSINE, meta: dict[str, Any] | None = None,
                          memory_mb: int = 2048) -> dict[str, Any]:
    """Per-layer comparison of an int8 model with its float model of the same format (onnx or tflite), within
    `memory_mb` of activations held at once. `x` is what the model takes (pipeline.runtimes.adapt_input)."""
    if fmt == "onnx":
        return onnx_layers(Path(fp32_path), Path(int8_path), x, threshold, memory_mb)
    if fmt == "tflite":
        return tflite_layers(Path(fp32_path), Path(int8_path), x, threshold,
                             nhwc=(meta or {}).get("input_layout") == "NHWC", memory_mb=memory_mb)
    raise ValueError(f"no per-layer comparison for {fmt!r} models (onnx, tflite)")


def message(report: dict[str, Any]) -> str:
    """One sentence for a parity failure: which layer diverged first, by how much."""
    f = report.get("first_diverging")
    if not f:
        w = report.get("worst")
        return (f"no layer under cosine {report['threshold_cosine']:g}"
                + (f" (lowest: {w['layer']} {w['cosine']:.3f})" if w else ""))
    op = f" ({f['op_type']})" if f.get("op_type") else ""
    return (f"first diverging layer: {f['layer']}{op}, layer {f['index'] + 1} of {len(report['layers'])}, cosine "
            f"{f['cosine']:.3f} < {report['threshold_cosine']:g} (SNR {f['snr_db']:.1f} dB), tensor {f['tensor']!r}")


def write(report: dict[str, Any], directory: Path, stem: str = "diverging_layer") -> list[Path]:
    """`<stem>.json` and `<stem>.png` (cosine and SNR per layer, the first diverging layer marked) in `directory`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / f"{stem}.json"
    js.write_text(json.dumps(report, indent=1, default=lambda v: None if v != v else str(v)))
    layers = report["layers"]
    idx = [l["index"] for l in layers]
    fig, ax = plt.subplots(figsize=(max(6, len(layers) * 0.12 + 3), 4))
    ax.plot(idx, [l["cosine"] for l in layers], marker=".", label="cosine (int8 vs float)")
    ax.axhline(report["threshold_cosine"], color="grey", ls="--", lw=0.8, label=f"threshold {report['threshold_cosine']:g}")
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("cosine")
    ax2 = ax.twinx()
    ax2.plot(idx, [min(l["snr_db"], 99.0) for l in layers], color="tab:orange", alpha=0.6, lw=0.8, label="SNR dB")
    ax2.set_ylabel("SNR dB (capped at 99)")
    f = report.get("first_diverging")
    if f:
        ax.axvline(f["index"], color="red", lw=1)
        ax.annotate(f["layer"], (f["index"], f["cosine"]), color="red", fontsize=8, xytext=(4, -12),
                    textcoords="offset points")
    ax.set_title(message(report)[:120], fontsize=8)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    png = directory / f"{stem}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [js, png]
