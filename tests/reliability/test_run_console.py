"""What a run says on the console, with stub stages (the runner is what is tested): a start line and an end line with
its time per stage, "reused" for cached ones, a heartbeat while a stage is silent, a failure line pointing at its
traceback, and one closing line naming the deployable artifact with its gate verdict."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core import console, runner
from rel_helpers import compose_stub, outcome, run_stub_cli

FAST = [f"stages.{s}.seconds=0" for s in "abcd"]


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline"]


def test_start_end_and_reused_lines(tmp_path, caplog):
    outputs = tmp_path / "outputs"
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", *FAST))[0] == 0
    first = _lines(caplog)
    for task in ("a", "b", "c", "d", "report[d]"):
        assert any(l.startswith(f"▶ {task} (") and "running" in l for l in first), (task, first)
        assert any(l.startswith(f"✔ {task} (") and ": done in " in l and l.endswith(" s") for l in first), (task, first)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", *FAST))[0] == 0
    second = _lines(caplog)
    assert not any(l.startswith("▶") for l in second), second
    assert sum(1 for l in second if l.startswith("✔") and ": reused — same key" in l) == 8, second


def test_heartbeat_while_a_stage_is_silent(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.3)  # (30 s in real runs)
    cfg = compose_stub(tmp_path / "outputs", "recipe=stub_chain", "tracking=none", *FAST, "stages.b.seconds=1.2")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert outcome(cfg)[0] == 0
    beats = [l for l in _lines(caplog) if "still running" in l]
    assert beats and all(l.startswith("… b (rel_step): still running (") for l in beats), beats
    assert 2 <= len(beats) <= 4, beats  # about one per 0.3 s of the 1.2 s stage, none for the quick ones


def test_heartbeat_stays_silent_while_the_console_shows_output(caplog):
    import time

    with caplog.at_level(logging.INFO, logger="pipeline"):
        with console.heartbeat("step", every_s=0.3):
            for _ in range(8):
                console.terminal().write("")  # a progress bar redrawing counts as output
                time.sleep(0.1)
    assert not [l for l in _lines(caplog) if "still running" in l]


def test_failure_line_points_at_the_traceback(tmp_path, caplog):
    outputs = tmp_path / "outputs"
    with caplog.at_level(logging.INFO, logger="pipeline"):
        code, msg, _ = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", *FAST, "stages.b.fail=true"))
    assert code == 1 and "step exploded" in msg
    (line,) = [l for l in _lines(caplog) if l.startswith("✘")]
    assert line.startswith("✘ b (rel_step): failed after ") and line.endswith("logs/b.traceback.txt)"), line
    assert Path(line.split("traceback: ")[1][:-1]).read_text().count("step exploded")


def test_the_console_ends_with_the_deployable_artifact(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    code, msg, summary = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", *FAST))
    assert code == 0, msg
    last = capsys.readouterr().out.strip().splitlines()[-1]
    d = summary["artifacts"][-1]
    path = Path(summary["run_dir"]) / d["path"]
    assert summary["gate"]["artifact"] == "d" and path.is_file()
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    assert last == f"deployable: {shown} (torch fp32, {d['size_bytes'] / 1e6:.2f} MB), verdict: pass"


def test_the_last_line_says_when_the_judged_model_is_not_deployable(tmp_path, capsys):
    cfg = compose_stub(tmp_path / "outputs", "recipe=stub_chain", "tracking=none", *FAST, "gate.model_mb=0.1",
                       "gate.artifact=b")
    code, msg, summary = outcome(cfg)
    assert code == 0, msg  # (gate.enforce is off: the run succeeds, the line says the gate failed)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("not deployable as is: ") and "/artifacts/b/model.bin (torch fp32, " in last, last
    assert "verdict: fail (model_mb " in last, last


def test_an_error_reaches_the_terminal_through_the_quiet_console(tmp_path):
    """The real command line (console filter, stages inside console.quiet()): the failing stage's error and the
    resume command are on the terminal; its traceback is in the run folder, not on the terminal."""
    out = run_stub_cli("recipe=stub_chain", "tracking=none", f"paths.outputs={tmp_path / 'outputs'}", *FAST,
                       "stages.c.fail=true", timeout=120)
    shown = out.stdout + out.stderr
    assert out.returncode == 1, shown
    assert "stage 'c' (rel_step) failed: RuntimeError: step exploded" in shown
    assert "Fix the problem and run the same command again to resume" in shown
    assert "✘ c (rel_step): failed after" in shown and "Traceback" not in shown
    log = next((tmp_path / "outputs" / "runs").rglob("pipeline.log")).read_text()
    assert "step exploded" in log
