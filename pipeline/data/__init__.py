"""Datasets: scikit-learn's bundled digits (the offline default) and a folder of images per class.

`check` and `fingerprint` are cheap and import nothing heavy (they run while planning): `check` reads every image's
header and file end (pipeline/data/imagefolder.py) so that every unreadable, truncated, oversized or unconvertible file
is listed at once before any work; `load` decodes and builds arrays. `data.on_bad_image=skip` leaves such files out
instead (each one and the count are logged).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import size
from pipeline.data._common import Dataset
from pipeline.data.files import IMAGE_SUFFIXES, _class_dirs, _images

log = logging.getLogger("pipeline")
DATASETS = ("digits", "imagefolder")  # the classification sets, defined here
# The task data sets, each defined in its own module with the same check / fingerprint / load functions (their names
# are repeated in pipeline.tasks.DATA_MODULES, which says which task reads which set).
TASK_DATASETS = {"digits_detection": "pipeline.data.detection", "coco": "pipeline.data.detection",
                 "yolo": "pipeline.data.detection", "digits_segmentation": "pipeline.data.segmentation",
                 "masks": "pipeline.data.segmentation", "images": "pipeline.data.unlabelled",
                 "fashion_mnist": "pipeline.data.fashion_mnist"}
ALL_DATASETS = (*DATASETS, *TASK_DATASETS)
# Images per class of scikit-learn's bundled digits (unchanged since it shipped): planning knows the split sizes from
# these without importing scikit-learn. tests/reliability/test_bad_inputs.py checks them against load_digits().
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)




ON_BAD_IMAGE = ("error", "skip")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit


def _opt(data_cfg: Any, key: str, default: Any) -> Any:
    """A DataConfig field that older configs (or hand-built ones) may not have."""
    try:
        v = data_cfg.get(key, default) if hasattr(data_cfg, "get") else getattr(data_cfg, key, default)
    except Exception:
        return default
    return default if v is None else v


@dataclass
class Scan:
    """The plan-time view of an image folder: per class the usable files, and every bad file with its reason."""

    usable: dict[str, list[Path]]
    bad: list[tuple[Path, str]]


_SCANS: dict[tuple, tuple[Path, str] | None] = {}  # (path, size, mtime_ns, max_pixels) -> problem or None


def scan(data_cfg: Any) -> Scan:
    """Headers of every image of the folder (after max_per_class), remembered per file size and mtime within the
    process so that planning, the split sizes, the fingerprint and loading scan once."""
    from pipeline.data import imagefolder

    root = Path(os.path.expanduser(str(data_cfg.path)))
    max_pixels = int(_opt(data_cfg, "max_image_pixels", DEFAULT_MAX_PIXELS))
    skip = _opt(data_cfg, "on_bad_image", "error") == "skip"
    cap = data_cfg.max_per_class
    usable: dict[str, list[Path]] = {}
    bad: list[tuple[Path, str]] = []
    for c in _class_dirs(root):
        ok = []
        for p in _images(c):
            if cap and len(ok) >= cap:  # (with skip, a bad file's place is taken by the next good one)
                break
            st = p.stat()
            k = (str(p), st.st_size, st.st_mtime_ns, max_pixels)
            if k not in _SCANS:
                _SCANS[k] = imagefolder.inspect(p, max_pixels)
            if _SCANS[k] is None:
                ok.append(p)
            else:
                bad.append((p, _SCANS[k]))
                if not skip and cap:
                    ok.append(p)  # error mode: the count is what it would be; the plan is refused anyway
        usable[c.name] = ok
    return Scan(usable, bad)


def _task_module(data_cfg: Any):
    """The module of a task data set (detection, segmentation, unlabelled), or None for the classification sets."""
    import importlib

    name = str(data_cfg.name)
    return importlib.import_module(TASK_DATASETS[name]) if name in TASK_DATASETS else None


def check(data_cfg: Any) -> list[str]:
    """Problems with the data configuration, each naming the fix. Cheap: lists folders, opens no image."""
    mod = _task_module(data_cfg) if data_cfg.name in TASK_DATASETS else None
    if mod is not None:
        return mod.check(data_cfg)
    if data_cfg.name not in DATASETS:
        return [f"data.name: unknown dataset {data_cfg.name!r}. Available: {', '.join(ALL_DATASETS)} "
                f"(choose with data=digits or data=imagefolder data.path=DIR)."]
    if not 0.0 < data_cfg.val_fraction < 1.0:  # (NaN fails this too)
        return [f"data.val_fraction: must be between 0 and 1 (exclusive), got {data_cfg.val_fraction}"]
    problems = []
    on_bad = _opt(data_cfg, "on_bad_image", "error")
    if on_bad not in ON_BAD_IMAGE:
        problems.append(f"data.on_bad_image: must be one of {', '.join(ON_BAD_IMAGE)}, got {on_bad!r} (error: refuse "
                        f"the plan listing every bad image; skip: leave them out and log each one)")
    problems += _bounds(data_cfg)
    for key in ("mean", "std"):  # the images are RGB: one value per channel
        vals = list(data_cfg[key])
        if len(vals) != 3 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in vals):
            problems.append(f"data.{key}: needs 3 finite numbers (one per RGB channel), got {vals}")
    if not problems and not all(v > 0 for v in data_cfg.std):
        problems.append(f"data.std: every value must be > 0 (the images are divided by it), got {list(data_cfg.std)}")
    if problems:
        return problems
    if data_cfg.max_per_class is not None and data_cfg.max_per_class < 2:
        problems.append(f"data.max_per_class: must be at least 2 (one image to train on, one to validate) or null "
                        f"for no cap, got {data_cfg.max_per_class}")
    if problems:
        return problems
    if data_cfg.name != "imagefolder":
        return _split_problems(data_cfg, dict(zip((str(i) for i in range(10)), DIGITS_PER_CLASS)))
    if not data_cfg.path:
        return ["data.path: data=imagefolder needs a folder: add data.path=DIR (one sub-folder of images per class)"]
    root = Path(os.path.expanduser(str(data_cfg.path)))
    if not root.is_dir():
        return [f"data.path: {str(root)!r} does not exist or is not a folder; give a folder with one sub-folder of "
                f"images per class"]
    classes = _class_dirs(root)
    if len(classes) < 2:
        return [f"data.path: {str(root)!r} has {len(classes)} class folder(s); a classifier needs at least 2 "
                f"sub-folders of images (one per class)"]
    empty = [c.name for c in classes if not _images(c)]
    if empty:
        return [f"data.path: class folder(s) {', '.join(empty)} in {str(root)!r} hold no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"]
    single = [c.name for c in classes if len(_images(c)) < 2]
    if single:
        return [f"data.path: class folder(s) {', '.join(single)} in {str(root)!r} hold only one image; each class "
                f"needs at least 2 (one to train on, one to validate): add images or remove the folder"]
    found = scan(data_cfg)
    if found.bad and _opt(data_cfg, "on_bad_image", "error") == "error":
        shown = [f"{os.path.relpath(p, root)}: {why}" for p, why in found.bad[:50]]
        more = f"\n    ... and {len(found.bad) - 50} more" if len(found.bad) > 50 else ""
        return [f"data.path: {len(found.bad)} image(s) in {str(root)!r} cannot be used:\n    " + "\n    ".join(shown)
                + more + "\n  Remove or replace them, or set data.on_bad_image=skip to leave them out (each is logged)."]
    if found.bad:
        short = [c for c, files in found.usable.items() if len(files) < 2]
        if short:
            return [f"data.path: with data.on_bad_image=skip, class folder(s) {', '.join(short)} in {str(root)!r} keep "
                    f"fewer than 2 usable images ({len(found.bad)} bad image(s) left out); add images or remove the "
                    f"folder(s)"]
    return _split_problems(data_cfg, {c: len(f) for c, f in found.usable.items()})


def _bounds(data_cfg: Any) -> list[str]:
    """The ranges DataConfig's fields declare (pipeline.core.bounds), for the fields not checked by hand above."""
    from pipeline.core import bounds
    from pipeline.core.config import DataConfig

    own = ("data.val_fraction", "data.mean", "data.std", "data.max_per_class")  # checked here with their own words
    try:
        found = bounds.problems(data_cfg, "data", DataConfig)
    except TypeError:
        return []
    return [p for p in found if not p.startswith(own)]


def _split_problems(data_cfg: Any, counts: dict[str, int]) -> list[str]:
    """Every class keeps at least one training image after the seeded split (see `_split`)."""
    vf = data_cfg.val_fraction
    empty = {c: n for c, n in counts.items() if n - max(1, int(round(n * vf))) < 1}
    if not empty:
        return []
    # round(n * vf) <= n - 1 holds for vf < (n - 0.5) / n: the largest fraction that leaves every class an image
    limit = min((n - 0.5) / n for n in counts.values())
    names = ", ".join(f"{c} ({n} image{'s' if n != 1 else ''})" for c, n in list(empty.items())[:10])
    more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
    return [f"data.val_fraction: {vf:g} leaves no training image in class(es) {names}{more}: every class gives "
            f"max(1, round(n x val_fraction)) images to validation. Set data.val_fraction below {limit:.2f}, or add "
            f"images to these classes"]


def num_classes(data_cfg: Any) -> int | None:
    """The class count the data's labels use, known before loading (None: no labels, or not known cheaply). Planning
    checks a model's outputs against it (a 1000-class head on 5-class data is refused before any work)."""
    name = str(data_cfg.name)
    if check(data_cfg):
        return None
    if name in ("digits", "digits_detection", "fashion_mnist"):
        return 10
    if name == "digits_segmentation":
        return 11  # background + 10 digits
    if name == "imagefolder":
        return len(_class_dirs(Path(os.path.expanduser(str(data_cfg.path)))))
    if name in ("yolo", "masks"):
        if data_cfg.get("classes"):
            return len(data_cfg.classes)
        f = Path(os.path.expanduser(str(data_cfg.path))) / "classes.txt"
        return len([l for l in f.read_text().splitlines() if l.strip()]) if f.is_file() else None
    if name == "coco":
        import json

        try:
            return len(json.loads(Path(os.path.expanduser(str(data_cfg.annotations))).read_text()).get("categories", []))
        except (OSError, ValueError):
            return None
    return None  # images: unlabelled


def class_counts(data_cfg: Any) -> list[int]:
    """Images per class as `load` will see them (after max_per_class). Cheap: lists folders, decodes nothing."""
    if data_cfg.name == "digits":
        return list(DIGITS_PER_CLASS)
    return [len(files) for files in scan(data_cfg).usable.values()]


def split_sizes(data_cfg: Any) -> tuple[int, int] | None:
    """(training, validation) image counts of the seeded split, known before loading; None if `check` finds problems.

    Mirrors `_split`: every class gives max(1, round(n * val_fraction)) images to validation; the task data sets
    hold out max(1, round(n * val_fraction)) images of the whole set (composed digits: their canvas counts).
    """
    if check(data_cfg):
        return None
    if data_cfg.name in TASK_DATASETS:
        return _task_split_sizes(data_cfg)
    train = val = 0
    for n in class_counts(data_cfg):
        n_val = max(1, int(round(n * data_cfg.val_fraction)))
        train, val = train + n - n_val, val + n_val
    return train, val


def _task_split_sizes(data_cfg: Any) -> tuple[int, int] | None:
    from pipeline.data._common import expand, images_under

    name = str(data_cfg.name)
    own = getattr(_task_module(data_cfg), "split_sizes", None)
    if own is not None:
        return own(data_cfg)
    if name.startswith("digits_"):
        return int(data_cfg.train_images), int(data_cfg.val_images)
    root = expand(data_cfg.path)
    if name == "images":
        n = len(images_under(root, recursive=True))
        n = min(n, int(data_cfg.max_images)) if data_cfg.get("max_images") else n
    elif name == "coco":
        return None  # only the annotation file knows which images count
    else:
        n = len(images_under(root / "images"))
    n_val = max(1, int(round(n * float(data_cfg.val_fraction))))
    return n - n_val, n_val


def fingerprint(data_cfg: Any, input_size: int) -> str:
    """Identity of the data a stage sees: the dataset's settings plus its content.

    Digits: scikit-learn's version (the data ships with it). Folders: every image's relative path, size and mtime
    (reading every byte of a large folder on each run would cost more than the stages it saves).
    """
    if data_cfg.name in TASK_DATASETS:
        return _task_module(data_cfg).fingerprint(data_cfg, input_size)
    h = hashlib.sha256()
    h.update(repr((data_cfg.name, data_cfg.val_fraction, data_cfg.seed, list(data_cfg.mean), list(data_cfg.std),
                   data_cfg.max_per_class, input_size)).encode())
    if data_cfg.name == "digits":
        h.update(metadata.version("scikit-learn").encode())
    else:
        root = Path(os.path.expanduser(str(data_cfg.path)))
        for c in _class_dirs(root):
            for p in _images(c):
                st = p.stat()
                h.update(f"{c.name}/{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        bad = scan(data_cfg).bad
        if bad:  # (data.on_bad_image=skip) which files are left out, and under which size limit
            h.update(repr((sorted(str(p.relative_to(root)) for p, _ in bad),
                           _opt(data_cfg, "max_image_pixels", DEFAULT_MAX_PIXELS))).encode())
    return h.hexdigest()[:16]


def _split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: the same share of every class goes to validation, reproducibly."""
    from pipeline.data._common import stratified_split

    return stratified_split(y, val_fraction, seed)


def _normalize(x: np.ndarray, mean, std) -> np.ndarray:
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


def load(data_cfg: Any, input_size: int) -> Dataset:
    """Load and preprocess: resize to the model's input, 3 channels, normalise with data.mean/std."""
    from PIL import Image

    if data_cfg.name in TASK_DATASETS:
        return _task_module(data_cfg).load(data_cfg, input_size)

    if data_cfg.name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        raw = (d.images / 16.0).astype(np.float32)
        h, w = size.hw(input_size)
        imgs = np.stack([np.asarray(Image.fromarray(im, mode="F").resize((w, h), Image.BILINEAR)) for im in raw])
        x = np.repeat(imgs[:, None], 3, axis=1)
        y = d.target.astype(np.int64)
        classes = [str(c) for c in d.target_names]
    else:
        from pipeline.data.imagefolder import read_folder

        root = Path(os.path.expanduser(str(data_cfg.path)))
        found = scan(data_cfg)
        skip = _opt(data_cfg, "on_bad_image", "error") == "skip"
        if found.bad and not skip:  # check() refused this plan; a folder changed since: same message, same fixes
            raise ValueError(check(data_cfg)[0])
        for p, why in found.bad:
            log.warning("data.on_bad_image=skip: skipping %s: %s", p, why)
        if found.bad:
            log.warning("data.on_bad_image=skip: skipped %d image(s) of %s", len(found.bad), root)
        x, y, classes, late = read_folder(root, found.usable, input_size,
                                          int(_opt(data_cfg, "max_image_pixels", DEFAULT_MAX_PIXELS)), skip)
        skipped = [f"{os.path.relpath(p, root)}: {why}" for p, why in found.bad] + late
    x = _normalize(x, data_cfg.mean, data_cfg.std)
    tr, va = _split(y, data_cfg.val_fraction, data_cfg.seed)
    meta = {"name": data_cfg.name, "input_size": input_size,
            "mean": [float(v) for v in data_cfg.mean], "std": [float(v) for v in data_cfg.std], "train": len(tr), "val": len(va)}
    if data_cfg.name != "digits":
        meta["skipped_images"] = skipped
    return Dataset(x[tr], y[tr], x[va], y[va], classes, meta=meta)
