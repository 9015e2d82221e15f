"""`gpic bench judge`: scores from one forward pass per image and criterion over a shared image
prefix (ours) against the current path, one generate of a few tokens per criterion over the
whole prompt (the vision tower and the image's prefill once per criterion), same model,
same batches."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from gpic.bench.vlm import (
    VisionCounter,
    gpic_photos,
    h100_ratio,
    image_tokens_4b,
    judge_flops,
    prompt_tokens,
    proportional_model,
)
from gpic.config import validate_config
from gpic.devkit.tiny_models import QWEN3_VL_4B
from gpic.stages.judge import judge_batch, load_model

ANSWER_TOKENS = 4  # the current path's token budget for a one-word answer (judge.max_new_tokens was 4)


def bench_judge(model_path: str | None = None, images: int = 32, batch_size: int = 16,
                device: str = "cpu") -> dict[str, float | int | str]:
    """Judge images/s on 479x587 photos with the default criteria, ours against the current
    path at the same batch size; vision passes per image counted by a hook. `model_path`
    None builds the proportional tiny model."""
    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_path or str(proportional_model(Path(tmp)))
        config = validate_config({"sources": ["unused.csv"], "shards": 1, "embed": {"model": "m"},
                                  "caption": {"model": "m"},
                                  "judge": {"model": model_path, "device": device, "batch_size": batch_size}})
        cfg, model = config["judge"], load_model(config)
    photos = gpic_photos(images)
    keys = [f"{i:020x}" for i in range(images)]
    prompts = [spec["prompt"] for spec in cfg["criteria"].values()]

    def ours(first: int) -> None:
        judge_batch(model, keys[first:first + batch_size], photos[first:first + batch_size], cfg)

    def current(first: int) -> None:
        for prompt in prompts:
            model.generate(photos[first:first + batch_size], prompt, ANSWER_TOKENS)

    def run(path) -> tuple[float, float]:
        with VisionCounter(model) as counter:
            start = time.perf_counter()
            for first in range(0, images, batch_size):
                path(first)
            return time.perf_counter() - start, counter.images / images

    ours(0)  # warm-up
    ours_s, ours_passes = run(ours)
    baseline_s, baseline_passes = run(current)
    tokens = prompt_tokens(model, photos[0], prompts)
    text = tokens["head"] + sum(tokens["suffixes"])
    real = {**tokens, "image": image_tokens_4b(photos[0])}
    return {"model": model.model_id, "device": device, "images": images, "batch_size": batch_size,
            "criteria": len(prompts), "ours_images_per_s": images / ours_s,
            "baseline_images_per_s": images / baseline_s, "ours_s": ours_s, "baseline_s": baseline_s,
            "ratio": baseline_s / ours_s, "vision_passes_per_image": ours_passes,
            "baseline_vision_passes_per_image": baseline_passes, "image_tokens": tokens["image"],
            "text_tokens": text, "image_to_text": tokens["image"] / text, "image_tokens_4b": real["image"],
            "flop_ratio_h100": h100_ratio("judge", real, answer_tokens=ANSWER_TOKENS),
            "h100_tflop_per_image": judge_flops(QWEN3_VL_4B, real, ANSWER_TOKENS, shared=True) / 1e12}
