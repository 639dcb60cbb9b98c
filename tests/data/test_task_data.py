"""Task data sets: the composed-digits defaults and the layouts users bring (files the tests write themselves)."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline import tasks
from pipeline.data import detection, segmentation, unlabelled

CONF = "conf/data"


def _cfg(name, **over):
    cfg = OmegaConf.load(f"{CONF}/{name}.yaml")
    cfg.merge_with(over)
    return cfg


def test_digits_detection_boxes_cover_the_ink():
    cfg = _cfg("digits_detection", train_images=20, val_images=8)
    assert detection.check(cfg) == []
    d = detection.load(cfg, 64)
    assert d.train_x.shape == (20, 3, 64, 64) and len(d.val_y) == 8 and d.num_classes == 10
    for x, t in zip(d.train_x, d.train_y):
        assert 1 <= len(t["labels"]) <= 3 and t["boxes"].shape[1] == 4
        raw = x[0] * 0.5 + 0.5  # undo mean=std=0.5
        for x1, y1, x2, y2 in t["boxes"].astype(int):
            assert raw[y1:y2, x1:x2].max() > 0.5  # ink inside every box
    assert detection.fingerprint(cfg, 64) == detection.fingerprint(cfg, 64) != detection.fingerprint(cfg, 96)
    # seeded: the same canvases again
    np.testing.assert_array_equal(detection.load(cfg, 64).val_x, d.val_x)


def test_digits_segmentation_masks_match_classes():
    d = segmentation.load(_cfg("digits_segmentation", train_images=10, val_images=4), 48)
    assert d.train_y.shape == (10, 48, 48) and d.classes[0] == "background" and d.num_classes == 11
    assert 0 < (d.train_y > 0).mean() < 0.5 and d.train_y.max() <= 10


def _png(path, size=(40, 30), mode="RGB", value=128):
    from PIL import Image

    Image.new(mode, size, value).save(path)


def test_coco_json_layout(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png")
    ann = {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 30} for i in range(4)],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 3, 20, 15], "area": 300, "iscrowd": 0},
                           {"id": 2, "image_id": 2, "category_id": 9, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 0},
                           {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1}],
           "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    cfg = _cfg("coco", path=str(tmp_path / "img"), annotations=str(tmp_path / "ann.json"), val_fraction=0.25)
    assert detection.check(cfg) == []
    d = detection.load(cfg, 80)
    assert d.classes == ["cat", "dog"] and len(d.train_x) + len(d.val_x) == 4
    cats = [t["boxes"][0] for t in d.train_y + d.val_y if t["labels"].tolist() == [0]]
    # letterboxed (the default): 40x30 -> 80x60 placed 10 px down in 80x80, so [4, 3, 24, 18] -> [8, 16, 48, 46]
    np.testing.assert_allclose(cats[0], [8, 16, 48, 46], rtol=1e-5)
    assert d.meta["resize"] == "letterbox" and len(d.meta["placement"]["val"]) == len(d.val_x)
    d = detection.load(_cfg("coco", path=str(tmp_path / "img"), annotations=str(tmp_path / "ann.json"),
                            val_fraction=0.25, resize="stretch"), 80)
    cats = [t["boxes"][0] for t in d.train_y + d.val_y if t["labels"].tolist() == [0]]
    np.testing.assert_allclose(cats[0], [8, 8, 48, 48], rtol=1e-5)  # stretched: [4, 3, 24, 18] in 40x30 -> 80x80 px
    assert sorted(len(t["labels"]) for t in d.train_y + d.val_y) == [0, 0, 1, 1]  # the crowd box is skipped
    (msg,) = detection.check(_cfg("coco", path=str(tmp_path / "img"), annotations=str(tmp_path / "nope.json")))
    assert "data.annotations" in msg


def test_yolo_txt_layout_and_bad_class(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(3):
        _png(tmp_path / "images" / f"{i}.png", (64, 64))
        (tmp_path / "labels" / f"{i}.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    cfg = _cfg("yolo", path=str(tmp_path))
    (msg,) = detection.check(cfg)
    assert "data.classes" in msg
    cfg = _cfg("yolo", path=str(tmp_path), classes=["a", "b"])
    d = detection.load(cfg, 32)
    np.testing.assert_allclose(d.train_y[0]["boxes"][0], [12, 8, 20, 24])
    (tmp_path / "labels" / "0.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match="class 5 is out of range"):
        detection.load(cfg, 32)


def test_mask_folder_layout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        _png(tmp_path / "images" / f"{i}.jpg", (20, 20))
        _png(tmp_path / "masks" / f"{i}.png", (20, 20), "L", i % 2)
    cfg = _cfg("masks", path=str(tmp_path), classes=["background", "thing"])
    d = segmentation.load(cfg, 16)
    assert d.train_y.shape[1:] == (16, 16) and set(np.unique(np.concatenate([d.train_y, d.val_y]))) == {0, 1}
    _png(tmp_path / "masks" / "0.png", (20, 20), "L", 9)
    with pytest.raises(ValueError, match=r"values \[9\]"):
        segmentation.load(cfg, 16)
    (tmp_path / "masks" / "1.png").unlink()
    assert any("no mask" in p for p in segmentation.check(cfg))


def test_plain_image_folder_for_task_none(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i in range(5):
        _png(tmp_path / "a" / "b" / f"{i}.png", (10, 12))
    d = unlabelled.load(_cfg("images", path=str(tmp_path)), 8)
    assert d.train_x.shape[1:] == (3, 8, 8) and len(d.train_x) + len(d.val_x) == 5 and d.val_y is None
    assert tasks.data_module("images") is unlabelled
    assert "not a folder" in unlabelled.check(_cfg("images", path=str(tmp_path / "a" / "b" / "0.png")))[0]
