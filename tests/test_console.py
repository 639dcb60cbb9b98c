"""The quiet console: library chatter (Python loggers, their own stderr handlers, C-level writes to descriptor 2)
ends up in pipeline.log, the pipeline's lines on the console; verbose shows everything."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.core import console

SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    import logging.config, yaml
    from pipeline.core import console
    console.set_verbose({verbose})
    cfg = yaml.safe_load(open("conf/hydra/job_logging/pipeline.yaml"))
    logging.config.dictConfig(cfg)
    fh = logging.FileHandler(sys.argv[1]); fh.setLevel(logging.DEBUG); logging.getLogger().addHandler(fh)
    lib = logging.getLogger("torch.onnx._internal.exporter")   # a library with its own terminal handler
    lib.addHandler(logging.StreamHandler(sys.stderr)); lib.propagate = False
    with console.quiet():
        logging.getLogger("onnx_ir.passes").info("Replaced initializer 'a' with existing initializer 'b'")
        logging.info("root-logger chatter of onnxruntime.quantization")
        lib.warning("torchvision is not installed. Skipping torchvision::nms")
        os.write(2, b"oneDNN custom operations are on (C++ banner)\\n")
        warnings.warn("a library warning")
        print("progress-bar line", file=console.terminal(), flush=True)
        print("litert-torch pass 3/12")
        logging.getLogger("pipeline").info("export: exported model.onnx")
        sys.stderr.write("\\rtrain:  50%|#####     | 5/10 [00:01<00:01]")  # a tqdm bar on sys.stderr: redraws
        sys.stderr.write("a library's own text on sys.stderr\\n")
        from pipeline.core.console import quiet  # a converter's block inside the stage's: routes too, hides nothing of ours
        with quiet(("root",), logging.WARNING, env={{"TF_CPP_MIN_LOG_LEVEL": "3"}}):
            logging.info("onnxruntime.quantization rewrite on the root logger")
            logging.getLogger("pipeline").info("quantize: inside the converter's block")
    logging.getLogger("pipeline").info("after the block")
""")


def _run(tmp_path, verbose):
    log = tmp_path / "pipeline.log"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(verbose=verbose), str(log)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout + p.stderr, log.read_text()


def test_chatter_goes_to_the_log_not_the_console(tmp_path):
    shown, logged = _run(tmp_path, False)
    for chatter in ("Replaced initializer", "root-logger chatter", "torchvision is not installed", "oneDNN",
                    "a library warning", "litert-torch pass", "a library's own text", "rewrite on the root logger"):
        assert chatter not in shown, chatter
        assert chatter in logged, chatter
    assert "export: exported model.onnx" in shown and "after the block" in shown
    assert "quantize: inside the converter's block" in shown  # (the converter's block raised no logger level)
    assert "progress-bar line" in shown  # progress() / terminal() still reach the terminal inside the block
    assert "train:  50%" in shown and "train:  50%" not in logged  # a tqdm bar on sys.stderr stays visible


def test_verbose_shows_everything(tmp_path):
    shown, _ = _run(tmp_path, True)
    for line in ("Replaced initializer", "torchvision is not installed", "oneDNN", "export: exported model.onnx"):
        assert line in shown, line


def test_outside_a_run_the_named_loggers_are_raised_and_restored(caplog, monkeypatch):
    """No console filter (a bench script, a notebook): nowhere to route to, so quiet() drops the named loggers' records
    below `level` and ignores warnings, as the converters' quiet always did; all of it is put back after."""
    import warnings

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    noisy = logging.getLogger("noisy.converter")
    with caplog.at_level(logging.INFO):
        with console.quiet(("noisy",), logging.ERROR, env={"TF_CPP_MIN_LOG_LEVEL": "3"}):
            assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
            noisy.info("a pass ran")
            noisy.error("a real error")
            warnings.warn("deprecated")  # ignored (pytest would otherwise record it)
        noisy.info("after")
    assert [r.getMessage() for r in caplog.records if r.name == "noisy.converter"] == ["a real error", "after"]
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and logging.getLogger("noisy").level == logging.NOTSET


def test_verbose_takes_back_the_quiet_environment(monkeypatch):
    for k in console.QUIET_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GLOG_minloglevel", "0")  # the user's own setting: kept either way
    monkeypatch.setitem(console._state, "env_set", {})
    try:
        console.quiet_environment()
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["GLOG_minloglevel"] == "0"
        console.set_verbose(True)
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and os.environ["GLOG_minloglevel"] == "0"
        console.quiet_environment()  # verbose: nothing is set
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    finally:
        console.set_verbose(False)


def test_filter_passes_own_records_and_errors_of_others():
    f = console.ConsoleFilter()
    rec = lambda name, level: logging.LogRecord(name, level, __file__, 1, "m", None, None)
    assert f.filter(rec("pipeline.stage.export", logging.INFO))
    assert not f.filter(rec("onnx_ir.passes", logging.INFO))
    assert not f.filter(rec("root", logging.WARNING))
    assert f.filter(rec("torch", logging.ERROR))


# What the libraries of a real tiny run print (torch.onnx, onnx_ir, onnxscript, ONNX Runtime's quantizer, warnings).
CHATTER = ("torchvision is not installed", "Replaced initializer", "Warning:", "warnings.warn", "onnxscript",
           "absl", "oneDNN")
STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")  # the console format of the pipeline's log lines


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`python -m pipeline recipe=tiny_int8 device=host tracking=none` as a user runs it: (console lines, the run's
    pipeline.log, outputs folder)."""
    from conftest import run_cli

    outputs = tmp_path_factory.mktemp("console") / "outputs"
    out = run_cli("recipe=tiny_int8", "device=host", "tracking=none", "stages.train.threads=1",
                  f"paths.outputs={outputs}", env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    (log,) = (outputs / "runs").rglob("pipeline.log")
    return out, log.read_text(), outputs


@pytest.mark.slow
def test_a_real_run_shows_the_pipeline_and_logs_the_libraries(tiny_run):
    out, logged, _ = tiny_run
    for chatter in CHATTER:
        assert chatter not in out.stdout + out.stderr, chatter
    assert any(c in logged for c in CHATTER[:3]), "the libraries' lines went missing instead of into pipeline.log"
    # standard error: only the training bar's redraws; standard output: the pipeline's log lines, then the report
    assert all(l.lstrip().startswith("train:") for l in out.stderr.splitlines() if l.strip()), out.stderr[-2000:]
    shown = [l for l in out.stdout.splitlines() if l.strip()]
    table = next(i for i, l in enumerate(shown) if l.startswith("stage ") and "verdict" in l)
    assert all(STAMP.match(l) for l in shown[:table]), shown[:table]
    for task in ("train", "export", "quantize", "evaluate[export]", "evaluate[quantize]", "benchmark"):
        assert any(f"▶ {task} (" in l for l in shown) and any(f"✔ {task} (" in l and "done in" in l for l in shown)
    assert shown[-3].startswith("summary: ") and shown[-1].startswith("deployable: "), shown[-3:]
    assert "(onnx int8, " in shown[-1] and shown[-1].endswith("verdict: pass"), shown[-1]
    deployable = Path(shown[-1].split()[1])
    assert deployable.is_absolute() and deployable.is_file()
    # outputs/latest: the newest run folder, the one holding the deployable file
    latest = Path(shown[-2].removeprefix("latest run: "))
    assert latest.is_symlink() and deployable.is_relative_to(latest.resolve())
    assert max(len(l) for l in shown[table:-3]) <= 120


@pytest.mark.slow
def test_verbose_shows_what_the_libraries_print(tiny_run):
    """verbose=true on the same outputs, the export re-run (and what depends on it): the libraries' lines are shown."""
    from conftest import run_cli

    _, _, outputs = tiny_run
    out = run_cli("recipe=tiny_int8", "device=host", "tracking=none", "stages.train.threads=1", "verbose=true",
                  "cache.force=[export]", f"paths.outputs={outputs}", env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    shown = out.stdout + out.stderr
    assert any(c in shown for c in CHATTER[:3]), shown[-3000:]
    assert "✔ train (train): reused" in shown and "✔ export (export_onnx): done in" in shown


@pytest.mark.slow
@pytest.mark.parametrize("device, extra", [
    ("pixel7", ["stages.quantize.remedies=false"]),  # (a one-epoch model's int8 would try every remedy: minutes)
    ("host", ["stages.quantize.candidates=[ort_defaults,ort_per_channel_u8_float_add,openvino_int8,"
              "openvino_int8_accuracy_control]", "stages.quantize.iterations=10"])])
def test_mobilenet_int8_console_fits_120_columns(device, extra, tmp_path):
    """The real recipe's stages and notes (a narrow, one-epoch model to keep it short), as the console shows them when
    it is not a terminal: every line but the deployable file's full path within 120 columns, the verdict words."""
    from conftest import run_cli
    from pipeline.report.table import display_width

    out = run_cli("recipe=mobilenet_int8", f"device={device}", "tracking=none", "model.input_size=32",
                  "model.width_mult=0.35", "stages.train.epochs=1", "stages.train.threads=1",
                  "stages.parity.min_top1_agreement=0", *extra, f"paths.outputs={tmp_path / 'outputs'}",
                  env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    report = [l for l in out.stdout.splitlines() if l.strip() and not STAMP.match(l)]
    assert report[-1].startswith("deployable: ") or report[-1].startswith("not deployable as is: ")
    paths = ("summary: ", "latest run: ")  # a path is printed whole, to be copied
    wide = [l for l in report[:-1] if display_width(l) > 120 and not l.startswith(paths)]
    assert not wide, wide
    table = next(l for l in report if l.startswith("stage ") and l.rstrip().endswith("verdict"))
    assert "device ms" not in table  # nothing measured on a device: the column is left out
    assert any("✓ pass" in l or "✗ FAIL" in l for l in report)
    if device == "host":
        assert any("the measured int8 choice" in l for l in report)
        assert any(l.startswith("openvino_int8_accuracy_control") and "❎" in l for l in report)
