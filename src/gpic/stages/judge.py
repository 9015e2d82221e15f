"""The judge stage: a VLM answers one closed question per criterion (quality, safety) for
every image that passed the heuristics; the raw answer is kept beside the verdict."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gpic.config import Config, JudgeConfig
from gpic.identity import config_hash
from gpic.images import load_batches
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, stamp, write_table

if TYPE_CHECKING:  # imported when a model is loaded: `gpic summary` reads judge tables without torch
    from gpic.inference.vlm import VisionLanguageModel

log = logging.getLogger(__name__)

STAGE = STAGES["judge"]
COLUMNS = ["key", "judge_verdict", "judge_reason"]  # then {criterion}_answer, {criterion}_outcome per criterion
# Above this fraction of judged keys with an answer outside the closed set, the judge is not
# judging (a wrong prompt, template or checkpoint; the demo's random tiny model): say so, loudly.
UNPARSEABLE_WARN = 0.5


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


def answer_health(table: pd.DataFrame) -> dict:
    """How well the model kept to the closed answer set, from a judge table: keys judged (a
    failed decode has no answer), keys with at least one unparseable answer (and per criterion),
    and of those the ones that passed, which only `on_unparseable: keep` lets through."""
    outcomes = [c for c in table.columns if c.endswith("_outcome")]
    judged = table[table["judge_verdict"] != "failed"]
    unparseable = judged[outcomes].eq("unparseable")
    hit = unparseable.any(axis=1)
    return {"judged": int(len(judged)), "unparseable": int(hit.sum()),
            "passed_unparseable": int((hit & judged["judge_verdict"].eq("pass")).sum()),
            "criteria": {c.removesuffix("_outcome"): int(unparseable[c].sum()) for c in outcomes}}


def health_warning(health: dict) -> str:
    """A one-line warning when most judged keys got an unparseable answer, else ''."""
    judged, bad = health["judged"], health["unparseable"]
    if not judged or bad / judged <= UNPARSEABLE_WARN:
        return ""
    passed = health["passed_unparseable"]
    fate = f"on_unparseable: keep passed {passed} of them unjudged" if passed else "none of them passed"
    return (f"judge answers mostly unparseable: {bad} of {judged} judged keys ({bad / judged:.0%}) got an answer "
            f"outside the closed set; {fate}")


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
    if warning := health_warning(answer_health(table)):
        log.warning("%s (shard table %s)", warning, out_path)
    return table


def load_model(cfg: Config) -> VisionLanguageModel:
    from gpic.inference.vlm import VisionLanguageModel

    judge = cfg["judge"]
    return VisionLanguageModel(judge["model"], device=judge["device"], max_pixels=judge["max_pixels"])


def run(files: ShardFiles, cfg: Config, *, model: VisionLanguageModel | None = None) -> pd.DataFrame:
    """Judge every image of the shard that passed the filter."""
    return judge_shard(read_table(files.table("filter")), read_table(files.table("fetch")), files.raw, cfg["judge"],
                       files.table("judge"), model=model)
