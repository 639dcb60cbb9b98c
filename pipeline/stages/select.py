"""`select_int8`: the measured int8 choice where the device leaves the format open (device=host).

From one trained model it builds the candidates every back end here can make, in every precision this CPU runs:
ONNX Runtime fp32 and its QDQ int8 variants (quantize_static's defaults, per-channel, signed/unsigned activations,
Add left in float, the outputs' decoding left in float, NNCF's ONNX int8), OpenVINO fp32 / its default / bf16 / f16
and NNCF int8 (LATENCY and THROUGHPUT hints), ExecuTorch XNNPACK fp32 and int8, LiteRT fp32 and full-integer int8,
and, when no plain int8 candidate stays within the accuracy budget, NNCF's accuracy-controlled int8 (the costliest
layers kept in float, listed with what they cost). Every candidate is judged on the validation split
(pipeline.convert.scoring: the task's metric where there are labels, else every output's fidelity to the input
model against the parity thresholds) and timed side by side in one fresh process
(pipeline.runtimes.measure, round-robin, bootstrap intervals). The fastest int8 candidate within the budget is the
artifact; the table (summary, log, select_int8.md) shows every candidate with its ratios to the fastest fp32 model and
to the fastest peer default (what a user of each back end gets with its defaults), and a candidate that cannot run
here says why instead of a number. A choice still slower than the fastest fp32 model is flagged red in the summary.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.convert.onnx import METHODS
from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import NonNegative, NonNegativeInt, PositiveInt, one_of
from pipeline.core.results import Findings
from pipeline.library import candidates as cands
from pipeline.library import side_by_side as sbs
from pipeline.stages.base import Stage, StageContext, StageResult


# every candidate but Core ML's (it cannot run on Linux, so it cannot be timed or chosen here)
CANDIDATES = {n: c for n, c in cands.CANDIDATES.items() if c.format != "coreml"}
# all but openvino_bf16 (OpenVINO's default already computes in bf16 wherever the CPU can) and ort_nncf_int8 (built
# when ONNX accuracy control is, as what it is compared with)
DEFAULT_CANDIDATES = [n for n in CANDIDATES if n not in ("openvino_bf16", "ort_nncf_int8")]
REFERENCE = cands.REFERENCE

AC_WHEN = ("if_needed", "always")


@dataclass
class SelectInt8Config:
    calibration_samples: PositiveInt = 128  # training images every candidate is calibrated on (the same images for all)
    method: one_of(*METHODS) = "minmax"  # ONNX Runtime calibration: minmax | entropy | percentile
    candidates: List[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))  # which candidates to build and time
    # accuracy-controlled candidates: if_needed = only when no plain int8 candidate is within budget | always
    accuracy_control: one_of(*AC_WHEN) = "if_needed"
    accuracy_control_samples: PositiveInt = 300  # labelled training images NNCF validates on (not the validation split)
    # top-1 points NNCF's accuracy control aims for on those training images; null = half the budget, because the choice
    # is judged on the validation split, which NNCF never sees
    accuracy_control_max_drop: Optional[NonNegative] = None
    max_accuracy_drop: Optional[NonNegative] = None  # top-1 points a candidate may lose vs fp32; null = gate.max_accuracy_drop
    eval_samples: Optional[PositiveInt] = None  # validation images for the accuracy check (null = all)
    threads: List[NonNegativeInt] = field(default_factory=list)  # more thread counts to time, each in its own process; the choice uses the device's
    warmup: NonNegativeInt = 10  # untimed runs of each model
    iterations: PositiveInt = 50  # timed runs of each model (p50 decides)


# reads host: it times the candidates here; task: what its outputs mean, so how a candidate is judged
class SelectInt8(Stage, type="select_int8", config=SelectInt8Config, accepts=("onnx",),
                 implements=("quantize", "measured"), inputs=1,
                 reads=("data", "host", "seed", "task", "device.threads", "gate.max_accuracy_drop")):
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
        if p.iterations < 1 or p.warmup < 0:
            problems.append(f"iterations must be >= 1 and warmup >= 0 (got {p.iterations}, {p.warmup})")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        from pipeline import runtimes, tasks
        from pipeline.convert.scoring import Scorer
        from pipeline.library import calibration
        from pipeline.runtimes import host_threads

        p: SelectInt8Config = ctx.params
        src = ctx.input
        data = ctx.data()
        budget = p.max_accuracy_drop if p.max_accuracy_drop is not None else float(ctx.settings.gate.max_accuracy_drop)
        threads = host_threads(int(ctx.settings.device.threads))
        n_ac = min(p.accuracy_control_samples, len(data.train_x))
        idx = np.random.default_rng(int(ctx.settings.seed) + 1).choice(len(data.train_x), n_ac, replace=False)
        root = ctx.workdir / "candidates"
        task = tasks.for_model(ctx.settings.task, src.meta, data.num_classes or None)
        # NNCF's accuracy control validates with top-1 on labelled images (pipeline.convert.openvino.top1_validation)
        ac_data = (data.train_x[idx], data.train_y[idx]) if task.name == "classification" else None
        env = cands.Env(src=src, torch=next((a for a in ctx.lineage(src.stage) if a.format == "torch"), None),
                        calib=calibration.sample(data, p.calibration_samples, ctx.settings.seed, ctx.name),
                        ir_dir=root / "_openvino_ir", method=p.method, ac_data=ac_data,
                        ac_target=p.accuracy_control_max_drop if p.accuracy_control_max_drop is not None else budget / 2)
        x, y = data.val_x, data.val_y
        if p.eval_samples:
            x, y = x[: p.eval_samples], (None if y is None else task.take(y, np.arange(min(p.eval_samples, len(x)))))
        # a labelled task is judged on its metric; a label-free model on its outputs' fidelity to the input model
        scorer = Scorer(task, y, budget, names=src.meta.get("output_names"))
        names = list(dict.fromkeys([REFERENCE, *p.candidates]))

        def score(name: str, model):
            outs = runtimes.predict_all_outputs(model, x, 64)
            if name == REFERENCE:  # (built first: every other candidate is judged against it)
                scorer.reference(outs)
            return scorer.score(outs)

        progress = lambda k, n, name: ctx.log.info("candidate %d of %d: %s", k, n, name)
        built, skipped = sbs.build_and_score([n for n in names if not CANDIDATES[n].accuracy_control], root, env,
                                               score, ctx.log, progress)
        if REFERENCE not in built:
            raise RuntimeError(f"the input model cannot run here ({skipped.get(REFERENCE, {}).get('reason')}): "
                               f"nothing to compare with")
        self._accuracy_control(p, names, built, skipped, root, env, score, task, ctx.log)
        for name, s in skipped.items():
            ctx.log.warning("%s: %s", name, s["reason"])
        ref_acc = built[REFERENCE]["accuracy"]

        # latency: every built model in one fresh process per thread count, round-robin
        t0 = time.perf_counter()
        measured = sbs.time_side_by_side(built, skipped, threads, p.warmup, p.iterations)
        ctx.log.info("timed %d models side by side in %.1f s", len(built), time.perf_counter() - t0)
        extra = {t: sbs.time_side_by_side(built, skipped, t, p.warmup, p.iterations)
                 for t in dict.fromkeys(host_threads(t) for t in p.threads) if t != threads}
        rows = _rows(built, measured, extra, ref_acc, threads)
        table = sorted(rows.values(), key=lambda r: r["latency_p50_ms"])
        not_run = sbs.skipped_rows(skipped)
        judged_on = scorer.describe()
        best = _choose(rows, judged_on, measured, skipped, ctx.log, lambda: _markdown(table, not_run, None, judged_on,
                                                                                      measured, extra))
        selection = _selection(best, rows, table, not_run, threads, measured, budget, ref_acc)
        selection["judged_on"] = judged_on
        md = _markdown(table, not_run, selection, judged_on, measured, extra)
        (ctx.workdir / "select_int8.md").write_text(md)
        chosen = built[best["name"]]
        out = sbs.keep(CANDIDATES[best["name"]].format, chosen["path"], ctx.workdir)
        shutil.rmtree(root)  # the losers are listed, not kept
        for line in md.splitlines():
            ctx.log.info("%s", line)
        if selection["slower_than_fp32"]:
            ctx.log.warning("the fastest passing int8 model (%s) is SLOWER than fp32 %s on this host (%.2fx)",
                            best["name"], selection["fastest_fp32"], best["speedup_vs_fastest_fp32"])
        meta = {**chosen["meta"], "selection": {k: v for k, v in selection.items()
                                                if k not in ("candidates", "not_runnable")}}
        return StageResult(Artifact(ctx.name, best["format"], "int8", out, meta),
                           metrics=_metrics(best, len(built), len(skipped)), info={"selection": selection},
                           about={ctx.name: Findings(selection=selection)})

    @staticmethod
    def _accuracy_control(p, names, built, skipped, root, env, score, task, log) -> None:
        """Build the accuracy-controlled candidates when asked for: always, or only when no plain int8 candidate
        is within the budget; each next to its plain int8 counterpart, so the two are timed side by side."""
        ac = [n for n in names if CANDIDATES[n].accuracy_control]
        within = [n for n, b in built.items() if CANDIDATES[n].precision == "int8" and b["score"].passed]
        for name in ac:
            if env.ac_data is None:
                skipped[name] = {"status": cands.NOT_RUNNABLE,
                                 "reason": f"not built: NNCF's accuracy control here validates top-1 on labelled "
                                           f"images, and task {task.name!r} has none"}
            elif p.accuracy_control == "if_needed" and within:
                skipped[name] = {"status": cands.NOT_RUNNABLE,
                                 "reason": f"not built: plain int8 already meets the budget ({within[0]}); "
                                           f"accuracy_control=always builds it anyway"}
                continue
            todo = [n for n in (CANDIDATES[name].counterpart, name) if n not in built and n not in skipped]
            b, s = sbs.build_and_score(todo, root, env, score, log)
            built.update(b)
            skipped.update(s)


def _metrics(best: dict, built: int, skipped: int) -> dict:
    metrics = {"speedup_vs_fastest_fp32": best["speedup_vs_fastest_fp32"], "candidates": built,
               "not_runnable": skipped}
    if best.get("speedup_vs_fastest_peer_default") is not None:
        metrics["speedup_vs_fastest_peer_default"] = best["speedup_vs_fastest_peer_default"]
    if best.get("kept_in_float") is not None:
        metrics["layers_in_float"] = len(best["kept_in_float"])
    return metrics


def _choose(rows: dict, judged_on: str, measured: dict, skipped: dict, log, table) -> dict:
    """The fastest int8 row within the budget; every other int8 row says why it lost. Raises when none passes."""
    int8 = [r for r in rows.values() if r["kind"] == "int8"]
    passing = sorted((r for r in int8 if r["passed"]), key=lambda r: r["latency_p50_ms"])
    if not passing:
        for line in table().splitlines():
            log.info("%s", line)
        raise RuntimeError(f"no int8 candidate stays within the budget ({judged_on}): "
                           + "; ".join(f"{r['name']}: {'; '.join(r['problems'])}" for r in int8)
                           + (f"; not run: {', '.join(skipped)}" if skipped else ""))
    best = passing[0]
    sp = measured["speedups"]
    for r in int8:
        r["chosen"] = r is best
        if r is not best:
            r["lost_because"] = "slower" if r["passed"] else "; ".join(r["problems"])
            if r["passed"] and sp[best["name"]][r["name"]]["verdict"] == "no measurable difference":
                r["lost_because"] = "slower by less than the interval (a tie)"
    return best


def _selection(best: dict, rows: dict, table: list, not_run: list, threads: int, measured: dict, budget: float,
               ref_acc: float) -> dict:
    fastest_fp32, fastest_peer = sbs.fastest(rows, "precision", "fp32"), sbs.fastest(rows, "peer_default", True)
    int8 = [r for r in rows.values() if r["kind"] == "int8"]
    return {"chosen": best["name"], "backend": best["backend"], "format": best["format"],
            "settings": best["settings"], "threads": threads, "cpu": measured["cpu"],
            "load_average": measured["load_average"], "budget_points": budget,
            "reference": REFERENCE, "reference_accuracy": ref_acc,
            "fastest_fp32": fastest_fp32["name"], "speedup_vs_fastest_fp32": best["speedup_vs_fastest_fp32"],
            "speedup_vs_fastest_fp32_ci": best["speedup_vs_fastest_fp32_ci"],
            "fastest_peer_default": fastest_peer["name"] if fastest_peer else None,
            "speedup_vs_fastest_peer_default": best.get("speedup_vs_fastest_peer_default"),
            "speedup_vs_fastest_peer_default_ci": best.get("speedup_vs_fastest_peer_default_ci"),
            "tied_with": [r["name"] for r in int8 if r.get("lost_because", "").endswith("(a tie)")],
            # slower only when the interval says so
            "slower_than_fp32": best["speedup_vs_fastest_fp32_ci"][1] < 1.0, "kept_in_float": best.get("kept_in_float"),
            "float_layers_cost": best.get("float_layers_cost"),
            "candidates": table, "not_runnable": not_run, "table": "select_int8.md"}


def _rows(built: dict, measured: dict, extra: dict, ref_acc: float | None, threads: int) -> dict:
    """The library's rows (size, metric or fidelity, p50 with interval, ratios) with the choice's own columns: the
    budget verdict (pipeline.convert.scoring decided it), the timings at other thread counts, and what an
    accuracy-controlled model's float layers cost."""
    rows = sbs.rows(built, measured, ref_acc, threads)
    sp = measured["speedups"]
    for n, r in rows.items():
        c = CANDIDATES[n]
        if extra:
            r["latency_p50_ms_at_threads"] = {str(t): e["models"][n]["latency_p50_ms"] for t, e in extra.items()}
        if c.precision == "int8":
            r["passed"] = built[n]["score"].passed
        q = built[n]["meta"].get("quantization") or {}
        if c.accuracy_control:
            r["kept_in_float"] = list(q.get("reverted_to_float", []))
            r["accuracy_control"] = {k: q.get(k) for k in ("max_drop", "validation_samples", "top1", "drop",
                                                           "plain_int8_drop", "met")}
    for n, r in rows.items():
        c = CANDIDATES[n]
        if c.accuracy_control and c.counterpart in rows:
            plain = rows[c.counterpart]
            s = sp[plain["name"]][n]  # the accuracy-controlled p50 / the plain int8 p50
            r["float_layers_cost"] = {
                "vs": plain["name"], "layers": len(r["kept_in_float"]),
                "size_bytes": r["size_bytes"] - plain["size_bytes"],
                "p50_ms": r["latency_p50_ms"] - plain["latency_p50_ms"],
                "latency_ratio": s["speedup"], "latency_ratio_ci": s["ci"], "verdict": _cost_verdict(s["verdict"]),
                "accuracy_points_recovered": (100.0 * (r["accuracy"] - plain["accuracy"])
                                              if r["accuracy"] is not None and plain["accuracy"] is not None else None)}
    return rows


def _cost_verdict(v: str) -> str:
    """speedups[plain][ac]'s verdict speaks of the plain model: "faster" there means accuracy control is slower."""
    return {"faster": "slower than plain int8", "slower": "faster than plain int8"}.get(v, v)


def _ratio(r: dict, key: str) -> str:
    v, ci = r.get(f"speedup_vs_{key}"), r.get(f"speedup_vs_{key}_ci")
    if v is None:
        return "-"
    return f"{v:.2f}x" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci and ci != [1.0, 1.0] else "")


def _metric_cell(r: dict) -> str:
    if r["accuracy"] is not None:
        return f"{100 * r['accuracy']:.2f}"
    f = r.get("fidelity") or {}
    snr = "identical" if f.get("snr_db") is None else f"{f['snr_db']:.1f} dB"
    return f"cos {f.get('cosine', float('nan')):.4f}, {snr}"


def _markdown(table: list[dict], not_run: list[dict], sel: dict | None, judged_on: str, measured: dict,
              extra: dict) -> str:
    """The stage's table: every candidate, timed or not, with why not."""
    from pipeline.runtimes.measure import describe_load

    extra_heads = [f"p50 ms @{t} thr" for t in extra]
    head = ["candidate", "backend", "precision", "settings", "peer default", "MB", "metric % / fidelity", "drop pts",
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
                 f"{r['size_bytes'] / 1e6:.3g}", _metric_cell(r),
                 "-" if r["accuracy_drop_points"] is None else f"{r['accuracy_drop_points']:.2f}",
                 p50, *[f"{r['latency_p50_ms_at_threads'][str(t)]:.3f}" for t in extra],
                 _ratio(r, "fastest_fp32"), _ratio(r, "fastest_peer_default"), within, chosen]
        lines.append("| " + " | ".join(cells) + " |")
    for n in not_run:
        cells = [n["name"], n["backend"], n["precision"], "", "", "-", "-", "-", "-", *["-" for _ in extra], "-", "-",
                 "-", n["reason"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    out = ["\n".join(lines), ""]
    out.append(f"Timed on this host ({measured['cpu']}), {measured['threads']} thread(s), batch 1, one fresh process, "
               f"all models round-robin; {describe_load(measured['load_average'])}. Budget: {judged_on}.")
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
                       f"p50 ({cost['latency_ratio']:.2f}x, {cost['verdict']})"
                       + ("" if cost["accuracy_points_recovered"] is None else
                          f" and recover {cost['accuracy_points_recovered']:.2f} top-1 points") + ".")
    return "\n".join(out) + "\n"
