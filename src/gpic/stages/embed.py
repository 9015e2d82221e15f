"""The embed stage: exact hash, perceptual hash and copy-detection descriptor per image,
the three signals the global dedup stage compares."""

from __future__ import annotations

import logging
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd

from gpic.config import Config, EmbedConfig
from gpic.images import load_batches
from gpic.inference.copy_detector import CopyDetector
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.stages.dedup import descriptor_matrix
from gpic.store import read_table, read_tar, stamp, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["embed"]
COLUMNS = ["key", "embed_status", "embed_reason", "phash", "descriptor", "split", "sha256", "width", "height"]

def embed_shard(survivors: list[str], manifest: pd.DataFrame, fetch_records: pd.DataFrame,
                filter_table: pd.DataFrame, raw_tar: str | Path, cfg: EmbedConfig, out_path: str | Path,
                detector: CopyDetector | None = None) -> pd.DataFrame:
    """One row per surviving key: split, size, sha256, 64-bit pHash (hex), fp16 descriptor bytes.
    `detector` is a loaded CopyDetector, or None to load cfg['model'] when there is work."""
    facts = (manifest[["key", "split"]]
             .merge(fetch_records[["key", "sha256", "raw_member"]], on="key")
             .merge(filter_table[["key", "width", "height"]], on="key"))
    facts = facts[facts["key"].isin(set(survivors))].set_index("key")
    rows = []
    if len(facts):
        detector = detector or load_model({"embed": cfg})
        raw = read_tar(raw_tar)
        for keys, images, failures in load_batches(raw, facts["raw_member"].to_dict(), cfg["batch_size"]):
            rows += [{"key": k, "embed_status": "failed", "embed_reason": r} for k, r in failures]
            descriptors = detector.describe(images) if images else []
            for key, image, descriptor in zip(keys, images, descriptors):
                rows.append({"key": key, "embed_status": "ok", "embed_reason": "", "phash": str(imagehash.phash(image)),
                             "descriptor": descriptor.tobytes()})
            log.info("embedded %d/%d", len(rows), len(facts))
    table = pd.DataFrame(rows, columns=["key", "embed_status", "embed_reason", "phash", "descriptor"])
    table = table.merge(facts.drop(columns="raw_member").reset_index(), on="key", how="left").sort_values("key")
    extra = ({"model_id": detector.model_id, "model_revision": detector.revision} if len(facts)
             else {"model_id": "", "model_revision": ""})
    table = stamp(table, "embed", cfg, **extra)
    write_table(table, out_path)
    return table


def read_descriptors(table: pd.DataFrame) -> np.ndarray:
    """The fp16 descriptor column (non-null rows) as an (n, d) float32 matrix."""
    return descriptor_matrix(table["descriptor"].dropna().tolist()).astype(np.float32)


def load_model(cfg: Config) -> CopyDetector:
    embed = cfg["embed"]
    return CopyDetector(embed["model"], embed["device"], embed["image_size"])


def run(files: ShardFiles, cfg: Config, *, model: CopyDetector | None = None) -> pd.DataFrame:
    """Hashes and descriptors of every image of the shard the judge passed."""
    judged = read_table(files.table("judge"), columns=["key", "judge_verdict"])
    survivors = judged.loc[judged["judge_verdict"] == "pass", "key"].tolist()
    return embed_shard(survivors, read_table(files.table("manifests")), read_table(files.table("fetch")),
                       read_table(files.table("filter")), files.raw, cfg["embed"], files.table("embed"), detector=model)
