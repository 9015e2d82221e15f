"""The judge stage: a VLM answers one closed question per criterion (quality, safety) for
every image that passed the heuristics; the raw answer is kept beside the verdict."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from gpic.config import Config, JudgeConfig
from gpic.identity import config_hash
from gpic.images import load_batches
from gpic.inference.vlm import VisionLanguageModel
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, stamp, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["judge"]
COLUMNS = ["key", "judge_verdict", "judge_reason"]  # then {criterion}_answer, {criterion}_outcome per criterion


def parse_answer(text: str, accept: list[str], reject: list[str]) -> str:
    """'accept', 'reject' or 'unparseable' from the first word of a model answer (case,
    punctuation, markdown and a leading reasoning block ignored). Only the first word counts,
    so "not good" is unparseable rather than a misread "good"."""
    words = re.findall(r"[a-z]+", re.sub(r"<think>.*?(</think>|$)", " ", text.lower(), flags=re.DOTALL))
    if not words:
        return "unparseable"
    if words[0] in {w.lower() for w in accept}:
        return "accept"
    if words[0] in {w.lower() for w in reject}:
        return "reject"
    return "unparseable"


def decide(outcomes: dict[str, str], answers: dict[str, str], on_unparseable: str) -> tuple[str, str]:
    """Verdict and reason from the per-criterion outcomes."""
    for criterion, outcome in outcomes.items():
        if outcome == "reject":
            return "drop", f"judge {criterion} rejected: {answers[criterion][:40]}"
    for criterion, outcome in outcomes.items():
        if outcome == "unparseable" and on_unparseable == "drop":
            return "drop", f"judge {criterion} unparseable: {answers[criterion][:40]}"
    return "pass", ""


def judge_shard(filter_table: pd.DataFrame, fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: JudgeConfig,
                out_path: str | Path, model=None) -> pd.DataFrame:
    """Judge every image the filter passed; `model` is a loaded VisionLanguageModel or None to load cfg['model']."""
    passed = set(filter_table.loc[filter_table["filter_verdict"] == "pass", "key"])
    members = dict(fetch_records.loc[fetch_records["key"].isin(passed), ["key", "raw_member"]].itertuples(index=False))
    criteria = cfg["criteria"]
    rows = []
    if members:
        model = model or load_model({"judge": cfg})
        raw = read_tar(raw_tar)
        for keys, images, failures in load_batches(raw, members, cfg["batch_size"]):
            rows += [{"key": k, "judge_verdict": "failed", "judge_reason": reason} for k, reason in failures]
            answers = {c: model.generate(images, spec["prompt"], cfg["max_new_tokens"])
                       for c, spec in criteria.items()} if keys else {}
            for i, key in enumerate(keys):
                text = {c: answers[c][i].text for c in criteria}
                outcomes = {c: parse_answer(text[c], spec["accept"], spec["reject"]) for c, spec in criteria.items()}
                verdict, reason = decide(outcomes, text, cfg["on_unparseable"])
                row = {"key": key, "judge_verdict": verdict, "judge_reason": reason}
                for c in criteria:
                    row[f"{c}_answer"], row[f"{c}_outcome"] = text[c], outcomes[c]
                rows.append(row)
            log.info("judged %d/%d", len(rows), len(members))
    columns = COLUMNS + [f"{c}_{x}" for c in criteria for x in ("answer", "outcome")]
    table = pd.DataFrame(rows, columns=columns).sort_values("key")
    extra = ({"model_id": model.model_id, "model_revision": model.revision} if members
             else {"model_id": "", "model_revision": ""})
    table = stamp(table, "judge", cfg, prompt_hash=config_hash(criteria), **extra)
    write_table(table, out_path)
    log.info("judge verdicts: %s", table["judge_verdict"].value_counts().to_dict())
    return table


def load_model(cfg: Config) -> VisionLanguageModel:
    judge = cfg["judge"]
    return VisionLanguageModel(judge["model"], device=judge["device"], max_pixels=judge["max_pixels"])


def run(files: ShardFiles, cfg: Config, *, model: VisionLanguageModel | None = None) -> pd.DataFrame:
    """Judge every image of the shard that passed the filter."""
    return judge_shard(read_table(files.table("filter")), read_table(files.table("fetch")), files.raw, cfg["judge"],
                       files.table("judge"), model=model)
