"""Budgets and gate verdicts. Pure functions over summary rows: no ML framework, unit-testable by hand.

A device carries default budgets (conf/device/*.yaml `budgets`, from the seeds' target table); `gate.*` overrides any
of them per recipe or on the command line. The accuracy budget (`gate.max_accuracy_drop`) is carried in `effective`
for the judge (pipeline.report.judge), which alone decides it.
"""
from __future__ import annotations

from typing import Any

from pipeline.devices.catalog import figure_value

KEYS = ("latency_ms", "fps", "model_mb", "ram_mb")


def _get(obj: Any, key: str, default=None):
    if obj is None:
        return default
    return obj.get(key, default) if hasattr(obj, "get") else getattr(obj, key, default)


def effective(device: Any, gate: Any) -> dict[str, float | None]:
    """The budgets in force: gate.* if set, else the device's default; RAM defaults to the device's RAM."""
    out: dict[str, float | None] = {}
    dev_b = _get(device, "budgets") or {}
    for k in KEYS:
        v = _get(gate, k)
        out[k] = float(v) if v is not None else (None if _get(dev_b, k) is None else float(_get(dev_b, k)))
    if out["ram_mb"] is None:
        ram = figure_value(_get(device, "ram_gb"))
        out["ram_mb"] = ram * 1024 if ram is not None else None
    out["max_accuracy_drop"] = float(_get(gate, "max_accuracy_drop", 1.0))
    return out


def ram_figure(row: dict[str, Any], measured_here: bool = False, judge: str = "point") -> tuple[float | None, str]:
    """The memory figure gate.ram_mb judges and where it comes from: the profile stage's peak-memory estimate (its
    value, or the top of its 80% interval with judge=upper), else on a device measured here the resident memory the
    model's load added; else nothing (the budget is listed as not checked)."""
    est = row.get("estimate") or {}
    mem = est.get("memory") or {}
    if mem.get("peak_mb") is not None:
        if judge == "upper":
            return mem["interval_mb"][1], f"upper end of the {mem['label']}"
        return mem["peak_mb"], mem["label"]
    if measured_here and (row.get("load_rss_mb") or 0) > 0:
        return row["load_rss_mb"], f"measured: resident memory the load added on {row.get('measured_on') or 'this host'}"
    return None, f"peak-memory estimate ({est.get('no_memory') or 'profile stage'})"


def verdict(row: dict[str, Any], budgets: dict[str, float | None], device_name: str,
            measured_here: bool = False, judge: str = "point") -> dict[str, Any]:
    """Check one artifact row of the summary against the budgets. Latency: the number measured on the device itself
    (device.connection) when there is one; else the device estimate (`judge`: point = its value, upper = the top of its
    80% interval, so the whole interval must be within budget); else (a device measured here, like `host`) the host
    measurement. RAM: the peak-memory estimate, judged the same way (ram_figure). A budget with no number to check is
    listed as not checked."""
    checks, unchecked = [], []
    est = row.get("estimate") or {}
    dev = row.get("device_latency_ms") or {}
    dev_lat = dev.get("p50") if dev.get("p50") is not None else dev.get("mean")
    if dev_lat is not None:
        on = row.get("measured_on_device") or {}
        stat = "" if dev.get("p50") is not None else "mean (the device's tool measured no p50) "
        lat, where = dev_lat, (f"{stat}measured on {on.get('device', device_name)} ({on.get('connection', '?')}), "
                               f"{on.get('runtime', '?')} {on.get('version', '')}").rstrip()
    elif est.get("latency_ms") is not None:
        if judge == "upper" and est.get("upper_ms") is not None:
            lat, where = est["upper_ms"], f"upper end of the {est.get('label', f'estimate for {device_name}')}"
        elif judge == "upper":
            lat, where = est["latency_ms"], (f"{est.get('label', f'estimate for {device_name}')} (gate.judge=upper "
                                             f"but the estimate has no interval: its value is judged)")
        else:
            lat, where = est["latency_ms"], est.get("label", f"estimate for {device_name}")
    elif measured_here and row.get("latency_ms"):
        lat, where = row["latency_ms"]["p50"], f"measured on {row.get('measured_on') or 'this host'}"
    else:
        lat, where = None, None

    def add(budget: str, limit: float | None, value: float | None, unit: str, higher_is_better: bool, src: str):
        if limit is None:
            return
        if value is None:
            unchecked.append(f"{budget} (no {src})")
            return
        ok = value >= limit if higher_is_better else value <= limit
        miss = (limit - value) if higher_is_better else (value - limit)
        c = {"budget": budget, "limit": limit, "value": round(value, 4), "unit": unit, "ok": ok, "source": src}
        if not ok:
            c["by"] = f"{'short' if higher_is_better else 'over'} by {miss:.3g} {unit} ({100 * miss / limit:.0f}%)"
        checks.append(c)

    add("latency_ms", budgets.get("latency_ms"), lat, "ms", False, where or "latency estimate or measurement")
    add("fps", budgets.get("fps"), (1000.0 / lat) if lat else None, "FPS", True, where or "latency")
    add("model_mb", budgets.get("model_mb"), row.get("size_bytes", 0) / 1e6, "MB", False, "artifact size on disk")
    ram, ram_src = ram_figure(row, measured_here, judge)
    add("ram_mb", budgets.get("ram_mb"), ram, "MB", False, ram_src)
    failed = [c for c in checks if not c["ok"]]
    return {"pass": not failed, "checks": checks, "not_checked": unchecked,
            "failed": [f"{c['budget']} {c['value']:g} {c['unit']} vs limit {c['limit']:g}: {c['by']}" for c in failed]}
