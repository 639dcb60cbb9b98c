"""Latency estimator vs the published calibration figures (pipeline/devices/SOURCES.md).

    python bench/bench_estimator.py          # leave-one-out error and 80%-interval coverage per unit kind
    python bench/bench_estimator.py --fit    # the same, and rewrite pipeline/devices/calibration.json

Each network (MobileNetV1 at the hosted-models widths and resolutions, MobileNetV2 1.0, EfficientNet-Lite0) is
profiled the way the pipeline profiles a PyTorch artifact (ONNX export, per-layer MACs and bytes); int8/fp16 points
use the same graph re-sized. Three numbers per unit kind:
- leave-one-out median absolute error: each point predicted by a fit that did not see it;
- 80%-interval coverage: how often the published value lies in the interval the estimate would print, that interval
  built from the leave-one-out residuals of the other points only;
- leave-one-network-out median error: every point of one network predicted by a fit that saw none of that network
  (harsher: the MobileNetV1 variants of one table are close relatives).
Goal: median <= 15%, coverage >= 80%. Exit status 1 if the CPU kind misses either.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def leave_network_out(points) -> dict[str, float]:
    from pipeline.devices import fit

    errs: dict[str, list[float]] = {}
    families = sorted({p.network.rsplit("_", 1)[0] if p.network.startswith("mobilenet") else p.network for p in points})
    for fam in families:
        held = [p for p in points if p.network.startswith(fam)]
        rest = [p for p in points if not p.network.startswith(fam)]
        for kind in fit.FREE:
            hk = [p for p in held if fit.kind_of(p) == kind]
            rk = [p for p in rest if fit.kind_of(p) == kind]
            if not hk or not rk:
                continue
            params = {**fit.PRIOR, **fit.fit_kind(kind, rk)}
            errs.setdefault(kind, []).extend(abs(100 * (fit.predict(p, params) / p.published_ms - 1)) for p in hk)
    return {k: median(v) for k, v in errs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="rewrite pipeline/devices/calibration.json")
    args = ap.parse_args()

    from pipeline.devices import fit
    from pipeline.runtimes import cpu_model

    t0 = time.perf_counter()
    result = fit.fit()
    cov = fit.coverage(result)
    lno = leave_network_out(fit.POINTS)
    if args.fit:
        fit.write(result)
        print(f"wrote {fit.CALIBRATION}")
    head = f"{'device':<14}{'unit':<6}{'thr':>4}{'prec':>6} {'network':<22}{'res':>4}{'published':>10}{'LOO est.':>10}" \
           f"{'LOO err':>9}  source"
    print(head)
    print("-" * len(head))
    for r in result["points"]:
        print(f"{r['device']:<14}{r['unit']:<6}{str(r['threads'] or '-'):>4}{r['precision']:>6} {r['network']:<22}"
              f"{r['resolution']:>4}{r['published_ms']:>10.3f}{r['loo_estimate_ms']:>10.3f}{r['loo_error_pct']:>+8.1f}%"
              f"  {r['source']}")
    print(f"\n{'kind':<8}{'points':>7}{'LOO median err':>16}{'80% coverage':>14}{'leave-network-out':>19}")
    for kind, c in cov.items():
        pooled = " (pooled residuals)" if c["pooled_residuals"] else ""
        lo = f"{lno[kind]:.1f}%" if kind in lno else "-"
        print(f"{kind:<8}{c['points']:>7}{c['median_loo_error_pct']:>15.1f}%{c['covered']:>8}/{c['checked']:<5}"
              f"{lo:>19}{pooled}")
    for kind, k in result["kinds"].items():
        if "params" in k:
            print(f"  {kind:<8} " + ", ".join(f"{n}={v:.3g}" for n, v in k["params"].items()))
    load = os.getloadavg()
    print(f"\n{len(result['points'])} points fitted in {time.perf_counter() - t0:.0f} s on {cpu_model()}, "
          f"{os.cpu_count()} cores, {platform.system()}; load average {load[0]:.2f} (the estimate does not depend on "
          f"this host)")
    c = cov["cpu"]
    return 0 if c["median_loo_error_pct"] <= 15 and c["coverage_pct"] >= 80 else 1


if __name__ == "__main__":
    sys.exit(main())
