"""A folder with one sub-folder of images per class (the layout users bring): header scan and conversion to RGB.

Conversion rules (every Pillow mode either follows one of them or is refused at plan time, never guessed):
  - EXIF orientation is applied first (a phone photo taken upright trains upright).
  - 8-bit modes (1, L, P without transparency, RGB, RGBX, CMYK, YCbCr): Pillow's conversion to RGB.
  - 16-bit greyscale (I;16, I;16L, I;16B, I;16N) and 32-bit integer (I) images: scaled by the bit depth the file
    declares (65535 for 16-bit; a TIFF's BitsPerSample otherwise), never clipped at 255.
  - 32-bit float (F): values in [0, 1] are taken as they are, values in [0, 255] are divided by 255; anything else
    (negative, above 255, NaN) is refused: the scale cannot be known.
  - Transparency (RGBA, LA, La, RGBa, PA, P or L with a transparent colour): composited over BACKGROUND (white), so a
    transparent pixel looks as it does on a white page; the alpha channel itself is not a model input.
  - Animated or multi-page files: the first frame.
Pixels end as float32 RGB in [0, 1].
"""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np

log = logging.getLogger("pipeline")

BACKGROUND = (255, 255, 255)  # what transparent pixels are composited over (white)
EIGHT_BIT = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"}
ALPHA = {"RGBA", "LA", "La", "RGBa", "PA"}
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
SUPPORTED = EIGHT_BIT | ALPHA | SIXTEEN_BIT | {"I", "F"}


class BadImage(ValueError):
    """An image that cannot be used, with the reason (the caller adds the file and the fix)."""


# --- plan time: headers and file ends only ------------------------------------------------------------------------
def inspect(path: Path, max_pixels: int) -> str | None:
    """None if `path` looks usable, else why not: not an image, truncated, oversized or of a mode that cannot be
    converted. Reads the header and the last bytes of the file only, decodes no pixels (cheap enough to run over a
    whole folder while planning)."""
    from PIL import Image, UnidentifiedImageError

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # opening reads the header only; the size is compared with max_pixels below
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                return (f"oversized: {w}x{h} = {w * h:,} pixels, more than data.max_image_pixels={max_pixels:,}; "
                        f"downscale it or raise data.max_image_pixels")
            if im.mode not in SUPPORTED:
                return f"unsupported image mode {im.mode!r} (supported: {', '.join(sorted(SUPPORTED))}); convert it to RGB"
            short = _truncated(path, im, size)
            if short:
                return f"truncated ({short})"
    except Image.DecompressionBombError as e:
        return f"oversized ({e}); downscale it or raise data.max_image_pixels"
    except UnidentifiedImageError:
        return "not an image Pillow can read (unknown or damaged header)"
    except (OSError, ValueError, SyntaxError, struct.error) as e:  # Pillow raises SyntaxError for some bad headers
        return f"unreadable ({type(e).__name__}: {e})"
    finally:
        Image.MAX_IMAGE_PIXELS = old
    return None


def _truncated(path: Path, im, size: int) -> str | None:
    """Where the file's own structure says it should end, checked against its length (no decoding)."""
    fmt = im.format
    with open(path, "rb") as f:
        f.seek(max(0, size - 4096))
        tail = f.read()
    if fmt == "PNG":
        if b"IEND" not in tail[-64:]:
            return "no IEND chunk at the end of the PNG"
    elif fmt in ("JPEG", "MPO"):
        if b"\xff\xd9" not in tail[-1024:]:
            return "no end-of-image marker at the end of the JPEG"
    elif fmt == "GIF":
        if not tail.rstrip(b"\0").endswith(b";"):
            return "no trailer byte at the end of the GIF"
    elif fmt == "BMP":
        with open(path, "rb") as f:
            head = f.read(6)
        declared = struct.unpack("<I", head[2:6])[0] if len(head) == 6 else 0
        if declared > size:
            return f"the BMP header declares {declared} bytes, the file has {size}"
    elif fmt == "WEBP":
        with open(path, "rb") as f:
            head = f.read(8)
        declared = struct.unpack("<I", head[4:8])[0] + 8 if len(head) == 8 else 0
        if declared > size:
            return f"the WebP header declares {declared} bytes, the file has {size}"
    elif fmt == "TIFF":
        tags = getattr(im, "tag_v2", {})
        offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)  # strips, or tiles
        if offsets and counts:
            offsets = offsets if isinstance(offsets, tuple) else (offsets,)
            counts = counts if isinstance(counts, tuple) else (counts,)
            end = max(o + c for o, c in zip(offsets, counts))
            if end > size:
                return f"the TIFF's image data should end at byte {end}, the file has {size}"
    return None


# --- run time: decode and convert ---------------------------------------------------------------------------------
def to_rgb(im) -> np.ndarray:
    """float32 HxWx3 in [0, 1] following the rules of this module's docstring; raises BadImage otherwise."""
    from PIL import Image, ImageOps

    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)  # (returns a copy with the orientation applied and the EXIF tag removed)
    mode = im.mode
    if mode == "P" or (mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ALPHA:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), np.float32) / 255.0
    if mode in EIGHT_BIT:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0
    if mode in SIXTEEN_BIT or mode == "I":
        a = np.asarray(im).astype(np.float64)
        bits = 16 if mode in SIXTEEN_BIT else _declared_bits(im)
        if bits is None:
            raise BadImage("32-bit integer image without a declared bit depth: its scale cannot be known; save it as "
                           "8- or 16-bit")
        top = float(2 ** bits - 1)
        if a.size and (a.min() < 0 or a.max() > top):
            raise BadImage(f"integer values in [{a.min():g}, {a.max():g}] exceed the declared {bits}-bit range")
        return np.repeat((a / top).astype(np.float32)[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, np.float32)
        lo, hi = (float(np.min(a)), float(np.max(a))) if a.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
            raise BadImage(f"float image with values in [{lo:g}, {hi:g}]: only [0, 1] or [0, 255] can be scaled; "
                           f"rescale it")
        a = a if hi <= 1.0 else a / 255.0
        return np.repeat(a[..., None], 3, axis=2)
    raise BadImage(f"unsupported image mode {mode!r}; convert it to RGB")


def _declared_bits(im) -> int | None:
    tags = getattr(im, "tag_v2", None)
    if tags is not None and 258 in tags:
        bits = tags[258]
        bits = bits[0] if isinstance(bits, tuple) else bits
        return int(bits) if 1 <= int(bits) <= 32 else None
    if im.format == "PNG":  # Pillow opens 16-bit greyscale PNGs as I or I;16
        return 16
    return None


def resize(rgb: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of float32 HxWx3 to the input size (one side or (H, W)), channel by channel in Pillow's float
    mode (no 8-bit rounding)."""
    from PIL import Image

    from pipeline.data.size import hw

    h, w = hw(size)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c]), mode="F")
                                .resize((w, h), Image.BILINEAR)) for c in range(3)], axis=2)


def decode(path: Path, input_size: int, max_pixels: int) -> np.ndarray:
    """One image as float32 3 x size x size in [0, 1]; raises BadImage naming why it cannot be used."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # (the plan-time scan refused larger ones already; this guards a swap since)
    try:
        with Image.open(path) as im:
            if im.mode == "RGB" and "transparency" not in im.info:  # the common case, kept in 8 bits as before
                im = ImageOps.exif_transpose(im)
                from pipeline.data.size import hw

                h, w = hw(input_size)
                small = im.convert("RGB").resize((w, h), Image.BILINEAR)
                return np.asarray(small, np.float32).transpose(2, 0, 1) / 255.0
            im.load()
            return resize(to_rgb(im), input_size).transpose(2, 0, 1)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"oversized ({e}); downscale it or raise data.max_image_pixels") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as e:
        raise BadImage(f"{type(e).__name__}: {e}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_folder(root: Path, files: dict[str, list[Path]], input_size: int, max_pixels: int, skip: bool,
                ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode every listed image (class name -> files). A file that fails to decode although its header looked fine
    is refused naming the file and both fixes, or, with skip, left out and logged. Returns (x, y, classes, skipped)."""
    xs, ys, skipped = [], [], []
    classes = list(files)
    for label, cname in enumerate(classes):
        for f in files[cname]:
            try:
                xs.append(decode(f, input_size, max_pixels))
            except BadImage as e:
                if not skip:
                    raise ValueError(f"cannot read image {f}: {e}. Remove or replace the file, or set "
                                     f"data.on_bad_image=skip to leave such files out, then re-run.") from e
                log.warning("data.on_bad_image=skip: skipping %s: %s", f, e)
                skipped.append(f"{os.path.relpath(f, root)}: {e}")
                continue
            ys.append(label)
    if skipped:
        log.warning("data.on_bad_image=skip: skipped %d image(s) that failed to decode", len(skipped))
    counts = {c: ys.count(i) for i, c in enumerate(classes)}
    short = [c for c, n in counts.items() if n < 2]
    if short:
        raise ValueError(f"after skipping unreadable images, class(es) {', '.join(short)} hold fewer than 2 images; "
                         f"add images to them or remove the folder(s)")
    return np.stack(xs), np.asarray(ys, np.int64), classes, skipped
