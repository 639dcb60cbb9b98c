"""The estimator's parts, each checked against numbers worked out by hand: kernel fusion, the work counts, the model's
formula, where a device's factor comes from, the conformal interval, the fit recovering known parameters, the held-out
folds never scoring what they were fitted on, and the refusals. Small hand-built graphs and synthetic samples only."""
from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from pipeline.devices import catalog, features, fit, model, validation
from pipeline.devices.estimator import NoEstimate, estimate, interval, kernels, unit_precision
from pipeline.devices.profiler import Layer, Profile


def L(name, op, inputs=(), macs=0, out=(1, 8, 4, 4), precision="fp32", params=0):
    return Layer(name=name, op=op, source_op=op, output_shape=list(out), macs=macs, inputs=list(inputs),
                 precision=precision, input_bytes=64, output_bytes=64, params=params, weight_bytes=params * 4)


def test_pad_and_transpose_feeding_one_op_are_fused_into_it():
    ls = [L("t", "TRANSPOSE"), L("p", "PAD", ["t"]), L("c", "CONV_2D", ["p"], macs=100), L("r", "RELU6", ["c"]),
          L("p2", "PAD", ["r"]), L("dw", "DEPTHWISE_CONV_2D", ["p2"], macs=9 * 128)]
    ks = kernels(ls)
    assert [k.op_types for k in ks] == [["TRANSPOSE", "PAD", "CONV_2D", "RELU6"], ["PAD", "DEPTHWISE_CONV_2D"]]
    assert ks[1].dw_kernel == 3  # 9 MACs per output element: 3x3
    ks = kernels([L("p", "PAD"), L("a", "CONV_2D", ["p"]), L("b", "CONV_2D", ["p"])])
    assert [k.op_types for k in ks] == [["PAD"], ["CONV_2D"], ["CONV_2D"]]  # a PAD read twice stays on its own


def test_work_counts_by_hand_at_each_precision():
    prof = Profile("onnx", "fp32", [L("c", "CONV_2D", macs=1000, params=10), L("r", "RELU", ["c"]),
                                    L("d", "DEPTHWISE_CONV_2D", ["r"], macs=288),
                                    L("a", "ADD", ["d", "r"]), L("f", "FULLY_CONNECTED", ["a"], macs=50, params=5)])
    raw = dict(zip(features.FEATURES, (x * s for x, s in zip(features.vector(prof, "fp32"), features.SCALE))))
    # conv+relu fuse; 4 kernels; the ADD's 128 output elements are its element-wise work
    assert raw == pytest.approx({"inference": 1, "kernels": 4, "conv_macs": 1000, "depthwise_macs": 288,
                                 "matmul_macs": 50, "elementwise": 128, "weight_bytes": 60,
                                 "activation_bytes": 4 * 128})
    w8a16 = dict(zip(features.FEATURES, (x * s for x, s in zip(features.vector(prof, "w8a16"), features.SCALE))))
    assert w8a16["weight_bytes"] == pytest.approx(15) and w8a16["activation_bytes"] == pytest.approx(4 * 64)
    assert features.compute_precision("npu", "float") == "fp16" and features.compute_precision("cpu", "fp16") == "fp32"


KF = {"kind": "cpu", "theta": {"fp32": [0.5, 0, 1.0, 0, 0, 0, 0, 0]},
      "runtimes": {"onnxruntime": {"fp32": 0.0}, "xnnpack": {"fp32": math.log(2)}, "rare": {"fp32": 5.0}},
      "runtime_rows": {"onnxruntime": {"fp32": 40}, "xnnpack": {"fp32": 20}, "rare": {"fp32": 2}},
      "devices": {"boardA": {"fp32": math.log(3)}, "boardB": {"fp32": 0.1}},
      "device_families": {"boardA": {"fp32": 7}, "boardB": {"fp32": 1}},
      "device_runtimes": {"boardB": {"fp32": ["rare"]}}, "spec": {"fp32": math.log(100.0)}}


def test_model_formula_device_basis_and_runtime_factor():
    x = [1.0, 0, 2.0, 0, 0, 0, 0, 0]  # one inference, 2e9 conv MACs
    assert model.predict(KF, x, "fp32", math.log(3), math.log(2)) == pytest.approx(6 * (0.5 + 2.0))
    assert model.device_factor(KF, "boardA", "fp32", None) == (math.log(3), "fitted")  # 7 architectures measured
    assert model.device_factor(KF, "boardB", "fp32", None) == (0.1, "anchor")  # one: known from an anchor
    a, basis = model.device_factor(KF, "new", "fp32", 50.0)
    assert basis == "spec" and a == pytest.approx(math.log(100 / 50))  # twice the peak: half the factor
    assert model.device_factor(KF, "new", "fp32", None) == (None, "")
    assert model.runtime_factor(KF, "xnnpack", "fp32") == (math.log(2), True)
    # 2 rows: unseen, the mean of the well-measured runtimes instead ...
    assert model.runtime_factor(KF, "rare", "fp32") == (pytest.approx(math.log(2) / 2), False)
    # ... unless the device itself was measured with it (its factor was fitted together with the runtime's)
    assert model.runtime_factor(KF, "rare", "fp32", "boardB") == (5.0, True)
    assert model.device_factor({**KF, "kind": "npu"}, "new", "fp32", 50.0) == (None, "")  # no spec-sheet NPUs


def test_interval_takes_the_conformal_order_statistics():
    res = [math.log(x) for x in (0.7, 0.8, 0.9, 0.95, 1.0, 1.0, 1.05, 1.1, 1.2, 1.4)]  # n = 10
    assert interval(10.0, res) == pytest.approx((7.0, 14.0))  # floor(0.1 * 11) = 1st, ceil(0.9 * 11) = 10th
    assert interval(10.0, res[:5]) is None  # 5 residuals cannot hold an 80% interval


def synthetic(noise: float = 0.0) -> list:
    """Samples drawn from known parameters: theta = [0.2 ms per inference, 0.5 ms per 1e9 conv MACs, 1 ms per 1e8
    depthwise MACs], device factors, an ONNX Runtime factor of 1.5 against XNNPACK."""
    theta = [0.2, 0, 0.5, 1.0, 0, 0, 0, 0]
    devs = {"d1": 1.0, "d2": 2.0, "d3": 0.5, "d4": 3.0}
    out, k = [], 0
    for net in range(8):
        x = (1.0, 0, 0.5 + net, (net % 3) * 0.7, 0, 0, 0, 0)
        for d, f in devs.items():
            for rt, g in (("xnnpack", 1.0), ("onnxruntime", 1.5)):
                k += 1
                jitter = math.exp(noise * math.sin(7.3 * k))
                out.append(fit.Sample("cpu", d, rt, "fp32", f"net{net}", x,
                                      f * g * model.cost(theta, x) * jitter))
    return out


def test_fit_recovers_known_parameters():
    kf = fit.fit_kind(synthetic())
    for s in synthetic():
        a = kf["devices"][s.device]["fp32"]
        b, _ = model.runtime_factor(kf, s.runtime, "fp32", s.device)
        assert model.predict(kf, list(s.x), "fp32", a, b) == pytest.approx(s.latency_ms, rel=0.01)
    ort = kf["runtimes"]["onnxruntime"]["fp32"] - kf["runtimes"]["xnnpack"]["fp32"]
    assert math.exp(ort) == pytest.approx(1.5, rel=0.01)
    d = kf["devices"]
    assert math.exp(d["d2"]["fp32"] - d["d1"]["fp32"]) == pytest.approx(2.0, rel=0.01)


def test_held_out_folds_never_score_what_they_fitted():
    samples = synthetic(noise=0.1)
    lmo = validation.lmo(samples, fit.fit_kind, {})
    assert {r["fold"] for r in lmo} == {f"net{i}" for i in range(8)}
    assert all(r["network"] == r["fold"] for r in lmo)  # a residual is always of the held-out architecture
    anchored = [s for s in samples] + [fit.Sample("cpu", "d1", "xnnpack", "fp32", validation.ANCHOR,
                                                  samples[0].x, samples[0].latency_ms)]
    ldo, unanchored = validation.ldo_anchor(anchored, fit.fit_kind, {})
    assert ldo and {r["fold"] for r in ldo} == {"d1"}  # only d1 has an anchor measurement
    assert all(r["network"] != validation.ANCHOR for r in ldo)  # the anchor's own row is never scored
    assert unanchored == len([s for s in samples if s.device != "d1"]) + 8  # d1's ONNX Runtime rows: no anchor there
    assert max(abs(r["log_residual"]) for r in ldo + lmo) < 0.4  # noise of +-10%: held-out errors stay small


def test_delegates_are_not_units_and_int8_on_a_gpu_runs_dequantized():
    s23 = OmegaConf.to_container(catalog.load("galaxy_s23"), resolve=True)
    prof = Profile("onnx", "fp32", [L("c", "CONV_2D", macs=1000)])
    with pytest.raises(NoEstimate, match=r"'nnapi' is not a compute unit .*units: cpu, gpu, npu.*e\.g\. npu"):
        estimate(prof, s23, unit="nnapi")
    gpu = catalog.load("pixel4").compute_units.gpu
    assert unit_precision(gpu, "int8") == ("fp16", "the GPU delegate runs int8 models dequantized, in fp16")


@pytest.fixture(scope="module")
def mobilenet():
    from pipeline.devices import networks

    return networks.profile("mobilenet_v2", 224)  # from the cached profiles: no export


def dev(name):
    return OmegaConf.to_container(catalog.load(name), resolve=True)


def test_a_fitted_npu_estimate_prints_its_interval_basis_and_what_it_was_fitted_on(mobilenet):
    est = estimate(mobilenet.with_precision("int8"), dev("galaxy_s24"))
    lo, hi = est.interval_ms
    assert est.basis == "fitted" and lo < est.latency_ms < hi and hi / lo < 3
    assert est.label.startswith(f"80% interval {lo:.3g}-{hi:.3g} ms, estimate for Samsung Galaxy S24 (npu, int8")
    assert "leave-model-out residuals of" in est.label and "measurements" in est.label
    assert est.label.endswith("not a measurement") and est.to_dict()["upper_ms"] == hi
    assert any("galaxy_s24:" in f for f in est.fitted_on) and "Qualcomm AI Hub" in est.fitted_on[0]
    mem = est.memory
    assert mem["interval_mb"][0] <= mem["peak_mb"] <= mem["interval_mb"][1] and "MB peak inference memory" in mem["label"]


def test_an_unmeasured_runtime_gets_a_visibly_wide_interval(mobilenet):
    est = estimate(mobilenet, dev("rpi4"))  # LiteRT on a CPU: XNNPACK, measured once in the corpus
    lo, hi = est.interval_ms
    assert est.basis == "runtime unseen" and "leave-runtime-out" in est.label and hi / lo > 10
    assert any("published fp32 peak" in f for f in est.fitted_on)


def test_units_the_corpus_cannot_speak_for_are_refused(mobilenet):
    with pytest.raises(NoEstimate, match="no npu measurement of this device.*Measure mobilenet_v2 on it once"):
        estimate(mobilenet, dev("iphone15"))  # the Neural Engine: never measured
    with pytest.raises(NoEstimate, match="1 measurement.* too few to fit and validate"):
        estimate(mobilenet.with_precision("int8"), dev("coral_edgetpu"))
    with pytest.raises(NoEstimate, match="no gpu in the corpus was measured computing in int8|too few"):
        estimate(mobilenet.with_precision("int8"), dev("jetson_orin_nano"))


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
    s24 = dev("galaxy_s24")
    a, b = estimate(onnx_prof, s24).latency_ms, estimate(tfl_prof, s24).latency_ms
    assert abs(b / a - 1) < 0.03  # ... and fused, as the runtimes fuse it


def test_an_interval_needs_residuals_from_enough_held_out_groups():
    res = [{"mode": m, "fold": f"dev{i % folds}", "runtime": "qnn", "log_residual": 0.01 * i}
           for m, folds in (("ldo_anchor", 2), ("lmo", 3), ("lro", 2)) for i in range(12)]
    res += [{"mode": "lro", "fold": "once", "runtime": "rare", "log_residual": 1.0}]
    sets = validation.residual_sets(res)
    assert sets["lmo"]["qnn"]["folds"] == {"dev0": 4, "dev1": 4, "dev2": 4}
    assert validation.residuals_for(sets, "ldo_anchor", "qnn") == ([], "")  # two devices say nothing about a third
    assert validation.residuals_for(sets, "lmo", "qnn")[1] == "qnn"
    # leave-runtime-out: two runtimes with 5+ cases each, in both directions, pooled; a runtime seen once adds nothing
    assert len(validation.residuals_for(sets, "lro", "xnnpack")[0]) == 13
    one_sided = validation.residual_sets([{**r, "fold": "dev0"} for r in res if r["mode"] == "lro"])
    one_sided["lro"]["*"]["folds"]["once"] = 1
    assert validation.residuals_for(one_sided, "lro", "xnnpack") == ([], "")  # 13 residuals, one real direction
