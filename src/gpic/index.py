"""`gpic index`: the parquet index (gpic.stages.pack.INDEX_SCHEMA) of webdataset tars that lack
one, GPIC's published shards in particular, by one sequential read of each tar (local or any
fsspec URL), so that exact resume, `gpic verify` and one-seek reads work on them as on ours.

The index has the columns pack writes. From a GPIC record it fills what the record says (its
one caption under its level's column: `tag` under `label`), the tier from the smallest of its
`split` list and the split from the tar's name (`gpic_{split}_NNNNN.tar`) or folder; the
image's sha256 is computed from its bytes when the record has none, so verify can still check
the bytes. What a GPIC record does not say (source, licence id, caption model...) is empty."""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from gpic.contracts import IMAGE_EXTENSIONS, SPLITS, member_key, read_record
from gpic.layout import index_path
from gpic.stages.pack import COLUMNS, INDEX_SCHEMA
from gpic.store import write_table

TAR_SPLIT = re.compile(r"(?:^|_)(train|val|test)_\d+\.tar$")


class NotAWebdataset(ValueError):
    """A tar whose members do not form samples of an image and a record; names tar and member."""


def split_of_tar(url: str) -> str:
    """train/val/test from a shard's name (`gpic_test_00003.tar`) or its folder, else ''."""
    path = PurePosixPath(url.split("://", 1)[-1])
    if match := TAR_SPLIT.search(path.name):
        return match[1]
    return path.parent.name if path.parent.name in SPLITS else ""


def index_tar(url: str) -> pd.DataFrame:
    """The index rows of one tar, from one sequential read (streamed, so hf:// URLs cost one
    download). Members of a sample must be consecutive (webdataset's rule), in any order."""
    rows: list[dict] = []
    name = PurePosixPath(url.split("://", 1)[-1]).name
    split = split_of_tar(url)
    seen: set[str] = set()
    key, members = None, {}

    def finish() -> None:
        if key is None:
            return
        if "json" not in members:
            first = next(iter(members.values()))[0]
            raise NotAWebdataset(f"{url}: member {first}: sample {key} has no .json record")
        images = [ext for ext in members if ext in IMAGE_EXTENSIONS]
        others = sorted(set(members) - {"json", *images})
        if len(images) != 1 or others:
            raise NotAWebdataset(f"{url}: sample {key}: members {sorted(m[0] for m in members.values())}; "
                                 "expected one image (jpg, jpeg, png, webp) and one .json")
        json_name, json_offset, json_data = members["json"]
        try:
            record = read_record(json_data)
        except (ValueError, KeyError, TypeError) as error:
            raise NotAWebdataset(f"{url}: member {json_name}: not a sample record: {error}") from None
        if record.key != key:
            raise NotAWebdataset(f"{url}: member {json_name}: record says key {record.key!r}, member key {key!r}")
        image_name, image_offset, image_data = members[images[0]]
        row = record.row()
        row.update(split=row["split"] or split, sha256=row["sha256"] or hashlib.sha256(image_data).hexdigest(),
                   tar=name, image_member=image_name, json_member=json_name, image_offset=image_offset,
                   image_size=len(image_data), json_offset=json_offset, json_size=len(json_data))
        rows.append(row)

    with fsspec.open(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            stem, ext = member_key(info.name)
            if stem != key:
                finish()
                if stem in seen:
                    raise NotAWebdataset(f"{url}: member {info.name}: the members of sample {stem} are not "
                                         "consecutive")
                seen.add(stem)
                key, members = stem, {}
            if ext in members:
                raise NotAWebdataset(f"{url}: member {info.name}: sample {stem} has two .{ext} members")
            members[ext] = (info.name, info.offset_data, tar.extractfile(info).read())
        finish()
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("key", ignore_index=True)


def write_index(index: pd.DataFrame, path: str) -> None:
    """Exactly INDEX_SCHEMA, whatever the row count; atomic for local paths."""
    fs, local_path = fsspec.core.url_to_fs(path)
    if isinstance(fs, LocalFileSystem):
        write_table(index, local_path, INDEX_SCHEMA)
        return
    table = pa.Table.from_pandas(index.reset_index(drop=True), schema=INDEX_SCHEMA, preserve_index=False)
    with fs.open(local_path, "wb") as stream:
        pq.write_table(table, stream, compression="zstd")


def exists(path: str) -> bool:
    fs, local_path = fsspec.core.url_to_fs(path)
    return fs.exists(local_path)


@dataclass
class IndexResult:
    """What indexing one tar gave: its sample count, or that it was skipped, or the error."""

    url: str
    index: str
    samples: int = 0
    skipped: bool = False  # an index was already there
    error: str = ""


def index_one(url: str, out_dir: str | Path | None = None, force: bool = False) -> IndexResult:
    """Index one tar unless its index exists (`force` rebuilds); errors are returned, not
    raised, so the other tars continue."""
    path = index_path(url, out_dir)
    if not force and exists(path):
        return IndexResult(url, path, skipped=True)
    try:
        index = index_tar(url)
        write_index(index, path)
    except (NotAWebdataset, tarfile.TarError, OSError) as error:
        return IndexResult(url, path, error=str(error) if isinstance(error, NotAWebdataset) else
                       f"{url}: {type(error).__name__}: {error}")
    return IndexResult(url, path, samples=len(index))


def index_shards(urls: Iterable[str], out_dir: str | Path | None = None, force: bool = False, workers: int = 1,
                 done: Callable[[IndexResult], None] | None = None) -> list[IndexResult]:
    """Index every tar (`workers` at a time: a remote read waits on the network); `done` is
    called as each finishes (progress). A cache folder needs distinct tar names."""
    urls = list(urls)
    if out_dir is None and (hub := next((u for u in urls if u.startswith("hf://")), None)):
        raise ValueError(f"an index beside {hub} would be a commit to the hub repo: give a cache folder (--out DIR)")
    if out_dir is not None:
        fs, local_out = fsspec.core.url_to_fs(str(out_dir))
        fs.makedirs(local_out, exist_ok=True)
        clash = sorted(n for n, count in Counter(index_path(u, out_dir) for u in urls).items() if count > 1)
        if clash:
            raise ValueError(f"tars with the same name would share an index in {out_dir}: {clash[0]}")
    outcomes = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(index_one, u, out_dir, force): u for u in urls}
        for future in as_completed(futures):
            outcomes[futures[future]] = outcome = future.result()
            if done:
                done(outcome)
    return [outcomes[u] for u in urls]
