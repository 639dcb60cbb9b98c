"""Detection data: boxes per image, in three layouts.

  digits_detection  offline default: scikit-learn's digits composed on canvases (pipeline.data.composed)
  coco              COCO JSON: data.path = image folder, data.annotations = the instances JSON (pycocotools reads it)
  yolo              YOLO txt: data.path/images/*.jpg and data.path/labels/*.txt, one "class cx cy w h" line per box
                    (normalised to the image), class names in data.classes or data.path/classes.txt

Images meet the model's input size (model.input_size: a side or [H, W]) by letterbox (aspect kept, padded grey: what
detectors are trained on; data.resize=stretch to stretch them instead) and the boxes are scaled and shifted with them;
boxes are x1 y1 x2 y2 in input pixels, and the dataset's meta keeps each image's (scale, pad_x, pad_y) to map boxes
back to the original image (pipeline.data._common.unletterbox).
A seeded share (data.val_fraction) of the images is held out for validation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.checks import coco as check_coco, listing, yolo as check_yolo
from pipeline.data._common import (Dataset, check_norm, expand, fingerprint_files, images_under, norm_of, normalize,
                                   read_rgb, refuse, seeded_split, settings_of)

NAMES = ("digits_detection", "coco", "yolo")


@dataclass
class DetectionDataset(Dataset):
    """float32 NCHW images; labels per image as {"boxes": float32 [k, 4] x1y1x2y2 pixels, "labels": int64 [k]}."""

    task: str = "detection"


def _yolo_classes(data_cfg: Any, root: Path) -> list[str] | None:
    if data_cfg.get("classes"):
        return [str(c) for c in data_cfg.classes]
    f = root / "classes.txt"
    return [l.strip() for l in f.read_text().splitlines() if l.strip()] if f.is_file() else None


def check(data_cfg: Any) -> list[str]:
    """Problems with a detection data config, each naming the fix; cheap (parses the annotations and reads image
    headers, decodes no pixels): every bad box, unknown category, missing file and bad label line at once."""
    from pipeline.data.composed import check_composed

    if data_cfg.name not in NAMES:
        return [f"data.name: {data_cfg.name!r} is not a detection data set; choose one of {', '.join(NAMES)}"]
    problems = check_norm(data_cfg)
    if data_cfg.get("resize") not in (None, "letterbox", "stretch"):
        problems.append(f"data.resize: letterbox or stretch, got {data_cfg.resize!r}")
    if data_cfg.name == "digits_detection":
        return problems + check_composed(data_cfg)
    if not 0.0 < float(data_cfg.val_fraction) < 1.0:
        problems.append(f"data.val_fraction: must be between 0 and 1 (exclusive), got {data_cfg.val_fraction}")
    if not data_cfg.get("path"):
        return problems + [f"data.path: data={data_cfg.name} needs the image folder: add data.path=DIR"]
    root = expand(data_cfg.path)
    if data_cfg.name == "coco":
        if not root.is_dir():
            return problems + [f"data.path: {str(root)!r} is not a folder; give the folder of the COCO images"]
        ann = data_cfg.get("annotations")
        if not ann or not expand(ann).is_file():
            return problems + [f"data.annotations: {ann!r} is not a file; give the COCO instances JSON "
                               f"(data.annotations=PATH/instances_val.json)"]
        found, _ = check_coco(root, expand(ann))
        return problems + listing(
            f"data.annotations: {str(expand(ann))!r} (images in {str(root)!r})", found,
            "Fix these entries of the annotation file (or the images), then re-run: nothing ran.")
    images, labels = root / "images", root / "labels"
    if not images.is_dir() or not labels.is_dir():
        return problems + [f"data.path: {str(root)!r} needs images/ and labels/ sub-folders (YOLO layout: "
                           f"images/NAME.jpg with labels/NAME.txt)"]
    files = images_under(images)
    if not files:
        return problems + [f"data.path: {str(images)!r} holds no images"]
    names = _yolo_classes(data_cfg, root)
    if names is None:
        return problems + [f"data.classes: YOLO labels hold class numbers only; give the names in "
                           f"data.classes=[a,b,...] or in {str(root / 'classes.txt')!r}, one per line"]
    return problems + listing(
        f"data.path: the YOLO set {str(root)!r}", check_yolo(root, len(names), files),
        "Fix these label lines or files (class cx cy w h, normalised to 0-1, class < the number of data.classes), "
        "then re-run: nothing ran.")


def fingerprint(data_cfg: Any, input_size: int) -> str:
    s = settings_of(data_cfg, input_size)
    if data_cfg.name == "digits_detection":
        return fingerprint_files(s, [], bundled=True)
    root = expand(data_cfg.path)
    if data_cfg.name == "coco":
        return fingerprint_files(s, [expand(data_cfg.annotations), *images_under(root, recursive=True)], None)
    return fingerprint_files(s, images_under(root, recursive=True) + sorted((root / "labels").glob("*.txt")), root)


def _placed(boxes: np.ndarray, wh: tuple[int, int], size, resize: str) -> tuple[np.ndarray, list[float]]:
    """Boxes in the original image's pixels -> input pixels, as the image was resized; and (scale, pad_x, pad_y)
    mapping them back."""
    from pipeline.data._common import letterbox_params
    from pipeline.data.size import hw

    h, w = hw(size)
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if resize == "letterbox":
        s, px, py = letterbox_params(wh, size)
        out = b * s + np.array([px, py, px, py], np.float32)
        params = [s, px, py]
    else:
        sx, sy = w / wh[0], h / wh[1]
        out = b * np.array([sx, sy, sx, sy], np.float32)
        params = [sx, 0.0, 0.0] if abs(sx - sy) < 1e-9 else [sx, 0.0, 0.0, sy]
    return out.clip(0, [w, h, w, h]).astype(np.float32), params


def read_coco(images_dir: Path, annotations: Path, size, resize: str = "letterbox") -> tuple[np.ndarray, list, list[str], list]:
    """Every annotated image of a COCO instances file (crowd boxes skipped), resized, with its boxes."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(annotations))
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(f"cannot read COCO annotations {annotations}: {e}; give an instances JSON with images, "
                         f"annotations and categories") from e
    cat_ids = sorted(coco.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    classes = [coco.loadCats(c)[0]["name"] for c in cat_ids]
    xs, ys, placed = [], [], []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        path = images_dir / info["file_name"]
        if not path.is_file():
            raise ValueError(f"COCO image {info['file_name']!r} (id {img_id}) is not in {images_dir}: give data.path "
                             f"= the folder the annotation file's file_name entries are relative to")
        x, wh = read_rgb(path, size, resize)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)) if not a.get("iscrowd", 0)]
        b = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in anns], np.float32).reshape(-1, 4)
        xs.append(x)
        boxes, params = _placed(b, wh, size, resize)
        placed.append(params)
        ys.append({"boxes": boxes, "labels": np.array([index[a["category_id"]] for a in anns], np.int64)})
    if not xs:
        raise ValueError(f"COCO annotations {annotations} list no images")
    return np.stack(xs), ys, classes, placed


def read_yolo(root: Path, classes: list[str], size, resize: str = "letterbox") -> tuple[np.ndarray, list, list]:
    """images/NAME.* with labels/NAME.txt ("class cx cy w h", normalised); an image without a label file has no box."""
    xs, ys, placed = [], [], []
    for path in images_under(root / "images"):
        x, (W, H) = read_rgb(path, size, resize)
        rows = []
        lf = root / "labels" / (path.stem + ".txt")
        if lf.is_file():
            for n, line in enumerate(lf.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    c, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
                except (ValueError, IndexError):
                    raise ValueError(f"{lf}:{n}: expected 'class cx cy w h' (numbers), got {line!r}") from None
                if not 0 <= c < len(classes):
                    raise ValueError(f"{lf}:{n}: class {c} is out of range for the {len(classes)} classes "
                                     f"{classes}; fix the label or data.classes")
                rows.append((c, (cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H))
        r = np.array(rows, np.float32).reshape(-1, 5)
        boxes, params = _placed(r[:, 1:], (W, H), size, resize)
        xs.append(x)
        placed.append(params)
        ys.append({"boxes": boxes, "labels": r[:, 0].astype(np.int64)})
    return np.stack(xs), ys, placed


def load(data_cfg: Any, input_size: int) -> DetectionDataset:
    """Images resized to input_size (square), normalised with data.mean/std; boxes in input pixels."""
    refuse(check(data_cfg))
    if data_cfg.name == "digits_detection":
        from pipeline.data.composed import DIGIT_CLASSES, normalised_split

        tr_x, tr, va_x, va, meta = normalised_split(data_cfg, input_size)
        return DetectionDataset(tr_x, [{"boxes": b, "labels": l} for b, l in zip(tr.boxes, tr.labels)],
                                va_x, [{"boxes": b, "labels": l} for b, l in zip(va.boxes, va.labels)],
                                list(DIGIT_CLASSES), meta=meta)
    root = expand(data_cfg.path)
    resize = data_cfg.get("resize") or "letterbox"
    if data_cfg.name == "coco":
        x, y, classes, placed = read_coco(root, expand(data_cfg.annotations), input_size, resize)
    else:
        classes = _yolo_classes(data_cfg, root)
        x, y, placed = read_yolo(root, classes, input_size, resize)
    tr, va = seeded_split(len(x), float(data_cfg.val_fraction), int(data_cfg.seed))
    x = normalize(x, data_cfg)
    return DetectionDataset(x[tr], [y[i] for i in tr], x[va], [y[i] for i in va], classes,
                            meta={"name": data_cfg.name, "input_size": input_size, **norm_of(data_cfg), "train": len(tr),
                                  "val": len(va), "resize": resize, "placement": {"train": [placed[i] for i in tr],
                                                                                "val": [placed[i] for i in va]}})
