"""parity: each model against its source on the same images; a threshold fails the run naming the first stage along
the lineage whose model diverged (here a stage that damages the weights, with a faithful export after it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose_cfg
from pipeline import app
from pipeline.core.artifacts import Artifact
from pipeline.core.errors import StageError
from pipeline.stages.base import Stage, StageResult
from pipeline.stages.parity import ParityConfig, compare, violations


@dataclass
class DamageConfig:
    noise: float = 0.0  # gaussian noise added to every weight, in units of that tensor's standard deviation


class Damage(Stage):
    """A stand-in for a broken optimization stage: a real PyTorch model in, a damaged one out."""

    type = "test_damage"
    Config = DamageConfig
    accepts = ("torch",)
    produces = "torch"
    min_inputs = max_inputs = 1

    def run(self, ctx):
        import torch

        from pipeline.models import load_torch, save_torch

        model, spec = load_torch(ctx.input.path)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.add_(torch.randn(p.shape, generator=g) * p.std() * ctx.params.noise)
        path = save_torch(model, ctx.workdir, spec)
        return StageResult(Artifact(ctx.name, "torch", "fp32", path, ctx.input.meta))


def stages(noise: float) -> dict:
    return {"train": {"type": "train", "epochs": 1, "batch_size": 64},
            "damage": {"type": "test_damage", "inputs": ["train"], "noise": noise},
            "export": {"type": "export_onnx", "inputs": ["damage"]},
            "parity": {"type": "parity", "min_top1_agreement": 0.97, "samples": 128}}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("parity") / "outputs"


def cfg_for(outputs, noise):
    cfg = compose_cfg(["recipe=tiny_int8", "device=jetson_orin_nano", "tracking=none"], outputs)
    cfg.stages = OmegaConf.create(stages(noise))
    return cfg


@pytest.mark.slow
def test_faithful_chain_passes_and_reports_every_link(outputs):
    s = app.run(cfg_for(outputs, 0.0), stages=[Damage]).to_dict()
    rows = {a["name"]: a for a in s["artifacts"]}
    assert rows["train"]["parity"] == {"source": None}
    for name, source in (("damage", "train"), ("export", "damage")):
        p = rows[name]["parity"]
        assert p["source"] == source and p["ok"] and p["top1_agreement"] == 1.0 and p["cosine"] > 0.9999
        assert p["samples"] == 128 and "onnxruntime" in rows["export"]["parity"]["runtime"]


@pytest.mark.slow
def test_divergence_names_the_stage_that_broke_the_model(outputs):
    with pytest.raises(StageError) as e:
        app.run(cfg_for(outputs, 3.0), stages=[Damage])
    msg = str(e.value)
    assert "stage 'parity' (parity) failed" in msg
    assert "stage 'damage' (torch fp32) diverged from its source 'train'" in msg
    assert "min_top1_agreement 0.97" in msg and "Look at stage 'damage' first" in msg
    assert msg.index("'damage'") < msg.index("'export'") if "'export'" in msg else True  # blamed first: the cause


def test_task_default_applies_and_the_failed_row_is_never_ok(outputs):
    """No threshold in the recipe: classification's default top-1 agreement (0.97) still fails a broken model, and
    the summary row of that model carries the problem and is not ok (the run failed; summary.json says why)."""
    import json

    cfg = cfg_for(outputs, 3.0)
    cfg.stages.parity = OmegaConf.create({"type": "parity", "samples": 128})
    with pytest.raises(StageError) as e:
        app.run(cfg, stages=[Damage])
    assert "min_top1_agreement 0.97" in str(e.value)
    latest = max((outputs / "runs").rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    rows = {a["name"]: a for a in json.loads(latest.read_text())["artifacts"]}
    assert rows["damage"]["verdict"]["status"] == "fail" and rows["damage"]["parity"]["ok"] is False
    assert any("top-1 agreement" in p for p in rows["damage"]["verdict"]["problems"])
    assert rows["train"]["verdict"]["status"] == "pass"


def test_label_free_defaults_are_per_output_cosine_and_snr():
    from pipeline import tasks

    t = tasks.get("none")
    per_output = {"scores": {"cosine": 0.995, "snr_db": 7.9, "max_abs_error": 0.3}}
    bad = t.parity_problems({}, per_output)
    assert bad == ["output 'scores': SNR 7.9 dB < min_snr_db 20"]
    assert t.parity_problems({}, per_output, {"min_snr_db": 5.0}) == []  # a recipe may loosen it
    assert t.parity_problems({}, per_output, defaults=False) == []
    c = tasks.get("classification")
    assert c.parity_problems({"top1_agreement": 0.96}, {}) == ["top-1 agreement 0.9600 < min_top1_agreement 0.97"]
    assert c.parity_problems({"top1_agreement": 0.96}, {}, {"min_top1_agreement": 0.95}) == []


def test_compare_and_thresholds():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    m = compare(ref, ref * 2)
    assert m["top1_agreement"] == 1.0 and abs(m["cosine"] - 1) < 1e-12 and m["max_abs_error"] == 2.0
    m = compare(ref, ref[:, ::-1])
    assert m["top1_agreement"] == 0.0
    bad = violations(m, ParityConfig(min_top1_agreement=0.97, min_cosine=0.99, max_abs_error=0.5))
    assert len(bad) == 3 and bad[0].startswith("top-1 agreement 0.0000 < min_top1_agreement 0.97")
