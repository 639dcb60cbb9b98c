"""Candidates side by side: build every one (pipeline.library.candidates), load and score the runnable ones, time
them all in one fresh process (pipeline.runtimes.measure: round-robin, bootstrap intervals), and lay the numbers out
as table rows with their ratios to the fastest fp32 model and the fastest peer default. One back end failing never
hides the others' numbers: it becomes a row with its status and reason. Used by select_int8 and benchmark_formats."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.library.candidates import (CANDIDATES, FAILED, NOT_RUNNABLE, RAN, Candidate, Env, Unbuildable, build,
                                         not_runnable, settings, size)


def _first_line(e: BaseException) -> str:
    """The error in one line; ONNX Runtime's node failures lose the C++ source location and keep the check's words."""
    text = " ".join(str(e).split())
    if " Status Message: " in text:
        head, _, rest = text.partition(" Status Message: ")
        text = head + (f" ({rest.rsplit(' was false. ', 1)[1]})" if " was false. " in rest else "")
    return f"{type(e).__name__}: {text[:300]}"


def build_and_score(names: list[str], root: Path, env: Env, score: Callable[[str, Any], Any], log,
                    progress: Callable[[int, int, str], None] | None = None) -> tuple[dict, dict]:
    """Build every candidate of `names` under `root`, load the runnable ones and score them (`score(name, model)`:
    the task metric or None when there is none, or a pipeline.convert.scoring.Score, which says whether the candidate
    is within budget for any task). Returns (built: {name: {path, meta, accuracy, score, runtime, build_s}},
    skipped: {name: {status, reason, size_bytes?}}). `progress(k, n, name)` is called before each candidate."""
    from pipeline import runtimes

    built: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    for k, name in enumerate(names, start=1):
        if progress:
            progress(k, len(names), name)
        c, t0 = CANDIDATES[name], time.perf_counter()
        why_not = not_runnable(c)
        if why_not is not None and c.format != "coreml":  # nothing to gain from building it (Core ML: its size)
            skipped[name] = {"status": NOT_RUNNABLE, "reason": why_not}
            continue
        try:
            d = root / name
            d.mkdir(parents=True)
            path, meta = build(name, d, env)
        except Unbuildable as e:
            skipped[name] = {"status": NOT_RUNNABLE, "reason": str(e)}
            continue
        except Exception as e:  # one back end failing here must not hide the others' numbers
            log.debug("building %s failed", name, exc_info=True)
            skipped[name] = {"status": FAILED, "reason": f"could not be built here: {_first_line(e)}"}
            continue
        if why_not is not None:
            skipped[name] = {"status": NOT_RUNNABLE, "reason": why_not, "size_bytes": size(c.format, path),
                             "settings": settings(c, meta, 0)}
            continue
        try:
            model = runtimes.load(c.format, path, meta, threads=0)
            model.predict(env.calib[:1])  # one real image: a model that cannot run says so here, not when timed
            result = score(name, model)
            acc = getattr(result, "accuracy", result)
        except Exception as e:
            log.debug("running %s failed", name, exc_info=True)
            skipped[name] = {"status": FAILED, "reason": f"does not run here: {_first_line(e)}"}
            continue
        seconds = time.perf_counter() - t0
        log.info("%s: built%s in %.1f s (%s)", name, " and evaluated" if result is not None else "", seconds,
                 scored_words(result))
        built[name] = {"path": path, "meta": meta, "accuracy": acc, "score": result, "runtime": model.runtime,
                       "build_s": seconds}
    return built, skipped


def scored_words(result) -> str:
    """A candidate's score in words: its metric, its fidelity to the reference, or nothing to score."""
    acc = getattr(result, "accuracy", result)
    if acc is not None:
        return f"metric {acc:.4f}"
    fidelity = getattr(result, "fidelity", None) or {}
    return ", ".join(f"{k} {'identical' if v is None else format(v, '.4f')}" for k, v in fidelity.items()) or "no score"


def time_side_by_side(built: dict, skipped: dict, threads: int, warmup: int, iterations: int) -> dict:
    """Every built candidate timed in one fresh process, round-robin (pipeline.runtimes.measure's result). A model
    the measuring process could not load or run moves from `built` to `skipped` as failed."""
    from pipeline.runtimes import isolated

    models = [{"name": n, "fmt": CANDIDATES[n].format, "path": str(b["path"]), "meta": b["meta"],
               "shape": [1, *list(b["meta"]["input_shape"])[1:]]} for n, b in built.items()]
    measured = isolated.measure(models, threads, warmup, iterations)
    for name, why in (measured.get("failed") or {}).items():
        built.pop(name, None)
        skipped[name] = {"status": FAILED, "reason": f"does not run in the timing process: {why}"}
    return measured


def display_precision(c: Candidate) -> str:
    """The precision as run: OpenVINO's "default" named for what the plugin picked on this CPU."""
    if c.precision != "default":
        return c.precision
    from pipeline.convert.openvino import default_inference_precision

    p = default_inference_precision()
    return {"f32": "fp32", "f16": "fp16"}.get(p, p)


def rows(built: dict, measured: dict, ref_acc: float | None, threads: int) -> dict:
    """One row per built candidate: size, metric (and its drop against REFERENCE), p50 with interval, FPS, and the
    speed-ups against the fastest fp32 model and the fastest peer default, each with its side-by-side interval."""
    m, sp = measured["models"], measured["speedups"]
    out = {}
    for n, b in built.items():
        c = CANDIDATES[n]
        acc, sc = b["accuracy"], b.get("score")
        out[n] = {"name": n, "backend": c.backend, "format": c.format, "precision": display_precision(c),
                  "kind": "int8" if c.precision == "int8" else "float", "peer_default": c.peer_default,
                  "status": RAN, "settings": settings(c, b["meta"], threads), "runtime": m[n]["runtime"],
                  "size_bytes": size(c.format, b["path"]), "accuracy": acc,
                  "accuracy_drop_points": (getattr(sc, "drop_points", None) if acc is None or ref_acc is None
                                           else 100.0 * (ref_acc - acc)),
                  "fidelity": getattr(sc, "fidelity", None) or {}, "problems": list(getattr(sc, "problems", [])),
                  "latency_p50_ms": m[n]["latency_p50_ms"], "latency_p90_ms": m[n]["latency_p90_ms"],
                  "latency_p50_ci": [m[n].get("latency_p50_ci_low_ms"), m[n].get("latency_p50_ci_high_ms")],
                  "fps": 1000.0 / m[n]["latency_p50_ms"] if m[n]["latency_p50_ms"] else None,
                  "build_seconds": b["build_s"], "about": c.about}
    for key, ref in (("fastest_fp32", fastest(out, "precision", "fp32")),
                     ("fastest_peer_default", fastest(out, "peer_default", True))):
        if ref is None:
            continue
        for n, r in out.items():
            if r is ref:
                r[f"speedup_vs_{key}"], r[f"speedup_vs_{key}_ci"] = 1.0, [1.0, 1.0]
            else:  # speedups[a][b] = b's p50 / a's p50, measured side by side
                s = sp[n][ref["name"]]
                r[f"speedup_vs_{key}"], r[f"speedup_vs_{key}_ci"] = s["speedup"], s["ci"]
                r[f"speedup_vs_{key}_verdict"] = s["verdict"]
    return out


def skipped_rows(skipped: dict) -> list[dict]:
    """The candidates that were not timed, with their status and reason (and size, where they were built)."""
    out = []
    for n, s in skipped.items():
        c = CANDIDATES[n]
        out.append({"name": n, "backend": c.backend, "format": c.format, "precision": c.precision,
                    "peer_default": c.peer_default, "about": c.about, **s})
    return out


def fastest(rows_: dict, key: str, value) -> dict | None:
    """The row with the lowest p50 among those whose `key` is `value` (the fastest fp32, the fastest peer default)."""
    match = [r for r in rows_.values() if r[key] == value]
    return min(match, key=lambda r: r["latency_p50_ms"]) if match else None


def keep(fmt: str, path, workdir: Path) -> Path:
    """Copy a chosen model (an IR: its .xml and .bin) into a stage's work directory; returns its new path."""
    path = Path(path)
    out = workdir / path.name
    shutil.copy2(path, out)
    if fmt == "openvino":
        shutil.copy2(path.with_suffix(".bin"), out.with_suffix(".bin"))
    return out


def write_csv(path: Path, table: list[dict]) -> None:
    """The cross-format table as CSV: one line per candidate, the numbers unformatted (a spreadsheet's job)."""
    import csv

    cols = ["name", "backend", "format", "precision", "status", "reason", "peer_default", "settings", "runtime",
            "size_bytes", "accuracy", "latency_p50_ms", "latency_p50_ci_low_ms", "latency_p50_ci_high_ms",
            "latency_p90_ms", "fps", "speedup_vs_fastest_fp32", "speedup_vs_fastest_fp32_ci_low",
            "speedup_vs_fastest_fp32_ci_high"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in table:
            ci, sci = r.get("latency_p50_ci") or [None, None], r.get("speedup_vs_fastest_fp32_ci") or [None, None]
            w.writerow({**r, "latency_p50_ci_low_ms": ci[0], "latency_p50_ci_high_ms": ci[1],
                        "speedup_vs_fastest_fp32_ci_low": sci[0], "speedup_vs_fastest_fp32_ci_high": sci[1]})
