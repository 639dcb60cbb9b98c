"""SIGINT, SIGTERM and SIGHUP as KeyboardInterrupt, acted on only where the run can stop cleanly.

A run is held (`held()`) from the moment it has a folder until its MLflow run is closed, and lets signals through only
inside `allowed()` sections: while stages run and while the results are logged. A signal that arrives while held is
remembered and acted on when the next `allowed()` section starts, or reported after the run was closed. So a
signal at any moment gives one of two whole outcomes, never a mix: the run is KILLED (summary.json says so, nothing is
registered), or, if it came while the finished run was being recorded (registry, summary.json, closing the MLflow
run), the run is recorded completely and the signal is reported. Imports nothing heavy.

Handled by hand rather than with a library: Python raises KeyboardInterrupt for SIGINT only, and the holding must
follow the pipeline's own phases. SIGKILL cannot be caught; the next run closes what it leaves (tracking.close_orphans).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
_state = {"held": 0, "allowed": 0, "pending": None, "last": None, "settled": False}


class Interrupted(KeyboardInterrupt):
    """A signal ended the run. `signum` says which; `reported` is set once its message has been logged."""

    def __init__(self, signum: int):
        super().__init__(name(signum))
        self.signum = signum
        self.reported = False


def name(signum: int | None) -> str:
    try:
        return signal.Signals(signum).name
    except (ValueError, TypeError):
        return "a signal"


def _handler(signum, frame):
    _state["last"] = signum
    if _state["held"] and not _state["allowed"]:
        _state["pending"] = signum  # acted on at the next allowed() section, or reported once the run is closed
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through `_handler` (main thread only: elsewhere Python refuses handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(s, _handler)


def last_signal() -> int | None:
    """The last signal received (for the exit status 128 + signal)."""
    return _state["last"]


@contextlib.contextmanager
def held() -> Iterator[dict]:
    """Signals are remembered, not raised, until the section ends; yields a dict whose "signal" holds the one that
    arrived and was not acted on (None if none did)."""
    outer = dict(_state)
    _state["held"] += 1
    _state["allowed"] = 0
    box: dict = {"signal": None}
    try:
        yield box
    finally:
        _state["held"] -= 1
        _state["allowed"] = outer["allowed"]
        box["signal"] = _state["pending"]
        if not _state["held"]:
            _state["pending"] = None


def settle() -> None:
    """The process has nothing left to stop: from now on signals are only remembered (`late()`), so that one arriving
    between a recorded run and the process's exit cannot turn a finished run into an interrupted exit."""
    _state["held"] += 1
    _state["allowed"] = 0
    _state["settled"] = True


def ignore_from_now() -> None:
    """Everything is recorded and the process is about to exit: ignore these signals. (Python's shutdown resets a
    Python-level handler to the default action, which would end a finished run with a signal's exit status; an
    ignored signal stays ignored.)"""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(s, signal.SIG_IGN)


def late() -> int | None:
    """A signal remembered after `settle()`, if any."""
    return _state["pending"] if _state["settled"] else None


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Inside a held section: signals raise Interrupted again, first any that arrived while held."""
    if _state["pending"] is not None:
        signum, _state["pending"] = _state["pending"], None
        raise Interrupted(signum)
    _state["allowed"] += 1
    try:
        yield
    finally:
        _state["allowed"] -= 1


def _starting(signum, frame):
    """A signal while Python imports Hydra and the frameworks: nothing has been written yet, so say so and go
    (`install` takes over once the entry point runs)."""
    import os
    import sys

    sys.stderr.write(f"interrupted by {name(signum)} while starting: nothing ran and nothing was recorded\n")
    os._exit(128 + signum)


def while_starting() -> None:
    """For the entry scripts, before their slow imports: a signal then ends the process with one line, not a
    traceback from inside an import."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(s, _starting)
