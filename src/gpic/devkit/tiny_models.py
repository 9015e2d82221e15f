"""Tiny random-weight stand-ins for the pipeline's models, built locally.

The production pipeline uses Qwen3-VL (captioner and judge), SSCD (copy
detection, published as a TorchScript file) and DINOv2 (embeddings).  Tests and
offline smoke runs cannot download those checkpoints, so this module builds
architecturally faithful miniatures from configuration alone, with random
weights drawn from a fixed seed:

* :func:`build_tiny_qwen3_vl` -- a real ``Qwen3VLForConditionalGeneration``
  with a locally trained byte-level BPE tokenizer, Qwen's special tokens and
  chat template, and a real ``Qwen3VLProcessor``.  It loads through the
  ordinary ``AutoProcessor`` / ``AutoModelForImageTextToText`` path.
* :func:`build_tiny_copy_detector` -- a TorchScript descriptor extractor with
  the same calling convention as the published SSCD files.
* :func:`build_tiny_dinov2` -- a ``Dinov2Model`` that loads with ``AutoModel``.
* :func:`build_tiny_siglip` -- a ``SiglipModel`` (the caption agreement scorer's dual
  encoder) with a locally trained SentencePiece tokenizer and a real ``SiglipProcessor``;
  loads with ``AutoProcessor`` / ``AutoModel``.

Everything is deterministic for a given seed: rebuilding yields byte-identical
weight files, hence the same :func:`weights_revision`.
"""

from __future__ import annotations

import io
import json
import random
import warnings
from pathlib import Path

import torch

from gpic.inference import quiet_progress_bars

__all__ = [
    "QWEN3_VL_4B",
    "QWEN_SPECIAL_TOKENS",
    "QWEN3_VL_CHAT_TEMPLATE",
    "build_random_fid_inception",
    "build_tiny_copy_detector",
    "build_tiny_dinov2",
    "build_tiny_models",
    "build_tiny_qwen3_vl",
    "build_tiny_siglip",
]

# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

# Qwen2/Qwen3(-VL) added tokens, in their original id order (151643...).
# The first 14 are special (skipped when decoding); the rest are ordinary
# added tokens, as in the published tokenizer.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# Same pre-tokenisation regex as Qwen2Tokenizer.
_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                      r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# Qwen3-VL's chat template (Instruct), restricted to what the pipeline sends:
# system/user/assistant turns whose content is a string or a list of
# {"type": "image"} / {"type": "video"} / {"type": "text"} parts.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for content in messages[0].content %}"
    "{%- if 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set image_count = namespace(value=0) %}"
    "{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}"
    "{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content_item in message.content %}"
    "{%- if 'text' in content_item %}{{- content_item.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CORPUS_PARAGRAPHS = (
    "A photograph shows a woman standing in front of a white wall. She wears a blue jacket and "
    "holds a small camera in her right hand. The light comes from a window on the left side of "
    "the frame, and the background is slightly out of focus.",
    "The image shows a cup of coffee on a wooden table. A thin layer of foam covers the surface, "
    "and a silver spoon rests on the saucer next to the cup. The colors are warm, mostly brown, "
    "orange and cream, with a dark shadow near the bottom edge.",
    "An orange cat with green eyes lies on a soft grey blanket and looks directly at the viewer. "
    "Its fur has darker stripes along the back and the tail. The picture was taken indoors, close "
    "to the floor, with natural daylight.",
    "A wide landscape shows green hills under a cloudy sky. A narrow road winds between the "
    "fields toward a small village with red roofs. In the distance there are mountains covered "
    "with snow, and a river reflects the light of the afternoon sun.",
    "The street scene is crowded with people walking past shops and cafes. A red bus waits at "
    "the traffic light while two cyclists cross the road. Signs above the doors display the "
    "names of the stores, and trees line the sidewalk.",
    "This is a close-up of a yellow flower with many thin petals. A bee sits in the centre of the "
    "flower, collecting pollen. Drops of water are visible on the leaves, which suggests it "
    "rained shortly before the photo was taken.",
    "A modern building made of glass and steel rises above the city. The windows reflect the "
    "blue sky and a few white clouds. At the base of the building, a square with benches and a "
    "fountain invites visitors to sit and rest.",
    "Two children play with a ball on a sandy beach. Waves roll onto the shore behind them, and "
    "a sailing boat is visible near the horizon. The water is clear and turquoise, and the sand "
    "is bright in the strong summer light.",
    "The kitchen has white cabinets, a black stove and a large window above the sink. Fresh "
    "vegetables, bread and a bowl of fruit are arranged on the counter. A clock on the wall "
    "shows that it is early in the morning.",
    "An old map of the region is printed on yellowed paper. It shows rivers, roads, forests and "
    "the borders between counties. Small numbers and text labels mark the towns, and a compass "
    "rose appears in the lower right corner.",
    "A scientist in a laboratory examines a sample under a microscope. Glass bottles, tubes and a "
    "notebook lie on the bench. The room is bright and clean, and a computer screen displays a "
    "chart with several colored lines.",
    "The painting depicts a quiet harbour at sunset. Fishing boats are tied to the wooden pier, "
    "and the sky is painted in shades of pink, purple and gold. The artist used broad strokes "
    "and thick layers of paint.",
    "A black and white portrait of an elderly man with a beard. He wears glasses and a dark hat, "
    "and he smiles gently. The contrast is high, and the texture of his skin and clothing is "
    "sharp and detailed.",
    "Question: is there any visible text, watermark or logo in the image? Answer: no, the image "
    "contains no text. Describe the main subject, the setting, the colors, the lighting and the "
    "composition in one or two sentences. Rate the caption from one to five.",
    "Numbers and dates: 0 1 2 3 4 5 6 7 8 9 10 12 15 20 25 50 100 2024 2025. Symbols: . , ; : ! ? "
    '( ) [ ] { } " \' - _ / + = * % & # @ < > | ~ `. JSON: {"score": 4, "reason": "accurate"}.',
)


def _tiny_corpus() -> list[str]:
    """A small deterministic English corpus: the paragraphs plus shuffled variants."""
    rng = random.Random(1234)
    texts = list(_CORPUS_PARAGRAPHS)
    words = " ".join(_CORPUS_PARAGRAPHS).split()
    for _ in range(200):
        texts.append(" ".join(rng.choice(words) for _ in range(20)))
    texts += [p.lower() for p in _CORPUS_PARAGRAPHS] + [p.upper() for p in _CORPUS_PARAGRAPHS]
    return texts


def _pipeline_prompts() -> list[str]:
    """The default caption and judge prompts and the chat template's words, repeated: trained
    on, they become about one token per word, as in Qwen's 151k vocabulary."""
    import yaml

    from gpic.config import SCHEMA

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    prompts = [level["prompt"] for level in schema["caption"]["properties"]["levels"]["default"].values()]
    prompts += [c["prompt"] for c in schema["judge"]["properties"]["criteria"]["default"].values()]
    prompts += ["user assistant system", "Good good GOOD Bad bad BAD Safe safe SAFE Unsafe unsafe UNSAFE"]
    return prompts * 50


def _train_bpe(vocab_size: int = 1500, extra: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen's pre-tokeniser on the built-in corpus."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_tiny_corpus() + (extra or []), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return vocab, merges


def _build_qwen_tokenizer(vocab_size: int = 1500, base_vocab: int | None = None, word_prompts: bool = False):
    """The tiny BPE with Qwen's added tokens after it; with `base_vocab`, the BPE vocabulary is
    padded with unreachable filler entries to that size first, so the added tokens get the
    published ids (151643 = <|endoftext|> for Qwen3-VL's 151643-entry BPE). `word_prompts`
    trains on the pipeline's prompts too (about one token per word, as Qwen's tokenizer)."""
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab, merges = _train_bpe(vocab_size, _pipeline_prompts() if word_prompts else None)
    if base_vocab is not None:
        vocab.update({f"<gpic_filler_{i}>": i for i in range(len(vocab), base_vocab)})
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        errors="replace",
        model_max_length=262144,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    # Register the added tokens in Qwen's order so that ids are contiguous
    # right after the BPE vocabulary, exactly as in the published tokenizer.
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], special_tokens=True
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TOKENS])
    # Qwen3-VL (Instruct) ends assistant turns with <|im_end|>; <|endoftext|> pads.
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|im_end|>",
            "extra_special_tokens": [t for t in QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        }
    )
    return tokenizer


# ---------------------------------------------------------------------------
# Qwen3-VL
# ---------------------------------------------------------------------------

# Vision geometry shared by the model and the processors (as in Qwen3-VL).
_PATCH = 16
_MERGE = 2
_TEMPORAL_PATCH = 2
_FACTOR = _PATCH * _MERGE  # pixels per side of one merged vision token
# A ~480x590 photo becomes 7x8 = 56 vision tokens; tiny images at least 4.
TINY_MIN_PIXELS = 4 * _FACTOR * _FACTOR
TINY_MAX_PIXELS = 64 * _FACTOR * _FACTOR


# The architecture of Qwen/Qwen3-VL-4B-Instruct (its config.json, pinned in
# config/production.yaml) and its processor's pixel budget: a 479x587 photo (GPIC's mean size)
# becomes 15x18 = 270 image tokens.
QWEN3_VL_4B = {
    "text": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144,
             "mrope_section": [24, 20, 20], "tie_word_embeddings": True},
    "vision": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
               "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]},
    "base_vocab": 151643,  # BPE entries before <|endoftext|>
    "pixels": {"shortest_edge": 65536, "longest_edge": 16777216},
}
# Shapes of the Qwen3-VL builds. "tiny": the test model (a few dozen image tokens per photo).
# "proportional": the published processor's pixel budget, so a photo has as many image tokens
# as in production against the same text, and widths chosen so that the vision tower's
# linear-layer parameters per patch stay about 0.08 of the language model's per token, as in
# the 4B model (302M per patch against 3.63B per token); attention, quadratic in the tokens,
# weighs more at these widths. "qwen3-vl-4b": the full architecture (4.4B parameters).
SHAPES = {
    "tiny": {
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16, "vocab_size": None, "max_position_embeddings": 4096,
                 "mrope_section": [4, 2, 2], "tie_word_embeddings": False},
        # num_position_embeddings: a 16x16 grid, interpolated to any image size
        "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                   "num_position_embeddings": 256, "deepstack_visual_indexes": [0, 1]},
        "base_vocab": None,
        "pixels": {"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
    },
    "proportional": {
        "text": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 10, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 32, "vocab_size": None, "max_position_embeddings": 32768,
                 "mrope_section": [6, 5, 5], "tie_word_embeddings": False},
        "vision": {"depth": 4, "hidden_size": 64, "intermediate_size": 256, "num_heads": 4,
                   "num_position_embeddings": 2304, "deepstack_visual_indexes": [0, 1, 2]},
        "base_vocab": None,
        "pixels": QWEN3_VL_4B["pixels"],
    },
    "qwen3-vl-4b": QWEN3_VL_4B,
}


def _tiny_qwen3_vl_config(tokenizer, shape: str = "tiny"):
    from transformers import Qwen3VLConfig

    dims = SHAPES[shape]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    endoftext, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    text, vision = dims["text"], dims["vision"]
    tied = text["tie_word_embeddings"]
    text_config = {
        **{k: v for k, v in text.items() if k not in ("mrope_section", "tie_word_embeddings")},
        "vocab_size": text["vocab_size"] or len(tokenizer),
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        # Interleaved multimodal RoPE: sections (t, h, w) must sum to head_dim/2.
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": text["mrope_section"],
            "mrope_interleaved": True,
        },
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "pad_token_id": endoftext,
        "tie_word_embeddings": tied,
    }
    vision_config = {
        **vision,
        "in_channels": 3,
        "patch_size": _PATCH,
        "spatial_merge_size": _MERGE,
        "temporal_patch_size": _TEMPORAL_PATCH,
        "out_hidden_size": text["hidden_size"],
        "hidden_act": "gelu_pytorch_tanh",
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=endoftext,
        eos_token_id=im_end,
        pad_token_id=endoftext,
        tie_word_embeddings=tied,
    )


def _tiny_qwen3_vl_processor(tokenizer, shape: str = "tiny"):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    pixels = SHAPES[shape]["pixels"]
    image_processor = Qwen2VLImageProcessor(
        size=dict(pixels),
        patch_size=_PATCH,
        temporal_patch_size=_TEMPORAL_PATCH,
        merge_size=_MERGE,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": pixels["shortest_edge"], "longest_edge": 4 * pixels["longest_edge"]},
        patch_size=_PATCH,
        temporal_patch_size=_TEMPORAL_PATCH,
        merge_size=_MERGE,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        fps=2,
        min_frames=2,
        max_frames=16,
    )
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def build_tiny_qwen3_vl(out_dir: Path, seed: int = 0, shape: str = "tiny", device: str = "cpu",
                        dtype: torch.dtype = torch.float32) -> Path:
    """Build a tiny random-weight Qwen3-VL checkpoint (model + processor) in ``out_dir``.

    A real ``Qwen3VLForConditionalGeneration`` (2 text layers of width 64 with
    interleaved M-RoPE and deepstack, 2 vision blocks of width 32, patch 16,
    2x2 merge) with ~0.4M parameters (1.7 MB of safetensors), a byte-level BPE tokenizer trained on a
    built-in English text with Qwen's special tokens and chat template, and a
    processor whose pixel budget turns a ~480x590 photo into a few dozen vision
    tokens.  Loads with ``AutoProcessor`` / ``AutoModelForImageTextToText``.

    ``shape`` picks another size of the same build (see ``SHAPES``): "proportional" for the
    benchmarks, "qwen3-vl-4b" for the full architecture (build it on a GPU: ``device="cuda"``,
    ``dtype=torch.bfloat16``; ~9 GB of safetensors). Only "tiny" is pinned byte for byte.
    """
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_qwen_tokenizer(base_vocab=SHAPES[shape]["base_vocab"], word_prompts=shape != "tiny")
    config = _tiny_qwen3_vl_config(tokenizer, shape)
    default_dtype = torch.get_default_dtype()
    on_gpu = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[torch.device(device).index or 0] if on_gpu else []):
        torch.manual_seed(seed)  # above: leave the caller's RNG state alone
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = Qwen3VLForConditionalGeneration(config).eval()
        finally:
            torch.set_default_dtype(default_dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    with quiet_progress_bars():
        model.save_pretrained(out_dir, safe_serialization=True)
    _tiny_qwen3_vl_processor(tokenizer, shape).save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------
# Copy detector (SSCD stand-in)
# ---------------------------------------------------------------------------


class _ProjectionDescriptor(torch.nn.Module):
    """Random projection of a mean-centred 16x16 thumbnail (see build_tiny_copy_detector)."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(16)
        self.proj = torch.nn.Linear(3 * 16 * 16, dim, bias=False)
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(dim, 3 * 16 * 16, generator=generator) / float(dim) ** 0.5
        with torch.no_grad():
            self.proj.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        x = x - x.mean(dim=1, keepdim=True)
        return self.proj(x)


def build_tiny_copy_detector(out_path: Path, seed: int = 0, dim: int = 256) -> Path:
    """Build a TorchScript copy-detection descriptor model, a stand-in for SSCD.

    SSCD is published as a TorchScript file taking an ImageNet-normalised float
    tensor ``(B, 3, H, W)`` and returning ``(B, dim)`` descriptors; this file has
    the same interface (any ``H, W >= 16``; descriptors are not normalised).

    Architecture: ``AdaptiveAvgPool2d(16)`` -> flatten (768) -> subtract each
    sample's mean -> fixed Gaussian random projection ``Linear(768, dim,
    bias=False)`` seeded by ``seed``.

    Why not a small random CNN: a randomly initialised CNN maps all images to
    nearly the same descriptor (cosine ~0.99 between unrelated photos), which
    makes any copy-detection threshold meaningless.  A Gaussian random
    projection approximately preserves inner products and hence cosine
    similarity (Johnson-Lindenstrauss), so descriptors inherit the cosine
    similarity of mean-centred thumbnails: near-copies (re-encodes, resizes)
    score close to 1 and distinct photos score low, which exercises the
    copy-detection path honestly.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit is deprecated upstream but is SSCD's format
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.script(_ProjectionDescriptor(dim, seed).eval())
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
    _write_without_debug_info(buffer.getvalue(), out_path)
    return out_path


def _write_without_debug_info(archive: bytes, out_path: Path) -> None:
    """Rewrite a TorchScript archive without its ``*.debug_pkl`` records.

    ``torch.jit.save`` stores source ranges that embed the absolute path of the
    Python file defining the module, which would make the file's bytes (and
    so :func:`weights_revision`) depend on where gpic is installed.  The debug
    records are optional for ``torch.jit.load``.
    """
    reader = torch._C.PyTorchFileReader(io.BytesIO(archive))
    skip = {"version", ".data/version", ".data/serialization_id"}  # rewritten by the writer
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    if reader.has_record("version"):
        writer.set_min_version(int(reader.get_record("version").decode().strip()))
    for name in reader.get_all_records():
        if name in skip or name.endswith(".debug_pkl"):
            continue
        data = reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del writer
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_bytes(out.getvalue())
    tmp.replace(out_path)


# ---------------------------------------------------------------------------
# DINOv2
# ---------------------------------------------------------------------------


def build_tiny_dinov2(out_dir: Path, seed: int = 0) -> Path:
    """Build a tiny random-weight ``Dinov2Model`` (hidden 32, 2 layers, patch 14, 224 px).

    Saved with ``save_pretrained`` (safetensors) together with DINOv2's usual
    image-processor settings; loads with ``AutoModel.from_pretrained``.
    """
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=224,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(config).eval()
    with quiet_progress_bars():
        model.save_pretrained(out_dir, safe_serialization=True)
    BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        do_convert_rgb=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------
# SigLIP (caption agreement)
# ---------------------------------------------------------------------------

_CAPTION_SENTENCES = (
    "a photo of a cat",
    "a photo of a dog on the grass",
    "an astronaut in a white suit holding a helmet",
    "a cup of coffee on a saucer",
    "a rocket on the launch pad under a blue sky",
    "a red bus in a busy street",
    "two children playing on the beach",
    "a bowl of fruit on a kitchen counter",
    "a black and white portrait of an old man",
    "a yellow flower with a bee in the centre",
)


# tiny: the tests' model. base: google/siglip-base-patch16-224's towers (gpu_check's cost).
# proportional: base's 196 patches and 64 text tokens, widths and depth chosen so that its FLOPs
# per image and four captions are the same share of the proportional Qwen3-VL's caption FLOPs
# as base's are of Qwen3-VL-4B's (1.2%; gpic.bench.vlm.scorer_flops): `gpic bench caption`.
SIGLIP_SHAPES = {
    "tiny": ({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
             {"image_size": 32, "patch_size": 8}),
    "proportional": ({"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2},
                     {"image_size": 224, "patch_size": 16}),
    "base": ({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
             {"image_size": 224, "patch_size": 16}),
}


def build_tiny_siglip(out_dir: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """Build a random-weight ``SiglipModel`` in ``out_dir``: `tiny` (text and vision width 32,
    2 layers, 2 heads; 32 px images in 8 px patches; 64 text positions), `proportional` (for the
    caption bench) or `base` (SigLIP base's towers, 224 px in 16 px patches, for measuring the
    scorer's cost on a GPU); see SIGLIP_SHAPES.

    Its tokenizer is a unigram SentencePiece model trained here on the built-in corpus and a few
    captions (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no BOS, as in the published SigLIP
    vocabulary), wrapped as a ``SiglipTokenizer`` that pads with ``</s>`` like the published one.
    Saved with a ``SiglipProcessor``; loads with ``AutoProcessor`` / ``AutoModel``.
    """
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_tiny_corpus() + list(_CAPTION_SENTENCES) * 5),
        model_writer=proto,
        model_type="unigram",
        vocab_size=500,
        hard_vocab_limit=False,
        num_threads=1,  # deterministic
        pad_id=0, pad_piece="<pad>", eos_id=1, eos_piece="</s>", unk_id=2, unk_piece="<unk>", bos_id=-1,
        minloglevel=2,
    )
    vocab_file = out_dir / "spiece.model"
    vocab_file.write_bytes(proto.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(vocab_file), model_max_length=64)
    dims, pixels = SIGLIP_SHAPES[shape]
    config = SiglipConfig(
        text_config={**dims, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": None},
        vision_config={**dims, **pixels},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config).eval()
    with quiet_progress_bars():
        model.save_pretrained(out_dir, safe_serialization=True)
    side = pixels["image_size"]
    image_processor = SiglipImageProcessor(size={"height": side, "width": side})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def build_tiny_models(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Build all tiny models under ``out_dir``; returns their paths by role."""
    out_dir = Path(out_dir)
    return {
        "vlm": build_tiny_qwen3_vl(out_dir / "qwen3-vl-tiny", seed=seed),
        "copy_detector": build_tiny_copy_detector(out_dir / "sscd-tiny.pt", seed=seed),
        "dinov2": build_tiny_dinov2(out_dir / "dinov2-tiny", seed=seed),
        "agreement": build_tiny_siglip(out_dir / "siglip-tiny", seed=seed),
    }


# ---------------------------------------------------------------------------
# FID Inception (random weights, the real architecture)
# ---------------------------------------------------------------------------


def build_random_fid_inception(out_path: Path, seed: int = 0) -> Path:
    """Write a state dict of the full FID Inception network (gpic.inference.inception: the
    architecture of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, 23.9M parameters,
    ~96 MB) with random weights, to load through the same path as the published file.

    Not tiny: FID's protocol fixes the architecture and its 2048-d pool3 features, so the
    stand-in keeps both; only the weights are random. Convolutions get He-normal weights (BN
    at its defaults is the identity in eval mode), so activations keep their scale through the
    94 convolutions instead of vanishing as under PyTorch's default initialisation. The file
    is rewritten without its random serialization id, so a seed gives the same bytes.
    """
    from gpic.inference.inception import fid_inception_v3

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = fid_inception_v3()
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    _write_without_debug_info(buffer.getvalue(), out_path)
    return out_path
