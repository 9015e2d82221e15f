"""`gpic bench fd`: our FD-DINOv2 preprocessing and forward against the checkpoint's
AutoImageProcessor on the same JPEG bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gpic.bench import best_of
from gpic.fd import decode
from gpic.inference.dinov2 import DinoV2Features


def demo_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs of GPIC's mean size (479x587) cut from real photos shipped with scikit-image."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
              for name in ("astronaut", "coffee", "chelsea", "rocket")]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        left, top = int(rng.integers(0, photo.width // 4)), int(rng.integers(0, photo.height // 4))
        image = photo.crop((left, top, left + photo.width * 3 // 4, top + photo.height * 3 // 4)).resize((479, 587))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def bench_fd(model: str | Path, n: int = 64, batch_size: int = 32, repeat: int = 3, device: str = "cpu") -> dict:
    """Feature extraction images/s from the same JPEG bytes: ours (PIL resize + numpy
    normalisation + forward) against the usual path (decode, the checkpoint's
    AutoImageProcessor, the same forward). Both include decoding; one thread each."""
    import torch
    from transformers import AutoImageProcessor

    blobs = demo_jpegs(n)
    batches = [blobs[i:i + batch_size] for i in range(0, n, batch_size)]
    features = DinoV2Features(model, device)
    processor = AutoImageProcessor.from_pretrained(model)

    def ours() -> None:
        for batch in batches:
            features(np.stack([decode(str(i), b) for i, b in enumerate(batch)]))

    def baseline() -> None:
        for batch in batches:
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in batch]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            with torch.inference_mode():
                features.model(pixel_values=pixels).last_hidden_state[:, 0].cpu()

    ours(), baseline()  # warm-up: first calls allocate
    ours_s, baseline_s = best_of(ours, repeat), best_of(baseline, repeat)
    return {"images": n, "batch_size": batch_size, "model": features.model_id,
            "baseline_processor": type(processor).__name__, "ours_images_per_s": n / ours_s,
            "baseline_images_per_s": n / baseline_s, "ratio": baseline_s / ours_s,
            "ours_s": ours_s, "baseline_s": baseline_s}
