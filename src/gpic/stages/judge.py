"""The judge stage: a VLM scores one closed question per criterion (quality, safety) for
every image that passed the heuristics. Nothing is generated or parsed: one forward pass per
image and criterion over the prompt gives the next-token probabilities of the criterion's
accept and reject words (the image encoded once for all criteria); the record keeps
`p_reject` (the reject words' share of the two) and `mass` (the two words' share of the
whole distribution), and the verdict is p_reject against `judge.reject_threshold`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gpic.config import Config, JudgeConfig
from gpic.identity import config_hash
from gpic.images import load_batches
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, with_producer, write_table

if TYPE_CHECKING:  # imported when a model is loaded: `gpic summary` reads judge tables without torch
    from gpic.inference.vlm import Question, VisionLanguageModel, VllmModel

log = logging.getLogger(__name__)

STAGE = STAGES["judge"]
COLUMNS = ["key", "judge_verdict", "judge_reason"]  # then {criterion}_p_reject, {criterion}_mass per criterion
# A judged key is unhealthy when, for some criterion, the model puts less than LOW_MASS of its
# next-token probability on the accept and reject words (it would answer something else: a
# wrong prompt, chat template or checkpoint; the demo's random tiny model), or has no
# preference between them (p_reject within UNDECIDED of 0.5). Above WARN_FRACTION of judged
# keys either way, the judge is not judging: say so, loudly.
LOW_MASS = 0.5
UNDECIDED = 0.1
WARN_FRACTION = 0.5


def questions(cfg: JudgeConfig) -> dict[str, Question]:
    from gpic.inference.vlm import Question

    return {name: Question(spec["prompt"], tuple(spec["accept"]), tuple(spec["reject"]))
            for name, spec in cfg["criteria"].items()}


def decide(p_reject: dict[str, float], threshold: float) -> tuple[str, str]:
    """Verdict and reason from each criterion's p_reject: the first above the threshold drops."""
    for criterion, p in p_reject.items():
        if p > threshold:
            return "drop", f"judge {criterion} rejected: p_reject {p:.3f} > {threshold:g}"
    return "pass", ""


def judge_batch(model, keys: list[str], images: list, cfg: JudgeConfig) -> list[dict]:
    """One row per image: verdict, reason, and per criterion p_reject and mass."""
    scores = model.judge_scores(images, questions(cfg))
    rows = []
    for i, key in enumerate(keys):
        p_reject = {c: scores[c][i].p_reject for c in cfg["criteria"]}
        verdict, reason = decide(p_reject, cfg["reject_threshold"])
        row = {"key": key, "judge_verdict": verdict, "judge_reason": reason}
        for c in cfg["criteria"]:
            row[f"{c}_p_reject"], row[f"{c}_mass"] = scores[c][i].p_reject, scores[c][i].mass
        rows.append(row)
    return rows


def judge_health(table: pd.DataFrame) -> dict:
    """How well the model kept to the closed answer set, from a judge table: keys judged (a
    failed decode has no score), keys whose accept and reject words hold less than LOW_MASS of
    the next-token probability for some criterion, keys undecided (p_reject within UNDECIDED
    of 0.5) for some criterion, and both per criterion."""
    criteria = [c.removesuffix("_p_reject") for c in table.columns if c.endswith("_p_reject")]
    judged = table[table["judge_verdict"] != "failed"]
    low = pd.DataFrame({c: judged[f"{c}_mass"].astype(float) < LOW_MASS for c in criteria}, index=judged.index)
    undecided = pd.DataFrame({c: (judged[f"{c}_p_reject"].astype(float) - 0.5).abs() < UNDECIDED
                              for c in criteria}, index=judged.index)
    return {"judged": int(len(judged)), "low_mass": int(low.any(axis=1).sum()),
            "undecided": int(undecided.any(axis=1).sum()),
            "criteria": {c: {"low_mass": int(low[c].sum()), "undecided": int(undecided[c].sum())} for c in criteria}}


def health_warning(health: dict) -> str:
    """A one-line warning when most judged keys got scores that decide nothing, else ''."""
    judged = health["judged"]
    if not judged:
        return ""
    problems = []
    low, undecided = health["low_mass"], health["undecided"]
    if low / judged > WARN_FRACTION:
        problems.append(f"judge mostly answers neither word: {low} of {judged} judged keys ({low / judged:.0%}) put "
                        f"less than {LOW_MASS:.0%} of the next-token probability on the accept and reject words "
                        "(a wrong prompt, chat template or checkpoint?)")
    if undecided / judged > WARN_FRACTION:
        problems.append(f"judge mostly undecided: {undecided} of {judged} judged keys ({undecided / judged:.0%}) "
                        f"have a p_reject within {UNDECIDED} of 0.5")
    return "; ".join(problems) + "; their verdicts are arbitrary" if problems else ""


def judge_shard(filter_table: pd.DataFrame, fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: JudgeConfig,
                out_path: str | Path, model=None,
                then: Callable[[list[str], list], None] | None = None) -> pd.DataFrame:
    """Judge every image the filter passed; `model` is a loaded VisionLanguageModel or None to
    load cfg['model']. `then(keys, images)` gets each batch's passed images, decoded (the
    assess job embeds them without decoding again)."""
    passed = set(filter_table.loc[filter_table["filter_verdict"] == "pass", "key"])
    members = dict(fetch_records.loc[fetch_records["key"].isin(passed), ["key", "raw_member"]].itertuples(index=False))
    criteria = cfg["criteria"]
    rows = []
    if members:
        model = model or load_model({"judge": cfg})
        raw = read_tar(raw_tar)
        for keys, images, failures in load_batches(raw, members, cfg["batch_size"]):
            rows += [{"key": k, "judge_verdict": "failed", "judge_reason": reason} for k, reason in failures]
            judged = judge_batch(model, keys, images, cfg) if keys else []
            rows += judged
            if then is not None:
                kept = [(row["key"], image) for row, image in zip(judged, images) if row["judge_verdict"] == "pass"]
                then([k for k, _ in kept], [image for _, image in kept])
            log.info("judged %d/%d", len(rows), len(members))
    columns = COLUMNS + [f"{c}_{x}" for c in criteria for x in ("p_reject", "mass")]
    table = pd.DataFrame(rows, columns=columns).sort_values("key")
    extra = ({"model_id": model.model_id, "model_revision": model.revision} if members
             else {"model_id": "", "model_revision": ""})
    table = with_producer(table, "judge", cfg, prompt_hash=config_hash(criteria), **extra)
    write_table(table, out_path)
    log.info("judge verdicts: %s", table["judge_verdict"].value_counts().to_dict())
    if warning := health_warning(judge_health(table)):
        log.warning("%s (shard table %s)", warning, out_path)
    return table


def load_model(cfg: Config) -> VisionLanguageModel | VllmModel:
    """The configured backend: transformers (the tested path, CPU or GPU) or vLLM (GPU nodes)."""
    from gpic.inference.vlm import VisionLanguageModel, VllmModel

    judge = cfg["judge"]
    if judge.get("backend") == "vllm":
        return VllmModel(judge["model"], max_pixels=judge["max_pixels"])
    return VisionLanguageModel(judge["model"], device=judge["device"], max_pixels=judge["max_pixels"])


def run(files: ShardFiles, cfg: Config, *, model: VisionLanguageModel | None = None) -> pd.DataFrame:
    """Judge every image of the shard that passed the filter."""
    return judge_shard(read_table(files.table("filter")), read_table(files.table("fetch")), files.raw, cfg["judge"],
                       files.table("judge"), model=model)
