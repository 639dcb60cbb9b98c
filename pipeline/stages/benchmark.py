"""`benchmark`: latency p50/p90 after warm-up and load time of every input model, round-robin so that ratios are side
by side. Measured on this host in one fresh process with the device's thread count (capped to the host's cores), or,
when `device.connection` is set, on the device itself (pipeline.remote), its numbers kept in their own fields
(`device_latency_ms`, `measured_on_device`) and recorded in the measurement store (pipeline.devices.store)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import FORMATS
from pipeline.core.bounds import NonNegativeInt, PositiveInt
from pipeline.core.results import Findings, Latency
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class BenchmarkConfig:
    warmup: NonNegativeInt = 10  # untimed runs of each model first
    iterations: PositiveInt = 50  # timed runs of each model; p50 and p90 are taken over these
    batch_size: PositiveInt = 1  # images per call (1 = the latency a camera app sees)
    repeats: PositiveInt = 3  # on a device: rounds of `iterations` timed runs (p50/p90 over all, p50 per round kept)


# reads "host": a timing made on this machine is reused only on a machine with the same CPU, cores and instruction sets
class Benchmark(Stage, type="benchmark", config=BenchmarkConfig, accepts=FORMATS, inputs=(1, None),
                reads=("host", "device.threads", "device.name", "device.display_name", "device.connection",
                       "device.known_hosts", "device.remote_python", "device.remote_timeout_s",
                       "device.benchmark_model")):
    @classmethod
    def check(cls, p: BenchmarkConfig, cfg) -> list[str]:
        if p.iterations < 1 or p.warmup < 0 or p.batch_size < 1 or p.repeats < 1:
            return [f"iterations, repeats and batch_size must be >= 1 and warmup >= 0 (got {p.iterations}, "
                    f"{p.repeats}, {p.batch_size}, {p.warmup})"]
        return []

    def run(self, ctx: StageContext) -> StageResult:
        if ctx.settings.device.connection:
            return self._on_device(ctx)
        from pipeline.core.errors import NotRunnableHere
        from pipeline.runtimes import host_threads, isolated, not_runnable_reason

        p: BenchmarkConfig = ctx.params
        requested = int(ctx.settings.device.threads)
        threads = host_threads(requested)
        skipped = {n: why for n, a in ctx.inputs.items() if (why := not_runnable_reason(a.format, a.meta))}
        if len(skipped) == len(ctx.inputs):  # nothing to time here: reported as such, never as a number
            raise NotRunnableHere(next(iter(skipped.values())))
        models = [{"name": n, "fmt": a.format, "path": str(a.path), "meta": a.meta,
                   "shape": [p.batch_size, *a.meta["input_shape"][1:]]} for n, a in ctx.inputs.items()
                  if n not in skipped]
        r = isolated.measure(models, threads, p.warmup, p.iterations)
        capped = f" ({requested} requested by {ctx.settings.device.name}, capped to host cores)" if requested > threads else ""
        about = {n: Findings(not_runnable=why) for n, why in skipped.items()}
        about.update({n: Findings(not_runnable=f"does not run here: {why}") for n, why in r.get("failed", {}).items()})
        metrics = {"peak_rss_mb": r["peak_rss_mb"], "threads": threads}
        for name, m in r["models"].items():
            measured_on = f"this host ({r['cpu']}), {m['runtime']}, {threads} thread(s){capped}, batch {p.batch_size}"
            ratios = {b: s["ci"] for b, s in (r.get("speedups") or {}).get(name, {}).items() if s.get("ci")}
            about[name] = Findings(latency=Latency.from_measurement(m, threads=threads, source="host",
                                                                    measured_on=measured_on, ratio_ci=ratios or None))
            metrics.update({f"{name}.{k}": v for k, v in m.items() if isinstance(v, float)})
            ctx.log.info("%s: p50 %.3f ms  p90 %.3f ms — measured on %s", name, m["latency_p50_ms"],
                         m["latency_p90_ms"], measured_on)
        return StageResult(metrics=metrics, about=about, info={"threads": threads, "cpu": r["cpu"]})

    def _on_device(self, ctx: StageContext) -> StageResult:
        from pipeline import remote
        from pipeline.core.errors import NotRunnableHere

        p: BenchmarkConfig = ctx.params
        device = {"name": ctx.settings.device.name, "display_name": ctx.settings.device.display_name,
                  "connection": ctx.settings.device.connection, "known_hosts": ctx.settings.device.known_hosts,
                  "remote_python": ctx.settings.device.remote_python,
                  "remote_timeout_s": ctx.settings.device.remote_timeout_s,
                  "benchmark_model": ctx.settings.device.benchmark_model}
        takes, by = ((("tflite",), "device.benchmark_model times .tflite files only") if device["benchmark_model"]
                     else (tuple(remote.SUFFIX), f"the device runner takes {', '.join(remote.SUFFIX)}"))
        skipped = {n: f"a {a.format} model cannot be timed on {device['display_name']} ({by})"
                   for n, a in ctx.inputs.items() if a.format not in takes}
        if len(skipped) == len(ctx.inputs):
            raise NotRunnableHere(next(iter(skipped.values())))
        models = [{"name": n, "fmt": a.format, "path": str(a.path), "meta": a.meta, "precision": a.precision,
                   "shape": [p.batch_size, *a.meta["input_shape"][1:]]} for n, a in ctx.inputs.items()
                  if n not in skipped]
        r = remote.measure(device, models, int(ctx.settings.device.threads), p.warmup, p.iterations, repeats=p.repeats)
        about = {n: Findings(not_runnable=why) for n, why in skipped.items()}
        metrics = {"device_threads": r["threads"]}
        if r.get("peak_rss_mb") is not None:
            metrics["device_peak_rss_mb"] = r["peak_rss_mb"]
        for name, m in r["models"].items():
            on = m["measured_on"]
            words = (f"{on['device']} ({on['connection']}), {on['runtime']} {on['version']}, {on['threads']} "
                     f"thread(s), batch {p.batch_size}")
            lat = Latency(p50_ms=m.get("latency_p50_ms"), p90_ms=m.get("latency_p90_ms"),
                          mean_ms=m.get("latency_mean_ms"), load_ms=m.get("load_ms"),
                          load_rss_mb=m.get("load_rss_mb"), runtime=f"{on['runtime']} {on['version']}",
                          threads=on["threads"], source="device", measured_on=words,
                          min_ms=m.get("latency_min_ms"), max_ms=m.get("latency_max_ms"))
            about[name] = Findings(device_latency=lat, measured_on_device=on)
            # (a number that was not measured is left out, never written as 0: benchmark_model prints no p50/p90)
            metrics.update({f"{name}.device_{k}": v for k, v in (
                ("latency_p50_ms", lat.p50_ms), ("latency_p90_ms", lat.p90_ms), ("latency_mean_ms", lat.mean_ms),
                ("latency_min_ms", lat.min_ms), ("latency_max_ms", lat.max_ms), ("load_ms", lat.load_ms))
                if isinstance(v, (int, float))})
            ctx.log.info("%s: %s — measured on %s (%s), %s %s, %d thread(s)", name, lat.in_words(), on["device"],
                         on["connection"], on["runtime"], on["version"], on["threads"])
        # the measurement store records it once the stage has succeeded (pipeline.listeners.MeasurementListener)
        return StageResult(metrics=metrics, about=about,
                           info={"device": r["connection"], "cpu": r["cpu"], "threads": r["threads"],
                                 "device_measurement": {"device": device, "result": r, "models": models}})
