"""A judge that mostly answers outside its closed set is reported, not passed in silence: the
judge stage logs it per shard, `gpic summary` (human and --json) and the report say it. Real
judge tables, written by the judge stage from a model whose answers are scripted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gpic.cli import app
from gpic.identity import make_key
from gpic.inference.vlm import Generation
from gpic.review.report import judge_section
from gpic.stages.judge import UNPARSEABLE_WARN, answer_health, health_warning, judge_shard
from gpic.stages.provenance import summarise
from gpic.store import write_json, write_table, write_tar

from helpers import jpeg_bytes

NAMES = ["astronaut", "coffee", "chelsea", "rocket"]
WARNING = "judge answers mostly unparseable"


class ScriptedModel:
    """Stands in for a VisionLanguageModel: the quality answers in the order asked, 'safe' to
    the safety question."""

    model_id, revision = "scripted", "0"

    def __init__(self, quality: list[str]):
        self.quality = list(quality)

    def generate(self, images, prompt, max_new_tokens):
        texts = [self.quality.pop(0) for _ in images] if "quality" in prompt else ["safe"] * len(images)
        return [Generation(text=t, new_tokens=1, hit_limit=False) for t in texts]


def judged_shard(folder: Path, photos, base_config, quality: list[str], policy: str = "keep") -> pd.DataFrame:
    """Run the judge stage over the four photos of one shard, answering `quality` in key order."""
    keys = sorted(make_key("flickr", name) for name in NAMES)
    write_tar(folder / "raw.tar", [(f"{k}.jpg", jpeg_bytes(photos[n])) for k, n in zip(keys, NAMES)])
    records = pd.DataFrame({"key": keys, "raw_member": [f"{k}.jpg" for k in keys]})
    filtered = pd.DataFrame({"key": keys, "filter_verdict": ["pass"] * len(keys)})
    cfg = dict(base_config["judge"], on_unparseable=policy, batch_size=2)
    return judge_shard(filtered, records, folder / "raw.tar", cfg, folder / "judge" / "00000.parquet",
                       model=ScriptedModel(quality))


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


MOSTLY_UNPARSEABLE = ["hmm", "The image is good", "good", "maybe"]  # 3 of 4: above UNPARSEABLE_WARN
PARSEABLE = ["good", "bad", "Good.", "good"]


def test_the_judge_stage_logs_a_warning_for_a_shard_of_unparseable_answers(tmp_path, photos, base_config, caplog):
    with caplog.at_level(logging.WARNING, logger="gpic.stages.judge"):
        table = judged_shard(tmp_path, photos, base_config, MOSTLY_UNPARSEABLE)
    assert (table["judge_verdict"] == "pass").all()  # on_unparseable: keep passed them all
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and WARNING in warnings[0]
    assert "3 of 4 judged keys (75%)" in warnings[0] and "on_unparseable: keep passed 3 of them" in warnings[0]


def test_the_judge_stage_is_quiet_when_the_answers_parse(tmp_path, photos, base_config, caplog):
    with caplog.at_level(logging.WARNING, logger="gpic.stages.judge"):
        table = judged_shard(tmp_path, photos, base_config, PARSEABLE)
    assert table["judge_verdict"].tolist().count("drop") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_health_counts_keys_not_answers_and_skips_failed_decodes():
    table = pd.DataFrame({"key": list("abcde"), "judge_verdict": ["pass", "drop", "pass", "failed", "drop"],
                          "quality_outcome": ["unparseable", "unparseable", "accept", None, "reject"],
                          "safety_outcome": ["unparseable", "accept", "accept", None, "unparseable"]})
    health = answer_health(table)
    assert health == {"judged": 4, "unparseable": 3, "passed_unparseable": 1,
                      "criteria": {"quality": 2, "safety": 2}}
    assert "3 of 4" in health_warning(health)
    half = {"judged": 4, "unparseable": 2, "passed_unparseable": 2, "criteria": {}}
    assert UNPARSEABLE_WARN == 0.5 and health_warning(half) == ""  # "mostly" means more than half
    assert health_warning({"judged": 0, "unparseable": 0, "passed_unparseable": 0, "criteria": {}}) == ""
    dropped = {"judged": 2, "unparseable": 2, "passed_unparseable": 0, "criteria": {}}
    assert "none of them passed" in health_warning(dropped)  # on_unparseable: drop


@pytest.mark.parametrize("quality,warned", [(MOSTLY_UNPARSEABLE, True), (PARSEABLE, False)])
def test_summary_and_report_show_judge_answer_health(tmp_path, photos, base_config, quality, warned):
    folder = results(tmp_path, judged_shard(tmp_path, photos, base_config, quality))
    judge = summarise(folder)["judge"]
    assert judge["judged"] == 4 and judge["unparseable"] == (3 if warned else 0)
    assert judge["unparseable_fraction"] == (0.75 if warned else 0.0)
    assert (WARNING in judge["warning"]) is warned and (judge["warning"] == "") is not warned

    human = CliRunner().invoke(app, ["summary", "--results", str(folder)], terminal_width=200)
    assert human.exit_code == 0, human.output
    assert f"4 keys judged, {judge['unparseable']} with an unparseable answer" in human.output
    assert (f"WARNING: {WARNING}" in human.output) is warned

    machine = CliRunner().invoke(app, ["summary", "--results", str(folder), "--json"], terminal_width=200)
    assert machine.exit_code == 0, machine.output
    assert json.loads(machine.stdout)["judge"] == judge  # stdout stays JSON ...
    assert (f"WARNING: {WARNING}" in machine.stderr) is warned  # ... and a person still sees the warning

    page = judge_section(summarise(folder))
    assert "<h2>Judge answers</h2>" in page and "4 keys judged" in page
    assert (f"Warning: {WARNING}" in page) is warned
