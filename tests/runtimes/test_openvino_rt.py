"""OpenVINO runtime: performance hints and streams reach the compiled model, the runtime string says what the plugin
uses, and a device plugin this host lacks is refused naming the fix."""
from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from pipeline import runtimes
from pipeline.convert.openvino import export_ir
from pipeline.runtimes.openvino_rt import available_devices


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ovrt") / "model.xml"
    export_ir(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval(), (1, 3, 2, 2), path)
    return path


def test_hints_and_streams_reach_the_plugin(ir):
    m = runtimes.load("openvino", ir, {"openvino": {"performance_mode": "THROUGHPUT", "num_streams": 2,
                                                    "inference_precision": "f32"}}, threads=2)
    assert "THROUGHPUT" in m.runtime and "2 stream(s)" in m.runtime and "f32 compute" in m.runtime
    assert m.predict(np.ones((5, 3, 2, 2), np.float32)).shape == (5, 3)  # dynamic batch


def test_bf16_is_refused_or_used_as_the_cpu_allows(ir):
    try:
        m = runtimes.load("openvino", ir, {"openvino": {"inference_precision": "bf16"}}, threads=1)
    except ValueError as e:  # a CPU without bf16 support: the plugin says so, the message names the file
        assert "OpenVINO cannot load" in str(e)
        return
    assert m.inference_precision in ("bf16", "f32")


def test_a_missing_device_plugin_names_the_fix(ir):
    if any(d.startswith("NPU") for d in available_devices()):
        pytest.skip("this host has an NPU")
    with pytest.raises(ValueError, match="no NPU plugin with hardware on this host"):
        runtimes.load("openvino", ir, {"openvino": {"device": "NPU"}}, threads=1)


def test_not_runnable_here_follows_the_plugins_capabilities():
    from pipeline.runtimes.openvino_rt import CAPABILITY, not_runnable_here, optimization_capabilities

    assert not_runnable_here() is None and not_runnable_here({"openvino": {"inference_precision": "f32"}}) is None
    caps = optimization_capabilities()
    for precision, cap in CAPABILITY.items():
        why = not_runnable_here({"openvino": {"inference_precision": precision}})
        assert (why is None) == (cap in caps), (precision, caps, why)
        if why:
            assert f"cannot compute in {precision}" in why and "OPTIMIZATION_CAPABILITIES" in why
    if not any(d.startswith("NPU") for d in available_devices()):
        assert "no NPU plugin" in not_runnable_here({"openvino": {"device": "NPU"}})
