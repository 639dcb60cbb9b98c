"""Signatures read from files the tests build themselves, and the layout adapter."""
import json

import numpy as np
import pytest

from pipeline.library import signature
from pipeline.library.signature import Preprocessing, Signature, TensorSpec


def _nhwc_two_output_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    # NHWC 1x16x16x3 in; out 1: global mean over H, W (1x3); out 2: the input scaled by 2 (1x16x16x3)
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["scores"], keepdims=0),
             helper.make_node("Mul", ["image", "two"], ["scaled"])]
    g = helper.make_graph(nodes, "two_out", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 16, 16, 3])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3]),
                           helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, 16, 16, 3])],
                          [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                           helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    helper.set_model_props(m, {"preprocessing": json.dumps({"scale": 1.0, "mean": [127.5] * 3, "std": [127.5] * 3})})
    onnx.save(m, str(path))


def test_onnx_nhwc_two_outputs_read_and_fed(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "m.onnx"
    _nhwc_two_output_onnx(path)
    sig = signature.read("onnx", path)
    assert sig.layout == "NHWC" and sig.input_size == (16, 16) and sig.fixed_batch == 1
    assert sig.output_names == ["scores", "scaled"] and sig.outputs[1].shape == [1, 16, 16, 3]
    assert sig.preprocessing.known and sig.preprocessing.mean == [127.5] * 3
    assert signature.check(sig, 16) == []
    (msg,) = signature.check(sig, 32)
    assert "16x16" in msg and "model.input_size=16" in msg
    # pipeline batch: NCHW, normalised with mean=std=0.5 -> pixel p maps to (p - 127.5) / 127.5 in NHWC
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(path))
    outs = [sess.run(None, {"image": b})[0] for b in signature.batches(signature.adapt(x, sig), sig)]
    np.testing.assert_allclose(np.concatenate(outs), x.mean((2, 3)), atol=1e-5)


def test_ambiguous_layout_needs_override():
    sig = Signature([TensorSpec("x", [1, 3, 5, 3])], [])
    assert sig.layout is None and signature.infer_layout([1, 3, 5, 3]) is None
    (msg,) = signature.check(sig)
    assert "model.signature.layout=NHWC" in msg
    sig = signature.apply_overrides(sig, {"layout": "NCHW", "channel_order": "BGR", "mean": 0.0, "std": 1.0})
    assert sig.layout == "NCHW" and sig.preprocessing.channel_order == "BGR" and sig.preprocessing.std == [1.0] * 3
    with pytest.raises(ValueError, match="unknown key"):
        signature.apply_overrides(sig, {"layuot": "NCHW"})


def test_adapt_bgr_gray_and_uint8_pixels():
    x = np.full((1, 3, 2, 2), -1.0, np.float32)  # pixel 0 with the data's mean = std = 0.5
    x[:, 0] = 1.0  # red = 255
    bgr = Signature([TensorSpec("x", [1, 3, 2, 2])], [], "NCHW", Preprocessing(255.0, [0] * 3, [1] * 3, "BGR", True))
    np.testing.assert_allclose(signature.adapt(x, bgr)[0, :, 0, 0], [0, 0, 1], atol=1e-6)  # R, G, B = 1, 0, 0 -> B, G, R
    pixels = Signature([TensorSpec("x", [1, 2, 2, 1], "uint8")], [], "NHWC")
    out = signature.adapt(x, pixels)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 1)
    assert int(out[0, 0, 0, 0]) == round((255 + 0 + 0) / 3)


def test_keras_custom_layer_and_rescaling_signature(tmp_path):
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="sigtest")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((20, 20, 3), name="pixels")
    y = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    y = Doubler()(keras.layers.Conv2D(4, 3)(y))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(y))
    path = tmp_path / "m.keras"
    model.save(path)
    sig = signature.read("keras", path)
    assert sig.layout == "NHWC" and sig.input_size == (20, 20) and sig.input.name == "pixels"
    assert sig.preprocessing.known
    assert sig.preprocessing.scale == pytest.approx(127.5) and sig.preprocessing.mean == [1.0] * 3
