"""Training threads for a busy machine: measure instead of assuming "all cores", and notice when that goes wrong.

On a shared 2-core machine one training step took 4.7 s with 1 thread and 56.5 s with 2 (in one process, side by
side): with another process on the cores, every extra intra-op thread waits for a core at every barrier. So:
- `choose(step, max_threads)` times a few real steps (a callable the training loop passes) at 1..N threads,
  interleaved (1, 2, 1, 2, ...) so a change of load hits every candidate alike, and keeps the fastest; more threads
  must beat fewer by a margin, since a thread that buys nothing still takes a core from the neighbours.
- `Watch` follows the step times of the run: when the estimated time left is absurd, or a step takes several times
  what it took at the start, it warns once naming `stages.train.threads`, and backs off to fewer threads.
torch is imported inside the functions that set threads.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("pipeline")
SETTING = "stages.train.threads"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@dataclass
class Choice:
    threads: int
    seconds_per_step: dict[int, float]  # median per candidate
    samples: dict[int, list[float]]
    load_average: float | None
    why: str

    def describe(self) -> str:
        if not self.seconds_per_step:
            return f"training threads: {self.threads} ({self.why})"
        times = ", ".join(f"{n}: {s:.3g} s" for n, s in sorted(self.seconds_per_step.items()))
        load = f"; load average {self.load_average:.2f} on {os.cpu_count()} cores" if self.load_average is not None else ""
        return f"training threads: {self.threads} ({self.why}; seconds per step at each thread count {times}{load})"


def choose(step: Callable[[], object], max_threads: int, rounds: int = 3, warmup: int = 1, margin: float = 0.10,
           set_threads: Callable[[int], None] = _set_torch_threads, clock: Callable[[], float] = time.perf_counter,
           candidates: list[int] | None = None) -> Choice:
    """Time `step()` (one real training step) at 1..max_threads threads and set the fastest.

    `rounds` timed steps per candidate after `warmup` untimed ones (the first step allocates), interleaved across
    candidates. A larger thread count is kept only if its median step is more than `margin` faster than the best
    smaller one. The steps are real: the caller decides whether they count as training (they do in `Trainer` use:
    calibration steps are the first steps of epoch 1). Leaves the chosen count set.
    """
    if max_threads < 1:
        raise ValueError(f"max_threads must be >= 1, got {max_threads}")
    cands = sorted(set(candidates or range(1, max_threads + 1)))
    if len(cands) == 1:
        set_threads(cands[0])
        return Choice(cands[0], {}, {}, load_average(), "the only candidate")
    for n in cands:
        set_threads(n)
        for _ in range(warmup):
            step()
    samples: dict[int, list[float]] = {n: [] for n in cands}
    for r in range(rounds):
        order = cands if r % 2 == 0 else cands[::-1]
        for n in order:
            set_threads(n)
            t0 = clock()
            step()
            samples[n].append(clock() - t0)
    med = {n: statistics.median(ts) for n, ts in samples.items()}
    best = cands[0]
    for n in cands[1:]:
        if med[n] < med[best] * (1.0 - margin):
            best = n
    set_threads(best)
    fastest = min(med, key=med.get)
    why = ("fastest measured" if best == fastest else
           f"within {100 * margin:.0f}% of the fastest ({fastest} threads) with fewer threads")
    return Choice(best, med, samples, load_average(), why)


@dataclass
class Watch:
    """Follows step times of one training run; call `step(seconds)` after every step.

    Warns once (naming `stages.train.threads`) when the estimated time left exceeds `absurd_eta_s` or a step's
    recent median is `collapse_factor` times the median of the first steps; on a collapse it backs off: `step`
    returns the thread count to switch to (half, at least 1), else None.
    """
    total_steps: int
    threads: int
    absurd_eta_s: float = 3600.0
    collapse_factor: float = 3.0
    reference_steps: int = 5  # steps whose median is "normal"
    window: int = 5  # recent steps whose median is compared with it
    warn: Callable[[str], None] = field(default=lambda msg: log.warning("%s", msg))
    times: list[float] = field(default_factory=list)
    warned: set = field(default_factory=set)
    reference: float | None = None
    backoffs: list[tuple[int, int]] = field(default_factory=list)  # (step index, new thread count)

    def eta_s(self) -> float | None:
        if not self.times:
            return None
        recent = statistics.median(self.times[-self.window:])
        return recent * max(self.total_steps - len(self.times), 0)

    def step(self, seconds: float) -> int | None:
        self.times.append(seconds)
        n = len(self.times)
        if self.reference is None and n >= self.reference_steps:
            self.reference = statistics.median(self.times[:self.reference_steps])
        eta = self.eta_s()
        if eta is not None and eta > self.absurd_eta_s and n >= 2 and "eta" not in self.warned:
            self.warned.add("eta")
            self.warn(f"training: about {_hms(eta)} left at {statistics.median(self.times[-self.window:]):.3g} s per "
                      f"step with {self.threads} thread(s) (load average {_load()}). On a busy machine set "
                      f"{SETTING}=1 (or fewer epochs); {SETTING}=0 measures the fastest count")
        if self.reference is None or n < self.reference_steps + self.window:
            return None
        recent = statistics.median(self.times[-self.window:])
        if recent <= self.collapse_factor * self.reference:
            return None
        new = max(1, self.threads // 2)
        msg = (f"training: throughput collapsed: a step takes {recent:.3g} s against {self.reference:.3g} s at the "
               f"start (load average {_load()})")
        if new < self.threads:
            msg += f"; backing off from {self.threads} to {new} thread(s). Set {SETTING}={new} to start there"
        else:
            msg += f"; already at 1 thread: the machine is busy ({SETTING}=1 is the least it can take)"
        if "collapse" not in self.warned or new < self.threads:
            self.warned.add("collapse")
            self.warn(msg)
        if new < self.threads:
            self.backoffs.append((n, new))
            self.threads = new
            self.reference = recent  # the new normal; collapse again only against it
            return new
        self.reference = recent
        return None


def _hms(s: float) -> str:
    h, rem = divmod(int(s), 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def _load() -> str:
    la = load_average()
    return f"{la:.2f} on {os.cpu_count()} cores" if la is not None else "unknown"


PAYBACK = 10  # measure thread counts only when the training is at least this many times longer than the measuring


def probe_steps(cores: int, rounds: int = 3, warmup: int = 1) -> int:
    """Training steps `choose` spends measuring 1..cores threads."""
    return (rounds + warmup) * cores


def resolve(requested: int, step: Callable[[], object] | None, host_cores: int | None = None,
            total_steps: int | None = None, **kw) -> Choice:
    """What the training loop calls: `requested` > 0 is used as given (capped to the host's cores); 0 measures with
    `choose` when a step is given and the training is long enough to pay for it (`total_steps` at least PAYBACK
    times the steps measuring costs), else 1 thread (the safe choice on a shared machine: a short training gains
    seconds from more threads at best, and loses many times that on busy cores)."""
    cores = host_cores or os.cpu_count() or 1
    set_threads = kw.pop("set_threads", _set_torch_threads)
    if requested > 0:
        n = min(requested, cores)
        set_threads(n)
        return Choice(n, {}, {}, load_average(), f"{SETTING}={requested}" + (" capped to the host's cores"
                                                                              if requested > cores else ""))
    if step is None or cores == 1:
        set_threads(1)
        return Choice(1, {}, {}, load_average(), "one core" if cores == 1 else "no step to measure")
    cost = probe_steps(cores, kw.get("rounds", 3), kw.get("warmup", 1))
    if total_steps is not None and total_steps < PAYBACK * cost:
        set_threads(1)
        return Choice(1, {}, {}, load_average(), f"not measured: {total_steps} steps are too few to pay for "
                                                 f"measuring ({cost} steps); {SETTING}=N sets it")
    return choose(step, cores, set_threads=set_threads, **kw)
