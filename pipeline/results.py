"""What analysis stages find about a model, as types. Each field has one owner (the stage type that fills it); the
runner stores findings in the cache entry as plain data and reads them back as these types; the summary, the console
table, MLflow and the registry read them through pipeline.report and pipeline.judge. Imports no ML framework.

Where a latency came from is part of the type: `Latency.source` is "host" (measured on this machine) or "device"
(measured on a remote device); an estimate for a device is an `estimate` mapping and never a `Latency`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Latency:
    """A measured latency (owner: benchmark)."""

    p50_ms: float
    p90_ms: float
    mean_ms: float | None = None
    load_ms: float | None = None  # loading plus the first inference's lazy allocations
    load_rss_mb: float | None = None  # resident memory the load added
    runtime: str = ""  # e.g. "onnxruntime 1.31.1 CPUExecutionProvider"
    threads: int | None = None
    source: str = "host"  # host | device
    measured_on: str = ""  # in words: where, with what runtime, threads and batch
    p50_ci: tuple | None = None  # bootstrap interval of p50 over interleaved trials (pipeline.stats)
    ratio_ci: dict | None = None  # other model timed side by side -> interval of its p50 / this p50

    @classmethod
    def from_measurement(cls, m: dict, **kw) -> "Latency":
        """From pipeline.runtimes.measure's per-model result."""
        ci = (m.get("latency_p50_ci_low_ms"), m.get("latency_p50_ci_high_ms"))
        return cls(p50_ms=m["latency_p50_ms"], p90_ms=m["latency_p90_ms"], mean_ms=m.get("latency_mean_ms"),
                   load_ms=m.get("load_ms"), load_rss_mb=m.get("load_rss_mb"), runtime=m.get("runtime", ""),
                   p50_ci=ci if None not in ci else None, **kw)


@dataclass
class Findings:
    """Everything the analysis stages found about one artifact. A field left None was not looked at."""

    accuracy: float | None = None  # evaluate: top-1 on the validation split, 0-1
    eval_runtime: str | None = None  # evaluate: the runtime that produced it
    latency: Latency | None = None  # benchmark
    device_latency: Latency | None = None  # benchmark with device.connection: measured on that device (source "device")
    measured_on_device: dict | None = None  # benchmark: {device, connection, runtime, version, threads, cpu}
    parity: dict | None = None  # parity: agreement with the model it was made from
    estimate: dict | None = None  # profile: latency estimate for the device, with its provenance label
    no_estimate: str | None = None  # profile: why there is no estimate
    coverage_summary: str | None = None  # profile: accelerator coverage in words
    coverage: dict | None = None  # profile: accelerator coverage counts
    ram_estimate_mb: float | None = None  # profile
    macs: int | None = None  # profile
    params: int | None = None  # profile
    weight_bytes: int | None = None  # profile
    profiled_precision: str | None = None  # profile
    profile: str | None = None  # profile: why the artifact was not profiled
    selection: dict | None = None  # select_int8: the measured choice, every candidate with its numbers
    # optimize: the chosen model's speedup_vs_peer_default and accuracy_drop, its lineage, the front, the search
    optimization: dict | None = None
    not_runnable: str | None = None  # any stage that could not run the artifact on this host (Core ML off macOS)
    extra: dict[str, Any] = field(default_factory=dict)  # plug-in stages' own findings, by name

    def merged(self, other: "Findings") -> "Findings":
        """These findings with every field `other` set taken from it (stages of one run each own their fields)."""
        kw = {f.name: getattr(other, f.name) if getattr(other, f.name) is not None else getattr(self, f.name)
              for f in fields(self) if f.name != "extra"}
        return Findings(**kw, extra={**self.extra, **other.extra})

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_dict(cls, d: dict) -> "Findings":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("latency", "device_latency"):
            if isinstance(kw.get(k), dict):
                kw[k] = Latency(**kw[k])
        extra = {**kw.pop("extra", {}), **{k: v for k, v in d.items() if k not in known}}
        return cls(**kw, extra=extra)


def dump(about: dict[str, Findings | dict]) -> dict[str, dict]:
    """Findings by artifact name -> plain data for a cache entry (a plain dict is taken as findings' fields)."""
    return {name: (f if isinstance(f, Findings) else Findings.from_dict(f)).to_dict() for name, f in about.items()}


def load(about: dict[str, dict]) -> dict[str, Findings]:
    return {name: Findings.from_dict(d) for name, d in about.items()}
