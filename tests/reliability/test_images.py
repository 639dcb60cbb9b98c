"""Images: every mode converted to the pixels it shows (or refused before any work), every bad file of a folder listed
at once at plan time, and `data.on_bad_image=skip` leaving them out with a log line each. Real files written by Pillow.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from rel_helpers import assert_nothing_written, compose_stub, outcome, write_images
from pipeline import data
from pipeline.data import imagefolder

pytestmark = pytest.mark.bad_input


def _data_cfg(root: Path, **kw):
    return OmegaConf.create({"name": "imagefolder", "path": str(root), "val_fraction": 0.2, "seed": 0,
                             "mean": [0.5] * 3, "std": [0.5] * 3, "max_per_class": None, "on_bad_image": "error",
                             "max_image_pixels": 89_478_485, **kw})


def _decode(path: Path, size: int = 8) -> np.ndarray:
    return imagefolder.decode(path, size, 89_478_485)


def test_16_bit_greyscale_png_is_scaled_not_white(tmp_path):
    grey = np.full((16, 16), 16384, np.uint16)  # a quarter of the 16-bit range: dark grey, not white
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    assert imagefolder.inspect(tmp_path / "g.png", 10**8) is None
    np.testing.assert_allclose(_decode(tmp_path / "g.png"), 16384 / 65535, atol=1e-4)


def test_float_tiff_is_scaled_not_black(tmp_path):
    Image.fromarray(np.full((16, 16), 0.75, np.float32), mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(_decode(tmp_path / "f.tif"), 0.75, atol=1e-5)
    Image.fromarray(np.full((16, 16), 191.25, np.float32), mode="F").save(tmp_path / "f255.tif")  # [0, 255] scale
    np.testing.assert_allclose(_decode(tmp_path / "f255.tif"), 0.75, atol=1e-5)


def test_float_tiff_of_unknown_scale_is_refused_naming_the_file(tmp_path):
    Image.fromarray(np.full((16, 16), -3.0, np.float32), mode="F").save(tmp_path / "neg.tif")
    with pytest.raises(imagefolder.BadImage, match=r"values in \[-3, -3\].*rescale it"):
        _decode(tmp_path / "neg.tif")


def test_alpha_is_composited_over_the_documented_background(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:8, :, 3] = 255  # ... opaque in the top half, fully transparent in the bottom half
    Image.fromarray(rgba).save(tmp_path / "a.png")
    x = _decode(tmp_path / "a.png", 16)
    assert imagefolder.BACKGROUND == (255, 255, 255)
    np.testing.assert_allclose(x[:, :6, :].mean(axis=(1, 2)), [1, 0, 0], atol=1e-6)  # red where opaque
    np.testing.assert_allclose(x[:, 10:, :].mean(axis=(1, 2)), [1, 1, 1], atol=1e-6)  # the white background


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    im.paste(1, (0, 8, 16, 16))
    im.info["transparency"] = 1  # palette index 1 (green) is transparent
    im.save(tmp_path / "p.png", transparency=1)
    x = _decode(tmp_path / "p.png", 16)
    np.testing.assert_allclose(x[:, :6, :].mean(axis=(1, 2)), [0, 0, 1], atol=1e-6)  # blue, opaque
    np.testing.assert_allclose(x[:, 10:, :].mean(axis=(1, 2)), [1, 1, 1], atol=1e-6)  # transparent -> background


def test_exif_orientation_is_applied(tmp_path):
    px = np.zeros((20, 40, 3), np.uint8)
    px[:, :20] = 255  # stored: left half white, 40 wide x 20 high
    img = Image.fromarray(px)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    x = _decode(tmp_path / "phone.jpg", 20)
    assert x[:, :5, :].mean() > 0.95 and x[:, -5:, :].mean() < 0.05  # displayed: top half white


def test_every_bad_image_is_listed_at_plan_time(tmp_path):
    """Unreadable, truncated, empty and oversized files, found together by one header scan before any work."""
    photos = write_images(tmp_path / "photos", {"cat": 5, "dog": 5, "owl": 5})
    (photos / "dog" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    png = (photos / "owl" / "001.png").read_bytes()
    (photos / "owl" / "001.png").write_bytes(png[: len(png) - 30])
    (photos / "cat" / "004.jpg").write_bytes(b"")
    Image.new("L", (12000, 8000)).save(photos / "cat" / "huge.png")  # 96 M pixels: over Pillow's bomb limit
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=tiny_int8", "data=imagefolder", f"data.path={photos}", "tracking=local")
    code, msg, _ = outcome(cfg)
    assert code == 2, msg
    assert "4 image(s)" in msg and "cannot be used" in msg
    for frag in ("dog/003.png: unreadable", "owl/001.png: truncated", "cat/004.jpg: empty file",
                 "cat/huge.png: oversized: 12000x8000", "raise data.max_image_pixels",
                 "Remove or replace them", "data.on_bad_image=skip"):
        assert frag in msg, f"{frag!r} missing from:\n{msg}"
    assert_nothing_written(outputs)


def test_oversized_image_limit_is_a_setting(tmp_path):
    photos = write_images(tmp_path / "photos", {"cat": 3, "dog": 3}, size=40)
    assert data.check(_data_cfg(photos)) == []
    msg = data.check(_data_cfg(photos, max_image_pixels=1000))[0]
    assert "6 image(s)" in msg and "40x40 = 1,600 pixels" in msg and "data.max_image_pixels=1,000" in msg


def test_skip_leaves_bad_images_out_and_logs_each(tmp_path, caplog):
    photos = write_images(tmp_path / "photos", {"cat": 4, "dog": 4})
    (photos / "dog" / "001.png").write_bytes(b"not an image at all")
    png = (photos / "cat" / "002.png").read_bytes()
    (photos / "cat" / "002.png").write_bytes(png[:60])
    cfg = _data_cfg(photos, on_bad_image="skip")
    assert data.check(cfg) == []
    assert data.split_sizes(cfg) == (4, 2)  # 3 + 3 usable images, one of each to validation
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        ds = data.load(cfg, 8)
    lines = [r.getMessage() for r in caplog.records]
    assert any("skipping" in m and "dog/001.png" in m for m in lines)
    assert any("skipping" in m and "cat/002.png" in m for m in lines)
    assert any("skipped 2 image(s)" in m for m in lines)
    assert len(ds.train_y) + len(ds.val_y) == 6 and len(ds.meta["skipped_images"]) == 2
    # the fingerprint (hence every cache key) says which files were left out
    assert data.fingerprint(cfg, 8) != data.fingerprint(_data_cfg(photos, on_bad_image="skip", max_per_class=3), 8)


def test_on_bad_image_must_be_a_known_choice(tmp_path):
    photos = write_images(tmp_path / "photos", {"cat": 3, "dog": 3})
    msg = data.check(_data_cfg(photos, on_bad_image="ignore"))[0]
    assert "data.on_bad_image: must be one of error, skip, got 'ignore'" in msg


def test_empty_training_split_names_val_fraction(tmp_path):
    photos = write_images(tmp_path / "photos", {"cat": 2, "dog": 2})
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=tiny_int8", "data=imagefolder", f"data.path={photos}", "data.val_fraction=0.8")
    code, msg, _ = outcome(cfg)
    assert code == 2, msg
    assert "data.val_fraction: 0.8 leaves no training image in class(es) cat (2 images), dog (2 images)" in msg
    assert "Set data.val_fraction below 0.75" in msg and "calibration_samples" not in msg
    assert_nothing_written(outputs)


def test_empty_training_split_of_digits(tmp_path):
    code, msg, _ = outcome(compose_stub(tmp_path / "outputs", "recipe=tiny_int8", "data.val_fraction=0.999"))
    assert code == 2 and "data.val_fraction: 0.999 leaves no training image" in msg, msg
