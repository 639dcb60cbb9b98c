"""prune, fuse, distill and qat on a tiny MobileNetV2 (16x16 digits, 1 thread), through the real runner and runtimes.

One pipeline run serves every test of the module (module-scoped fixture), so the teacher is trained once.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_cfg

pytestmark = pytest.mark.slow  # one shared pipeline run trains five small models: minutes on 2 busy cores

ONE_THREAD = {"threads": 1, "batch_size": 64}


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    from pipeline.app import run

    out = tmp_path_factory.mktemp("compress") / "outputs"
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16",
                       "model.width_mult=0.5"], out)
    cfg.stages = OmegaConf.create({
        "train": {"type": "train", "epochs": 3, "lr": 0.01, **ONE_THREAD},
        "prune": {"type": "prune", "inputs": ["train"], "amount": 0.5, "epochs": 1, **ONE_THREAD},
        "gradual": {"type": "prune", "inputs": ["train"], "method": "unstructured", "schedule": "gradual",
                    "amount": 0.6, "epochs": 2, **ONE_THREAD},
        "fuse": {"type": "fuse", "inputs": ["prune"], "latency_iterations": 5},
        "distill": {"type": "distill", "inputs": ["train"], "student": "mobilenet_v3_small",
                    "student_width_mult": 0.5, "epochs": 1, **ONE_THREAD},
        "qat": {"type": "qat", "inputs": ["fuse"], "epochs": 1, **ONE_THREAD},
        "qat_tflite": {"type": "qat", "inputs": ["train"], "format": "tflite", "epochs": 1, **ONE_THREAD},
        "export": {"type": "export_onnx", "inputs": ["prune"]},
        # every model but the TFLite one, which the qat stage checks in LiteRT itself
        "evaluate": {"type": "evaluate", "inputs": ["train", "prune", "gradual", "fuse", "distill", "qat", "export"]},
    })
    return run(cfg).to_dict()


def _stage(summary, name):
    return next(s for s in summary["stages"] if s["name"] == name)


def _artifact(summary, name):
    return next(a for a in summary["artifacts"] if a["name"] == name)


def test_structured_pruning_shrinks_the_network(summary):
    m = _stage(summary, "prune")["metrics"]
    assert m["parameters_after"] < 0.6 * m["parameters_before"]
    assert m["macs_after"] < 0.6 * m["macs_before"]
    assert m["file_bytes_after"] < 0.6 * m["file_bytes_before"]
    for k in ("accuracy_before", "accuracy_pruned", "accuracy_after", "sparsity", "gzip_bytes_after"):
        assert k in m
    a = _artifact(summary, "prune")
    spec = json.loads((Path(summary["run_dir"]) / a["path"]).with_name("model.json").read_text())
    assert spec["resized"]  # the pruned widths: the zoo rebuilds the network without unpickling
    # the pruned model runs in ONNX Runtime with the same top-1 as in PyTorch
    assert _artifact(summary, "export")["accuracy"] == pytest.approx(a["accuracy"], abs=0.01)


def test_unstructured_pruning_zeroes_but_does_not_shrink(summary):
    m = _stage(summary, "gradual")["metrics"]
    assert m["sparsity"] == pytest.approx(0.6, abs=0.03)
    assert m["parameters_after"] == m["parameters_before"]
    assert m["file_bytes_after"] == pytest.approx(m["file_bytes_before"], rel=0.01)
    assert m["gzip_bytes_after"] < 0.9 * m["gzip_bytes_before"]
    row = _artifact(summary, "gradual")
    assert any("no size or latency gain" in n for n in row["notes"]), row["notes"]


def test_fuse_folds_batchnorm_within_tolerance(summary):
    m = _stage(summary, "fuse")["metrics"]
    assert m["folded_batchnorms"] > 10 and m["max_abs_diff"] <= 1e-4
    assert m["fused_p50_ms"] > 0 and m["unfused_p50_ms"] > 0
    assert _artifact(summary, "fuse")["accuracy"] == pytest.approx(_artifact(summary, "prune")["accuracy"], abs=0.005)


def test_distill_reports_teacher_scratch_and_distilled(summary):
    m = _stage(summary, "distill")["metrics"]
    for k in ("teacher_accuracy", "scratch_accuracy", "distilled_accuracy", "distillation_gain_points"):
        assert k in m
    assert m["student_parameters"] < m["teacher_parameters"]
    a = _artifact(summary, "distill")
    assert (a["format"], a["precision"]) == ("torch", "fp32") and a["accuracy"] == pytest.approx(
        m["distilled_accuracy"])


def test_qat_exports_int8_qdq_onnx(summary, tmp_path):
    import collections

    import onnx
    import onnxruntime as ort

    a = _artifact(summary, "qat")
    assert (a["format"], a["precision"]) == ("onnx", "int8")
    path = Path(summary["run_dir"]) / a["path"]
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops)
    # ONNX Runtime turns every convolution into an integer one: none is left in float between Q/DQ pairs (ReLU6 and
    # residual branches used to keep a fifth of them in float, slower than the fp32 model)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    fused = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    assert fused["QLinearConv"] == ops["Conv"] and fused["Conv"] == 0 and fused["Clip"] == 0, fused
    m = _stage(summary, "qat")["metrics"]
    # a 16-px model after one QAT epoch has near-tied logits: its ONNX export agreed on 0.625 of the images in one
    # full-suite run and above 0.75 alone; far above chance (0.1) is what this checks, not a deployable agreement
    assert m["export_top1_agreement"] >= 0.5
    assert a["accuracy"] is not None


@pytest.mark.bad_input
def test_bad_compression_parameters_are_refused_before_running(tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.core.plan import build_plan

    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none"], tmp_path / "out")
    cfg.stages.prune = {"type": "prune", "inputs": ["train"], "amount": 1.5, "method": "random"}
    cfg.stages.qat = {"type": "qat", "inputs": ["export"]}
    with pytest.raises(ConfigError) as e:
        build_plan(cfg)
    text = str(e.value)
    assert "stages.prune.amount: must be a finite number in [0, 1), got 1.5" in text and "stages.prune.method: must be one of structured, unstructured, got 'random'" in text
    assert "stages.qat: stage type 'qat' takes torch models, but input 'export' produces a onnx model" in text
    assert not (tmp_path / "out").exists()


def test_qat_exports_int8_tflite(summary):
    from ai_edge_litert.interpreter import Interpreter

    a = _artifact(summary, "qat_tflite")
    assert (a["format"], a["precision"]) == ("tflite", "int8")
    it = Interpreter(model_path=str(Path(summary["run_dir"]) / a["path"]))
    assert it.get_input_details()[0]["dtype"].__name__ == "int8"  # full-integer model, int8 in and out
    m = _stage(summary, "qat_tflite")["metrics"]
    assert m["export_top1_agreement"] >= 0.75  # LiteRT agrees with the int8 PyTorch graph it came from
