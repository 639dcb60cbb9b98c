"""`import_model`: bring your own model. The file enters the DAG as an artifact of its format, so every later stage
(export, quantize, prune, fuse, distill, qat, evaluate, benchmark ...) applies to it.

  path: model.onnx                                   -> onnx   (checked with onnx.checker, run once in ONNX Runtime)
  path: model.pt2                                    -> torch  (torch.export file, loaded with torch.export.load)
  path: model.ts / .pt / .pth (no _target_)          -> torch  (TorchScript archive, loaded with torch.jit.load)
  path: model.keras                                  -> keras  (keras.saving.load_model, safe_mode=True)
  _target_: mypkg.nets.MyNet, init: {...}, path: weights.pt
                                                     -> torch  (your nn.Module class, state_dict read with
                                                                torch.load(weights_only=True): no pickled code runs)
Nothing is unpickled: a pickled whole model (torch.save(model)) is refused with the way to save it instead.
The file's SHA-256 is part of the cache key: replacing it re-runs everything below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import MISSING

from pipeline.artifacts import Artifact
from pipeline.bounds import PositiveInt
from pipeline.cache import file_sha256
from pipeline.stages.base import Stage, StageContext, StageResult

SUFFIX_FORMAT = {".onnx": "onnx", ".pt2": "torch", ".ts": "torch", ".pt": "torch", ".pth": "torch", ".jit": "torch",
                 ".keras": "keras"}


@dataclass
class ImportModelConfig:
    path: str = MISSING  # the model file (required): .onnx, .pt2, TorchScript (.ts/.pt), .keras, or a state_dict with _target_
    _target_: Optional[str] = None  # your nn.Module class as a dotted path (mypkg.nets.MyNet); `path` is then its state_dict
    init: Dict[str, Any] = field(default_factory=dict)  # keyword arguments for the _target_ class
    input_size: Optional[PositiveInt] = None  # square input resolution; null = model.input_size (or the file's fixed size)
    channels: PositiveInt = 3  # input channels


def _resolve(path: str) -> Path:
    return Path(os.path.expanduser(path)).resolve()


def source_format(p: ImportModelConfig) -> Optional[str]:
    if p._target_:
        return "torch"
    return SUFFIX_FORMAT.get(Path(p.path).suffix.lower())


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding the compiled code (`<name>/code/...`); torch.save's zip does not."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


class ImportModel(Stage):
    type = "import_model"
    Config = ImportModelConfig
    produces = "torch"  # the actual format follows the file (output_format)
    reads = ("data", "model.input_size")
    libraries = ("torch", "onnx", "onnxruntime", "tensorflow-cpu", "numpy")

    @classmethod
    def output_format(cls, params, device) -> str | None:
        return (source_format(params) or "torch") if params is not None else "torch"

    @classmethod
    def key_extra(cls, params: ImportModelConfig, settings) -> dict:
        """The file's content, so that replacing it invalidates this stage and everything below."""
        p = _resolve(params.path)
        return {"file_sha256": file_sha256(p) if p.is_file() else None}

    @classmethod
    def check(cls, p: ImportModelConfig, cfg) -> list[str]:
        if not p.path:
            return ["path: required; give the model file (.onnx, .pt2, .ts, .keras, or a state_dict with _target_)"]
        f = _resolve(p.path)
        if not f.is_file():
            return [f"path: {str(f)!r} does not exist or is not a file"]
        if source_format(p) is None:
            return [f"path: cannot tell the format of {f.name!r} from its suffix; use .onnx, .pt2 (torch.export), "
                    f".ts/.pt (TorchScript), .keras, or set _target_ to your nn.Module class for a state_dict file"]
        if source_format(p) == "torch" and not p._target_ and f.suffix.lower() != ".pt2" and not is_torchscript(f):
            return [f"path: {f.name!r} is not a TorchScript archive (a pickled model or a bare state_dict?). Pickles "
                    f"are not loaded, since unpickling runs code: save it with torch.jit.save(torch.jit.script(m), "
                    f"PATH) or torch.export.save(...), or keep the state_dict and set _target_ to your nn.Module class"]
        if p.init and not p._target_:
            return ["init: only used with _target_ (the class it is passed to); remove it or set _target_"]
        if p.input_size is not None and p.input_size < 1:
            return [f"input_size must be >= 1 or null, got {p.input_size}"]
        return []

    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        p: ImportModelConfig = ctx.params
        src = _resolve(p.path)
        fmt = source_format(p)
        size = int(p.input_size or ctx.settings.model.input_size)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        digest = file_sha256(src)
        if fmt == "onnx":
            path, size = self._onnx(src, ctx.workdir, size)
        elif fmt == "keras":
            path, size = self._keras(src, ctx.workdir, size)
        elif p._target_:
            path = self._state_dict(p, src, ctx.workdir)
        else:
            path = self._torch_graph(src, ctx.workdir)
        x = np.random.default_rng(0).standard_normal((2, p.channels, size, size)).astype(np.float32)
        logits, runtime = probe(fmt, path, x)
        if logits.ndim != 2 or logits.shape[0] != 2:
            raise ValueError(f"{src.name}: expected logits of shape (batch, classes) for a (2, {p.channels}, {size}, "
                             f"{size}) input, got {tuple(logits.shape)}; import an image classifier")
        num_classes = int(logits.shape[1])
        meta = {"input_shape": [1, p.channels, size, size], "num_classes": num_classes,
                "imported_from": str(src), "sha256": digest}
        cfg_classes = None
        try:
            data = ctx.data()
            if data.num_classes == num_classes:
                cfg_classes = data.classes
        except Exception:  # the dataset is only used for class names here
            pass
        if cfg_classes:
            meta["classes"] = cfg_classes
        if fmt == "torch":
            import json

            meta["arch"] = json.loads((path.parent / "model.json").read_text())
        ctx.log.info("imported %s as a %s model (%s): input %s, %d classes", src.name, fmt, runtime,
                     meta["input_shape"], num_classes)
        return StageResult(Artifact(ctx.name, fmt, "fp32", path, meta), info={"sha256": digest})

    # --- one loader per kind of file --------------------------------------------------------------------------
    @staticmethod
    def _onnx(src: Path, work: Path, size: int) -> tuple[Path, int]:
        import shutil

        import onnx

        try:
            onnx.checker.check_model(str(src), full_check=True)
        except Exception as e:
            raise ValueError(f"{src.name} is not a valid ONNX model: {str(e).splitlines()[0]}") from e
        dims = onnx.load(str(src), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].HasField("dim_value") and dims[2].dim_value > 0:
            size = int(dims[2].dim_value)  # a fixed input size in the file wins over model.input_size
        shutil.copyfile(src, work / "model.onnx")
        return work / "model.onnx", size

    @staticmethod
    def _keras(src: Path, work: Path, size: int) -> tuple[Path, int]:
        import shutil

        import keras

        try:
            m = keras.saving.load_model(str(src), safe_mode=True, compile=False)
        except Exception as e:
            raise ValueError(f"{src.name} does not load as a Keras model in safe mode (no lambda layers or custom "
                             f"code): {str(e).splitlines()[0]}") from e
        shape = m.inputs[0].shape
        if len(shape) == 4 and shape[1]:
            size = int(shape[1])  # Keras images are NHWC
        shutil.copyfile(src, work / "model.keras")
        return work / "model.keras", size

    @staticmethod
    def _state_dict(p: ImportModelConfig, src: Path, work: Path) -> Path:
        import torch

        from pipeline import models

        try:
            cls = models.import_target(p._target_)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"_target_: cannot import {p._target_!r} ({e}); the module must be importable "
                             f"(on PYTHONPATH) by the pipeline and by the benchmark's measuring process") from e
        model = cls(**p.init)
        try:
            state = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{src.name} does not load with torch.load(weights_only=True): {str(e).splitlines()[0]}. "
                             f"Save the weights with torch.save(model.state_dict(), PATH)") from e
        if not isinstance(state, dict):
            raise ValueError(f"{src.name} holds a {type(state).__name__}, not a state_dict; save it with "
                             f"torch.save(model.state_dict(), PATH)")
        state = state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state
        model.load_state_dict(state, strict=True)
        spec = {"target": p._target_, "init": dict(p.init)}
        return models.save_torch(model.eval(), work, spec)

    @staticmethod
    def _torch_graph(src: Path, work: Path) -> Path:
        import json
        import shutil
        import zipfile

        import torch

        if src.suffix.lower() == ".pt2":
            try:
                torch.export.load(str(src))
            except Exception as e:
                raise ValueError(f"{src.name} is not a torch.export file (torch.export.save): "
                                 f"{str(e).splitlines()[0]}") from e
            kind, dest = "export", work / "model.pt2"
        else:
            if not zipfile.is_zipfile(src):
                raise ValueError(f"{src.name} is not a TorchScript archive")
            try:
                torch.jit.load(str(src), map_location="cpu")
            except Exception as e:
                raise ValueError(
                    f"{src.name} is not a TorchScript archive ({str(e).splitlines()[0]}). A pickled model "
                    f"(torch.save(model)) is not loaded, since unpickling runs code: save it with "
                    f"torch.jit.save(torch.jit.script(model), PATH), torch.export.save(...), or give its state_dict "
                    f"with _target_ naming the class") from e
            kind, dest = "torchscript", work / "model.ts"
        shutil.copyfile(src, dest)
        (work / "model.json").write_text(json.dumps({"kind": kind}, indent=2))
        return dest


def probe(fmt: str, path: Path, x):
    """Run the imported model once: (logits, runtime). Through the runtime layer when it knows the format."""
    from pipeline import runtimes

    if fmt in runtimes.RUNTIMES:
        model = runtimes.load(fmt, path, {"input_shape": [1, *x.shape[1:]]}, threads=1)
        return model.predict(x), model.runtime
    import keras  # loads the user's file in safe mode; pipeline.runtimes.keras_rt runs it later
    import numpy as np

    m = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    nhwc = m.inputs[0].shape[-1] == x.shape[1]
    out = m(np.transpose(x, (0, 2, 3, 1)) if nhwc else x, training=False)
    return np.asarray(out), f"keras {keras.__version__}"
