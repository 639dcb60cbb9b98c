"""Every int8 model the device deploys, built from one PyTorch model with the project's candidate builders
(pipeline.library.candidates), each a cached step, and scored on the validation split in its own runtime.

Which ones: per format the device lists (conf/device/*.yaml `formats`), every precision it runs: the int8 path this
project makes best (ONNX Runtime per-channel QDQ, NNCF on OpenVINO, litert-torch full-integer, ExecuTorch's XNNPACK
quantizer) and the float model (fp32; OpenVINO's default, which computes in bf16 on CPUs that have it), plus the
runtime options that may pay at batch 1, timed as candidates of their own (OpenVINO compiled for one image). The peers
are what each back end's users get from its int8 defaults (PEER_DEFAULT_INT8), made from the unmodified model.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.library.candidates import CANDIDATES, PEER_DEFAULT_INT8

# format -> the candidates the optimizer deploys in it (ExecuTorch's fp32 is left out: its XNNPACK int8 is the same
# kernels' faster path, and a .pte build costs about a minute)
DEPLOY: dict[str, tuple[str, ...]] = {"onnx": ("ort_per_channel_u8", "ort_fp32"), "tflite": ("litert_int8", "litert_fp32"),
                                      "openvino": ("openvino_int8", "openvino_default"),
                                      "executorch": ("executorch_int8",)}
# runtime options timed as candidates of their own: name -> (the candidate whose file they run, settings in its meta)
OPTIONS: dict[str, tuple[str, dict]] = {"openvino_int8_static": ("openvino_int8", {"static_shape": True})}
SUPPORTED = tuple(DEPLOY)


def deployable(formats: list[str]) -> list[str]:
    """The candidates (files to build) for a device that deploys `formats`, in its order of preference."""
    return [c for f in formats for c in DEPLOY.get(f, ())]


def precision_of(name: str) -> str:
    """The precision a candidate computes in here (OpenVINO's default: what its CPU plugin picks on this host)."""
    p = CANDIDATES[name].precision
    if p != "default":
        return p
    from pipeline.convert.openvino import default_inference_precision

    got = default_inference_precision()
    return {"f32": "fp32", "f16": "fp16"}.get(got, got)


def options_for(builds: list[str]) -> dict[str, tuple[str, dict]]:
    return {n: (base, o) for n, (base, o) in OPTIONS.items() if base in builds}


def peers(formats: list[str]) -> list[str]:
    return [n for n in PEER_DEFAULT_INT8 if CANDIDATES[n].format in formats]


def onnx_export(store, model_key: str, torch_path: Path, meta: dict) -> tuple[Path, dict]:
    """The fp32 ONNX export of a cached PyTorch model (what the ONNX Runtime and OpenVINO builders start from)."""
    def make(out: Path) -> dict:
        from pipeline.convert.onnx import export_torch
        from pipeline.models import load_torch

        model, _ = load_torch(torch_path)
        err = export_torch(model, meta["input_shape"], out / "model.onnx", 18, True, meta.get("output_names"))
        return {"export_max_abs_error": err}

    _, folder, _ = store.step("onnx", {"model": model_key}, make)
    return folder / "model.onnx", {**meta, "opset": 18}


def build_one(store, name: str, model_key: str, torch_path: Path, meta: dict, calib: np.ndarray, val, log) -> dict:
    """One candidate of one model: built, loaded in its runtime, scored on the validation split. A candidate that
    cannot be built or run here comes back with `not_runnable` and the reason, never a number."""
    from pipeline import runtimes
    from pipeline.core.artifacts import Artifact
    from pipeline.library.candidates import Env, Unbuildable, build

    c = CANDIDATES[name]
    why = runtimes.not_runnable_reason(c.format, {"openvino": c.options} if c.format == "openvino" else {})
    if why:
        return {"name": name, "not_runnable": why}
    onnx_path, onnx_meta = onnx_export(store, model_key, torch_path, meta)

    def make(out: Path) -> dict:
        t0 = time.perf_counter()
        env = Env(src=Artifact("model", "onnx", "fp32", onnx_path, onnx_meta),
                  torch=Artifact("model", "torch", "fp32", torch_path, meta), calib=calib,
                  ir_dir=out / "ir")  # (no accuracy-controlled candidate here: no ac_data)
        path, m = build(name, out, env)
        if not Path(path).resolve().is_relative_to(out.resolve()):  # the input itself (ort_fp32): kept in the entry
            import shutil

            path = Path(shutil.copy2(path, out / Path(path).name))
        model = runtimes.load(c.format, path, m, threads=0)
        acc = float((runtimes.predict_all(model, val[0], 64).argmax(1) == val[1]).mean())
        return {"path": str(Path(path).relative_to(out)), "meta": m, "accuracy": acc,
                "runtime": model.runtime, "build_seconds": time.perf_counter() - t0}

    try:
        r, folder, key = store.step("deploy", {"model": model_key, "candidate": name, "calibration": len(calib)}, make)
    except Unbuildable as e:
        return {"name": name, "not_runnable": str(e)}
    except Exception as e:  # one back end failing must not hide the others' numbers
        log.debug("building %s failed", name, exc_info=True)
        return {"name": name, "not_runnable": f"could not be built or run here: {type(e).__name__}: "
                                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
    return {"name": name, **r, "path": str(folder / r["path"]), "key": key}


def size_of(fmt: str, path) -> int:
    from pipeline.core.artifacts import path_size
    from pipeline.convert.openvino import ir_size

    return ir_size(path) if fmt == "openvino" else path_size(path)


def deploy_all(store, builds: list[str], model_key: str, torch_path: Path, meta: dict, calib: np.ndarray, val,
               log, label: str) -> list[dict]:
    """Every candidate in `builds` (and the runtime options of those) for one model, as rows."""
    rows = []
    for name in builds:
        r = build_one(store, name, model_key, torch_path, meta, calib, val, log)
        r.update(model=label, backend=CANDIDATES[name].backend, format=CANDIDATES[name].format, options={},
                 model_key=model_key, torch_path=str(torch_path), precision=precision_of(name))
        if "path" in r:
            r["size_bytes"] = size_of(r["format"], r["path"])
        rows.append(r)
        log.info("%s / %s: %s", label, name, r.get("not_runnable") or f"top-1 {r['accuracy']:.4f}")
    built = {r["name"]: r for r in rows if "path" in r}
    for opt, (base, settings) in options_for(list(built)).items():
        b = built[base]
        fmt_key = CANDIDATES[base].format
        meta_o = {**b["meta"], fmt_key: {**(b["meta"].get(fmt_key) or {}), **settings}}
        rows.append({**b, "name": opt, "meta": meta_o, "options": settings, "option_of": base,
                     "accuracy_note": f"the same file as {base}: the same outputs"})
    return rows


def model_entry(rows: list[dict]) -> list[dict]:
    """Rows that can be timed (built and runnable)."""
    return [r for r in rows if "path" in r]


def as_measured(r: dict) -> dict[str, Any]:
    """The form pipeline.runtimes.measure and pipeline.remote take."""
    return {"name": r["id"], "fmt": r["format"], "path": str(r["path"]), "meta": r["meta"],
            "shape": [1, *list(r["meta"]["input_shape"])[1:]]}
