"""A judge whose scores decide nothing is reported, not passed in silence: the judge stage
logs it per shard, `gpic summary` (human and --json) and the report say it. Real judge
tables, written by the judge stage from the tiny model: as built (random weights spread the
next-token probability over the whole vocabulary, so the answer words hold almost none of
it) and steered (its output layer rewired so the answer words take nearly all of it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from gpic.cli import app
from gpic.identity import make_key
from gpic.inference.vlm import VisionLanguageModel, answer_tokens
from gpic.review.report import judge_section
from gpic.stages.judge import LOW_MASS, UNDECIDED, WARN_FRACTION, health_warning, judge_health, judge_shard, questions
from gpic.stages.provenance import summarise
from gpic.store import write_json, write_table, write_tar

from helpers import jpeg_bytes

NAMES = ["astronaut", "coffee", "chelsea", "rocket"]
NEITHER = "judge mostly answers neither word"
QUALITY = {"quality": {"prompt": "Is this a clear photo? Answer with one word: good or bad.", "accept": ["good"],
                       "reject": ["bad"]}}


@pytest.fixture(scope="module")
def random_judge(tiny_models):
    return VisionLanguageModel(tiny_models["vlm"])


@pytest.fixture(scope="module")
def steered_judge(tiny_models):
    """The tiny model with its output layer rewired for the quality question alone: the
    accept words' rows along a random direction u, the reject words' along -u, every other row
    zero. The answer words then take nearly all the probability, one side or the other by the
    sign of u . h, so the scores are healthy: high mass, far from 0.5."""
    vlm = VisionLanguageModel(tiny_models["vlm"])
    weight = vlm.model.lm_head.weight
    u = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(0))
    accept, reject = answer_tokens(vlm.processor.tokenizer, questions({"criteria": QUALITY})["quality"])
    with torch.no_grad():
        weight.zero_()
        weight[list(accept)] = 100 * u
        weight[list(reject)] = -100 * u
    return vlm


def judged_shard(folder: Path, photos, base_config, model, criteria: dict | None = None) -> pd.DataFrame:
    """Run the judge stage over the four photos of one shard (default criteria unless given)."""
    keys = sorted(make_key("flickr", name) for name in NAMES)
    write_tar(folder / "raw.tar", [(f"{k}.jpg", jpeg_bytes(photos[n])) for k, n in zip(keys, NAMES)])
    records = pd.DataFrame({"key": keys, "raw_member": [f"{k}.jpg" for k in keys]})
    filtered = pd.DataFrame({"key": keys, "filter_verdict": ["pass"] * len(keys)})
    cfg = dict(base_config["judge"], reject_threshold=1.0, batch_size=2)
    if criteria:
        cfg["criteria"] = criteria
    return judge_shard(filtered, records, folder / "raw.tar", cfg, folder / "judge" / "00000.parquet", model=model)


def results(folder: Path, judged: pd.DataFrame) -> Path:
    """A one-shard results folder: the judge table the stage wrote, and every key packed or
    dropped as its verdict says."""
    write_json({"shards": 1, "per_shard": {"00000": len(judged)}}, folder / "manifests" / "partition.json")
    dropped = judged["judge_verdict"] == "drop"
    write_table(pd.DataFrame({"key": judged["key"], "state": dropped.map({True: "dropped", False: "packed"}),
                              "stage": dropped.map({True: "judge", False: "pack"}), "reason": judged["judge_reason"],
                              "split": "train", "tar": "", "member": "", "source": "flickr", "source_id": "x",
                              "url": ""}), folder / "provenance" / "00000.parquet")
    return folder


def test_the_judge_stage_logs_a_warning_for_a_shard_whose_scores_miss_the_answer_words(
        tmp_path, photos, base_config, random_judge, caplog):
    with caplog.at_level(logging.WARNING, logger="gpic.stages.judge"):
        table = judged_shard(tmp_path, photos, base_config, random_judge)
    assert (table["quality_mass"] < 0.05).all() and (table["safety_mass"] < 0.05).all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and NEITHER in warnings[0]
    assert "4 of 4 judged keys (100%)" in warnings[0] and "verdicts are arbitrary" in warnings[0]


def test_the_judge_stage_is_quiet_when_the_answer_words_carry_the_probability(
        tmp_path, photos, base_config, steered_judge, caplog):
    with caplog.at_level(logging.WARNING, logger="gpic.stages.judge"):
        table = judged_shard(tmp_path, photos, base_config, steered_judge, QUALITY)
    assert (table["quality_mass"] > 0.99).all() and ((table["quality_p_reject"] - 0.5).abs() > 0.49).all()
    assert health_warning(judge_health(table)) == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_health_counts_keys_not_scores_and_skips_failed_decodes():
    table = pd.DataFrame({"key": list("abcde"), "judge_verdict": ["pass", "drop", "pass", "failed", "drop"],
                          "quality_p_reject": [0.55, 0.9, 0.1, None, 0.95],
                          "quality_mass": [0.9, 0.2, 0.9, None, 0.95],
                          "safety_p_reject": [0.02, 0.45, 0.01, None, 0.3],
                          "safety_mass": [0.1, 0.1, 0.9, None, 0.9]})
    health = judge_health(table)
    assert health == {"judged": 4, "low_mass": 2, "undecided": 2,
                      "criteria": {"quality": {"low_mass": 1, "undecided": 1},
                                   "safety": {"low_mass": 2, "undecided": 1}}}
    assert (LOW_MASS, UNDECIDED, WARN_FRACTION) == (0.5, 0.1, 0.5)
    assert health_warning(health) == ""  # "mostly" means more than half
    low = {**health, "low_mass": 3}
    assert NEITHER in health_warning(low) and "3 of 4 judged keys (75%)" in health_warning(low)
    undecided = health_warning({**health, "undecided": 4})
    assert "judge mostly undecided: 4 of 4" in undecided and NEITHER not in undecided
    assert health_warning({"judged": 0, "low_mass": 0, "undecided": 0, "criteria": {}}) == ""


@pytest.mark.parametrize("steered", [False, True])
def test_summary_and_report_show_judge_score_health(tmp_path, photos, base_config, random_judge, steered_judge,
                                                    steered):
    judged = (judged_shard(tmp_path, photos, base_config, steered_judge, QUALITY) if steered
              else judged_shard(tmp_path, photos, base_config, random_judge))
    folder = results(tmp_path, judged)
    judge = summarise(folder)["judge"]
    warned = not steered
    assert judge["judged"] == 4 and judge["low_mass"] == (0 if steered else 4)
    assert judge["low_mass_fraction"] == (0.0 if steered else 1.0)
    assert judge["criteria"]["quality"]["low_mass"] == (0 if steered else 4)
    assert set(judge["criteria"]) == ({"quality"} if steered else {"quality", "safety"})
    assert (NEITHER in judge["warning"]) is warned and (judge["warning"] == "") is not warned

    human = CliRunner().invoke(app, ["summary", "--results", str(folder)], terminal_width=200)
    assert human.exit_code == 0, human.output
    assert f"4 keys judged, {judge['low_mass']} answering neither word" in human.output
    assert (f"WARNING: {NEITHER}" in human.output) is warned

    machine = CliRunner().invoke(app, ["summary", "--results", str(folder), "--json"], terminal_width=200)
    assert machine.exit_code == 0, machine.output
    assert json.loads(machine.stdout)["judge"] == judge  # stdout stays JSON ...
    assert (f"WARNING: {NEITHER}" in machine.stderr) is warned  # ... and a person still sees the warning

    page = judge_section(summarise(folder))
    assert "<h2>Judge scores</h2>" in page and "4 keys judged" in page
    assert (f"Warning: {NEITHER}" in page) is warned
