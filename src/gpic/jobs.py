"""What one Snakemake job does: the stages of one resource class over a block of shards.

At 8,000 shards a job per stage per shard is ~56,000 jobs: the dry-run alone takes about a
minute and every SLURM job pays Snakemake's start-up. So the workflow runs one job per block
of `shards_per_job` shards and resource class (prepare on CPU: fetch + filter; assess on GPU:
judge + embed; caption on GPU: caption + pack the train shard; provenance on CPU), with the
models loaded once per block. Each job writes the per-shard stage files and, last, a stamp
file that Snakemake tracks: one small file per block instead of thousands, which is what keeps
the DAG fast. The stamp records the files it stands for, so damage to them is found
(`gpic status`) and repaired (`gpic rebuild`) although Snakemake does not track them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gpic.config import Config
from gpic.identity import file_sha256
from gpic.layout import Layout, block_shards
from gpic.stages import caption as captioning
from gpic.stages import embed, fetch, judge, pack
from gpic.stages import filter as filtering
from gpic.stages import provenance as provenance_stage
from gpic.store import atomic_path

log = logging.getLogger(__name__)


def write_stamp(path: str | Path, stage: str, block: str, counts: dict, layout: Layout) -> None:
    """The block's completion record, Snakemake's only output of the job, written last: the
    per-shard counts and every file the job wrote, with its size and sha256, so `gpic status`
    can tell a damaged block from a done one. Its content depends on the outputs alone (no
    times), so a rebuild that writes the same bytes writes the same stamp, and Snakemake, which
    compares the checksums of small inputs, reruns nothing downstream of it."""
    files = {}
    for shard in block_shards(block):
        for file in layout.shard(shard).written_by(stage):
            files[file.relative_to(layout.root).as_posix()] = {"bytes": file.stat().st_size,
                                                               "sha256": file_sha256(file)}
    record = {"stage": stage, "block": block, "shards": counts, "files": files}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def _counts(table, column: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in table[column].value_counts().sort_index().items()}


def prepare(block: str, results: Path, config: Config, stamp: str | Path) -> None:
    """CPU: fetch (licence gate, download) and filter every shard of the block; one fetcher
    for the block, so kept-alive connections, host pauses and budgets span its shards."""
    counts, layout = {}, Layout(results)
    with fetch.open_fetcher(config) as fetcher:
        for shard in block_shards(block):
            files = layout.shard(shard)
            records, filtered = fetch.run(files, config, model=fetcher), filtering.run(files, config)
            counts[shard] = {"fetch": _counts(records, "fetch_status"), "filter": _counts(filtered, "filter_verdict")}
            log.info("prepared shard %s: %s", shard, counts[shard])
    write_stamp(stamp, "prepare", block, counts, layout)


def assess(block: str, results: Path, config: Config, stamp: str | Path) -> None:
    """GPU: the VLM judge, then exact/perceptual hashes and copy descriptors of survivors;
    both models are loaded once for the whole block, and each image is decoded once for
    both (the judge hands its survivors' pixels to the descriptor, batch by batch)."""
    counts, layout = {}, Layout(results)
    vlm, detector = judge.load_model(config), embed.load_model(config)
    for shard in block_shards(block):
        files = layout.shard(shard)
        judged, embedded = embed.assess_shard(files, config, vlm=vlm, detector=detector)
        counts[shard] = {"judge": _counts(judged, "judge_verdict"), "embed": _counts(embedded, "embed_status")}
        log.info("assessed shard %s: %s", shard, counts[shard])
    write_stamp(stamp, "assess", block, counts, layout)


def caption(block: str, results: Path, config: Config, stamp: str | Path) -> None:
    """GPU: four caption levels for every key dedup kept, then pack the block's train shards
    (train shard i from raw shard i) while the block's files are at hand."""
    counts, layout = {}, Layout(results)
    vlm = captioning.load_model(config)
    for shard in block_shards(block):
        files = layout.shard(shard)
        captions = captioning.run(files, config, model=vlm)
        packed = pack.run(files, config)
        counts[shard] = {"caption": _counts(captions, "caption_status"), "packed_train": int(len(packed))}
        log.info("captioned and packed shard %s: %s", shard, counts[shard])
    write_stamp(stamp, "caption", block, counts, layout)


def provenance(block: str, results: Path, config: Config, stamp: str | Path) -> None:
    """CPU: the final state of every key of the block's shards."""
    counts, layout = {}, Layout(results)
    for shard in block_shards(block):
        counts[shard] = _counts(provenance_stage.run(layout.shard(shard), config), "state")
    write_stamp(stamp, "provenance", block, counts, layout)
