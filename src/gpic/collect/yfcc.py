"""The YFCC100M collector: a streaming reader of the dataset's tab-separated metadata file
(docs/collection.md). YFCC100M photos are Flickr photos, so rows have source "flickr" and
the photo id: the same photo found by the Flickr API collector gets the same key.

Layouts. The Multimedia Commons copy (`yfcc100m_dataset`, also in its SQLite form) has 25
fields: line number, photo/video id, hash, user NSID, user nickname, date taken, date
uploaded (unix seconds), capture device, title, description, user tags, machine tags,
longitude, latitude, accuracy, page URL, download URL, licence name, licence URL, server id,
farm id, secret, original secret, original extension, marker (0 photo, 1 video). Yahoo
Webscope's `yfcc100m_dataset-{0..9}` files have the 23 fields from the photo id on (no line
number, no hash). No other layout is published: a line with another field count is malformed.
Text fields (nickname, device, title, description, tags) are URL-encoded with + for spaces.

Licences were recorded when Yahoo built the dump (2014), not read by us, so `retrieved_at`
stays empty; the licence text and URL are the dump's, and the fetch stage's gate reads them.
Width and height are not in the metadata. The download URL is the dump's (500 px on the long
side). Rows whose licence the allowlist refuses, videos and malformed lines are written with
their reason (`collect_reason`), naming the chunk and line, never dropped.

Parts: `chunks` byte ranges of an uncompressed file; part i reads the lines that start in
[i*size/chunks, (i+1)*size/chunks), so every line belongs to exactly one part. A .gz or .bz2
file is one part. State after each page: {"offset": byte offset of the next line, "line":
lines read in the part} for a plain file, {"line": lines read} for a compressed one (resumed
by reading past them). Memory is one page of rows, whatever the file's size."""

from __future__ import annotations

import bz2
import gzip
import itertools
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote_plus

from gpic import licenses
from gpic.collect.common import REASON, Page

log = logging.getLogger(__name__)

COLUMNS = ["owner_id", "owner_nickname", "upload_date", "date_taken", "page_url", "yfcc_line", "yfcc_hash"]
FIELDS_23 = ["photo_id", "user_nsid", "user_nickname", "date_taken", "date_uploaded", "capture_device", "title",
             "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy", "page_url",
             "download_url", "license_name", "license_url", "server", "farm", "secret", "secret_original",
             "extension_original", "marker"]
FIELDS_25 = ["line_number", "photo_id", "hash", *FIELDS_23[1:]]
LAYOUTS = {len(FIELDS_23): FIELDS_23, len(FIELDS_25): FIELDS_25}
DEFAULT_ALLOW = ["CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-[0-9]*"]
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}
PAGE_ROWS = 50_000  # rows per checkpointed page
PART = re.compile(r"^chunk-(\d+)-of-(\d+)$")


def parts(cfg: dict) -> list[str]:
    """`chunks` byte ranges of a plain file; one part for a compressed one (it cannot be seeked)."""
    if not cfg.get("metadata"):
        raise ValueError("config collect.yfcc.metadata is missing: the YFCC100M metadata file to read")
    chunks = 1 if Path(cfg["metadata"]).suffix in COMPRESSED else int(cfg.get("chunks", 1))
    if chunks < 1:
        raise ValueError(f"config collect.yfcc.chunks must be at least 1, not {chunks}")
    return [f"chunk-{i:04d}-of-{chunks:04d}" for i in range(chunks)]


def _decoded(value: str) -> str:
    return unquote_plus(value).strip()


def record_row(raw: bytes, where: str, allow: list[str]) -> dict:
    """One manifest row from one metadata line; a line the collector cannot take keeps its
    reason in REASON, which names the chunk and line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {"source": "flickr", REASON: f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})"}
    fields = text.rstrip("\r\n").split("\t")
    layout = LAYOUTS.get(len(fields))
    if layout is None:
        return {"source": "flickr", REASON: f"{where}: {len(fields)} tab-separated fields, a YFCC100M line has 23 "
                                            f"or 25"}
    record = dict(zip(layout, fields, strict=True))
    pid, owner = record["photo_id"].strip(), record["user_nsid"].strip()
    nickname, uploaded = _decoded(record["user_nickname"]), record["date_uploaded"].strip()
    row = {"source": "flickr", "source_id": pid, "url": record["download_url"].strip(),
           "license": _decoded(record["license_name"]), "license_url": record["license_url"].strip(),
           "attribution": nickname or (f"Flickr user {owner}" if owner else ""), "title": _decoded(record["title"]),
           "owner_id": owner, "owner_nickname": nickname, "date_taken": record["date_taken"].strip(),
           "upload_date": datetime.fromtimestamp(int(uploaded), UTC).isoformat() if uploaded.isdigit() else "",
           "page_url": record["page_url"].strip(), "yfcc_line": record.get("line_number", "").strip(),
           "yfcc_hash": record.get("hash", "").strip()}
    marker = record["marker"].strip()
    if not pid.isdigit():
        row[REASON] = f"{where}: photo id {pid[:40]!r} is not a number"
    elif marker == "1":
        row[REASON] = f"{where}: video {pid}: the corpus takes photos"
    elif marker != "0":
        row[REASON] = f"{where}: photo {pid}: marker {marker[:20]!r} is neither 0 (photo) nor 1 (video)"
    elif not uploaded.isdigit():
        row[REASON] = f"{where}: photo {pid}: date uploaded {uploaded[:40]!r} is not unix seconds"
    elif not row["url"]:
        row[REASON] = f"{where}: photo {pid}: no download URL"
    elif not (verdict := licenses.check(row["license"], row["license_url"], row["attribution"], allow)).ok:
        row[REASON] = f"{where}: photo {pid}: {verdict.reason}"
    return row


def _plain_lines(path: Path, index: int, chunks: int, state: dict | None) -> Iterator[tuple[int, int, bytes, int]]:
    """(line in the part, its byte offset, the line, the offset after it) for the lines that
    start in the part's byte range."""
    with path.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        start, end = index * size // chunks, (index + 1) * size // chunks
        if state is not None:
            stream.seek(state["offset"])
        elif start > 0:
            stream.seek(start - 1)
            if stream.read(1) != b"\n":
                stream.readline()  # the rest of a line that started in the previous part
        line = state["line"] if state else 0
        while (offset := stream.tell()) < end:
            raw = stream.readline()
            if not raw:
                break
            line += 1
            yield line, offset, raw, stream.tell()


def pages(part: str, cfg: dict, ctx, state: dict | None) -> Iterator[Page]:
    """Pages of PAGE_ROWS rows of one chunk, each with the position to resume from after it."""
    match = PART.match(part)
    if not match:
        raise ValueError(f"yfcc: {part!r} is not a part name (chunk-I-of-N)")
    index, chunks = int(match.group(1)), int(match.group(2))
    path, allow = Path(cfg["metadata"]), cfg.get("allow") or DEFAULT_ALLOW
    rows: list[dict] = []
    if path.suffix in COMPRESSED:
        done = state["line"] if state else 0
        with COMPRESSED[path.suffix](path, "rb") as stream:
            for line, raw in enumerate(itertools.islice(stream, done, None), done + 1):
                rows.append(record_row(raw, f"yfcc {part} line {line}", allow))
                if len(rows) >= PAGE_ROWS:
                    yield Page(rows, {"line": line})
                    rows = []
    else:
        for line, offset, raw, after in _plain_lines(path, index, chunks, state):
            rows.append(record_row(raw, f"yfcc {part} line {line} (byte {offset})", allow))
            if len(rows) >= PAGE_ROWS:
                yield Page(rows, {"offset": after, "line": line})
                rows = []
    yield Page(rows, None)
