"""The estimator's model terms, each checked on hand-built layers against numbers worked out by hand: fusion of
PAD/TRANSPOSE, depthwise by kernel size, sub-linear threads, int8 per core kind, runtime generation, the empirical
interval, and the errors for a unit that is not a unit and for int8 on a GPU."""
from __future__ import annotations

import copy
import math

import pytest
from omegaconf import OmegaConf

from pipeline.devices import catalog
from pipeline.devices.estimator import NoEstimate, estimate, interval, kernels
from pipeline.devices.profiler import Layer, Profile

ONE = {"e_fp32": 1.0, "e_int8": 1.0, "f_dw": 1.0, "e_mem": 1.0, "overhead_us": 0.0}
DEV = {"name": "toy", "display_name": "Toy", "runtime": "litert", "threads": 1, "estimate_unit": "cpu",
       "memory_bandwidth_gbps": {"value": 1e6, "source": "[E] test"},  # memory never binds
       "compute_units": {"cpu": {"kind": "cpu", "cores": 4, "peak_gops": {"fp32": {"value": 4.0, "source": "[E]"},
                                                                          "int8": {"value": 16.0, "source": "[E]"}}}}}


def L(name, op, inputs=(), macs=0, out=(1, 8, 4, 4), precision="fp32"):
    return Layer(name=name, op=op, source_op=op, output_shape=list(out), macs=macs, inputs=list(inputs),
                 precision=precision, input_bytes=64, output_bytes=64)


def test_pad_and_transpose_feeding_one_op_are_fused_into_it():
    ls = [L("t", "TRANSPOSE"), L("p", "PAD", ["t"]), L("c", "CONV_2D", ["p"], macs=100), L("r", "RELU6", ["c"]),
          L("p2", "PAD", ["r"]), L("dw", "DEPTHWISE_CONV_2D", ["p2"], macs=9 * 128)]
    ks = kernels(ls)
    assert [k.op_types for k in ks] == [["TRANSPOSE", "PAD", "CONV_2D", "RELU6"], ["PAD", "DEPTHWISE_CONV_2D"]]
    assert ks[1].dw_kernel == 3  # 9 MACs per output element: 3x3
    # a PAD read by two operators is a kernel of its own (nothing to fold it into)
    ks = kernels([L("p", "PAD"), L("a", "CONV_2D", ["p"]), L("b", "CONV_2D", ["p"])])
    assert [k.op_types for k in ks] == [["PAD"], ["CONV_2D"], ["CONV_2D"]]


def test_depthwise_efficiency_by_kernel_size():
    dw3 = Profile("onnx", "fp32", [L("d", "DEPTHWISE_CONV_2D", macs=9 * 128)])
    dw5 = Profile("onnx", "fp32", [L("d", "DEPTHWISE_CONV_2D", macs=25 * 128)])
    p = {**ONE, "f_dw3": 1.0, "f_dw5": 0.5}
    # 1 thread of 4 cores: 1 G op/s; 3x3: 2*1152 ops = 2.304 us; 5x5 at half the efficiency: 2*3200*2 = 12.8 us
    assert estimate(dw3, DEV, params=p).latency_ms == pytest.approx(2.304e-3)
    assert estimate(dw5, DEV, params=p).latency_ms == pytest.approx(12.8e-3)


def test_threads_scale_sub_linearly():
    prof = Profile("onnx", "fp32", [L("c", "CONV_2D", macs=1000)])
    lin = estimate(prof, DEV, threads=4, params={**ONE, "thread_s": 0.0}).latency_ms
    sub = estimate(prof, DEV, threads=4, params={**ONE, "thread_s": 0.1}).latency_ms
    assert lin == pytest.approx(2000 / 4e9 * 1e3)
    assert sub / lin == pytest.approx(4 / (4 / (1 + 0.1 * 3)))  # Amdahl: 4 threads give 3.08x, not 4x
    assert estimate(prof, DEV, threads=8, params=ONE).latency_ms == pytest.approx(lin)  # no more than the cores


def test_int8_efficiency_per_core_kind_and_runtime_generation():
    prof = Profile("onnx", "int8", [L("c", "CONV_2D", macs=1000, precision="int8")])
    p = {**ONE, "e_int8_dot": 0.5, "e_int8_nodot": 0.25, "g_int8_xnnpack": 2.0}
    dot = estimate(prof, DEV, params=p, generation="tflite-2019").latency_ms  # int8/fp32 peak 4x: a dot-product core
    nodot_dev = copy.deepcopy(DEV)
    nodot_dev["compute_units"]["cpu"]["peak_gops"]["int8"]["value"] = 8.0  # 2x: no dot product
    nodot = estimate(prof, nodot_dev, params=p, generation="tflite-2019").latency_ms
    assert dot == pytest.approx(2000 / (4e9 * 0.5) * 1e3) and nodot == pytest.approx(2000 / (2e9 * 0.25) * 1e3)
    assert estimate(prof, DEV, params=p).latency_ms == pytest.approx(dot / 2)  # litert today: XNNPACK, 2x here
    with pytest.raises(NoEstimate, match="generation 'tvm' unknown"):
        estimate(prof, DEV, params=p, generation="tvm")


def test_a_delegate_is_not_a_unit_and_says_which_unit_to_name():
    s23 = OmegaConf.to_container(catalog.load("galaxy_s23"), resolve=True)
    prof = Profile("onnx", "fp32", [L("c", "CONV_2D", macs=1000)])
    with pytest.raises(NoEstimate, match=r"'nnapi' is not a compute unit .*units: cpu, gpu, npu.*e\.g\. npu"):
        estimate(prof, s23, unit="nnapi")


def test_int8_on_a_gpu_runs_dequantized_and_says_so():
    pixel4 = OmegaConf.to_container(catalog.load("pixel4"), resolve=True)
    prof = Profile("tflite", "int8", [L("c", "CONV_2D", macs=1000, precision="int8")])
    est = estimate(prof, pixel4, unit="gpu")
    assert est.precision == "fp16" and any("dequantized" in n for n in est.notes)
    bare = copy.deepcopy(pixel4)
    bare["compute_units"]["gpu"]["peak_gops"] = {}  # a GPU nobody publishes a float figure for
    with pytest.raises(NoEstimate, match="dequantized.*estimate it on the CPU"):
        estimate(prof, bare, unit="gpu")


def test_interval_takes_the_conformal_order_statistics():
    res = [math.log(x) for x in (0.7, 0.8, 0.9, 0.95, 1.0, 1.0, 1.05, 1.1, 1.2, 1.4)]  # n = 10
    lo, hi = interval(10.0, res)
    # floor(0.1 * 11) = 1st smallest, ceil(0.9 * 11) = 10th: the extremes at n = 10
    assert (lo, hi) == pytest.approx((7.0, 14.0))
    assert interval(10.0, res[:1]) is None


def test_a_calibrated_estimate_prints_its_80_percent_interval_and_what_it_was_fitted_on():
    rpi4 = OmegaConf.to_container(catalog.load("rpi4"), resolve=True)
    prof = Profile("onnx", "fp32", [L("c", "CONV_2D", macs=10_000_000), L("d", "DEPTHWISE_CONV_2D", macs=9 * 128)])
    est = estimate(prof, rpi4)
    lo, hi = est.interval_ms
    assert lo < est.latency_ms < hi
    assert est.label.startswith(f"80% interval {lo:.3g}-{hi:.3g} ms, estimate for Raspberry Pi 4 (cpu, fp32)")
    assert "leave-one-out residuals of" in est.label and est.label.endswith("not a measurement")
    assert est.fitted_on and all("published" in f or "measured" in f for f in est.fitted_on)
    assert est.to_dict()["upper_ms"] == hi and est.generation == "xnnpack"


@pytest.mark.slow
def test_onnx_and_tflite_profiles_of_one_network_estimate_within_3_percent(tmp_path):
    import numpy as np
    import torch

    from pipeline.convert.tflite import convert_torch
    from pipeline.devices.profiler import profile_tflite, profile_torch_module
    from pipeline.models.mobilenet_v2 import MobileNetV2

    torch.manual_seed(0)
    m = MobileNetV2(num_classes=10, width_mult=0.35).eval()
    onnx_prof = profile_torch_module(m, [1, 3, 96, 96])
    convert_torch(m, np.zeros((1, 3, 96, 96), np.float32), tmp_path / "m.tflite")
    tfl_prof = profile_tflite(tmp_path / "m.tflite")
    assert any(l.op == "PAD" for l in tfl_prof.layers)  # the converter's explicit padding is there ...
    rpi4 = OmegaConf.to_container(catalog.load("rpi4"), resolve=True)
    a, b = estimate(onnx_prof, rpi4).latency_ms, estimate(tfl_prof, rpi4).latency_ms
    assert abs(b / a - 1) < 0.03  # ... and fused, as XNNPACK fuses it
