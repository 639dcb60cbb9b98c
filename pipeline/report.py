"""summary.json (the machine-readable contract) and the console table. Imports no ML framework."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipeline.cache import write_json_atomic

RED, GREEN, RESET = "\033[31m", "\033[32m", "\033[0m"


def _artifact_rows(records: list, gate_cfg: Any) -> list[dict]:
    about: dict[str, dict[str, Any]] = {}  # artifact name -> what analysis stages found about it
    for r in records:
        for name, facts in r.about.items():
            about.setdefault(name, {}).update(facts)
    rows = []
    for r in records:
        if r.artifact is None:
            continue
        a = r.artifact
        m = about.get(r.stage, {})
        p50, p90 = m.get("latency_p50_ms"), m.get("latency_p90_ms")
        rows.append({
            "name": r.stage, "stage": r.stage, "type": r.type, "format": a.format, "precision": a.precision,
            "path": r.info.get("run_path", str(a.path)), "size_bytes": a.size_bytes,
            "accuracy": m.get("accuracy"),
            "latency_ms": {"p50": p50, "p90": p90} if p50 is not None else None,
            "load_ms": m.get("load_ms"), "load_rss_mb": m.get("load_rss_mb"),
            "runtime": m.get("runtime") or m.get("eval_runtime"),
            "measured_on": m.get("measured_on"),
            "not_runnable": m.get("not_runnable"),
            "cache_key": r.cache_key,
            # issue 5: device estimate (never a measurement), accelerator coverage, inference-memory estimate
            "estimate": m.get("estimate"), "no_estimate": m.get("no_estimate"),
            "coverage": m.get("coverage_summary"), "ram_estimate_mb": m.get("ram_estimate_mb"),
        })
    _compare(rows, gate_cfg)
    return rows


def _gate(rows: list[dict], device: Any, gate_cfg: Any) -> dict:
    """issue 5: a budget verdict per artifact (row["gate"]) and the verdict of the judged (final) artifact."""
    from pipeline.devices import budgets

    limits = budgets.effective(device, gate_cfg)
    for r in rows:
        r["gate"] = budgets.verdict(r, limits, device.name)
    name = gate_cfg.get("artifact") if hasattr(gate_cfg, "get") else None
    judged = next((r for r in rows if r["name"] == name), None) if name else (rows[-1] if rows else None)
    return {"enforce": bool(gate_cfg.get("enforce", False)) if hasattr(gate_cfg, "get") else False,
            "budgets": limits, "artifact": judged["name"] if judged else None,
            "pass": judged["gate"]["pass"] if judged else None, "failed": judged["gate"]["failed"] if judged else []}


def _compare(rows: list[dict], gate_cfg: Any) -> None:
    """Ratios against the fp32 baseline (same format if there is one) and a pass/fail verdict with reasons."""
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    for r in rows:
        same = [b for b in fp32 if b["format"] == r["format"] and b is not r]
        base = r if r["precision"] == "fp32" else (same[0] if same else (fp32[0] if fp32 else None))
        r["baseline"] = base["name"] if base else None
        r["speedup"] = r["size_ratio"] = r["accuracy_delta"] = None
        problems = []
        if base and base is not r:
            r["size_ratio"] = r["size_bytes"] / base["size_bytes"] if base["size_bytes"] else None
            if r["latency_ms"] and base["latency_ms"]:
                r["speedup"] = base["latency_ms"]["p50"] / r["latency_ms"]["p50"]
                if r["speedup"] < 1.0:
                    problems.append(f"slower than its fp32 baseline {base['name']!r} ({r['speedup']:.2f}x)")
            if r["accuracy"] is not None and base["accuracy"] is not None:
                r["accuracy_delta"] = 100.0 * (r["accuracy"] - base["accuracy"])
                if -r["accuracy_delta"] > gate_cfg.max_accuracy_drop:
                    problems.append(f"loses {-r['accuracy_delta']:.2f} top-1 points (gate.max_accuracy_drop="
                                    f"{gate_cfg.max_accuracy_drop:g})")
        r["problems"] = problems
        r["ok"] = not problems


def build_summary(*, recipe: str, device: Any, status: str, mlflow: dict, records: list, gate_cfg: Any,
                  run_dir: Path, error: str | None = None) -> dict:
    stages = [{"name": r.name, "type": r.type, "status": r.status, "seconds": round(r.seconds, 3),
               "cache_key": r.cache_key, "reason": r.reason, "inputs": r.inputs, "metrics": r.metrics,
               **({"error": r.error} if r.error else {})} for r in records]
    rows = _artifact_rows(records, gate_cfg) if status != "invalid" else []
    return {
        "recipe": recipe,
        "device": {"name": device.name, "display_name": device.display_name, "runtime": device.runtime},
        "status": status,
        "error": error,
        "run_dir": str(run_dir),
        "mlflow": mlflow,
        "stages": stages,
        "artifacts": rows,
        "gate": _gate(rows, device, gate_cfg),  # issue 5
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
        if a.get("estimate"):  # issue 5: named "estimate" so it is never read as a measurement
            vals["estimate_latency_ms"] = a["estimate"]["latency_ms"]
        if a.get("gate"):
            vals["gate_pass"] = float(a["gate"]["pass"])
        out.update({f"{n}.{k}": v for k, v in vals.items() if v is not None})
    return out


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def table(summary: dict, color: bool | None = None) -> str:
    """One row per produced artifact; a regression (slower or less accurate than allowed) is shown in red."""
    color = sys.stdout.isatty() if color is None else color
    head = ["stage", "format", "precision", "size MB", "top-1 %", "p50 ms", "speed-up", "size ratio", "est. ms*",
            "gate", "status"]
    rows = []
    for a in summary["artifacts"]:
        lat = a["latency_ms"]["p50"] if a["latency_ms"] else None
        acc = None if a["accuracy"] is None else 100 * a["accuracy"]
        status = "✅" if a["ok"] else "❌ " + "; ".join(a["problems"])
        if a.get("not_runnable"):
            status += " (not run on this host)"
        rows.append([a["name"], a["format"], a["precision"], f"{a['size_bytes'] / 1e6:.2f}", _fmt(acc, ".2f"),
                     _fmt(lat, ".2f"), _fmt(a["speedup"], ".2f", "") + ("x" if a["speedup"] else ""),
                     _fmt(a["size_ratio"], ".2f", "") + ("x" if a["size_ratio"] else ""),
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
    measured = {a["measured_on"] for a in summary["artifacts"] if a.get("measured_on")}
    out += [f"latency: measured on {m}" for m in sorted(measured)]
    # issue 5: the estimate's provenance, accelerator coverage and failed budgets, one line each
    labels = {a["estimate"]["label"] for a in summary["artifacts"] if a.get("estimate")}
    out += [f"* est. ms: {l}" for l in sorted(labels)]
    out += [f"* est. ms: none for {a['name']}: {a['no_estimate']}" for a in summary["artifacts"] if a.get("no_estimate")]
    out += [f"coverage {a['name']}: {a['coverage']}" for a in summary["artifacts"] if a.get("coverage")]
    for a in summary["artifacts"]:
        if a.get("gate") and a["gate"]["failed"]:
            out.append(f"gate {a['name']}: misses " + "; ".join(a["gate"]["failed"]))
    return "\n".join(out)
