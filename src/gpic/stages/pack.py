"""The pack stage: static webdataset tars of the original image bytes plus a JSON record,
and next to each tar a parquet index with every member's byte offset and size.

The record is ours (`SampleRecord`) or, with config `pack.schema: gpic`, GPIC's published one
(`gpic.contracts.to_gpic`); the index has the same columns (INDEX_SCHEMA) either way, so every
reader of indexes ignores the choice."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from gpic.config import Config, PackConfig, tier_of_shard, tier_shard_counts
from gpic.contracts import (
    HELD_OUT,
    LEVELS,
    CaptionAgreement,
    CaptionFlags,
    Captions,
    SampleRecord,
    checks_columns,
    to_gpic,
)
from gpic.identity import shard_name
from gpic.layout import Layout, ShardFiles, block_shards, bucket_range
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, write_json, write_table, write_tar

log = logging.getLogger(__name__)

STAGE = STAGES["pack"]
# What pack reads from each stage table (only these columns are loaded and joined).
MANIFEST_FIELDS = ["key", "split", "source", "source_id", "url", "license", "license_url", "attribution", "title",
                   "retrieved_at"]
FETCH_FIELDS = ["key", "sha256", "raw_member", "fetched_at", "license_id"]
CHECKS = [f"{lv}_{x}" for x in ("flags", "agreement") for lv in LEVELS]  # caption hygiene and agreement, per level
CAPTION_FIELDS = ["key", "caption_status", *LEVELS, *CHECKS, "caption_model_id", "caption_model_revision"]


@dataclass(frozen=True)
class ShardInputs:
    """The per-shard files a packed sample is assembled from."""

    manifest: str
    fetch: str
    filter: str
    captions: str
    raw: str


def sample_rows(inputs: ShardInputs, split: str) -> pd.DataFrame:
    """Captioned keys of one raw shard that belong to `split`, with every field a sample carries
    (the image itself is named by its sha256)."""
    manifest = read_table(inputs.manifest, columns=MANIFEST_FIELDS)
    captions = read_table(inputs.captions, columns=CAPTION_FIELDS)
    return (manifest[manifest["split"] == split]
            .merge(read_table(inputs.fetch, columns=FETCH_FIELDS), on="key")
            .merge(read_table(inputs.filter, columns=["key", "width", "height"]), on="key")
            .merge(captions[captions["caption_status"] == "ok"], on="key"))


def samples(inputs: ShardInputs, split: str) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """`sample_rows` and the raw images they name."""
    table = sample_rows(inputs, split)
    raw = read_tar(inputs.raw) if len(table) else {}
    return table, raw


def heldout_digest(layout: Layout, block: str) -> dict:
    """What a block gives the held-out shards: per split, the row count and a sha256 of every
    field its val/test samples carry. The held-out packing depends on these digests rather
    than on the caption job's stamp, so a block captioned again with its held-out samples
    unchanged (most keys are train) reruns only its own provenance, not a whole bucket's. The
    fetch time counts only where it is the record's `retrieved_at` (a manifest without one): a
    refetch of the same bytes changes nothing a sample carries."""
    out = {}
    for split in HELD_OUT:
        rows = pd.concat([sample_rows(shard_inputs(layout.shard(s)), split) for s in block_shards(block)])
        rows["retrieved_at"] = rows["retrieved_at"].where(rows["retrieved_at"] != "", rows["fetched_at"])
        rows = rows.drop(columns="fetched_at")
        rows = rows.sort_values("key")[sorted(rows.columns)].astype(str)
        digest = hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()
        out[split] = {"rows": int(len(rows)), "sha256": digest}
    return out


def write_heldout_digest(layout: Layout, block: str, path: str | Path) -> None:
    write_json({"block": block, **heldout_digest(layout, block)}, path)


RECORD_COLUMNS = ["key", "tar", "image_member", "json_member", "split", "tier", "source", "source_id", "url", "license",
                  "license_id", "license_url", "attribution", "title", "retrieved_at", "sha256", "width", "height",
                  *LEVELS, "caption_model", "caption_model_revision", *CHECKS]
COLUMNS = [*RECORD_COLUMNS, "image_offset", "image_size", "json_offset", "json_size"]  # of the index beside each tar
NUMBERS = {"width", "height", "image_offset", "image_size", "json_offset", "json_size"}
# One schema for every index, whatever its row count: readers open all of them as one dataset.
SCORES = {f"{lv}_agreement" for lv in LEVELS}
INDEX_SCHEMA = pa.schema([(name, pa.int64() if name in NUMBERS else pa.float64() if name in SCORES
                           else pa.large_string()) for name in COLUMNS])
COPIED = ["key", "source", "source_id", "url", "license", "license_id", "license_url", "attribution", "title",
          "sha256", "split"]


def record(row: dict, tier: str) -> SampleRecord:
    """The sample's record. `retrieved_at` is when the source was collected: the manifest's
    time when it has one (a crawl mirrored locally), else when fetch downloaded the bytes."""
    return SampleRecord(**{name: row[name] for name in COPIED}, width=int(row["width"]), height=int(row["height"]),
                        retrieved_at=row["retrieved_at"] or row["fetched_at"], tier=tier,
                        captions=Captions(**{lv: row[lv] for lv in LEVELS}),
                        caption_model=row["caption_model_id"], caption_model_revision=row["caption_model_revision"],
                        caption_flags=CaptionFlags(**{lv: row[f"{lv}_flags"] for lv in LEVELS}),
                        caption_agreement=CaptionAgreement(**{lv: _score(row[f"{lv}_agreement"]) for lv in LEVELS}))


def _score(value) -> float | None:
    """A stored agreement score as the record says it: None where the caption was not scored."""
    return None if value is None or math.isnan(value) else float(value)


DEFAULT_PACK: PackConfig = {"schema": "ours", "caption_type": "long"}  # the schema's defaults


def pack(inputs: list[ShardInputs], split: str, tier: str, tar_path: str | Path, index_path: str | Path,
         options: PackConfig | None = None, tiers: list[str] | None = None) -> pd.DataFrame:
    """Pack the `split` samples of the given raw shards into one tar and its index.
    `options` is config `pack` (record schema); `tiers`, the tiers holding the shard smallest
    first (GPIC's `split`; default just `tier`)."""
    options = {**DEFAULT_PACK, **(options or {})}
    tiers = list(tiers or [tier])
    tar_name = Path(tar_path).name
    members, index_rows = [], []
    for shard_inputs in inputs:
        table, raw = samples(shard_inputs, split)
        for row in pa.Table.from_pandas(table, preserve_index=False).to_pylist():  # 6x faster than to_dict
            ext = row["raw_member"].rsplit(".", 1)[-1]
            meta = record(row, tier)
            stored = meta if options["schema"] == "ours" else to_gpic(meta, tiers, options["caption_type"])
            image_name, json_name = f"{row['key']}.{ext}", f"{row['key']}.json"
            members += [(image_name, raw[row["raw_member"]]), (json_name, stored.model_dump_json().encode())]
            flat = (meta.model_dump(exclude={"captions", "caption_flags", "caption_agreement"})
                    | meta.captions.model_dump() | checks_columns(meta.caption_flags, meta.caption_agreement))
            index_rows.append({**flat, "tar": tar_name, "image_member": image_name, "json_member": json_name})
    offsets = write_tar(tar_path, members)
    index = pd.DataFrame(index_rows, columns=RECORD_COLUMNS)
    for kind in ("image", "json"):
        index[f"{kind}_offset"] = [offsets[m][0] for m in index[f"{kind}_member"]]
        index[f"{kind}_size"] = [offsets[m][1] for m in index[f"{kind}_member"]]
    write_table(index.sort_values("key"), index_path, INDEX_SCHEMA)
    log.info("packed %d %s samples into %s", len(index), split, tar_name)
    return index


def read_indexes(packed_root: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every index under the packed folder as one table (the same columns and types when
    nothing, or only empty shards, were packed)."""
    paths = sorted(str(p) for p in Path(packed_root).glob("*/*.parquet"))
    table = ds.dataset(paths, schema=INDEX_SCHEMA, format="parquet").to_table(columns=columns)
    return table.to_pandas()


def shard_inputs(files: ShardFiles) -> ShardInputs:
    """The files pack joins for one raw shard."""
    return ShardInputs(*(str(files.table(name)) for name in ("manifests", "fetch", "filter", "captions")),
                       raw=str(files.raw))


def tiers_of_shard(cfg: Config, shard: int) -> list[str]:
    """Every tier whose prefix holds train shard `shard`, smallest first (tiers are nested)."""
    names = list(tier_shard_counts(cfg["tiers"], cfg["shards"]))
    return names[names.index(tier_of_shard(cfg["tiers"], cfg["shards"], shard)):]


def run(files: ShardFiles, cfg: Config, *, model=None) -> pd.DataFrame:
    """Pack train shard i from raw shard i; its tier is the smallest whose prefix holds it."""
    tar, index = files.packed("train", files.shard)
    tiers = tiers_of_shard(cfg, int(files.shard))
    return pack([shard_inputs(files)], "train", tiers[0], tar, index, cfg.get("pack"), tiers)


def gather(files: Layout, cfg: Config, split: str, bucket: str) -> pd.DataFrame:
    """The held-out fan-in: the `split` samples of a contiguous range of raw shards into one
    packed shard (held-out shards belong to every tier, like train shard 0)."""
    shards = bucket_range(int(bucket), cfg["splits"][f"{split}_shards"], cfg["shards"])
    inputs = [shard_inputs(files.shard(shard_name(s))) for s in shards]
    tiers = tiers_of_shard(cfg, 0)
    return pack(inputs, split, tiers[0], files.packed(split, bucket, "tar"), files.packed(split, bucket, "parquet"),
                cfg.get("pack"), tiers)
