"""Shared shape of every `gpic bench NAME`: ours and the baseline timed in one run on the same
inputs, ending with one line of key=value figures (`ratio=` is ours over the baseline, higher
is better; seconds as `*_s=`), so results can be grepped and compared across machines.
Nothing in the product imports this package."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import skimage.data
from PIL import Image

from gpic.contracts import LEVELS
from gpic.stages.pack import ShardInputs
from gpic.store import write_table, write_tar

REPO = Path(__file__).resolve().parents[3]


def best_of(fn: Callable[[], object], repeat: int = 3, setup: Callable[[], object] | None = None) -> float:
    """Fastest wall time of `repeat` calls, in seconds (the least disturbed by other load);
    `setup` runs untimed before each call (e.g. to remove the previous call's output)."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def figures_line(figures: dict[str, float | int | str]) -> str:
    """The closing `key=value` line; floats with four significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image's photos: real images, shipped offline


def photos(names: tuple[str, ...] = PHOTOS) -> list[Image.Image]:
    """Real photos the benches cut their images from, as RGB."""
    return [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in names]


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def gpic_sized_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs of GPIC's mean size (479x587), each a random three-quarter crop of a real photo."""
    rng, shipped = np.random.default_rng(seed), photos()
    out = []
    for i in range(n):
        photo = shipped[i % len(shipped)]
        left, top = int(rng.integers(0, photo.width // 4)), int(rng.integers(0, photo.height // 4))
        out.append(jpeg(photo.crop((left, top, left + photo.width * 3 // 4, top + photo.height * 3 // 4))
                        .resize((479, 587))))
    return out


def synthetic_shard(out_dir: Path, n: int, seed: int = 0) -> ShardInputs:
    """A shard's pack inputs on disk: n JPEGs of GPIC's mean size (479x587) cut from real
    photos, and the manifest, fetch, filter and caption tables that pack joins."""
    out_dir.mkdir(parents=True, exist_ok=True)
    members, rows = [], []
    for i, data in enumerate(gpic_sized_jpegs(n, seed)):
        key = f"{i:020x}"
        members.append((f"{key}.jpg", data))
        rows.append({"key": key, "split": "train", "source": "wikimedia", "source_id": str(i),
                     "url": f"https://example.org/{i}.jpg", "license": "CC BY 4.0", "license_url": "",
                     "attribution": "Photographer", "title": f"Photo {i}",
                     "retrieved_at": "2026-01-01T00:00:00+00:00", "sha256": "0" * 64,
                     "raw_member": f"{key}.jpg", "fetched_at": "2026-01-01T00:00:00+00:00", "license_id": "CC-BY-4.0",
                     "width": 479, "height": 587, "caption_status": "ok", "caption_model_id": "m",
                     "caption_model_revision": "r", **{level: f"{level} caption of photo {i}" for level in LEVELS},
                     **{f"{level}_flags": "" for level in LEVELS}, **{f"{level}_agreement": 0.1 for level in LEVELS}})
    table = pd.DataFrame(rows)
    paths = ShardInputs(*(str(out_dir / f"{name}.parquet") for name in ("manifest", "fetch", "filter", "captions")),
                        raw=str(out_dir / "raw.tar"))
    write_table(table[["key", "split", "source", "source_id", "url", "license", "license_url", "attribution", "title",
                       "retrieved_at"]], paths.manifest)
    write_table(table[["key", "sha256", "raw_member", "fetched_at", "license_id"]], paths.fetch)
    write_table(table[["key", "width", "height"]], paths.filter)
    write_table(table[["key", "caption_status", "caption_model_id", "caption_model_revision", *LEVELS,
                       *(f"{level}_{x}" for x in ("flags", "agreement") for level in LEVELS)]], paths.captions)
    write_tar(paths.raw, members)
    return paths
