"""Labelled data checked at plan time, every problem listed at once (the first 20 and a count), before anything is
written: COCO boxes that are negative, empty or outside their image, unknown category ids, missing files; YOLO label
syntax, class ranges and boxes; masks of the wrong size, mode or classes. The files are made here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rel_helpers import assert_nothing_written, compose_stub

pytestmark = pytest.mark.bad_input


def _png(path: Path, size=(40, 30), mode="RGB", value=128) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def _refused(tmp_path: Path, recipe: str, *data: str) -> str:
    """Plan the real recipe on this data: refused (exit 2) before anything is written; returns the message."""
    from pipeline import app
    from pipeline.core.errors import ConfigError

    outputs = tmp_path / "outputs"
    with pytest.raises(ConfigError) as e:  # (app.run plans first, with the same call)
        app.prepare(compose_stub(outputs, f"recipe={recipe}", "tracking=local", *data))
    assert e.value.exit_code == 2
    assert_nothing_written(outputs)
    return str(e.value)


def _coco(tmp_path: Path, annotations: list[dict], images=4, extra_images=()) -> tuple[Path, Path]:
    img = tmp_path / "img"
    for i in range(images):
        _png(img / f"{i}.png")
    doc = {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 30} for i in range(images)]
           + list(extra_images),
           "annotations": annotations, "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    return img, tmp_path / "ann.json"


def test_coco_bad_boxes_unknown_categories_and_missing_files_all_at_once(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 3, -20, 15]},  # negative width
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [30, 20, 20, 15]},  # past the 40x30 image
            {"id": 3, "image_id": 3, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
            {"id": 4, "image_id": 4, "category_id": 7, "bbox": [1, 1, 0, 5]},  # zero area
            {"id": 5, "image_id": 42, "category_id": 7, "bbox": [1, 1, 5, 5]},  # unknown image
            {"id": 6, "image_id": 1, "category_id": 7, "bbox": [1, "x", 5, 5]},  # not numbers
            {"id": 7, "image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1}]  # crowd: skipped
    img, ann = _coco(tmp_path, anns, extra_images=[{"id": 5, "file_name": "gone.png", "width": 40, "height": 30},
                                                   {"id": 6, "file_name": "../escape.png"}])
    msg = _refused(tmp_path, "detector_int8", "data=coco", f"data.path={img}", f"data.annotations={ann}")
    assert "8 problem(s)" in msg, msg
    for expected in ("annotation 1 (image '0.png'): box [4, 3, -20, 15] has a negative width",
                     "annotation 2 (image '1.png'): box [30, 20, 20, 15] lies outside the 40x30 image",
                     "annotation 3 (image '2.png'): unknown category_id 99 (categories: 7, 9)",
                     "annotation 4 (image '3.png'): box [1, 1, 0, 5] has zero area",
                     "annotation 5: image_id 42 is not in 'images'",
                     "annotation 6 (image '0.png'): bbox [1, 'x', 5, 5] is not 4 finite numbers",
                     "image 'gone.png' (id 5): missing file",
                     "image '../escape.png': file_name must be a relative path inside data.path"):
        assert expected in msg, (expected, msg)
    assert "Fix these entries of the annotation file" in msg and "KeyError" not in msg


def test_coco_many_problems_are_counted(tmp_path):
    anns = [{"id": i, "image_id": 1, "category_id": 7, "bbox": [0, 0, -1, 1]} for i in range(30)]
    img, ann = _coco(tmp_path, anns)
    msg = _refused(tmp_path, "detector_int8", "data=coco", f"data.path={img}", f"data.annotations={ann}")
    assert "30 problem(s)" in msg and "... and 10 more" in msg
    assert msg.count("has a negative width") == 20


def test_coco_image_size_disagreeing_with_the_file(tmp_path):
    img, ann = _coco(tmp_path, [], extra_images=[])
    doc = json.loads(ann.read_text())
    doc["images"][0]["width"] = 400
    ann.write_text(json.dumps(doc))
    msg = _refused(tmp_path, "detector_int8", "data=coco", f"data.path={img}", f"data.annotations={ann}")
    assert "the annotations say 400x30 but the file is 40x30" in msg


def test_coco_unreadable_image_header(tmp_path):
    img, ann = _coco(tmp_path, [])
    (img / "1.png").write_bytes(b"not a png at all")
    msg = _refused(tmp_path, "detector_int8", "data=coco", f"data.path={img}", f"data.annotations={ann}")
    assert "image '1.png': not an image Pillow can read" in msg


def test_yolo_label_syntax_class_range_boxes_and_orphans(tmp_path):
    root = tmp_path / "yolo"
    for i in range(3):
        _png(root / "images" / f"{i}.png", size=(50, 50))
    (root / "labels").mkdir()
    (root / "labels" / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n0 0.5 0.5\n")
    (root / "labels" / "1.txt").write_text("1 0.9 0.5 0.4 0.2\nx 0.5 0.5 0.1 0.1\n0 0.5 0.5 -0.1 0.2\n")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    msg = _refused(tmp_path, "detector_int8", "data=yolo", f"data.path={root}", "data.classes=[a,b]")
    for expected in ("labels/0.txt:2: class 5 is out of range for the 2 classes",
                     "labels/0.txt:3: expected 5 fields 'class cx cy w h', got 3",
                     "labels/1.txt:1: lies outside the 50x50 image",
                     "labels/1.txt:2: expected an integer class and 4 numbers",
                     "labels/1.txt:3: has a negative width",
                     "labels/orphan.txt: no image images/orphan.*"):
        assert expected in msg, (expected, msg)
    assert "6 problem(s)" in msg


def test_masks_size_mode_classes_and_missing_masks(tmp_path):
    root = tmp_path / "seg"
    for i in range(4):
        _png(root / "images" / f"{i}.png", size=(32, 32))
    _png(root / "masks" / "0.png", size=(32, 32), mode="L", value=1)  # fine
    _png(root / "masks" / "1.png", size=(16, 16), mode="L", value=1)  # wrong size
    _png(root / "masks" / "2.png", size=(32, 32), mode="L", value=7)  # class 7 of 3
    _png(root / "masks" / "extra.png", size=(32, 32), mode="L", value=0)  # no image
    _png(root / "masks" / "rgb.png", size=(32, 32), mode="RGB")  # no image either
    _png(root / "images" / "rgb.png", size=(32, 32))
    _png(root / "masks" / "rgb.png", size=(32, 32), mode="RGB")  # an RGB mask
    msg = _refused(tmp_path, "segmenter_int8", "data=masks", f"data.path={root}", "data.classes=[bg,a,b]")
    for expected in ("masks/1.png: 16x16, but its image is 32x32",
                     "masks/2.png: values [7] are not classes 0..2 of data.classes (or 255 = ignore)",
                     "images/3.png: no mask masks/3.png",
                     "masks/extra.png: no image images/extra.* for it",
                     "masks/rgb.png: a RGB image; a mask holds one class index per pixel"):
        assert expected in msg, (expected, msg)


def test_good_label_sets_pass(tmp_path):
    from omegaconf import OmegaConf

    from pipeline.data import detection

    img, ann = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 40, 30]},
                                {"id": 2, "image_id": 2, "category_id": 9, "bbox": [39.5, 29.5, 1, 1]}])
    cfg = OmegaConf.load("conf/data/coco.yaml")
    cfg.merge_with({"path": str(img), "annotations": str(ann)})
    assert detection.check(cfg) == []


def test_coco_with_ids_of_the_wrong_type_is_refused_not_crashed(tmp_path):
    img, ann = _coco(tmp_path, [{"id": [1], "image_id": [1], "category_id": {"x": 1}, "bbox": [0, 0, 1, 1]},
                                {"id": 2, "image_id": 1, "category_id": [7], "bbox": [0, 0, 1, 1]}],
                     extra_images=[{"id": [9], "file_name": "0.png"}])
    msg = _refused(tmp_path, "detector_int8", "data=coco", f"data.path={img}", f"data.annotations={ann}")
    assert "annotation #0: image_id [1] is not in 'images'" in msg
    assert "annotation 2 (image '0.png'): unknown category_id [7]" in msg
    assert "needs an 'id' (a number) and a 'file_name'" in msg


@pytest.mark.parametrize("text", ["[1, 2]", "{\"images\": 3}", "not json", ""])
def test_coco_file_that_is_not_an_instances_file(tmp_path, text):
    img, ann = _coco(tmp_path, [])
    ann.write_text(text)
    msg = _refused(tmp_path, "detector_int8", "data=coco", f"data.path={img}", f"data.annotations={ann}")
    assert "ann.json" in msg and ("not readable as JSON" in msg or "needs the lists" in msg), msg
