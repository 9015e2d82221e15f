"""Vision-language model inference: the real path behind the captioner and the judge.

:class:`VisionLanguageModel` wraps any ``AutoModelForImageTextToText``
checkpoint stored in a local directory (Qwen3-VL in production, the tiny
random-weight model from :mod:`gpic.devkit.tiny_models` in tests).  Nothing is ever
downloaded (``local_files_only=True``) and only safetensors weights are
accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gpic.identity import weights_revision
from gpic.inference import checkpoint_name

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Generation", "VisionLanguageModel", "VllmModel"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class Generation:
    """One generated answer."""

    text: str  # decoded new tokens, special tokens removed, whitespace stripped
    new_tokens: int  # number of generated tokens (up to and including EOS; padding after EOS excluded)
    hit_limit: bool  # True when generation stopped at max_new_tokens without EOS


def _resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(_DTYPES)}") from None


def _model_id(path: Path, config: dict) -> str:
    """The checkpoint's name: config ``_name_or_path`` if it is a hub-style id, else from the path."""
    name = str(config.get("_name_or_path") or "").strip()
    if name and not name.startswith(("/", ".", "~")) and not Path(name).exists():
        return name
    return checkpoint_name(path)


class VisionLanguageModel:
    """Any AutoModelForImageTextToText checkpoint (Qwen3-VL in production) from a local directory."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        dtype: str = "auto",
        max_pixels: int | None = None,
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"vision-language model directory does not exist: {self.path}")
        if not self.path.is_dir():
            raise ValueError(f"vision-language model path is not a directory: {self.path}")
        config_file = self.path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"not a model directory (no config.json): {self.path}")
        if not any(self.path.glob("*.safetensors")):
            raise ValueError(f"no safetensors weights in {self.path} (pickled weights are refused)")
        try:
            raw_config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable config.json in {self.path}: {exc}") from exc

        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype, device)
        self.model_id = _model_id(self.path, raw_config)
        self.revision = weights_revision(self.path)

        try:
            self.processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(
                self.path, local_files_only=True, use_safetensors=True, dtype=self.dtype
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot load vision-language model from {self.path}: {exc}") from exc
        self.model = model.to(self.device).eval()

        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # decoder-only batching: prompts must end at the same position
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if max_pixels is not None:
            self._set_max_pixels(int(max_pixels))

        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos)
        if not self.eos_token_ids:
            raise ValueError(f"model in {self.path} defines no end-of-sequence token")
        pad = self.model.generation_config.pad_token_id
        self.pad_token_id: int = tokenizer.pad_token_id if pad is None else pad

    def _set_max_pixels(self, max_pixels: int) -> None:
        image_processor = self.processor.image_processor
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        size = dict(image_processor.size or {})
        size["longest_edge"] = max_pixels
        if size.get("shortest_edge") is not None and size["shortest_edge"] > max_pixels:
            size["shortest_edge"] = max_pixels
        image_processor.size = size
        if hasattr(image_processor, "max_pixels"):
            image_processor.max_pixels = max_pixels
        if hasattr(image_processor, "min_pixels") and size.get("shortest_edge") is not None:
            image_processor.min_pixels = size["shortest_edge"]

    def __repr__(self) -> str:
        return (
            f"VisionLanguageModel(model_id={self.model_id!r}, revision={self.revision!r}, "
            f"device={str(self.device)!r}, dtype={self.dtype})"
        )

    def _chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int) -> list[Generation]:
        """The same text prompt applied to each image, one batch, greedy decoding (do_sample=False), left padding."""
        rows = self._generate_ids(images, prompt, max_new_tokens)
        results = []
        for row in rows:
            end = next((i for i, tok in enumerate(row) if tok in self.eos_token_ids), None)
            # The EOS token counts as generated but is not part of the text; padding after it is dropped.
            body = row if end is None else row[:end]
            new_tokens = len(row) if end is None else end + 1
            text = self.processor.tokenizer.decode(
                body, skip_special_tokens=True, clean_up_tokenization_spaces=False
            ).strip()
            hit_limit = end is None and new_tokens >= max_new_tokens
            results.append(Generation(text=text, new_tokens=new_tokens, hit_limit=hit_limit))
        return results

    def generate_levels(self, images: list[Image.Image],
                        levels: dict[str, tuple[str, int]]) -> dict[str, list[Generation]]:
        """Several (prompt, max_new_tokens) over the same images: one batched generate per
        level. The vision tower runs once per level here; the vLLM backend shares it."""
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return {level: self.generate(images, prompt, budget) for level, (prompt, budget) in levels.items()}

    def _generate_ids(self, images: list[Image.Image], prompt: str, max_new_tokens: int) -> list[list[int]]:
        """Raw new-token ids per image (rows padded after EOS with the pad id)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not images:
            return []
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        chat = self._chat(prompt)
        inputs = self.processor(
            text=[chat] * len(images), images=images, padding=True, padding_side="left", return_tensors="pt"
        ).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_token_id,
                eos_token_id=sorted(self.eos_token_ids),
            )
        return output[:, prompt_len:].tolist()


class VllmModel:
    """The same interface on vLLM's offline engine, for GPU nodes. All prompts of a batch
    (images x levels) go to one `LLM.generate`; the image comes first in every prompt, so
    with prefix caching the four levels of an image share its encoding and prefix.
    vLLM is an optional extra (`pip install 'gpic[vllm]'` on a GPU node image, with the torch
    build vLLM wants); nothing else imports it."""

    def __init__(self, path: str | Path, max_pixels: int | None = None, dtype: str = "bfloat16",
                 gpu_memory_utilization: float = 0.9) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(f"caption backend 'vllm' needs the vllm package (pip install 'gpic[vllm]' on a GPU "
                              f"node): {exc}") from None
        from transformers import AutoProcessor

        self.path = Path(path).expanduser()
        if not any(self.path.glob("*.safetensors")):
            raise ValueError(f"no safetensors weights in {self.path} (pickled weights are refused)")
        self.model_id = _model_id(self.path, json.loads((self.path / "config.json").read_text()))
        self.revision = weights_revision(self.path)
        self.processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
        mm_kwargs = {"max_pixels": max_pixels} if max_pixels else None
        self.llm = LLM(model=str(self.path), dtype=dtype, enable_prefix_caching=True, seed=0,
                       limit_mm_per_prompt={"image": 1}, mm_processor_kwargs=mm_kwargs,
                       gpu_memory_utilization=gpu_memory_utilization)

    def generate_levels(self, images: list[Image.Image],
                        levels: dict[str, tuple[str, int]]) -> dict[str, list[Generation]]:
        from vllm import SamplingParams

        requests, params, order = [], [], []
        for level, (prompt, budget) in levels.items():
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            chat = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for image in images:
                requests.append({"prompt": chat, "multi_modal_data": {"image": image.convert("RGB")}})
                params.append(SamplingParams(temperature=0.0, max_tokens=budget, skip_special_tokens=True))
                order.append(level)
        out: dict[str, list[Generation]] = {level: [] for level in levels}
        for level, result in zip(order, self.llm.generate(requests, params, use_tqdm=False)):
            completion = result.outputs[0]
            out[level].append(Generation(text=completion.text.strip(), new_tokens=len(completion.token_ids),
                                         hit_limit=completion.finish_reason == "length"))
        return out

    def generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int) -> list[Generation]:
        return self.generate_levels(images, {"answer": (prompt, max_new_tokens)})["answer"]
