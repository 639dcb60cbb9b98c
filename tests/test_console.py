"""The quiet console: library chatter (Python loggers, their own stderr handlers, C-level writes to descriptor 2)
ends up in pipeline.log, the pipeline's lines on the console; verbose shows everything."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline import console

SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    import logging.config, yaml
    from pipeline import console
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
                    "a library warning", "litert-torch pass"):
        assert chatter not in shown, chatter
        assert chatter in logged, chatter
    assert "export: exported model.onnx" in shown and "after the block" in shown
    assert "progress-bar line" in shown  # progress() / terminal() still reach the terminal inside the block


def test_verbose_shows_everything(tmp_path):
    shown, _ = _run(tmp_path, True)
    for line in ("Replaced initializer", "torchvision is not installed", "oneDNN", "export: exported model.onnx"):
        assert line in shown, line


def test_filter_passes_own_records_and_errors_of_others():
    f = console.ConsoleFilter()
    rec = lambda name, level: logging.LogRecord(name, level, __file__, 1, "m", None, None)
    assert f.filter(rec("pipeline.stage.export", logging.INFO))
    assert not f.filter(rec("onnx_ir.passes", logging.INFO))
    assert not f.filter(rec("root", logging.WARNING))
    assert f.filter(rec("torch", logging.ERROR))


def test_working_says_when_a_step_takes_long(caplog):
    import time

    with caplog.at_level(logging.INFO, logger="pipeline"):
        with console.working("convert", after_s=0.1, every_s=0.1):
            time.sleep(0.35)
    lines = [r.getMessage() for r in caplog.records]
    assert any("convert: still running" in l for l in lines) and any("convert: done in" in l for l in lines)


REAL = textwrap.dedent("""
    import logging, logging.config, sys, yaml
    from pipeline import console
    logging.config.dictConfig(yaml.safe_load(open("conf/hydra/job_logging/pipeline.yaml")))
    fh = logging.FileHandler(sys.argv[1]); fh.setLevel(logging.DEBUG); logging.getLogger().addHandler(fh)
    with console.quiet():
        import torch
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
        torch.onnx.export(m.eval(), (torch.randn(1, 3, 16, 16),), sys.argv[2], dynamo=True)
        logging.getLogger("pipeline").info("exported")
""")


@pytest.mark.slow
def test_a_real_onnx_export_prints_only_the_pipeline_line(tmp_path):
    """torch.onnx's own stderr handler ("torchvision is not installed"), onnxscript's optimizer lines: in the log."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", REAL, str(tmp_path / "pipeline.log"), str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    shown = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(shown) == 1 and shown[0].endswith("exported"), shown
    assert "torchvision is not installed" in (tmp_path / "pipeline.log").read_text()
