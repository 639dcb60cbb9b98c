"""What the user gets: the chosen model with its lineage (what was removed and pruned, by how much, what won the
accuracy back, how it was quantized and runs), the Pareto front as a table and a picture, and the findings the
summary records (`speedup_vs_peer_default`, `accuracy_drop`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.optimize import front
from pipeline.optimize.choose import SPARSE_NOTE

FILES = ("optimize.md", "optimize_front.png", "optimize.json")


def lineage(d: dict, s, o) -> dict[str, Any] | None:
    c = d["chosen"]
    if c is None:
        return None
    out: dict[str, Any] = {"source": "the unmodified model", "candidate": c["name"], "backend": c["backend"],
                           "format": c["format"], "runtime_settings": c.get("settings", ""),
                           "quantization": f"none ({c['precision']} weights and arithmetic)"
                           if c.get("precision") != "int8" else (c["meta"].get("quantization") or {}).get("tool")
                           or (CANDIDATE_ABOUT.get(c["name"]) or c["name"])}
    trial = next((t for t, *_ in d["finals"] if f"trial {t['number']}" == c["model"]), None)
    if trial is None:
        out["structure"] = "unchanged (no pruning paid within the budgets)"
        return out
    ref, params = s.reference, trial["params"]
    _, ratios = s.edits(params)
    final = next(r for t, r, *_ in d["finals"] if t is trial)
    out.update({
        "trial": trial["number"], "removed_blocks": trial["removed"],
        "channel_pruning": {"global_ratio": params["ratio"], "allocation": params["allocation"],
                            "groups": len(ratios), "max_group_ratio": max(ratios.values(), default=0.0),
                            "importance": "L1 norm of each channel group (torch-pruning)", "round_to": s.round_to},
        "parameters": [ref["parameters"], final["parameters"]], "macs": [ref["macs"], final["macs"]],
        "recovered_by": {"distillation": {"teacher": "the unmodified model", "temperature": s.final.temperature,
                                          "alpha": s.final.alpha, "epochs": s.proxy.epochs + s.final.epochs,
                                          "lr": s.final.lr},
                         "qat": {"epochs": s.qat.epochs} if c.get("qat") else None},
        "accuracy_steps": {"unmodified_search": ref["search_accuracy"],
                           "unmodified_after_proxy_search": ref.get("proxy_search_accuracy"),
                           "pruned_search": trial["accuracy_pruned"],
                           "proxy_search": trial["accuracy"], "final_search": final["accuracy"],
                           "final_fp32_val": final["accuracy_val"], "deployed_val": c["accuracy"]}})
    return out


CANDIDATE_ABOUT = {"ort_per_channel_u8": "ONNX Runtime quantize_static, per-channel QDQ, u8 activations",
                   "openvino_int8": "NNCF quantize on the OpenVINO IR", "openvino_int8_static": "NNCF quantize on the "
                   "OpenVINO IR", "litert_int8": "litert-torch PT2E full-integer int8",
                   "executorch_int8": "PT2E with the XNNPACK quantizer (ExecuTorch)"}


def _row_out(r: dict) -> dict:
    keep = ("id", "model", "name", "backend", "format", "precision", "settings", "accuracy", "drop", "size_bytes", "latency_ms",
            "latency_interval", "speedup_vs_peer", "speedup_vs_peer_interval", "ram_estimate_mb", "peer", "front",
            "within_budget", "why_not", "chosen", "qat", "not_runnable", "runtime", "option_of")
    return {k: r[k] for k in keep if k in r}


def findings(d: dict, s, o, accounting: dict, wall: float) -> dict[str, Any]:
    c, peer, timed = d["chosen"], d["peer"], d["timed"]
    sp = c.get("speedup_vs_peer") if c else None
    return {
        "chosen": c["id"] if c else None,
        "speedup_vs_peer_default": sp, "speedup_vs_peer_default_interval": c.get("speedup_vs_peer_interval") if c else None,
        "peer_default": peer["id"] if peer else None, "peer_default_accuracy": peer["accuracy"] if peer else None,
        "accuracy_drop": c["drop"] if c else None, "accuracy": c["accuracy"] if c else None,
        "reference_accuracy": s.reference["val_accuracy"], "latency_source": timed["source"],
        "latency_where": timed["where"], "budgets": o.budgets, "lineage": lineage(d, s, o),
        "front": [_row_out(r) for r in d["rows"]],
        "search": {"trials": len(d["found"].trials), "stop_reason": d["found"].stop_reason,
                   "search_seconds": round(d["found"].seconds, 1), "wall_seconds": round(wall, 1), "cache": accounting,
                   "finalists": [t["number"] for t, *_ in d["finals"]],
                   "near_misses": [t["number"] for t, *_ in d["finals"] if not t["feasible"]]
                   if any(t["feasible"] for t, *_ in d["finals"]) else [],
                   "sensitivity": {"groups": len(s.sens["groups"]), "blocks": s.sens["blocks"]},
                   "trial_table": [{k: t[k] for k in ("number", "params", "accuracy", "accuracy_pruned", "drop",
                                                      "latency_ms", "size_mb", "macs", "parameters", "feasible",
                                                      "front", "step")} for t in d["found"].trials]},
        "not_measured": [SPARSE_NOTE],
        "resolution_study": d.get("resolution") or [],
        "why_none": None if c else "; ".join(sorted({r.get("why_not") or "" for r in d["rows"]
                                                     if r.get("latency_ms") is not None} - {""}))[:600],
    }


def markdown(f: dict, latency_word: str) -> str:
    lines = [f"# optimize: {f['chosen'] or 'nothing within the budgets'}", ""]
    if f["chosen"]:
        iv = f["speedup_vs_peer_default_interval"]
        lines.append(f"Chosen **{f['chosen']}**: {f['speedup_vs_peer_default']:.2f}x"
                     + (f" ({iv[0]:.2f}-{iv[1]:.2f})" if iv else "")
                     + f" the fastest peer-default int8 of the unmodified model ({f['peer_default']}), "
                       f"accuracy_drop {f['accuracy_drop']:.2f} top-1 points against the unmodified fp32 model "
                       f"({100 * f['reference_accuracy']:.2f}%) on the validation split.")
    else:
        lines.append(f"No deployed model is within the budgets: {f['why_none']}")
    lines += ["", f"Latency: {f['latency_where']}.", f"Search: {f['search']['trials']} trial(s), stopped by "
              f"{f['search']['stop_reason']}; finalists {f['search']['finalists']}"
              + (f" (near misses of the proxy's accuracy budget: {f['search']['near_misses']})"
                 if f["search"].get("near_misses") else "")
              + f"; wall time {f['search']['wall_seconds']:.0f} s; cache: "
              f"{f['search']['cache']['ran']} step(s) ran, {f['search']['cache']['reused']} reused "
              f"(saving {f['search']['cache']['saved_seconds']:.0f} s).", "", "## Lineage", "",
              "```", json.dumps(f["lineage"], indent=1, default=str), "```", "", "## Deployed models", "",
              front.final_markdown(f["front"], latency_word), "## Search trials (proxies)", "",
              front.trials_markdown(f["search"]["trial_table"])]
    if f.get("resolution_study"):
        lines += ["## Resolution study (not chosen: the input size is held fixed)", "",
                  "| input px | model | top-1 % | drop pts | MB | latency ms | vs fastest peer int8 |", "|---|---|---|---|---|---|---|"]
        for r in f["resolution_study"]:
            if r.get("not_runnable"):
                lines.append(f"| {r['input_size']} | - | - | - | - | - | {r['not_runnable']} |")
                continue
            iv = r.get("interval")
            sp = "-" if r.get("speedup_vs_peer") is None else f"{r['speedup_vs_peer']:.2f}x" + (
                f" ({iv[0]:.2f}-{iv[1]:.2f})" if iv else "")
            lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.3f}"
            lines.append(f"| {r['input_size']} | {r['id']} | {100 * r['accuracy']:.2f} | {r['drop']:.2f} | "
                         f"{r['size_bytes'] / 1e6:.2f} | {lat} | {sp} |")
        lines.append("")
    lines += ["## Not measured", ""]
    lines += [f"- {n}" for n in f["not_measured"]]
    return "\n".join(lines) + "\n"


def write(f: dict, d: dict, s, o, workdir: Path) -> list[str]:
    """optimize.md, optimize_front.png, optimize.json into the stage's folder; returns their names."""
    word = {"host": "measured", "device": "measured on the device", "estimate": "estimated"}[d["timed"]["source"]]
    (workdir / FILES[0]).write_text(markdown(f, word))
    front.plot(workdir / FILES[1], f["search"]["trial_table"], f["front"], s.reference["val_accuracy"],
               o.budgets["accuracy_drop"], word, f"{f['chosen'] or 'nothing chosen'} - {d['timed']['where']}")
    (workdir / FILES[2]).write_text(json.dumps(f, indent=1, default=str))
    return list(FILES)


def keep_chosen(c: dict, workdir: Path) -> Path:
    """Copy the chosen model (an IR: its .xml and .bin) into the stage's folder; returns its new path."""
    src = Path(c["path"])
    out = workdir / src.name
    shutil.copy2(src, out)
    if c["format"] == "openvino":
        shutil.copy2(src.with_suffix(".bin"), out.with_suffix(".bin"))
    return out
