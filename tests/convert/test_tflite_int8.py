"""Full-integer TFLite for models litert-torch's defaults leave partly in float or quantize coarsely."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.convert import tflite_int8


def test_hardsigmoid_rewrite_is_the_same_function():
    from pipeline.models.mobilenet_v3 import MobileNetV3Small

    torch.manual_seed(0)
    model = MobileNetV3Small(num_classes=5, width_mult=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
        model, n = tflite_int8.int8_ready(model)
        assert n == 9 and not any(isinstance(m, nn.Hardsigmoid) for m in model.modules())
        torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=0)


def test_quantizer_options_checked():
    with pytest.raises(ValueError, match="observer must be one of histogram, minmax"):
        tflite_int8.quantizer(observer="percentile")


@pytest.mark.slow
def test_mobilenet_v3_small_full_integer(tmp_path):
    from pipeline.models.mobilenet_v3 import MobileNetV3Small

    torch.manual_seed(0)
    model = MobileNetV3Small(num_classes=5, width_mult=0.25).eval()
    rng = np.random.default_rng(0)
    x, cal = rng.standard_normal((1, 3, 32, 32)).astype(np.float32), rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    before = tflite_int8.convert(model, x, tmp_path / "a.tflite", cal, rewrite=False)
    assert set(before["float_operators"]) == {"ADD", "MUL", "QUANTIZE", "DEQUANTIZE"}
    after = tflite_int8.convert(model, x, tmp_path / "b.tflite", cal)
    assert after["integer_only"] and after["rewritten_hardsigmoid"] == 9


def _second_conv_input_scale(path):
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(path.read_bytes(), 0))
    g = m.subgraphs[0]
    convs = [op for op in g.operators
             if m.operatorCodes[op.opcodeIndex].builtinCode == fb.BuiltinOperator.CONV_2D]
    return float(g.tensors[convs[1].inputs[0]].quantization.scale[0])


@pytest.mark.slow
def test_relu6_observed_after_the_clamp(tmp_path):
    """A conv whose output spans about +-40 before ReLU6: observed after the clamp, the [0, 6] tensor gets a scale of
    about 6/255; observed before it (litert-torch's own annotation), the scale of the unclamped range."""
    from pipeline import runtimes
    from pipeline.library import parity_metrics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight.mul_(20)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    scale, snr = {}, {}
    for fuse in (False, True):
        path = tmp_path / f"{fuse}.tflite"
        tflite_int8.convert(model, x[:1], path, x, fuse_clamp=fuse)
        scale[fuse] = _second_conv_input_scale(path)
        got = runtimes.predict_all(runtimes.load("tflite", path, {}, threads=1), x)
        snr[fuse] = parity_metrics.compare_tensor(ref, got)["snr_db"]
    assert scale[True] == pytest.approx(6 / 255, rel=0.05), scale
    assert scale[False] > 3 * scale[True], scale
    assert snr[True] > snr[False], snr
