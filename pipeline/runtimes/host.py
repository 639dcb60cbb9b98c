"""Facts about this host that timing and training need: usable cores and the CPU's name. Imports nothing heavy."""
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
