"""`import_model`: bring your own model. The file enters the DAG as an artifact of its format, so every later stage
(export, quantize, prune, fuse, distill, qat, train (fine-tuning), evaluate, parity, benchmark ...) applies to it.

  path: model.onnx                                   -> onnx   (checked with onnx.checker; NCHW or NHWC input, any
                                                                number of outputs)
  path: model.tflite                                 -> tflite (float or int8, its scales and zero points read from
                                                                the flatbuffer; LiteRT runs it)
  path: model.pt2                                    -> torch  (torch.export file, loaded with torch.export.load)
  path: model.ts / .pt / .pth (no _target_)          -> torch  (TorchScript archive, loaded with torch.jit.load)
  path: model.keras                                  -> keras  (keras.saving.load_model, safe_mode=True; custom layers
                                                                from the user's `modules`, never from the file)
  _target_: mypkg.nets.MyNet, init: {...}, path: weights.pt
                                                     -> torch  (your nn.Module class, state_dict read with
                                                                torch.load(weights_only=True): no pickled code runs)
Nothing is unpickled: a pickled whole model (torch.save(model)) is refused with the way to save it instead.
The file's SHA-256 is part of the cache key: replacing it re-runs everything below.

The model's signature (pipeline.library.signature: inputs, every output, layout, preprocessing) is read from the file at plan
time where the file says it (ONNX, TFLite; PyTorch files by running them once), and its outputs are checked against
the recipe's `task` and the data: a 1000-class head on 5-class data is refused before any work, naming both counts
and the fix (fine-tune it: a train stage with `inputs: [<this stage>]` gives it a new head).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import PositiveInt
from pipeline.core.cache import file_sha256
from pipeline.data.size import hw
from pipeline.stages.base import Stage, StageContext, StageResult

SUFFIX_FORMAT = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "torch", ".ts": "torch", ".pt": "torch",
                 ".pth": "torch", ".jit": "torch", ".keras": "keras"}


@dataclass
class ImportModelConfig:
    path: str = MISSING  # the model file (required): .onnx, .tflite, .pt2, TorchScript (.ts/.pt), .keras, or a state_dict with _target_
    _target_: Optional[str] = None  # your nn.Module class as a dotted path (mypkg.nets.MyNet); `path` is then its state_dict
    init: Dict[str, Any] = field(default_factory=dict)  # keyword arguments for the _target_ class
    input_size: Any = None  # input resolution, one side or [H, W]; null = model.input_size (or the file's fixed size)
    channels: PositiveInt = 3  # input channels
    # what the file cannot say: layout (NCHW | NHWC), and the model's own preprocessing: scale, mean, std, channel_order
    # (model input = (pixel / scale - mean) / std); the file's word is taken for anything not given
    signature: Dict[str, Any] = field(default_factory=dict)
    modules: List[str] = field(default_factory=list)  # .keras: your modules that register its custom layers, imported first
    postprocess: Optional[Dict[str, Any]] = None  # task detection: how the outputs become boxes (pipeline.tasks.detection)


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


def _stage_names(p: ImportModelConfig, cfg) -> list[str]:
    """This import's name(s) in the recipe (a check sees its parameters, not its name): the import stages of that file."""
    out = []
    for name, raw in (cfg.get("stages") or {}).items():
        if hasattr(raw, "get") and raw.get("type") == "import_model" and str(raw.get("path")) == str(p.path):
            out.append(str(name))
    return out


def _fine_tuned(names: list[str], cfg) -> bool:
    """A train stage takes this import as its input: it gets a new head for the data's classes, so its own class
    count need not match the data."""
    for raw in (cfg.get("stages") or {}).values():
        if hasattr(raw, "get") and raw.get("type") == "train":
            inputs = raw.get("inputs") or []
            inputs = [inputs] if isinstance(inputs, str) else list(inputs)
            if any(n in inputs for n in names):
                return True
    return False


# produces: the actual format follows the file (output_format)
class ImportModel(Stage, type="import_model", config=ImportModelConfig, produces="torch",
                  reads=("data", "model.input_size", "task"),
                  libraries=("torch", "onnx", "onnxruntime", "tensorflow-cpu", "ai-edge-litert", "numpy")):
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
            return ["path: required; give the model file (.onnx, .tflite, .pt2, .ts, .keras, or a state_dict with "
                    "_target_)"]
        f = _resolve(p.path)
        if not f.is_file():
            return [f"path: {str(f)!r} does not exist or is not a file"]
        if source_format(p) is None:
            return [f"path: cannot tell the format of {f.name!r} from its suffix; use .onnx, .tflite, .pt2 "
                    f"(torch.export), .ts/.pt (TorchScript), .keras, or set _target_ to your nn.Module class for a "
                    f"state_dict file"]
        if source_format(p) == "torch" and not p._target_ and f.suffix.lower() != ".pt2" and not is_torchscript(f):
            return [f"path: {f.name!r} is not a TorchScript archive (a pickled model or a bare state_dict?). Pickles "
                    f"are not loaded, since unpickling runs code: save it with torch.jit.save(torch.jit.script(m), "
                    f"PATH) or torch.export.save(...), or keep the state_dict and set _target_ to your nn.Module class"]
        if p.init and not p._target_:
            return ["init: only used with _target_ (the class it is passed to); remove it or set _target_"]
        if p.modules and source_format(p) != "keras":
            return ["modules: only used for .keras files (the modules registering their custom layers); remove it"]
        try:
            from pipeline.library import signature

            signature.apply_overrides(signature.Signature([signature.TensorSpec("input", [-1, 3, -1, -1])], []),
                                      dict(p.signature))
        except ValueError as e:
            return [str(e)]
        return cls._check_outputs(p, cfg, f)

    @classmethod
    def _check_outputs(cls, p: ImportModelConfig, cfg, f: Path) -> list[str]:
        """The file's outputs against the task and the data's classes, before any work."""
        from pipeline import data as data_mod
        from pipeline import tasks
        from pipeline.library import signature

        task = str(cfg.get("task", "classification"))
        problems = tasks.check_data(task, str(cfg.data.name))
        if problems:
            return problems
        size = hw(p.input_size or cfg.model.input_size)
        if source_format(p) == "tflite":  # operators LiteRT lacks: refused now, not after the run started
            from pipeline.runtimes import tflite_rt

            try:
                custom = tflite_rt.custom_problem(f)
            except Exception:  # not a flatbuffer at all: the signature read below names that
                custom = None
            if custom:
                return [f"path: {f.name!r} {custom}"]
        try:
            sig = plan_signature(p, f, size)
        except Exception as e:  # a file the reader cannot open is named here; run() gives the full error
            return [f"path: cannot read the signature of {f.name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"]
        if sig is None:  # (Keras: the outputs are known only once TensorFlow loads the file, at run time)
            return []
        problems = signature.check(sig, cfg.model.input_size)  # the data is resized to model.input_size
        names = _stage_names(p, cfg)
        classes = None if _fine_tuned(names, cfg) else data_mod.num_classes(cfg.data)
        outputs = [{"name": o.name, "shape": o.shape} for o in sig.outputs]
        found = tasks.get(task, postprocess=p.postprocess).check_model(outputs, classes)
        stage = names[0] if names else "<this import>"
        return problems + [m.replace("<the import stage>", stage).replace("<this import>", stage) for m in found]

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import runtimes
        from pipeline.library import signature

        p: ImportModelConfig = ctx.params
        src = _resolve(p.path)
        fmt = source_format(p)
        size = hw(p.input_size or ctx.settings.model.input_size)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        digest = file_sha256(src)
        if fmt == "onnx":
            path = self._onnx(src, ctx.workdir)
        elif fmt == "tflite":
            path = self._tflite(src, ctx.workdir)
        elif fmt == "keras":
            path = self._keras(src, ctx.workdir, p.modules)
        elif p._target_:
            path = self._state_dict(p, src, ctx.workdir)
        else:
            path = self._torch_graph(src, ctx.workdir)
        meta: dict[str, Any] = {"input_shape": [1, p.channels, *size], "imported_from": src.name,
                                "sha256": digest, "task": ctx.settings.task}
        norm = ctx.data().meta
        if "mean" in norm:  # what the pipeline's images were normalised with (the adapter recovers pixels from it)
            meta["data_norm"] = {"mean": norm["mean"], "std": norm["std"]}
        if p.modules:
            meta["keras_modules"] = list(p.modules)
        if fmt == "keras":
            meta["input_layout"] = "NHWC"
        if fmt == "tflite":
            from pipeline.runtimes import tflite_rt

            info = tflite_rt.inspect(path)
            meta["tflite"] = {k: info[k] for k in ("operators", "operator_count", "float_operators", "integer_only",
                                                   "inputs", "outputs")}
        sig = signature.read(fmt, path, meta, dict(p.signature) or None)
        if sig.input_size:
            size = tuple(sig.input_size)  # a fixed input size in the file wins over model.input_size
            meta["input_shape"] = [1, sig.channels or p.channels, *sig.input_size]
        meta["signature"] = sig.to_dict()
        if sig.layout:
            meta["input_layout"] = sig.layout
        x = ctx.data().val_x[:2]
        if tuple(x.shape[-2:]) != tuple(size):
            want = size[0] if size[0] == size[1] else f"[{size[0]},{size[1]}]"
            raise ValueError(f"{src.name}: the model takes {size[0]}x{size[1]} (HxW) images but the data is "
                             f"resized to {x.shape[-2]}x{x.shape[-1]}: set model.input_size={want}")
        model = runtimes.load(fmt, path, meta, threads=1)
        outs = runtimes.outputs_of(model, x)
        names = [o.name for o in sig.outputs] if len(sig.outputs) == len(outs) else []
        meta["output_names"] = [n or f"output_{i}" for i, n in enumerate(names)] or (
            ["logits"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])
        if p.postprocess:
            meta["postprocess"] = dict(p.postprocess)
        first = outs[0]
        if ctx.settings.task == "segmentation":
            from pipeline.tasks.segmentation import Segmentation

            found = Segmentation.layout(first.shape, ctx.data().num_classes or None)
            meta["num_classes"] = max(2, found[1]) if found else None
        elif ctx.settings.task in ("classification", "detection") and first.ndim >= 2:
            yolo = (p.postprocess or {}).get("kind") == "yolo"  # [N, 4 + classes, candidates]
            meta["num_classes"] = int(min(first.shape[1:]) - 4 if yolo else first.shape[1])
        problems = self._fits(ctx.settings.task, outs, meta, ctx)
        if problems:
            raise ValueError(f"{src.name}: " + "; ".join(problems))
        data = ctx.data()
        if data.num_classes and data.num_classes == meta.get("num_classes"):
            meta["classes"] = data.classes
        if fmt == "torch":
            import json

            meta["arch"] = json.loads((path.parent / "model.json").read_text())
        ctx.log.info("imported %s as a %s model (%s): input %s %s, outputs %s", src.name, fmt, model.runtime,
                     sig.layout or "", sig.input.shape, {n: list(o.shape[1:]) for n, o in zip(meta["output_names"], outs)})
        return StageResult(Artifact(ctx.name, fmt, _precision(fmt, sig), path, meta), info={"sha256": digest})

    @staticmethod
    def _fits(task: str, outs, meta, ctx) -> list[str]:
        """The outputs of a real run against the task's layout. (The class count against the data was checked by the
        plan, which knows whether a train stage below gives the model a new head.)"""
        from pipeline import tasks

        specs = [{"name": n, "shape": list(o.shape)} for n, o in zip(meta["output_names"], outs)]
        return tasks.get(task, postprocess=meta.get("postprocess")).check_model(specs, None)

    # --- one loader per kind of file --------------------------------------------------------------------------
    @staticmethod
    def _onnx(src: Path, work: Path) -> Path:
        import shutil

        import onnx

        try:
            onnx.checker.check_model(str(src), full_check=True)
        except Exception as e:
            raise ValueError(f"{src.name} is not a valid ONNX model: {str(e).splitlines()[0]}") from e
        shutil.copyfile(src, work / "model.onnx")
        return work / "model.onnx"

    @staticmethod
    def _tflite(src: Path, work: Path) -> Path:
        import shutil

        from pipeline.runtimes import tflite_rt

        try:
            tflite_rt.inspect(src)
        except Exception as e:  # the flatbuffer reader raises many types for a foreign file
            raise ValueError(f"{src.name} is not a TFLite flatbuffer: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        shutil.copyfile(src, work / "model.tflite")
        return work / "model.tflite"

    @staticmethod
    def _keras(src: Path, work: Path, modules) -> Path:
        import shutil

        from pipeline.models import keras_zoo

        try:
            keras_zoo.load(src, modules)
        except ImportError as e:
            raise ValueError(f"modules: cannot import {e.name!r} ({e}); it must be importable by the pipeline and by "
                             f"the benchmark's measuring process (on PYTHONPATH)") from e
        except Exception as e:
            raise ValueError(f"{src.name} does not load as a Keras model in safe mode (no lambda layers; custom layers "
                             f"need the module registering them in stages.<import>.modules): "
                             f"{str(e).splitlines()[0]}") from e
        shutil.copyfile(src, work / "model.keras")
        return work / "model.keras"

    @staticmethod
    def _state_dict(p: ImportModelConfig, src: Path, work: Path) -> Path:
        from pipeline import models

        model = build_target(p, src)
        spec = {"target": p._target_, "init": dict(p.init)}
        return models.save_torch(model.eval(), work, spec)

    @staticmethod
    def _torch_graph(src: Path, work: Path) -> Path:
        import json
        import shutil

        kind = load_graph(src)[1]
        dest = work / ("model.pt2" if kind == "export" else "model.ts")
        shutil.copyfile(src, dest)
        (work / "model.json").write_text(json.dumps({"kind": kind}, indent=2))
        return dest


def _precision(fmt: str, sig) -> str:
    """A .tflite says its own precision: int8 tensors in and out (or int8 weights) make it an int8 model."""
    if fmt == "tflite" and any(t.dtype in ("int8", "uint8") for t in (*sig.inputs, *sig.outputs)):
        return "int8"
    return "fp32"


def build_target(p: ImportModelConfig, src: Path):
    """The user's nn.Module class with the state_dict's weights (torch.load(weights_only=True))."""
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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{src.name} does not fit {p._target_}({', '.join(f'{k}={v!r}' for k, v in p.init.items())}): "
                         f"{str(e).splitlines()[0][:300]}; give the init arguments the weights were trained with") from e
    return model.eval()


def load_graph(src: Path):
    """A torch.export (.pt2) or TorchScript file, loaded without unpickling: (module, "export" | "torchscript")."""
    import zipfile

    import torch

    if src.suffix.lower() == ".pt2":
        try:
            return torch.export.load(str(src)).module(), "export"
        except Exception as e:
            raise ValueError(f"{src.name} is not a torch.export file (torch.export.save): "
                             f"{str(e).splitlines()[0]}") from e
    if not zipfile.is_zipfile(src):
        raise ValueError(f"{src.name} is not a TorchScript archive")
    try:
        return torch.jit.load(str(src), map_location="cpu").eval(), "torchscript"
    except Exception as e:
        raise ValueError(
            f"{src.name} is not a TorchScript archive ({str(e).splitlines()[0]}). A pickled model "
            f"(torch.save(model)) is not loaded, since unpickling runs code: save it with "
            f"torch.jit.save(torch.jit.script(model), PATH), torch.export.save(...), or give its state_dict "
            f"with _target_ naming the class") from e


def plan_signature(p: ImportModelConfig, f: Path, size: tuple[int, int]):
    """The file's signature for the plan: read from ONNX and TFLite files, from a PyTorch file by running it once on
    zeros of the configured size; None for Keras (TensorFlow would have to load it)."""
    from pipeline.library import signature

    fmt = source_format(p)
    override = dict(p.signature) or None
    if fmt == "onnx":
        return signature.read(fmt, f, {}, override)
    if fmt == "tflite":
        from pipeline.runtimes import tflite_rt

        return signature.read(fmt, f, {"tflite": tflite_rt.inspect(f)}, override)
    if fmt != "torch":
        return None
    import torch

    model = build_target(p, f) if p._target_ else load_graph(f)[0]
    shape = [1, p.channels, *size]
    with torch.inference_mode():
        out = model(torch.zeros(shape))
    outs = out if isinstance(out, (tuple, list)) else [out]
    names = list(getattr(model, "output_names", None) or []) or (["logits"] if len(outs) == 1 else [])
    return signature.Signature([signature.TensorSpec("input", shape)],
                               [signature.TensorSpec(names[i] if i < len(names) else f"output_{i}", list(o.shape))
                                for i, o in enumerate(outs)], "NCHW", source=f"torch file {f.name}")
