"""The caption stage: four levels per image (label, short, medium, long) from a VLM with
greedy decoding, cleaned and checked by caption hygiene (gpic.hygiene), and scored against
the image by a second model of another family (gpic.inference.agreement). Every finding is a
reason recorded per level; `caption.on_flag` keeps the caption with its flag, captions that
level once more with a fallback decoding, or drops the image with the reason.

Captioning is the expensive stage (GPIC: ~1,500 H100-hours), so a killed job must not
start its shard again: each finished batch is written to a part file beside the output
(`captions/{shard}.parquet.parts/`), and a rerun with the same configuration and model
skips the batches it finds there. Batches are fixed by the sorted keys and the batch size,
so the assembled table is the one an uninterrupted run writes."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gpic.config import CaptionConfig, Config
from gpic.contracts import LEVELS
from gpic.hygiene import PERSON_TERMS, Hygiene, ngrams, opening, person_counts, words
from gpic.identity import config_hash
from gpic.images import load_batches
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, with_producer, write_table

if TYPE_CHECKING:  # the models import torch; the audit (report, publish) does not need them
    from gpic.inference.agreement import AgreementScorer
    from gpic.inference.vlm import VisionLanguageModel, VllmModel

log = logging.getLogger(__name__)

STAGE = STAGES["caption"]
# Per level: the clean text (what is packed), the model's raw text, the stock opening hygiene
# removed, tokens generated, the rules it breaks (";"-joined, "" for none), whether it was
# captioned a second time, and the agreement score (NaN when no scorer is configured).
LEVEL_FIELDS = ("", "_raw", "_opening", "_tokens", "_flags", "_recaptioned", "_agreement")
COLUMNS = ["key", "caption_status", "caption_reason"] + [f"{lv}{x}" for lv in LEVELS for x in LEVEL_FIELDS]
# A key whose image did not decode: no caption, the columns' types kept.
FAILED = {"caption_status": "failed", **{f"{lv}{x}": v for lv in LEVELS for x, v in zip(
    LEVEL_FIELDS, ("", "", "", 0, "", False, math.nan))}}


@dataclass
class Captioner:
    """What a caption job loads once: the VLM and, when configured, the agreement scorer."""

    vlm: VisionLanguageModel | VllmModel
    scorer: AgreementScorer | None = None


def load_model(cfg: Config) -> Captioner:
    """The configured backend (transformers: the tested path, CPU or GPU; vLLM: GPU nodes) and
    the agreement scorer of `caption.agreement.model` (none when it is empty)."""
    from gpic.inference.agreement import AgreementScorer
    from gpic.inference.vlm import VisionLanguageModel, VllmModel

    caption = cfg["caption"]
    if caption["backend"] == "vllm":
        vlm = VllmModel(caption["model"], max_pixels=caption["max_pixels"])
    else:
        vlm = VisionLanguageModel(caption["model"], device=caption["device"], max_pixels=caption["max_pixels"])
    agreement = caption["agreement"]
    return Captioner(vlm, AgreementScorer(agreement["model"], agreement["device"]) if agreement["model"] else None)


def generation_params(cfg: CaptionConfig) -> str:
    """What decides the text besides model and prompts, recorded with every caption."""
    return json.dumps({"backend": cfg["backend"], "do_sample": False, "num_beams": 1, "batch_size": cfg["batch_size"],
                       "max_new_tokens": {lv: cfg["levels"][lv]["max_new_tokens"] for lv in LEVELS},
                       "max_pixels": cfg["max_pixels"], "recaption": cfg["recaption"]}, sort_keys=True)


def _recaption(model, images: list, rows: list[dict], cfg: CaptionConfig, hygiene: Hygiene) -> None:
    """Caption once more, with the fallback decoding (`caption.recaption`), every level whose
    findings ask for it (`caption.on_flag`); then check those images again."""
    levels, act = cfg["levels"], cfg["on_flag"]
    for level in LEVELS:
        again = [i for i, row in enumerate(rows) if any(act[r] == "recaption" for r in row["flags"][level])]
        if not again:
            continue
        prompt, budget = levels[level]["prompt"], levels[level]["max_new_tokens"]
        for i, generation in zip(again, model.generate([images[i] for i in again], prompt, budget,
                                                       **cfg["recaption"])):
            rows[i]["raw"][level], rows[i]["hit"][level] = generation.text, generation.hit_limit
            rows[i]["clean"][level] = hygiene.clean(generation.text)
            rows[i]["tokens"][level] += generation.new_tokens  # both generations were paid for
            rows[i]["recaptioned"][level] = True
    for row in rows:  # the levels are checked against each other: all of an image's flags again
        if any(row["recaptioned"].values()):
            row["flags"] = hygiene.flags({lv: row["clean"][lv][0] for lv in LEVELS}, row["hit"])


def caption_batch(models: Captioner, keys: list[str], images: list, cfg: CaptionConfig) -> list[dict]:
    """Caption rows of one batch: generate, clean and check, recaption what asks for it, score
    each level against its image, then apply `on_flag` (the first level and rule that drops,
    in LEVELS and RULES order, names the reason)."""
    levels, hygiene, act = cfg["levels"], Hygiene.from_config(cfg["hygiene"]), cfg["on_flag"]
    outputs = models.vlm.generate_levels(images, {lv: (levels[lv]["prompt"], levels[lv]["max_new_tokens"])
                                                  for lv in LEVELS})
    rows = []
    for i in range(len(keys)):
        raw = {lv: outputs[lv][i].text for lv in LEVELS}
        hit = {lv: outputs[lv][i].hit_limit for lv in LEVELS}
        clean = {lv: hygiene.clean(raw[lv]) for lv in LEVELS}
        rows.append({"raw": raw, "hit": hit, "clean": clean, "tokens": {lv: outputs[lv][i].new_tokens for lv in LEVELS},
                     "recaptioned": dict.fromkeys(LEVELS, False),
                     "flags": hygiene.flags({lv: clean[lv][0] for lv in LEVELS}, hit)})
    _recaption(models.vlm, images, rows, cfg, hygiene)
    scores = [[math.nan] * len(LEVELS) for _ in keys]
    if models.scorer is not None and keys:
        scores = models.scorer.score(images, [[row["clean"][lv][0] for lv in LEVELS] for row in rows])
    minimum = cfg["agreement"]["min_score"]
    out = []
    for key, row, score in zip(keys, rows, scores):
        record = {"key": key, "caption_status": "ok", "caption_reason": ""}
        for level, value in zip(LEVELS, score):
            if value < minimum[level]:  # NaN (unscored or empty) compares False: no flag
                row["flags"][level].append("mismatch")
            text, opening = row["clean"][level]
            record.update({level: text, f"{level}_raw": row["raw"][level], f"{level}_opening": opening,
                           f"{level}_tokens": row["tokens"][level], f"{level}_flags": ";".join(row["flags"][level]),
                           f"{level}_recaptioned": row["recaptioned"][level], f"{level}_agreement": float(value)})
        dropped = next(((lv, rule) for lv in LEVELS for rule in row["flags"][lv] if act[rule] == "drop"), None)
        if dropped:
            record.update(caption_status="dropped", caption_reason=f"caption {dropped[1]}: {dropped[0]}")
        out.append(record)
    return out


def _empty() -> pd.DataFrame:
    """A table of no caption row with its columns' types (the audit compares the scores)."""
    types = {"key": str, "caption_reason": str, **{name: type(value) for name, value in FAILED.items()}}
    return pd.DataFrame({name: pd.Series(dtype=types[name]) for name in COLUMNS})


def caption_shard(decisions: pd.DataFrame, fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: CaptionConfig,
                  out_path: str | Path, model=None) -> pd.DataFrame:
    """Caption every key that dedup kept in this shard, resuming from finished batches."""
    kept = set(decisions.loc[decisions["kept"], "key"])
    members = dict(fetch_records.loc[fetch_records["key"].isin(kept), ["key", "raw_member"]].itertuples(index=False))
    out_path = Path(out_path)
    parts = out_path.with_name(out_path.name + ".parts")
    rows, extra = [], {"model_id": "", "model_revision": "", "agreement_model_id": "", "agreement_model_revision": ""}
    if members:
        model = model or load_model({"caption": cfg})
        scorer = model.scorer
        extra = {"model_id": model.vlm.model_id, "model_revision": model.vlm.revision,
                 "agreement_model_id": scorer.model_id if scorer else "",
                 "agreement_model_revision": scorer.revision if scorer else ""}
        # part files of another configuration or model must never be mixed in
        run_id = config_hash({**cfg, **extra, "generation": generation_params(cfg)})
        parts = parts / run_id
        raw = read_tar(raw_tar)
        done = 0
        for number, (keys, images, failures) in enumerate(load_batches(raw, members, cfg["batch_size"])):
            part = parts / f"{number:06d}.parquet"
            resumed = part.exists()
            if not resumed:
                batch = [{**FAILED, "key": k, "caption_reason": r} for k, r in failures]
                batch += caption_batch(model, keys, images, cfg) if keys else []
                write_table(pd.DataFrame(batch, columns=COLUMNS), part)
            rows.append(read_table(part))  # read back either way: a resumed run assembles the same table
            done += len(rows[-1])
            log.info("captioned %d/%d%s", done, len(members), " (part file of an earlier run)" if resumed else "")
    table = pd.concat(rows, ignore_index=True) if rows else _empty()
    table = table.sort_values("key", ignore_index=True)
    table = with_producer(table, "caption", cfg, prompt_hash=config_hash(cfg["levels"]), decoding="greedy",
                          generation=generation_params(cfg), **extra)
    write_table(table, out_path)
    shutil.rmtree(out_path.with_name(out_path.name + ".parts"), ignore_errors=True)
    return table


def run(files: ShardFiles, cfg: Config, *, model=None) -> pd.DataFrame:
    """Caption every key of the shard that dedup kept."""
    return caption_shard(read_table(files.table("dedup")), read_table(files.table("fetch")), files.raw, cfg["caption"],
                         files.table("captions"), model=model)


# ---------------------------------------------------------------------------
# The caption audit: what a user of the corpus should know about its captions before training
# on them (docs/captioning.md, Caption audit). The run report and the dataset card show it.
# ---------------------------------------------------------------------------

SAMPLED = 200_000  # captioned keys the text statistics read at most (every k-th); counts of flags read every row
REPEATED = 0.01  # a caption written for this share of a level's images (and two at least) is a finding
AUDIT_COLUMNS = ["key", "caption_status", "caption_reason",
                 *(f"{lv}{x}" for lv in LEVELS for x in ("", "_raw", "_flags", "_agreement"))]

MODEL_COLUMNS = ["caption_model_id", "caption_model_revision", "caption_agreement_model_id",
                 "caption_agreement_model_revision"]


def _quantiles(values: pd.Series) -> dict[str, float]:
    return {f"p{q}": float(values.quantile(q / 100)) for q in (5, 50, 95)} | {"mean": float(values.mean())}


def audit(folder: str | Path, examples: int = 3, top: int = 5) -> dict:
    """The audit of the caption tables in `folder` (results/captions), one shard at a time: per
    level, the findings of hygiene and the scorer by rule, the most common openings before and
    after hygiene, the most frequent captions and word trigrams, vocabulary size, length in
    words, the agreement-score distribution with the `examples` lowest and highest (key, shard,
    caption, score), and how many captions mention each group of person-describing terms.
    Findings, the scored count and the tails read every caption; the text statistics and the
    score distribution read every k-th kept key once there are more than SAMPLED (the audit
    says k), so memory stays one shard's table and the sample's, whatever the corpus' size."""
    tables = sorted(Path(folder).glob("*.parquet"))
    total = sum(pq.read_metadata(path).num_rows for path in tables)
    step = max(1, math.ceil(total / SAMPLED))
    status, dropped, sampled = Counter(), Counter(), 0
    models = {name.removeprefix("caption_"): "" for name in MODEL_COLUMNS}  # "" until a table has a row
    levels = {lv: {"flags": Counter(), "before": Counter(), "after": Counter(), "captions": Counter(),
                   "trigrams": Counter(), "vocabulary": set(), "words": [], "scores": [], "scored": 0, "tails": [],
                   "person": Counter()} for lv in LEVELS}
    for path in tables:
        shard = path.stem
        table = read_table(path, columns=AUDIT_COLUMNS + MODEL_COLUMNS)
        scores = [f"{level}_agreement" for level in LEVELS]
        table[scores] = table[scores].astype(float)  # a shard with no caption row stores them untyped
        if len(table) and not models["model_id"]:
            models = {name.removeprefix("caption_"): str(table[name].iloc[0]) for name in MODEL_COLUMNS}
        status.update(table["caption_status"])
        dropped.update(table.loc[table["caption_status"] == "dropped", "caption_reason"])
        captioned = table[table["caption_status"] != "failed"]
        kept = captioned[captioned["caption_status"] == "ok"]
        sample = kept.iloc[::step]
        sampled += len(sample)
        for level, acc in levels.items():
            for flags, n in captioned[f"{level}_flags"].value_counts().items():  # a few combinations per shard
                acc["flags"].update(dict.fromkeys([rule for rule in flags.split(";") if rule], n))
            scored = kept[["key", level, f"{level}_agreement"]].dropna()
            acc["scored"] += len(scored)
            acc["scores"].append(sample[f"{level}_agreement"].dropna())
            ends = pd.concat([scored.nsmallest(examples, f"{level}_agreement"),
                              scored.nlargest(examples, f"{level}_agreement")])
            acc["tails"] += [(row[2], row[0], shard, row[1]) for row in ends.itertuples(index=False)]
            for raw, text in zip(sample[f"{level}_raw"], sample[level]):
                tokens = words(text)
                acc["before"][opening(raw)] += 1
                acc["after"][opening(text)] += 1
                acc["captions"][text] += 1
                acc["trigrams"].update(" ".join(gram) for gram in ngrams(tokens, 3))
                acc["vocabulary"].update(tokens)
                acc["words"].append(len(tokens))
                acc["person"].update(set(person_counts(text)))
    out = {"models": models, "captioned": int(sum(status.values())), "status": dict(status),
           "dropped": dict(dropped.most_common()), "step": step, "sampled": sampled,
           "person_groups": {name: list(terms) for name, terms in PERSON_TERMS.items()}, "levels": {}}
    for level, acc in levels.items():
        scores = pd.concat(acc["scores"]) if acc["scores"] else pd.Series(dtype=float)
        tails = sorted(acc["tails"])
        lengths = pd.Series(acc["words"], dtype=float)
        out["levels"][level] = {
            "flags": dict(acc["flags"].most_common()), "openings_before": acc["before"].most_common(top),
            "openings_after": acc["after"].most_common(top), "top_captions": acc["captions"].most_common(top),
            "repeated": [(text, n) for text, n in acc["captions"].most_common(top)
                         if n >= max(2, REPEATED * sampled)],
            "top_trigrams": acc["trigrams"].most_common(top), "vocabulary": len(acc["vocabulary"]),
            "words": _quantiles(lengths) if len(lengths) else {},
            "scored": acc["scored"], "agreement": _quantiles(scores) if len(scores) else {},
            "histogram": [part.tolist() for part in np.histogram(scores, bins=20)] if len(scores) else [],
            "low": [dict(zip(("score", "key", "shard", "caption"), t)) for t in tails[:examples]],
            "high": [dict(zip(("score", "key", "shard", "caption"), t)) for t in tails[::-1][:examples]],
            "person": {name: int(acc["person"][name]) for name in PERSON_TERMS}}
    return out
