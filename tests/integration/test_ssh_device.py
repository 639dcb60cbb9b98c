"""A real OpenSSH server on 127.0.0.1 (Debian's openssh-server, started and stopped here, its own host key) stands in
for a board; the client's key is made here and lives only in an ssh-agent started here; the "board" runs the
project's venv Python as device.remote_python, without the pipeline package on its path.

The failure paths are real too: an unknown host key, no key in the agent, a missing interpreter, a missing runtime, a
timeout and a link dropped mid-run each give an error naming the fix, and the scratch folder is gone afterwards."""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sshd  # noqa: E402
from sshd import agent, board  # noqa: E402,F401 (fixtures)

from pipeline import remote  # noqa: E402

pytestmark = [pytest.mark.integration]

if sshd.missing():
    pytest.skip(sshd.missing(), allow_module_level=True)


def _tiny_onnx(path: Path) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, 3x16x16 input: milliseconds per run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(4, np.float32), "fb")
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w, b, fw, fb])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path


def _tiny_int8(fp32: Path, path: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)}
                            for i in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    fp32 = _tiny_onnx(d / "tiny_fp32.onnx")
    int8 = _tiny_int8(fp32, d / "tiny_int8.onnx")
    return [{"name": "export", "fmt": "onnx", "path": str(fp32), "meta": {}, "shape": [1, 3, 16, 16]},
            {"name": "quantize", "fmt": "onnx", "path": str(int8), "meta": {}, "shape": [1, 3, 16, 16]}]


def _scratch_left():
    return glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), "edge-pipeline.*"))


def test_measures_fp32_and_int8_on_the_board(agent, models):
    before = set(_scratch_left())
    r = remote.measure(sshd.device_entry(agent), models, threads=1, warmup=2, iterations=5)
    assert set(r["models"]) == {"export", "quantize"}
    for name, m in r["models"].items():
        assert 0 < m["latency_p50_ms"] <= m["latency_p90_ms"]
        assert m["samples"] == 15 and len(m["repeat_p50_ms"]) == 3  # 3 repeats of 5 timed runs
        assert m["load_ms"] > 0
        on = m["measured_on"]
        assert on["device"] == "Raspberry Pi 4" and on["connection"] == agent.connection
        assert on["runtime"] == "onnxruntime CPUExecutionProvider" and on["version"][0].isdigit()
        assert on["threads"] == 1
    assert r["peak_rss_mb"] > 0 and r["threads"] == 1
    assert set(_scratch_left()) == before  # the scratch folder was removed


def test_unknown_host_key_is_refused(agent, models, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(remote.RemoteError, match="not in .*ssh-keyscan -p"):
        remote.measure(sshd.device_entry(agent, known_hosts=str(empty)), models, 1, 0, 1)
    with pytest.raises(remote.RemoteError, match="does not exist"):
        remote.measure(sshd.device_entry(agent, known_hosts=str(tmp_path / "nope")), models, 1, 0, 1)


def test_changed_host_key_is_refused(agent, models, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{agent.port} {kind} {key}\n")
    with pytest.raises(remote.RemoteError, match="CHANGED"):
        remote.measure(sshd.device_entry(agent, known_hosts=str(kh)), models, 1, 0, 1)


def test_no_key_in_the_agent(board, models, monkeypatch, tmp_path):
    import subprocess

    sock = str(tmp_path / "empty.sock")
    p = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        import time

        for _ in range(50):
            if Path(sock).exists():
                break
            time.sleep(0.1)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* of this machine's user either
        with pytest.raises(remote.RemoteError, match="refused the login.*ssh-add"):
            remote.measure(sshd.device_entry(board), models, 1, 0, 1)
    finally:
        sshd.stop_group(p, timeout=5)


def test_missing_interpreter(agent, models):
    before = set(_scratch_left())
    with pytest.raises(remote.RemoteError, match="remote_python '/opt/no/python3' was not found"):
        remote.measure(sshd.device_entry(agent, remote_python="/opt/no/python3"), models, 1, 0, 1)
    assert set(_scratch_left()) == before


def _wrapper(tmp_path: Path, name: str, prelude: str) -> str:
    """A device interpreter: the venv Python with `prelude` run before the runner (a board set up differently)."""
    boot = tmp_path / f"{name}.py"
    boot.write_text(f"{prelude}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], "
                    f"run_name='__main__')\n")
    w = tmp_path / name
    w.write_text(f"#!/bin/sh\nexec {sys.executable} {boot} \"$@\"\n")
    w.chmod(0o755)
    return str(w)


KILL_SESSION = """import os, signal
pid = os.getppid()
while pid > 1:
    stat = open(f'/proc/{pid}/stat').read()
    if stat.split('(', 1)[1].startswith('sshd'):
        os.kill(pid, signal.SIGKILL)
        break
    pid = int(stat.rsplit(')', 1)[1].split()[1])"""


def test_missing_runtime_names_the_fix(agent, models, tmp_path):
    py = _wrapper(tmp_path, "python-no-ort", "import sys\nsys.modules['onnxruntime'] = None\n"
                                            "sys.modules['openvino'] = None")
    before = set(_scratch_left())
    with pytest.raises(remote.RemoteError, match="no runtime on the device.*pip install .*onnxruntime"):
        remote.measure(sshd.device_entry(agent, remote_python=py), models, 1, 0, 1)
    assert set(_scratch_left()) == before


@pytest.mark.slow
def test_timeout_names_the_setting_and_cleans_up(agent, models, tmp_path):
    py = _wrapper(tmp_path, "python-slow", "import time\ntime.sleep(30)")
    before = set(_scratch_left())
    with pytest.raises(remote.RemoteError, match="did not finish within 3 s. Raise device.remote_timeout_s"):
        remote.measure(sshd.device_entry(agent, remote_python=py, remote_timeout_s=3), models, 1, 0, 1)
    assert set(_scratch_left()) == before


def test_dropped_link(agent, models, tmp_path):
    # the runner's session process on the board dies mid-run: the client sees the connection close
    py = _wrapper(tmp_path, "python-drop", KILL_SESSION)
    before = set(_scratch_left())
    with pytest.raises(remote.RemoteError, match="link to .* dropped"):
        remote.measure(sshd.device_entry(agent, remote_python=py), models, 1, 0, 1)
    assert set(_scratch_left()) == before


def test_connection_strings():
    c = remote.parse("ssh://pi@rpi.local:2222")
    assert (c.user, c.host, c.port) == ("pi", "rpi.local", 2222) and str(c) == "ssh://pi@rpi.local:2222"
    assert remote.parse("adb://R5CT1234").serial == "R5CT1234"
    for bad, msg in [("rpi.local", "not a connection"), ("ssh://pi:secret@rpi", "password"),
                     ("ssh://rpi", "needs a user"), ("ftp://pi@x", "not supported"), ("ssh://pi@x:99999", "port")]:
        with pytest.raises(remote.ConnectionError_, match=msg):
            remote.parse(bad)


@pytest.mark.slow
def test_pipeline_benchmarks_on_the_board_next_to_the_estimate(agent, tmp_path):
    """`python -m pipeline recipe=tiny_int8 device=rpi4 device.connection=ssh://... device.known_hosts=...
    device.remote_python=...`: fp32 and int8 are timed on the board; summary, console and MLflow show them as
    measured on that device, next to the estimate; the store holds them with their profiles."""
    import json

    from mlflow.tracking import MlflowClient

    from conftest import run_cli
    from pipeline.devices import store

    out = tmp_path / "outputs"
    env = {"SSH_AUTH_SOCK": agent.agent_sock, "OMP_NUM_THREADS": "1"}
    p = run_cli("recipe=tiny_int8", "device=rpi4", f"device.connection={agent.connection}",
                f"device.known_hosts={agent.known_hosts}", f"device.remote_python={sys.executable}",
                "+stages.profile={type: profile}", f"paths.outputs={out}", env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(next((out / "runs").rglob("summary.json")).read_text())
    arts = {a["name"]: a for a in summary["artifacts"]}
    for name, prec in (("export", "fp32"), ("quantize", "int8")):
        a = arts[name]
        assert a["device_latency_ms"]["p50"] > 0 and a["latency_ms"] is None  # never mixed with host numbers
        on = a["measured_on_device"]
        assert on["device"] == "Raspberry Pi 4" and on["connection"] == agent.connection
        assert on["runtime"].startswith("onnxruntime") and on["threads"] == 4
        assert a["estimate"]["latency_ms"] > 0 and "80% interval" in a["estimate"]["label"]
        lat = next(c for c in a["verdict"]["checks"] if c["name"] == "latency_ms")
        assert lat["source"].startswith("measured on Raspberry Pi 4")
    assert f"device ms: measured on Raspberry Pi 4 ({agent.connection}), onnxruntime" in p.stdout
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    metrics = client.get_run(summary["mlflow"]["run_id"]).data.metrics
    assert metrics["export.device_latency_p50_ms"] > 0 and metrics["quantize.device_latency_p50_ms"] > 0
    assert metrics["export.estimate_latency_ms"] > 0
    rows = store.rows(store.path_in(out))
    assert {(r["model"], r["precision"]) for r in rows} == {("export", "fp32"), ("quantize", "int8")}
    assert all(r["device"] == "rpi4" and r["runtime_version"] and store.profile(store.path_in(out), r["fingerprint"])
               for r in rows)
    # this "board" is the test host over ssh: the store keeps what it measured, but the refit will not take an x86
    # CPU's numbers as a Raspberry Pi 4's
    from pipeline.devices import fit

    samples, refused = fit.store_samples(store.path_in(out))
    assert samples == [] and sum("expects one of ['Raspberry Pi 4'" in r for r in refused) == len(rows)
