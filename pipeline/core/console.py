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
  the duration of a block; progress bars write to a copy of the terminal (`progress()`, `terminal()`, and tqdm's
  redraws on sys.stderr).

Wiring: pipeline/cli/run.py calls `quiet_environment()` at process start and `set_verbose` from the config; the
runner runs every stage inside `quiet()` and `heartbeat()`; the converters' `pipeline.core.console.quiet` is this `quiet()`.
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

# Where output goes cannot change what a stage computes: editing this module re-runs nothing (pipeline.core.codekey).
CACHE_KEY_EXEMPT = "output routing only"

# Loggers shown on the console at INFO and above; anyone else's records only from ERROR up.
OWN = ("pipeline", "__main__", "hydra", "hydra_plugins")  # (hydra_plugins: the launchers and sweepers say what they start)
# Libraries that attach their own console handlers or print through logging; their names, for routing.
LIBRARIES = ("torch", "mlflow", "absl", "tensorflow", "keras", "litert_torch", "ai_edge_litert", "onnx", "onnx_ir",
             "onnxscript", "onnxruntime", "torchao", "triton", "coremltools", "alembic", "urllib3", "jax", "h5py")
# Environment read by C++ code when it first logs: set before the libraries are imported (a user's own value wins).
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow / LiteRT C++ logs, oneDNN's "custom operations are on" banner
             "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2",
             "LITERT_TORCH_SHOW_PROGRESS": "n",  # litert-torch's per-pass progress lines (=y to see them)
             "TORCH_CPP_LOG_LEVEL": "ERROR"}
NATIVE = "native"  # logger name of captured descriptor-2 output (in pipeline.log only)

# env_set: what quiet_environment set; last_output: see last_output()
_state: dict[str, Any] = {"verbose": False, "env_set": {}, "last_output": 0.0, "folded": 0}


def set_verbose(verbose: bool) -> None:
    """verbose=true: show every library's output on the console as it prints it (nothing is routed); also takes back
    the C++ log levels `quiet_environment` set at process start (frameworks read them when they are imported)."""
    _state["verbose"] = bool(verbose)
    if verbose:
        for k, v in _state["env_set"].items():
            if os.environ.get(k) == v:
                del os.environ[k]
        _state["env_set"] = {}


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
    """For the console handler: the pipeline's own records; others only at ERROR and above (unless verbose), and
    never their tracebacks: a library that logs each failed retry with its traceback (MLflow's SQLAlchemy store on a
    full disk) would flood the console, while the pipeline reports the cause in one line. Those records are counted
    (`folded()`) and kept in pipeline.log, whose handler sees every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        own = any(name == o or name.startswith(o + ".") for o in OWN)
        shown = _state["verbose"] or record.levelno >= logging.ERROR or own
        if shown and not own and not _state["verbose"] and (record.exc_info or "\n" in str(record.msg)):
            _state["folded"] += 1
            return False
        if shown:
            _state["last_output"] = time.monotonic()
        return shown


def folded() -> int:
    """How many library records with a traceback the console left to pipeline.log so far."""
    return _state["folded"]


def last_output() -> float:
    """time.monotonic() of the last line the console showed (a record past `ConsoleFilter`, a write to `terminal()`);
    0.0 before the first one. `heartbeat` stays silent while there is output."""
    return _state["last_output"]


def quiet_environment(environ: dict | None = None) -> None:
    """Set the C++ log levels before any framework is imported (process start); explicit user settings win."""
    if _state["verbose"]:
        return
    env = os.environ if environ is None else environ
    for k, v in QUIET_ENV.items():
        if k not in env:
            env[k] = v
            if environ is None:
                _state["env_set"][k] = v


def route_library_loggers() -> list[str]:
    """Take the terminal handlers off third-party loggers and let their records propagate to the root's handlers
    (console, filtered; pipeline.log, everything). Returns the loggers changed. Safe to call again after imports."""
    if _state["verbose"]:
        return []
    changed = []
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger) or not name.split(".")[0] in LIBRARIES:
            continue
        # a plain StreamHandler (not a FileHandler) of a library is its console handler, whatever stream object it
        # holds: sys.stderr as it was when the library was imported, or a wrapper of it (mlflow's)
        terminal = [h for h in lg.handlers if type(h) is logging.StreamHandler]
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


class _Terminal(io.TextIOBase):
    """The real terminal; each write counts as console output (for `heartbeat`)."""

    def __init__(self, stream):
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        _state["last_output"] = time.monotonic()
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


class _Stderr(io.TextIOBase):
    """sys.stderr inside `quiet()`: progress-bar redraws (writes starting with a carriage return, as tqdm's are) go to
    the terminal, everything else to descriptor 2, the log. So a stage's own tqdm bar stays visible while the text a
    library's handler writes to sys.stderr does not."""

    def __init__(self, log_stream):
        self.log_stream = log_stream

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        return (terminal() if s.startswith("\r") else self.log_stream).write(s)

    def flush(self) -> None:
        for stream in (self.log_stream, terminal()):
            with contextlib.suppress(Exception):
                stream.flush()

    def isatty(self) -> bool:  # tqdm redraws its bar for the terminal it ends up on
        return terminal().isatty()

    def fileno(self) -> int:  # descriptor 2: what a child process or C code handed sys.stderr writes goes to the log
        return self.log_stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.log_stream, "encoding", "utf-8")


_terminal: dict[str, Any] = {}


def terminal() -> io.TextIOBase:
    """A stream to the real terminal (the original stderr), valid also inside `quiet()`: for progress bars."""
    if "stream" not in _terminal:
        try:
            fd = os.dup(sys.__stderr__.fileno())
            stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
        except (AttributeError, OSError, ValueError):  # no real stderr (embedded, some test runners)
            stream = sys.stderr
        _terminal["stream"] = _Terminal(stream)
    return _terminal["stream"]


_depth = [0]  # open routing quiet() blocks: only the outermost one redirects


def routed() -> bool:
    """True when the console handler carries `ConsoleFilter` (a pipeline run, conf/hydra/job_logging/pipeline.yaml):
    library records then have a place to go (pipeline.log) and `quiet()` routes them there instead of dropping them."""
    return any(isinstance(f, ConsoleFilter) for h in logging.getLogger().handlers for f in h.filters)


@contextlib.contextmanager
def _environment(env: dict[str, str] | None, keep_env: dict[str, str] | None) -> Iterator[None]:
    """`env` set for the block and restored after; `keep_env` set only where unset and left in place (switches that
    libraries read once, at import)."""
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    for k, v in (keep_env or {}).items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def quiet(loggers: tuple[str, ...] = (), level: int = logging.ERROR, env: dict[str, str] | None = None,
          keep_env: dict[str, str] | None = None, silence_warnings: bool = True,
          verbose: bool | None = None) -> Iterator[None]:
    """Library chatter of the block off the console: Python warnings, third-party loggers, print() to sys.stdout, and
    C/C++ output on descriptor 2. Nested use is fine (the runner wraps every stage; converters wrap their calls).

    In a pipeline run (`routed()`) all of it goes to pipeline.log and `loggers`/`level`/`silence_warnings` are not
    needed: the console filter hides the records, the log keeps them; progress bars stay on the terminal (tqdm's
    redraws on sys.stderr, `progress()`, `terminal()`). Outside a run (a bench script, a notebook: no
    console filter, no run log) the records have nowhere else to go, so `loggers` (a name of "root" means the root
    logger) are raised to at least `level` and warnings are ignored (`silence_warnings`). `env` is set for the block
    and `keep_env` where unset in both cases. verbose (default: set_verbose's value) shows everything.
    """
    if verbose is None:
        verbose = _state["verbose"]
    if verbose:
        yield
        return
    with _environment(env, keep_env):
        if not routed():
            with _dropped(loggers, level, silence_warnings):
                yield
        elif _depth[0]:  # an outer block already routes everything
            yield
        else:
            _depth[0] += 1
            try:
                with _routed():
                    yield
            finally:
                _depth[0] -= 1


@contextlib.contextmanager
def _dropped(loggers: tuple[str, ...], level: int, silence_warnings: bool) -> Iterator[None]:
    lgs = [logging.getLogger() if n == "root" else logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in lgs]
    for lg in lgs:
        lg.setLevel(max(lg.level, level))
    try:
        with warnings.catch_warnings():
            if silence_warnings:
                warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(lgs, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _routed() -> Iterator[None]:
    """Everything of the block into pipeline.log: loggers propagate to the root (console filtered, log not),
    descriptor 2 points at the log, print() becomes log records, warnings are logged."""
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
        # sys.stderr writes to descriptor 2 (the log), but for progress-bar redraws (_Stderr): a library handler
        # created by an import inside the block binds it (torch's does). progress() writes to terminal() directly.
    capture = logging.captureWarnings
    capture(True)  # warnings.warn(...) -> logger py.warnings -> pipeline.log (the console filter drops it)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_LineLogger(logging.getLogger(NATIVE))) as out, \
                contextlib.redirect_stderr(_Stderr(sys.stderr)):
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
        if tmp is not None:  # no run log: keep the lines as records (the run's handlers, if any, get them)
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
def heartbeat(what: str, every_s: float = 30.0, log: logging.Logger | None = None) -> Iterator[None]:
    """For a step that may run long without a word (a conversion, a calibration, a benchmark): one line
    `… what: still running (N s)` whenever the console has shown nothing for `every_s` seconds; nothing while the
    step logs or draws a progress bar."""
    log = log or logging.getLogger("pipeline")
    done = threading.Event()
    t0 = time.monotonic()
    beat = [t0]  # the last heartbeat (the console may not count it: no ConsoleFilter outside a run)

    def run() -> None:
        while True:
            quiet_since = max(t0, beat[0], last_output())
            if done.wait(max(0.05, quiet_since + every_s - time.monotonic())):
                return
            now = time.monotonic()
            if now - max(t0, beat[0], last_output()) >= every_s:
                beat[0] = now
                log.info("… %s: still running (%s)", what, duration(now - t0))

    th = threading.Thread(target=run, daemon=True, name=f"heartbeat: {what}")
    th.start()
    try:
        yield
    finally:
        done.set()
        th.join(1.0)


def duration(seconds: float) -> str:
    """12.3 s, or 4 min 05 s from two minutes up: how the console says how long something took."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds) // 60} min {int(seconds) % 60:02d} s"
