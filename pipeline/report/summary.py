"""Build summary.json from the run's task records: one `ArtifactRow` of facts per produced model (what every analysis
stage found about it), then the judge's verdicts (pipeline.report.judge). Imports no ML framework."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.core.cache import digest, write_json_atomic
from pipeline.core.results import Findings
from pipeline.report import judge
from pipeline.report.schema import ArtifactRow, StageRow, Summary


def _findings(records: list) -> dict[str, Findings]:
    """Artifact name -> what every analysis stage found about it (each stage owns its fields)."""
    found: dict[str, Findings] = {}
    for r in records:
        for name, f in r.about.items():
            found[name] = found.get(name, Findings()).merged(f)
    return found


def _facts(a) -> dict:
    """What the export stages read back from the file: does every operator compute in integers, how are weights
    stored."""
    out = {}
    if a.format == "tflite" and "tflite" in a.meta:
        out.update(integer_only=a.meta["tflite"]["integer_only"], float_operators=a.meta["tflite"]["float_operators"])
    if a.format == "coreml" and "coreml" in a.meta:
        out["weight_share_by_dtype"] = a.meta["coreml"].get("weight_share_by_dtype")
    return out


def artifact_row(r, f: Findings) -> ArtifactRow:
    """The facts of one producing task's model."""
    a, lat, dev = r.artifact, f.latency, f.device_latency
    return ArtifactRow(
        name=r.stage, stage=r.stage, type=r.type, format=a.format, precision=a.precision,
        path=r.info.get("run_path", str(a.path)), size_bytes=a.size_bytes, sha256=r.info.get("sha256"),
        cache_key=r.cache_key, accuracy=f.accuracy, accuracy_na=f.accuracy_na if f.accuracy is None else None,
        latency_ms=({"p50": lat.p50_ms, "p90": lat.p90_ms, **({"p50_ci": list(lat.p50_ci)} if lat.p50_ci else {})}
                    if lat else None),
        ratio_ci=lat.ratio_ci if lat else None, load_ms=lat.load_ms if lat else None,
        load_rss_mb=lat.load_rss_mb if lat else None, runtime=(lat.runtime if lat else None) or f.eval_runtime,
        measured_on=lat.measured_on if lat else None, latency_source=lat.source if lat else None,
        # p50/p90 None where the device's tool measured none (LiteRT's benchmark_model): its mean, min and max
        device_latency_ms=({"p50": dev.p50_ms, "p90": dev.p90_ms, "mean": dev.mean_ms, "min": dev.min_ms,
                            "max": dev.max_ms} if dev else None),
        device_load_ms=dev.load_ms if dev else None, measured_on_device=f.measured_on_device,
        estimate=f.estimate, no_estimate=f.no_estimate, coverage=f.coverage_summary,
        ram_estimate_mb=f.ram_estimate_mb, parity=f.parity, not_runnable=f.not_runnable, facts=_facts(a),
        selection=f.selection, pruning=a.meta.get("pruning"), optimization=f.optimization)


def payoff_notes(row: ArtifactRow, rows: list[ArtifactRow], device: Any) -> list[str]:
    """The pruning pay-off in words: sparsity buys no size or latency in a runtime that stores and runs dense
    tensors. A pruned model is compared with the unpruned one of the same format and precision when the recipe has it
    (measured size and latency)."""
    pr = row.pruning
    if not pr:
        return []
    base = next((b for b in rows if not b.pruning and b.format == row.format and b.precision == row.precision), None)
    smaller = base.size_bytes / row.size_bytes if base and row.size_bytes else None
    faster = (base.latency_ms["p50"] / row.latency_ms["p50"] if base and base.latency_ms and row.latency_ms else None)
    vs = f" than the unpruned {base.name!r}" if base else ""
    measured = (f"{smaller:.2f}x smaller" if smaller else "") + (f", {faster:.2f}x faster" if faster else "")
    no_gain = smaller is not None and smaller < 1.05 and (faster is None or faster < 1.05)
    if pr["method"] == "unstructured" or no_gain:
        gz = (f"; only a compressed download shrinks (gzip of the PyTorch weights {pr['gzip_bytes_before'] / 1e6:.2f} "
              f"-> {pr['gzip_bytes_after'] / 1e6:.2f} MB)" if pr.get("gzip_bytes_after") else "")
        return [f"pay-off check: {row.name!r} has {100 * pr['sparsity']:.0f}% zero weights ({pr['method']} pruning), "
                f"but the {row.format} file stores every zero in dense tensors, and {device.runtime} on "
                f"{device.display_name} runs them as dense: no size or latency gain"
                + (f" ({measured}{vs})" if measured else "") + gz]
    if measured:
        return [f"pay-off check: {row.name!r} ({pr['method']} pruning, {100 * pr['amount']:.0f}%): {measured}{vs}"]
    return []


def build_summary(*, recipe: str, device: Any, status: str, mlflow: dict, records: list, gate_cfg: Any,
                  run_dir: Path, error: str | None = None, task: str = "classification") -> Summary:
    """The run's summary: stages, one judged row per produced model, and the run's gate."""
    from dataclasses import replace

    stages = [StageRow(name=r.name, type=r.type, status=r.status, seconds=round(r.seconds, 3), cache_key=r.cache_key,
                       reason=r.reason, inputs=list(r.inputs), metrics=dict(r.metrics), error=r.error or None)
              for r in records]
    label = tasks.primary_label(task)
    found = _findings(records)
    rows = [artifact_row(r, found.get(r.stage, Findings())) for r in records if r.artifact is not None]
    rows = [replace(r, notes=payoff_notes(r, rows, device)) for r in rows]
    rows, gate = judge.judge(rows, gate_cfg, device, label)
    return Summary(recipe=recipe, task={"name": task, "metric": label},
                   device={"name": device.name, "display_name": device.display_name, "runtime": device.runtime},
                   status=status, error=error, run_dir=str(run_dir), mlflow=dict(mlflow), stages=stages,
                   artifacts=rows, gate=gate,
                   formats=[{"task": r.name, **r.info["formats"]} for r in records if r.info.get("formats")])


def write_summary(run_dir: Path, summary: Summary) -> Path:
    """summary.json, written whole or not at all (a temporary file renamed over it), with `summary_sha256`: the digest
    of its other fields, so that `edge-pipeline verify` can tell an edited summary."""
    path = run_dir / "summary.json"
    fields = {k: v for k, v in summary.to_dict().items() if k != "summary_sha256"}
    body = json.loads(json.dumps(fields, default=str))  # the digest is of what a reader will load
    write_json_atomic(path, {**body, "summary_sha256": digest(body)})
    return path


def headline_metrics(summary: Summary) -> dict[str, float]:
    """Stable metric names for the parent MLflow run: <artifact>.<metric>."""
    out = {}
    for a in summary.artifacts:
        v = a.verdict
        vals = {"accuracy": a.accuracy, "size_mb": a.size_bytes / 1e6, "speedup": v.speedup,
                "size_ratio": v.size_ratio, "accuracy_delta": v.accuracy_delta, "verdict_pass": float(v.ok)}
        if a.latency_ms:
            vals.update(latency_p50_ms=a.latency_ms["p50"], latency_p90_ms=a.latency_ms["p90"])
        if a.estimate:  # named "estimate" so it is never read as a measurement
            vals["estimate_latency_ms"] = a.estimate["latency_ms"]
            vals["estimate_upper_ms"] = a.estimate.get("upper_ms")
        if a.device_latency_ms:  # measured on the device itself
            vals.update(device_latency_p50_ms=a.device_latency_ms["p50"],
                        device_latency_p90_ms=a.device_latency_ms["p90"],
                        device_latency_mean_ms=a.device_latency_ms.get("mean"))
        out.update({f"{a.name}.{k}": x for k, x in vals.items() if x is not None})
    return out
