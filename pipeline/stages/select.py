"""`select_int8`: the measured int8 choice where the device leaves the format open (device=host).

From one trained model it builds the candidates every back end here can make (pipeline/convert/candidates.py, shared
with the optimizer), in every precision this CPU runs:
ONNX Runtime fp32 and its QDQ int8 variants (quantize_static's defaults, per-channel, signed/unsigned activations,
Add left in float, NNCF's ONNX int8), OpenVINO fp32 / its default / bf16 / f16 and NNCF int8 (LATENCY and THROUGHPUT
hints), ExecuTorch XNNPACK fp32 and int8, LiteRT fp32 and full-integer int8, and, when no plain int8 candidate stays
within the accuracy budget, NNCF's accuracy-controlled int8 (the costliest layers kept in float, listed with what
they cost). Every candidate is evaluated on the validation split and timed side by side in one fresh process
(pipeline.runtimes.measure, round-robin, bootstrap intervals). The fastest int8 candidate within the budget is the
artifact; the table (summary, log, select_int8.md) shows every candidate with its ratios to the fastest fp32 model and
to the fastest peer default (what a user of each back end gets with its defaults), and a candidate that cannot run
here says why instead of a number. A choice still slower than the fastest fp32 model is flagged red in the summary.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.artifacts import Artifact, path_size
from pipeline.convert.candidates import CANDIDATES, Candidate, Unbuildable, build
from pipeline.bounds import NonNegative, NonNegativeInt, PositiveInt
from pipeline.results import Findings
from pipeline.stages.base import Stage, StageContext, StageResult


# all but openvino_bf16 (OpenVINO's default already computes in bf16 wherever the CPU can) and ort_nncf_int8 (built
# when ONNX accuracy control is, as what it is compared with)
DEFAULT_CANDIDATES = [n for n in CANDIDATES if n not in ("openvino_bf16", "ort_nncf_int8")]
REFERENCE = "ort_fp32"  # the input model: the accuracy every drop is measured from
AC_WHEN = ("if_needed", "always")


@dataclass
class SelectInt8Config:
    calibration_samples: PositiveInt = 128  # training images every candidate is calibrated on (the same images for all)
    method: str = "minmax"  # ONNX Runtime calibration: minmax | entropy | percentile
    candidates: List[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))  # which candidates to build and time
    # accuracy-controlled candidates: if_needed = only when no plain int8 candidate is within budget | always
    accuracy_control: str = "if_needed"
    accuracy_control_samples: PositiveInt = 300  # labelled training images NNCF validates on (not the validation split)
    # top-1 points NNCF's accuracy control aims for on those training images; null = half the budget, because the choice
    # is judged on the validation split, which NNCF never sees
    accuracy_control_max_drop: Optional[NonNegative] = None
    max_accuracy_drop: Optional[NonNegative] = None  # top-1 points a candidate may lose vs fp32; null = gate.max_accuracy_drop
    eval_samples: Optional[PositiveInt] = None  # validation images for the accuracy check (null = all)
    threads: List[NonNegativeInt] = field(default_factory=list)  # more thread counts to time, each in its own process; the choice uses the device's
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
        """Decided by measurement at run time: one of the int8 candidates' formats."""
        names = params.candidates if params else list(CANDIDATES)
        fmts = [CANDIDATES[n].format for n in names if n in CANDIDATES and CANDIDATES[n].precision == "int8"]
        return tuple(dict.fromkeys(fmts))

    @classmethod
    def check(cls, p: SelectInt8Config, cfg) -> list[str]:
        problems = []
        unknown = [c for c in p.candidates if c not in CANDIDATES]
        if unknown or not p.candidates:
            problems.append(f"candidates: unknown {unknown or '(empty list)'}; choose from {', '.join(CANDIDATES)}")
        elif not any(CANDIDATES[c].precision == "int8" for c in p.candidates):
            problems.append(f"candidates: {p.candidates} has no int8 candidate to choose; add one of "
                            f"{', '.join(n for n, c in CANDIDATES.items() if c.precision == 'int8')}")
        if p.accuracy_control not in AC_WHEN:
            problems.append(f"accuracy_control must be one of {', '.join(AC_WHEN)}, got {p.accuracy_control!r}")
        if p.calibration_samples <= 0:
            problems.append(f"calibration_samples must be > 0, got {p.calibration_samples}")
        if p.iterations < 1 or p.warmup < 0:
            problems.append(f"iterations must be >= 1 and warmup >= 0 (got {p.iterations}, {p.warmup})")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        import time

        import numpy as np

        from pipeline import calibration, runtimes
        from pipeline.runtimes import host_threads, isolated

        p: SelectInt8Config = ctx.params
        src = ctx.input
        data = ctx.data()
        budget = p.max_accuracy_drop if p.max_accuracy_drop is not None else float(ctx.settings.gate.max_accuracy_drop)
        threads = host_threads(int(ctx.settings.device.threads))
        env = {"src": src, "torch": next((a for a in ctx.lineage(src.stage) if a.format == "torch"), None),
               "calib": calibration.sample(data, p.calibration_samples, ctx.settings.seed, ctx.name),
               "method": p.method, "shared": {},
               "ac_target": p.accuracy_control_max_drop if p.accuracy_control_max_drop is not None else budget / 2}
        n_ac = min(p.accuracy_control_samples, len(data.train_x))
        idx = np.random.default_rng(int(ctx.settings.seed) + 1).choice(len(data.train_x), n_ac, replace=False)
        env["ac_data"] = (data.train_x[idx], data.train_y[idx])
        x, y = data.val_x, data.val_y
        if p.eval_samples:
            x, y = x[: p.eval_samples], y[: p.eval_samples]
        root = ctx.workdir / "candidates"
        root.mkdir()
        env["ir_dir"] = root / "_openvino_ir"  # the fp32 and int8 IRs the OpenVINO candidates share
        names = list(dict.fromkeys([REFERENCE, *p.candidates]))
        ac = [n for n in names if CANDIDATES[n].accuracy_control]
        built: dict[str, dict] = {}
        skipped: dict[str, str] = {}

        def build_and_score(name: str) -> None:
            c = CANDIDATES[name]
            t0 = time.perf_counter()
            why = _not_runnable(c.format, {"openvino": c.options} if c.format == "openvino" else {})
            if why is None:
                try:
                    d = root / name
                    d.mkdir()
                    path, meta = build(name, c, d, env)
                except Unbuildable as e:
                    why = str(e)
                except Exception as e:  # one back end failing here must not hide the others' numbers
                    ctx.log.debug("building %s failed", name, exc_info=True)
                    why = f"could not be built here: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
            if why is None:
                try:
                    model = runtimes.load(c.format, path, meta, threads=0)
                    acc = float((runtimes.predict_all(model, x, 64).argmax(1) == y).mean())
                except Exception as e:
                    ctx.log.debug("running %s failed", name, exc_info=True)
                    why = f"does not run here: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
            if why is not None:
                skipped[name] = why
                ctx.log.warning("%s: %s", name, why)
                return
            seconds = time.perf_counter() - t0
            ctx.log.info("%s: built and evaluated in %.1f s (top-1 %.4f)", name, seconds, acc)
            built[name] = {"path": path, "meta": meta, "accuracy": acc, "runtime": model.runtime,
                           "build_s": seconds}

        for name in names:
            if not CANDIDATES[name].accuracy_control:
                build_and_score(name)
        if REFERENCE not in built:
            raise RuntimeError(f"the input model cannot run here ({skipped.get(REFERENCE)}): nothing to compare with")
        ref_acc = built[REFERENCE]["accuracy"]
        within = [n for n, b in built.items() if CANDIDATES[n].precision == "int8"
                  and 100.0 * (ref_acc - b["accuracy"]) <= budget]
        for name in ac:
            if p.accuracy_control == "if_needed" and within:
                skipped[name] = (f"not built: plain int8 already meets the budget ({within[0]}); "
                                 f"accuracy_control=always builds it anyway")
            else:  # judged against its plain int8 counterpart, timed side by side
                if CANDIDATES[name].counterpart not in built and CANDIDATES[name].counterpart not in skipped:
                    build_and_score(CANDIDATES[name].counterpart)
                build_and_score(name)

        # latency: every built model in one fresh process per thread count, round-robin
        models = [{"name": n, "fmt": CANDIDATES[n].format, "path": str(b["path"]), "meta": b["meta"],
                   "shape": [1, *list(b["meta"]["input_shape"])[1:]]} for n, b in built.items()]
        t0 = time.perf_counter()
        measured = isolated.measure(models, threads, p.warmup, p.iterations)
        ctx.log.info("timed %d models side by side in %.1f s", len(models), time.perf_counter() - t0)
        extra = {t: isolated.measure(models, t, p.warmup, p.iterations)
                 for t in dict.fromkeys(host_threads(t) for t in p.threads) if t != threads}

        rows = _rows(built, measured, extra, ref_acc, budget, threads)
        int8 = [r for r in rows.values() if r["kind"] == "int8"]
        passing = sorted((r for r in int8 if r["passed"]), key=lambda r: r["latency_p50_ms"])
        table = sorted(rows.values(), key=lambda r: r["latency_p50_ms"])
        not_run = [{"name": n, "backend": CANDIDATES[n].backend, "format": CANDIDATES[n].format,
                    "precision": CANDIDATES[n].precision, "reason": why} for n, why in skipped.items()]
        if not passing:
            for line in _markdown(table, not_run, None, budget, measured, extra).splitlines():
                ctx.log.info("%s", line)
            raise RuntimeError("no int8 candidate stays within the accuracy budget "
                               f"({budget:g} top-1 points below fp32 {ref_acc:.4f}): "
                               + "; ".join(f"{r['name']} {r['accuracy']:.4f}" for r in int8)
                               + (f"; not run: {', '.join(skipped)}" if skipped else ""))
        best = passing[0]
        sp = measured["speedups"]
        for r in int8:
            r["chosen"] = r is best
            if r is not best:
                r["lost_because"] = ("slower" if r["passed"] else
                                     f"loses {r['accuracy_drop_points']:.2f} top-1 points (budget {budget:g})")
                if r["passed"] and sp[best["name"]][r["name"]]["verdict"] == "no measurable difference":
                    r["lost_because"] = "slower by less than the interval (a tie)"
        fastest_fp32, fastest_peer = _fastest(rows, "precision", "fp32"), _fastest(rows, "peer_default", True)
        chosen = built[best["name"]]
        out = _keep(CANDIDATES[best["name"]].format, chosen["path"], ctx.workdir)
        slower = best["speedup_vs_fastest_fp32_ci"][1] < 1.0  # slower only when the interval says so
        selection = {"chosen": best["name"], "backend": best["backend"], "format": best["format"],
                     "settings": best["settings"], "threads": threads, "cpu": measured["cpu"],
                     "load_average": measured["load_average"], "budget_points": budget,
                     "reference": REFERENCE, "reference_accuracy": ref_acc,
                     "fastest_fp32": fastest_fp32["name"], "speedup_vs_fastest_fp32": best["speedup_vs_fastest_fp32"],
                     "speedup_vs_fastest_fp32_ci": best["speedup_vs_fastest_fp32_ci"],
                     "fastest_peer_default": fastest_peer["name"] if fastest_peer else None,
                     "speedup_vs_fastest_peer_default": best.get("speedup_vs_fastest_peer_default"),
                     "speedup_vs_fastest_peer_default_ci": best.get("speedup_vs_fastest_peer_default_ci"),
                     "tied_with": [r["name"] for r in int8 if r.get("lost_because", "").endswith("(a tie)")],
                     "slower_than_fp32": slower, "kept_in_float": best.get("kept_in_float"),
                     "float_layers_cost": best.get("float_layers_cost"),
                     "candidates": table, "not_runnable": not_run, "table": "select_int8.md"}
        md = _markdown(table, not_run, selection, budget, measured, extra)
        (ctx.workdir / "select_int8.md").write_text(md)
        shutil.rmtree(root)  # the losers are listed, not kept
        for line in md.splitlines():
            ctx.log.info("%s", line)
        if slower:
            ctx.log.warning("the fastest passing int8 model (%s) is SLOWER than fp32 %s on this host (%.2fx)",
                            best["name"], fastest_fp32["name"], best["speedup_vs_fastest_fp32"])
        meta = {**chosen["meta"], "selection": {k: v for k, v in selection.items()
                                                if k not in ("candidates", "not_runnable")}}
        metrics = {"speedup_vs_fastest_fp32": best["speedup_vs_fastest_fp32"], "candidates": len(built),
                   "not_runnable": len(skipped)}
        if best.get("speedup_vs_fastest_peer_default") is not None:
            metrics["speedup_vs_fastest_peer_default"] = best["speedup_vs_fastest_peer_default"]
        if best.get("kept_in_float") is not None:
            metrics["layers_in_float"] = len(best["kept_in_float"])
        return StageResult(Artifact(ctx.name, best["format"], "int8", out, meta), metrics=metrics,
                           info={"selection": selection}, about={ctx.name: Findings(selection=selection)})


def _not_runnable(fmt: str, meta: dict) -> str | None:
    """Why a model of `fmt` with these settings cannot run on this host, or None: the runtime module's
    `not_runnable_here`, given the settings when it takes them (OpenVINO: precision the CPU plugin lacks)."""
    from pipeline import runtimes

    return runtimes.not_runnable_reason(fmt, meta)



def _size(fmt: str, path) -> int:
    if fmt == "openvino":
        from pipeline.convert.openvino import ir_size

        return ir_size(path)
    return path_size(path)


def _settings(c: Candidate, meta: dict, threads: int) -> str:
    """The runtime settings a candidate is timed with, in words."""
    bits = [f"{threads} thr"]
    q = meta.get("quantization") or {}
    if c.build == "ort_qdq":
        bits.append(f"QDQ {'per-channel' if c.options['per_channel'] else 'per-tensor'} "
                    f"{'u8' if c.options['activation_type'] == 'uint8' else 's8'} act")
        if c.options.get("exclude_op_types"):
            bits.append("float " + "/".join(c.options["exclude_op_types"]))
    elif c.format == "onnx":
        bits.append("graph opt ALL" if c.build == "input" else "QDQ (NNCF)")
    elif c.format == "openvino":
        ov = meta.get("openvino") or {}
        bits.append(str(ov.get("performance_mode") or "LATENCY"))
        if ov.get("static_shape"):
            bits.append("static shape")
        if c.precision != "int8":
            bits.append(f"{ov.get('inference_precision') or 'default'} compute")
        if ov.get("num_streams"):
            bits.append(f"{ov['num_streams']} streams")
    elif c.format == "executorch":
        bits.append("XNNPACK")
    elif c.format == "tflite":
        bits.append("XNNPACK" + (" full-integer" if q else ""))
    return ", ".join(bits)


def _rows(built: dict, measured: dict, extra: dict, ref_acc: float, budget: float, threads: int) -> dict:
    """One table row per built candidate: size, accuracy, drop, p50 with interval, ratios, budget verdict."""
    from pipeline.convert.openvino import default_inference_precision

    m, sp = measured["models"], measured["speedups"]
    rows = {}
    for n, b in built.items():
        c = CANDIDATES[n]
        precision = c.precision
        if precision == "default":  # name what the plugin picked here
            precision = {"f32": "fp32", "f16": "fp16"}.get(default_inference_precision(), default_inference_precision())
        r = {"name": n, "backend": c.backend, "format": c.format, "precision": precision,
             "kind": "int8" if c.precision == "int8" else "float", "peer_default": c.peer_default,
             "settings": _settings(c, b["meta"], threads), "runtime": m[n]["runtime"],
             "size_bytes": _size(c.format, b["path"]), "accuracy": b["accuracy"],
             "accuracy_drop_points": 100.0 * (ref_acc - b["accuracy"]),
             "latency_p50_ms": m[n]["latency_p50_ms"], "latency_p90_ms": m[n]["latency_p90_ms"],
             "latency_p50_ci": [m[n].get("latency_p50_ci_low_ms"), m[n].get("latency_p50_ci_high_ms")],
             "build_seconds": b["build_s"], "about": c.about}
        if extra:
            r["latency_p50_ms_at_threads"] = {str(t): e["models"][n]["latency_p50_ms"] for t, e in extra.items()}
        if c.precision == "int8":
            r["passed"] = r["accuracy_drop_points"] <= budget
        q = b["meta"].get("quantization") or {}
        if c.accuracy_control:
            r["kept_in_float"] = list(q.get("reverted_to_float", []))
            r["accuracy_control"] = {k: q.get(k) for k in ("max_drop", "validation_samples", "top1", "drop",
                                                           "plain_int8_drop", "met")}
        rows[n] = r
    fastest_fp32, fastest_peer = _fastest(rows, "precision", "fp32"), _fastest(rows, "peer_default", True)
    for n, r in rows.items():
        for key, other in (("fastest_fp32", fastest_fp32), ("fastest_peer_default", fastest_peer)):
            if other is None:
                continue
            if other is r:
                r[f"speedup_vs_{key}"], r[f"speedup_vs_{key}_ci"] = 1.0, [1.0, 1.0]
            else:  # speedups[a][b] = b's p50 / a's p50, measured side by side
                s = sp[n][other["name"]]
                r[f"speedup_vs_{key}"], r[f"speedup_vs_{key}_ci"] = s["speedup"], s["ci"]
        if CANDIDATES[n].accuracy_control and CANDIDATES[n].counterpart in rows:
            plain = rows[CANDIDATES[n].counterpart]
            s = sp[plain["name"]][n]  # the accuracy-controlled p50 / the plain int8 p50
            r["float_layers_cost"] = {
                "vs": plain["name"], "layers": len(r["kept_in_float"]),
                "size_bytes": r["size_bytes"] - plain["size_bytes"],
                "p50_ms": r["latency_p50_ms"] - plain["latency_p50_ms"],
                "latency_ratio": s["speedup"], "latency_ratio_ci": s["ci"], "verdict": _cost_verdict(s["verdict"]),
                "accuracy_points_recovered": 100.0 * (r["accuracy"] - plain["accuracy"])}
    return rows


def _fastest(rows: dict, key: str, value) -> dict | None:
    """The row with the lowest p50 among those whose `key` is `value` (the fastest fp32, the fastest peer default)."""
    match = [r for r in rows.values() if r[key] == value]
    return min(match, key=lambda r: r["latency_p50_ms"]) if match else None


def _cost_verdict(v: str) -> str:
    """speedups[plain][ac]'s verdict speaks of the plain model: "faster" there means accuracy control is slower."""
    return {"faster": "slower than plain int8", "slower": "faster than plain int8"}.get(v, v)


def _keep(fmt: str, path, workdir):
    """Copy the chosen model (an IR: its .xml and .bin) into the stage's work directory; returns its new path."""
    from pathlib import Path

    path = Path(path)
    out = workdir / path.name
    shutil.copy2(path, out)
    if fmt == "openvino":
        shutil.copy2(path.with_suffix(".bin"), out.with_suffix(".bin"))
    return out


def _ratio(r: dict, key: str) -> str:
    v, ci = r.get(f"speedup_vs_{key}"), r.get(f"speedup_vs_{key}_ci")
    if v is None:
        return "-"
    return f"{v:.2f}x" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci and ci != [1.0, 1.0] else "")


def _markdown(table: list[dict], not_run: list[dict], sel: dict | None, budget: float, measured: dict,
              extra: dict) -> str:
    """The stage's table: every candidate, timed or not, with why not."""
    from pipeline.runtimes.measure import describe_load

    extra_heads = [f"p50 ms @{t} thr" for t in extra]
    head = ["candidate", "backend", "precision", "settings", "peer default", "MB", "top-1 %", "drop pts",
            "p50 ms (95% CI)", *extra_heads, "vs fastest fp32", "vs fastest peer default", "within budget", "chosen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        lo, hi = r["latency_p50_ci"]
        p50 = f"{r['latency_p50_ms']:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if lo is not None else "")
        within = ("yes" if r["passed"] else "no") if "passed" in r else "(float)"
        chosen = ("**chosen**" if r.get("chosen") else r.get("lost_because", "")) if r["kind"] == "int8" else ""
        if r.get("kept_in_float") is not None:
            chosen = "; ".join(filter(None, [chosen, f"kept in float: {', '.join(r['kept_in_float']) or 'none'}"]))
        cells = [r["name"], r["backend"], r["precision"], r["settings"], "yes" if r["peer_default"] else "",
                 f"{r['size_bytes'] / 1e6:.3g}", f"{100 * r['accuracy']:.2f}", f"{r['accuracy_drop_points']:.2f}",
                 p50, *[f"{r['latency_p50_ms_at_threads'][str(t)]:.3f}" for t in extra],
                 _ratio(r, "fastest_fp32"), _ratio(r, "fastest_peer_default"), within, chosen]
        lines.append("| " + " | ".join(cells) + " |")
    for n in not_run:
        cells = [n["name"], n["backend"], n["precision"], "", "", "-", "-", "-", "-", *["-" for _ in extra], "-", "-",
                 "-", n["reason"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    out = ["\n".join(lines), ""]
    out.append(f"Timed on this host ({measured['cpu']}), {measured['threads']} thread(s), batch 1, one fresh process, "
               f"all models round-robin; {describe_load(measured['load_average'])}. Accuracy budget: {budget:g} top-1 "
               f"points below {REFERENCE}.")
    if sel:
        where = ", ".join(dict.fromkeys([sel["backend"], sel["format"], sel["settings"]]))
        out.append(f"Chosen: {sel['chosen']} ({where}): "
                   f"{sel['speedup_vs_fastest_fp32']:.2f}x the fastest fp32 model ({sel['fastest_fp32']})"
                   + (f", {sel['speedup_vs_fastest_peer_default']:.2f}x the fastest peer default "
                      f"({sel['fastest_peer_default']})" if sel.get("speedup_vs_fastest_peer_default") else "") + ".")
    for r in table:
        cost = r.get("float_layers_cost")
        if cost:
            out.append(f"{r['name']} keeps {cost['layers']} layer(s) in float ({', '.join(r['kept_in_float']) or 'none'}); "
                       f"against {cost['vs']} they cost {cost['size_bytes'] / 1e3:+.1f} KB and {cost['p50_ms']:+.3f} ms "
                       f"p50 ({cost['latency_ratio']:.2f}x, {cost['verdict']}) and recover "
                       f"{cost['accuracy_points_recovered']:.2f} top-1 points.")
    return "\n".join(out) + "\n"
