"""The networks of the estimator's measured corpus, built here so that each measurement is profiled exactly the way
the pipeline profiles a PyTorch artifact (ONNX export, then per-layer MACs and bytes).

Two sources: the published CPU/GPU tables (MobileNetV1 at the TFLite hosted-models widths and resolutions,
MobileNetV2, EfficientNet-Lite0) and the Qualcomm AI Hub corpus, whose model ids map to zoo networks at the resolution
the corpus states (pipeline.devices.corpus.CORPUS). MobileNetV1 (Howard et al., 2017) is not in the model zoo, so it
is defined here.

    python -m pipeline.devices.networks            # trace the profiles the cache lacks, rewrite it
    python -m pipeline.devices.networks --all      # re-trace every network
"""
from __future__ import annotations

from functools import lru_cache

from pipeline.devices.corpus import CORPUS, PUBLISHED

V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
def mobilenet_v1(width: float = 1.0, num_classes: int = 1001):
    from torch import nn

    def cbr(cin, cout, k, s, groups=1):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    c = max(8, int(32 * width))
    layers = cbr(3, c, 3, 2)
    for cout, s in V1_BLOCKS:
        cout = max(8, int(cout * width))
        layers += cbr(c, c, 3, s, groups=c) + cbr(c, cout, 1, 1)
        c = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def build(network: str):
    """'mobilenet_v1_1.0', 'mobilenet_v2_1.0', or a zoo name ('resnet50', 'efficientnet_lite0' ...) -> torch module
    with 1000 classes (random weights: only the graph matters)."""
    from pipeline import models

    if network.startswith("mobilenet_v1_"):
        return mobilenet_v1(float(network.rsplit("_", 1)[1]))
    if network.startswith("mobilenet_v2_"):
        from pipeline.models.mobilenet_v2 import MobileNetV2

        return MobileNetV2(num_classes=1000, width_mult=float(network.rsplit("_", 1)[1]))
    if network in models.ZOO:
        return models.build(network, 1000)
    raise ValueError(f"unknown network {network!r} (MobileNetV1/V2 widths or a zoo model)")


def key(network: str, resolution: int) -> str:
    """The name of a profile in the cache (pipeline/devices/corpus/profiles.json.gz)."""
    return f"{network}@{resolution}"


def all_keys() -> list[tuple[str, int]]:
    return sorted({*PUBLISHED, *CORPUS.values()})


def trace(network: str, resolution: int):
    """Profile `network` at `resolution` from its ONNX export (slow: seconds to a minute per network)."""
    import torch

    from pipeline.devices.profiler import profile_torch_module

    torch.manual_seed(0)
    return profile_torch_module(build(network), [1, 3, resolution, resolution],
                                f"{network} {resolution} (ONNX export)")


@lru_cache(maxsize=None)
def profile(network: str, resolution: int):
    """The profile of `network` at `resolution`, batch 1: from the cache file when it holds it, else traced."""
    from pipeline.devices.corpus import profiles

    cached = profiles.load().get(key(network, resolution))
    return cached if cached is not None else trace(network, resolution)


def main(argv: list[str] | None = None) -> int:
    """Rebuild the profile cache (pipeline/devices/corpus/profiles.json.gz)."""
    import argparse

    from pipeline.devices.corpus import profiles

    ap = argparse.ArgumentParser(prog="python -m pipeline.devices.networks", description=main.__doc__)
    ap.add_argument("--all", action="store_true", help="re-trace every network, not only the missing ones")
    args = ap.parse_args(argv)
    entries = {} if args.all else dict(profiles.raw())
    for net, side in all_keys():
        k = key(net, side)
        if k in entries:
            continue
        prof = trace(net, side)
        t = prof.totals()
        print(f"{k:<28} {t['layers']:>5} layers {t['macs'] / 1e9:7.3f} G MACs {t['params'] / 1e6:7.2f} M params",
              flush=True)
        entries[k] = profiles.encode(prof)
        profiles.write(entries)  # after each network: an interrupted rebuild keeps what it traced
    print(f"{len(entries)} profiles in {profiles.CACHE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
