"""A stage result reused from another recipe's cache entry carries this recipe's stage name (found when
`export_base` of mobilenet_pruned_int8 reused the `export` of mobilenet_qat_int8 and was reported under that name)."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose_cfg


@pytest.mark.slow
def test_reused_artifact_takes_this_recipes_stage_name(tmp_path):
    from pipeline.app import run

    out = tmp_path / "outputs"
    first = compose_cfg(["recipe=tiny_int8", "tracking=none", "model.input_size=16", "stages.train.epochs=1",
                         "stages.train.threads=1"], out)
    first.stages = OmegaConf.create({k: v for k, v in first.stages.items() if k in ("train", "export")})
    run(first)
    second = compose_cfg(["recipe=tiny_int8", "tracking=none", "model.input_size=16", "stages.train.epochs=1",
                          "stages.train.threads=1"], out)
    second.stages = OmegaConf.create({"train": second.stages.train,
                                      "export_base": {"type": "export_onnx", "inputs": ["train"]},
                                      "evaluate": {"type": "evaluate"}})
    s = run(second).to_dict()
    assert {st["name"]: st["status"] for st in s["stages"]}["export_base"] == "reused"
    row = next(a for a in s["artifacts"] if a["name"] == "export_base")
    assert row["accuracy"] is not None  # evaluate[export_base] reported under the right name
