"""Every step of the search cached in the project's content-addressed store (pipeline.core.cache), one entry per step.

A step's key is the digest of what decides its result: its kind and parameters, the key of the unmodified model's
stage, the data's content (`base`), and the code that makes it: the source of the module that makes that kind of step
and of every project module it reaches, with the versions of the libraries they import (pipeline.core.settings derives
both, as for a stage). So fixing how the front is drawn does not re-train a single trial, and changing how a trial
is pruned re-runs every trial. The search's own width (how many
trials, which ranges) is not part of any step's key, so a resumed run (killed half-way) or a widened one (more trials,
a wider range) finds every step it already made. An entry is written the way the runner writes a stage's: in a
private directory, committed by one atomic rename after the step succeeded, checked against its recorded sha256 values
before reuse, under a per-key lock so that two runs compute a step once.

`saved_seconds` adds up what the reused steps cost when they were made: how much the cache saved this run.

Besides the entries, a small index per search identity lists the parameters of every trial a search finished; a later
search with a different width (another range, more trials) starts by replaying those that fit its space, so it
re-uses every finished trial, not only those its sampler would happen to draw again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.core import cache as cache_mod


def data_digest(data) -> str:
    """The content of the arrays the search trains and judges on (the stage's own key holds the data fingerprint,
    which a stage cannot read; hashing the arrays is exact and takes about a second per GB)."""
    h = hashlib.sha256()
    for name in ("train_x", "train_y", "val_x", "val_y"):
        a = getattr(data, name)
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(memoryview(a.reshape(-1).view("uint8")) if a.flags.c_contiguous else a.tobytes())
    return h.hexdigest()[:24]


# which module makes each kind of step (its code and everything it imports are in the step's key)
MAKERS = {"teacher_logits": ("pipeline.optimize.recover",),
          "sensitivity": ("pipeline.optimize.surgery", "pipeline.optimize.recover"),
          "proxy": ("pipeline.optimize.trials",), "proxy_latency": ("pipeline.optimize.trials",),
          "estimate": ("pipeline.optimize.trials",), "final": ("pipeline.optimize.trials",),
          "qat": ("pipeline.optimize.trials",), "qat_openvino": ("pipeline.optimize.trials",),
          "proxy_base": ("pipeline.optimize.timing",), "onnx": ("pipeline.optimize.deploy",),
          "deploy": ("pipeline.optimize.deploy",), "resolution": ("pipeline.optimize.resolution",)}


def code_of(kind: str) -> dict[str, Any]:
    """The code part of a step's key: the digest of its maker modules' import closure and their library versions."""
    from pipeline.core.codekey import module_code

    code, libraries = module_code(MAKERS[kind])
    return {"code": code, "libraries": libraries}


class Store:
    """Cached steps of one search. `root`: the cache folder (None: a temporary one, nothing kept: cache.enabled=false)."""

    def __init__(self, root: Path | None, base: dict[str, Any], log, code: Callable[[str], dict] = code_of):
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="optimize-nocache-")
            root = Path(self._tmp.name)
        self.cache, self.base, self.log, self._code, self._codes = cache_mod.Cache(root), base, log, code, {}
        self.ran: list[dict] = []
        self.reused: list[dict] = []

    def key(self, kind: str, params: dict[str, Any]) -> str:
        if kind not in self._codes:
            self._codes[kind] = self._code(kind)
        return cache_mod.digest({"optimize": kind, "params": params, **self.base, **self._codes[kind]})

    def step(self, kind: str, params: dict[str, Any], make: Callable[[Path], dict]) -> tuple[dict, Path, str]:
        """(result, folder of its files, key): reused when an intact entry exists, else made by `make(folder)`,
        which writes its files there and returns a JSON-able result."""
        key = self.key(kind, params)
        with self.cache.lock(key):
            entry = self.cache.lookup(key)
            if entry is not None:
                done = entry.manifest["step"]
                self.reused.append({"kind": kind, "key": key, "seconds": done["seconds"]})
                return done["result"], entry.out, key
            work = self.cache.workdir(key)
            t0 = time.perf_counter()
            try:
                result = make(work / "out")
            except BaseException:
                self.cache.discard(work)
                raise
            seconds = time.perf_counter() - t0
            entry = self.cache.commit(key, work, {"step": {"kind": kind, "params": params, "result": result,
                                                           "seconds": seconds}})
        self.ran.append({"kind": kind, "key": key, "seconds": seconds})
        return result, entry.out, key

    def _index(self, identity: dict) -> tuple[str, Path]:
        key = cache_mod.digest({"optimize-index": identity, **self.base})
        return key, self.cache.root / "optimize-index" / f"{key}.json"

    def finished_trials(self, identity: dict) -> list[dict]:
        """Parameters of the trials earlier searches with the same `identity` (everything that decides a trial's
        result, not the search's width) finished, in the order they ran (a repeated suggestion repeated, so that a
        replay is the same sequence)."""
        try:
            return json.loads(self._index(identity)[1].read_text())["trials"]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def remember_trial(self, identity: dict, number: int, params: dict) -> None:
        """Record trial `number`'s parameters (atomic rewrite under the index's lock): a replayed trial is already
        there; a search that goes past the index extends it; one that went elsewhere (another space) adds what is new."""
        key, path = self._index(identity)
        with self.cache.lock(key):
            done = self.finished_trials(identity)
            if number < len(done) and done[number] == params:
                return
            if number >= len(done) or params not in done:
                cache_mod.write_json_atomic(path, {"identity": identity, "trials": [*done, params]})

    def accounting(self) -> dict[str, Any]:
        """How many steps ran and were reused, the seconds spent, and the seconds the reused ones had cost."""
        kinds = sorted({s["kind"] for s in self.ran + self.reused})
        return {"ran": len(self.ran), "reused": len(self.reused),
                "ran_seconds": round(sum(s["seconds"] for s in self.ran), 2),
                "saved_seconds": round(sum(s["seconds"] for s in self.reused), 2),
                "by_kind": {k: {"ran": sum(s["kind"] == k for s in self.ran),
                                "reused": sum(s["kind"] == k for s in self.reused)} for k in kinds}}

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp.name, ignore_errors=True)
