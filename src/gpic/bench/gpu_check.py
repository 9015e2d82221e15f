"""The GPU check (`scripts/gpu_check.sh`): the full Qwen3-VL-4B architecture built from its
config with random weights, loaded through the pipeline's own loader, and both caption
backends timed on GPIC-sized photos at GPIC's budgets; images/s per GPU against GPIC's
anchor (18.5 images/s: ~1,500 H100-hours for 100M images) and the target (37). Also the
judge, and the current caption path on a subset for the measured ratio.

Random weights never emit end-of-sequence, so every level decodes its whole budget: an
upper bound on the work per image (the real model stops earlier on the short levels).

Environment: GPIC_GPU_CHECK_TINY=1 runs the same steps with the proportional tiny model on
the CPU (what the tests run); GPIC_GPU_CHECK_IMAGES, _BATCH, _BASELINE_IMAGES, _JUDGE_BATCH
override the sizes; GPIC_GPU_CHECK_DIR keeps the built checkpoint there (else a temporary
folder)."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpic.bench import figures_line
from gpic.bench.vlm import (
    GPIC_H100_IMAGES_PER_S,
    TARGET_IMAGES_PER_S,
    VisionCounter,
    caption_flops,
    gpic_photos,
    image_tokens_4b,
    prompt_tokens,
)
from gpic.config import validate_config
from gpic.contracts import LEVELS
from gpic.devkit.tiny_models import QWEN3_VL_4B, build_tiny_qwen3_vl, build_tiny_siglip
from gpic.inference.agreement import AgreementScorer
from gpic.stages.caption import Captioner, caption_batch
from gpic.stages.judge import judge_batch


def _env(name: str, default: int) -> int:
    return int(os.environ.get(f"GPIC_GPU_CHECK_{name}", default))


def _say(message: str) -> None:
    print(message, flush=True)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _images_per_s(fn, photos: list, batch: int, device: str) -> tuple[float, float]:
    """Images/s of fn over `photos` in batches, and the wall seconds."""
    _sync(device)
    start = time.perf_counter()
    for first in range(0, len(photos), batch):
        fn(photos[first:first + batch])
    _sync(device)
    seconds = time.perf_counter() - start
    return len(photos) / seconds, seconds


def run(out: Path) -> dict:
    tiny = os.environ.get("GPIC_GPU_CHECK_TINY") == "1"
    device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with GPIC_GPU_CHECK_TINY=1 for the CPU dry run")
    shape, dtype = ("proportional", torch.float32) if tiny else ("qwen3-vl-4b", torch.bfloat16)
    images = _env("IMAGES", 4 if tiny else 512)
    batch = _env("BATCH", 2 if tiny else 64)
    baseline_images = _env("BASELINE_IMAGES", 2 if tiny else 64)
    judge_batch_size = _env("JUDGE_BATCH", 2 if tiny else 64)
    config = validate_config({"sources": ["unused.csv"], "shards": 1, "embed": {"model": "m"},
                              "judge": {"model": "m"}, "caption": {"model": "m"}})
    levels = config["caption"]["levels"]  # GPIC's four levels and budgets (12, 32, 96, 256)
    if tiny:
        levels = {level: {**spec, "max_new_tokens": 4} for level, spec in levels.items()}
    budgets = [levels[level]["max_new_tokens"] for level in LEVELS]
    figures: dict = {"device": torch.cuda.get_device_name() if not tiny else "cpu", "shape": shape,
                     "images": images, "batch_size": batch, "budgets": "/".join(map(str, budgets))}

    started = time.perf_counter()
    path = build_tiny_qwen3_vl(out / shape, shape=shape, device=device, dtype=dtype)
    figures["build_s"] = time.perf_counter() - started
    _say(f"built {shape} from its config with random weights in {figures['build_s']:.0f} s: {path}")

    from gpic.inference.vlm import VisionLanguageModel

    started = time.perf_counter()
    vlm = VisionLanguageModel(path, device=device, dtype="bfloat16" if not tiny else "float32")
    figures["load_s"] = time.perf_counter() - started
    figures["parameters_b"] = sum(p.numel() for p in vlm.model.parameters()) / 1e9
    _say(f"loaded through VisionLanguageModel in {figures['load_s']:.0f} s: {figures['parameters_b']:.3g}B parameters")

    photos = gpic_photos(images)
    asked = {level: (levels[level]["prompt"], levels[level]["max_new_tokens"]) for level in LEVELS}
    keys = [f"{i:020x}" for i in range(images)]
    tokens = prompt_tokens(vlm, photos[0], [prompt for prompt, _ in asked.values()])
    figures["image_tokens"] = tokens["image"]
    figures["image_tokens_4b"] = image_tokens_4b(photos[0])

    # random weights loop: no recaption, so the figure is the captioner's (the scorer is timed apart)
    caption_cfg = {**config["caption"], "levels": levels,
                   "on_flag": dict.fromkeys(config["caption"]["on_flag"], "keep")}

    def ours(chunk):
        return caption_batch(Captioner(vlm), keys[:len(chunk)], chunk, caption_cfg)

    def current(chunk):
        return {level: vlm.generate(chunk, prompt, budget) for level, (prompt, budget) in asked.items()}

    ours(photos[:batch])  # warm-up: allocation, kernels
    with VisionCounter(vlm) as counter:
        figures["caption_images_per_s"], figures["caption_s"] = _images_per_s(ours, photos, batch, device)
    figures["caption_vision_passes_per_image"] = counter.images / images
    figures["caption_vs_anchor"] = figures["caption_images_per_s"] / GPIC_H100_IMAGES_PER_S
    if not tiny:  # the 4B model's forward FLOPs per image (every budget decoded) at the measured rate
        figures["achieved_tflops"] = (caption_flops(QWEN3_VL_4B, {**tokens, "image": figures["image_tokens_4b"]},
                                                    budgets, shared=True) * figures["caption_images_per_s"] / 1e12)
    _say(f"caption (transformers, ours): {figures['caption_images_per_s']:.2f} images/s per GPU, "
         f"{figures['caption_vision_passes_per_image']:g} vision passes per image; GPIC's anchor "
         f"{GPIC_H100_IMAGES_PER_S} images/s (x{figures['caption_vs_anchor']:.2f}), target {TARGET_IMAGES_PER_S}")

    if baseline_images:
        subset = photos[:baseline_images]
        with VisionCounter(vlm) as counter:
            figures["current_images_per_s"], _ = _images_per_s(current, subset, batch, device)
        figures["current_vision_passes_per_image"] = counter.images / len(subset)
        figures["ratio"] = figures["caption_images_per_s"] / figures["current_images_per_s"]
        _say(f"caption (transformers, current path: one generate per level) on {len(subset)} images: "
             f"{figures['current_images_per_s']:.2f} images/s; ours x{figures['ratio']:.2f}")

    # the agreement scorer at SigLIP base's shape (random weights), four captions per image
    scorer = AgreementScorer(build_tiny_siglip(out / "siglip", shape="tiny" if tiny else "base"), device=device)
    texts = [[f"A {level} caption of a photograph with some words in it." for level in LEVELS]] * batch
    scorer.score(photos[:batch], texts[:batch])  # warm-up
    figures["scorer_images_per_s"], _ = _images_per_s(
        lambda chunk: scorer.score(chunk, texts[:len(chunk)]), photos, batch, device)
    figures["scorer_share"] = figures["caption_images_per_s"] / figures["scorer_images_per_s"]
    _say(f"agreement scorer ({'tiny' if tiny else 'SigLIP base'} shape, four captions per image): "
         f"{figures['scorer_images_per_s']:.1f} images/s, {figures['scorer_share']:.1%} of caption time")

    judge_cfg = {**config["judge"], "reject_threshold": 0.5}
    judge_batch(vlm, keys[:judge_batch_size], photos[:judge_batch_size], judge_cfg)  # warm-up
    figures["judge_images_per_s"], _ = _images_per_s(
        lambda chunk: judge_batch(vlm, keys[:len(chunk)], chunk, judge_cfg), photos, judge_batch_size, device)
    _say(f"judge (transformers, both criteria): {figures['judge_images_per_s']:.1f} images/s per GPU")
    if not tiny:
        figures["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    vlm.model = None  # free the GPU for vLLM's engine
    gc.collect()
    with contextlib.suppress(Exception):
        torch.cuda.empty_cache()

    try:
        from gpic.inference.vlm import VllmModel
        vllm = VllmModel(path, dtype="bfloat16" if not tiny else "float32", gpu_memory_utilization=0.85)
    except ImportError as exc:
        figures["vllm"] = "not-installed"
        _say(f"caption (vllm): skipped, {exc}")
    else:
        vllm.generate_levels(photos[:batch], asked)  # warm-up
        figures["vllm_images_per_s"], _ = _images_per_s(lambda chunk: vllm.generate_levels(chunk, asked), photos,
                                                        images, device)
        figures["vllm_vs_anchor"] = figures["vllm_images_per_s"] / GPIC_H100_IMAGES_PER_S
        _say(f"caption (vllm, all {images} images in one engine call): {figures['vllm_images_per_s']:.2f} "
             f"images/s per GPU (x{figures['vllm_vs_anchor']:.2f} of the anchor)")
    return figures


def main() -> int:
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    keep = os.environ.get("GPIC_GPU_CHECK_DIR")
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="gpic-gpu-check-")) as folder:
        figures = run(Path(folder))
    if out := os.environ.get("OUT"):
        Path(out, "gpu_check.json").write_text(json.dumps(figures, indent=1))
    print(figures_line(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
