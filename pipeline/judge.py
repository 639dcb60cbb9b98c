"""The verdicts, decided in one place: which artifact a run is judged on, each artifact's baseline, its speed-up,
size ratio and accuracy drop against that baseline, and its device budgets. summary.json, the console, the objective,
the registry and the compare tool all read what this module decided. Imports no ML framework.
"""
from __future__ import annotations

from typing import Any


def judged(rows: list[dict], name: str | None = None) -> dict | None:
    """The artifact row a run is judged on (`gate.artifact`): the named one; else one a stage flagged `final`; else the
    last model the plan produced (rows are in plan order, so that is the end of the chain: the deployment artifact)."""
    if name:
        return next((r for r in rows if r.get("name") == name), None)
    flagged = [r for r in rows if r.get("final")]
    if flagged:
        return flagged[-1]
    return rows[-1] if rows else None


def _speed_verdict(r: dict, base: dict) -> str:
    """faster | slower | no measurable difference. The interval of the speed-up measured side by side decides when
    there is one, else the p50 intervals; a latency timed without intervals (an older entry) is judged by its ratio."""
    from pipeline import stats  # (numpy, imported only when there is a latency to judge)

    if r.get("speedup_ci"):
        return stats.verdict_from_ratio(*r["speedup_ci"][:2])
    a, b = r["latency_ms"].get("p50_ci"), base["latency_ms"].get("p50_ci")
    if a and b:
        return stats.compare({"ci": a}, {"ci": b})
    return stats.FASTER if r["speedup"] >= 1.0 else stats.SLOWER


def compare(rows: list[dict], gate_cfg: Any, metric: str = "top-1") -> None:
    """Ratios against the fp32 baseline (same format if there is one) and a pass/fail verdict with reasons."""
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    timed = sorted((b for b in fp32 if b["latency_ms"]), key=lambda b: b["latency_ms"]["p50"])
    for r in rows:
        same = [b for b in fp32 if b["format"] == r["format"] and b is not r]
        # Core ML's float package is fp16: the same-format float model is the fairer baseline than a torch file
        same_fp16 = [b for b in rows if b["format"] == r["format"] and b["precision"] == "fp16" and b is not r]
        base = r if r["precision"] == "fp32" else (same[0] if same else same_fp16[0] if same_fp16 and
                                                   r["precision"] != "fp16" else timed[0] if timed and r["latency_ms"]
                                                   else fp32[0] if fp32 else None)
        r["baseline"] = base["name"] if base else None
        r["speedup"] = r["size_ratio"] = r["accuracy_delta"] = r["speedup_ci"] = r["speed_verdict"] = None
        problems = []
        if base and base is not r:
            r["size_ratio"] = r["size_bytes"] / base["size_bytes"] if base["size_bytes"] else None
            if r["latency_ms"] and base["latency_ms"]:
                r["speedup"] = base["latency_ms"]["p50"] / r["latency_ms"]["p50"]
                r["speedup_ci"] = (r.get("ratio_ci") or {}).get(base["name"])
                r["speed_verdict"] = _speed_verdict(r, base)
                if r["speed_verdict"] == "slower":
                    problems.append(f"slower than its fp32 baseline {base['name']!r} ({r['speedup']:.2f}x"
                                    + (f", interval {r['speedup_ci'][0]:.2f}-{r['speedup_ci'][1]:.2f}x)"
                                       if r["speedup_ci"] else ")"))
            if r["accuracy"] is not None and base["accuracy"] is not None:
                r["accuracy_delta"] = 100.0 * (r["accuracy"] - base["accuracy"])
                if -r["accuracy_delta"] > gate_cfg.max_accuracy_drop:
                    problems.append(f"loses {-r['accuracy_delta']:.2f} {metric} points (gate.max_accuracy_drop="
                                    f"{gate_cfg.max_accuracy_drop:g})")
        parity = r.get("parity") or {}
        if parity.get("ok") is False:  # a failed check is never ok, whatever else the row says
            problems += list(parity.get("problems") or ["parity failed"])
        sel = r.get("selection")
        if sel and sel.get("slower_than_fp32"):
            problems.append(f"slower than the fastest fp32 model {sel['fastest_fp32']!r} timed in the same run "
                            f"({sel['speedup_vs_fastest_fp32']:.2f}x)")
        r["problems"] = problems
        r["ok"] = not problems


def gate(rows: list[dict], device: Any, gate_cfg: Any) -> dict:
    """A budget verdict per artifact (row["gate"]) and the verdict of the judged artifact."""
    from pipeline.devices import budgets, catalog

    limits = budgets.effective(device, gate_cfg)
    for r in rows:
        r["gate"] = budgets.verdict(r, limits, device.name, catalog.measured_here(device),
                                    judge=gate_cfg.get("judge", "point") if hasattr(gate_cfg, "get") else "point")
    row = judged(rows, gate_cfg.get("artifact") if hasattr(gate_cfg, "get") else None)
    return {"enforce": bool(gate_cfg.get("enforce", False)) if hasattr(gate_cfg, "get") else False,
            "budgets": limits, "artifact": row["name"] if row else None,
            "pass": row["gate"]["pass"] if row else None, "failed": row["gate"]["failed"] if row else []}
