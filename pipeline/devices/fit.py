"""Fit the latency model (model.py) to the measured corpus (corpus/) plus the trusted measurements of the store, with
grouped validation (validation.py), and rewrite calibration.json:

    python -m pipeline.devices.fit [--store outputs/measurements.db] [--dry-run]

Per unit kind, theta, the runtime factors and the device factors are fitted together by robust least squares on
log(latency) (soft-L1 loss: a few corpus rows are an order of magnitude off their device's other rows). A store
measurement is taken only from the device it names (trust.py: CPU model, cores, runtime and version checked against
the device file); one that fails is refused with the reason, and the refit stops before writing anything.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pipeline.devices import features
from pipeline.devices.model import CALIBRATION

NF = len(features.FEATURES)
# Counts whose coefficients a precision scales together: per-inference and per-kernel overheads, arithmetic, bytes.
# One shape shared by every precision, and one factor per precision and group: a precision measured on few
# architectures (w8a16 on the mobile networks only) still gets the shape all of them show.
GROUPS = (("inference", "kernels"), ("conv_macs", "depthwise_macs", "matmul_macs", "elementwise"),
          ("weight_bytes", "activation_bytes"))
DEVICE_RIDGE = 0.01  # pins the scale shared by theta and the device factors (else only their product is defined)


def _group_of():
    import numpy as np

    return np.array([next(i for i, g in enumerate(GROUPS) if f in g) for f in features.FEATURES])


@dataclass(frozen=True)
class Sample:
    kind: str  # cpu | gpu | npu | edgetpu
    device: str  # catalog name
    runtime: str  # model runtime: qnn, tflite, onnxruntime, tflite-2019, xnnpack, gpu-delegate ...
    precision: str  # compute precision class: fp32 | fp16 | int8 | w8a16
    network: str
    x: tuple  # scaled work counts (features.FEATURES)
    latency_ms: float
    source: str = ""
    runtime_version: str = ""
    threads: int | None = None

    @property
    def family(self) -> str:
        """The architecture: width and resolution variants of one network are one family."""
        return "mobilenet_v1" if self.network.startswith("mobilenet_v1") else self.network


@lru_cache(maxsize=None)
def _x(network: str, resolution: int, precision: str) -> tuple:
    from pipeline.devices import networks

    return tuple(features.vector(networks.profile(network, resolution), precision))


def corpus_samples() -> list[Sample]:
    """The corpus rows as samples (profiles from the cache file)."""
    from pipeline.devices import corpus

    out = []
    for r in corpus.load():
        p = features.compute_precision(r.unit, r.precision)
        out.append(Sample(r.unit, r.device, r.runtime, p, r.network, _x(r.network, r.resolution, p), r.latency_ms,
                          r.source, r.runtime_version, r.threads))
    return out


def _layout(samples: list[Sample]) -> dict[str, Any]:
    """Parameter indices: one theta shared by all precisions (log), a factor per non-reference precision on each
    count group (GROUPS), runtime factors (each precision's reference runtime, the one with most rows, fixed at 0),
    device factors per (device, precision)."""
    count: dict[tuple, int] = {}
    for s in samples:
        count[(s.precision, s.runtime)] = count.get((s.precision, s.runtime), 0) + 1
    rows = {p: sum(n for (q, _), n in count.items() if q == p) for p, _ in count}
    precs = sorted(rows, key=lambda p: (-rows[p], p))  # the first, with most rows, is the reference precision
    ref = {p: max((r for q, r in count if q == p), key=lambda r: (count[(p, r)], r)) for p in precs}
    names = [f"g:{p}:{g}" for p in precs[1:] for g in range(len(GROUPS))]
    names += [f"r:{p}:{r}" for p, r in sorted(count) if ref[p] != r]
    names += [f"d:{d}:{p}" for d, p in sorted({(s.device, s.precision) for s in samples})]
    return {"precs": {p: i for i, p in enumerate(precs)}, "ref": ref,
            "index": {n: NF + i for i, n in enumerate(names)}, "n": NF + len(names)}


def _arrays(samples: list[Sample], lay: dict):
    import numpy as np

    ix = lay["index"]
    P = np.array([lay["precs"][s.precision] for s in samples])
    D = np.array([ix[f"d:{s.device}:{s.precision}"] for s in samples])
    R = np.array([ix.get(f"r:{s.precision}:{s.runtime}", -1) for s in samples])
    G = np.full((len(lay["precs"]), len(GROUPS)), -1)  # precision x group -> parameter index (-1: reference)
    for p, i in lay["precs"].items():
        for g in range(len(GROUPS)):
            G[i, g] = ix.get(f"g:{p}:{g}", -1)
    X = np.array([s.x for s in samples], dtype=float)
    return P, D, R, G, X, np.log([s.latency_ms for s in samples])


def _theta(v, G):
    """theta per precision (rows) from the shared log theta and the precisions' group factors."""
    import numpy as np

    gf = np.where(G >= 0, v[np.maximum(G, 0)], 0.0)  # precision x group
    return np.exp(v[:NF][None, :] + gf[:, _group_of()])


def _solve(samples: list[Sample], lay: dict):
    """Robust least squares on log latency; analytic Jacobian (a fold takes under a second)."""
    import numpy as np
    from scipy.optimize import least_squares

    P, D, R, G, X, y = _arrays(samples, lay)
    m, n = len(samples), lay["n"]
    rows = np.arange(m)
    dev_idx = np.array(sorted(v for k, v in lay["index"].items() if k.startswith("d:")), dtype=int)

    def f(v):
        s = (_theta(v, G)[P] * X).sum(1)
        lp = np.log(s) + v[D] + np.where(R >= 0, v[np.maximum(R, 0)], 0.0)
        return np.concatenate([lp - y, math.sqrt(DEVICE_RIDGE) * v[dev_idx]])

    def jac(v):
        contrib = _theta(v, G)[P] * X  # each count's share of the sum
        share = contrib / contrib.sum(1, keepdims=True)
        J = np.zeros((m + len(dev_idx), n))
        J[:m, :NF] = share
        for g in range(len(GROUPS)):
            gi = G[P, g]
            has = gi >= 0
            J[rows[has], gi[has]] = share[has][:, _group_of() == g].sum(1)
        J[rows, D] = 1.0
        has_r = R >= 0
        J[rows[has_r], R[has_r]] = 1.0
        J[m + np.arange(len(dev_idx)), dev_idx] = math.sqrt(DEVICE_RIDGE)
        return J

    v0 = np.zeros(n)
    v0[dev_idx] = float(np.median(y))
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    lo[:NF], hi[:NF] = -25.0, 8.0  # theta between ~1e-11 and ~3000 ms per unit: keeps unused counts finite
    return least_squares(f, v0, jac=jac, bounds=(lo, hi), loss="soft_l1", f_scale=0.2).x, G


def fit_kind(samples: list[Sample], peaks: dict[tuple, float] | None = None) -> dict[str, Any]:
    """Fit one unit kind's samples; `peaks` {(device, precision): effective peak G ops/s} gives the spec constants."""
    lay = _layout(samples)
    v, G = _solve(samples, lay)
    th = _theta(v, G)
    theta = {p: [float(t) for t in th[i]] for p, i in lay["precs"].items()}
    runtimes: dict[str, dict[str, float]] = {}
    for p, r in lay["ref"].items():
        runtimes.setdefault(r, {})[p] = 0.0
    devices: dict[str, dict[str, float]] = {}
    for name, i in lay["index"].items():
        kind, a, b = name.split(":")
        if kind == "r":
            runtimes.setdefault(b, {})[a] = float(v[i])
        elif kind == "d":
            devices.setdefault(a, {})[b] = float(v[i])
    families: dict[str, dict[str, int]] = {}
    for s in samples:
        families.setdefault(s.device, {}).setdefault(s.precision, set()).add(s.family)
    families = {d: {p: len(f) for p, f in fp.items()} for d, fp in families.items()}
    dev_rts: dict[str, dict[str, list[str]]] = {}
    for s in samples:
        have = dev_rts.setdefault(s.device, {}).setdefault(s.precision, [])
        if s.runtime not in have:
            have.append(s.runtime)
    rt_rows: dict[str, dict[str, int]] = {}
    for s in samples:
        rt_rows.setdefault(s.runtime, {})[s.precision] = rt_rows.get(s.runtime, {}).get(s.precision, 0) + 1
    kf = {"kind": samples[0].kind, "theta": theta, "runtimes": runtimes, "reference_runtime": lay["ref"],
          "runtime_rows": rt_rows, "devices": devices, "device_families": families, "device_runtimes": dev_rts,
          "rows": len(samples)}
    kf["spec"] = spec_constants(kf, peaks or {})
    return kf


def spec_constants(kf: dict, peaks: dict[tuple, float]) -> dict[str, float]:
    """c[p] = median over measured devices with a published peak of (a[d, p] + log peak): latency ~ 1 / peak."""
    from statistics import median

    out = {}
    for p in kf["theta"]:
        vals = [a[p] + math.log(peaks[(d, p)]) for d, a in kf["devices"].items() if p in a and peaks.get((d, p))]
        if vals:
            out[p] = median(vals)
    return out


def _device(name: str) -> dict | None:
    from pipeline.devices import catalog

    return _devices().get(name) if name in catalog.names() else None


@lru_cache(maxsize=1)
def _devices() -> dict[str, dict]:
    from omegaconf import OmegaConf

    from pipeline.devices import catalog

    return {n: OmegaConf.to_container(catalog.load(n), resolve=True) for n in catalog.names()}


def unit_of(device: dict, kind: str) -> dict | None:
    """The device's (first) compute unit of `kind`."""
    return next((u for u in (device.get("compute_units") or {}).values() if u.get("kind") == kind), None)


def peaks_for(samples: list[Sample]) -> dict[tuple, float]:
    """{(device, precision): the unit's published peak for the threads the measurement used} where published."""
    from pipeline.devices import model

    out = {}
    for s in samples:
        dev = _device(s.device)
        unit = unit_of(dev, s.kind) if dev else None
        if unit is not None and (s.device, s.precision) not in out:
            peak = model.effective_peak(unit, s.precision, s.threads or dev.get("threads") or None)
            if peak:
                out[(s.device, s.precision)] = peak
    return out


MIN_ROWS = 8  # a unit kind with fewer measurements is neither fitted nor estimated (nothing to validate it on)


def fit_all(samples: list[Sample], memory_samples: list | None = None) -> dict[str, Any]:
    """calibration.json's content: per unit kind the fit, its held-out residuals and validation figures; memory."""
    from pipeline.devices import memory, validation

    peaks = peaks_for(samples)
    kinds = {}
    for kind in sorted({s.kind for s in samples}):
        ks = [s for s in samples if s.kind == kind]
        if len(ks) < MIN_ROWS:
            kinds[kind] = {"kind": kind, "rows": len(ks), "too_few": [_label(s) for s in ks]}
            continue
        kf = fit_kind(ks, peaks)
        res, unanchored = held_out(ks, peaks)
        kf["residuals"] = validation.residual_sets(res)
        kf["validation"] = {"|".join(k[1:]): {n: x for n, x in v.items() if n != "errors"}
                            for k, v in validation.coverage(res).items()}
        kf["unanchored"] = unanchored
        kf["fitted_on"] = fitted_on(ks)
        kinds[kind] = kf
    mem = memory.corpus_samples() if memory_samples is None else memory_samples
    mem_kinds = {}
    for kind in sorted({m.kind for m in mem}):
        ms = [m for m in mem if m.kind == kind]
        if len(ms) >= MIN_ROWS:
            mres = memory.validate(ms)
            mem_kinds[kind] = {**memory.fit(ms), "residuals": validation.residual_sets(mres),
                               "validation": memory.summary(mres)}
    return {"version": 2, "features": list(features.FEATURES), "scale": list(features.SCALE),
            "anchor_network": validation.ANCHOR, "kinds": kinds, "memory": mem_kinds}


def held_out(samples: list[Sample], peaks: dict) -> tuple[list[dict], int]:
    from pipeline.devices import validation

    from pipeline.devices.model import SPEC_KINDS

    res = validation.lmo(samples, fit_kind, peaks)
    anchored, unanchored = validation.ldo_anchor(samples, fit_kind, peaks)
    spec = validation.ldo_spec(samples, fit_kind, peaks) if samples[0].kind in SPEC_KINDS else []
    return res + anchored + spec + validation.lro(samples, fit_kind, peaks), unanchored


def _label(s: Sample) -> str:
    t = f", {s.threads} thr" if s.threads else ""
    return f"{s.device} {s.kind}{t} {s.runtime}: {s.network} {s.precision} {s.latency_ms:g} ms"


def fitted_on(samples: list[Sample]) -> dict[str, Any]:
    """What a kind's fit rests on, for every estimate's `fitted_on`."""
    by_dev: dict[str, int] = {}
    for s in samples:
        by_dev[s.device] = by_dev.get(s.device, 0) + 1
    sources = sorted({s.source.split(": ")[0] if s.source.startswith("Qualcomm") else s.source.split(" (")[0]
                      for s in samples})
    return {"measurements": len(samples), "networks": sorted({s.network for s in samples}),
            "devices": by_dev, "runtimes": sorted({f"{s.runtime} ({s.runtime_version})" for s in samples}),
            "sources": sources}


def write(result: dict[str, Any]) -> None:
    from pipeline.devices import model

    CALIBRATION.write_text(json.dumps(result, indent=None, separators=(",", ":")) + "\n")
    model.reload()


def store_samples(db_path) -> tuple[list[Sample], list[str]]:
    """The store's measurements as samples, and the refusals (trust.problems) of those that cannot be taken.
    A measurement of a device the catalog does not know, without a p50 or without a readable profile is skipped."""
    from pipeline.devices import store, trust

    samples, refused = [], []
    for m in store.rows(db_path):
        dev = _device(m["device"])
        if dev is None or not m.get("latency_p50_ms"):
            continue
        why = trust.problems(m, dev)
        if why:
            refused += why
            continue
        prof = store.profile(db_path, m["fingerprint"])
        unit = (dev.get("compute_units") or {}).get(m.get("unit") or "cpu")
        if prof is None or unit is None:
            continue
        p = features.compute_precision(unit["kind"], m.get("precision") or prof.precision)
        samples.append(Sample(unit["kind"], m["device"], store.model_runtime(m["runtime"], m["runtime_version"]), p,
                              m.get("model") or m["fingerprint"], tuple(features.vector(prof, p)),
                              m["latency_p50_ms"], f"[M] measured {m['recorded_at']} on {m['device']} via "
                              f"{m.get('connection') or 'this host'} ({m.get('cpu')})",
                              f"{m['runtime']} {m['runtime_version']}", m.get("threads")))
    return samples, refused


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m pipeline.devices.fit", description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="outputs/measurements.db", help="measurement store (SQLite); may not exist")
    ap.add_argument("--dry-run", action="store_true", help="print the fit, do not rewrite calibration.json")
    args = ap.parse_args(argv)
    extra, refused = store_samples(args.store) if Path(args.store).exists() else ([], [])
    if refused:
        print("refit refused: the store holds measurements that are not from the device they name:")
        for r in refused:
            print(f"  - {r}")
        print("nothing was written (remove or re-record those measurements, then refit)")
        return 2
    corpus = corpus_samples()
    result = fit_all(corpus + extra)
    for kind, kf in result["kinds"].items():
        for group, v in (kf.get("validation") or {}).items():
            cov = f"{v['covered']}/{v['checked']}" if v["checked"] else "-"
            print(f"{kind:<8} {group:<26} {v['cases']:>5} held-out cases  median |error| "
                  f"{v['median_abs_error_pct']:5.1f}%  80% interval coverage {cov}")
    print(f"{len(corpus)} corpus + {len(extra)} measured sample(s) from {args.store}")
    if not args.dry_run:
        write(result)
        print(f"wrote {CALIBRATION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
