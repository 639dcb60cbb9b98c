"""data=fashion_mnist: Debian's IDX files, the data set's own train/test split, seeded per-class caps, bad input named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import compose_cfg
from pipeline import data as data_mod

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file(),
                                reason="dataset-fashion-mnist is not installed (make system-deps)")


def test_caps_split_and_classes():
    cfg = compose_cfg(["data=fashion_mnist", "data.max_per_class=7", "data.val_images=30", "model.input_size=32"])
    assert data_mod.check(cfg.data) == [] and data_mod.split_sizes(cfg.data) == (70, 30)
    assert data_mod.num_classes(cfg.data) == 10
    d = data_mod.load(cfg.data, 32)
    assert d.train_x.shape == (70, 3, 32, 32) and d.val_x.shape == (30, 3, 32, 32) and d.train_x.dtype == np.float32
    assert np.bincount(d.train_y, minlength=10).tolist() == [7] * 10
    assert np.bincount(d.val_y, minlength=10).tolist() == [3] * 10
    assert d.classes[0] == "t-shirt/top" and d.meta["source"].endswith("fashion-mnist")
    again = data_mod.load(cfg.data, 32)  # seeded: the same images
    assert np.array_equal(again.train_x, d.train_x)
    other = compose_cfg(["data=fashion_mnist", "data.max_per_class=7", "data.val_images=30", "data.seed=1"])
    assert data_mod.fingerprint(other.data, 32) != data_mod.fingerprint(cfg.data, 32)


@pytest.mark.bad_input
def test_missing_files_and_impossible_caps_are_named(tmp_path):
    cfg = compose_cfg(["data=fashion_mnist", f"data.path={tmp_path}", "data.max_per_class=7000", "data.val_images=5"])
    problems = data_mod.check(cfg.data)
    assert any("dataset-fashion-mnist" in p and "train-images-idx3-ubyte.gz" in p for p in problems)
    assert any(p.startswith("data.max_per_class") for p in problems)
    assert any(p.startswith("data.val_images") for p in problems)
