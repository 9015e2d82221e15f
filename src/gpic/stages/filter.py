"""The filter stage: safe decode and cheap quality scores, each verdict with its reason;
nothing is deleted, the raw bytes stay in the raw tar.

Blur and the perceptual hash are measured on a grey image of a fixed number of pixels, so a
verdict does not depend on the source resolution, and a JPEG is decoded at about that size
(PIL draft: 1/2..1/8 scale, less inverse-DCT work, no colour). A full decode gives the same
verdicts away from the blur threshold; within about 10% below `min_blur` the reduced decode
reads a little sharper and may pass what a full decode drops (`gpic bench filter`,
near_agree). Thresholds only decide, so a threshold change re-decides from the stored
scores without decoding again."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gpic.config import Config, FilterConfig
from gpic.identity import config_hash
from gpic.images import ROTATED, DecodeError, normalise, open_image, orientation
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, with_producer, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["filter"]

WORK_PIXELS = 128 * 128  # about 1/4 scale of a typical 479x587 photo; 1/8 loses blur detection
DECODE_KEYS = ("formats", "max_pixels", "animated")  # the config the scores depend on
SCORES = ["blur", "overexposed", "underexposed", "std", "entropy", "phash"]
FACTS = ["format", "width", "height", "aspect", "orientation", "frames"]
COLUMNS = ["key", *FACTS, *SCORES, "filter_verdict", "filter_reason"]
SCORES_VERSION = 1  # bump when a score's definition changes: stored scores are then recomputed


def work_size(width: int, height: int) -> tuple[int, int]:
    """Size of the grey image blur and pHash see: WORK_PIXELS pixels at the image's aspect ratio (never upscaled)."""
    scale = min(1.0, math.sqrt(WORK_PIXELS / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def decoded_grey(image: Image.Image, reduced: bool = True) -> Image.Image:
    """The normalised grey image; `reduced` lets a JPEG decode at about the working size."""
    if reduced and image.format == "JPEG":
        image.draft("L", work_size(*image.size))
    return normalise(image).convert("L")


_DCT = np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32) + 1) / 64)  # DCT-II rows (scale is irrelevant)


def phash(work: Image.Image) -> str:
    """imagehash's pHash (8x8 lowest DCT frequencies of a 32x32 grey thumbnail against their
    median, as hex), the thumbnail resized bilinearly from the working image: LANCZOS from the
    full image costs far more and, on the demo photos, differs by a median of 0 bits of 64."""
    pixels = np.asarray(work.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64)
    low = _DCT @ pixels @ _DCT.T
    return np.packbits(low > np.median(low)).tobytes().hex()


def scores(grey: Image.Image, size: tuple[int, int]) -> dict[str, float | str]:
    """Exposure (clipped fractions) and spread (std and entropy of the grey levels) from the
    decoded grey image, whose clipped pixels resizing would blend away; blur (variance of
    the 4-neighbour Laplacian) and the perceptual hash at the working `size`."""
    p = np.asarray(grey.histogram(), dtype=np.float64)
    p /= p.sum()
    levels = np.arange(256.0)
    mean = p @ levels
    used = p[p > 0]
    # BOX (area mean) gives near-identical blur after a draft or a full decode; BILINEAR does not
    work = grey if grey.size == size else grey.resize(size, Image.Resampling.BOX)
    a = np.asarray(work, dtype=np.float32)
    lap = a[:-2, 1:-1] + a[2:, 1:-1]
    lap += a[1:-1, :-2]
    lap += a[1:-1, 2:]
    lap -= 4 * a[1:-1, 1:-1]
    return {
        "blur": float(lap.var()) if lap.size else 0.0,
        "overexposed": float(p[250:].sum()),
        "underexposed": float(p[:6].sum()),
        "std": float(np.sqrt(p @ (levels - mean) ** 2)),
        "entropy": float(-(used * np.log2(used)).sum()),
        "phash": phash(work),
    }


def verdict(r: dict, cfg: FilterConfig) -> str:
    """The first failed check of a scored record as a reason, or '' when the image passes."""
    width, height = r["width"], r["height"]
    if min(width, height) < cfg["min_side"]:
        return f"too small: {width}x{height} < {cfg['min_side']}"
    if r["aspect"] > cfg["max_aspect"]:
        return f"aspect ratio: {r['aspect']:.2f} above {cfg['max_aspect']}"
    if r["overexposed"] > cfg["max_overexposed"]:
        return f"over-exposed: {r['overexposed']:.0%} near-white"
    if r["underexposed"] > cfg["max_underexposed"]:
        return f"under-exposed: {r['underexposed']:.0%} near-black"
    if r["std"] < cfg["min_std"]:
        return f"near-blank: std {r['std']:.1f} < {cfg['min_std']}"
    if r["entropy"] < cfg["min_entropy"]:
        return f"near-blank: entropy {r['entropy']:.2f} bits < {cfg['min_entropy']}"
    if r["blur"] < cfg["min_blur"]:
        return f"blurry: laplacian variance {r['blur']:.1f} < {cfg['min_blur']}"
    return ""


def decide(record: dict, cfg: FilterConfig) -> dict:
    """Verdict and reason of a record: a decode reason stands, a scored one is re-decided."""
    reason = record["filter_reason"] if pd.isna(record["blur"]) else verdict(record, cfg)
    return {**record, "filter_verdict": "drop" if reason else "pass", "filter_reason": reason}


def measure(data: bytes, cfg: FilterConfig, reduced: bool = True) -> dict:
    """Decode facts and scores of one image's bytes, or the decode failure as its reason."""
    record = {"format": "", "width": 0, "height": 0, "aspect": np.nan, "orientation": 0, "frames": 0,
              **dict.fromkeys(SCORES, np.nan), "phash": "", "filter_reason": ""}
    try:
        image = open_image(data, cfg["formats"], cfg["max_pixels"], cfg["animated"])
        turn = orientation(image)
        width, height = image.size[::-1] if turn in ROTATED else image.size  # full resolution, as displayed
        record.update(format=image.format, width=width, height=height, aspect=max(width, height) / min(width, height),
                      orientation=turn, frames=getattr(image, "n_frames", 1))
        record.update(scores(decoded_grey(image, reduced), work_size(width, height)))
    except DecodeError as exc:
        record["filter_reason"] = str(exc)
    except Exception as exc:  # truncated or corrupt pixel data surfaces only on decode
        record["filter_reason"] = f"decode corrupt: {type(exc).__name__}: {exc}"[:200]
    return record


def assess(data: bytes, cfg: FilterConfig, reduced: bool = True) -> dict:
    """Filter record of one image's bytes."""
    return decide(measure(data, cfg, reduced), cfg)


def stored_scores(out_path: Path, raw_tar: Path, cfg: FilterConfig) -> dict[str, dict]:
    """Records of an earlier run made from the same raw tar (not rewritten since) with the
    same decode settings: their facts and scores still hold, only thresholds may differ."""
    if not out_path.exists() or out_path.stat().st_mtime_ns < raw_tar.stat().st_mtime_ns:
        return {}
    previous = read_table(out_path)
    if "filter_scores_hash" not in previous or (previous["filter_scores_hash"] != scores_hash(cfg)).any():
        return {}
    return {r["key"]: r for r in previous[COLUMNS].to_dict("records")}


def scores_hash(cfg: FilterConfig) -> str:
    return config_hash({"decode": {k: cfg[k] for k in DECODE_KEYS}, "version": SCORES_VERSION})


def filter_shard(fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: FilterConfig,
                 out_path: str | Path) -> pd.DataFrame:
    """One filter record for every key that was fetched; scores stored by an earlier run
    with the same decode settings are reused, so a threshold change decodes nothing."""
    out_path, raw_tar = Path(out_path), Path(raw_tar)
    stored = stored_scores(out_path, raw_tar, cfg)
    fetched = fetch_records.loc[fetch_records["fetch_status"] == "ok", ["key", "raw_member"]]
    raw = read_tar(raw_tar) if not set(fetched["key"]) <= set(stored) else {}
    rows = [decide(stored[key], cfg) if key in stored else {"key": key, **assess(raw[member], cfg)}
            for key, member in fetched.itertuples(index=False)]
    table = with_producer(pd.DataFrame(rows, columns=COLUMNS), "filter", cfg, scores_hash=scores_hash(cfg))
    write_table(table, out_path)
    log.info("filtered shard (%d of %d scores reused): %s", len(set(fetched["key"]) & set(stored)), len(fetched),
             table["filter_verdict"].value_counts().to_dict())
    return table


def run(files: ShardFiles, cfg: Config, *, model=None) -> pd.DataFrame:
    return filter_shard(read_table(files.table("fetch")), files.raw, cfg["filter"], files.table("filter"))
