"""The signature of a model artifact: named inputs and outputs with shapes, dtypes and layout, and the preprocessing
the model expects; plus the adapter that feeds any model from the pipeline's one data pipeline.

`read(fmt, path, meta)` reads what the file itself holds:
  onnx    graph inputs/outputs (initializers excluded); preprocessing from the model's metadata_props key
          "preprocessing" (JSON, written by the pipeline's exports) when present
  tflite  the flatbuffer's input/output tensors with their int8/uint8 scale and zero point, as
          pipeline.runtimes.tflite_rt.inspect reads them (handed in as meta["tflite"])
  keras   the .keras archive's config.json (no TensorFlow import): input shapes, and a Rescaling layer right after the
          input gives the pixel scale/offset
  torch   the artifact's metadata (input shape); output shapes by running the rebuilt module once on zeros
Then the artifact's `meta["signature"]` and the recipe's overrides (`override`) win over what was read. Layout is
inferred from a rank-4 input's shape when unambiguous (channels 1/3/4 on one side only) and must be given otherwise.

The data pipeline always produces float32 NCHW RGB batches normalised with data.mean/std. `adapt` turns such a batch
into what the model wants: re-normalised to the model's own preprocessing, channel order (BGR), channel count
(grayscale), layout (NHWC) and raw uint8 pixels for a model that takes them; `batches` splits a batch for a model
whose batch dimension is fixed (often 1 in .tflite files).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass
class TensorSpec:
    name: str
    shape: list  # ints; -1 (or a name) for a dynamic dimension
    dtype: str = "float32"
    quantization: Optional[dict] = None  # {"scale": [...], "zero_point": [...]} for int8/uint8 tensors


@dataclass
class Preprocessing:
    """model input = (pixel / scale - mean) / std for pixel values 0..255 in `channel_order` (per-channel lists)."""

    scale: float = 255.0
    mean: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    channel_order: str = "RGB"
    known: bool = False  # False: nothing in the file or the recipe said; the data's own normalisation is used as is


@dataclass
class Signature:
    inputs: list
    outputs: list
    layout: Optional[str] = None  # of the (first) image input: NCHW | NHWC | None (not an image or unknown)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source: str = ""  # where it was read from, for people

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def channels(self) -> Optional[int]:
        s = self.input.shape
        if len(s) != 4 or self.layout is None:
            return None
        c = s[1] if self.layout == "NCHW" else s[3]
        return c if isinstance(c, int) and c > 0 else None

    @property
    def input_size(self) -> Optional[tuple[int, int]]:
        s = self.input.shape
        if len(s) != 4 or self.layout is None:
            return None
        h, w = (s[2], s[3]) if self.layout == "NCHW" else (s[1], s[2])
        return (h, w) if all(isinstance(v, int) and v > 0 for v in (h, w)) else None

    @property
    def fixed_batch(self) -> Optional[int]:
        b = self.input.shape[0] if self.input.shape else None
        return b if isinstance(b, int) and b > 0 else None

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Signature":
        return cls(inputs=[TensorSpec(**t) for t in d["inputs"]], outputs=[TensorSpec(**t) for t in d["outputs"]],
                   layout=d.get("layout"), preprocessing=Preprocessing(**d.get("preprocessing", {})),
                   source=d.get("source", ""))


def infer_layout(shape) -> Optional[str]:
    """NCHW or NHWC from a rank-4 image shape when only one side looks like channels (1, 3 or 4); else None."""
    if len(shape) != 4:
        return None
    c1, c3 = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if c1 and not c3:
        return "NCHW"
    if c3 and not c1:
        return "NHWC"
    return None


# --- readers ----------------------------------------------------------------------------------------------------
def _onnx(path: Path) -> tuple[list, list, dict]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    inits = {t.name for t in g.initializer}

    def spec(v):
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        return TensorSpec(v.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name)

    props = {p.key: p.value for p in m.metadata_props}
    pre = {}
    if "preprocessing" in props:
        try:
            pre = json.loads(props["preprocessing"])
        except ValueError:
            pre = {}
    return [spec(v) for v in g.input if v.name not in inits], [spec(v) for v in g.output], pre


def _tflite(path: Path, meta: dict) -> tuple[list, list, dict]:
    """From the flatbuffer's tensors as pipeline.runtimes.tflite_rt.inspect reads them, handed in as meta["tflite"]
    (the export stage stores them; import_model reads them): this module stays below the runtime layer."""
    info = meta.get("tflite") or {}
    if not info.get("inputs"):
        raise ValueError(f"{path.name}: give the .tflite's tensors in meta['tflite'] "
                         f"(pipeline.runtimes.tflite_rt.inspect(path))")
    conv = lambda t: TensorSpec(t["name"], list(t["shape"]), t["dtype"], t.get("quantization"))
    return [conv(t) for t in info["inputs"]], [conv(t) for t in info["outputs"]], {}


def _keras(path: Path) -> tuple[list, list, dict]:
    try:
        with zipfile.ZipFile(path) as z:
            cfg = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read the Keras archive {path} ({e}); give a model saved with model.save('x.keras')")
    layers = cfg.get("config", {}).get("layers", [])
    inputs, pre = [], {}
    for i, layer in enumerate(layers):
        if layer.get("class_name") == "InputLayer":
            c = layer.get("config", {})
            shape = c.get("batch_shape") or c.get("batch_input_shape") or []
            inputs.append(TensorSpec(c.get("name", f"input_{i}"), [-1 if d is None else d for d in shape],
                                     c.get("dtype", "float32") if isinstance(c.get("dtype"), str) else "float32"))
        elif layer.get("class_name") == "Rescaling" and not pre and i <= 2:
            c = layer["config"]
            scale, offset = float(c.get("scale", 1.0)), float(c.get("offset", 0.0))
            # y = pixel * scale + offset  ==  (pixel / (1 / scale) - (-offset)) / 1
            pre = {"scale": 1.0 / scale, "mean": [-offset] * 3, "std": [1.0] * 3}
    outputs = [TensorSpec(str(o[0]) if isinstance(o, list) else str(o), [])
               for o in cfg.get("config", {}).get("output_layers", [])]
    return inputs, outputs, pre


def _torch(path: Path, meta: dict) -> tuple[list, list, dict]:
    import torch

    from pipeline.models import load_torch

    shape = list(meta.get("input_shape") or [])
    inputs = [TensorSpec("input", shape or [-1, 3, -1, -1])]
    outputs = []
    if shape and all(isinstance(d, int) and d > 0 for d in shape):
        model, _ = load_torch(path)
        with torch.inference_mode():
            out = model(torch.zeros(shape))
        outs = out if isinstance(out, (tuple, list)) else [out]
        names = list(getattr(model, "output_names", [])) or (["logits"] if len(outs) == 1 else [])
        outputs = [TensorSpec(names[i] if i < len(names) else f"output_{i}", list(o.shape)) for i, o in enumerate(outs)]
    return inputs, outputs, dict(meta.get("preprocessing") or {})


def read(fmt: str, path: Path | str, meta: dict[str, Any] | None = None,
         override: dict[str, Any] | None = None) -> Signature:
    """The signature of an artifact: what its file holds, then its metadata, then the recipe's `override`
    (keys: layout, scale, mean, std, channel_order)."""
    meta, path = meta or {}, Path(path)
    readers = {"onnx": _onnx, "keras": _keras}
    if fmt == "torch":
        inputs, outputs, pre = _torch(path, meta)
    elif fmt == "tflite":
        inputs, outputs, pre = _tflite(path, meta)
    elif fmt in readers:
        inputs, outputs, pre = readers[fmt](path)
    elif meta.get("signature"):
        return apply_overrides(Signature.from_dict(meta["signature"]), override)
    else:
        raise ValueError(f"cannot read the signature of a {fmt!r} model; give it in the artifact's metadata")
    if not inputs:
        raise ValueError(f"{path.name}: the model declares no input")
    layout = meta.get("input_layout") or infer_layout(inputs[0].shape)
    sig = Signature(inputs, outputs, layout, Preprocessing(**{**pre, "known": bool(pre)}) if pre else Preprocessing(),
                    source=f"{fmt} file {path.name}")
    if meta.get("signature"):
        stored = Signature.from_dict(meta["signature"])
        sig = replace(sig, layout=stored.layout or sig.layout,
                      preprocessing=stored.preprocessing if stored.preprocessing.known else sig.preprocessing)
    return apply_overrides(sig, override)


def apply_overrides(sig: Signature, override: dict[str, Any] | None) -> Signature:
    """The recipe's word over the file's: layout, and any of scale / mean / std / channel_order."""
    if not override:
        return sig
    o = dict(override)
    unknown = set(o) - {"layout", "scale", "mean", "std", "channel_order"}
    if unknown:
        raise ValueError(f"signature override: unknown key(s) {sorted(unknown)}; allowed: layout, scale, mean, std, "
                         f"channel_order")
    layout = o.pop("layout", None) or sig.layout
    if layout not in (None, *LAYOUTS):
        raise ValueError(f"signature.layout must be NCHW or NHWC, got {layout!r}")
    if o.get("channel_order", "RGB") not in CHANNEL_ORDERS:
        raise ValueError(f"signature.channel_order must be RGB or BGR, got {o['channel_order']!r}")
    for k in ("mean", "std"):
        if k in o:
            v = list(o[k]) if isinstance(o[k], (list, tuple)) else [float(o[k])] * 3
            if len(v) not in (1, 3) or (k == "std" and any(x <= 0 for x in v)):
                raise ValueError(f"signature.{k} needs 1 or 3 numbers{' > 0' if k == 'std' else ''}, got {o[k]}")
            o[k] = v * 3 if len(v) == 1 else v
    pre = replace(sig.preprocessing, **o, known=True) if o else sig.preprocessing
    return replace(sig, layout=layout, preprocessing=pre)


def check(sig: Signature, input_size=None) -> list[str]:
    """Plan-time problems feeding the pipeline's RGB images (input_size: one side or (H, W)) to this model, each with
    the fix."""
    problems = []
    if len(sig.input.shape) == 4 and sig.layout is None:
        problems.append(f"{sig.source}: cannot tell the layout of input {sig.input.name!r} {sig.input.shape} (NCHW or "
                        f"NHWC); give it: model.signature.layout=NHWC (or NCHW)")
    size = sig.input_size
    if size and input_size:
        from pipeline.data.size import hw

        h, w = hw(input_size)
        if size != (h, w):
            problems.append(f"{sig.source}: the model takes {size[0]}x{size[1]} (HxW) images ({sig.layout}) but "
                            f"the data is resized to {h}x{w}: set model.input_size="
                            + (f"{size[0]}" if size[0] == size[1] else f"[{size[0]},{size[1]}]"))
    c = sig.channels
    if c is not None and c not in (1, 3):
        problems.append(f"{sig.source}: input {sig.input.name!r} has {c} channels; images have 3 (RGB) or 1 (gray)")
    return problems


# --- the adapter -------------------------------------------------------------------------------------------------
def adapt(x: np.ndarray, sig: Signature, data_mean=(0.5, 0.5, 0.5), data_std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """A float32 NCHW RGB batch normalised with data_mean/data_std -> the model's input. Known preprocessing is
    re-applied from the recovered pixels; channel order, count, layout and raw-uint8 inputs follow the signature."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise ValueError(f"adapt: expected an NCHW image batch, got shape {list(x.shape)}")
    pre = sig.preprocessing
    wants_pixels = sig.input.dtype == "uint8" and not sig.input.quantization
    if pre.known or wants_pixels:
        m = np.asarray(data_mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(data_std, np.float32).reshape(1, -1, 1, 1)
        pixels = (x * s + m) * 255.0
        if pre.channel_order == "BGR":
            pixels = pixels[:, ::-1]
        x = pixels if wants_pixels else (
            (pixels / pre.scale - np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1))
            / np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1))
    c = sig.channels
    if c == 1 and x.shape[1] == 3:
        x = x.mean(1, keepdims=True)
    elif c == 3 and x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    size = sig.input_size
    if size and tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"the model takes {size[0]}x{size[1]} (HxW) images but the batch is {x.shape[2]}x"
                         f"{x.shape[3]}: set model.input_size="
                         + (f"{size[0]}" if size[0] == size[1] else f"[{size[0]},{size[1]}]"))
    if sig.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    if wants_pixels:
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x, np.float32)


def batches(x: np.ndarray, sig: Signature, batch_size: int = 64) -> Iterator[np.ndarray]:
    """Chunks of x the model accepts: its fixed batch size when it has one, else batch_size."""
    step = sig.fixed_batch or batch_size
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        if sig.fixed_batch and len(chunk) < step:  # a fixed batch larger than 1: pad the last chunk
            pad = np.repeat(chunk[-1:], step - len(chunk), axis=0)
            yield np.concatenate([chunk, pad])
        else:
            yield chunk
