"""Record types shared by stages and consumers: what a packed sample holds, its caption levels,
the split names and the final states of provenance. The training loader, the verifier and the
card read these without importing any stage."""

from __future__ import annotations

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
