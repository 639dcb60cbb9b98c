"""Facts about this host that timing and training need: usable cores, the CPU's name and its identity for timing keys.
Imports nothing heavy."""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path


def host_threads(requested: int) -> int:
    """Threads to use on this host: the request, capped to the cores there are (0 = all of them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if requested <= 0 else min(requested, cores)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU features the speed of int8/bf16 kernels depends on (two hosts with one model name can differ in them).
TIMING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimddp", "i8mm")


@lru_cache(maxsize=1)
def identity() -> dict:
    """What a timing made here depends on besides the runtime's version: the CPU's name, the cores this process may
    use and the instruction sets its kernels pick (the pseudo-setting `host` of timing stages' keys)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpu": cpu_model(), "cores": host_threads(0), "machine": platform.machine(),
            "isa": sorted(f for f in TIMING_FLAGS if f in flags)}
