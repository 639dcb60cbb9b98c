"""Plan-time checks of labelled image sets (COCO JSON, YOLO txt, segmentation masks): every problem found at once,
before any work, each naming the file, the annotation and what is wrong.

Cheap: annotations are parsed (JSON, text) and images are read only as far as their headers (Pillow reads the size
without decoding pixels; pipeline.data.imagefolder.inspect checks that the file is whole). Masks are annotations: their
values are read, since that is the only way to see their classes. Results are remembered per file size and mtime
within the process, so that planning, the split sizes and the loader check once.

Written by hand: pycocotools reads a COCO file without checking it (a negative width becomes an inverted box, an unknown
category a KeyError at load time), and YOLO and mask folders have no reference checker.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

SHOWN = 20  # problems listed one per line; the rest are counted
EDGE_TOLERANCE_PX = 1.0  # a box may pass the image's edge by this much (rounding in exported annotations)
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit
_HEADERS: dict[tuple, tuple[str | None, tuple[int, int] | None]] = {}
_MASKS: dict[tuple, tuple[str | None, tuple[int, int] | None, list[int]]] = {}


def listing(what: str, problems: list[str], fix: str) -> list[str]:
    """One configuration problem listing the first SHOWN `problems` and how many more, then the fix; [] if none."""
    if not problems:
        return []
    more = f"\n    ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return [f"{what}: {len(problems)} problem(s):\n    " + "\n    ".join(problems[:SHOWN]) + more + f"\n  {fix}"]


def header(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str | None, tuple[int, int] | None]:
    """(why the image cannot be used or None, its (width, height) as stored)."""
    from PIL import Image

    from pipeline.data.imagefolder import inspect

    st = path.stat()
    k = (str(path), st.st_size, st.st_mtime_ns, max_pixels)
    if k not in _HEADERS:
        problem, size = inspect(path, max_pixels), None
        if problem is None:
            with Image.open(path) as im:
                size = im.size
        _HEADERS[k] = (problem, size)
    return _HEADERS[k]


def _inside(root: Path, rel: str) -> bool:
    if not rel or os.path.isabs(rel) or "\x00" in rel:
        return False
    base = os.path.normpath(str(root))
    full = os.path.normpath(os.path.join(base, rel))
    return full.startswith(base + os.sep)


def _id(v: Any) -> bool:
    """An id COCO files use: an integer or a string (a list or an object there is a broken file, not a key)."""
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _box_problem(x: float, y: float, w: float, h: float, size: tuple[int, int] | None) -> str | None:
    """What is wrong with an x, y, width, height box in pixels of an image of `size` (None: fine)."""
    if w < 0 or h < 0:
        return f"has a negative {'width' if w < 0 else 'height'} ({w:g} x {h:g})"
    if w == 0 or h == 0:
        return f"has zero area ({w:g} x {h:g})"
    if size is not None:
        W, H, t = size[0], size[1], EDGE_TOLERANCE_PX
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            return f"lies outside the {W}x{H} image (x {x:g} to {x + w:g}, y {y:g} to {y + h:g})"
    return None


# --- COCO ---------------------------------------------------------------------------------------------------------
_COCO: dict[tuple, tuple[list[str], int | None]] = {}


def coco(images_dir: Path, annotations: Path) -> tuple[list[str], int | None]:
    """(problems, number of categories) of a COCO instances file whose file_name entries are relative to
    `images_dir`. Crowd annotations are skipped, as the loader skips them."""
    try:
        st = annotations.stat()
    except OSError as e:
        return [f"{annotations}: unreadable ({e.strerror})"], None
    k = (str(annotations), st.st_size, st.st_mtime_ns, str(images_dir))
    if k not in _COCO:
        _COCO[k] = _coco(images_dir, annotations)
    return _COCO[k]


def _coco(images_dir: Path, annotations: Path) -> tuple[list[str], int | None]:
    try:
        doc = json.loads(annotations.read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        return [f"{annotations.name}: not readable as JSON ({(str(e).splitlines() or [type(e).__name__])[0][:200]})"], None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        return [f"{annotations.name}: needs the lists 'images', 'annotations' and 'categories' of a COCO instances "
                f"file"], None
    problems: list[str] = []
    cats: dict[Any, str] = {}
    for c in doc["categories"]:
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool):
            problems.append(f"category {c!r}: needs an integer 'id'")
        elif cid in cats:
            problems.append(f"category id {cid} is listed twice")
        else:
            cats[cid] = str(c.get("name", cid))
    if not cats:
        problems.append("'categories' is empty: name at least one category")
    images: dict[Any, tuple[str, tuple[int, int] | None]] = {}
    for im in doc["images"]:
        problems += _coco_image(im, images_dir, images)
    if len(images) < 2:
        problems.append(f"{len(images)} usable image(s); at least 2 are needed (one to train on, one to validate)")
    known = ", ".join(map(str, sorted(cats)[:20])) + (" ..." if len(cats) > 20 else "")
    for i, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict):
            problems.append(f"annotation #{i}: not an object")
            continue
        if a.get("iscrowd", 0):
            continue
        where = f"annotation {a['id'] if _id(a.get('id')) else '#' + str(i)}"
        if not _id(a.get("image_id")) or a["image_id"] not in images:
            problems.append(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
            continue
        name, size = images[a["image_id"]]
        where += f" (image {name!r})"
        if not _id(a.get("category_id")) or a["category_id"] not in cats:
            problems.append(f"{where}: unknown category_id {a.get('category_id')!r} (categories: {known})")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            problems.append(f"{where}: bbox {box!r} is not 4 finite numbers [x, y, width, height]")
            continue
        why = _box_problem(*box, size)
        if why:
            problems.append(f"{where}: box {box} {why}")
    return problems, len(cats)


def _coco_image(im: Any, images_dir: Path, images: dict) -> list[str]:
    """Check one entry of 'images'; usable ones go into `images` (id -> (file name, size))."""
    if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or not _id(im.get("id")):
        return [f"image entry {str(im)[:80]}: needs an 'id' (a number) and a 'file_name'"]
    name, iid = im["file_name"], im["id"]
    if iid in images:
        return [f"image id {iid!r} is listed twice"]
    if not _inside(images_dir, name):
        return [f"image {name!r}: file_name must be a relative path inside data.path ({images_dir})"]
    path = images_dir / name
    if not path.is_file():
        images[iid] = (name, None)
        return [f"image {name!r} (id {iid}): missing file {path}"]
    problem, size = header(path)
    images[iid] = (name, size)
    if problem:
        return [f"image {name!r}: {problem}"]
    declared = (im.get("width"), im.get("height"))
    if all(_number(v) for v in declared) and tuple(int(v) for v in declared) != size:
        return [f"image {name!r}: the annotations say {declared[0]}x{declared[1]} but the file is "
                f"{size[0]}x{size[1]} (boxes would be scaled wrongly)"]
    return []


# --- YOLO ---------------------------------------------------------------------------------------------------------
def _companions(root: Path, images: list[Path], folder: str, suffix: str, problems: list[str]):
    """The half the YOLO and mask checks share: a problem for each file of `folder` with no image of its name and
    for each image whose header does not read; yields (image, its size or None, its companion file in `folder`)."""
    stems = {p.stem for p in images}
    for f in sorted((root / folder).glob(f"*{suffix}")):
        if f.stem not in stems:
            problems.append(f"{folder}/{f.name}: no image images/{f.stem}.* for it (a renamed or deleted image?)")
    for img in images:
        problem, size = header(img)
        if problem:
            problems.append(f"images/{img.name}: {problem}")
        yield img, size, root / folder / (img.stem + suffix)


def yolo(root: Path, classes: int, images: list[Path]) -> list[str]:
    """Problems of a YOLO folder: images/NAME.* with labels/NAME.txt ("class cx cy w h", normalised to the image)."""
    problems: list[str] = []
    for img, size, lf in _companions(root, images, "labels", ".txt", problems):
        if not lf.is_file():
            continue  # an image without a label file has no boxes (background)
        try:
            lines = lf.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"labels/{lf.name}: unreadable ({e})")
            continue
        for n, line in enumerate(lines, 1):
            why = _yolo_line(line, classes, size)
            if why:
                problems.append(f"labels/{lf.name}:{n}: {why}")
    if len(images) < 2:
        problems.append(f"images/ holds {len(images)} image(s); at least 2 are needed (one to train on, one to "
                        f"validate)")
    return problems


def _yolo_line(line: str, classes: int, size: tuple[int, int] | None) -> str | None:
    parts = line.split()
    if not parts:
        return None
    if len(parts) != 5:
        return f"expected 5 fields 'class cx cy w h', got {len(parts)}: {line.strip()[:80]!r}"
    try:
        c = int(parts[0])
        cx, cy, w, h = (float(v) for v in parts[1:])
    except ValueError:
        return f"expected an integer class and 4 numbers, got {line.strip()[:80]!r}"
    if not all(map(math.isfinite, (cx, cy, w, h))):
        return f"a coordinate is not a finite number: {line.strip()[:80]!r}"
    if not 0 <= c < classes:
        return f"class {c} is out of range for the {classes} classes (0..{classes - 1}); fix the label or data.classes"
    W, H = size if size else (1, 1)
    return _box_problem((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H, size)


# --- segmentation masks -------------------------------------------------------------------------------------------
MASK_MODES = ("L", "P", "I", "I;16")


def mask_values(path: Path) -> tuple[str | None, tuple[int, int] | None, list[int]]:
    """(why the mask cannot be used or None, its size, the values it holds)."""
    import numpy as np
    from PIL import Image

    st = path.stat()
    k = (str(path), st.st_size, st.st_mtime_ns)
    if k not in _MASKS:
        problem = header(path)[0]
        size, values = None, []
        if problem is None:
            with Image.open(path) as m:
                size = m.size
                if m.mode not in MASK_MODES:
                    problem = (f"a {m.mode} image; a mask holds one class index per pixel (a single-channel or "
                               f"palette PNG)")
                else:
                    values = [int(v) for v in np.unique(np.asarray(m))]
        _MASKS[k] = (problem, size, values)
    return _MASKS[k]


def masks(root: Path, classes: int, ignore: int) -> list[str]:
    """Problems of a masks folder: images/NAME.* with masks/NAME.png of class indices (`ignore` = not scored)."""
    from pipeline.data._common import images_under

    problems: list[str] = []
    images = images_under(root / "images")
    pairs = 0
    for img, size, mp in _companions(root, images, "masks", ".png", problems):
        if not mp.is_file():
            problems.append(f"images/{img.name}: no mask masks/{img.stem}.png")
            continue
        pairs += 1
        why, msize, values = mask_values(mp)
        if why:
            problems.append(f"masks/{mp.name}: {why}")
            continue
        if size and msize != size:
            problems.append(f"masks/{mp.name}: {msize[0]}x{msize[1]}, but its image is {size[0]}x{size[1]}")
        bad = [v for v in values if not (0 <= v < classes or v == ignore)]
        if classes and bad:
            problems.append(f"masks/{mp.name}: values {bad[:10]} are not classes 0..{classes - 1} of data.classes "
                            f"(or {ignore} = ignore)")
    if pairs < 2 and images:
        problems.append(f"{pairs} image/mask pair(s); at least 2 are needed (one to train on, one to validate)")
    return problems
