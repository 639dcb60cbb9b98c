"""The cached per-layer profiles of the corpus networks (profiles.json.gz beside this file), so that fitting, the
benchmark and the tests do not re-export every network to ONNX each time.

    python -m pipeline.devices.corpus.profiles            # trace what is missing, rewrite the cache
    python -m pipeline.devices.corpus.profiles --all      # re-trace every network

A profile is stored as its layers' columns (COLUMNS) with inputs as layer indices; gzip keeps the file small.
"""
from __future__ import annotations

import argparse
import gzip
import json
from functools import lru_cache
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "profiles.json.gz"
COLUMNS = ("name", "op", "source_op", "output_shape", "macs", "params", "weight_bytes", "input_bytes", "output_bytes",
           "precision")


def encode(prof) -> dict:
    index = {l.name: i for i, l in enumerate(prof.layers)}
    return {"format": prof.format, "precision": prof.precision, "source": prof.source,
            "layers": [[getattr(l, c) for c in COLUMNS] + [[index[i] for i in l.inputs if i in index], l.attrs]
                       for l in prof.layers]}


def decode(d: dict):
    from pipeline.devices.profiler import Layer, Profile

    rows = d["layers"]
    names = [r[0] for r in rows]
    layers = [Layer(**dict(zip(COLUMNS, r[:len(COLUMNS)])), inputs=[names[i] for i in r[-2]], attrs=r[-1])
              for r in rows]
    return Profile(d["format"], d["precision"], layers, d["source"])


@lru_cache(maxsize=1)
def _raw() -> dict:
    if not CACHE.exists():
        return {}
    with gzip.open(CACHE, "rt") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def load() -> dict:
    """{"network@side": Profile} of every cached profile."""
    return {k: decode(v) for k, v in _raw().items()}


def write(entries: dict) -> None:
    with gzip.open(CACHE, "wt", compresslevel=9) as f:
        json.dump(entries, f, separators=(",", ":"), sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    from pipeline.devices import networks

    ap = argparse.ArgumentParser(prog="python -m pipeline.devices.corpus.profiles", description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="re-trace every network, not only the missing ones")
    args = ap.parse_args(argv)
    entries = {} if args.all else dict(_raw())
    for net, side in networks.all_keys():
        k = networks.key(net, side)
        if k in entries:
            continue
        prof = networks.trace(net, side)
        t = prof.totals()
        print(f"{k:<28} {t['layers']:>5} layers {t['macs'] / 1e9:7.3f} G MACs {t['params'] / 1e6:7.2f} M params",
              flush=True)
        entries[k] = encode(prof)
        write(entries)  # after each network: an interrupted rebuild keeps what it traced
    print(f"{len(entries)} profiles in {CACHE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
