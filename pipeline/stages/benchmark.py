"""`benchmark`: latency p50/p90 after warm-up and load time of every input model, measured on this host in one fresh
process with the device's thread count (capped to the host's cores), round-robin so that ratios are side by side."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.artifacts import FORMATS
from pipeline.bounds import NonNegativeInt, PositiveInt
from pipeline.results import Findings, Latency
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class BenchmarkConfig:
    warmup: NonNegativeInt = 10  # untimed runs of each model first
    iterations: PositiveInt = 50  # timed runs of each model; p50 and p90 are taken over these
    batch_size: PositiveInt = 1  # images per call (1 = the latency a camera app sees)


class Benchmark(Stage):
    type = "benchmark"
    Config = BenchmarkConfig
    accepts = FORMATS
    reads = ("device.threads", "device.name")
    min_inputs = 1

    @classmethod
    def check(cls, p: BenchmarkConfig, cfg) -> list[str]:
        if p.iterations < 1 or p.warmup < 0 or p.batch_size < 1:
            return [f"iterations and batch_size must be >= 1 and warmup >= 0 (got {p.iterations}, {p.batch_size}, "
                    f"{p.warmup})"]
        return []

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.errors import NotRunnableHere
        from pipeline.runtimes import host_threads, isolated, not_runnable_reason

        p: BenchmarkConfig = ctx.params
        requested = int(ctx.settings.device.threads)
        threads = host_threads(requested)
        skipped = {n: not_runnable_reason(a.format) for n, a in ctx.inputs.items() if not_runnable_reason(a.format)}
        if len(skipped) == len(ctx.inputs):  # nothing to time here: reported as such, never as a number
            raise NotRunnableHere(next(iter(skipped.values())))
        models = [{"name": n, "fmt": a.format, "path": str(a.path), "meta": a.meta,
                   "shape": [p.batch_size, *a.meta["input_shape"][1:]]} for n, a in ctx.inputs.items()
                  if n not in skipped]
        r = isolated.measure(models, threads, p.warmup, p.iterations)
        capped = f" ({requested} requested by {ctx.settings.device.name}, capped to host cores)" if requested > threads else ""
        about = {n: Findings(not_runnable=why) for n, why in skipped.items()}
        metrics = {"peak_rss_mb": r["peak_rss_mb"], "threads": threads}
        for name, m in r["models"].items():
            measured_on = f"this host ({r['cpu']}), {m['runtime']}, {threads} thread(s){capped}, batch {p.batch_size}"
            about[name] = Findings(latency=Latency.from_measurement(m, threads=threads, source="host",
                                                                    measured_on=measured_on))
            metrics.update({f"{name}.{k}": v for k, v in m.items() if isinstance(v, float)})
            ctx.log.info("%s: p50 %.3f ms  p90 %.3f ms — measured on %s", name, m["latency_p50_ms"],
                         m["latency_p90_ms"], measured_on)
        return StageResult(metrics=metrics, about=about, info={"threads": threads, "cpu": r["cpu"]})
