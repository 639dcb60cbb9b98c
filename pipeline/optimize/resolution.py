"""The resolution study, reported apart from the choice: the input size is held fixed for the deployed model (a
smaller input is an easy win on small source images such as Fashion-MNIST's 28 px, and changes what the camera must
deliver), so lower resolutions are shown beside it and never chosen.

For each size: the chosen model distilled again at that size for the finalists' epochs (its inputs downsampled with
antialiasing from the data set's arrays, its teacher the unmodified model at the full size, through the same stored
logits), deployed in the chosen candidate's form, scored on the downsampled validation split, and timed side by side
with the chosen model and the fastest peer default (or estimated, for a device that is not this host).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.optimize import deploy, recover, timing


def downsample(x: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    out = [F.interpolate(torch.from_numpy(x[i : i + 256]), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).numpy() for i in range(0, len(x), 256)]
    return np.concatenate(out).astype(np.float32)


def _model(s, chosen: dict, size: int) -> tuple[dict, Path, str]:
    def make(out: Path) -> dict:
        from pipeline import models

        model, spec = models.load_torch(Path(chosen["torch_path"]))
        packed = SimpleNamespace(train_x=downsample(s.packed.train_x, size), train_y=s.packed.train_y,
                                 val_x=downsample(s.split.search_x, size), val_y=s.split.search_y)
        history = recover.finetune(model, packed, s.final, s.seed + 3, s.log)
        models.save_torch(model.eval(), out, spec)
        return {"accuracy_search": recover.accuracy(model, packed.val_x, packed.val_y), "history": history}

    return s.store.step("resolution", {"model": chosen["model_key"], "size": size, "recipe": s.final.as_dict(),
                                       "seed": s.seed}, make)


def study(s, o, d: dict, sizes: list[int]) -> list[dict]:
    """Rows {input_size, accuracy, drop, size_bytes, latency_ms, speedup_vs_peer, interval} for each size below the
    model's, plus the chosen model's own row (the fixed size) for comparison; [] without a chosen model."""
    c, peer = d["chosen"], d["peer"]
    if c is None or c.get("qat") or not sizes:
        return []
    rows = []
    for size in sorted({int(v) for v in sizes if int(v) < s.shape[-1]}, reverse=True):
        _, folder, key = _model(s, c, size)
        meta = {**c["meta"], "input_shape": [1, *s.shape[1:2], size, size]}
        val = (downsample(s.split.val_x, size), s.split.val_y)
        r = deploy.build_one(s.store, c["option_of"] if c.get("option_of") else c["name"], key, folder / "model.pt",
                             {**s.source_meta, "input_shape": meta["input_shape"]}, downsample(s.calib, size), val,
                             s.log)
        if "path" not in r:
            rows.append({"input_size": size, "not_runnable": r["not_runnable"]})
            continue
        fmt = c["format"]
        if c.get("option_of"):  # the chosen runtime option, on this size's file
            r["meta"] = {**r["meta"], fmt: {**(r["meta"].get(fmt) or {}), **c["options"]}}
        rows.append({**r, "id": f"{size}px/{c['name']}", "format": fmt, "input_size": size,
                     "drop": 100.0 * (s.reference["val_accuracy"] - r["accuracy"]),
                     "size_bytes": deploy.size_of(fmt, r["path"])})
    _time(s, o, [c, *([peer] if peer else []), *[r for r in rows if "path" in r]], c, peer)
    return [{"input_size": s.shape[-1], "id": c["id"], "accuracy": c["accuracy"], "drop": c["drop"],
             "size_bytes": c["size_bytes"], "latency_ms": c.get("study_latency_ms"),
             "speedup_vs_peer": c.get("study_speedup"), "interval": c.get("study_interval"), "chosen": True},
            *[{k: r.get(k) for k in ("input_size", "id", "accuracy", "drop", "size_bytes", "not_runnable")}
              | {"latency_ms": r.get("study_latency_ms"), "speedup_vs_peer": r.get("study_speedup"),
                 "interval": r.get("study_interval")} for r in rows]]


def _time(s, o, models: list[dict], chosen: dict, peer: dict | None) -> None:
    """study_latency_ms / study_speedup (over the peer) / study_interval on each row, in place."""
    if s.measured_here:
        res = timing.measure_here([deploy.as_measured(m) for m in models], o.threads, o.warmup, o.iterations)
        for m in models:
            m["study_latency_ms"] = res["models"][m["id"]]["latency_p50_ms"]
            if peer is not None and m is not peer:
                sp = res["speedups"][m["id"]][peer["id"]]
                m["study_speedup"], m["study_interval"] = sp["speedup"], sp["ci"]
        return
    for m in models:
        fmt = m["format"] if m["format"] in ("onnx", "tflite") else None
        e = timing.estimate(o.device, fmt, Path(m["path"]), m.get("precision", chosen["precision"])) if fmt else {}
        m["study_latency_ms"] = e.get("latency_ms")
        if peer is not None and m is not peer and e.get("latency_ms") and peer.get("latency_ms"):
            ratio = peer["latency_ms"] / e["latency_ms"]
            m["study_speedup"] = ratio
            m["study_interval"] = timing.ratio_interval(ratio, timing.residuals_of(peer), e.get("log_residuals") or [])
