"""The caption agreement scorer (gpic.inference.agreement) on a tiny random-weight SigLIP built
locally (gpic.devkit.tiny_models.build_tiny_siglip), loaded through transformers' own path."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from gpic.devkit.tiny_models import build_tiny_dinov2, build_tiny_siglip
from gpic.identity import weights_revision
from gpic.inference.agreement import AgreementScorer

CAPTIONS = [
    "an astronaut in a white suit holding a helmet",
    "a cup of coffee on a saucer",
    "an orange cat lies on a grey blanket",
    "a rocket on the launch pad under a blue sky",
    "a red bus in a busy street",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_siglip(tmp_path_factory.mktemp("agreement") / "siglip-tiny")


@pytest.fixture(scope="module")
def scorer(folder):
    return AgreementScorer(folder)


@pytest.fixture(scope="module")
def images(photos):
    return [photos[name] for name in ("astronaut", "coffee", "chelsea", "rocket")]


# --------------------------------------------------------------------------- loading


def test_loads_a_real_siglip_from_the_local_folder(scorer, folder):
    assert type(scorer.model).__name__ == "SiglipModel"
    assert type(scorer.processor.tokenizer).__name__ == "SiglipTokenizer"
    assert scorer.model_id == "siglip-tiny" and scorer.device == "cpu"
    assert scorer.revision == weights_revision(folder)
    assert scorer.max_text_tokens == 64
    text = scorer.model.config.text_config
    tok = scorer.processor.tokenizer
    assert text.vocab_size == len(tok) >= 300
    assert (text.pad_token_id, text.eos_token_id, text.bos_token_id) == (tok.pad_token_id, tok.eos_token_id, None)
    assert next(scorer.model.parameters()).dtype == torch.float32 and not scorer.model.training


def test_revision_is_stable_for_a_seed_and_differs_across_seeds(folder, tmp_path):
    assert weights_revision(build_tiny_siglip(tmp_path / "again", seed=0)) == weights_revision(folder)
    assert weights_revision(build_tiny_siglip(tmp_path / "other", seed=1)) != weights_revision(folder)


def test_refuses_a_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AgreementScorer(missing)


def test_a_hub_id_is_never_downloaded(monkeypatch, tmp_path):
    """Production's checkpoint by its hub name, not a local folder: refused before transformers
    is asked, so nothing is fetched at run time (`gpic models fetch` does that, pinned)."""
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("a download was tried"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("a download was tried"))
    with pytest.raises(FileNotFoundError, match="google/siglip-base-patch16-224"):
        AgreementScorer("google/siglip-base-patch16-224")


def test_refuses_pickled_weights(folder, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled"):
        AgreementScorer(pickled)


def test_refuses_a_folder_without_config(folder, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("config.json"))
    with pytest.raises(ValueError, match="bare"):
        AgreementScorer(bare)


def test_refuses_a_model_that_is_not_a_dual_encoder(tmp_path):
    with pytest.raises(ValueError, match="not a dual encoder"):
        AgreementScorer(build_tiny_dinov2(tmp_path / "dino"))


# --------------------------------------------------------------------------- scoring


def test_scores_follow_the_captions_shape(scorer, images):
    captions = [CAPTIONS[:4], CAPTIONS[4:]]
    scores = scorer.score(images[:2], captions)
    assert [len(row) for row in scores] == [4, 1]
    flat = [s for row in scores for s in row]
    assert all(type(s) is float and -1.0 <= s <= 1.0 for s in flat)
    assert len(set(flat)) == len(flat)  # distinct captions, distinct scores
    assert scorer.score(images[:2], [[], CAPTIONS[:1]])[0] == []


def test_empty_captions_score_nan(scorer, images):
    scores = scorer.score(images[:2], [["", CAPTIONS[0], " "], [""]])
    assert math.isnan(scores[0][0]) and math.isnan(scores[0][2]) and math.isnan(scores[1][0])
    assert scores[0][1] == pytest.approx(scorer.score(images[:1], [CAPTIONS[:1]])[0][0], abs=1e-5)
    with pytest.raises(ValueError, match="2 images but 1"):
        scorer.score(images[:2], [CAPTIONS])


def test_a_pair_scores_the_same_in_any_batch(scorer, images):
    alone = scorer.score([images[2]], [[CAPTIONS[2]]])[0][0]
    batched = scorer.score(images, [CAPTIONS[:2], CAPTIONS[3:], [CAPTIONS[4], CAPTIONS[2]], CAPTIONS])
    assert batched[2][1] == pytest.approx(alone, abs=1e-5)
    assert batched[3][2] != pytest.approx(alone, abs=1e-5)  # same caption, another image


def test_score_is_siglips_own_cosine_without_a_text_mask(scorer, images):
    """The cosine recovered from the model's own logits (logit = cos * exp(scale) + bias), with the
    text padded to 64 tokens and no attention mask, as SigLIP was trained; a mask changes it."""
    inputs = scorer.processor(text=[CAPTIONS[1]], images=[images[1]], padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        out = scorer.model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
        masked = scorer.model(**inputs)
    scale, bias = scorer.model.logit_scale.exp().item(), scorer.model.logit_bias.item()
    expected = (out.logits_per_image.item() - bias) / scale
    assert scorer.score([images[1]], [[CAPTIONS[1]]])[0][0] == pytest.approx(expected, abs=1e-5)
    assert (masked.logits_per_image.item() - bias) / scale != pytest.approx(expected, abs=1e-3)


def test_images_are_scored_in_rgb(folder, images):
    """Even where the processor would not convert (transformers 4.x processors did not by default)."""
    scorer = AgreementScorer(folder)
    scorer.processor.image_processor.do_convert_rgb = False
    gray = images[1].convert("L")
    assert scorer.score([gray], [[CAPTIONS[1]]]) == scorer.score([gray.convert("RGB")], [[CAPTIONS[1]]])
    rgba = images[1].convert("RGBA")
    assert scorer.score([rgba], [[CAPTIONS[1]]]) == scorer.score([images[1]], [[CAPTIONS[1]]])


def test_a_long_caption_is_scored_on_its_first_tokens(scorer, images):
    long = " ".join(((CAPTIONS[0] + " " + CAPTIONS[2]).split() * 20)[:200])
    assert len(scorer.processor.tokenizer(long)["input_ids"]) > 2 * scorer.max_text_tokens
    scores = scorer.score([images[0]], [[long, long + " and a red bus", "and a red bus " + long]])[0]
    assert all(math.isfinite(s) for s in scores)
    assert scores[1] == pytest.approx(scores[0], abs=1e-6)  # words past the limit are not seen
    assert scores[2] != pytest.approx(scores[0], abs=1e-6)  # words within it are
