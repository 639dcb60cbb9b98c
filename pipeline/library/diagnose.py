"""The first diverging layer: where an int8 model's activations part from its float model's.

Both models run on the same images with every intermediate tensor exposed; the activations of each layer, in the
float graph's order, are compared (cosine similarity, signal-to-noise ratio). The first layer whose cosine falls under
the threshold is named; the error entered at that layer or at the quantization of its inputs. Written as JSON + PNG.

ONNX (QDQ int8 vs fp32): ONNX Runtime's `qdq_loss_debug` exposes every intermediate tensor and pairs each float
tensor with the int8 model's value after its QuantizeLinear/DequantizeLinear pair (what the next layer receives).
Both graphs run with graph optimisations off so that every tensor exists; QDQ then computes each layer in float on
dequantized values, which differs from ONNX Runtime's fused int8 kernels only by their requantization rounding.

TFLite (int8 vs fp32 .tflite): LiteRT keeps every tensor with `experimental_preserve_all_tensors`; tensors are
matched by name, int8 ones dequantized with their scale and zero point.

Written here: the graph order, the cosine, the first layer under threshold and the report (qdq_loss_debug gives the
tensors and an SNR per tensor, unordered; LiteRT has no comparison of two models).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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


def _onnx_activations(path: Path, x: np.ndarray, tmp: Path) -> dict[str, np.ndarray]:
    """Every float tensor of an ONNX model on `x`, image by image (ONNX Runtime's qdq_loss_debug: the model gets
    each tensor as an extra output and runs with graph optimisations off). name -> (images, values)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    name = onnx.load(str(path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: np.ascontiguousarray(x[i : i + 1], dtype=np.float32)} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    augmented = tmp / f"{Path(path).stem}.augmented.onnx"
    modify_model_output_intermediate_tensors(str(path), str(augmented))
    acts = collect_activations(str(augmented), Reader())
    return {k: np.stack(v) for k, v in acts.items()}


def onnx_layers(fp32_path: Path, int8_path: Path, x: np.ndarray, threshold: float = DEFAULT_COSINE) -> dict[str, Any]:
    """Per-layer comparison of an int8 QDQ ONNX model with the fp32 ONNX model it was quantized from: each float
    tensor against the value the int8 model hands on after its QuantizeLinear/DequantizeLinear pair."""
    import tempfile

    import onnx
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    with tempfile.TemporaryDirectory() as tmp:
        ref = _onnx_activations(Path(fp32_path), x, Path(tmp))
        got = _onnx_activations(Path(int8_path), x, Path(tmp))
    matching = create_activation_matching(got, ref)
    f = onnx.load(str(fp32_path), load_external_data=False).graph
    order: list[tuple[str, str, str]] = [(i.name, "input", i.name) for i in f.input]
    names = _layer_names(f)
    order += [(names[t], n.op_type, t) for n in f.node for t in n.output if t]
    layers, seen = [], set()
    for layer, op, t in order:
        m = matching.get(t)
        if t in seen or not m or m.get("float") is None or m.get("post_qdq") is None:
            continue
        seen.add(t)
        r, g = np.asarray(m["float"]), np.asarray(m["post_qdq"])
        if r.shape != g.shape:
            continue
        layers.append({"index": len(layers), "layer": layer, "op_type": op, "tensor": t, **compare(r, g)})
    if not layers:
        raise ValueError(f"{int8_path} and {fp32_path} share no quantized tensor: compare an int8 QDQ model with the "
                         f"fp32 model it was quantized from")
    return _report("onnx", fp32_path, int8_path, layers, threshold, len(x))


def tflite_layers(fp32_path: Path, int8_path: Path, x: np.ndarray, threshold: float = DEFAULT_COSINE,
                  nhwc: bool = False) -> dict[str, Any]:
    """Per-layer comparison of an int8 .tflite with the fp32 .tflite of the same model, tensors matched by name."""
    from ai_edge_litert.interpreter import Interpreter

    def run(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
        it = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        order = [d["name"] for d in sorted(it.get_tensor_details(), key=lambda d: d["index"])]
        out: dict[str, list[np.ndarray]] = {}
        for i in range(len(x)):
            xi = x[i : i + 1].transpose(0, 2, 3, 1) if nhwc else x[i : i + 1]
            if inp["dtype"] in (np.int8, np.uint8):
                s, z = inp["quantization"]
                xi = np.clip(np.round(xi / s) + z, *(np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max))
            it.set_tensor(inp["index"], xi.astype(inp["dtype"]))
            it.invoke()
            for d in it.get_tensor_details():
                if d["name"] and "shape" in d and len(d["shape"]) and d["shape"][0] == 1:
                    try:
                        v = it.get_tensor(d["index"])
                    except ValueError:  # constants and freed tensors
                        continue
                    s, z = d["quantization"]
                    v = (v.astype(np.float32) - z) * s if v.dtype in (np.int8, np.uint8, np.int16) and s else v
                    out.setdefault(d["name"], []).append(np.asarray(v, dtype=np.float32))
        return {k: np.concatenate(v) for k, v in out.items() if len(v) == len(x)}, order

    ref, order = run(fp32_path)
    got, _ = run(int8_path)
    layers = []
    for name in order:
        if name in ref and name in got and ref[name].shape == got[name].shape:
            layers.append({"index": len(layers), "layer": name, "op_type": "", "tensor": name,
                           **compare(ref[name], got[name])})
    if not layers:
        raise ValueError(f"{int8_path} and {fp32_path} share no activation tensor names: compare two .tflite files "
                         f"converted from the same model by the same converter")
    return _report("tflite", fp32_path, int8_path, layers, threshold, len(x))


def _report(fmt: str, fp32_path, int8_path, layers: list[dict], threshold: float, n: int) -> dict[str, Any]:
    first = next((l for l in layers if l["cosine"] < threshold), None)
    return {"format": fmt, "reference": str(fp32_path), "int8": str(int8_path), "images": n,
            "threshold_cosine": threshold, "layers": layers, "first_diverging": first,
            "worst": min(layers, key=lambda l: l["cosine"]) if layers else None}


def first_diverging_layer(fmt: str, fp32_path: Path, int8_path: Path, x: np.ndarray,
                          threshold: float = DEFAULT_COSINE, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-layer comparison of an int8 model with its float model of the same format (onnx or tflite)."""
    if fmt == "onnx":
        return onnx_layers(Path(fp32_path), Path(int8_path), x, threshold)
    if fmt == "tflite":
        return tflite_layers(Path(fp32_path), Path(int8_path), x, threshold,
                             nhwc=(meta or {}).get("input_layout") == "NHWC")
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
