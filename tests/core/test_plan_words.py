"""--plan in few words: why a task re-runs in one phrase (the cause, not every setting it moves), and how long the
run should take from the cache's last durations."""
from __future__ import annotations

from pipeline.app import time_estimate
from pipeline.core.cache import Cache, diff, digest


def comp(**kw):
    base = {"type": "quantize_onnx", "params": {"calibration_samples": 128}, "inputs": {"export": "k1"},
            "settings": {"device": {"name": "jetson_orin_nano", "threads": 6, "display_name": "NVIDIA Jetson Orin Nano"}},
            "code": {"stages/quantize_onnx.py": "c1"}, "libraries": {"onnxruntime": "1.31.1"}}
    for k, v in kw.items():
        base = {**base, k: v}
    return base


def test_a_device_change_is_one_phrase():
    new = comp(settings={"device": {"name": "host", "threads": 0, "display_name": "this host"}})
    assert diff(comp(), new) == ["device jetson_orin_nano -> host"]


def test_a_stage_type_change_is_one_phrase():
    new = comp(type="select_int8", params={"candidates": ["ort_fp32"]}, code={"stages/select.py": "c2"},
               libraries={"onnxruntime": "1.31.1", "openvino": "2026.4.1"})
    assert diff(comp(), new) == ["stage type quantize_onnx -> select_int8"]


def test_the_cause_comes_before_what_follows_from_it():
    new = comp(settings={"device": {"name": "host", "threads": 0, "display_name": "this host"}},
               inputs={"export": "k2"}, code={"stages/quantize_onnx.py": "c1", "runtimes/openvino_rt.py": "c3"},
               libraries={"onnxruntime": "1.31.1", "openvino": "2026.4.1"})
    assert diff(comp(), new) == ["device jetson_orin_nano -> host", "input 'export' changed",
                                 "code changed: runtimes/openvino_rt.py (new)"]  # its library comes with the code
    assert diff(comp(), comp(params={"calibration_samples": 64})) == ["params.calibration_samples 128 -> 64"]


def test_the_estimate_sums_the_last_durations_of_what_will_run(tmp_path):
    cache = Cache(tmp_path)
    c = comp()
    cache.remember("r", "quantize", c)
    (cache.entry_dir(digest(c))).mkdir(parents=True)
    (cache.entry_dir(digest(c)) / "entry.json").write_text('{"seconds": 42.5}')
    assert cache.last_seconds("r", "quantize", "quantize_onnx") == 42.5
    assert cache.last_seconds("r", "quantize", "select_int8") is None  # another type under the same name
    rows = [{"task": "train", "will": "reuse"}, {"task": "quantize", "will": "run", "last_seconds": 42.5},
            {"task": "benchmark", "will": "run", "last_seconds": None}]
    line = time_estimate(rows)
    assert line.startswith("estimated time: about 42.5 s for 1 of the 2 task(s)") and "never ran here: benchmark" in line
    assert "every task is reused" in time_estimate(rows[:1])
