"""The embed stage: exact hash, perceptual hash and copy-detection descriptor per image,
the three signals the global dedup stage compares.

The sha256 comes from the fetch table and the perceptual hash from the filter's table (the
filter computed it when it decoded the image); only the descriptor needs pixels. In the
assess job the images the judge decoded are embedded as each judge batch passes them
(`assess_shard`), so each image is decoded once for both models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from gpic.config import Config, EmbedConfig
from gpic.contracts import descriptor_matrix
from gpic.images import load_batches
from gpic.inference.copy_detector import CopyDetector
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.stages import judge as judging
from gpic.store import read_table, read_tar, with_producer, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["embed"]
COLUMNS = ["key", "embed_status", "embed_reason", "phash", "descriptor", "split", "sha256", "width", "height"]


class Describer:
    """Descriptors of images as they arrive, in forward passes of `batch_size` images of any
    sizes; `rows()` describes what is left and returns one row per key."""

    def __init__(self, detector: CopyDetector, batch_size: int) -> None:
        self.detector, self.batch_size = detector, batch_size
        self._keys: list[str] = []
        self._images: list = []
        self._rows: list[dict] = []

    def add(self, keys: list[str], images: list) -> None:
        self._keys += keys
        self._images += images
        while len(self._images) >= self.batch_size:
            self._describe(self.batch_size)

    def fail(self, failures: list[tuple[str, str]]) -> None:
        self._rows += [{"key": k, "embed_status": "failed", "embed_reason": r} for k, r in failures]

    def rows(self) -> list[dict]:
        if self._images:
            self._describe(len(self._images))
        return self._rows

    def _describe(self, n: int) -> None:
        keys, images = self._keys[:n], self._images[:n]
        del self._keys[:n], self._images[:n]
        self._rows += [{"key": key, "embed_status": "ok", "embed_reason": "", "descriptor": descriptor.tobytes()}
                       for key, descriptor in zip(keys, self.detector.describe(images))]
        log.info("embedded %d", sum(row["embed_status"] == "ok" for row in self._rows))


def _facts(survivors: list[str], manifest: pd.DataFrame, fetch_records: pd.DataFrame,
           filter_table: pd.DataFrame) -> pd.DataFrame:
    facts = (manifest[["key", "split"]]
             .merge(fetch_records[["key", "sha256", "raw_member"]], on="key")
             .merge(filter_table[["key", "width", "height", "phash"]], on="key"))
    return facts[facts["key"].isin(set(survivors))].set_index("key")


def embed_table(rows: list[dict], facts: pd.DataFrame, cfg: EmbedConfig, out_path: str | Path,
                detector: CopyDetector | None) -> pd.DataFrame:
    """The stage table from the descriptor rows: split, size, sha256 and the filter's pHash
    (for keys described) joined from `facts`."""
    table = pd.DataFrame(rows, columns=["key", "embed_status", "embed_reason", "descriptor"])
    table = table.merge(facts.drop(columns="raw_member").reset_index(), on="key", how="left")
    table["phash"] = table["phash"].where(table["embed_status"] == "ok")  # a hash only beside a descriptor
    table = table[COLUMNS].sort_values("key")
    extra = ({"model_id": detector.model_id, "model_revision": detector.revision} if len(facts)
             else {"model_id": "", "model_revision": ""})
    table = with_producer(table, "embed", cfg, **extra)
    write_table(table, out_path)
    return table


def embed_shard(survivors: list[str], manifest: pd.DataFrame, fetch_records: pd.DataFrame,
                filter_table: pd.DataFrame, raw_tar: str | Path, cfg: EmbedConfig, out_path: str | Path,
                detector: CopyDetector | None = None) -> pd.DataFrame:
    """One row per surviving key: split, size, sha256, the filter's 64-bit pHash (hex), fp16
    descriptor bytes. Decodes the survivors itself; `detector` is a loaded CopyDetector, or
    None to load cfg['model'] when there is work."""
    facts = _facts(survivors, manifest, fetch_records, filter_table)
    rows = []
    if len(facts):
        detector = detector or load_model({"embed": cfg})
        describer = Describer(detector, cfg["batch_size"])
        raw = read_tar(raw_tar)
        for keys, images, failures in load_batches(raw, facts["raw_member"].to_dict(), cfg["batch_size"]):
            describer.fail(failures)
            describer.add(keys, images)
        rows = describer.rows()
    return embed_table(rows, facts, cfg, out_path, detector)


def assess_shard(files: ShardFiles, cfg: Config, *, vlm=None,
                 detector: CopyDetector | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Judge, then embed the judge's survivors, decoding each image once: the judge hands
    every batch's passed images, decoded, to the descriptor (the same pixels `embed_shard`
    would decode). Writes both tables, as `judge.run` then `run` would."""
    filter_table, fetch_records = read_table(files.table("filter")), read_table(files.table("fetch"))
    describer = Describer(detector or load_model(cfg), cfg["embed"]["batch_size"])
    judged = judging.judge_shard(filter_table, fetch_records, files.raw, cfg["judge"], files.table("judge"),
                                 model=vlm, then=describer.add)
    survivors = judged.loc[judged["judge_verdict"] == "pass", "key"].tolist()
    facts = _facts(survivors, read_table(files.table("manifests")), fetch_records, filter_table)
    embedded = embed_table(describer.rows(), facts, cfg["embed"], files.table("embed"), describer.detector)
    return judged, embedded


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
