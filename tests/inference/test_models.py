"""Tiny local models (gpic.devkit.tiny_models) and the real VLM inference path (gpic.inference.vlm)."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

# Two threads under load ran 30-50x slower than one on the 2-core test machine.
torch.set_num_threads(1)

from gpic.devkit.tiny_models import (  # noqa: E402
    QWEN_SPECIAL_TOKENS,
    build_tiny_copy_detector,
    build_tiny_dinov2,
    build_tiny_qwen3_vl,
)
from gpic.identity import weights_revision  # noqa: E402
from gpic.inference.copy_detector import CopyDetector  # noqa: E402
from gpic.inference.vlm import Generation, Question, Score, VisionLanguageModel, answer_tokens, score  # noqa: E402

skimage_data = pytest.importorskip("skimage.data")

PROMPT = "Describe this photo in one sentence."
MAX_NEW = 8


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return tiny_models


@pytest.fixture(scope="module")
def vlm(tiny):
    return VisionLanguageModel(tiny["vlm"])


@pytest.fixture(scope="module")
def photo_list():
    return [
        Image.fromarray(skimage_data.astronaut()),
        Image.fromarray(skimage_data.coffee()),
        Image.fromarray(skimage_data.chelsea()),
    ]


def _jit_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path)).eval()


def _imagenet_tensor(image: Image.Image) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((arr - mean) / std)[None]


# --------------------------------------------------------------------------- build


def test_build_layout_and_sizes(tiny):
    assert set(tiny) == {"vlm", "copy_detector", "dinov2", "agreement"}
    assert tiny["vlm"].name == "qwen3-vl-tiny" and tiny["dinov2"].name == "dinov2-tiny"
    assert tiny["copy_detector"].name == "sscd-tiny.pt"
    weights = tiny["vlm"] / "model.safetensors"
    assert 1_000_000 <= weights.stat().st_size <= 3_000_000
    for name in ("config.json", "generation_config.json", "tokenizer.json", "processor_config.json"):
        assert (tiny["vlm"] / name).is_file(), name
    assert (tiny["dinov2"] / "model.safetensors").is_file()
    assert not list(tiny["vlm"].glob("*.bin")) and not list(tiny["dinov2"].glob("*.bin"))


def test_config_token_ids_match_tokenizer(vlm):
    tok = vlm.processor.tokenizer
    cfg = vlm.model.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(ids) and all(i >= 1000 for i in ids.values())
    assert cfg.image_token_id == ids["<|image_pad|>"] == vlm.processor.image_token_id
    assert cfg.video_token_id == ids["<|video_pad|>"]
    assert cfg.vision_start_token_id == ids["<|vision_start|>"]
    assert cfg.vision_end_token_id == ids["<|vision_end|>"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert set(vlm.model.generation_config.eos_token_id) == {ids["<|im_end|>"], ids["<|endoftext|>"]}
    assert vlm.pad_token_id == ids["<|endoftext|>"]
    assert cfg.text_config.vocab_size == len(tok)
    assert 1000 <= len(tok) <= 2100
    text_cfg = cfg.text_config
    assert sum(text_cfg.rope_parameters["mrope_section"]) == text_cfg.head_dim // 2
    assert max(cfg.vision_config.deepstack_visual_indexes) < cfg.vision_config.depth
    assert cfg.vision_config.out_hidden_size == text_cfg.hidden_size


def test_tokenizer_and_chat_template(vlm):
    tok = vlm.processor.tokenizer
    assert type(tok).__name__ in {"Qwen2Tokenizer", "Qwen2TokenizerFast"}
    assert tok.padding_side == "left"
    text = "A cat lies on a grey blanket. 2024!"
    assert tok.decode(tok(text)["input_ids"]) == text
    # special tokens are atomic
    ids = tok("<|im_start|>user<|image_pad|>")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok.convert_tokens_to_ids("<|image_pad|>")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
    ]
    chat = vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = vlm.processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert not no_prompt.endswith("<|im_start|>assistant\n")


def test_processor_gives_a_few_dozen_vision_tokens(vlm):
    photo = Image.fromarray(skimage_data.chelsea()).resize((480, 590))
    inputs = vlm.processor(text=[vlm._chat(PROMPT)], images=[photo], return_tensors="pt")
    n_image = int((inputs["input_ids"] == vlm.model.config.image_token_id).sum())
    assert 24 <= n_image <= 96
    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert n_image == t * h * w // 4


# --------------------------------------------------------------------------- VLM


def test_vlm_identity(vlm, tiny):
    assert vlm.model_id == "qwen3-vl-tiny"
    assert vlm.revision == weights_revision(tiny["vlm"])
    assert vlm.dtype == torch.float32
    assert not vlm.model.training


def test_generate_on_real_photos(vlm, photo_list):
    gens = vlm.generate(photo_list, PROMPT, max_new_tokens=MAX_NEW)
    assert len(gens) == 3 and all(isinstance(g, Generation) for g in gens)
    for g in gens:
        assert 1 <= g.new_tokens <= MAX_NEW
        assert isinstance(g.text, str) and g.text == g.text.strip()
        if g.hit_limit:
            assert g.new_tokens == MAX_NEW
        if g.new_tokens < MAX_NEW:
            assert not g.hit_limit
        assert "<|im_end|>" not in g.text and "<|endoftext|>" not in g.text
    # greedy decoding is deterministic
    assert vlm.generate(photo_list, PROMPT, max_new_tokens=MAX_NEW) == gens
    # left padding: the astronaut (512x512) has more vision tokens than the others, so
    # in the batch the shorter prompts are padded; results must match single-image runs.
    for photo, batched in zip(photo_list, gens):
        assert vlm.generate([photo], PROMPT, max_new_tokens=MAX_NEW) == [batched]
    assert vlm.generate([], PROMPT, max_new_tokens=MAX_NEW) == []


def test_generate_stops_at_eos_and_drops_padding(vlm, photo_list):
    rows = vlm._generate_ids(photo_list, PROMPT, max_new_tokens=MAX_NEW)
    # Declare the 3rd token generated for the last photo an end-of-sequence token:
    # that row must stop there, and the batch goes on for the others (padded).
    stop = rows[2][2]
    first = rows[2].index(stop)
    saved = vlm.eos_token_ids
    try:
        vlm.eos_token_ids = frozenset({stop})
        gens = vlm.generate(photo_list, PROMPT, max_new_tokens=MAX_NEW)
    finally:
        vlm.eos_token_ids = saved
    assert gens[2].new_tokens == first + 1 and not gens[2].hit_limit
    expected = vlm.processor.tokenizer.decode(rows[2][:first], skip_special_tokens=True).strip()
    assert gens[2].text == expected
    for row, g in zip(rows[:2], gens[:2]):
        if stop not in row and not set(row) & saved:
            # the other rows are unaffected by the finished one being padded
            assert g.new_tokens == MAX_NEW and g.hit_limit
            assert g.text == vlm.processor.tokenizer.decode(row, skip_special_tokens=True).strip()


def test_generate_accepts_non_rgb_and_max_pixels(tiny, photo_list):
    small = VisionLanguageModel(tiny["vlm"], max_pixels=16 * 32 * 32)
    assert small.processor.image_processor.size["longest_edge"] == 16 * 32 * 32
    inputs = small.processor(text=[small._chat(PROMPT)], images=[photo_list[0]], return_tensors="pt")
    assert int((inputs["input_ids"] == small.model.config.image_token_id).sum()) <= 16
    gens = small.generate([photo_list[1].convert("L"), photo_list[2].convert("RGBA")], PROMPT, max_new_tokens=3)
    assert len(gens) == 2 and all(1 <= g.new_tokens <= 3 for g in gens)


class VisionPasses:
    """Images the vision tower encodes while open, counted by a forward hook of the test's own."""

    def __init__(self, vlm):
        self.visual, self.calls, self.images = vlm.model.model.visual, 0, 0

    def __enter__(self):
        def hook(module, args, kwargs, output):
            self.calls += 1
            self.images += len(kwargs["grid_thw"])
        self.handle = self.visual.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


LEVEL_PROMPTS = {"label": ("Name the main subject.", 3), "short": ("Describe this photo in one sentence.", 5),
                 "medium": ("Describe this image in two or three sentences.", 8),
                 "long": ("Describe this image in detail: subjects, setting, colours, composition and style.", 12)}


def test_caption_levels_share_one_image_prefix_and_match_per_level_generate(vlm, photo_list):
    """The four levels continue from one prefix (the vision tower once per image) and give,
    token for token, what one full-prompt generate per level gives: the astronaut has more
    image tokens than the others, so the shared prefix is left-padded too."""
    with VisionPasses(vlm) as shared:
        levels = vlm.generate_levels(photo_list, LEVEL_PROMPTS)
    with VisionPasses(vlm) as per_level:
        reference = {level: vlm.generate(photo_list, prompt, n) for level, (prompt, n) in LEVEL_PROMPTS.items()}
    assert levels == reference
    assert all(g.new_tokens >= 1 for gens in levels.values() for g in gens)
    assert (shared.calls, shared.images) == (1, len(photo_list))  # one pass, once per image
    assert (per_level.calls, per_level.images) == (4, 4 * len(photo_list))
    # one image alone gives its rows of the batch; the model's own counter agrees with the hook
    before = vlm.vision_images
    assert vlm.generate_levels(photo_list[1:2], LEVEL_PROMPTS) == {k: v[1:2] for k, v in reference.items()}
    assert vlm.vision_images - before == 1
    assert vlm.generate_levels([], LEVEL_PROMPTS) == {level: [] for level in LEVEL_PROMPTS}


QUESTIONS = {"quality": Question("Is this a clear photo? Answer with one word: good or bad.", ("good",), ("bad",)),
             "safety": Question("Is this image safe for a general audience (no nudity, gore or hateful symbols)? "
                                "Answer with one word: safe or unsafe.", ("safe",), ("unsafe",))}


def test_judge_scores_are_the_next_token_probabilities_of_a_full_prompt_forward(vlm, photo_list):
    """Both criteria (prompts of different lengths) in one forward from one image prefix give
    the probabilities a plain forward of each whole prompt, image by image, gives."""
    with VisionPasses(vlm) as passes:
        scores = vlm.judge_scores(photo_list, QUESTIONS)
    assert (passes.calls, passes.images) == (1, len(photo_list))
    tok = vlm.processor.tokenizer
    for name, question in QUESTIONS.items():
        accept, reject = answer_tokens(tok, question)
        assert len(scores[name]) == len(photo_list)
        for photo, got in zip(photo_list, scores[name]):
            inputs = vlm.processor(text=[vlm._chat(question.prompt)], images=[photo], return_tensors="pt")
            with torch.inference_mode():
                logprobs = vlm.model(**inputs).logits[0, -1].float().log_softmax(-1)
            p_accept, p_reject = logprobs[list(accept)].exp().sum(), logprobs[list(reject)].exp().sum()
            assert got.p_reject == pytest.approx(float(p_reject / (p_accept + p_reject)), abs=1e-4)
            assert got.mass == pytest.approx(float(p_accept + p_reject), rel=1e-3)
            assert 0 < got.mass < 0.05  # random weights spread the probability over the whole vocabulary
    assert vlm.judge_scores([], QUESTIONS) == {"quality": [], "safety": []}


def test_answer_tokens_take_case_variants_and_refuse_shared_first_tokens(vlm):
    tok = vlm.processor.tokenizer
    accept, reject = answer_tokens(tok, Question("?", ("good",), ("bad",)))
    first = {tok(w, add_special_tokens=False)["input_ids"][0] for w in ("good", "Good", "GOOD")}
    assert set(accept) == first and not set(accept) & set(reject)
    with pytest.raises(ValueError, match="share first tokens"):
        answer_tokens(tok, Question("?", ("safe",), ("Safe",)))


def test_score_normalises_the_two_sides_and_keeps_the_mass():
    s = score([float(np.log(0.5)), float(np.log(0.1))], [float(np.log(0.2))])
    assert s.p_reject == pytest.approx(0.2 / 0.8) and s.mass == pytest.approx(0.8)
    assert score([-np.inf], [-np.inf]) == Score(p_reject=0.5, mass=0.0)  # neither word seen: no preference
    assert score([0.0], [-1000.0]).p_reject == pytest.approx(0.0) and score([-1000.0], [0.0]).p_reject == 1.0


def test_bad_paths_raise_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        VisionLanguageModel(missing)
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty-dir"):
        VisionLanguageModel(empty)
    pickled = tmp_path / "pickled-model"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ValueError, match="pickled-model"):
        VisionLanguageModel(pickled)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        weights_revision(missing)


# --------------------------------------------------------------------------- identity


def test_weights_revision_is_deterministic(tiny, tmp_path):
    rev = weights_revision(tiny["vlm"])
    assert len(rev) == 16 and int(rev, 16) >= 0
    assert weights_revision(build_tiny_qwen3_vl(tmp_path / "again", seed=0)) == rev
    assert weights_revision(build_tiny_qwen3_vl(tmp_path / "other", seed=1)) != rev
    assert weights_revision(build_tiny_dinov2(tmp_path / "dino", seed=0)) == weights_revision(tiny["dinov2"])
    assert weights_revision(build_tiny_dinov2(tmp_path / "dino1", seed=1)) != weights_revision(tiny["dinov2"])
    again = build_tiny_copy_detector(tmp_path / "elsewhere" / "sscd-tiny.pt", seed=0)
    assert again.read_bytes() == tiny["copy_detector"].read_bytes()
    assert weights_revision(again) == weights_revision(tiny["copy_detector"])
    other = build_tiny_copy_detector(tmp_path / "seed1" / "sscd-tiny.pt", seed=1)
    assert weights_revision(other) != weights_revision(tiny["copy_detector"])
    # non-weight files do not matter
    (tmp_path / "again" / "README.md").write_text("notes")
    assert weights_revision(tmp_path / "again") == rev


def test_copy_detector_is_path_independent_torchscript(tiny):
    assert b"debug_pkl" not in tiny["copy_detector"].read_bytes()
    assert str(tiny["copy_detector"].parent).encode() not in tiny["copy_detector"].read_bytes()


# --------------------------------------------------------------------------- copy detector / DINOv2


def test_copy_detector_separates_copies_from_distinct_photos(tiny, photo_list):
    model = _jit_load(tiny["copy_detector"])
    assert isinstance(model, torch.jit.ScriptModule)
    with torch.inference_mode():
        batch = torch.cat([_imagenet_tensor(p.resize((224, 224))) for p in photo_list])
        assert model(batch).shape == (3, 256)
        assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 256)

        def desc(image):
            return torch.nn.functional.normalize(model(_imagenet_tensor(image)), dim=1)[0]

        base = [desc(p) for p in photo_list]
        for photo, d in zip(photo_list, base):
            buf = io.BytesIO()
            photo.resize((photo.width * 2 // 3, photo.height * 2 // 3)).save(buf, "JPEG", quality=60)
            copy = Image.open(io.BytesIO(buf.getvalue()))
            assert float(d @ desc(copy)) > 0.9
        for i in range(3):
            for j in range(i + 1, 3):
                assert float(base[i] @ base[j]) < 0.5


def mixed_aspect(photos, n=12):
    """Crops of real photos at aspect ratios from 1:2 to 2:1, each a different shape."""
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        aspect = 0.5 * 4 ** (i / (n - 1))
        width = min(photo.width, round(photo.height * aspect))
        out.append(photo.crop((0, 0, width, min(photo.height, round(width / aspect)))).resize(
            (200 + 23 * i, round((200 + 23 * i) / aspect))))
    return out


def test_copy_detector_batches_any_shapes_close_to_the_aspect_keeping_path(tiny, photo_list):
    """Every image of a batch in one forward pass whatever its shape (SSCD's square resize),
    descriptors within cosine 0.99 of the short-side-288 path, which batches equal shapes only."""
    detector = CopyDetector(tiny["copy_detector"])
    images = mixed_aspect(photo_list)
    assert len({im.size for im in images}) == len(images)
    shapes = []
    model = detector.model
    detector.model = lambda batch: (shapes.append(tuple(batch.shape)), model(batch))[1]
    ours = detector.describe(images)
    assert shapes == [(len(images), 3, 320, 320)]
    reference = detector.describe_per_image(images)
    assert len(shapes) == 1 + len(images)  # the reference: one pass per distinct shape
    assert ours.dtype == np.float16 and ours.shape == reference.shape == (len(images), 256)
    a, b = ours.astype(np.float32), reference.astype(np.float32)
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.99
    assert detector.forward_calls == 1 + len(images) and detector.forward_images == 2 * len(images)
    # the batch does not change a descriptor: alone or among others, the same
    alone = detector.describe(images[3:4]).astype(np.float32)[0]
    assert float(alone @ a[3]) / float(np.linalg.norm(alone) * np.linalg.norm(a[3])) > 0.9999


def test_copy_detector_dim_and_seed(tmp_path):
    path = build_tiny_copy_detector(tmp_path / "d64.pt", seed=3, dim=64)
    model = _jit_load(path)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 40, 33)).shape == (1, 64)


def test_dinov2_tiny_loads_with_automodel(tiny, photo_list):
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(tiny["dinov2"], local_files_only=True).eval()
    assert model.config.hidden_size == 32 and model.config.patch_size == 14
    processor = AutoImageProcessor.from_pretrained(tiny["dinov2"], local_files_only=True)
    pixels = processor(images=photo_list, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 224, 224)
    with torch.inference_mode():
        out = model(pixel_values=pixels)
    assert out.last_hidden_state.shape == (3, 1 + (224 // 14) ** 2, 32)
    cls = out.pooler_output
    assert cls.shape == (3, 32) and torch.isfinite(cls).all()
