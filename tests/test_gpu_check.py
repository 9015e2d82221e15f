"""scripts/gpu_check.sh, prepared for a machine with a GPU: the CPU dry run of its steps on
the proportional tiny model (GPIC_GPU_CHECK_TINY=1), and the full Qwen3-VL-4B architecture
it builds, from its config, on the meta device (no memory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_its_steps_on_the_tiny_switch(tmp_path):
    env = {**os.environ, "GPIC_GPU_CHECK_TINY": "1", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    run = subprocess.run([str(REPO / "scripts" / "gpu_check.sh")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    f = dict(item.split("=", 1) for item in run.stdout.strip().splitlines()[-1].split())
    assert f["shape"] == "proportional" and f["image_tokens"] == f["image_tokens_4b"] == "270"
    assert float(f["caption_images_per_s"]) > 0 and float(f["judge_images_per_s"]) > 0
    assert float(f["scorer_images_per_s"]) > 0 and float(f["scorer_share"]) > 0
    assert float(f["caption_vision_passes_per_image"]) == 1 and float(f["current_vision_passes_per_image"]) == 4
    assert "vllm_images_per_s" in f or f["vllm"] == "not-installed"
    assert "GPIC's anchor 18.5 images/s" in run.stdout and (tmp_path / "gpu_check.json").is_file()


def test_the_full_architecture_is_qwen3_vl_4b_with_its_token_ids():
    from transformers import Qwen3VLForConditionalGeneration

    from gpic.devkit.tiny_models import _build_qwen_tokenizer, _tiny_qwen3_vl_config

    tokenizer = _build_qwen_tokenizer(base_vocab=151643, word_prompts=True)
    config = _tiny_qwen3_vl_config(tokenizer, "qwen3-vl-4b")
    assert (config.image_token_id, config.vision_start_token_id, config.vision_end_token_id) == (151655, 151652, 151653)
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"]) == [151643, 151645]
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    assert 4.40e9 < total < 4.48e9 and 0.40e9 < vision < 0.43e9  # Qwen3-VL-4B: 4.44B, of which 0.42B vision
    assert model.config.text_config.vocab_size == 151936 and model.config.tie_word_embeddings
