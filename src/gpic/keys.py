"""Identity of a record: key, shard, split. Pure functions of (source, source_id), so any
machine, any run, agrees on where a record lives without consulting an index."""

from __future__ import annotations

import hashlib

KEY_HEX = 20  # 80 bits: collision odds at 110M keys are about 1e-8


def make_key(source: str, source_id: str) -> str:
    """Stable id of a source record; hex only, so it is safe as a tar member stem."""
    digest = hashlib.sha256(f"{source}\x1f{source_id}".encode()).hexdigest()
    return digest[:KEY_HEX]


def _unit(label: str, key: str) -> float:
    """A uniform number in [0, 1) drawn from the key, independent per label."""
    digest = hashlib.sha256(f"{label}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shard_of(key: str, n_shards: int) -> int:
    """Raw shard of a key: a hash partition, so every shard is a random sample."""
    return int(_unit("shard", key) * n_shards)


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """Split of a key, fixed forever by the key and the configured fractions."""
    u = _unit("split", key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def shard_name(index: int) -> str:
    return f"{index:05d}"
