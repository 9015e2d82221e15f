"""Source manifests in, hash-partitioned shard manifests out (the partition stage).

A row that breaks the input contract is kept with its reason in `contract_error`, so it
still reaches a final state in provenance instead of vanishing or failing its shard.

Manifests reach 10^8 rows, so nothing here holds a whole manifest: rows are read and keyed
in batches, spread by shard range over a bounded number of temporary Arrow files (pass 1),
and each file is then split into its shards' final tables (pass 2). Memory is one batch
plus twice one temporary file of at most BUCKET_BYTES (or one shard, if larger), whatever N is;
keying in W processes adds a batch per process and up to 2W batches in flight."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from json.encoder import encode_basestring
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from gpic.config import Config
from gpic.identity import make_key, shard_name, units
from gpic.layout import Layout
from gpic.stages import STAGES
from gpic.store import write_json, write_table

STAGE = STAGES["partition"]
REQUIRED = ["source", "source_id", "url", "license", "license_url", "attribution", "title"]
OPTIONAL = ["retrieved_at", "width", "height"]
FIELDS = REQUIRED + OPTIONAL
SCHEMES = ("http", "https", "file")
# Longer fields are a broken or hostile row: refused with a reason rather than carried into
# every later table and tar record.
MAX_CHARS = {"source_id": 256, "url": 4096, "license": 512, "license_url": 2048, "attribution": 16384,
             "title": 16384}
COLUMNS = ["key", "shard", "split", *REQUIRED, *OPTIONAL, "extra", "manifest_file", "manifest_row", "contract_error"]
ROW_SCHEMA = pa.schema([(c, pa.int64() if c in ("shard", "manifest_row") else pa.string()) for c in COLUMNS])

BATCH_ROWS = 50_000  # manifest rows read, checked and keyed at a time
BUCKETS = 256  # temporary files open at once in pass 1: far below any file-handle limit
BUCKET_BYTES = 256 << 20  # a bucket up to this size is split in memory; a larger one is spread again
FORMATS = (".csv", ".jsonl", ".ndjson", ".parquet")
# A collector's own refusal (gpic.collect: restricted file, no author, no licence): the row is
# kept, carried in `extra`, and its reason becomes the row's error, so it ends as a recorded drop.
COLLECT_REASON = "collect_reason"
# The C0 controls and every character str.isspace() accepts (a str pattern's \s is exactly
# those): one regex search instead of a Python loop over each URL's characters.
_URL_BAD = re.compile(r"[\x00-\x1f\s]")
# A URL of this shape passes every URL check below (scheme allowed; a plain host: no port,
# brackets, user info or non-ASCII to normalise), so urlsplit, most of a row's checking time, is skipped.
_URL_PLAIN = re.compile(r"(?:https?|file)://[A-Za-z0-9.-]+(?:/[!-~]*)?")
_JSON_ESCAPED = np.isin(np.arange(256), [*range(0x20), ord('"'), ord("\\")])  # bytes json.dumps escapes


def _kind(path: Path) -> str:
    """The manifest format from the file name; refused before any row is read."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    kind = suffix.removesuffix(".gz")
    if kind not in FORMATS:
        raise ValueError(f"{path}: unknown manifest format {suffix!r} (use .parquet, .csv or .jsonl)")
    return kind


def _json_columns(path: Path) -> list[str]:
    """Every key any line of a JSON lines file has. A batch only sees its own lines, but a
    column is a file's column (absent from a line = empty), exactly as when the file was one table.
    A line this cannot parse is left for pandas' reader to accept or refuse, as it always did."""
    opener = gzip.open if path.suffix == ".gz" else open
    seen: dict[str, None] = {}
    with opener(path, "rt", encoding="utf-8", newline="") as lines:
        for line in lines:
            try:
                record = json.loads(line, strict=False) if line.strip() else None
            except ValueError:
                continue
            if isinstance(record, dict):
                seen.update(dict.fromkeys(record))
    return list(seen)


def _raw_frames(path: Path, kind: str, rows: int) -> Iterator[tuple[pd.DataFrame | pa.Table, list | None]]:
    """Batches as pandas parses them, with the file's columns when a batch may lack some.

    pandas' own chunked readers keep the text of every value as the whole-file read gave it
    (CSV quoting and blank lines, JSON numbers, parquet types and index columns). Parquet
    batches stay Arrow tables, converted by whichever process keys them (_batch_texts): far
    cheaper to hand to a worker than pandas' frames."""
    if kind == ".csv":
        with pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=rows) as reader:
            for frame in reader:
                yield frame, None
    elif kind == ".parquet" and path.is_dir():  # a dataset folder, as pandas read it
        for batch in ds.dataset(path, format="parquet", partitioning="hive").to_batches(batch_size=rows):
            yield pa.Table.from_batches([batch]), None
    elif kind == ".parquet":  # buffered column reads: a row group of any size is not loaded whole
        with pq.ParquetFile(path, buffer_size=1 << 20) as file:
            for batch in file.iter_batches(batch_size=rows, use_pandas_metadata=True):
                yield pa.Table.from_batches([batch]), None
    else:
        columns = _json_columns(path)
        # convert_axes=False: a batch's labels stay the file's keys (a batch of numeric-looking
        # keys alone would otherwise become numbers).
        with pd.read_json(path, lines=True, dtype=False, convert_axes=False, chunksize=rows) as reader:
            for frame in reader:
                yield frame, columns


def _texts(series: pd.Series) -> list[str]:
    """A column as stripped text, '' for missing (types are checked per row, not trusted per file)."""
    present = series.notna().tolist()
    return [(value.strip() if type(value) is str else _text(value)) if ok else ""
            for value, ok in zip(series.astype(object).tolist(), present, strict=True)]


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _unreadable(path: Path, exc: Exception) -> ValueError:
    """A file that does not parse at all is the operator's to fix."""
    return ValueError(f"{path}: cannot read manifest: {type(exc).__name__}: {exc}")


def _raw_batches(path: Path, rows: int) -> Iterator[tuple[pd.DataFrame | pa.Table, list | None]]:
    """_raw_frames, with any error a reading error."""
    frames = _raw_frames(path, _kind(path), rows)
    while True:
        try:
            raw, columns = next(frames)
        except StopIteration:
            return
        except Exception as exc:
            raise _unreadable(path, exc) from None
        yield raw, columns


def _batch_texts(path: Path, raw: pd.DataFrame | pa.Table, columns: list | None) -> tuple[int, dict[str, list[str]]]:
    """(row count, column -> text values) of one raw batch."""
    try:
        frame = raw.to_pandas() if isinstance(raw, pa.Table) else raw
    except Exception as exc:
        raise _unreadable(path, exc) from None
    n = len(frame)
    texts = {c: _texts(frame[c]) for c in frame.columns}
    for column in columns or ():
        texts.setdefault(column, [""] * n)
    return n, texts


def read_batches(path: str | Path, rows: int = BATCH_ROWS) -> Iterator[tuple[int, dict[str, list[str]]]]:
    """(row count, column -> text values) per batch of at most `rows` rows of one manifest."""
    path = Path(path)
    for raw, columns in _raw_batches(path, rows):
        yield _batch_texts(path, raw, columns)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A whole manifest as text columns: for small files and checks (partition streams instead)."""
    batches = list(read_batches(path))
    names = list(batches[0][1]) if batches else []
    return pd.DataFrame({c: [v for _, texts in batches for v in texts[c]] for c in names}, dtype=object)


def contract_error(row: dict, missing_columns: list[str], allowed_sources: list[str]) -> str:
    """Why a manifest row cannot enter the pipeline, or '' when it can."""
    if missing_columns:
        return f"manifest missing column: {', '.join(missing_columns)}"
    if not row["source"]:
        return "manifest empty source"
    if row["source"] not in allowed_sources:
        return f"manifest source not allowed: {row['source'][:80]}"
    if not row["source_id"]:
        return "manifest empty source_id"
    if not row["url"]:
        return "manifest empty url"
    for name, limit in MAX_CHARS.items():
        if len(row[name]) > limit:
            return f"manifest field too long: {name} has {len(row[name])} characters, limit {limit}"
    if not _URL_PLAIN.fullmatch(row["url"]):
        if _URL_BAD.search(row["url"]):
            return "manifest bad url: contains whitespace or control characters"
        try:
            parts = urlsplit(row["url"])
            parts.port  # noqa: B018 (raises on a malformed port)
        except ValueError as exc:
            return f"manifest bad url: {exc}"
        if parts.scheme.lower() not in SCHEMES:
            return f"manifest unsupported url scheme: {parts.scheme.lower()[:20] or '(none)'}"
    for name in ("width", "height"):
        if row.get(name) and not row[name].isdigit():
            return f"manifest bad {name}: not a non-negative integer: {row[name][:40]}"
    return ""


def row_key(row: dict) -> str:
    """Key from (source, source_id); a row without a source_id is keyed by its content,
    which is still stable across machines and runs."""
    if row["source_id"]:
        return make_key(row["source"], row["source_id"])
    content = json.dumps(row, sort_keys=True, ensure_ascii=False)
    return make_key(row["source"], "row-sha256:" + hashlib.sha256(content.encode()).hexdigest())


def _quoted(values: list[str]) -> pa.Array:
    """json.dumps of each value (ensure_ascii=False): a column with no byte json escapes (C0
    controls, quote, backslash; looked up on its whole text at once) is only quoted."""
    column = pa.array(values, pa.string())
    text = column.buffers()[2]
    if text is not None and _JSON_ESCAPED[np.frombuffer(text, np.uint8)].any():
        return pa.array([encode_basestring(v) for v in values], pa.string())
    return pc.binary_join_element_wise('"', column, '"', "")


def _extra(texts: dict[str, list[str]], names: list[str], n: int) -> pa.Array:
    """json.dumps(row's extra columns, sort_keys=True, ensure_ascii=False) of every row, built a
    column at a time instead of a dict and a dumps per row."""
    if not names:
        return pa.array(["{}"] * n, pa.string())
    parts: list = []
    for i, name in enumerate(sorted(names)):
        parts += [("{" if i == 0 else ", ") + encode_basestring(name) + ": ", _quoted(texts[name])]
    return pc.binary_join_element_wise(*parts, "}", "")


def _passes(columns: dict[str, pa.Array], allowed: list[str]) -> np.ndarray:
    """Rows that certainly pass contract_error (no missing column assumed), its checks run on the
    whole batch: a non-empty allowed source and source_id, no field too long, a URL of
    _URL_PLAIN's shape, ASCII-digit (or empty) width and height. Every other row is checked by
    contract_error itself, so each verdict and message stays its own."""
    ok = pc.and_(pc.is_in(columns["source"], value_set=pa.array(allowed, pa.string())),
                 pc.greater(pc.utf8_length(columns["source"]), 0))
    ok = pc.and_(ok, pc.greater(pc.utf8_length(columns["source_id"]), 0))
    for name, limit in MAX_CHARS.items():
        ok = pc.and_(ok, pc.less_equal(pc.utf8_length(columns[name]), limit))
    ok = pc.and_(ok, pc.match_substring_regex(columns["url"], f"^(?:{_URL_PLAIN.pattern})$"))
    for name in ("width", "height"):
        ok = pc.and_(ok, pc.match_substring_regex(columns[name], "^[0-9]*$"))
    return ok.to_numpy(zero_copy_only=False)


def assign(n: int, texts: dict[str, list[str]], missing: list[str], manifest_file: str, first_row: int,
           config: Config) -> pa.RecordBatch:
    """Key, shard, split and contract verdict for one batch of a manifest's rows: a hash per key
    and label in Python, everything else on whole columns (30 us a row in a Python loop)."""
    empty = [""] * n
    fields = [texts.get(c, empty) for c in FIELDS]
    columns = {c: pa.array(values, pa.string()) for c, values in zip(FIELDS, fields, strict=True)}

    def row(i: int) -> dict:
        return {c: values[i] for c, values in zip(FIELDS, fields, strict=True)}

    sources, ids = texts.get("source", empty), texts.get("source_id", empty)
    keys = [make_key(s, i) if i else row_key(row(r)) for r, (s, i) in enumerate(zip(sources, ids, strict=True))]
    shard = (units("shard", keys) * config["shards"]).astype(np.int64)  # int() of a non-negative float
    unit, val, test = units("split", keys), config["splits"]["val_fraction"], config["splits"]["test_fraction"]
    split = np.select([unit < test, unit < test + val], ["test", "val"], "train")
    errors = list(texts.get(COLLECT_REASON, empty))
    passes = _passes(columns, config["allowed_sources"]) if not missing else np.zeros(n, bool)
    for i in np.flatnonzero(~passes).tolist():
        errors[i] = errors[i] or contract_error(row(i), missing, config["allowed_sources"])
    extra = _extra(texts, [c for c in texts if c not in FIELDS], n)
    arrays = [pa.array(keys, pa.string()), pa.array(shard), pa.array(split, pa.string()), *columns.values(), extra,
              pa.array([manifest_file] * n, pa.string()), pa.array(np.arange(first_row, first_row + n)),
              pa.array(errors, pa.string())]
    return pa.RecordBatch.from_arrays(arrays, schema=ROW_SCHEMA)


def _key(path: str, first: int, raw: pd.DataFrame | pa.Table, columns: list | None, config: Config) -> pa.RecordBatch:
    """One raw batch read, checked and keyed: the unit of work a keying process is given."""
    n, texts = _batch_texts(Path(path), raw, columns)
    return assign(n, texts, [c for c in REQUIRED if c not in texts], path, first, config)


def keyed_batches(sources: list[str], config: Config, rows: int = BATCH_ROWS,
                  workers: int = 1) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(manifest, batch of its rows keyed) for every batch of every manifest, in config and file
    order: the first row of a repeated key wins only if rows arrive as they were listed.

    Reading stays here; with several workers the keying runs in as many forked processes
    (fork: no re-import, and the Snakemake script that called us is not run again), at most
    twice as many batches in flight as workers so that memory stays bounded."""
    def tasks() -> Iterator[tuple]:
        for path in sources:
            first = 0
            for raw, columns in _raw_batches(Path(path), rows):
                yield str(path), first, raw, columns
                first += len(raw)

    if workers <= 1:
        for task in tasks():
            yield task[0], _key(*task, config)
        return
    pool, pending = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")), deque()
    try:
        for task in tasks():
            pending.append((task[0], pool.submit(_key, *task, config)))
            if len(pending) >= 2 * workers:
                path, done = pending.popleft()
                yield path, done.result()
        while pending:
            path, done = pending.popleft()
            yield path, done.result()
    finally:
        pool.shutdown(cancel_futures=True)


def _groups(rows: pa.Table | pa.RecordBatch, ids: np.ndarray, count: int) -> Iterator[tuple[int, pa.Table]]:
    """(group, its rows in arrival order) for every group 0..count-1, empty ones included. One
    stable gather, then a slice per group: a take per group would join a table's chunks again
    each time (a minute per 4,000 shards of a 500,000-row bucket)."""
    ordered = rows.take(pa.array(np.argsort(ids, kind="stable")))
    ends = np.cumsum(np.bincount(ids, minlength=count))
    for group in range(count):
        start = int(ends[group - 1]) if group else 0
        yield group, ordered.slice(start, int(ends[group]) - start)


class Buckets:
    """Rows spread over at most BUCKETS temporary Arrow files, each holding a contiguous range of
    shards. Rows keep their arrival order within a file, so 'first one wins' still holds."""

    def __init__(self, folder: Path, lo: int, hi: int):
        self.folder, self.lo, self.hi = folder, lo, hi
        self.count = min(max(BUCKETS, 2), hi - lo)  # two at least: a bucket spread again must narrow
        owner = np.arange(hi - lo) * self.count // (hi - lo)
        self.bounds = lo + np.searchsorted(owner, np.arange(self.count + 1))  # bucket b: shards [b_lo, b_hi)
        self.writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self.nbytes = [0] * self.count

    def path(self, bucket: int) -> Path:
        return self.folder / f"{self.lo}-{self.hi}-{bucket}.arrow"

    def add(self, batch: pa.RecordBatch) -> None:
        bucket = (batch.column("shard").to_numpy() - self.lo) * self.count // (self.hi - self.lo)
        for b, part in _groups(batch, bucket, self.count):
            if not len(part):
                continue
            if b not in self.writers:
                options = pa.ipc.IpcWriteOptions(compression="zstd")
                self.writers[b] = pa.ipc.new_stream(str(self.path(b)), ROW_SCHEMA, options=options)
            self.writers[b].write_batch(part)
            self.nbytes[b] += part.nbytes

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def finish(self, write: Callable[[int, pa.Table], None]) -> None:
        """Call `write(shard, rows)` for every shard of the range, in shard order, rows in arrival order."""
        self.close()
        for b in range(self.count):
            lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
            path = self.path(b)
            if b not in self.writers:
                table = ROW_SCHEMA.empty_table()
            elif hi - lo == 1 or self.nbytes[b] <= BUCKET_BYTES:
                with pa.OSFile(str(path)) as source:
                    table = pa.ipc.open_stream(source).read_all()
            else:  # too large to hold: spread its rows over narrower buckets, one level down
                sub = Buckets(self.folder, lo, hi)
                with pa.OSFile(str(path)) as source:
                    for batch in pa.ipc.open_stream(source):
                        sub.add(batch)
                path.unlink()
                sub.finish(write)
                continue
            path.unlink(missing_ok=True)
            for offset, rows in _groups(table, table.column("shard").to_numpy() - lo, hi - lo):
                write(lo + offset, rows)
            del table


def partition(sources: list[str], config: Config, out_dir: str | Path, *, workers: int = 1,
              rows: int = BATCH_ROWS) -> dict:
    """Write `{out_dir}/{shard}.parquet` for every configured shard and a summary, keying
    batches of `rows` rows in `workers` processes.

    Rows repeating an earlier (source, source_id) are the same key: the first one, in
    config order of the manifests, wins and the repeats are counted in the summary."""
    out_dir = Path(out_dir)
    for path in sources:  # a misnamed manifest fails now, not after hours of reading the others
        _kind(Path(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"shards": config["shards"], "rows": 0, "keys": 0, "repeated_keys": 0, "contract_errors": 0,
               "per_shard": {}}
    # The whole-table version wrote object columns (plain `string` in parquet, null when empty)
    # when no manifest or an empty one took part; kept so that outputs stay byte for byte the same.
    as_objects = not sources
    folder = Path(tempfile.mkdtemp(prefix=".partition-", dir=out_dir))
    try:
        buckets = Buckets(folder, 0, config["shards"])
        try:
            read = dict.fromkeys(map(str, sources), 0)
            for path, batch in keyed_batches(sources, config, rows, workers):
                buckets.add(batch)
                read[path] += batch.num_rows
            summary["rows"] = sum(read.values())
            as_objects = as_objects or 0 in read.values()
        finally:
            buckets.close()

        def write(index: int, rows: pa.Table) -> None:
            # np.unique sorts stably and returns each key's first row: repeats dropped, sorted by key.
            _, first = np.unique(rows.column("key").to_numpy(zero_copy_only=False), return_index=True)
            unique = rows.take(pa.array(first, pa.int64()))
            part = unique.to_pandas().astype(object) if as_objects else unique.to_pandas()
            write_table(part, out_dir / f"{shard_name(index)}.parquet")
            summary["keys"] += len(part)
            summary["repeated_keys"] += rows.num_rows - len(part)
            summary["contract_errors"] += len(part) - unique.column("contract_error").to_pylist().count("")
            summary["per_shard"][shard_name(index)] = len(part)

        buckets.finish(write)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    write_json(summary, out_dir / "partition.json")
    return summary


def run(files: Layout, cfg: Config, *, model=None) -> dict:
    """Every source manifest into one manifest per raw shard, and the summary beside them. The
    workflow's script adds the job's threads to `cfg` as `workers`, used up to the CPUs this
    process may run on (a SLURM job is held to its allocation, whatever threads the rule names)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return partition(cfg["sources"], cfg, files.manifests, workers=min(cfg.get("workers", 1), cpus))
