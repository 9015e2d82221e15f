"""Files every stage shares: parquet tables and tar archives, written atomically and
deterministically, plus the stamp that says which code and parameters made a record."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gpic import __version__


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it into place only on success, so a
    killed job never leaves a partial file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()


def write_json(obj: object, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def config_hash(params: object) -> str:
    """Short hash of the parameters a stage used, recorded with every record it writes."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def stamp(df: pd.DataFrame, stage: str, params: object, **extra: str) -> pd.DataFrame:
    """Add the columns that say what produced each record (DESIGN: provenance)."""
    df = df.copy()
    df[f"{stage}_config_hash"] = config_hash(params)
    df[f"{stage}_version"] = __version__
    for name, value in extra.items():
        df[f"{stage}_{name}"] = value
    return df


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """Fixed metadata so that the same members always give the same tar bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(path: str | os.PathLike, members: Iterable[tuple[str, bytes]]) -> dict[str, tuple[int, int]]:
    """Write members (sorted by name) to a tar; return name -> (data offset, size)."""
    offsets: dict[str, tuple[int, int]] = {}
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in sorted(members, key=lambda m: m[0]):
                info = _tarinfo(name, len(data))
                header = len(info.tobuf(tar.format, tar.encoding, tar.errors))
                offsets[name] = (tar.offset + header, len(data))
                tar.addfile(info, io.BytesIO(data))
    return offsets


def read_tar(path: str | os.PathLike) -> dict[str, bytes]:
    """All regular members of a tar by name. Names that could escape a directory
    (absolute, '..') and non-regular members are refused, never extracted."""
    out: dict[str, bytes] = {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            name = info.name
            if not info.isfile() or name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"{path}: refusing tar member {name!r}")
            handle = tar.extractfile(info)
            out[name] = handle.read() if handle else b""
    return out
