"""Every format a device deploys, measured on a board (a real sshd on 127.0.0.1, the venv's Python as the board's
interpreter): ONNX, .tflite in NCHW (litert-torch's layout) and NHWC (Keras') with float and int8 inputs, ExecuTorch
.pte and OpenVINO IR, each fed the input its own file declares. Then the board's odd set-ups: an sshd without the
SFTP subsystem, a wrong user, a link gone for good (the scratch folder named, not silently left), and the phone route
through LiteRT's benchmark_model output."""
from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sshd  # noqa: E402
from sshd import agent, board  # noqa: E402,F401 (fixtures)

from model_files import onnx_classifier, tflite  # noqa: E402
from pipeline import remote  # noqa: E402

pytestmark = [pytest.mark.integration]

if sshd.missing():
    pytest.skip(sshd.missing(), allow_module_level=True)


def _scratch_left() -> set[str]:
    return set(glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), "edge-pipeline.*")))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict]:
    """One small model per format, made here."""
    d = tmp_path_factory.mktemp("formats")
    onnx_file = onnx_classifier(d / "model.onnx")
    out = {
        "onnx": {"fmt": "onnx", "path": onnx_file, "meta": {}},
        "tflite NCHW": {"fmt": "tflite", "path": tflite(d / "nchw.tflite", shape=(1, 3, 16, 16)), "meta": {}},
        "tflite NHWC": {"fmt": "tflite", "path": tflite(d / "nhwc.tflite", shape=(1, 16, 16, 3)),
                        "meta": {"input_layout": "NHWC"}},
        "tflite int8": {"fmt": "tflite", "path": tflite(d / "int8.tflite", shape=(1, 16, 16, 3), dtype="int8"),
                        "meta": {"input_layout": "NHWC"}},
    }
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_file)), str(d / "model.xml"))
    out["openvino"] = {"fmt": "openvino", "path": d / "model.xml", "meta": {}}
    return out


@pytest.fixture(scope="module")
def pte(tmp_path_factory) -> Path:
    import torch

    from pipeline.convert.executorch import export_pte

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("pte") / "model.pte"
    export_pte(model, [1, 3, 16, 16], path)
    return path


RUNTIME = {"onnx": "onnxruntime", "tflite": "LiteRT", "openvino": "OpenVINO", "executorch": "ExecuTorch"}


@pytest.mark.parametrize("which", ["onnx", "tflite NCHW", "tflite NHWC", "tflite int8", "openvino"])
@pytest.mark.slow
def test_each_format_is_measured_on_the_board(agent, files, which):
    f = files[which]
    before = _scratch_left()
    m = {"name": "model", "fmt": f["fmt"], "path": str(f["path"]), "meta": f["meta"], "shape": [1, 3, 16, 16]}
    r = remote.measure(sshd.device_entry(agent), [m], threads=1, warmup=1, iterations=3, repeats=1)
    got = r["models"]["model"]
    assert got["runtime"].startswith(RUNTIME[f["fmt"]]) and 0 < got["latency_p50_ms"] <= got["latency_p90_ms"]
    assert _scratch_left() == before


@pytest.mark.slow
def test_executorch_pte_is_measured_on_the_board(agent, pte):
    m = {"name": "model", "fmt": "executorch", "path": str(pte), "meta": {}, "shape": [1, 3, 16, 16]}
    r = remote.measure(sshd.device_entry(agent), [m], threads=1, warmup=1, iterations=3, repeats=1)
    assert r["models"]["model"]["runtime"] == "ExecuTorch" and r["models"]["model"]["latency_p50_ms"] > 0


@pytest.mark.bad_input
def test_a_board_without_sftp_is_copied_to_with_the_legacy_protocol(files, monkeypatch, caplog):
    """OpenSSH 9's scp speaks SFTP; an sshd without `Subsystem sftp` refuses it ("Connection closed"), which used to
    be reported as a dropped link."""
    with sshd.ssh_board(sftp=False) as b:
        monkeypatch.setenv("SSH_AUTH_SOCK", b.agent_sock)
        f = files["onnx"]
        m = {"name": "model", "fmt": "onnx", "path": str(f["path"]), "meta": {}, "shape": [1, 3, 16, 16]}
        with caplog.at_level("INFO", logger="pipeline"):
            r = remote.measure(sshd.device_entry(b), [m], threads=1, warmup=1, iterations=2, repeats=1)
        assert r["models"]["model"]["latency_p50_ms"] > 0
        assert "no SFTP subsystem: copying with scp's legacy protocol (scp -O)" in caplog.text


@pytest.mark.bad_input
def test_a_wrong_user_is_named(agent, files):
    f = files["onnx"]
    m = {"name": "model", "fmt": "onnx", "path": str(f["path"]), "meta": {}, "shape": [1, 3, 16, 16]}
    conn = f"ssh://nosuchuser@127.0.0.1:{agent.port}"
    with pytest.raises(remote.RemoteError) as e:
        remote.measure(sshd.device_entry(agent, connection=conn), [m], 1, 0, 1)
    msg = str(e.value)
    assert "refused the login of 'nosuchuser' although ssh-agent holds 1 key(s)" in msg
    assert "check that the user 'nosuchuser' exists on the board" in msg


KILL_BOARD = """import os, signal
pid = int(open({pidfile!r}).read())
os.kill(pid, signal.SIGKILL)  # the board's sshd goes away (power, network)
p = os.getppid()
while p > 1:
    stat = open(f'/proc/{{p}}/stat').read()
    if stat.split('(', 1)[1].startswith('sshd'):
        os.kill(p, signal.SIGKILL)
        break
    p = int(stat.rsplit(')', 1)[1].split()[1])"""


@pytest.mark.bad_input
def test_a_board_that_goes_away_leaves_its_scratch_folder_named(files, monkeypatch, tmp_path):
    with sshd.ssh_board() as b:
        monkeypatch.setenv("SSH_AUTH_SOCK", b.agent_sock)
        boot = tmp_path / "boot.py"
        boot.write_text(KILL_BOARD.format(pidfile=str(b.root / "sshd.pid")))
        py = tmp_path / "python-gone"
        py.write_text(f"#!/bin/sh\nexec {sys.executable} {boot}\n")
        py.chmod(0o755)
        f = files["onnx"]
        m = {"name": "model", "fmt": "onnx", "path": str(f["path"]), "meta": {}, "shape": [1, 3, 16, 16]}
        before = _scratch_left()
        with pytest.raises(remote.RemoteError) as e:
            remote.measure(sshd.device_entry(b, remote_python=str(py)), [m], 1, 0, 1)
        left = _scratch_left() - before
        msg = str(e.value)
        assert len(left) == 1 and f"the scratch folder {next(iter(left))} with the models could not be removed" in msg
        assert f"rm -rf {next(iter(left))}" in msg
        for d in left:  # (the "board" is this machine: the test cleans up what the message names)
            import shutil

            shutil.rmtree(d)


# --- a phone: LiteRT's benchmark_model ---------------------------------------------------------------------------
# benchmark_model's own output (tensorflow/lite/tools/benchmark: BenchmarkLoggingListener and the stats' count lines).
BENCHMARK_MODEL_OUTPUT = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [{graph}]
INFO: Loaded model {graph}
INFO: The input model file size (MB): 0.0098
INFO: Initialized session in 4.108ms.
INFO: Running benchmark for at least 2 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=226 first=1731 curr=2106 min=1983 max=4102 avg=2212.4 std=301

INFO: Running benchmark for at least 5 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124

INFO: Inference timings in us: Init: 4108, First inference: 1731, Warmup (avg): 2212.4, Inference (avg): 2177.1
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.5 overall=3.1
INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.8
"""


def test_benchmark_model_output_is_read_honestly():
    from pipeline.remote.benchmark_model import parse

    r = parse(BENCHMARK_MODEL_OUTPUT.format(graph="/data/local/tmp/m0.tflite"))
    assert r["latency_p50_ms"] is None and r["latency_p90_ms"] is None  # it prints no percentiles: none invented
    assert r["latency_mean_ms"] == pytest.approx(2.1771) and r["latency_min_ms"] == pytest.approx(2.056)
    assert r["latency_max_ms"] == pytest.approx(2.656) and r["samples"] == 459 and r["load_ms"] == pytest.approx(4.108)
    assert r["peak_rss_mb"] == pytest.approx(9.8)
    with pytest.raises(ValueError, match="printed no timings"):
        parse("ERROR: Could not open '/data/local/tmp/m0.tflite'.")


def test_the_benchmark_model_route_on_a_device(agent, files, tmp_path):
    """The route of a phone, run over the SSH board (no phone here): a stand-in for the benchmark_model binary on the
    device prints the binary's own output; the route copies, runs, reads and removes its scratch folder."""
    from pipeline.remote.benchmark_model import measure_tflite

    binary = tmp_path / "benchmark_model"
    out = tmp_path / "output.txt"
    out.write_text(BENCHMARK_MODEL_OUTPUT)
    binary.write_text(f"#!/bin/sh\ncase \"$1\" in --graph=*) test -s \"${{1#--graph=}}\" || exit 3;; *) exit 2;; esac\n"
                      f"cat {out}\n")
    binary.chmod(0o755)
    device = sshd.device_entry(agent, benchmark_model=str(binary))
    conn, t = remote.transport_for(device)
    f = files["tflite NHWC"]
    before = _scratch_left()
    r = measure_tflite(device, conn, t, [{"name": "quantize", "fmt": "tflite", "path": str(f["path"])}],
                       threads=2, warmup=1, iterations=5, timeout=60)
    m = r["models"]["quantize"]
    assert m["latency_p50_ms"] is None and m["latency_mean_ms"] == pytest.approx(2.1771)
    assert m["measured_on"]["runtime"] == "LiteRT benchmark_model" and r["threads"] == 2
    assert _scratch_left() == before
    json.dumps(r)  # (what the stage stores: plain data)


@pytest.mark.slow
def test_a_benchmark_model_measurement_in_a_run_is_recorded_once(agent, files, tmp_path):
    """A run that times a .tflite with benchmark_model: a failure records nothing; a success gives the mean (p50/p90
    empty, the table says "mean"), one row in the measurement store, still one after the task runs again."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reliability"))
    from rel_helpers import compose_stub, outcome

    from pipeline.devices import store

    out = tmp_path / "output.txt"
    out.write_text(BENCHMARK_MODEL_OUTPUT)
    binary = tmp_path / "benchmark_model"
    outputs = tmp_path / "outputs"

    def run(*extra):
        cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local", "device=rpi4",
                           f"device.connection={agent.connection}", f"device.known_hosts={agent.known_hosts}",
                           f"device.benchmark_model={binary}", *extra)
        cfg.stages = {"m": {"type": "rel_file", "src": str(files["tflite NHWC"]["path"]), "format": "tflite"},
                      "benchmark": {"type": "benchmark", "inputs": ["m"], "warmup": 1, "iterations": 5}}
        return outcome(cfg)

    binary.write_text("#!/bin/sh\necho 'ERROR: Failed to allocate tensors' >&2\nexit 1\n")
    binary.chmod(0o755)
    before = _scratch_left()
    code, msg, _ = run()
    assert code == 1 and "benchmark_model failed (exit 1)" in msg, msg
    assert store.rows(store.path_in(outputs)) == [] and _scratch_left() == before  # nothing recorded, nothing left

    binary.write_text(f"#!/bin/sh\ncat {out}\n")
    code, msg, summary = run()
    assert code == 0, msg
    lat = {a["name"]: a for a in summary["artifacts"]}["m"]["device_latency_ms"]
    assert lat["p50"] is None and lat["p90"] is None and lat["mean"] == pytest.approx(2.1771)
    assert lat["min"] == pytest.approx(2.056) and lat["max"] == pytest.approx(2.656)
    rows = store.rows(store.path_in(outputs))
    assert len(rows) == 1 and rows[0]["latency_p50_ms"] is None and rows[0]["latency_mean_ms"] == pytest.approx(2.1771)
    from pipeline.report.schema import Summary
    from pipeline.report.table import summary_table

    assert "2.18 mean" in summary_table(Summary.from_dict(summary), color=False)

    code, msg, _ = run("cache.force=[benchmark]")  # the same task again: its row is replaced, not added
    assert code == 0, msg
    assert len(store.rows(store.path_in(outputs))) == 1


@pytest.mark.slow
def test_readme_example_tflite_on_the_board(agent, tmp_path):
    """The README's first board example, made small: mobilenet_int8 on rpi4 exports .tflite (litert-torch, NCHW) in
    fp32 and int8 and times both on the board."""
    from conftest import run_cli

    out = tmp_path / "outputs"
    env = {"SSH_AUTH_SOCK": agent.agent_sock, "OMP_NUM_THREADS": "1"}
    p = run_cli("recipe=mobilenet_int8", "device=rpi4", f"device.connection={agent.connection}",
                f"device.known_hosts={agent.known_hosts}", f"device.remote_python={sys.executable}",
                "model.input_size=32", "model.width_mult=0.35", "stages.train.epochs=1",
                "stages.quantize.calibration_samples=16", "stages.parity.min_top1_agreement=0", "~stages.profile",
                "stages.benchmark.warmup=1", "stages.benchmark.iterations=3", f"paths.outputs={out}", env=env, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(next((out / "runs").rglob("summary.json")).read_text())
    arts = {a["name"]: a for a in summary["artifacts"]}
    for name in ("export", "quantize"):
        assert arts[name]["format"] == "tflite" and arts[name]["device_latency_ms"]["p50"] > 0, arts[name]
        assert arts[name]["measured_on_device"]["runtime"] == "LiteRT"
