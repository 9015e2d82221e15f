"""`gpic bench embed`: the assess job's embed step as it is now (images the judge decoded,
every batch one forward pass of square-resized images, the pHash read from the filter's
table) against the current path (decode again, imagehash's pHash, short-side resize with
only equal shapes batched), on real photos of mixed aspect ratios; and how far the
descriptors and hashes of the two are apart."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from gpic.bench import jpeg, photos
from gpic.config import validate_config
from gpic.images import VLM_MAX_SIDE, load_rgb
from gpic.stages.embed import Describer, load_model
from gpic.stages.filter import measure

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")  # shipped, colour


def mixed_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs cut from real photos at aspect ratios from 1:2 to 2:1, long side 320 to 1024 px
    (mostly distinct shapes, as on the web)."""
    rng = np.random.default_rng(seed)
    shipped = photos(PHOTOS)
    out = []
    for i in range(n):
        photo = shipped[i % len(shipped)]
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
        width = min(photo.width, round(photo.height * aspect))
        height = min(photo.height, round(width / aspect))
        left, top = int(rng.integers(0, photo.width - width + 1)), int(rng.integers(0, photo.height - height + 1))
        long_side = int(rng.integers(320, 1025))
        scale = long_side / max(width, height)
        crop = photo.crop((left, top, left + width, top + height))
        out.append(jpeg(crop.resize((max(16, round(width * scale)), max(16, round(height * scale))),
                                    Image.Resampling.LANCZOS)))
    return out


def _hamming(a: str, b: str) -> int:
    return int(imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b))


def bench_embed(model_path: str | None = None, images: int = 256, batch_size: int = 64,
                device: str = "cpu") -> dict[str, float | int | str]:
    """Embed images/s, ours against the current path (see the module); cosine between the two
    descriptors of each image and Hamming distance between the two pHashes. `model_path` None
    builds the tiny TorchScript stand-in for SSCD."""
    from gpic.devkit.tiny_models import build_tiny_copy_detector

    data = mixed_jpegs(images)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_path or str(build_tiny_copy_detector(Path(tmp) / "sscd-tiny.pt"))
        config = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"},
                                  "caption": {"model": "m"},
                                  "embed": {"model": model_path, "device": device, "batch_size": batch_size}})
        detector = load_model(config)
    filter_phash = [measure(d, config["filter"])["phash"] for d in data]  # the filter stage computed these
    decoded = [load_rgb(d, VLM_MAX_SIDE) for d in data]  # the judge decoded these, in the assess job
    keys = [f"{i:020x}" for i in range(images)]

    def ours() -> tuple[np.ndarray, list[str]]:
        describer = Describer(detector, batch_size)
        describer.add(keys, decoded)
        rows = describer.rows()
        return (np.stack([np.frombuffer(r["descriptor"], dtype=np.float16) for r in rows]),
                list(dict(zip(keys, filter_phash)).values()))

    def current() -> tuple[np.ndarray, list[str]]:
        descriptors, hashes = [], []
        for first in range(0, images, batch_size):
            batch = [load_rgb(d, VLM_MAX_SIDE) for d in data[first:first + batch_size]]
            hashes += [str(imagehash.phash(image)) for image in batch]
            descriptors.append(detector.describe_per_image(batch))
        return np.concatenate(descriptors), hashes

    def timed(path) -> tuple[float, int, tuple]:
        calls = detector.forward_calls
        start = time.perf_counter()
        out = path()
        return time.perf_counter() - start, detector.forward_calls - calls, out

    ours()  # warm-up
    ours_s, ours_calls, (ours_d, ours_h) = timed(ours)
    baseline_s, baseline_calls, (base_d, base_h) = timed(current)
    a, b = ours_d.astype(np.float32), base_d.astype(np.float32)
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    hamming = [_hamming(x, y) for x, y in zip(ours_h, base_h)]
    return {"model": detector.model_id, "device": device, "images": images, "batch_size": batch_size,
            "shapes": len({im.size for im in decoded}), "ours_images_per_s": images / ours_s,
            "baseline_images_per_s": images / baseline_s, "ours_s": ours_s, "baseline_s": baseline_s,
            "ratio": baseline_s / ours_s, "ours_forward_passes": ours_calls, "baseline_forward_passes": baseline_calls,
            "baseline_images_per_pass": images / baseline_calls, "cosine_min": float(cosine.min()),
            "cosine_mean": float(cosine.mean()), "phash_hamming_median": float(np.median(hamming)),
            "phash_hamming_max": int(max(hamming))}
