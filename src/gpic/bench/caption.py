"""`gpic bench caption`: batched captioning against one image at a time, same model."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

from PIL import Image

from gpic.bench import synthetic_shard
from gpic.config import validate_config
from gpic.contracts import LEVELS
from gpic.stages.caption import caption_batch, load_model
from gpic.store import read_tar


def bench_caption(model_path: str, images: int = 16, batch_size: int = 8, device: str = "cpu",
                  backend: str = "transformers", levels: dict | None = None) -> dict[str, float | int | str]:
    """Captioning images/s and output tokens/s for all four levels on 479x587 photos: ours
    (batches of `batch_size`) against the same model one image at a time (the baseline).
    Output lengths follow the model: the tiny random model usually runs to the token budget."""
    config = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"}, "embed": {"model": "m"},
                           "caption": {"model": model_path, "device": device, "backend": backend,
                                       **({"levels": levels} if levels else {})}})
    cfg, model = config["caption"], load_model(config)
    with tempfile.TemporaryDirectory() as tmp:
        photos = [Image.open(io.BytesIO(data)).convert("RGB")
                  for data in read_tar(synthetic_shard(Path(tmp), images).raw).values()]
    keys = [f"{i:020x}" for i in range(images)]

    def run(size: int) -> tuple[float, int]:
        start, tokens = time.perf_counter(), 0
        for first in range(0, images, size):
            rows = caption_batch(model, keys[first:first + size], photos[first:first + size], cfg["levels"])
            tokens += sum(row[f"{level}_tokens"] for row in rows for level in LEVELS)
        return time.perf_counter() - start, tokens

    run(min(batch_size, images))  # warm-up: first calls allocate and compile kernels
    ours_s, ours_tokens = run(batch_size)
    baseline_s, baseline_tokens = run(1)
    return {"model": model.model_id, "backend": backend, "device": device, "images": images, "batch_size": batch_size,
            "ours_images_per_s": images / ours_s, "ours_tokens_per_s": ours_tokens / ours_s,
            "baseline_images_per_s": images / baseline_s, "baseline_tokens_per_s": baseline_tokens / baseline_s,
            "ours_s": ours_s, "baseline_s": baseline_s, "ratio": baseline_s / ours_s}
