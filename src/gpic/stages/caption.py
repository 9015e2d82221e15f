"""The caption stage: four levels per image (label, short, medium, long) from a VLM with
greedy decoding; degenerate output is flagged in the record, never silently kept.

Captioning is the expensive stage (GPIC: ~1,500 H100-hours), so a killed job must not
start its shard again: each finished batch is written to a part file beside the output
(`captions/{shard}.parquet.parts/`), and a rerun with the same configuration and model
skips the batches it finds there. Batches are fixed by the sorted keys and the batch size,
so the assembled table is the one an uninterrupted run writes."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd

from gpic.config import CaptionConfig, Config
from gpic.contracts import LEVELS
from gpic.identity import config_hash
from gpic.images import load_batches
from gpic.inference.vlm import VisionLanguageModel, VllmModel
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, with_producer, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["caption"]
SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>")
ROLE_PREFIX = re.compile(r"^\s*(assistant|user|system)\b\s*:?\s*", re.IGNORECASE)
COLUMNS = ["key", "caption_status", "caption_reason"] + [f"{lv}{x}" for lv in LEVELS for x in ("", "_tokens", "_flag")]


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


def load_model(cfg: Config) -> VisionLanguageModel | VllmModel:
    """The configured backend: transformers (the tested path, CPU or GPU) or vLLM (GPU nodes)."""
    caption = cfg["caption"]
    if caption["backend"] == "vllm":
        return VllmModel(caption["model"], max_pixels=caption["max_pixels"])
    return VisionLanguageModel(caption["model"], device=caption["device"], max_pixels=caption["max_pixels"])


def generation_params(cfg: CaptionConfig) -> str:
    """What decides the text besides model and prompts, recorded with every caption."""
    return json.dumps({"backend": cfg["backend"], "do_sample": False, "num_beams": 1, "batch_size": cfg["batch_size"],
                       "max_new_tokens": {lv: cfg["levels"][lv]["max_new_tokens"] for lv in LEVELS},
                       "max_pixels": cfg["max_pixels"]}, sort_keys=True)


def caption_batch(model, keys: list[str], images: list, levels: dict) -> list[dict]:
    outputs = model.generate_levels(images, {lv: (levels[lv]["prompt"], levels[lv]["max_new_tokens"]) for lv in LEVELS})
    rows = []
    for i, key in enumerate(keys):
        row = {"key": key, "caption_status": "ok", "caption_reason": ""}
        for level in LEVELS:
            generation = outputs[level][i]
            text = clean(generation.text)
            row[level], row[f"{level}_tokens"], row[f"{level}_flag"] = text, generation.new_tokens, flag(
                text, generation.hit_limit)
        rows.append(row)
    return rows


def caption_shard(decisions: pd.DataFrame, fetch_records: pd.DataFrame, raw_tar: str | Path, cfg: CaptionConfig,
                  out_path: str | Path, model=None) -> pd.DataFrame:
    """Caption every key that dedup kept in this shard, resuming from finished batches."""
    kept = set(decisions.loc[decisions["kept"], "key"])
    members = dict(fetch_records.loc[fetch_records["key"].isin(kept), ["key", "raw_member"]].itertuples(index=False))
    out_path = Path(out_path)
    parts = out_path.with_name(out_path.name + ".parts")
    rows, extra = [], {"model_id": "", "model_revision": ""}
    if members:
        model = model or load_model({"caption": cfg})
        extra = {"model_id": model.model_id, "model_revision": model.revision}
        # part files of another configuration or model must never be mixed in
        run_id = config_hash({**cfg, **extra, "generation": generation_params(cfg)})
        parts = parts / run_id
        raw = read_tar(raw_tar)
        done = 0
        for number, (keys, images, failures) in enumerate(load_batches(raw, members, cfg["batch_size"])):
            part = parts / f"{number:06d}.parquet"
            resumed = part.exists()
            if not resumed:
                batch = [{"key": k, "caption_status": "failed", "caption_reason": r} for k, r in failures]
                batch += caption_batch(model, keys, images, cfg["levels"]) if keys else []
                write_table(pd.DataFrame(batch, columns=COLUMNS), part)
            rows.append(read_table(part))  # read back either way: a resumed run assembles the same table
            done += len(rows[-1])
            log.info("captioned %d/%d%s", done, len(members), " (part file of an earlier run)" if resumed else "")
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
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
