"""Files every stage shares: parquet tables and tar archives, written atomically and
deterministically, plus the stamp that says which code and parameters made a record."""

from __future__ import annotations

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
from gpic.identity import config_hash


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it into place only on success, so a
    killed job never leaves a partial file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide outputs from the rest of the team
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_table(df: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema | None = None) -> None:
    """Write atomically; with `schema`, the columns get exactly its types (an empty frame's
    columns would otherwise come out null or float64)."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()


def write_json(obj: object, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def with_producer(df: pd.DataFrame, stage: str, params: object, **extra: str) -> pd.DataFrame:
    """Add the columns that say what produced each record (docs/architecture.md); "stamp" is
    the block job's completion file alone."""
    df = df.copy()
    df[f"{stage}_config_hash"] = config_hash(params)
    df[f"{stage}_version"] = __version__
    for name, value in extra.items():
        df[f"{stage}_{name}"] = value
    return df


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header tarfile writes for a regular file with fixed metadata
    (mode 644, uid/gid 0, mtime 0, no owner names), so the same members always give the same
    tar bytes. Built directly: tarfile's general encoder dominated the cost of packing."""
    encoded = name.encode("utf-8")
    if len(encoded) > 100 or not encoded or size >= 8**11:
        raise ValueError(f"tar member {name!r} of {size} bytes: USTAR takes names of 1 to 100 bytes, sizes under 8 GiB")
    block = bytearray(tarfile.BLOCKSIZE)
    block[0:len(encoded)] = encoded
    block[100:148] = b"0000644\x000000000\x000000000\x00" + b"%011o\x00" % size + b"00000000000\x00"
    block[148:156] = b" " * 8  # the checksum counts its own field as spaces
    block[156:157] = tarfile.REGTYPE
    block[257:265] = tarfile.POSIX_MAGIC
    block[148:155] = b"%06o\x00" % sum(block)
    return bytes(block)


class TarWriter:
    """A USTAR tar written member by member, straight to the file: the caller holds one member's
    bytes at a time, never the whole tar. Names must arrive in increasing order (what write_tar
    sorts them into), so the same members give the same bytes however they were produced; the
    file appears under its name only when the writer closes without an error."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.offsets, self._position, self._last = path, {}, 0, None
        self._atomic = atomic_path(path)

    def __enter__(self) -> TarWriter:
        self._out = self._atomic.__enter__().open("wb")
        return self

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Append a member; returns (data offset, size)."""
        if self._last is not None and name <= self._last:
            raise ValueError(f"{self.path}: member {name!r} given twice or out of order (after {self._last!r})")
        header = ustar_header(name, len(data))
        padding = -len(data) % tarfile.BLOCKSIZE
        self._out.write(header)
        self._out.write(data)
        self._out.write(bytes(padding))
        self.offsets[name] = (self._position + len(header), len(data))
        self._position += len(header) + len(data) + padding
        self._last = name
        return self.offsets[name]

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:  # two zero blocks, then pad the last record
                end = self._position + 2 * tarfile.BLOCKSIZE
                self._out.write(bytes(2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE)))
        finally:
            self._out.close()
            self._atomic.__exit__(kind, value, traceback)


def write_tar(path: str | os.PathLike, members: Iterable[tuple[str, bytes]]) -> dict[str, tuple[int, int]]:
    """Write members (sorted by name) to a USTAR tar; return name -> (data offset, size).

    Blocks are written straight to the file, without tarfile.addfile's per-member copy loop."""
    with TarWriter(path) as tar:
        for name, data in sorted(members, key=lambda m: m[0]):
            tar.add(name, data)
    return tar.offsets


def tar_places(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """(data offset, size) of every regular member of a tar, by name, from its headers alone.
    Names that could escape a directory (absolute, '..') and non-regular or sparse members are
    refused."""
    places: dict[str, tuple[int, int]] = {}
    with tarfile.open(path, mode="r") as tar:
        for info in tar:
            name = info.name
            if not info.isfile() or info.sparse is not None or name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"{path}: refusing tar member {name!r}")
            places[name] = (info.offset_data, info.size)
    return places


def read_tar(path: str | os.PathLike) -> dict[str, bytes]:
    """All regular members of a tar by name (refused as `tar_places` refuses them). Member data
    is read by offset from one file handle (cheaper than tarfile.extractfile)."""
    places = tar_places(path)
    with open(path, "rb") as stream:
        out: dict[str, bytes] = {}
        for name, (offset, size) in places.items():
            stream.seek(offset)
            out[name] = stream.read(size)
    return out

