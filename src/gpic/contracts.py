"""Record types shared by stages and consumers: what a packed sample holds, its caption levels,
the split names and the final states of provenance, and the mapping between our record and
GPIC's published one. The training loader, the verifier and the card read these without
importing any stage."""

from __future__ import annotations

import json
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

LEVELS = ("label", "short", "medium", "long")  # caption levels, shortest first
SPLITS = ("train", "val", "test")  # split of a key (identity.split_of)
HELD_OUT = ("val", "test")  # splits gathered from every raw shard into their own packed shards
HF_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}  # names on the dataset card
STATES = ("packed", "dropped", "failed")  # final state of every key in provenance


class Captions(BaseModel):
    label: str
    short: str
    medium: str
    long: str


class CaptionFlags(BaseModel):
    """Per level, the caption hygiene rules its caption breaks (gpic.hygiene.RULES, ";"-joined;
    "" for none): a finding that `caption.on_flag` kept."""

    label: str = ""
    short: str = ""
    medium: str = ""
    long: str = ""


class CaptionAgreement(BaseModel):
    """Per level, the agreement score of caption and image from the independent scorer (cosine
    similarity of a dual encoder's embeddings; None where no scorer was configured)."""

    label: float | None = None
    short: float | None = None
    medium: float | None = None
    long: float | None = None


class SampleRecord(BaseModel):
    """The JSON stored beside each image (the output contract): where it came from, its
    licence and attribution, its captions and the model that wrote them."""

    model_config = ConfigDict(extra="forbid")
    key: str
    source: str
    source_id: str
    url: str
    license: str
    license_id: str
    license_url: str
    attribution: str
    title: str
    retrieved_at: str
    sha256: str
    width: int
    height: int
    split: str
    tier: str
    captions: Captions
    caption_model: str
    caption_model_revision: str
    caption_flags: CaptionFlags = CaptionFlags()  # records packed before caption hygiene have none
    caption_agreement: CaptionAgreement = CaptionAgreement()


# ---------------------------------------------------------------------------
# GPIC's published record (the hub's stanford-vision-lab/gpic), and the one mapping between
# it and ours: every tool reads a record through `read_record`, so the loader, `gpic index`,
# `gpic verify` and the report accept either schema, and `to_gpic` is the only writer of
# GPIC's. GPIC names our `label` level `tag`, our width/height `img_width`/`img_height`, and
# its `split` is the list of tiers holding the sample (train/val/test is in the tar's name).
# ---------------------------------------------------------------------------

RECORD_SCHEMAS = ("ours", "gpic")  # config pack.schema
CAPTION_TYPES = {"label": "tag", "short": "short", "medium": "medium", "long": "long"}  # our level -> GPIC's name
LEVEL_OF_CAPTION_TYPE = {name: level for level, name in CAPTION_TYPES.items()}
GPIC_TIERS = ("nano", "lite", "full")  # GPIC's tiers, smallest first
# The collectors of stage 1, the one registry of their names (config, workflow, `gpic collect`):
# name -> (module, config section).
COLLECTORS = {
    "commons": ("gpic.collect.commons_api", "commons"),
    "commons-dump": ("gpic.collect.commons_dump", "commons_dump"),
    "flickr": ("gpic.collect.flickr_api", "flickr"),
    "yfcc": ("gpic.collect.yfcc", "yfcc"),
}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # image members of a webdataset sample


def descriptor_matrix(blobs: list[bytes]) -> np.ndarray:
    """Stored descriptor bytes (the embed stage's fp16, read by dedup) as one (n, d) float16
    matrix; (0, 0) for none."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float16)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1)


# What ours records carry that GPIC's do not; `pack.schema: gpic` keeps them beside GPIC's fields.
PROVENANCE_FIELDS = ("source", "source_id", "url", "license_id", "title", "sha256", "caption_model",
                     "caption_model_revision", "caption_flags", "caption_agreement")


class GpicRecord(BaseModel):
    """GPIC's published `{key}.json`: one caption per record, named by its `caption_type`.
    Fields GPIC may add later are kept (`model_extra`) rather than refused."""

    model_config = ConfigDict(extra="allow")
    key: str
    retrieved_at: str
    license: str
    license_url: str
    attribution: str
    img_width: int
    img_height: int
    split: list[str]  # the tiers holding the sample, e.g. ["lite", "full"]
    caption_type: Literal["tag", "short", "medium", "long"]
    caption: str


class GpicSampleRecord(GpicRecord):
    """What `pack.schema: gpic` writes: GPIC's record (its `caption` is the configured
    level), all four levels under GPIC's names, and our provenance, so that nothing ours says
    is lost and GPIC's tools, which read only their fields, still work."""

    model_config = ConfigDict(extra="forbid")
    tag: str
    short: str
    medium: str
    long: str
    source: str
    source_id: str
    url: str
    license_id: str
    title: str
    sha256: str
    caption_model: str
    caption_model_revision: str
    caption_flags: CaptionFlags = CaptionFlags()
    caption_agreement: CaptionAgreement = CaptionAgreement()


class NormalRecord(BaseModel):
    """A record in either schema, under our names (those of the index columns): what a
    GPIC record does not say is empty. `captions` holds the levels the record has; `level`
    is the level of a GPIC record's own `caption` (None for ours, which has all four)."""

    model_config = ConfigDict(extra="forbid")
    record_schema: Literal["ours", "gpic"]
    key: str
    split: str = ""  # train/val/test: ours says it, GPIC's tar name does
    tier: str = ""  # the smallest tier holding the sample
    source: str = ""
    source_id: str = ""
    url: str = ""
    license: str = ""
    license_id: str = ""
    license_url: str = ""
    attribution: str = ""
    title: str = ""
    retrieved_at: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0
    captions: dict[str, str]
    level: str | None = None
    caption_model: str = ""
    caption_model_revision: str = ""
    caption_flags: CaptionFlags = CaptionFlags()
    caption_agreement: CaptionAgreement = CaptionAgreement()

    def caption(self, level: str) -> tuple[str, str]:
        """(level, text) for a requested level: that level when the record has it, else the
        record's own caption (a GPIC record holds one), reported with its level."""
        if level in self.captions:
            return level, self.captions[level]
        if self.level is None:
            raise KeyError(f"record {self.key} has no {level} caption")
        return self.level, self.captions[self.level]

    def row(self) -> dict:
        """The record's index columns (gpic.stages.pack.RECORD_COLUMNS without tar and members)."""
        fields = self.model_dump(exclude={"record_schema", "captions", "level", "caption_flags", "caption_agreement"})
        return fields | {level: self.captions.get(level, "") for level in LEVELS} | checks_columns(
            self.caption_flags, self.caption_agreement)


def checks_columns(flags: CaptionFlags, agreement: CaptionAgreement) -> dict:
    """A record's caption checks as the index holds them: `{level}_flags`, `{level}_agreement` (NaN for None)."""
    scores = {lv: (math.nan if value is None else value) for lv, value in agreement.model_dump().items()}
    return {f"{lv}_flags": getattr(flags, lv) for lv in LEVELS} | {f"{lv}_agreement": scores[lv] for lv in LEVELS}


def smallest_tier(tiers: list[str]) -> str:
    """The smallest of a GPIC `split` list: by GPIC's order, else the first listed (the order
    `to_gpic` writes)."""
    known = [t for t in GPIC_TIERS if t in tiers]
    return known[0] if known else (tiers[0] if tiers else "")


def member_key(name: str) -> tuple[str, str]:
    """(sample key, extension) of a tar member, webdataset's rule: the key is the path up to
    the first dot of the file name, so `a/b.c.jpg` is key `a/b`, extension `c.jpg`."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_record(data: bytes | str | dict, *, check: bool = False) -> NormalRecord:
    """Either schema -> NormalRecord. Ours has `captions`, GPIC's `caption_type`. With
    `check`, the record must be a complete SampleRecord or GpicRecord (what `gpic verify`
    demands); without, only what the loader needs (key, captions) must be there and extra
    fields are ignored. Raises ValueError (pydantic's ValidationError is one) or KeyError."""
    record = json.loads(data) if isinstance(data, (bytes, str)) else data
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    if "captions" in record:
        if check:
            record = SampleRecord.model_validate(record).model_dump()
        fields = {name: record[name] for name in NormalRecord.model_fields if name in record}
        return NormalRecord(**fields, record_schema="ours")
    if "caption_type" in record:
        if check:
            GpicRecord.model_validate(record)
        return _from_gpic(record)
    raise KeyError("neither our record (no `captions`) nor GPIC's (no `caption_type`)")


def _from_gpic(record: dict) -> NormalRecord:
    level = LEVEL_OF_CAPTION_TYPE.get(record["caption_type"])
    if level is None:
        raise ValueError(f"caption_type {record['caption_type']!r} is none of {', '.join(LEVEL_OF_CAPTION_TYPE)}")
    captions = {lv: record[name] for lv, name in CAPTION_TYPES.items() if name in record}
    captions[level] = record["caption"]
    tiers = record.get("split") or []
    same = ("key", "retrieved_at", "license", "license_url", "attribution", *PROVENANCE_FIELDS)
    return NormalRecord(record_schema="gpic", captions=captions, level=level,
                        tier=smallest_tier(tiers) if isinstance(tiers, list) else "",
                        width=record.get("img_width", 0), height=record.get("img_height", 0),
                        **{name: record[name] for name in same if name in record})


def to_gpic(record: SampleRecord, tiers: list[str], caption_type: str = "long") -> GpicSampleRecord:
    """Our record in GPIC's schema: `tiers` are the tiers holding the sample, smallest first
    (GPIC's `split`); `caption_type` (GPIC's name) chooses the level that is the `caption`."""
    if caption_type not in LEVEL_OF_CAPTION_TYPE:
        raise ValueError(f"caption_type must be one of {', '.join(LEVEL_OF_CAPTION_TYPE)}, got {caption_type!r}")
    captions = record.captions.model_dump()
    return GpicSampleRecord(
        key=record.key, retrieved_at=record.retrieved_at, license=record.license, license_url=record.license_url,
        attribution=record.attribution, img_width=record.width, img_height=record.height, split=list(tiers),
        caption_type=caption_type, caption=captions[LEVEL_OF_CAPTION_TYPE[caption_type]],
        **{CAPTION_TYPES[level]: text for level, text in captions.items()},
        **{name: getattr(record, name) for name in PROVENANCE_FIELDS})
