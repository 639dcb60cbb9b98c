"""The finalists deployed, timed and judged: every int8 model of every finalist, of the unmodified model and of the
peers' defaults, scored on the validation split and timed in one go; the fastest within every budget is chosen.

Latency, by where the device is: measured side by side on this host (`device.measured_here`), measured on the device
over `device.connection`, or estimated (each with its 80% interval, the ratios with theirs, see timing). A model that
cannot run here is listed with the reason, never with a number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.library.candidates import CANDIDATES
from pipeline.optimize import deploy, front, timing

SPARSE_NOTE = ("XNNPACK's sparse inference (1x1 convolutions of fp32 models whose weights are stored sparse, at least "
               "2/3 zeros) is not a candidate: it needs a .tflite with sparse (DENSIFY) weights, which neither "
               "litert-torch nor the PT2E int8 path writes, its kernels target ARM (NEON) phones, and it computes in "
               "fp32, not int8; it cannot be measured on this x86 host")


def _model_meta(s, folder: Path, result: dict) -> dict:
    """A finalist's artifact meta: the unmodified model's (input shape, classes, task ...) with its own architecture."""
    import json

    return {**s.source_meta, "arch": json.loads((folder / "model.json").read_text()),
            "parameters": result["parameters"], "macs": result["macs"]}


def _qat_needed(s, o, rows: list[dict], fp32_accuracy: float) -> bool:
    if o.qat_when == "never":
        return False
    ref = s.reference["val_accuracy"]
    fp32_ok = 100.0 * (ref - fp32_accuracy) <= o.budgets["accuracy_drop"]
    best = max((r["accuracy"] for r in rows if "accuracy" in r and r.get("precision") == "int8"), default=0.0)
    return o.qat_when == "always" or (fp32_ok and 100.0 * (ref - best) > o.budgets["accuracy_drop"])


def _qat_rows(s, o, label: str, key: str, folder: Path, meta: dict, formats: list[str]) -> list[dict]:
    from pipeline import runtimes
    from pipeline.optimize.trials import qat, qat_openvino

    r, qfolder, qkey = qat(s, key, folder, formats)
    rows = []
    for fmt, f in r["files"].items():
        name, backend = ("qat_ort_int8", "onnxruntime") if fmt == "onnx" else ("qat_litert_int8", "litert")
        m = {**meta, "quantization": {"tool": "QAT (PT2E) with distillation", "epochs": s.qat.epochs}}
        if fmt == "tflite":
            m["io_dtype"] = "int8"
        rows.append({"name": name, "model": label, "backend": backend, "format": fmt, "path": str(qfolder / f["path"]),
                     "meta": m, "options": {}, "qat": True, "model_key": key, "torch_path": str(folder / "model.pt"),
                     "precision": "int8"})
        if fmt == "onnx" and "openvino" in formats:
            ir = qat_openvino(s, qkey, qfolder / f["path"])
            rows.append({"name": "qat_openvino_int8", "model": label, "backend": "openvino", "format": "openvino",
                         "path": str(ir), "meta": {**m, "openvino": {"device": "CPU"}}, "options": {}, "qat": True,
                         "model_key": key, "torch_path": str(folder / "model.pt"), "precision": "int8"})
    for row in rows:
        model = runtimes.load(row["format"], row["path"], row["meta"], threads=0)
        row["accuracy"] = float((runtimes.predict_all(model, s.split.val_x, 64).argmax(1) == s.split.val_y).mean())
        row["runtime"] = model.runtime
        row["size_bytes"] = deploy.size_of(row["format"], row["path"])
    return rows


def deploy_rows(s, o, finals: list) -> list[dict]:
    """Every int8 model to time: the unmodified model's (ours and the peers' defaults), then each finalist's."""
    formats = [f for f in o.device.get("formats") or [] if f in deploy.SUPPORTED]
    builds, peers = deploy.deployable(formats), deploy.peers(formats)
    val = (s.split.val_x, s.split.val_y)
    rows = deploy.deploy_all(s.store, list(dict.fromkeys(builds + peers)), s.source_key, s.source_path,
                             s.source_meta, s.calib, val, s.log, "unmodified")
    for r in rows:
        r["peer"] = r["name"] in peers and not r.get("option_of")
    for t, result, folder, key in finals:
        label = f"trial {t['number']}"
        meta = _model_meta(s, folder, result)
        mine = deploy.deploy_all(s.store, builds, key, folder / "model.pt", meta, s.calib, val, s.log, label)
        if _qat_needed(s, o, mine, result["accuracy_val"]):
            try:
                mine += _qat_rows(s, o, label, key, folder, meta, formats)
            except Exception as e:  # QAT failing for one finalist must not hide the post-training models' numbers
                s.log.debug("QAT of %s failed", label, exc_info=True)
                why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                mine.append({"name": "qat", "model": label, "backend": "", "format": "",
                             "not_runnable": f"QAT failed: {type(e).__name__}: {why}"})
        rows += mine
    for r in rows:
        r["id"] = f"{r['model']}/{r['name']}"
        r.setdefault("peer", False)
        if "accuracy" in r:
            r["drop"] = 100.0 * (s.reference["val_accuracy"] - r["accuracy"])
            r["size_mb"] = r["size_bytes"] / 1e6
            r["settings"] = settings_of(r)
    return rows


def settings_of(r: dict) -> str:
    bits = []
    if r["format"] == "openvino":
        ov = r["meta"].get("openvino") or {}
        bits.append(str(ov.get("performance_mode") or "LATENCY"))
        if ov.get("static_shape"):
            bits.append("static shape")
    if r.get("qat"):
        bits.append("QAT")
    if r.get("precision") and r["precision"] != "int8":
        bits.append(r["precision"])
    c = CANDIDATES.get(r["name"])
    if c is not None and c.about and not bits:
        bits.append(c.about.split(":")[0])
    return ", ".join(bits)


def time_rows(s, o, rows: list[dict]) -> dict:
    """Latency for every runnable row, in place; returns where it came from (and the raw measurement)."""
    timed = [r for r in rows if "accuracy" in r]
    if o.device.get("connection"):
        res = timing.measure_on_device(o.device, [deploy.as_measured(r) for r in timed if r["format"] in
                                                  ("onnx", "tflite")], int(o.device.get("threads") or 0),
                                       o.warmup, o.iterations)
        for r in timed:
            m = res["models"].get(r["id"])
            r["latency_ms"] = m["latency_p50_ms"] if m else None
        return {"source": "device", "where": f"measured on {res['connection']}", "raw": res}
    if s.measured_here:
        res = timing.measure_here([deploy.as_measured(r) for r in timed], o.threads, o.warmup, o.iterations)
        for r in timed:
            m = res["models"][r["id"]]
            r["latency_ms"] = m["latency_p50_ms"]
            r["latency_interval"] = [m.get("latency_p50_ci_low_ms"), m.get("latency_p50_ci_high_ms")]
        return {"source": "host", "raw": res, "where": f"measured on this host ({res['cpu']}), {res['threads']} "
                                                        f"thread(s), batch 1, every model round-robin in one process"}
    for r in timed:
        fmt, path = (r["format"], r["path"]) if r["format"] in ("onnx", "tflite") else ("onnx", _onnx_of(s, r))
        e = timing.estimate(o.device, fmt, Path(path), r.get("precision"))
        r["latency_ms"], r["latency_interval"] = e.get("latency_ms"), e.get("interval_ms")
        r["estimate"] = e
    return {"source": "estimate", "where": next((r["estimate"]["label"] for r in timed if r.get("estimate", {})
                                                 .get("label")), "estimate")}


def _onnx_of(s, r: dict) -> str:
    """A format the estimator cannot read (OpenVINO IR, .pte) is estimated from its model's fp32 ONNX, at int8."""
    return str(deploy.onnx_export(s.store, r["model_key"], Path(r["torch_path"]), s.source_meta)[0])


def judge(rows: list[dict], budgets: dict) -> None:
    """Each timed row's budget verdicts (accuracy drop, size, latency, RAM), in place: `within_budget` and `why_not`."""
    for r in rows:
        if r.get("latency_ms") is None:
            continue
        misses = []
        if r["drop"] > budgets["accuracy_drop"]:
            misses.append(f"loses {r['drop']:.2f} points (budget {budgets['accuracy_drop']:g})")
        if budgets.get("model_mb") and r["size_mb"] > budgets["model_mb"]:
            misses.append(f"{r['size_mb']:.2f} MB > {budgets['model_mb']:g} MB")
        if budgets.get("latency_ms") and r["latency_ms"] > budgets["latency_ms"]:
            misses.append(f"{r['latency_ms']:.3f} ms > {budgets['latency_ms']:g} ms")
        if budgets.get("ram_mb") and (r.get("ram_estimate_mb") or 0) > budgets["ram_mb"]:
            misses.append(f"RAM {r['ram_estimate_mb']:.1f} MB > {budgets['ram_mb']:g} MB")
        r["within_budget"], r["why_not"] = not misses, "; ".join(misses)


def speedups(rows: list[dict], peer: dict | None, timed: dict) -> None:
    """Every timed row's speed-up over the fastest peer default, with its interval, in place."""
    if peer is None:
        return
    raw = timed.get("raw") or {}
    for r in rows:
        if r.get("latency_ms") is None:
            continue
        if r is peer:
            r["speedup_vs_peer"], r["speedup_vs_peer_interval"] = 1.0, None
        elif timed["source"] == "host":
            sp = raw["speedups"][r["id"]][peer["id"]]
            r["speedup_vs_peer"], r["speedup_vs_peer_interval"] = sp["speedup"], sp["ci"]
        else:
            ratio = peer["latency_ms"] / r["latency_ms"]
            r["speedup_vs_peer"] = ratio
            r["speedup_vs_peer_interval"] = timing.ratio_interval(ratio, timing.residuals_of(peer), timing.residuals_of(r))


def ram_estimates(s, rows: list[dict]) -> None:
    """Inference memory estimate (weights + largest activations, at int8) per model, from its fp32 ONNX graph."""
    from pipeline.devices.profiler import profile_onnx

    seen: dict[str, float] = {}
    for r in rows:
        if "model_key" not in r or "accuracy" not in r:
            continue
        if r["model_key"] not in seen:
            prof = profile_onnx(Path(_onnx_of(s, r))).with_precision("int8")
            seen[r["model_key"]] = prof.totals()["ram_estimate_mb"]
        r["ram_estimate_mb"] = seen[r["model_key"]]


def decide(s, o, found, finals: list, workdir: Path) -> dict[str, Any]:
    """Deploy, time and judge every finalist; returns {chosen, rows, timed, peer} (chosen None: nothing within the
    budgets, said by outcome.findings)."""
    rows = deploy_rows(s, o, finals)
    ram_estimates(s, rows)
    timed = time_rows(s, o, rows)
    judge(rows, o.budgets)
    peers = [r for r in rows if r.get("peer") and r.get("latency_ms") is not None]
    peer = min(peers, key=lambda r: r["latency_ms"]) if peers else None
    speedups(rows, peer, timed)
    ok = [r for r in rows if r.get("within_budget")]
    chosen = min(ok, key=lambda r: r["latency_ms"]) if ok else None
    pts = [r for r in rows if r.get("latency_ms") is not None]
    for i in front.non_dominated(pts):
        pts[i]["front"] = True
    for r in rows:
        r["chosen"] = r is chosen
        if r.get("within_budget") and not r["chosen"]:
            r["why_not"] = "slower"
    return {"chosen": chosen, "rows": rows, "timed": timed, "peer": peer, "found": found, "finals": finals}
