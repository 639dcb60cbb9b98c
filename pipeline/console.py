"""A quiet console: the pipeline's own lines on the terminal, third-party chatter in pipeline.log.

Three kinds of chatter reach a terminal, and each needs its own route:
- Python loggers of libraries (onnx_ir's "Replaced initializer ...", torch.onnx's "torchvision is not installed",
  onnxruntime.quantization on the root logger, absl): the console handler carries `ConsoleFilter`
  (conf/hydra/job_logging/pipeline.yaml), which passes the pipeline's records and only errors of anyone else; the run's
  file handler on the root logger keeps everything.
- Libraries that install their own stderr handler and stop propagation (torch, mlflow, absl): `route_library_loggers`
  takes those handlers off and lets the records propagate to the two handlers above.
- C/C++ code writing to file descriptor 2 (TensorFlow's and XLA's C++ logs, oneDNN's banner, absl before
  InitializeLog, triton): only a descriptor-level redirect catches it; `quiet()` points descriptor 2 at pipeline.log for
  the duration of a block; progress bars write to a copy of the terminal (`progress()`, `terminal()`).

`verbose=true` (set_verbose(True)) turns all of it off: everything is shown as the libraries print it.
Imports no ML framework.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Iterable, Iterator

# Loggers shown on the console at INFO and above; anyone else's records only from ERROR up.
OWN = ("pipeline", "__main__", "hydra")
# Libraries that attach their own console handlers or print through logging; their names, for routing.
LIBRARIES = ("torch", "mlflow", "absl", "tensorflow", "keras", "litert_torch", "ai_edge_litert", "onnx", "onnx_ir",
             "onnxscript", "onnxruntime", "torchao", "triton", "coremltools", "alembic", "urllib3", "jax", "h5py")
# Environment read by C++ code when it first logs: set before the libraries are imported (idempotent, setdefault).
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow / LiteRT C++ logs, oneDNN's "custom operations are on" banner
             "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2",
             "LITERT_TORCH_SHOW_PROGRESS": "n",  # litert-torch's per-pass progress lines (=y to see them)
             "TORCH_CPP_LOG_LEVEL": "ERROR"}
NATIVE = "native"  # logger name of captured descriptor-2 output (in pipeline.log only)

_state = {"verbose": False}


def set_verbose(verbose: bool) -> None:
    """verbose=true: show every library's output on the console as it prints it (nothing is routed)."""
    _state["verbose"] = bool(verbose)


def is_verbose() -> bool:
    return _state["verbose"]


class _LineLogger(io.TextIOBase):
    """A text stream that logs each complete line (for libraries that print() their progress to stdout)."""

    def __init__(self, logger: logging.Logger):
        self.logger, self.buf = logger, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                self.logger.info("%s", line.rstrip("\r"))
        return len(s)

    def flush(self) -> None:
        if self.buf.strip():
            self.logger.info("%s", self.buf)
        self.buf = ""


class ConsoleFilter(logging.Filter):
    """For the console handler: the pipeline's own records; others only at ERROR and above (unless verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _state["verbose"] or record.levelno >= logging.ERROR:
            return True
        name = record.name
        return any(name == o or name.startswith(o + ".") for o in OWN)


def quiet_environment(environ: dict | None = None) -> None:
    """Set the C++ log levels before any framework is imported (process start); explicit user settings win."""
    if _state["verbose"]:
        return
    env = os.environ if environ is None else environ
    for k, v in QUIET_ENV.items():
        env.setdefault(k, v)


def route_library_loggers() -> list[str]:
    """Take the terminal handlers off third-party loggers and let their records propagate to the root's handlers
    (console, filtered; pipeline.log, everything). Returns the loggers changed. Safe to call again after imports."""
    if _state["verbose"]:
        return []
    changed = []
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger) or not name.split(".")[0] in LIBRARIES:
            continue
        terminal = [h for h in lg.handlers if type(h) is logging.StreamHandler
                    and getattr(h, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)]
        for h in terminal:
            lg.removeHandler(h)
        if terminal or not lg.propagate:
            lg.propagate = True
            changed.append(name)
    return changed


def _log_file() -> str | None:
    """The run's pipeline.log: the first file handler on the root logger."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            return h.baseFilename
    return None


_terminal: dict[str, Any] = {}


def terminal() -> io.TextIOBase:
    """A stream to the real terminal (the original stderr), valid also inside `quiet()`: for progress bars."""
    if "stream" not in _terminal:
        try:
            fd = os.dup(sys.__stderr__.fileno())
            _terminal["stream"] = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
        except (AttributeError, OSError, ValueError):  # no real stderr (embedded, some test runners)
            _terminal["stream"] = sys.stderr
    return _terminal["stream"]


@contextlib.contextmanager
def quiet(verbose: bool | None = None) -> Iterator[None]:
    """Route library chatter of the block to pipeline.log: Python warnings, third-party loggers, print() to
    sys.stdout, and C/C++ output on descriptor 2. Python's sys.stderr keeps pointing at the terminal (progress bars stay visible).

    One function for what the converters need: litert-torch's and TensorFlow's C++ logs and progress lines,
    coremltools' missing-proxy messages and warnings, onnxruntime.quantization's root-logger rewrites. Nested use is
    fine. verbose (default: set_verbose's value) shows everything.
    """
    if verbose is None:
        verbose = _state["verbose"]
    if verbose:
        yield
        return
    quiet_environment()
    route_library_loggers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    target = _log_file()
    tmp = None
    saved_fd = None
    try:
        fd2 = sys.__stderr__.fileno() if sys.__stderr__ is not None else None
    except (AttributeError, OSError, ValueError):
        fd2 = None
    if fd2 is not None:
        terminal()  # before the redirect: a copy of the real descriptor 2, for progress()
        if target:
            out_fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        else:
            tmp = tempfile.TemporaryFile()
            out_fd = os.dup(tmp.fileno())
        saved_fd = os.dup(fd2)
        os.dup2(out_fd, fd2)
        os.close(out_fd)
        # sys.stderr stays on descriptor 2 (the log): a library handler created by an import inside the block binds
        # it (torch's does). Progress bars write to terminal() instead: use progress().
    capture = logging.captureWarnings
    capture(True)  # warnings.warn(...) -> logger py.warnings -> pipeline.log (the console filter drops it)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_LineLogger(logging.getLogger(NATIVE))) as out:
            warnings.simplefilter("default")
            try:
                yield
            finally:
                out.flush()
    finally:
        capture(False)
        route_library_loggers()  # handlers attached by imports inside the block
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        if saved_fd is not None:
            os.dup2(saved_fd, fd2)
            os.close(saved_fd)
        if tmp is not None:  # no run log yet: keep the lines as records (they reach pipeline.log once it exists)
            tmp.seek(0)
            native = logging.getLogger(NATIVE)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    native.info("%s", line)
            tmp.close()


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar on the terminal that survives `quiet()`; `progress(total=N, desc="quantize", unit="image")`.

    Not a tty (a log file, CI): a line every 10 s instead of a redrawn bar."""
    from tqdm.auto import tqdm

    stream = terminal()
    tty = bool(getattr(stream, "isatty", lambda: False)())
    kwargs.setdefault("mininterval", 2.0 if tty else 10.0)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=stream, **kwargs)


@contextlib.contextmanager
def working(what: str, after_s: float = 5.0, every_s: float = 15.0, log: logging.Logger | None = None):
    """For a step without iterations to count (a conversion, a calibration run): nothing if it ends within `after_s`,
    else a line every `every_s` seconds saying it is still running and for how long."""
    log = log or logging.getLogger("pipeline")
    done = threading.Event()
    t0 = time.monotonic()

    def beat() -> None:
        wait = after_s
        while not done.wait(wait):
            log.info("%s: still running (%.0f s)", what, time.monotonic() - t0)
            wait = every_s

    th = threading.Thread(target=beat, daemon=True, name=f"progress: {what}")
    th.start()
    try:
        yield
    finally:
        done.set()
        th.join(1.0)
        elapsed = time.monotonic() - t0
        if elapsed >= after_s:
            log.info("%s: done in %.0f s", what, elapsed)
