"""Decoding raw bytes safely: every failure is a reason string, never an exception that
takes down a shard."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps


class DecodeError(ValueError):
    """Bytes that are not a usable image; the message is the recorded reason."""


def open_image(data: bytes, formats: list[str], max_pixels: int) -> Image.Image:
    """Open (lazily) and check format and size before any pixels are decoded."""
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
    return image


def load_rgb(data: bytes, max_side: int | None = None) -> Image.Image:
    """Fully decoded RGB image, EXIF orientation applied, optionally shrunk (JPEG draft
    mode decodes at reduced scale, which is much cheaper than decoding then resizing)."""
    image = Image.open(io.BytesIO(data))
    if max_side and image.format == "JPEG":
        scale = max(image.size) / max_side
        if scale > 1:
            image.draft("RGB", (int(image.width / scale), int(image.height / scale)))
    image = ImageOps.exif_transpose(image).convert("RGB")
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
