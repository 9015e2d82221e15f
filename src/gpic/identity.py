"""Identities: of a record (key, shard, split: pure functions of (source, source_id), so any
machine, any run, agrees on where a record lives without consulting an index), of the
parameters a stage used (config hash), of model weights (weights revision) and of files
(sha256). Each is a value written into records; changing one changes every output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

KEY_HEX = 20  # 80 bits: collision odds at 110M keys are about 1e-8


def make_key(source: str, source_id: str) -> str:
    """Stable id of a source record; hex only, so it is safe as a tar member stem."""
    digest = hashlib.sha256(f"{source}\x1f{source_id}".encode()).hexdigest()
    return digest[:KEY_HEX]


def _unit(label: str, key: str) -> float:
    """A uniform number in [0, 1) drawn from the key, independent per label."""
    digest = hashlib.sha256(f"{label}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def units(label: str, keys: list[str]) -> np.ndarray:
    """_unit(label, key) of many keys: one hash per key, the arithmetic on the whole array
    (uint64 to float64, then an exact division by 2**64: the rounding of Python's int / 2**64)."""
    prefix = label + "\x1f"
    digests = b"".join([hashlib.sha256((prefix + key).encode()).digest()[:8] for key in keys])
    return np.frombuffer(digests, ">u8").astype(np.float64) / 2**64


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


def config_hash(params: object) -> str:
    """Short hash of the parameters a stage used, recorded with every record it writes."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".bin")


def _weight_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(path.name, path)]
    files = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    return sorted((p.relative_to(path).as_posix(), p) for p in files)


def weights_revision(path: str | Path) -> str:
    """Content identity of a model's weights: 16 hex digits of a SHA-256.

    For a directory, hashes every ``*.safetensors``, ``*.pt`` and ``*.bin`` file
    (relative posix name, then bytes) in sorted name order; for a single file,
    its base name and bytes.  Absolute locations, timestamps and non-weight
    files (configs, tokenizer) do not enter, so the value is stable across
    machines and copies.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path does not exist: {path}")
    files = _weight_files(path)
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.pt, *.bin) under {path}")
    digest = hashlib.sha256()
    for name, file in files:
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
        digest.update(file.stat().st_size.to_bytes(8, "little"))
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
