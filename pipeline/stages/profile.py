"""`profile`: per-layer device profile of each input model: op type, shapes, MACs, parameters, bytes, precision;
the latency and peak-memory estimates on the device (pipeline/devices/estimator.py: fitted on a measured corpus, each
with the 80% interval its held-out validation gives and what it was fitted on; never a measurement); the accelerator
delegate's operator coverage. Writes profile.json and a per-layer latency chart
profile.png (both logged to MLflow and copied into the run directory).

An ExecuTorch `.pte` is profiled for what its file says: the delegate coverage, i.e. which operators were lowered to
XNNPACK and which were left to ExecuTorch's portable kernels (pipeline.convert.executorch.coverage), per operator
type in profile.json and in the chart."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import FORMATS
from pipeline.core.results import Findings
from pipeline.stages.base import Stage, StageContext, StageResult

PROFILED = ("onnx", "tflite", "torch")


@dataclass
class ProfileConfig:
    unit: Optional[str] = None  # compute unit to estimate on (a key of device.compute_units); null = device.estimate_unit


class Profile(Stage, type="profile", config=ProfileConfig, accepts=FORMATS, per_input=True, reads=("device",),
              libraries=("onnx", "ai-edge-litert", "torch", "onnxscript", "matplotlib")):
    @classmethod
    def check(cls, p: ProfileConfig, cfg) -> list[str]:
        units = list(cfg.device.get("compute_units") or {})
        if p.unit is not None and p.unit not in units:
            return [f"unit: {p.unit!r} is not a compute unit of device {cfg.device.name!r} (units: {', '.join(units)})"]
        return []

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.devices import chart
        from pipeline.devices.coverage import coverage
        from pipeline.devices.estimator import NoEstimate, estimate
        from pipeline.devices.profiler import profile_artifact

        a = ctx.input
        device = ctx.settings.device.to_dict()
        if a.format == "executorch":
            return self._delegate_coverage(ctx, a, device)
        if a.format not in PROFILED:
            why = f"not profiled: a {a.format} artifact cannot be read on this host; profile its ONNX/TFLite export"
            ctx.log.info("%s: %s", a.stage, why)
            return StageResult(about={a.stage: Findings(profile=why)})
        prof = profile_artifact(a.format, a.path, a.meta)
        totals = prof.totals()
        try:
            est = estimate(prof, device, unit=ctx.params.unit)
            no_est = None
        except NoEstimate as e:
            est, no_est = None, str(e)
        acc = device.get("accelerator") or {}
        cov = coverage(prof.layers, acc.get("delegate"))
        if cov and prof.format != "tflite":  # the delegate tables speak TFLite; say how this graph was read
            cov["note"] = (f"{prof.format} graph read as TFLite operators (Q/DQ pairs folded into the int8 ops they "
                           f"wrap); profile the TFLite export for the exact list")
        mem = est.memory if est else None
        facts = {"macs": totals["macs"], "params": totals["params"], "weight_bytes": totals["weight_bytes"],
                 "ram_estimate_mb": mem["peak_mb"] if mem else None, "profiled_precision": prof.precision,
                 "estimate": est.to_dict(per_kernel=False) if est else None,
                 "no_estimate": no_est,
                 "coverage": {k: v for k, v in cov.items() if k != "ops"} if cov else None,
                 "coverage_summary": cov["summary"] if cov else f"{device['display_name']}: no accelerator delegate "
                                                                f"(all {totals['layers']} ops on the CPU)"}
        doc = {"artifact": {"name": a.stage, "format": a.format, "precision": a.precision, "path": str(a.path)},
               "device": {"name": device["name"], "display_name": device["display_name"],
                          "runtime": device["runtime"], "estimate_unit": ctx.params.unit or device.get("estimate_unit"),
                          "accelerator": acc},
               "summary": {**totals, "estimate": facts["estimate"], "no_estimate": no_est,
                           "coverage": facts["coverage"], "coverage_summary": facts["coverage_summary"]},
               "kernels": est.per_kernel if est else [],
               "layers": prof.to_dict()["layers"],
               "coverage_detail": cov["ops"] if cov else []}
        (ctx.workdir / "profile.json").write_text(json.dumps(doc, indent=1, default=str))
        title = f"{a.stage} ({a.format} {a.precision}) on {device['display_name']}"
        if est:
            chart.latency_chart(ctx.workdir / "profile.png", f"{title}: {est.latency_ms:.3g} ms\n{est.label}",
                                est.per_kernel)
            ctx.log.info("%s: %.3f ms — %s", a.stage, est.latency_ms, est.label)
            if mem:
                ctx.log.info("%s: %.3g MB — %s", a.stage, mem["peak_mb"], mem["label"])
            else:
                ctx.log.info("%s: no peak-memory estimate (%s)", a.stage, est.no_memory)
        else:
            chart.macs_chart(ctx.workdir / "profile.png", f"{title}: {no_est}", doc["layers"])
            ctx.log.info("%s: no latency estimate (%s)", a.stage, no_est)
        ctx.log.info("%s: %s", a.stage, facts["coverage_summary"])
        metrics = {"macs": totals["macs"], "params": totals["params"]}
        if est:
            metrics["estimate_latency_ms"] = est.latency_ms
        if mem:
            metrics.update(estimate_peak_memory_mb=mem["peak_mb"], estimate_peak_memory_upper_mb=mem["interval_mb"][1])
        if cov:
            metrics.update(coverage_supported=cov["supported"], coverage_total=cov["total"])
        return StageResult(metrics=metrics, about={a.stage: Findings(**facts)}, files=["profile.json", "profile.png"])

    def _delegate_coverage(self, ctx: StageContext, a, device: dict) -> StageResult:
        """A `.pte`: the operators inside each delegate's graph and those left to portable kernels, from the file."""
        from pipeline.convert.executorch import coverage, coverage_line
        from pipeline.devices import chart

        cov = coverage(a.path)
        delegated, portable = cov["xnnpack_operators"], cov["portable_operators"]
        total = cov["xnnpack_operator_count"] + cov["portable_operator_count"]
        summary = coverage_line(cov)
        counts = {"delegate": "XNNPACK" if "XnnpackBackend" in cov["delegates"] else ", ".join(cov["delegates"]),
                  "supported": cov["xnnpack_operator_count"], "total": total,
                  "portable": cov["portable_operator_count"], "all_delegated": cov["all_delegated"],
                  "delegate_calls": cov["delegate_calls"], "delegates": cov["delegates"]}
        no_est = "no estimate for an ExecuTorch program (the estimator models TFLite and ONNX kernels)"
        detail = ([{"op": op, "count": n, "runs_on": "XNNPACK"} for op, n in delegated.items()]
                  + [{"op": op, "count": n, "runs_on": "portable kernels"} for op, n in portable.items()])
        doc = {"artifact": {"name": a.stage, "format": a.format, "precision": a.precision, "path": str(a.path)},
               "device": {"name": device["name"], "display_name": device["display_name"],
                          "runtime": device["runtime"]},
               "summary": {"coverage": counts, "coverage_summary": summary, "estimate": None, "no_estimate": no_est},
               "kernels": [], "layers": [], "coverage_detail": detail}
        (ctx.workdir / "profile.json").write_text(json.dumps(doc, indent=1, default=str))
        colors = {"XNNPACK": "#228833", "portable kernels": "#ee6677"}
        chart.bar_chart(ctx.workdir / "profile.png", f"{a.stage} ({a.format} {a.precision}): {summary}",
                        [f"{d['op'][:40]} ({d['runs_on']})" for d in detail], [d["count"] for d in detail],
                        [colors[d["runs_on"]] for d in detail], "operators in the program", colors)
        ctx.log.info("%s: %s", a.stage, summary)
        return StageResult(metrics={"coverage_supported": counts["supported"], "coverage_total": total,
                                    "portable_operators": counts["portable"]},
                           about={a.stage: Findings(coverage_summary=summary, coverage=counts, no_estimate=no_est,
                                                    profiled_precision=a.precision)},
                           files=["profile.json", "profile.png"])
