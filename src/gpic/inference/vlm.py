"""Vision-language model inference: the real path behind the captioner and the judge.

:class:`VisionLanguageModel` wraps any ``AutoModelForImageTextToText``
checkpoint stored in a local directory (Qwen3-VL in production, the tiny
random-weight model from :mod:`gpic.devkit.tiny_models` in tests).  Nothing is ever
downloaded (``local_files_only=True``) and only safetensors weights are
accepted.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gpic.identity import weights_revision
from gpic.inference import checkpoint_name

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Generation", "Question", "Score", "VisionLanguageModel", "VllmModel", "answer_tokens", "score"]

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


@dataclass(frozen=True)
class Question:
    """A closed question about an image: the prompt and the words that accept or reject."""

    prompt: str
    accept: tuple[str, ...]
    reject: tuple[str, ...]


@dataclass(frozen=True)
class Score:
    """A judge's answer as next-token probabilities of the question's words."""

    p_reject: float  # P(reject words) / P(accept or reject words): 0 sure accept, 1 sure reject
    mass: float  # P(accept or reject words) of the whole next-token distribution: low = answers neither


def answer_tokens(tokenizer, question: Question) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token ids whose probability as the answer's first token counts for accept and for
    reject: the first token of each word as written, lower case, capitalised and upper case
    (the answer starts the assistant turn, so no leading space). A word of several tokens
    counts by its first one, so the two sides must not share a first token."""
    def first_tokens(words) -> set[int]:
        ids = set()
        for word in words:
            for variant in {word, word.lower(), word.capitalize(), word.upper()}:
                tokens = tokenizer(variant, add_special_tokens=False)["input_ids"]
                if tokens:
                    ids.add(tokens[0])
        return ids

    accept, reject = first_tokens(question.accept), first_tokens(question.reject)
    if not accept or not reject:
        raise ValueError(f"question {question.prompt[:40]!r}: accept and reject words must each tokenise")
    if shared := accept & reject:
        names = [tokenizer.convert_ids_to_tokens(i) for i in sorted(shared)]
        raise ValueError(f"accept words {list(question.accept)} and reject words {list(question.reject)} share "
                         f"first tokens {names}: their probabilities cannot be told apart")
    return tuple(sorted(accept)), tuple(sorted(reject))


def _logsumexp(values: list[float]) -> float:
    top = max(values, default=-math.inf)
    return top if top == -math.inf else top + math.log(sum(math.exp(v - top) for v in values))


def score(accept_logprobs: list[float], reject_logprobs: list[float]) -> Score:
    """Score from the log-probabilities of the accept and reject tokens (-inf where unknown)."""
    accept, reject = _logsumexp(accept_logprobs), _logsumexp(reject_logprobs)
    if accept == reject == -math.inf:
        return Score(p_reject=0.5, mass=0.0)
    diff = accept - reject  # p_reject = sigmoid(reject - accept), computed without overflow
    p_reject = 1 / (1 + math.exp(diff)) if diff < 0 else math.exp(-diff) / (1 + math.exp(-diff))
    return Score(p_reject=p_reject, mass=min(1.0, math.exp(accept) + math.exp(reject)))


@dataclass
class _Prefix:
    """The shared head of a batch's prompts after one forward: ids, mask, KV cache, and the
    multimodal RoPE offsets its image left (None for models without them)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: object
    rope_deltas: torch.Tensor | None

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


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
        # transformers 5.x renamed generate's and forward's `past_key_values` to `cache`
        self._cache_kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
        self._parts: tuple[str, str] | None = None
        self._suffixes: dict[str, list[int]] = {}
        # vision-tower forward passes and the images they encoded, counted by a hook
        self.vision_calls = self.vision_images = 0
        visual = getattr(model, "visual", None) or getattr(getattr(model, "model", None), "visual", None)
        if visual is not None:
            visual.register_forward_hook(self._count_vision, with_kwargs=True)

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

    def _count_vision(self, module, args, kwargs, output) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.vision_calls += 1
        self.vision_images += int(grid.shape[0]) if grid is not None else 1

    def _template_parts(self) -> tuple[str, str]:
        """The chat around the prompt: (head, tail), the image in the head. Every prompt of
        the pipeline shares the head, so its image and KV cache are computed once."""
        if self._parts is None:
            marker = "\x00GPIC-PROMPT\x00"
            chat = self._chat(marker)
            if chat.count(marker) != 1:
                raise ValueError(f"the chat template of {self.path} does not keep the prompt text as given")
            head, tail = chat.split(marker)
            image_token = getattr(self.processor, "image_token", None)
            if image_token is not None and image_token not in head:
                raise ValueError(f"the chat template of {self.path} does not put the image before the prompt")
            self._parts = (head, tail)
        return self._parts

    def _suffix_ids(self, prompt: str) -> list[int]:
        """Token ids of `prompt` and the template's tail; checked once per prompt to be the
        tokens the whole chat has after the head (the head ends with a special token)."""
        if prompt not in self._suffixes:
            head, tail = self._template_parts()
            tokenizer = self.processor.tokenizer
            suffix = tokenizer(prompt + tail, add_special_tokens=False)["input_ids"]
            whole = tokenizer(head + prompt + tail, add_special_tokens=False)["input_ids"]
            if whole != tokenizer(head, add_special_tokens=False)["input_ids"] + suffix:
                raise ValueError(f"prompt {prompt[:40]!r} does not tokenise apart from the image prefix")
            self._suffixes[prompt] = suffix
        return self._suffixes[prompt]

    def _encode_prefix(self, images: list[Image.Image]) -> _Prefix:
        """One forward over the shared head of every prompt (chat start, the image): the vision
        tower runs once per image here, and the KV cache it leaves serves every prompt after."""
        head, _ = self._template_parts()
        inputs = self.processor(text=[head] * len(images), images=images, padding=True, padding_side="left",
                                return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        deltas = getattr(getattr(self.model, "model", self.model), "rope_deltas", None)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        return _Prefix(inputs["input_ids"], inputs["attention_mask"], cache,
                       None if deltas is None else deltas.clone())

    def _restore_rope(self, prefix: _Prefix) -> None:
        """Multimodal RoPE continues from the image's positions: the offsets of this prefix."""
        if prefix.rope_deltas is not None:
            getattr(self.model, "model", self.model).rope_deltas = prefix.rope_deltas

    def _decode(self, rows: list[list[int]], max_new_tokens: int) -> list[Generation]:
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

    def generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int, repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0) -> list[Generation]:
        """The same text prompt applied to each image, one batch, greedy decoding (do_sample=False), left padding.
        The whole prompt goes through one generate call: the reference path, which the
        shared-prefix paths below must reproduce. A repetition penalty and a ban on repeated
        n-grams (transformers' own logits processors) are the caption stage's fallback decoding."""
        penalties = {"repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
        return self._decode(self._generate_ids(images, prompt, max_new_tokens, penalties), max_new_tokens)

    def generate_levels(self, images: list[Image.Image],
                        levels: dict[str, tuple[str, int]]) -> dict[str, list[Generation]]:
        """Several (prompt, max_new_tokens) over the same images, greedy. The image comes first
        in every prompt, so its prefix (vision features and KV cache) is computed once for
        the batch and each level's generate continues from it (the cache is cropped back to
        the prefix after each level): the vision tower runs once per image for all levels,
        and the text equals one full-prompt `generate` per level."""
        for _, budget in levels.values():
            if budget < 1:
                raise ValueError(f"max_new_tokens must be >= 1, got {budget}")
        if not images:
            return {level: [] for level in levels}
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        prefix = self._encode_prefix(images)
        out = {}
        for level, (prompt, budget) in levels.items():
            suffix = torch.tensor([self._suffix_ids(prompt)], device=self.device).expand(len(images), -1)
            ids = torch.cat([prefix.input_ids, suffix], dim=1)
            mask = torch.cat([prefix.attention_mask, torch.ones_like(suffix)], dim=1)
            self._restore_rope(prefix)
            with torch.inference_mode():
                output = self.model.generate(input_ids=ids, attention_mask=mask, **{self._cache_kw: prefix.cache},
                                             **self._greedy(budget))
            prefix.cache.crop(-(prefix.cache.get_seq_length() - prefix.length))
            out[level] = self._decode(output[:, ids.shape[1]:].tolist(), budget)
        return out

    def judge_scores(self, images: list[Image.Image], criteria: dict[str, Question]) -> dict[str, list[Score]]:
        """Next-token probabilities of each criterion's accept and reject words, one forward
        pass per image and criterion over the prompt: the image's prefix is computed once, its
        KV cache repeated per criterion, and every criterion's prompt continues from it in one
        batch (prompts of different lengths padded between the prefix and the prompt, masked)."""
        if not images:
            return {name: [] for name in criteria}
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        names = list(criteria)
        tokens = {name: answer_tokens(self.processor.tokenizer, c) for name, c in criteria.items()}
        suffixes = [self._suffix_ids(criteria[name].prompt) for name in names]
        prefix = self._encode_prefix(images)
        n, c, width = len(images), len(names), max(map(len, suffixes))
        ids = torch.full((n * c, width), self.pad_token_id, dtype=torch.long)
        suffix_mask = torch.zeros((n * c, width), dtype=prefix.attention_mask.dtype)
        for row in range(n * c):
            suffix = suffixes[row % c]
            ids[row, width - len(suffix):] = torch.tensor(suffix)
            suffix_mask[row, width - len(suffix):] = 1
        ids, suffix_mask = ids.to(self.device), suffix_mask.to(self.device)
        prefix.cache.batch_repeat_interleave(c)
        mask = torch.cat([prefix.attention_mask.repeat_interleave(c, dim=0), suffix_mask], dim=1)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, prefix.length:]
        if prefix.rope_deltas is not None:  # M-RoPE: the text after the image, on all three axes
            positions = (positions + prefix.rope_deltas.repeat_interleave(c, dim=0))[None].expand(3, -1, -1)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             **{self._cache_kw: prefix.cache}, use_cache=True, logits_to_keep=1)
        logprobs = out.logits[:, -1].float().log_softmax(-1).cpu()
        return {name: [score(logprobs[i * c + k, list(tokens[name][0])].tolist(),
                             logprobs[i * c + k, list(tokens[name][1])].tolist()) for i in range(n)]
                for k, name in enumerate(names)}

    def _greedy(self, max_new_tokens: int) -> dict:
        return {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1, "temperature": None,
                "top_p": None, "top_k": None, "pad_token_id": self.pad_token_id,
                "eos_token_id": sorted(self.eos_token_ids)}

    def _generate_ids(self, images: list[Image.Image], prompt: str, max_new_tokens: int,
                      penalties: dict | None = None) -> list[list[int]]:
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
            output = self.model.generate(**inputs, **self._greedy(max_new_tokens), **(penalties or {}))
        return output[:, prompt_len:].tolist()


class VllmModel:
    """The same interface on vLLM's offline engine, for GPU nodes. All prompts of a batch
    (images x levels) go to one `LLM.generate`; the image comes first in every prompt, so
    with prefix caching the four levels of an image share its encoding and prefix.
    vLLM lives in the GPU jobs' environment (workflow/envs/gpu.yaml, with the torch its release
    requires); nothing else imports it."""

    LOGPROBS = 20  # vLLM's default max_logprobs

    def __init__(self, path: str | Path, max_pixels: int | None = None, dtype: str = "bfloat16",
                 gpu_memory_utilization: float = 0.9) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(f"backend 'vllm' needs the vllm package: run the job in workflow/envs/gpu.yaml "
                              f"(the SLURM profile deploys it): {exc}") from None
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

    def generate_levels(self, images: list[Image.Image], levels: dict[str, tuple[str, int]],
                        repetition_penalty: float = 1.0) -> dict[str, list[Generation]]:
        from vllm import SamplingParams

        requests, params, order = [], [], []
        for level, (prompt, budget) in levels.items():
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            chat = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for image in images:
                requests.append({"prompt": chat, "multi_modal_data": {"image": image.convert("RGB")}})
                params.append(SamplingParams(temperature=0.0, max_tokens=budget, skip_special_tokens=True,
                                             repetition_penalty=repetition_penalty))
                order.append(level)
        out: dict[str, list[Generation]] = {level: [] for level in levels}
        for level, result in zip(order, self.llm.generate(requests, params, use_tqdm=False)):
            completion = result.outputs[0]
            out[level].append(Generation(text=completion.text.strip(), new_tokens=len(completion.token_ids),
                                         hit_limit=completion.finish_reason == "length"))
        return out

    def generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int, repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0) -> list[Generation]:
        """vLLM has no n-gram ban: its repetition penalty alone is the fallback decoding."""
        return self.generate_levels(images, {"answer": (prompt, max_new_tokens)}, repetition_penalty)["answer"]

    def judge_scores(self, images: list[Image.Image], criteria: dict[str, Question]) -> dict[str, list[Score]]:
        """The transformers backend's scores from one engine call: every image x criterion
        generates one token with the top LOGPROBS log-probabilities (vLLM returns those of
        the model's raw distribution); an answer token outside them counts as probability 0,
        which lowers the mass, never the verdict's side by more than the cut-off. The image
        comes first, so prefix caching shares its encoding between criteria."""
        from vllm import SamplingParams

        tokenizer = self.processor.tokenizer
        tokens = {name: answer_tokens(tokenizer, question) for name, question in criteria.items()}
        requests, order = [], []
        for name, question in criteria.items():
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question.prompt}]}]
            chat = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for image in images:
                requests.append({"prompt": chat, "multi_modal_data": {"image": image.convert("RGB")}})
                order.append(name)
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.LOGPROBS)
        out: dict[str, list[Score]] = {name: [] for name in criteria}
        for name, result in zip(order, self.llm.generate(requests, params, use_tqdm=False)):
            top = result.outputs[0].logprobs[0]  # {token id: Logprob} of the first generated position
            accept, reject = tokens[name]
            out[name].append(score([top[i].logprob if i in top else -math.inf for i in accept],
                                   [top[i].logprob if i in top else -math.inf for i in reject]))
        return out
