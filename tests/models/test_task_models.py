"""The zoo's detector and segmenter: shapes, a loss that trains, ONNX export, full-integer int8 TFLite."""
import numpy as np
import pytest
import torch

from pipeline import tasks
from pipeline.models import ZOO, build


def _model(name, **kw):
    torch.manual_seed(0)
    return build(name, 10 if name.startswith("centernet") else 11, width_mult=0.25, dropout=0.0, **kw).eval()


def test_registered_and_output_shapes():
    assert ZOO["centernet_mobilenet_v2"].endswith(":CenterNetLite") and ZOO["lraspp_mobilenet_v3"].endswith(":LRASPP")
    heat, box = _model("centernet_mobilenet_v2")(torch.zeros(2, 3, 64, 64))
    assert heat.shape == (2, 10, 8, 8) and box.shape == (2, 4, 8, 8) and float(box.min()) >= 0
    assert _model("lraspp_mobilenet_v3")(torch.zeros(2, 3, 48, 48)).shape == (2, 11, 48, 48)
    assert _model("centernet_mobilenet_v2", backbone="mobilenet_v3_small")(torch.zeros(1, 3, 32, 32))[0].shape == (1, 10, 4, 4)
    with pytest.raises(ValueError, match="backbone 'resnet'"):
        _model("centernet_mobilenet_v2", backbone="resnet")


@pytest.mark.parametrize("name,task", [("centernet_mobilenet_v2", "detection"), ("lraspp_mobilenet_v3", "segmentation")])
def test_task_loss_decreases(name, task):
    from omegaconf import OmegaConf

    data_name = "digits_detection" if task == "detection" else "digits_segmentation"
    cfg = OmegaConf.load(f"conf/data/{data_name}.yaml")
    cfg.train_images, cfg.val_images = 16, 2
    data = tasks.data_module(data_name).load(cfg, 32)
    model = _model(name).train()
    t = tasks.get(task)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    idx = np.arange(16)
    losses = []
    for _ in range(8):
        loss = t.loss(model(torch.from_numpy(data.train_x)), t.take(data.train_y, idx), (32, 32))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name", ["centernet_mobilenet_v2", "lraspp_mobilenet_v3"])
@pytest.mark.slow
def test_onnx_export_matches_torch(name, tmp_path):
    import onnxruntime as ort

    model = _model(name)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    names = list(model.output_names)
    torch.onnx.export(model, (torch.from_numpy(x),), dynamo=True, input_names=["input"], output_names=names,
                      verbose=False).save(str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [o.name for o in sess.get_outputs()] == names
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    ref = ref if isinstance(ref, tuple) else (ref,)
    for got, want in zip(sess.run(None, {"input": x}), ref):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["centernet_mobilenet_v2", "lraspp_mobilenet_v3"])
def test_full_integer_tflite(name, tmp_path):
    from pipeline.convert import tflite_int8
    from pipeline.library.signature import read

    model = _model(name)
    rng = np.random.default_rng(0)
    facts = tflite_int8.convert(model, rng.standard_normal((1, 3, 32, 32)).astype(np.float32), tmp_path / "m.tflite",
                                rng.standard_normal((8, 3, 32, 32)).astype(np.float32))
    assert facts["integer_only"], facts["float_operators"]
    from pipeline.runtimes import tflite_rt

    sig = read("tflite", tmp_path / "m.tflite", {"tflite": tflite_rt.inspect(tmp_path / "m.tflite")})
    assert len(sig.outputs) == len(model.output_names) and sig.input.dtype == "int8"
