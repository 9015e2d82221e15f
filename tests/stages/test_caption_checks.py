"""What caption hygiene and the agreement score do inside the caption stage, with the tiny
local models writing real (random-weight) captions: `caption.on_flag` keeps, recaptions or drops
as configured, the scorer's threshold flags mismatches, and the audit, the card and provenance
report what happened. Planted hygiene settings make the rules fire on the model's own text."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from gpic.config import validate_config
from gpic.contracts import LEVELS
from gpic.inference.agreement import AgreementScorer
from gpic.inference.vlm import VisionLanguageModel
from gpic.stages import STAGES
from gpic.stages.caption import Captioner, audit, caption_shard
from gpic.stages.publish import captions_card
from gpic.store import write_table, write_tar

EVERYTHING = [r"\w"]  # a refusal pattern every caption with a word matches


@pytest.fixture(scope="module")
def captioner(tiny_models):
    return Captioner(VisionLanguageModel(tiny_models["vlm"]), AgreementScorer(tiny_models["agreement"]))


@pytest.fixture(scope="module")
def shard(tmp_path_factory, photos):
    """Three real photos in a raw tar, all kept by dedup."""
    root = tmp_path_factory.mktemp("shard")
    members = []
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        data = io.BytesIO()
        photos[name].save(data, "JPEG", quality=90)
        members.append((f"k{i}.jpg", data.getvalue()))
    write_tar(root / "raw.tar", members)
    keys = [f"k{i}" for i in range(3)]
    return (pd.DataFrame({"key": keys, "kept": True}),
            pd.DataFrame({"key": keys, "raw_member": [f"{k}.jpg" for k in keys]}), root / "raw.tar")


def caption(shard, captioner, tmp_path, **caption_settings) -> pd.DataFrame:
    cfg = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"}, "embed": {"model": "m"},
                           "caption": {"model": "m", "batch_size": 3, "levels": {
                               level: {"prompt": f"Describe this image ({level}).", "max_new_tokens": n}
                               for level, n in zip(LEVELS, (3, 5, 6, 8))}, **caption_settings}})["caption"]
    return caption_shard(*shard, cfg, tmp_path / "captions.parquet", model=captioner)


def test_a_kept_finding_stays_with_its_caption(shard, captioner, tmp_path):
    table = caption(shard, captioner, tmp_path, hygiene={"refusals": EVERYTHING}, on_flag={"refusal": "keep"})
    assert (table["caption_status"] == "ok").all()
    for level in LEVELS:
        assert table[f"{level}_flags"].str.split(";").map(lambda rules: "refusal" in rules).all()
        assert not table[f"{level}_recaptioned"].any()


def test_a_dropped_finding_ends_the_image_in_provenance_with_its_reason(shard, captioner, tmp_path):
    table = caption(shard, captioner, tmp_path, hygiene={"refusals": EVERYTHING}, on_flag={"refusal": "drop"})
    assert (table["caption_status"] == "dropped").all()
    assert (table["caption_reason"] == "caption refusal: label").all()  # the first level and rule name it
    verdicts = {STAGES["caption"].outcome.verdict(row) for row in table.to_dict("records")}
    assert verdicts == {("dropped", "caption refusal: label")}


def test_recaption_generates_the_level_again_with_the_fallback_decoding(shard, captioner, tmp_path, photos):
    first = caption(shard, captioner, tmp_path, hygiene={"refusals": EVERYTHING}, on_flag={"refusal": "keep"})
    again = caption(shard, captioner, tmp_path / "again", hygiene={"refusals": EVERYTHING},
                    on_flag={"refusal": "recaption"}, recaption={"repetition_penalty": 1.5, "no_repeat_ngram_size": 2})
    assert (again["caption_status"] == "ok").all()  # a finding that remains is kept with its flag
    for level in LEVELS:
        assert again[f"{level}_recaptioned"].all()
        assert (again[f"{level}_tokens"] > first[f"{level}_tokens"]).all()  # both generations counted
    # the second text is the model's own under the fallback decoding, image by image
    from gpic.images import load_rgb
    from gpic.store import read_tar

    raw = read_tar(shard[2])
    images = [load_rgb(raw[f"{key}.jpg"]) for key in again["key"]]
    expected = captioner.vlm.generate(images, "Describe this image (long).", 8, repetition_penalty=1.5,
                                      no_repeat_ngram_size=2)
    assert again["long_raw"].tolist() == [g.text for g in expected]
    assert again["long_raw"].tolist() != first["long_raw"].tolist()


def test_the_agreement_threshold_flags_mismatches(shard, captioner, tmp_path):
    """A caption scoring exactly the threshold passes (the near miss); one below it is flagged."""
    scores = caption(shard, captioner, tmp_path, agreement={"min_score": dict.fromkeys(LEVELS, -1.0)})
    lowest = {level: float(scores[f"{level}_agreement"].min()) for level in LEVELS}
    at = caption(shard, captioner, tmp_path / "at", agreement={"min_score": lowest})
    above = caption(shard, captioner, tmp_path / "above",
                    agreement={"min_score": {level: score + 1e-9 for level, score in lowest.items()}})
    for level in LEVELS:
        assert not at[f"{level}_flags"].str.contains("mismatch").any()
        flagged = above[f"{level}_flags"].str.contains("mismatch")
        assert flagged.tolist() == (above[f"{level}_agreement"] == lowest[level]).tolist() and flagged.sum() >= 1
        assert at[f"{level}_agreement"].equals(scores[f"{level}_agreement"])  # the score, not the threshold
    assert (at["caption_status"] == "ok").all()  # on_flag.mismatch: keep, the default
    assert (at["caption_agreement_model_id"] == captioner.scorer.model_id).all()
    assert (at["caption_agreement_model_revision"] == captioner.scorer.revision).all()


def test_without_a_scorer_captions_are_unscored_not_flagged(shard, tiny_models, tmp_path):
    table = caption(shard, Captioner(VisionLanguageModel(tiny_models["vlm"])), tmp_path)
    assert table[[f"{level}_agreement" for level in LEVELS]].isna().all().all()
    assert not table["long_flags"].str.contains("mismatch").any() and (table["caption_agreement_model_id"] == "").all()


def planted_table(path, rows: list[dict]) -> None:
    base = {"caption_status": "ok", "caption_reason": "", "caption_model_id": "Qwen/Qwen3-VL-4B-Instruct",
            "caption_model_revision": "ebb281ec70b0", "caption_agreement_model_id": "google/siglip-base-patch16-224",
            "caption_agreement_model_revision": "7fd15f0689c7"}
    full = []
    for i, row in enumerate(rows):
        record = {**base, "key": f"{path.stem}{i:03d}"}
        for level in LEVELS:
            text, raw, flags, score = row.get(level, ("A dog.", "A dog.", "", 0.1))
            record.update({level: text, f"{level}_raw": raw, f"{level}_flags": flags, f"{level}_agreement": score})
        record.update(row.get("status", {}))
        full.append(record)
    write_table(pd.DataFrame(full), path)


def test_the_audit_counts_findings_openings_repeats_scores_and_person_terms(tmp_path):
    """Two shards of planted caption rows (data, not model output): every figure of the audit
    is checked against what was planted."""
    a, b = tmp_path / "00000.parquet", tmp_path / "00001.parquet"  # results/captions as the stage writes it
    planted_table(a, [{"label": ("A woman", "The image shows a woman", "", 0.30)},
                      {"label": ("A man", "The image shows a man", "label_unrelated", 0.02)},
                      {"status": {"caption_status": "dropped", "caption_reason": "caption refusal: long"},
                       "long": ("I'm sorry", "I'm sorry", "refusal", math.nan)}])
    planted_table(b, [{"label": ("A dog", "A dog", "", 0.10)}, {"label": ("A dog", "A dog", "", 0.11)},
                      {"status": {"caption_status": "failed", "caption_reason": "decode failed: OSError"}}])
    result = audit(tmp_path, examples=1)
    assert result["status"] == {"ok": 4, "dropped": 1, "failed": 1}
    assert result["dropped"] == {"caption refusal: long": 1}
    label = result["levels"]["label"]
    assert label["flags"] == {"label_unrelated": 1}  # the failed row's flags are not findings
    assert result["levels"]["long"]["flags"] == {"refusal": 1}  # the dropped row's finding counts
    assert dict(label["openings_before"])["the image shows"] == 2 and "the image shows" not in dict(
        label["openings_after"])
    assert label["top_captions"][0] == ("A dog", 2)
    assert label["repeated"] == [("A dog", 2)] and result["levels"]["short"]["repeated"] == [("A dog.", 4)]
    assert label["vocabulary"] == 4 and label["person"] == {"gender": 2, "age": 0, "people": 0}
    assert label["scored"] == 4 and [e["key"] for e in label["low"]] == ["00000001"]
    assert label["high"][0] == {"score": 0.30, "key": "00000000", "shard": "00000", "caption": "A woman"}
    card = captions_card(result)
    assert "| flagged label_unrelated | 1 | 0 | 0 | 0 |" in card and "### Biases" in card
    assert "| gender (man, men, woman, women, boy, boys, ...) | 2 | 0 | 0 | 0 |" in card
    assert "google/siglip-base-patch16-224" in card and "caption refusal: long: 1" in card
    assert 'label "A dog" for 2 of 4' in card


def test_a_large_audit_samples_texts_and_the_distribution_but_counts_and_tails_every_caption(tmp_path,
                                                                                          monkeypatch):
    """Above SAMPLED captions, every k-th kept image feeds the text statistics and the score
    distribution (memory bounded at any corpus size); findings, the scored count and the tails
    still read every row."""
    import gpic.stages.caption as captioning

    planted_table(tmp_path / "00000.parquet", [{"label": (f"A cat {i}", f"A cat {i}", "truncated", i / 10)}
                                               for i in range(6)])
    monkeypatch.setattr(captioning, "SAMPLED", 2)  # 6 rows: every 3rd
    result = audit(tmp_path, examples=1)
    label = result["levels"]["label"]
    assert (result["step"], result["sampled"]) == (3, 2) and sorted(label["words"]) == ["mean", "p5", "p50", "p95"]
    assert label["agreement"]["mean"] == pytest.approx(0.15)  # rows 0 and 3: 0.0 and 0.3
    assert label["scored"] == 6 and label["flags"] == {"truncated": 6}
    assert label["low"][0]["score"] == 0.0 and label["high"][0]["score"] == 0.5


def test_every_hygiene_rule_has_an_on_flag_setting(base_config):
    from gpic.hygiene import RULES

    assert list(base_config["caption"]["on_flag"]) == list(RULES)


def test_a_shard_with_nothing_to_caption_audits_and_renders(shard, captioner, tmp_path):
    """A run where dedup kept nothing: the caption table is empty but typed, and the audit, the
    card's section and the report's section say so instead of failing."""
    from gpic.review.report import captions_section

    decisions, records, raw = shard
    cfg = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"}, "embed": {"model": "m"},
                           "caption": {"model": "m"}})["caption"]
    table = caption_shard(decisions.assign(kept=False), records, raw, cfg, tmp_path / "00000.parquet",
                          model=captioner)
    assert len(table) == 0 and table["long_agreement"].dtype == float and table["long_tokens"].dtype == int
    result = audit(tmp_path)
    assert result["captioned"] == 0 and result["models"]["agreement_model_id"] == ""
    assert "0 images captioned: 0 kept" in captions_card(result)
    page = captions_section(tmp_path, result)
    assert "0 images captioned by -" in " ".join(page.split()) and "<figure>" not in page
