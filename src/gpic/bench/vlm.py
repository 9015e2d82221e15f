"""Shared by `gpic bench caption`, `gpic bench judge` and the GPU check: the proportional
tiny Qwen3-VL, GPIC-sized photos, a vision-tower counter, and the forward-FLOP model of a
Qwen3-VL architecture from which the expected H100 ratio of ours to the current path is
computed (the CPU times of a tiny model say little about an H100: its widths make attention
and per-call overheads weigh far more than on the 4B model)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from gpic.bench import synthetic_shard
from gpic.devkit.tiny_models import QWEN3_VL_4B, SHAPES, build_tiny_qwen3_vl
from gpic.images import VLM_MAX_SIDE, load_rgb
from gpic.store import read_tar

GPIC_H100_IMAGES_PER_S = 18.5  # GPIC: ~1,500 H100-hours for 100M images, four caption levels
TARGET_IMAGES_PER_S = 37.0


def proportional_model(folder: Path) -> Path:
    """The bench's tiny model: Qwen3-VL-4B's pixel budget (a 479x587 photo is 270 image
    tokens, as in production), widths keeping the vision tower's share (see SHAPES)."""
    return build_tiny_qwen3_vl(Path(folder) / "qwen3-vl-proportional", shape="proportional")


def gpic_photos(n: int, seed: int = 0) -> list[Image.Image]:
    """n photos of GPIC's mean size (479x587) cut from real photos, decoded as the stages do."""
    with tempfile.TemporaryDirectory() as tmp:
        return [load_rgb(data, VLM_MAX_SIDE) for data in read_tar(synthetic_shard(Path(tmp), n, seed).raw).values()]


class VisionCounter:
    """Forward passes of a VisionLanguageModel's vision tower and the images they encoded,
    counted by a forward hook while the context is open."""

    def __init__(self, vlm) -> None:
        model = vlm.model
        self.visual = getattr(model, "visual", None) or model.model.visual
        self.calls = self.images = 0

    def _hook(self, module, args, kwargs, output) -> None:
        self.calls += 1
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.images += int(grid.shape[0]) if grid is not None else 1

    def __enter__(self) -> VisionCounter:
        self._handle = self.visual.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def prompt_tokens(vlm, image: Image.Image, prompts: list[str]) -> dict[str, int | list[int]]:
    """Tokens of one image's prompts: image tokens, the head's text tokens (chat start,
    vision start and end), and each prompt's own (with the template's tail)."""
    head, _ = vlm._template_parts()
    ids = vlm.processor(text=[head], images=[image], return_tensors="pt")["input_ids"][0]
    image_tokens = int((ids == vlm.model.config.image_token_id).sum())
    return {"image": image_tokens, "head": int(len(ids)) - image_tokens,
            "suffixes": [len(vlm._suffix_ids(p)) for p in prompts]}


def image_tokens_4b(image: Image.Image) -> int:
    """Image tokens Qwen3-VL-4B's processor gives this image (32 px per merged token, its
    pixel budget), whatever model the bench runs."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    pixels = QWEN3_VL_4B["pixels"]
    height, width = smart_resize(image.height, image.width, factor=32, min_pixels=pixels["shortest_edge"],
                                 max_pixels=pixels["longest_edge"])
    return height * width // 32**2


# --------------------------------------------------------------------------- FLOP model
# Forward FLOPs (2 per multiply-add) of the linear layers and of attention's scores and
# weighted sums; norms, activations and rotary embeddings are left out (under 1%).


def _lm_layer_linear(t: dict) -> int:
    q, kv = t["num_attention_heads"] * t["head_dim"], t["num_key_value_heads"] * t["head_dim"]
    h = t["hidden_size"]
    return h * q + 2 * h * kv + q * h + 3 * h * t["intermediate_size"]


def lm_flops(dims: dict, tokens: int, context: float) -> float:
    """`tokens` new tokens through the language model, each attending to `context` on average."""
    t = dims["text"]
    per_layer = 2 * tokens * _lm_layer_linear(t) + 4 * tokens * context * t["num_attention_heads"] * t["head_dim"]
    return per_layer * t["num_hidden_layers"]


def logits_flops(dims: dict, positions: int) -> float:
    return 2.0 * positions * dims["text"]["hidden_size"] * (dims["text"]["vocab_size"] or 151936)


def vision_flops(dims: dict, image_tokens: int) -> float:
    """One image of `image_tokens` merged tokens (4 patches each) through the vision tower:
    patch embedding, blocks (full attention within the image), the merger and the deepstack
    mergers."""
    v, out = dims["vision"], dims["text"]["hidden_size"]
    patches, h = 4 * image_tokens, v["hidden_size"]
    embed = 2 * patches * (3 * 2 * 16 * 16) * h
    blocks = v["depth"] * (2 * patches * (4 * h * h + 2 * h * v["intermediate_size"]) + 4 * patches * patches * h)
    mergers = (1 + len(v["deepstack_visual_indexes"])) * 2 * image_tokens * (4 * h * 4 * h + 4 * h * out)
    return embed + blocks + mergers


def caption_flops(dims: dict, tokens: dict, budgets: list[int], shared: bool) -> float:
    """One image's four levels, each decoding its whole budget (an upper bound: the real
    model stops earlier on short levels). `shared`: ours, the image's prefix once and each
    level's prompt continuing from its KV cache; else the current path, one full-prompt
    generate per level."""
    prefix = tokens["head"] + tokens["image"]
    total = vision_flops(dims, tokens["image"]) * (1 if shared else len(budgets))
    if shared:
        total += lm_flops(dims, prefix, prefix / 2)
    for suffix, budget in zip(tokens["suffixes"], budgets):
        prompt = prefix + suffix
        total += lm_flops(dims, suffix, prefix + suffix / 2) if shared else lm_flops(dims, prompt, prompt / 2)
        total += lm_flops(dims, budget - 1, prompt + budget / 2) + logits_flops(dims, budget)
    return total


def judge_flops(dims: dict, tokens: dict, answer_tokens: int, shared: bool) -> float:
    """One image's criteria. `shared`: ours, the prefix once and one forward over each
    criterion's prompt, one logit position each; else the current path, one generate of up
    to `answer_tokens` tokens per criterion over the whole prompt."""
    prefix = tokens["head"] + tokens["image"]
    if shared:
        return (vision_flops(dims, tokens["image"]) + lm_flops(dims, prefix, prefix / 2)
                + sum(lm_flops(dims, s, prefix + s / 2) + logits_flops(dims, 1) for s in tokens["suffixes"]))
    return sum(vision_flops(dims, tokens["image"]) + lm_flops(dims, prefix + s, (prefix + s) / 2)
               + lm_flops(dims, answer_tokens - 1, prefix + s + answer_tokens / 2) + logits_flops(dims, answer_tokens)
               for s in tokens["suffixes"])


# google/siglip-base-patch16-224's config (the production agreement scorer): both towers 12
# layers of width 768 and MLP 3072; 196 patches of 16 px at 224 px; texts padded to 64 tokens.
SIGLIP_BASE = {"hidden_size": 768, "intermediate_size": 3072, "layers": 12, "patches": 196, "patch": 16,
               "text_tokens": 64}


def scorer_flops(dims: dict = SIGLIP_BASE, captions: int = 4) -> float:
    """One image and its `captions` through the agreement scorer: the vision tower once, the
    text tower once per caption (both pre-norm transformer encoders; the pooling heads, under
    1%, left out)."""
    h, inner, layers = dims["hidden_size"], dims["intermediate_size"], dims["layers"]

    def encoder(tokens: int) -> float:
        return layers * (2 * tokens * (4 * h * h + 2 * h * inner) + 4 * tokens * tokens * h)

    embed = 2 * dims["patches"] * 3 * dims["patch"] ** 2 * h
    return embed + encoder(dims["patches"]) + captions * encoder(dims["text_tokens"])


def scorer_dims(scorer) -> dict:
    """scorer_flops' dims of a loaded SigLIP (its vision tower's; both towers share widths)."""
    vision = scorer.model.config.vision_config
    return {"hidden_size": vision.hidden_size, "intermediate_size": vision.intermediate_size,
            "layers": vision.num_hidden_layers, "patches": (vision.image_size // vision.patch_size) ** 2,
            "patch": vision.patch_size, "text_tokens": scorer.max_text_tokens}


def h100_ratio(kind: str, tokens: dict, **kwargs) -> float:
    """The current path's FLOPs over ours on the Qwen3-VL-4B architecture (`tokens` as
    `prompt_tokens` gives them, the image's with 4B's pixel budget): the expected speed-up on
    an H100 where the work is compute-bound (prefill and the vision tower; the decode steps,
    memory-bound at these batch sizes, gain less than their FLOPs say)."""
    flops = caption_flops if kind == "caption" else judge_flops
    return flops(QWEN3_VL_4B, tokens, shared=False, **kwargs) / flops(QWEN3_VL_4B, tokens, shared=True, **kwargs)


def tiny_dims(vlm) -> dict:
    """The FLOP model's dims of a loaded model (to state the tiny model's own proportions)."""
    text, vision = vlm.model.config.text_config, vlm.model.config.vision_config
    keys = SHAPES["tiny"]
    return {"text": {k: getattr(text, k) for k in keys["text"] if hasattr(text, k)},
            "vision": {k: getattr(vision, k) for k in keys["vision"]}}
