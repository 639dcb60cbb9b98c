"""Training threads on a busy machine (pipeline.library.threads): real training steps of a small torch model are timed at
1..N threads and the fastest kept; the watch warns naming stages.train.threads and backs off on a collapse."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pipeline.library import threads

torch = pytest.importorskip("torch")


def _step_fn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def test_choose_times_real_steps_and_keeps_the_fastest():
    before = torch.get_num_threads()
    try:
        c = threads.choose(_step_fn(), 2, rounds=2)
        assert c.threads in (1, 2) and torch.get_num_threads() == c.threads
        assert set(c.seconds_per_step) == {1, 2} and all(s > 0 for s in c.seconds_per_step.values())
        assert all(len(v) == 2 for v in c.samples.values())
        fastest = min(c.seconds_per_step, key=c.seconds_per_step.get)
        assert c.threads == fastest or c.seconds_per_step[c.threads] <= 1.1 * c.seconds_per_step[fastest] + 1e-9
        assert "training threads:" in c.describe() and "seconds per step" in c.describe()
    finally:
        torch.set_num_threads(before)


def test_choose_prefers_fewer_threads_on_a_busy_machine(tmp_path):
    """A CPU burner on every core (real processes): 1 thread must not lose to 2 by more than the margin."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    before = torch.get_num_threads()
    try:
        time.sleep(0.5)
        c = threads.choose(_step_fn(), 2, rounds=3)
        assert c.seconds_per_step[c.threads] <= min(c.seconds_per_step.values()) * 1.1 + 1e-9
    finally:
        for b in burners:
            b.kill()
            b.wait()
        torch.set_num_threads(before)


def test_resolve_uses_a_set_count_and_caps_it():
    seen = []
    c = threads.resolve(8, None, host_cores=2, set_threads=seen.append)
    assert c.threads == 2 and seen == [2] and "capped" in c.why
    c = threads.resolve(0, None, host_cores=2, set_threads=seen.append)
    assert c.threads == 1


def test_a_short_training_is_not_worth_measuring_thread_counts():
    """tiny_int8 trains 23 steps: measuring 1 and 2 threads costs 8 of them (14 s before a 3 s epoch on a busy
    machine), so it takes 1 thread; a 345-step training measures."""
    calls, seen = [], []
    c = threads.resolve(0, lambda: calls.append(1), host_cores=2, total_steps=23, set_threads=seen.append)
    assert c.threads == 1 and not calls and "too few to pay" in c.describe() and "stages.train.threads" in c.why
    ticks = iter(range(1000))
    c = threads.resolve(0, lambda: calls.append(1), host_cores=2, total_steps=345, set_threads=seen.append,
                        clock=lambda: next(ticks))
    assert len(calls) == threads.probe_steps(2) and c.seconds_per_step


def test_watch_warns_on_an_absurd_eta_naming_the_setting():
    msgs = []
    w = threads.Watch(total_steps=1000, threads=2, absurd_eta_s=600, warn=msgs.append)
    for _ in range(3):
        w.step(12.0)
    assert len(msgs) == 1 and "stages.train.threads=1" in msgs[0] and " h " in msgs[0]


def test_watch_backs_off_when_throughput_collapses():
    msgs = []
    w = threads.Watch(total_steps=100, threads=2, absurd_eta_s=1e9, warn=msgs.append)
    changes = [w.step(t) for t in [1.0] * 5 + [5.0] * 5]
    assert changes[-1] == 1 and w.threads == 1 and w.backoffs == [(10, 1)]
    assert any("collapsed" in m and "stages.train.threads=1" in m for m in msgs)
    assert [w.step(5.0) for _ in range(5)] == [None] * 5  # the new normal: no further back-off
