"""What one Snakemake job does: the stages of one resource class over a block of shards.

At 8,000 shards a job per stage per shard is ~56,000 jobs: the dry-run alone takes about a
minute and every SLURM job pays Snakemake's start-up. So the workflow runs one job per block
of `shards_per_job` shards and resource class (prepare on CPU: fetch + filter; assess on GPU:
judge + embed; caption on GPU: caption + pack the train shard; provenance on CPU), with the
models loaded once per block. Each job writes the per-shard stage files as before (the data
contracts do not change) and, last, a stamp file that Snakemake tracks: one small file per
block instead of thousands, which is what keeps the DAG fast."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gpic.config import tier_of_shard
from gpic.keys import shard_name
from gpic.store import atomic_path, read_table

log = logging.getLogger(__name__)


def block_names(n_shards: int, per_job: int) -> list[str]:
    """Blocks of consecutive shards, named by their first and last shard: 00000-00009."""
    return [f"{shard_name(first)}-{shard_name(min(first + per_job, n_shards) - 1)}"
            for first in range(0, n_shards, per_job)]


def block_shards(block: str) -> list[str]:
    first, last = (int(part) for part in block.split("-"))
    return [shard_name(i) for i in range(first, last + 1)]


def bucket_range(bucket: int, n_buckets: int, n_shards: int) -> range:
    """Raw shards whose val/test samples a held-out shard gathers: a contiguous range, so a
    bucket depends on a few blocks rather than on every block of the corpus."""
    return range(bucket * n_shards // n_buckets, (bucket + 1) * n_shards // n_buckets)


def bucket_of(shard: int, n_buckets: int, n_shards: int) -> int:
    """The held-out bucket that gathers raw shard `shard` (inverse of bucket_range)."""
    return ((shard + 1) * n_buckets - 1) // n_shards


@dataclass(frozen=True)
class ShardFiles:
    """Every per-shard file of the results layout, in one place."""

    results: Path
    shard: str

    def stage(self, name: str) -> Path:
        return self.results / name / f"{self.shard}.parquet"

    @property
    def raw(self) -> Path:
        return self.results / "raw" / f"{self.shard}.tar"

    def packed(self, split: str, number: str) -> tuple[Path, Path]:
        stem = self.results / "packed" / split / f"gpic_{split}_{number}"
        return stem.with_suffix(".tar"), stem.with_suffix(".parquet")


def write_stamp(path: str | Path, stage: str, block: str, started: float, counts: dict) -> None:
    """The block's completion record: Snakemake's only output of the job, written last."""
    record = {"stage": stage, "block": block, "seconds": round(time.time() - started, 3), "shards": counts}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def _counts(table, column: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in table[column].value_counts().sort_index().items()}


def prepare(block: str, results: Path, config: dict, stamp: str | Path) -> None:
    """CPU: fetch (licence gate, download) and filter every shard of the block."""
    from gpic.fetch import fetch_is_current, fetch_shard
    from gpic.filters import filter_shard

    started, counts = time.time(), {}
    for shard in block_shards(block):
        f = ShardFiles(results, shard)
        if fetch_is_current(f.stage("manifests"), f.raw, f.stage("fetch"), config):
            log.info("shard %s: fetch table and raw tar are current, not fetching again", shard)
            records = read_table(f.stage("fetch"))
        else:
            records = fetch_shard(read_table(f.stage("manifests")), config, f.raw, f.stage("fetch"))
        filtered = filter_shard(records, f.raw, config["filter"], f.stage("filter"))
        counts[shard] = {"fetch": _counts(records, "fetch_status"), "filter": _counts(filtered, "filter_verdict")}
        log.info("prepared shard %s: %s", shard, counts[shard])
    write_stamp(stamp, "prepare", block, started, counts)


def assess(block: str, results: Path, config: dict, stamp: str | Path) -> None:
    """GPU: the VLM judge, then exact/perceptual hashes and copy descriptors of survivors;
    both models are loaded once for the whole block."""
    from gpic.embed import CopyDetector, embed_shard
    from gpic.judge import judge_shard
    from gpic.vlm import VisionLanguageModel

    started, counts = time.time(), {}
    judge_cfg, embed_cfg = config["judge"], config["embed"]
    vlm = VisionLanguageModel(judge_cfg["model"], device=judge_cfg["device"], max_pixels=judge_cfg["max_pixels"])
    detector = CopyDetector(embed_cfg["model"], embed_cfg["device"], embed_cfg["image_size"], embed_cfg["center_crop"])
    for shard in block_shards(block):
        f = ShardFiles(results, shard)
        records, filtered = read_table(f.stage("fetch")), read_table(f.stage("filter"))
        judged = judge_shard(filtered, records, f.raw, judge_cfg, f.stage("judge"), model=vlm)
        survivors = judged.loc[judged["judge_verdict"] == "pass", "key"].tolist()
        embedded = embed_shard(survivors, read_table(f.stage("manifests")), records, filtered, f.raw, embed_cfg,
                               f.stage("embed"), detector=detector)
        counts[shard] = {"judge": _counts(judged, "judge_verdict"), "embed": _counts(embedded, "embed_status")}
        log.info("assessed shard %s: %s", shard, counts[shard])
    write_stamp(stamp, "assess", block, started, counts)


def caption(block: str, results: Path, config: dict, stamp: str | Path) -> None:
    """GPU: four caption levels for every key dedup kept, then pack the block's train shards
    (train shard i from raw shard i) while the block's files are at hand."""
    from gpic.caption import caption_shard, load_model
    from gpic.pack import pack

    started, counts = time.time(), {}
    cfg = config["caption"]
    vlm = load_model(cfg)
    for shard in block_shards(block):
        f = ShardFiles(results, shard)
        records = read_table(f.stage("fetch"))
        captions = caption_shard(read_table(f.stage("dedup")), records, f.raw, cfg, f.stage("captions"), model=vlm)
        tar, index = f.packed("train", shard)
        tier = tier_of_shard(config["tiers"], config["shards"], int(shard))
        packed = pack([shard_inputs(f)], "train", tier, tar, index)
        counts[shard] = {"caption": _counts(captions, "caption_status"), "packed_train": int(len(packed))}
        log.info("captioned and packed shard %s: %s", shard, counts[shard])
    write_stamp(stamp, "caption", block, started, counts)


def shard_inputs(f: ShardFiles):
    """The files pack joins for one raw shard."""
    from gpic.pack import ShardInputs

    return ShardInputs(*(str(f.stage(name)) for name in ("manifests", "fetch", "filter", "captions")), raw=str(f.raw))


def pack_heldout(split: str, bucket: str, results: Path, config: dict, tar: str | Path, index: str | Path) -> None:
    """CPU fan-in: gather the `split` samples of a contiguous range of raw shards into one
    held-out shard (held-out shards belong to every tier, like train shard 0)."""
    from gpic.pack import pack

    n_buckets = config["splits"][f"{split}_shards"]
    shards = bucket_range(int(bucket), n_buckets, config["shards"])
    inputs = [shard_inputs(ShardFiles(results, shard_name(s))) for s in shards]
    pack(inputs, split, tier_of_shard(config["tiers"], config["shards"], 0), tar, index)


def provenance(block: str, results: Path, config: dict, stamp: str | Path) -> None:
    """CPU: the final state of every key of the block's shards."""
    from gpic.provenance import STAGES, assemble

    started, counts = time.time(), {}
    for shard in block_shards(block):
        f = ShardFiles(results, shard)
        indexes = [f.packed("train", shard)[1]]
        for split in ("val", "test"):
            n_buckets = config["splits"][f"{split}_shards"]
            indexes.append(f.packed(split, shard_name(bucket_of(int(shard), n_buckets, config["shards"])))[1])
        table = assemble({stage: f.stage(stage) for stage in STAGES}, indexes, f.stage("provenance"))
        counts[shard] = _counts(table, "state")
    write_stamp(stamp, "provenance", block, started, counts)


def status(results: Path, config: dict) -> list[dict]:
    """What exists on disk per job: blocks (or files) done and pending. One directory listing
    per job, so it stays instant at 8,000 shards; `snakemake -n` remains the judge of what is
    stale after a change of code or parameters."""
    import os

    blocks = block_names(config["shards"], config["shards_per_job"])
    rows = [{"job": "partition", "total": 1, "pending": [] if (results / "manifests" / "partition.json").exists()
             else ["partition.json"]}]
    for job in ("prepare", "assess", "caption", "provenance"):
        folder = results / "done" / job
        done = {entry.name.removesuffix(".json") for entry in os.scandir(folder)} if folder.is_dir() else set()
        rows.append({"job": job, "total": len(blocks), "pending": [b for b in blocks if b not in done]})
        if job == "assess":
            done_dedup = (results / "dedup" / "decisions.parquet").exists()
            rows.append({"job": "dedup", "total": 1, "pending": [] if done_dedup else ["decisions.parquet"]})
    heldout = [f"{split}/gpic_{split}_{shard_name(b)}.tar" for split in ("val", "test")
               for b in range(config["splits"][f"{split}_shards"])]
    rows.append({"job": "pack_heldout", "total": len(heldout),
                 "pending": [name for name in heldout if not (results / "packed" / name).exists()]})
    for job, path in (("publish", "packed/SHA256SUMS"), ("eval_reference", "eval/fd_dinov2_test.npz"),
                      ("report", "report/index.html")):
        rows.append({"job": job, "total": 1, "pending": [] if (results / path).exists() else [path]})
    for row in rows:
        row["done"] = row["total"] - len(row["pending"])
    return rows
