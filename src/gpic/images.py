"""Decoding raw bytes safely: every failure is a reason string, never an exception that
takes down a shard, and every image that decodes comes out in one normal form (first frame,
EXIF orientation applied, 8 bits per channel, transparency flattened on white, RGB or L), so
the filter, the judge, the embedder and the captioner all see the same pixels."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit grey PNGs open in these modes


class DecodeError(ValueError):
    """Bytes that are not a usable image; the message is the recorded reason."""


def open_image(data: bytes, formats: list[str], max_pixels: int, animated: str = "first_frame") -> Image.Image:
    """Open (lazily) and check format, size and frames before any pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DecodeError("decode bomb: over PIL's pixel limit") from None
    except Exception as exc:  # PIL raises many types for hostile bytes
        raise DecodeError(f"decode not an image: {type(exc).__name__}") from None
    if image.format not in formats:
        raise DecodeError(f"decode format not allowed: {image.format}")
    if image.width * image.height > max_pixels:
        raise DecodeError(f"decode bomb: {image.width}x{image.height} pixels")
    if animated == "drop" and getattr(image, "is_animated", False):
        raise DecodeError(f"decode animated: {image.n_frames} frames")
    return image


def orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block costs the orientation, not the image
        return 1


def normalise(image: Image.Image) -> Image.Image:
    """The normal form of an opened image (after any draft): decodes the pixels, so
    truncated or corrupt data raises here."""
    image.load()
    with contextlib.suppress(Exception):  # a broken EXIF block leaves the pixels as stored
        image = ImageOps.exif_transpose(image) if orientation(image) != 1 else image
    if image.mode in SIXTEEN_BIT:  # convert("L") would clip 16-bit values at 255, not scale them
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        flat = Image.new("RGBA", image.size, "white")
        flat.alpha_composite(image.convert("RGBA"))
        image = flat.convert("RGB")
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def load_rgb(data: bytes, max_side: int | None = None) -> Image.Image:
    """Normalised RGB image, optionally shrunk (JPEG draft mode decodes at reduced scale,
    which is much cheaper than decoding then resizing)."""
    image = Image.open(io.BytesIO(data))
    if max_side and image.format == "JPEG":
        scale = max(image.size) / max_side
        if scale > 1:
            image.draft("RGB", (int(image.width / scale), int(image.height / scale)))
    image = normalise(image).convert("RGB")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


VLM_MAX_SIDE = 1024  # pre-shrink before the VLM processor; its own resize decides the final size


def load_batches(raw: dict[str, bytes], members: dict[str, str], batch_size: int, max_side: int | None = VLM_MAX_SIDE):
    """Yield (keys, images, failures) per batch of keys in sorted order; an image that cannot
    be decoded becomes a (key, reason) failure instead of stopping the batch."""
    keys = sorted(members)
    for start in range(0, len(keys), batch_size):
        ok_keys, images, failures = [], [], []
        for key in keys[start : start + batch_size]:
            try:
                images.append(load_rgb(raw[members[key]], max_side))
                ok_keys.append(key)
            except Exception as exc:
                failures.append((key, f"decode failed: {type(exc).__name__}: {exc}"[:200]))
        yield ok_keys, images, failures
