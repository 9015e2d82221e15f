"""The caption stage: four levels per image (label, short, medium, long) from a VLM with
greedy decoding; degenerate output is flagged in the record, never silently kept."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from gpic.images import load_batches
from gpic.store import config_hash, read_tar, stamp, write_table

log = logging.getLogger(__name__)

LEVELS = ("label", "short", "medium", "long")
SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>")
ROLE_PREFIX = re.compile(r"^\s*(assistant|user|system)\b\s*:?\s*", re.IGNORECASE)


def clean(text: str) -> str:
    """Strip chat-template artefacts (special tokens, then a leading role name) and collapse whitespace."""
    return " ".join(ROLE_PREFIX.sub("", SPECIAL_TOKENS.sub(" ", text)).split())


def flag(text: str, hit_limit: bool) -> str:
    """'ok', or why the caption should not be trusted as is."""
    if not text:
        return "empty"
    words = text.lower().split()
    trigrams = Counter(zip(words, words[1:], words[2:]))
    if len(words) >= 12 and (trigrams.most_common(1)[0][1] >= 3 or len(set(words)) / len(words) < 0.3):
        return "degenerate"
    if hit_limit:
        return "truncated"
    return "ok"


def caption_shard(decisions: pd.DataFrame, fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: dict,
                  out_path: str | Path, model=None) -> pd.DataFrame:
    """Caption every key that dedup kept in this shard."""
    from gpic.vlm import VisionLanguageModel

    kept = set(decisions.loc[decisions["kept"], "key"])
    members = dict(fetch_records.loc[fetch_records["key"].isin(kept), ["key", "raw_member"]].itertuples(index=False))
    levels = cfg["levels"]
    rows = []
    if members:
        model = model or VisionLanguageModel(cfg["model"], device=cfg["device"], max_pixels=cfg["max_pixels"])
        raw = read_tar(raw_tar)
        for keys, images, failures in load_batches(raw, members, cfg["batch_size"]):
            rows += [{"key": k, "caption_status": "failed", "caption_reason": r} for k, r in failures]
            outputs = {lv: model.generate(images, spec["prompt"], spec["max_new_tokens"]) for lv, spec in levels.items()} if keys else {}
            for i, key in enumerate(keys):
                row = {"key": key, "caption_status": "ok", "caption_reason": ""}
                for level in LEVELS:
                    generation = outputs[level][i]
                    text = clean(generation.text)
                    row[level], row[f"{level}_tokens"], row[f"{level}_flag"] = text, generation.new_tokens, flag(text, generation.hit_limit)
                rows.append(row)
            log.info("captioned %d/%d", len(rows), len(members))
    columns = ["key", "caption_status", "caption_reason"] + [f"{lv}{x}" for lv in LEVELS for x in ("", "_tokens", "_flag")]
    table = pd.DataFrame(rows, columns=columns).sort_values("key")
    extra = {"model_id": model.model_id, "model_revision": model.revision} if members else {"model_id": "", "model_revision": ""}
    table = stamp(table, "caption", cfg, prompt_hash=config_hash(levels), decoding="greedy", **extra)
    write_table(table, out_path)
    return table
