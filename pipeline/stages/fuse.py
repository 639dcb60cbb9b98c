"""`fuse`: fold each batch norm into the convolution before it (Conv-BN folding) on the PyTorch model, verify the
outputs numerically and measure the latency effect in PyTorch on this host.

Conv-BN-ReLU fusion: after folding, a Conv -> activation pair is what ONNX Runtime (Conv+Relu/Clip fusion at session
load) and TFLite (fused activation of CONV_2D) execute as one kernel; the stage counts those chains. Eager PyTorch has
no fused conv+activation kernel for float models, so the measured PyTorch gain comes from the folding alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import NonNegative, NonNegativeInt, PositiveInt
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class FuseConfig:
    tolerance: NonNegative = 1e-4  # largest max-absolute output difference accepted; larger fails the stage
    samples: PositiveInt = 256  # validation images the fused and unfused outputs are compared on
    latency_iterations: NonNegativeInt = 30  # timed single-image runs of each model (side by side, round-robin); 0 = skip
    threads: PositiveInt = 1  # PyTorch threads for the latency comparison


# reads host: it times the fused model against the unfused one here
class Fuse(Stage, type="fuse", config=FuseConfig, accepts=("torch",), produces="torch", inputs=1,
           reads=("data", "host"), libraries=("torch", "numpy")):
    @classmethod
    def check(cls, p: FuseConfig, cfg) -> list[str]:
        problems = []
        if not p.tolerance > 0:
            problems.append(f"tolerance must be > 0, got {p.tolerance}")
        if p.samples < 1 or p.latency_iterations < 0 or p.threads < 1:
            problems.append(f"samples and threads must be >= 1 and latency_iterations >= 0 (got {p.samples}, "
                            f"{p.threads}, {p.latency_iterations})")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        import copy

        import torch

        from pipeline import models
        from pipeline.runtimes import cpu_model, host_threads
        from pipeline.library.training import load_rebuildable

        p: FuseConfig = ctx.params
        src = ctx.input
        model, spec = load_rebuildable(src, ctx.name)
        fused = copy.deepcopy(model).eval()
        chains = activation_chains(fused)
        n = models.fold_batchnorm(fused)
        if n == 0:
            ctx.log.warning("%s has no convolution followed by a batch norm: nothing to fold", src.stage)
        data = ctx.data()
        x = torch.from_numpy(data.val_x[: p.samples])
        with torch.inference_mode():
            ref, got = model(x), fused(x)
        err = float((ref - got).abs().max())
        if not err <= p.tolerance:
            raise ArithmeticError(f"the fused model's outputs differ from the unfused by {err:.3g} (max absolute), "
                                  f"more than stages.{ctx.name}.tolerance={p.tolerance:g}")
        agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
        metrics = {"folded_batchnorms": n, "activation_chains": chains, "max_abs_diff": err, "top1_agreement": agree,
                   "parameters_before": sum(t.numel() for t in model.parameters()),
                   "parameters_after": sum(t.numel() for t in fused.parameters())}
        info = {}
        if p.latency_iterations:
            threads = host_threads(p.threads)
            torch.set_num_threads(threads)
            lat = side_by_side({"unfused": model, "fused": fused}, torch.from_numpy(data.val_x[:1]),
                               p.latency_iterations)
            metrics.update({f"{k}_p50_ms": v for k, v in lat.items()})
            metrics["torch_speedup"] = lat["unfused"] / lat["fused"]
            info["measured_on"] = f"this host ({cpu_model()}), torch {torch.__version__} eager, {threads} thread(s)"
        ctx.log.info("folded %d batch norms (%d conv-bn-activation chains); max |fused - unfused| = %.2e; %s", n,
                     chains, err, f"PyTorch p50 {metrics.get('unfused_p50_ms', 0):.2f} -> "
                     f"{metrics.get('fused_p50_ms', 0):.2f} ms" if p.latency_iterations else "latency not measured")
        path = models.save_torch(fused, ctx.workdir, {**spec, "bn_folded": True})
        meta = {**src.meta, "arch": {**spec, "bn_folded": True}, "fused": {"folded_batchnorms": n,
                                                                           "max_abs_diff": err}}
        return StageResult(Artifact(ctx.name, "torch", src.precision, path, meta), metrics=metrics, info=info)


def activation_chains(model) -> int:
    """Conv -> BatchNorm -> ReLU/ReLU6/Hardswish chains (a runtime runs each as one fused kernel once folded)."""
    import torch.fx as fx
    from torch import nn

    acts = (nn.ReLU, nn.ReLU6, nn.Hardswish)
    mods = dict(model.named_modules())
    from pipeline.models import conv_bn_pairs

    bns = {bn for _, bn in conv_bn_pairs(model)}
    gm = fx.symbolic_trace(model)
    n = 0
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(mods.get(node.target), acts):
            src = node.args[0]
            if isinstance(src, fx.Node) and src.op == "call_module" and src.target in bns:
                n += 1
    return n


def side_by_side(models: dict, x, iterations: int, warmup: int = 5) -> dict[str, float]:
    """Median single-image latency (ms) of each model, timed round-robin so that load on the host hits all alike."""
    import time

    import numpy as np
    import torch

    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for i in range(warmup + iterations):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                if i >= warmup:
                    times[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}
