"""The filter stage: safe decode and cheap quality scores on a reduced greyscale image,
each verdict with its reason; nothing is deleted, the raw bytes stay in the raw tar."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gpic.images import DecodeError, open_image
from gpic.store import read_tar, stamp, write_table

log = logging.getLogger(__name__)

SCORE_SIDE = 512  # scores are computed on a grey image of at most this long side
COLUMNS = ["key", "format", "width", "height", "blur", "overexposed", "underexposed", "std",
           "filter_verdict", "filter_reason"]


def grey_for_scores(image: Image.Image) -> np.ndarray:
    """Grey pixels at reduced scale: JPEG draft decodes at 1/2..1/8 scale for free."""
    if image.format == "JPEG":
        scale = max(image.size) / SCORE_SIDE
        if scale > 1:
            image.draft("L", (int(image.width / scale), int(image.height / scale)))
    grey = image.convert("L")
    if max(grey.size) > SCORE_SIDE:
        grey.thumbnail((SCORE_SIDE, SCORE_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32)


def scores(grey: np.ndarray) -> dict[str, float]:
    """Blur (variance of the 4-neighbour Laplacian), exposure (clipped fractions), spread."""
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return {
        "blur": float(lap.var()) if lap.size else 0.0,
        "overexposed": float((grey >= 250).mean()),
        "underexposed": float((grey <= 5).mean()),
        "std": float(grey.std()),
    }


def verdict(width: int, height: int, s: dict[str, float], cfg: dict) -> str:
    """The first failed check as a reason, or '' when the image passes."""
    if min(width, height) < cfg["min_side"]:
        return f"too small: {width}x{height} < {cfg['min_side']}"
    if max(width, height) / min(width, height) > cfg["max_aspect"]:
        return f"aspect ratio: above {cfg['max_aspect']}"
    if s["overexposed"] > cfg["max_overexposed"]:
        return f"over-exposed: {s['overexposed']:.0%} near-white"
    if s["underexposed"] > cfg["max_underexposed"]:
        return f"under-exposed: {s['underexposed']:.0%} near-black"
    if s["std"] < cfg["min_std"]:
        return f"near-blank: std {s['std']:.1f} < {cfg['min_std']}"
    if s["blur"] < cfg["min_blur"]:
        return f"blurry: laplacian variance {s['blur']:.1f} < {cfg['min_blur']}"
    return ""


def assess(data: bytes, cfg: dict) -> dict:
    """Filter record of one image's bytes."""
    record = {"format": "", "width": 0, "height": 0, "blur": np.nan, "overexposed": np.nan,
              "underexposed": np.nan, "std": np.nan}
    try:
        image = open_image(data, cfg["formats"], cfg["max_pixels"])
        record.update(format=image.format, width=image.width, height=image.height)
        grey = grey_for_scores(image)
    except DecodeError as exc:
        return {**record, "filter_verdict": "drop", "filter_reason": str(exc)}
    except Exception as exc:  # truncated or corrupt pixel data surfaces only on decode
        return {**record, "filter_verdict": "drop", "filter_reason": f"decode corrupt: {type(exc).__name__}: {exc}"[:200]}
    record.update(scores(grey))
    reason = verdict(record["width"], record["height"], record, cfg)
    return {**record, "filter_verdict": "drop" if reason else "pass", "filter_reason": reason}


def filter_shard(fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: dict, out_path: str | Path) -> pd.DataFrame:
    """One filter record for every key that was fetched."""
    raw = read_tar(raw_tar)
    rows = []
    for key, member in fetch_records.loc[fetch_records["fetch_status"] == "ok", ["key", "raw_member"]].itertuples(index=False):
        rows.append({"key": key, **assess(raw[member], cfg)})
    table = stamp(pd.DataFrame(rows, columns=COLUMNS), "filter", cfg)
    write_table(table, out_path)
    log.info("filtered shard: %s", table["filter_verdict"].value_counts().to_dict())
    return table
