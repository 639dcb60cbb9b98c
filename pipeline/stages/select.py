"""`select_int8`: the measured choice where the device leaves the format open (this host lists onnx and tflite).

Builds the int8 candidates the stack can make from one trained model: ONNX Runtime QDQ variants (its quantize_static
defaults, per-channel weights, signed/unsigned activations, Add left in float) and LiteRT full-integer int8. Each is
evaluated on the validation split and timed on this host in one fresh process, round-robin with the fp32 baselines
(the input ONNX model and an fp32 .tflite), so every ratio is side by side. The fastest candidate within the accuracy
budget is kept; the others are listed with their numbers and why they lost. A choice that is still slower than the
fastest fp32 model is kept only with a red warning in the summary: an "optimized" model that is slower is never
shipped silently.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.artifacts import Artifact, path_size
from pipeline.bounds import NonNegative, NonNegativeInt, PositiveInt
from pipeline.results import Findings
from pipeline.stages.base import Stage, StageContext, StageResult

# candidate name -> quantize_onnx parameters (ONNX Runtime QDQ), or None for LiteRT full-integer int8
CANDIDATES: dict[str, Optional[dict]] = {
    "ort_defaults": {"per_channel": False, "activation_type": "int8", "weight_type": "int8", "preprocess": False},
    "ort_per_channel_u8": {"per_channel": True, "activation_type": "uint8", "weight_type": "int8"},
    "ort_per_channel_s8": {"per_channel": True, "activation_type": "int8", "weight_type": "int8"},
    "ort_per_channel_u8_float_add": {"per_channel": True, "activation_type": "uint8", "weight_type": "int8",
                                     "exclude_op_types": ["Add"]},
    "litert_int8": None,
}


@dataclass
class SelectInt8Config:
    calibration_samples: PositiveInt = 128  # training images every candidate is calibrated on (the same images for all)
    method: str = "minmax"  # ONNX Runtime calibration: minmax | entropy | percentile
    candidates: List[str] = field(default_factory=lambda: list(CANDIDATES))  # which int8 candidates to build
    max_accuracy_drop: Optional[NonNegative] = None  # top-1 points a candidate may lose vs fp32; null = gate.max_accuracy_drop
    eval_samples: Optional[PositiveInt] = None  # validation images for the accuracy check (null = all)
    fp32_tflite_baseline: bool = True  # also time an fp32 .tflite, so "faster than fp32" means the fastest fp32
    warmup: NonNegativeInt = 10  # untimed runs of each model
    iterations: PositiveInt = 50  # timed runs of each model (p50 decides)


class SelectInt8(Stage):
    type = "select_int8"
    Config = SelectInt8Config
    accepts = ("onnx",)
    implements = ("quantize", "measured")
    min_inputs = max_inputs = 1
    reads = ("data", "seed", "device.threads", "gate.max_accuracy_drop")

    @classmethod
    def output_format(cls, params, device):
        """Decided by measurement at run time: one of the candidates' formats."""
        fmts = []
        for c in params.candidates if params else CANDIDATES:
            f = "tflite" if CANDIDATES.get(c, {}) is None else "onnx"
            if f not in fmts:
                fmts.append(f)
        return tuple(fmts)

    @classmethod
    def check(cls, p: SelectInt8Config, cfg) -> list[str]:
        problems = []
        unknown = [c for c in p.candidates if c not in CANDIDATES]
        if unknown or not p.candidates:
            problems.append(f"candidates: unknown {unknown or '(empty list)'}; choose from {', '.join(CANDIDATES)}")
        if p.calibration_samples <= 0:
            problems.append(f"calibration_samples must be > 0, got {p.calibration_samples}")
        if p.iterations < 1 or p.warmup < 0:
            problems.append(f"iterations must be >= 1 and warmup >= 0 (got {p.iterations}, {p.warmup})")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        import logging

        from pipeline import calibration, runtimes
        from pipeline.convert import onnx as onnx_convert
        from pipeline.convert.tflite import export_source
        from pipeline.runtimes import host_threads, isolated, tflite_rt

        p: SelectInt8Config = ctx.params
        src = ctx.input
        data = ctx.data()
        budget = p.max_accuracy_drop if p.max_accuracy_drop is not None else float(ctx.settings.gate.max_accuracy_drop)
        torch_src = next((a for a in ctx.lineage(src.stage) if a.format == "torch"), None)
        calib = calibration.sample(data, p.calibration_samples, ctx.settings.seed, ctx.name)
        shape = src.meta["input_shape"]
        built: dict[str, dict] = {}
        root = ctx.workdir / "candidates"
        root.mkdir()
        for name in p.candidates:
            d = root / name
            d.mkdir()
            spec = CANDIDATES[name]
            if spec is None:
                if torch_src is None:
                    ctx.log.warning("%s: skipped (no PyTorch model upstream of %r to convert)", name, src.stage)
                    continue
                path = d / "model.int8.tflite"
                facts, _ = export_source("torch", torch_src.path, shape, path, "int8", calib)
                info = tflite_rt.inspect(path)
                meta = {**src.meta, "input_layout": "NCHW",
                        "tflite": {**facts, **{k: info[k] for k in ("operators", "operator_count", "float_operators",
                                                                   "integer_only", "inputs", "outputs")}},
                        "quantization": {"tool": facts["quantizer"], "precision": "int8",
                                         "calibration_samples": p.calibration_samples, "io": "int8"}}
                built[name] = {"format": "tflite", "path": path, "meta": meta}
            else:
                path = d / "model.int8.onnx"
                # ERROR: the defaults candidate skips ONNX Runtime's pre-processing on purpose, and it says so
                facts = onnx_convert.quantize_qdq(src.path, path, calib,
                                                  onnx_convert.QdqOptions(method=p.method, **spec), logging.ERROR)
                facts.pop("duplicate_initializer_bytes_saved")
                built[name] = {"format": "onnx", "path": path, "meta": {**src.meta, "quantization": facts}}
        baselines = {f"{src.stage} (fp32 onnx)": {"format": src.format, "path": src.path, "meta": src.meta}}
        if p.fp32_tflite_baseline and torch_src is not None:
            path = root / "baseline.fp32.tflite"
            export_source("torch", torch_src.path, shape, path, "fp32")
            baselines["fp32 tflite"] = {"format": "tflite", "path": path, "meta": {**src.meta, "input_layout": "NCHW"}}

        # accuracy of every model on the same validation images
        x, y = data.val_x, data.val_y
        if p.eval_samples:
            x, y = x[: p.eval_samples], y[: p.eval_samples]
        rows = {}
        for kind, group in (("int8", built), ("fp32", baselines)):
            for name, c in group.items():
                model = runtimes.load(c["format"], c["path"], c["meta"], threads=0)
                acc = float((runtimes.predict_all(model, x, 64).argmax(1) == y).mean())
                rows[name] = {"name": name, "kind": kind, "format": c["format"], "accuracy": acc,
                              "size_bytes": path_size(c["path"]), "runtime": model.runtime}
        # latency, all in one fresh process, round-robin
        threads = host_threads(int(ctx.settings.device.threads))
        models = [{"name": n, "fmt": c["format"], "path": str(c["path"]), "meta": c["meta"],
                   "shape": list(c["meta"]["input_shape"])} for n, c in {**built, **baselines}.items()]
        measured = isolated.measure(models, threads, p.warmup, p.iterations)
        for name, m in measured["models"].items():
            rows[name]["latency_p50_ms"] = m["latency_p50_ms"]
            rows[name]["latency_p90_ms"] = m["latency_p90_ms"]
        fp32_acc = rows[next(iter(baselines))]["accuracy"]
        fastest_fp32 = min((r for r in rows.values() if r["kind"] == "fp32"), key=lambda r: r["latency_p50_ms"])
        for r in rows.values():
            r["speedup_vs_fastest_fp32"] = fastest_fp32["latency_p50_ms"] / r["latency_p50_ms"]
            if r["kind"] == "int8":
                r["accuracy_drop_points"] = 100.0 * (fp32_acc - r["accuracy"])
                r["passed"] = r["accuracy_drop_points"] <= budget
        passing = sorted((r for r in rows.values() if r["kind"] == "int8" and r["passed"]),
                         key=lambda r: r["latency_p50_ms"])
        table = sorted(rows.values(), key=lambda r: r["latency_p50_ms"])
        if not passing:
            raise RuntimeError("no int8 candidate stays within the accuracy budget "
                               f"({budget:g} top-1 points below fp32 {fp32_acc:.4f}): "
                               + "; ".join(f"{r['name']} {r['accuracy']:.4f}" for r in table if r["kind"] == "int8"))
        best = passing[0]
        for r in rows.values():
            if r["kind"] == "int8":
                r["chosen"] = r is best
                if r is not best:
                    r["lost_because"] = ("slower" if r["passed"] else
                                         f"loses {r['accuracy_drop_points']:.2f} top-1 points (budget {budget:g})")
        chosen = built[best["name"]]
        out = ctx.workdir / chosen["path"].name
        shutil.copy2(chosen["path"], out)
        shutil.rmtree(root)  # the losers are listed, not kept
        slower = best["speedup_vs_fastest_fp32"] < 1.0
        selection = {"chosen": best["name"], "threads": threads, "cpu": measured["cpu"], "budget_points": budget,
                     "fastest_fp32": fastest_fp32["name"], "speedup_vs_fastest_fp32": best["speedup_vs_fastest_fp32"],
                     "slower_than_fp32": slower, "candidates": table}
        for r in table:
            ctx.log.info("%-30s %-6s %-6s top-1 %.4f  p50 %7.3f ms  %.2fx vs fastest fp32%s", r["name"], r["kind"],
                         r["format"], r["accuracy"], r["latency_p50_ms"], r["speedup_vs_fastest_fp32"],
                         "  <- chosen" if r.get("chosen") else "")
        if slower:
            ctx.log.warning("the fastest passing int8 model (%s) is SLOWER than fp32 %s on this host (%.2fx)",
                            best["name"], fastest_fp32["name"], best["speedup_vs_fastest_fp32"])
        meta = {**chosen["meta"], "selection": {k: v for k, v in selection.items() if k != "candidates"}}
        return StageResult(Artifact(ctx.name, chosen["format"], "int8", out, meta),
                           metrics={"speedup_vs_fastest_fp32": best["speedup_vs_fastest_fp32"],
                                    "candidates": len(built)},
                           info={"selection": selection}, about={ctx.name: Findings(selection=selection)})
