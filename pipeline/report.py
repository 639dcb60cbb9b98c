"""summary.json (the machine-readable contract) and the console table. Imports no ML framework."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipeline import judge, tasks
from pipeline.cache import write_json_atomic
from pipeline.results import Findings

SCHEMA_VERSION = 2  # summary.json's layout; README's "summary.json" table lists every field and its changes

RED, GREEN, RESET = "\033[31m", "\033[32m", "\033[0m"


def _artifact_rows(records: list, gate_cfg: Any, metric: str = "top-1") -> list[dict]:
    found: dict[str, Findings] = {}  # artifact name -> what every analysis stage found about it
    for r in records:
        for name, f in r.about.items():
            found[name] = found.get(name, Findings()).merged(f)
    rows = []
    for r in records:
        if r.artifact is None:
            continue
        a = r.artifact
        f = found.get(r.stage, Findings())
        lat = f.latency
        rows.append({
            "name": r.stage, "stage": r.stage, "type": r.type, "format": a.format, "precision": a.precision,
            "path": r.info.get("run_path", str(a.path)), "size_bytes": a.size_bytes,
            "sha256": r.info.get("sha256"),
            "accuracy": f.accuracy,
            "latency_ms": {"p50": lat.p50_ms, "p90": lat.p90_ms,
                           **({"p50_ci": list(lat.p50_ci)} if lat and lat.p50_ci else {})} if lat else None,
            "ratio_ci": lat.ratio_ci if lat else None,
            "load_ms": lat.load_ms if lat else None, "load_rss_mb": lat.load_rss_mb if lat else None,
            "runtime": (lat.runtime if lat else None) or f.eval_runtime,
            "measured_on": lat.measured_on if lat else None,
            "latency_source": lat.source if lat else None,
            # measured on the device itself (device.connection): own fields, never mixed with the host's numbers
            "device_latency_ms": ({"p50": f.device_latency.p50_ms, "p90": f.device_latency.p90_ms}
                                  if f.device_latency else None),
            "device_load_ms": f.device_latency.load_ms if f.device_latency else None,
            "measured_on_device": f.measured_on_device,
            "not_runnable": f.not_runnable,
            "parity": f.parity,
            # read back from the file by the export stage: does every operator compute in integers, how are weights stored
            **({"integer_only": a.meta["tflite"]["integer_only"], "float_operators": a.meta["tflite"]["float_operators"]}
               if a.format == "tflite" and "tflite" in a.meta else {}),
            **({"weight_share_by_dtype": a.meta["coreml"].get("weight_share_by_dtype")}
               if a.format == "coreml" and "coreml" in a.meta else {}),
            **({"selection": f.selection} if f.selection else {}),
            **({"optimization": f.optimization} if f.optimization else {}),
            "cache_key": r.cache_key,
            # the device estimate (never a measurement), accelerator coverage, inference-memory estimate
            "estimate": f.estimate, "no_estimate": f.no_estimate,
            "coverage": f.coverage_summary, "ram_estimate_mb": f.ram_estimate_mb,
            "pruning": a.meta.get("pruning"),  # set by the prune stage, inherited by exports of its model
        })
    judge.compare(rows, gate_cfg, metric)
    return rows


def _payoff(rows: list[dict], device: Any) -> None:
    """Pay-off check of pruning: say in words when sparsity buys no size or latency in the runtime.

    Compares a pruned artifact with the unpruned one of the same format and precision when the recipe has it
    (measured size and latency); unstructured zeros are dense-kernel zeros in every runtime we deploy to.
    """
    for r in rows:
        r["notes"] = []
        pr = r.get("pruning")
        if not pr:
            continue
        base = next((b for b in rows if not b.get("pruning") and b["format"] == r["format"]
                     and b["precision"] == r["precision"]), None)
        smaller = base["size_bytes"] / r["size_bytes"] if base and r["size_bytes"] else None
        faster = (base["latency_ms"]["p50"] / r["latency_ms"]["p50"]
                  if base and base["latency_ms"] and r["latency_ms"] else None)
        vs = f" than the unpruned {base['name']!r}" if base else ""
        measured = (f"{smaller:.2f}x smaller" if smaller else "") + (f", {faster:.2f}x faster" if faster else "")
        no_gain = (smaller is not None and smaller < 1.05 and (faster is None or faster < 1.05))
        if pr["method"] == "unstructured" or no_gain:
            gz = (f"; only a compressed download shrinks (gzip of the PyTorch weights "
                  f"{pr['gzip_bytes_before'] / 1e6:.2f} -> {pr['gzip_bytes_after'] / 1e6:.2f} MB)"
                  if pr.get("gzip_bytes_after") else "")
            r["notes"].append(
                f"pay-off check: {r['name']!r} has {100 * pr['sparsity']:.0f}% zero weights ({pr['method']} pruning), "
                f"but the {r['format']} file stores every zero in dense tensors, and {device.runtime} on "
                f"{device.display_name} runs them as dense: no size or latency gain"
                + (f" ({measured}{vs})" if measured else "") + gz)
        elif measured:
            r["notes"].append(f"pay-off check: {r['name']!r} ({pr['method']} pruning, {100 * pr['amount']:.0f}%): "
                              f"{measured}{vs}")


def build_summary(*, recipe: str, device: Any, status: str, mlflow: dict, records: list, gate_cfg: Any,
                  run_dir: Path, error: str | None = None, task: str = "classification") -> dict:
    stages = [{"name": r.name, "type": r.type, "status": r.status, "seconds": round(r.seconds, 3),
               "cache_key": r.cache_key, "reason": r.reason, "inputs": r.inputs, "metrics": r.metrics,
               **({"error": r.error} if r.error else {})} for r in records]
    label = tasks.primary_label(task)
    rows = _artifact_rows(records, gate_cfg, label) if status != "invalid" else []
    _payoff(rows, device)
    return {
        "schema_version": SCHEMA_VERSION,
        "recipe": recipe,
        "task": {"name": task, "metric": label},  # `accuracy` of every artifact is this metric, a fraction
        "device": {"name": device.name, "display_name": device.display_name, "runtime": device.runtime},
        "status": status,
        "error": error,
        "run_dir": str(run_dir),
        "mlflow": mlflow,
        "stages": stages,
        "artifacts": rows,
        "gate": judge.gate(rows, device, gate_cfg),
    }


def write_summary(run_dir: Path, summary: dict) -> Path:
    path = run_dir / "summary.json"
    write_json_atomic(path, summary)
    return path


def headline_metrics(summary: dict) -> dict[str, float]:
    """Stable metric names for the parent MLflow run: <artifact>.<metric>."""
    out = {}
    for a in summary["artifacts"]:
        n = a["name"]
        vals = {"accuracy": a["accuracy"], "size_mb": a["size_bytes"] / 1e6, "speedup": a["speedup"],
                "size_ratio": a["size_ratio"], "accuracy_delta": a["accuracy_delta"]}
        if a["latency_ms"]:
            vals.update(latency_p50_ms=a["latency_ms"]["p50"], latency_p90_ms=a["latency_ms"]["p90"])
        if a.get("estimate"):  # named "estimate" so it is never read as a measurement
            vals["estimate_latency_ms"] = a["estimate"]["latency_ms"]
            vals["estimate_upper_ms"] = a["estimate"].get("upper_ms")
        if a.get("device_latency_ms"):  # measured on the device itself
            vals.update(device_latency_p50_ms=a["device_latency_ms"]["p50"],
                        device_latency_p90_ms=a["device_latency_ms"]["p90"])
        if a.get("gate"):
            vals["gate_pass"] = float(a["gate"]["pass"])
        out.update({f"{n}.{k}": v for k, v in vals.items() if v is not None})
    return out


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _optimization_line(a: dict) -> str:
    o = a["optimization"]
    if not o.get("chosen"):
        return f"{a['name']}: nothing within the budgets ({o.get('why_none')})"
    iv = o.get("speedup_vs_peer_default_interval")
    sp = (f"{o['speedup_vs_peer_default']:.2f}x" + (f" ({iv[0]:.2f}-{iv[1]:.2f})" if iv else "")
          if o.get("speedup_vs_peer_default") is not None else "n/a")
    s = o.get("search") or {}
    return (f"{a['name']}: chose {o['chosen']}: {sp} the fastest peer-default int8 of the unmodified model "
            f"({o.get('peer_default')}, {o.get('latency_source')}), accuracy_drop {o['accuracy_drop']:.2f} top-1 points "
            f"against the unmodified fp32 model; {s.get('trials')} trial(s), {s.get('stop_reason')}; see optimize.md")


def table(summary: dict, color: bool | None = None) -> str:
    """One row per produced artifact; a regression (slower or less accurate than allowed) is shown in red."""
    color = sys.stdout.isatty() if color is None else color
    metric = (summary.get("task") or {}).get("metric") or "top-1"
    head = ["stage", "format", "precision", "runtime", "size MB", f"{metric} %", "p50 ms", "speed-up", "size ratio",
            "device ms", "est. ms*", "gate", "status"]
    rows = []
    for a in summary["artifacts"]:
        lat = a["latency_ms"]["p50"] if a["latency_ms"] else None
        acc = None if a["accuracy"] is None else 100 * a["accuracy"]
        status = "✅" if a["ok"] else "❌ " + "; ".join(a["problems"])
        if a.get("speed_verdict") == "no measurable difference":
            status += " speed: no measurable difference from its baseline"
        if a.get("not_runnable"):
            status += f" ({a['not_runnable']})" if "not runnable" in a["not_runnable"] else " (not run on this host)"
        runtime = " ".join((a.get("runtime") or "-").split()[:2])
        rows.append([a["name"], a["format"], a["precision"], runtime, f"{a['size_bytes'] / 1e6:.2f}", _fmt(acc, ".2f"),
                     _fmt(lat, ".2f"), _fmt(a["speedup"], ".2f", "") + ("x" if a["speedup"] else ""),
                     _fmt(a["size_ratio"], ".2f", "") + ("x" if a["size_ratio"] else ""),
                     _fmt((a.get("device_latency_ms") or {}).get("p50"), ".3g"),
                     _fmt((a.get("estimate") or {}).get("latency_ms"), ".3g"),
                     "-" if not a.get("gate") else ("pass" if a["gate"]["pass"] else "FAIL"), status])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(head), line(["-" * w for w in widths])]
    for r, a in zip(rows, summary["artifacts"]):
        text = line(r)
        if color:
            text = f"{GREEN if a['ok'] else RED}{text}{RESET}"
        out.append(text)
    for a in summary["artifacts"]:
        sel = a.get("selection")
        if sel:
            losers = [f"{c['name']} ({c['format']}, {c['latency_p50_ms']:.2f} ms, {metric} {100 * c['accuracy']:.2f}%: "
                      f"{c['lost_because']})" for c in sel["candidates"] if c["kind"] == "int8" and not c["chosen"]]
            out.append(f"{a['name']}: measured choice {sel['chosen']} ({sel['speedup_vs_fastest_fp32']:.2f}x the "
                       f"fastest fp32, {sel['fastest_fp32']}); not chosen: {'; '.join(losers) or 'none'}")
    out += [_optimization_line(a) for a in summary["artifacts"] if a.get("optimization")]
    out += [n for a in summary["artifacts"] for n in a.get("notes", [])]  # pruning pay-off in words
    measured = {a["measured_on"] for a in summary["artifacts"] if a.get("measured_on")}
    out += [f"latency: measured on {m}" for m in sorted(measured)]
    on_dev = {(o["device"], o["connection"], o["runtime"], o["version"], o["threads"])
              for o in (a.get("measured_on_device") for a in summary["artifacts"]) if o}
    out += [f"device ms: measured on {d} ({c}), {rt} {v}, {t} thread(s)" for d, c, rt, v, t in sorted(on_dev)]
    # the estimate's provenance, accelerator coverage and failed budgets, one line each
    labels = {a["estimate"]["label"] for a in summary["artifacts"] if a.get("estimate")}
    out += [f"* est. ms: {l}" for l in sorted(labels)]
    out += [f"* est. ms: none for {a['name']}: {a['no_estimate']}" for a in summary["artifacts"] if a.get("no_estimate")]
    out += [f"coverage {a['name']}: {a['coverage']}" for a in summary["artifacts"] if a.get("coverage")]
    for a in summary["artifacts"]:
        if a.get("gate") and a["gate"]["failed"]:
            out.append(f"gate {a['name']}: misses " + "; ".join(a["gate"]["failed"]))
    return "\n".join(out)
