"""The cached per-layer profiles of the corpus networks (profiles.json.gz beside this file), so that fitting, the
benchmark and the tests do not re-export every network to ONNX each time.

    python -m pipeline.devices.networks            # trace what is missing, rewrite the cache
    python -m pipeline.devices.networks --all      # re-trace every network

A profile is stored as its layers' columns (COLUMNS) with inputs as layer indices; gzip keeps the file small.
"""
from __future__ import annotations

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
def raw() -> dict:
    if not CACHE.exists():
        return {}
    with gzip.open(CACHE, "rt") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def load() -> dict:
    """{"network@side": Profile} of every cached profile."""
    return {k: decode(v) for k, v in raw().items()}


def write(entries: dict) -> None:
    with gzip.open(CACHE, "wt", compresslevel=9) as f:
        json.dump(entries, f, separators=(",", ":"), sort_keys=True)
