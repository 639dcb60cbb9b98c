"""Each TFLite export path on a tiny network (PyTorch through litert-torch, Keras through TFLiteConverter), read back
from the flatbuffer and run with the LiteRT interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtimes import tflite_rt

torch = pytest.importorskip("torch")


class Tiny(torch.nn.Module):
    """Conv-BN-ReLU6, a residual addition, global pooling, a classifier: the operator kinds of MobileNetV2."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU6())
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), torch.nn.BatchNorm2d(8),
                                         torch.nn.ReLU6(), torch.nn.Conv2d(8, 8, 1, bias=False), torch.nn.BatchNorm2d(8))
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = Tiny().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    x = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    return m, calib, x, ref


def test_torch_fp32_matches_pytorch(tiny, tmp_path):
    from pipeline.convert.tflite import convert_torch

    m, _, x, ref = tiny
    path = tmp_path / "fp32.tflite"
    convert_torch(m, x[:1], path, "fp32")
    info = tflite_rt.inspect(path)
    assert info["inputs"][0]["dtype"] == "float32" and not info["integer_only"]
    got = tflite_rt.load(path, {}, threads=1).predict(x)
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.slow
def test_torch_int8_every_operator_integer(tiny, tmp_path):
    """Full-integer int8 from the PT2E quantizer: checked operator by operator in the flatbuffer, int8 I/O scaled by
    the runtime with the file's scale and zero point, and still agreeing with PyTorch."""
    from pipeline.convert.tflite import convert_torch

    m, calib, x, ref = tiny
    path = tmp_path / "int8.tflite"
    facts = convert_torch(m, x[:1], path, "int8", calib)
    assert facts["strict_export"] and facts["calibration_samples"] == 32
    info = tflite_rt.inspect(path)
    assert info["integer_only"], info["float_operators"]
    assert info["operators"].get("ADD") == 1  # the residual addition is quantized too, not left in float
    assert info["inputs"][0]["dtype"] == "int8" and info["outputs"][0]["dtype"] == "int8"
    assert info["inputs"][0]["quantization"]["scale"][0] > 0
    assert set(info["constant_bytes_by_type"]) <= {"int8", "int32"}  # no float weights stored
    got = tflite_rt.load(path, {}, threads=1).predict(x)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.mean() > 0.95, cos

    float_path = tmp_path / "int8_float_io.tflite"
    convert_torch(m, x[:1], float_path, "int8", calib, io="float")
    finfo = tflite_rt.inspect(float_path)
    assert finfo["integer_only"] and finfo["edge_conversions"] == ["QUANTIZE", "DEQUANTIZE"]
    assert finfo["inputs"][0]["dtype"] == "float32" and finfo["outputs"][0]["dtype"] == "float32"
    got_f = tflite_rt.load(float_path, {}, threads=1).predict(x)
    assert np.abs(got_f - got).max() < 1e-5  # same integer graph, only the edges differ


def test_torch_fp16_and_dynamic(tiny, tmp_path):
    from pipeline.convert.tflite import convert_torch

    m, _, x, ref = tiny
    fp16 = tmp_path / "fp16.tflite"
    convert_torch(m, x[:1], fp16, "fp16")
    info = tflite_rt.inspect(fp16)
    assert "float16" in info["constant_bytes_by_type"] and info["operators"].get("DEQUANTIZE")
    assert np.abs(tflite_rt.load(fp16, {}, threads=1).predict(x) - ref).max() < 0.05 * np.abs(ref).max()
    dyn = tmp_path / "dynamic.tflite"
    convert_torch(m, x[:1], dyn, "dynamic")
    assert "int8" in tflite_rt.inspect(dyn)["constant_bytes_by_type"]
    assert tflite_rt.load(dyn, {}, threads=1).predict(x).shape == ref.shape


def test_keras_paths(tmp_path):
    """TFLiteConverter: fp32, dynamic range, fp16 and full-integer int8 with a representative dataset (NHWC)."""
    keras = pytest.importorskip("keras")
    from pipeline.convert.tflite import convert_keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, 2, padding="same")(inp)))
    h = keras.layers.Add()([h, keras.layers.Conv2D(8, 1)(h)])
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    calib = rng.standard_normal((32, 16, 16, 3)).astype(np.float32)
    ref = np.asarray(model(x.transpose(0, 2, 3, 1)))
    meta = {"input_layout": "NHWC"}
    sizes = {}
    for precision in ("fp32", "dynamic", "fp16", "int8"):
        path = tmp_path / f"{precision}.tflite"
        convert_keras(model, path, precision, calib if precision == "int8" else None)
        sizes[precision] = path.stat().st_size
        info = tflite_rt.inspect(path)
        got = tflite_rt.load(path, meta, threads=1).predict(x)
        assert got.shape == ref.shape
        if precision == "int8":
            assert info["integer_only"], info["float_operators"]
            assert info["inputs"][0]["dtype"] == "int8"
        elif precision == "fp32":
            assert np.abs(got - ref).max() < 1e-4
    assert sizes["int8"] < sizes["fp32"] and sizes["fp16"] < sizes["fp32"]


def test_corrupt_tflite_names_the_fix(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="cache.force"):
        tflite_rt.load(bad, {}, threads=1)
