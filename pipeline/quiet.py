"""Third-party chatter off for the span of a call: converters log every pass at INFO, print progress bars and
C++ warnings. One context manager serves every converter (their loggers and environment switches differ)."""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet(loggers: tuple[str, ...] = (), level: int = logging.ERROR, env: dict[str, str] | None = None,
          keep_env: dict[str, str] | None = None, silence_warnings: bool = True) -> Iterator[None]:
    """Raise `loggers` (a name of "root" means the root logger) to at least `level`, set `env` (restored after) and
    `keep_env` (set only if unset, left in place: switches read once at import), and ignore Python warnings."""
    lgs = [logging.getLogger() if n == "root" else logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in lgs]
    for lg in lgs:
        lg.setLevel(max(lg.level, level))
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    for k, v in (keep_env or {}).items():
        os.environ.setdefault(k, v)
    try:
        with warnings.catch_warnings():
            if silence_warnings:
                warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(lgs, levels):
            lg.setLevel(lv)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
