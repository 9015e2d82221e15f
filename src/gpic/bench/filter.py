"""`gpic bench filter`: our reduced-scale scoring against the same scores after a full decode,
timed, and their verdicts compared where they could differ: near the blur threshold."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageFilter

from gpic.bench import best_of, jpeg, photos, synthetic_shard
from gpic.config import FilterConfig, validate_config
from gpic.images import normalise
from gpic.stages.filter import assess
from gpic.store import read_tar

# scikit-image's shipped photos (no download), colour and grey, of varied content and size
NEAR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
               "retina", "moon", "coins", "clock", "brick", "grass", "gravel", "cell", "page", "text")
NEAR_RADII = np.arange(0.5, 8.01, 0.5)  # Gaussian blur radii, sharp to very blurred


def naive_scores(data: bytes) -> dict[str, float | str]:
    """A filter written the plain way, for context only (its scores are not ours, so its
    verdicts cannot be compared): full decode, every score on the full-resolution grey image,
    imagehash's pHash of the image."""
    image = normalise(Image.open(io.BytesIO(data)))
    grey = np.asarray(image.convert("L"))
    a = grey.astype(np.float32)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    p = np.bincount(grey.ravel(), minlength=256) / grey.size
    return {"blur": float(lap.var()), "overexposed": float((grey >= 250).mean()),
            "underexposed": float((grey <= 5).mean()),
            "std": float(a.std()), "entropy": float(-(p[p > 0] * np.log2(p[p > 0])).sum()),
            "phash": str(imagehash.phash(image))}


def near_threshold(cfg: FilterConfig, low: float = 0.5, high: float = 2.0) -> list[bytes]:
    """JPEGs of real photos, at their own size and at GPIC's mean 479x587, blurred at
    NEAR_RADII, kept where the full decode's blur lies in [low, high] x `min_blur` and no other
    check drops the image: the set on which the blur verdict is close and a reduced-scale
    decode could decide otherwise. The bench's own JPEGs are sharp (blur far above the
    threshold), so their agreement says nothing here."""
    out = []
    for photo in photos(NEAR_PHOTOS):
        for image in (photo, photo.resize((479, 587), Image.Resampling.LANCZOS)):
            for radius in NEAR_RADII:
                blurred = jpeg(image.filter(ImageFilter.GaussianBlur(float(radius))))
                full = assess(blurred, cfg, reduced=False)
                if full["blur"] < low * cfg["min_blur"]:
                    break  # blur only falls as the radius grows
                reason = full["filter_reason"]  # blur is the last check: "blurry" means all others passed
                if full["blur"] <= high * cfg["min_blur"] and (not reason or reason.startswith("blurry")):
                    out.append(blurred)
    return out


def bench_filter(n: int = 300, repeat: int = 3) -> dict[str, float | int]:
    """Images/s on one core, same 479x587 JPEGs: ours (draft decode, scores on the small grey
    image) against the baseline, the same scores after a full decode, so the ratio is what the
    reduced-scale decode alone saves; `plain` is a filter scoring the full-resolution image
    (context only). `agree` counts equal verdicts on these JPEGs (far from every threshold);
    `near_agree` on the `near_threshold` set (`near_pass` of them pass at full decode), where
    the verdicts that differ lie within `near_flip_within` (a fraction) of `min_blur`, and our
    blur over the full decode's ranges over `near_blur_ratio_*`."""
    cfg = validate_config({"sources": ["unused"], "shards": 1})["filter"]
    with tempfile.TemporaryDirectory() as tmp:
        images = list(read_tar(synthetic_shard(Path(tmp), n).raw).values())
    paths = {"ours": lambda d: assess(d, cfg), "baseline": lambda d: assess(d, cfg, reduced=False),
             "plain": naive_scores}
    for fn in paths.values():
        fn(images[0])  # imports and first-call set-up are not timed
    seconds = {name: best_of(lambda fn=fn: [fn(d) for d in images], repeat) for name, fn in paths.items()}
    agree = sum(paths["ours"](d)["filter_verdict"] == paths["baseline"](d)["filter_verdict"] for d in images)
    near = [(paths["ours"](d), paths["baseline"](d)) for d in near_threshold(cfg)]
    ratios = [ours["blur"] / full["blur"] for ours, full in near] or [np.nan]
    flips = [full["blur"] for ours, full in near if ours["filter_verdict"] != full["filter_verdict"]]
    flip_within = max((abs(blur / cfg["min_blur"] - 1) for blur in flips), default=0.0)
    return {"images": n, **{f"{k}_images_per_s": n / s for k, s in seconds.items()},
            **{f"{k}_s": s for k, s in seconds.items()}, "agree": agree, "near_threshold": len(near),
            "near_pass": sum(full["filter_verdict"] == "pass" for _, full in near),
            "near_agree": len(near) - len(flips), "near_flip_within": flip_within,
            "near_blur_ratio_min": float(min(ratios)), "near_blur_ratio_max": float(max(ratios)),
            "ratio": seconds["baseline"] / seconds["ours"]}
