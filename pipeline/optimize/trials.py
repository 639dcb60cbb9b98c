"""One trial's steps, each cached (pipeline.optimize.store): the pruned and briefly distilled model, its latency proxy,
and for the finalists the full distillation and quantization-aware training.

`Search` holds what every trial shares: the unmodified model (the teacher), the splits, the teacher's logits, the
sensitivity analysis and the reference numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.optimize import recover, surgery, timing


@dataclass
class Search:
    store: Any
    teacher: Any  # the unmodified PyTorch model (eval mode)
    spec: dict  # its architecture spec
    source_key: str  # the cache key of the stage that made it
    shape: list[int]  # input shape [1, C, H, W]
    num_classes: int
    split: SimpleNamespace  # train_x/train_y (fine-tuning), search_x/search_y (held out of training), val_x/val_y
    packed: SimpleNamespace  # the training split with the teacher's logits (recover.packed)
    proxy_packed: SimpleNamespace  # what a trial's short fine-tune trains on (recover.subset of `packed`)
    calib: np.ndarray  # calibration images (training split)
    sens: dict  # surgery.sensitivity's result
    proxy: recover.Recipe
    final: recover.Recipe
    qat: recover.Recipe
    seed: int
    round_to: int | None
    strength: float  # sensitivity allocation strength (surgery.allocate)
    device: dict
    measured_here: bool
    threads: int  # for timing on this host
    log: Any
    source_path: Path | None = None  # the unmodified model's file
    source_meta: dict = field(default_factory=dict)  # and its artifact meta (input shape, classes, task ...)
    reference: dict = field(default_factory=dict)  # accuracies, MACs, params, latency base of the unmodified model

    def score(self, model) -> float:
        return recover.accuracy(model, self.split.search_x, self.split.search_y)

    def edits(self, params: dict) -> tuple[list[str], dict[str, float]]:
        removed = surgery.blocks_to_remove(self.sens, params["blocks"])
        ratios = surgery.allocate(self.sens, params["ratio"], params["allocation"], self.strength)
        return removed, {k: round(v, 4) for k, v in ratios.items()}


def proxy(s: Search, params: dict) -> tuple[dict, Path, str]:
    """The trial's pruned model after a short distillation (cached): accuracy on the search split, MACs, parameters."""
    removed, ratios = s.edits(params)

    def make(out: Path) -> dict:
        from pipeline import models
        from pipeline.library.training import complexity

        pruned, spec = surgery.apply(s.teacher, s.spec, s.shape, s.num_classes, removed, ratios, s.round_to)
        right_after = s.score(pruned)
        history = recover.finetune(pruned, s.proxy_packed, s.proxy, s.seed, s.log)
        pruned.eval()
        models.save_torch(pruned, out, spec)
        return {"accuracy": s.score(pruned), "accuracy_pruned": right_after, "history": history,
                **complexity(pruned, s.shape), "removed": removed}

    key_params = {"model": s.source_key, "removed": removed, "ratios": ratios, "round_to": s.round_to,
                  "recipe": s.proxy.as_dict(), "seed": s.seed, "images": len(s.proxy_packed.train_x)}
    return s.store.step("proxy", key_params, make)


def latency(s: Search, model_key: str, folder: Path) -> dict:
    """The latency proxy of a cached model (see pipeline.optimize.timing), cached beside it: the device estimate where
    the device is modelled and not this host; else the side-by-side ratio on this host (a connected board without a
    model: the proxy ranks here, the finalists are measured on the board)."""
    if not s.measured_here and s.device.get("estimate_unit"):
        from pipeline.optimize import deploy

        onnx, _ = deploy.onnx_export(s.store, model_key, folder / "model.pt", s.source_meta)
        r, _, _ = s.store.step("estimate", {"model": model_key, "device": _device_id(s.device)},
                               lambda out: timing.estimate(s.device, "onnx", onnx))
        return {"latency_ms": r.get("latency_ms"), "interval_ms": r.get("interval_ms"), "source": "estimate",
                "label": r.get("label"), "error": r.get("error")}

    def measure(out: Path) -> dict:
        from pipeline.models import load_torch

        return timing.host_ratio(load_torch(folder / "model.pt")[0], s.teacher, s.shape)

    r, _, _ = s.store.step("proxy_latency", {"model": model_key, "threads": timing.PROXY_THREADS}, measure)
    return {"latency_ms": s.reference["proxy_base_ms"] / r["ratio"], "ratio": r["ratio"], "ratio_ci": r["ratio_ci"],
            "source": "host", "how": r.get("how")}


def _device_id(device: dict) -> dict:
    """What of the device decides an estimate."""
    return {k: device.get(k) for k in ("name", "runtime", "threads", "estimate_unit", "compute_units",
                                       "memory_bandwidth_gbps")}


def evaluate(s: Search, params: dict) -> dict:
    """Optuna's objective, all from cached steps: {accuracy, drop, latency_ms, size_mb, ...}."""
    r, folder, key = proxy(s, params)
    ran = s.store.ran and s.store.ran[-1]["key"] == key
    lat = latency(s, key, folder)
    if lat.get("latency_ms") is None:
        raise RuntimeError(f"no latency proxy for this device: {lat.get('error')}")
    return {"accuracy": r["accuracy"], "accuracy_pruned": r["accuracy_pruned"],
            "drop": 100.0 * (s.reference["search_accuracy"] - r["accuracy"]), "latency_ms": lat["latency_ms"],
            "latency": lat, "size_mb": r["parameters"] * 1.02 / 1e6, "macs": r["macs"], "parameters": r["parameters"],
            "removed": r["removed"], "key": key, "folder": str(folder), "step": "ran" if ran else "reused"}


def final(s: Search, trial: dict) -> tuple[dict, Path, str]:
    """A finalist distilled for the full number of epochs, continuing from its proxy model (cached)."""
    def make(out: Path) -> dict:
        from pipeline import models
        from pipeline.library.training import complexity

        model, spec = models.load_torch(Path(trial["folder"]) / "model.pt")
        history = recover.finetune(model, s.packed, s.final, s.seed + 1, s.log)
        model.eval()
        models.save_torch(model, out, spec)
        return {"accuracy": s.score(model), "accuracy_val": recover.accuracy(model, s.split.val_x, s.split.val_y),
                "history": history, **complexity(model, s.shape)}

    return s.store.step("final", {"proxy": trial["key"], "recipe": s.final.as_dict(), "seed": s.seed}, make)


def qat(s: Search, model_key: str, folder: Path, formats: list[str]) -> tuple[dict, Path, str]:
    """Quantization-aware distillation of a finalist whose post-training int8 misses the budget (cached): int8 ONNX
    (QDQ) and, for a LiteRT device, full-integer TFLite."""
    def make(out: Path) -> dict:
        import copy

        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        from pipeline.convert.qat import check_int8_artifact, to_onnx, to_tflite
        from pipeline.models import load_torch

        model, _ = load_torch(folder / "model.pt")
        prepared, quantizer, history = recover.qat(model, s.shape, s.packed, s.qat, s.seed + 2, s.log)
        x = torch.from_numpy(s.split.search_x[:1])
        files = {}
        for fmt in [f for f in ("onnx", "tflite") if f in formats or (f == "onnx" and "openvino" in formats)]:
            converted = convert_pt2e(copy.deepcopy(prepared), fold_quantize=(fmt == "onnx"))  # (it edits its input)
            path = out / f"model.qat.{fmt}"
            (to_onnx(converted, x, path, 18) if fmt == "onnx" else to_tflite(converted, x, path, quantizer))
            files[fmt] = {"path": path.name, **check_int8_artifact(fmt, path, converted, s.split.search_x[:8])}
        return {"files": files, "history": history}

    return s.store.step("qat", {"model": model_key, "recipe": s.qat.as_dict(), "formats": sorted(formats),
                                "seed": s.seed}, make)


def qat_openvino(s: Search, qat_key: str, onnx_path: Path) -> Path:
    """The QAT model's QDQ ONNX as an OpenVINO IR (OpenVINO runs the Q/DQ pairs as int8), cached."""
    def make(out: Path) -> dict:
        from pipeline.convert import openvino as ovc

        return ovc.export_ir(onnx_path, s.shape, out / "model.xml")

    _, folder, _ = s.store.step("qat_openvino", {"qat": qat_key}, make)
    return folder / "model.xml"
