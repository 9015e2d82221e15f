"""`gpic bench caption`: the four caption levels from one shared image prefix (ours) against
the current path, one full-prompt generate per level (the vision tower and the image's
prefill four times), same model, same batches, greedy: same captions."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from gpic.bench.vlm import (
    VisionCounter,
    caption_flops,
    gpic_photos,
    h100_ratio,
    image_tokens_4b,
    prompt_tokens,
    proportional_model,
    scorer_dims,
    scorer_flops,
    tiny_dims,
)
from gpic.config import validate_config
from gpic.contracts import LEVELS
from gpic.devkit.tiny_models import QWEN3_VL_4B, build_tiny_siglip
from gpic.hygiene import Hygiene
from gpic.inference.agreement import AgreementScorer
from gpic.stages.caption import load_model


def bench_caption(model_path: str | None = None, images: int = 16, batch_size: int = 8, device: str = "cpu",
                  backend: str = "transformers", levels: dict | None = None,
                  scorer_path: str | None = None) -> dict[str, float | int | str]:
    """Captioning images/s and output tokens/s for all four levels on 479x587 photos, ours
    against the current path at the same batch size; the captions of both compared; vision
    passes per image counted by a hook. `model_path` None builds the proportional tiny model
    (Qwen3-VL-4B's image tokens per photo against the same prompts). Output lengths follow
    the model: the random one usually runs to the token budget. Then what caption hygiene and
    the agreement scorer add (`scorer_path` None: the proportional SigLIP, whose FLOPs are the
    same share of the proportional captioner's as SigLIP base's of Qwen3-VL-4B's), as a share
    of caption time here and, by FLOPs, of SigLIP base against Qwen3-VL-4B on the GPU path."""
    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_path or str(proportional_model(Path(tmp)))
        config = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"},
                                  "embed": {"model": "m"},
                                  "caption": {"model": model_path, "device": device, "backend": backend,
                                              **({"levels": levels} if levels else {})}})
        cfg, model = config["caption"], load_model(config).vlm
        scorer = AgreementScorer(scorer_path or build_tiny_siglip(Path(tmp) / "siglip-proportional",
                                                                  shape="proportional"), device=device)
    photos = gpic_photos(images)
    asked = {level: (cfg["levels"][level]["prompt"], cfg["levels"][level]["max_new_tokens"]) for level in LEVELS}

    def ours(batch):
        return model.generate_levels(batch, asked)

    def current(batch):
        return {level: model.generate(batch, prompt, budget) for level, (prompt, budget) in asked.items()}

    def run(path) -> tuple[float, int, list, float]:
        outputs, tokens = [], 0
        counter = VisionCounter(model) if backend == "transformers" else None  # vLLM's tower is out of reach
        start = time.perf_counter()
        with counter or contextlib.nullcontext():
            for first in range(0, images, batch_size):
                out = path(photos[first:first + batch_size])
                tokens += sum(g.new_tokens for gens in out.values() for g in gens)
                outputs += [{level: out[level][i] for level in LEVELS} for i in range(len(out[LEVELS[0]]))]
        passes = counter.images / images if counter else float("nan")
        return time.perf_counter() - start, tokens, outputs, passes

    ours(photos[:min(batch_size, images)])  # warm-up: first calls allocate and compile kernels
    ours_s, ours_tokens, ours_out, ours_passes = run(ours)
    baseline_s, baseline_tokens, baseline_out, baseline_passes = run(current)
    same = sum(a[level] == b[level] for a, b in zip(ours_out, baseline_out) for level in LEVELS)
    figures = {"model": model.model_id, "backend": backend, "device": device, "images": images,
               "batch_size": batch_size, "ours_images_per_s": images / ours_s,
               "ours_tokens_per_s": ours_tokens / ours_s,
               "baseline_images_per_s": images / baseline_s, "baseline_tokens_per_s": baseline_tokens / baseline_s,
               "ours_s": ours_s, "baseline_s": baseline_s, "ratio": baseline_s / ours_s,
               "same_captions": f"{same}/{images * len(LEVELS)}",
               "vision_passes_per_image": ours_passes, "baseline_vision_passes_per_image": baseline_passes}
    hygiene = Hygiene.from_config(cfg["hygiene"])
    hygiene.language_of("A warm-up: the language identifier loads on first use.")
    started = time.perf_counter()
    cleaned = []
    for out in ours_out:
        texts = {level: hygiene.clean(out[level].text)[0] for level in LEVELS}
        hygiene.flags(texts, {level: out[level].hit_limit for level in LEVELS})
        cleaned.append([texts[level] for level in LEVELS])
    hygiene_s = time.perf_counter() - started
    scorer.score(photos[:min(batch_size, images)], cleaned[:batch_size])  # warm-up
    started = time.perf_counter()
    for first in range(0, images, batch_size):
        scorer.score(photos[first:first + batch_size], cleaned[first:first + batch_size])
    scorer_s = time.perf_counter() - started
    figures.update(scorer=scorer.model_id, hygiene_s=hygiene_s, scorer_s=scorer_s,
                   added_share=(hygiene_s + scorer_s) / ours_s)
    if backend == "transformers":
        tokens = prompt_tokens(model, photos[0], [prompt for prompt, _ in asked.values()])
        budgets = [budget for _, budget in asked.values()]
        text = tokens["head"] + sum(tokens["suffixes"]) + sum(budgets)
        real = {**tokens, "image": image_tokens_4b(photos[0])}
        figures.update(image_tokens=tokens["image"], text_tokens=text, image_to_text=tokens["image"] / text,
                       image_tokens_4b=real["image"], flop_ratio_h100=h100_ratio("caption", real, budgets=budgets),
                       h100_tflop_per_image=caption_flops(QWEN3_VL_4B, real, budgets, shared=True) / 1e12,
                       scorer_flop_share=scorer_flops(scorer_dims(scorer)) / caption_flops(
                           tiny_dims(model), tokens, budgets, shared=True),
                       scorer_flop_share_h100=scorer_flops() / caption_flops(QWEN3_VL_4B, real, budgets, shared=True))
    return figures
