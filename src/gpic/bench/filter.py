"""`gpic bench filter`: our reduced-scale scoring against a filter written the plain way."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from gpic.bench import best_of, synthetic_shard
from gpic.config import validate_config
from gpic.images import normalise
from gpic.stages.filter import assess
from gpic.store import read_tar


def naive_scores(data: bytes) -> dict[str, float | str]:
    """The benchmark's baseline, a filter written the plain way: full decode, every score on
    the full-resolution grey image, imagehash's pHash of the image."""
    image = normalise(Image.open(io.BytesIO(data)))
    grey = np.asarray(image.convert("L"))
    a = grey.astype(np.float32)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    p = np.bincount(grey.ravel(), minlength=256) / grey.size
    return {"blur": float(lap.var()), "overexposed": float((grey >= 250).mean()),
            "underexposed": float((grey <= 5).mean()),
            "std": float(a.std()), "entropy": float(-(p[p > 0] * np.log2(p[p > 0])).sum()),
            "phash": str(imagehash.phash(image))}


def bench_filter(n: int = 300, repeat: int = 3) -> dict[str, float | int]:
    """Images/s on one core, same 479x587 JPEGs: ours (draft decode, scores on the small grey
    image) against naive_scores; `full_decode` is our scoring after a full decode, which
    shows what the draft decode alone saves."""
    cfg = validate_config({"sources": ["unused"], "shards": 1})["filter"]
    with tempfile.TemporaryDirectory() as tmp:
        images = list(read_tar(synthetic_shard(Path(tmp), n).raw).values())
    paths = {"ours": lambda d: assess(d, cfg), "full_decode": lambda d: assess(d, cfg, reduced=False),
             "baseline": naive_scores}
    for fn in paths.values():
        fn(images[0])  # imports and first-call set-up are not timed
    seconds = {name: best_of(lambda fn=fn: [fn(d) for d in images], repeat) for name, fn in paths.items()}
    return {"images": n, **{f"{k}_images_per_s": n / s for k, s in seconds.items()},
            **{f"{k}_s": s for k, s in seconds.items()}, "ratio": seconds["baseline"] / seconds["ours"]}
