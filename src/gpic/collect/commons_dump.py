"""The `commons-dump` collector: Wikimedia Commons' structured-data dump (one MediaInfo entity
per file page) joined with the image table dump (name, size, MIME type, SHA-1 of each file),
so that a whole Commons snapshot is enumerated without one API request.

Formats, as Wikimedia publishes them:
- `commons-YYYYMMDD-mediainfo.json[.gz|.bz2]`: a JSON array written one entity per line (`[`
  alone on the first line, each entity line ending in `,` but the last, `]` alone at the end).
  An entity is `{"type":"mediainfo","id":"M<page id>","pageid":..,"ns":6,"title":"File:..",
  "labels":..,"statements":{"P275":[statement, ...], ...},"lastrevid":..,"modified":..}` (the
  fields Flickypedia validates every snapshot entry against); older dumps (Wikimedia analytics'
  test entities) lack `pageid`, `ns` and `title`, and an entity without a title cannot be
  joined (a reason row says so). A statement is `{"mainsnak":{"snaktype":"value"|"somevalue"|
  "novalue","property":..,"datavalue":{"value":{"entity-type":"item","id":"Q.."},
  "type":"wikibase-entityid"}},"qualifiers":{"P2093":[snak, ...]},"rank":"preferred"|"normal"|
  "deprecated"}`.
- `commonswiki-YYYYMMDD-image.sql[.gz]`: mysqldump output, a `CREATE TABLE` naming the columns
  and extended `INSERT INTO `image` VALUES (..),(..);` statements, strings quoted with
  backslash escapes. `img_name` is the file name with underscores, `img_sha1` base 36.

The join needs the image table by name while the MediaInfo dump runs in page-id order. The
image dump is first copied, without `img_metadata` (most of its bytes), into a SQLite table
keyed by name beside the dump (`{images}.gpic-lookup.sqlite`, in the temp folder when that one
is read-only): built once, under a lock, by an atomic rename, rebuilt when the dump changes.
SQLite rather than a sorted parquet: a B-tree on disk answers lookups by name with bounded
memory (its page cache: CACHE_KIB while building) and no search code of ours; each page's names
take a few indexed queries, and the dump is ordered by name, so the build mostly appends.
Peak memory: one read buffer (READ_BYTES, more only for a longer row), one batch of lookup
rows, one page of entities.

Parts are `chunks` byte ranges of an uncompressed MediaInfo dump (a line belongs to the chunk
its first byte lies in); a compressed dump cannot be entered mid-stream and is one part, so a
full dump is best decompressed first. A page is PAGE_ENTITIES entities; its state is the byte
offset (in the uncompressed stream) of the next line."""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import functools
import glob
import gzip
import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

from gpic.collect.common import REASON, CollectError, Page, now
from gpic.licenses import NEEDS_ATTRIBUTION, WIKIDATA_ITEMS, author, url_of

log = logging.getLogger(__name__)

COLUMNS = ["page_id", "file_name", "sha1", "mime", "original_url", "original_width", "original_height",
           "upload_time", "copyright_status", "license_items", "licence_source", "entity_modified"]
SOURCE = "wikimedia"
LICENCE_SOURCE = "structured data"
DEFAULTS = {"chunks": 1, "thumb_width": 960, "upload_url": "https://upload.wikimedia.org/wikipedia/commons"}
PAGE_ENTITIES = 2000  # MediaInfo entities per checkpointed page
COMPRESSED = (".gz", ".bz2")

# P6216 copyright status values (Flickypedia's and multichill's SDC bots write these).
COPYRIGHTED = "Q50423863"
PUBLIC_DOMAIN = "Q19652"
DEDICATED = "Q88088423"  # copyrighted, dedicated to the public domain by the copyright holder
STATUSES = {COPYRIGHTED: "copyrighted", PUBLIC_DOMAIN: "public domain", DEDICATED: "dedicated to the public domain"}
PD_LICENCES = {"CC0-1.0", "PDM-1.0", "public-domain"}  # what a public-domain status may sit beside
NOT_COPYRIGHTED = {"Q19652", "Q7257361"}  # licence items that say "no copyright": contradict COPYRIGHTED
# Several licences on one file are alternatives (multi-licensing): the row takes the first in
# this order of preference, statement order breaking ties; the rest stay in `license_items`.
PREFERENCE = [re.compile(p) for p in (r"^CC0-", r"^PDM-", r"^public-domain$", r"^CC-BY-\d", r"^CC-BY-SA-\d")]

# Commons' upload host (operations-mediawiki-config; QuickInstantCommons copies it): thumbnails
# only at these widths (wgThumbnailSteps, T414805), a name longer than 160 bytes becomes
# "thumbnail.ext" in thumbnail URLs (abbrvThreshold), and JPEG, PNG and GIF thumbnails keep the
# original's format (Commons:File types). Other types (SVG, TIFF, PDF, ...) get other
# thumbnail names; WebP's is not verified, so it is taken only where the original is small enough.
THUMB_STEPS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
ABBREVIATE_OVER = 160
THUMB_SAME_FORMAT = {"image/jpeg", "image/png", "image/gif"}
ORIGINAL_ONLY = {"image/webp"}
# File URLs escape the name as PHP's rawurlencode does (FileRepo::getZoneUrl): everything but
# letters, digits and -_.~ , so "(" is %28 as in the API's imageinfo.url (quote's default set).
URL_SAFE = ""

# The image table's columns in MediaWiki's current order, for a dump without its CREATE TABLE.
IMAGE_COLUMNS = ["img_name", "img_size", "img_width", "img_height", "img_metadata", "img_bits", "img_media_type",
                 "img_major_mime", "img_minor_mime", "img_description_id", "img_actor", "img_timestamp", "img_sha1"]
NEEDED = ["img_name", "img_size", "img_width", "img_height", "img_media_type", "img_major_mime", "img_minor_mime",
          "img_timestamp", "img_sha1"]
LOOKUP_VERSION = "1"
CACHE_KIB = 65536  # SQLite page cache, KiB
BATCH_ROWS = 20_000  # image rows inserted per executemany
LOOKUP_NAMES = 500  # names per SELECT (far below SQLite's variable limit)


# ---------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------

def _cfg(cfg: dict) -> dict:
    return {**DEFAULTS, **cfg}


def _chunks(cfg: dict) -> int:
    n = 1 if str(cfg["mediainfo"]).endswith(COMPRESSED) else int(cfg["chunks"])
    if n < 1:
        raise ValueError(f"collect.commons_dump.chunks must be at least 1, not {n}")
    return n


def parts(cfg: dict) -> list[str]:
    """`chunk-00000-of-00004` ...: `chunks` parts of an uncompressed dump, one of a compressed one."""
    n = _chunks(_cfg(cfg))
    return [f"chunk-{i:05d}-of-{n:05d}" for i in range(n)]


def _chunk(part: str, cfg: dict) -> tuple[int, int]:
    m = re.fullmatch(r"chunk-(\d{5,})-of-(\d{5,})", part)
    n = _chunks(cfg)
    if not m or int(m.group(2)) != n or int(m.group(1)) >= n:
        raise CollectError(f"{part}: not a part of this config (its parts: chunk-00000-of-{n:05d} ...)")
    return int(m.group(1)), n


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------

def pages(part: str, cfg: dict, ctx, state) -> Iterator[Page]:
    """Rows of one chunk of the MediaInfo dump, PAGE_ENTITIES entities a page; the state is the
    offset of the next line, None after the chunk's last line."""
    cfg = _cfg(cfg)
    i, n = _chunk(part, cfg)
    dump = Path(cfg["mediainfo"])
    lookup = image_lookup(Path(cfg["images"]))
    compressed = dump.suffix in COMPRESSED
    end = float("inf") if compressed else (i + 1) * dump.stat().st_size // n
    with _open(dump) as f, contextlib.closing(_read_only(lookup)) as db:
        if state is not None:
            offset = int(state["offset"])
            f.seek(offset)
        else:
            offset = _first_line(f, i * dump.stat().st_size // n if not compressed else 0)
        batch: list[dict] = []
        while offset < end:
            line = f.readline()
            if not line:
                break
            at, offset = offset, offset + len(line)
            entity = _entity(line, part, at)
            if entity is not None:
                batch.append(entity)
            if len(batch) >= PAGE_ENTITIES:
                yield Page(_rows(batch, db, cfg, part), {"offset": offset})
                batch = []
        yield Page(_rows(batch, db, cfg, part), None)


def _first_line(f: IO[bytes], start: int) -> int:
    """Offset of the first line that starts at or after `start`."""
    if start == 0:
        return 0
    f.seek(start - 1)
    f.readline()  # the rest of the line holding byte start - 1 belongs to the chunk before
    return f.tell()


def _entity(line: bytes, part: str, at: int) -> dict | None:
    text = line.strip()
    if text in (b"[", b"]", b""):
        return None
    if text.endswith(b","):
        text = text[:-1]
    try:
        entity = json.loads(text)
    except ValueError as exc:
        raise CollectError(f"{part}: line at byte {at} is not a JSON entity: {exc}") from None
    if not isinstance(entity, dict) or entity.get("type") != "mediainfo" or not re.fullmatch(
            r"M[1-9]\d*", str(entity.get("id", ""))):
        raise CollectError(f"{part}: line at byte {at} is not a MediaInfo entity: {text[:120]!r}")
    return entity


def _rows(batch: list[dict], db: sqlite3.Connection, cfg: dict, part: str) -> list[dict]:
    names = [_name(e) for e in batch]
    images = lookup(db, [n for n in names if n])
    retrieved, rows = now(), []
    for entity, name in zip(batch, names, strict=True):
        try:
            rows.append(entity_row(entity, images.get(name) if name else None, cfg, retrieved))
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # statements not shaped as Wikibase's
            raise CollectError(f"{part}: entity {entity['id']}: malformed: {type(exc).__name__}: {exc}") from None
    return rows


def _name(entity: dict) -> str:
    """The image table's key of an entity's file: its title without `File:`, spaces as underscores."""
    title = entity.get("title") or ""
    if not title.startswith("File:") or entity.get("ns", 6) != 6:
        return ""
    return title[len("File:"):].replace(" ", "_")


# ---------------------------------------------------------------------------
# One entity -> one row
# ---------------------------------------------------------------------------

def _truthy(entity: dict, prop: str) -> list[dict]:
    """The statements Wikibase calls truthy: not deprecated, and the preferred ones alone when
    there are any (a corrected licence is marked preferred, an outdated one deprecated)."""
    statements = entity.get("statements") or {}
    if isinstance(statements, list):  # PHP writes an empty map as []
        if statements:
            raise ValueError("statements is a non-empty list")
        return []
    found = [s for s in statements.get(prop, []) if s.get("rank", "normal") != "deprecated"]
    preferred = [s for s in found if s.get("rank") == "preferred"]
    return preferred or found


def _items(entity: dict, prop: str) -> list[str]:
    return list(dict.fromkeys(q for s in _truthy(entity, prop) if (q := _item(s.get("mainsnak") or {}))))


def _item(snak: dict) -> str:
    """The Q-id a value snak names, '' for somevalue/novalue or another datatype."""
    if snak.get("snaktype") != "value":
        return ""
    value = (snak.get("datavalue") or {}).get("value")
    return value.get("id", "") if isinstance(value, dict) else ""


def _strings(statement: dict, prop: str) -> list[str]:
    out = []
    for snak in (statement.get("qualifiers") or {}).get(prop, []):
        value = (snak.get("datavalue") or {}).get("value") if snak.get("snaktype") == "value" else None
        if isinstance(value, str) and value.strip():
            out.append(" ".join(value.split()))
    return out


def attribution(entity: dict) -> str:
    """Who made the file, from its creator (P170) statements: the author name strings (P2093) of
    each, else its Wikimedia username (P4174), else the creator's Wikidata item as a link to
    it (no label without a network request); several creators joined by '; '."""
    names = []
    for statement in _truthy(entity, "P170"):
        found = _strings(statement, "P2093") or _strings(statement, "P4174")
        if not found and (item := _item(statement.get("mainsnak") or {})):
            found = [f"https://www.wikidata.org/wiki/{item}"]
        names += [n for n in map(author, found) if n and n not in names]
    return "; ".join(names)


def licence(entity: dict) -> tuple[str, str, list[str]]:
    """(canonical id, reason, licence items) of an entity's copyright statements. The id is ''
    and the reason says why when the statements name no licence we recognise, or contradict
    each other (never resolved towards the permissive side)."""
    statuses, items = _items(entity, "P6216"), _items(entity, "P275")
    known = [(q, WIKIDATA_ITEMS[q]) for q in items if q in WIKIDATA_ITEMS]
    unknown = [q for q in items if q not in WIKIDATA_ITEMS]
    shown = ", ".join(f"{q} ({WIKIDATA_ITEMS.get(q, 'unrecognised')})" for q in items)
    if not statuses and not items:
        return "", "collect: no structured data (use the commons API collector for extmetadata)", items
    if len(statuses) > 1:
        return "", f"collect: licence conflict: copyright status {' and '.join(statuses)}", items
    status = statuses[0] if statuses else ""
    if status and status not in STATUSES:
        return "", f"collect: copyright status unrecognised: {status}", items
    if status in (PUBLIC_DOMAIN, DEDICATED):
        if unknown or any(c not in PD_LICENCES for _, c in known):
            return "", f"collect: licence conflict: copyright status {status} ({STATUSES[status]}), " \
                f"licence {shown}", items
        if not items:
            return "public-domain", "", items
    if status == COPYRIGHTED:
        if not items:
            return "", "collect: no licence in structured data", items
        if any(q in NOT_COPYRIGHTED for q in items):
            return "", f"collect: licence conflict: copyright status {status} (copyrighted), licence {shown}", items
    if not known:
        return "", f"collect: licence unrecognised: {', '.join(unknown)}", items
    return min(known, key=lambda k: (_preference(k[1]), known.index(k)))[1], "", items


def _preference(license_id: str) -> int:
    return next((i for i, p in enumerate(PREFERENCE) if p.match(license_id)), len(PREFERENCE))


def rendition_width(thumb_width: int) -> int:
    """The thumbnail width requested: the configured one, or the next width the upload host
    serves (THUMB_STEPS) when it is not one of them; 0 means originals."""
    if thumb_width <= 0:
        return 0
    return next((w for w in THUMB_STEPS if w >= thumb_width), THUMB_STEPS[-1])


def file_urls(name: str, upload_url: str, thumb: int) -> tuple[str, str]:
    """(original URL, thumbnail URL at width `thumb`) of a file named with underscores."""
    digest = hashlib.md5(name.encode()).hexdigest()
    base = f"{upload_url.rstrip('/')}/{digest[0]}/{digest[:2]}"
    quoted = quote(name, safe=URL_SAFE)
    short = quoted if len(name.encode()) <= ABBREVIATE_OVER else "thumbnail" + (
        "." + quote(name.rsplit(".", 1)[1], safe=URL_SAFE) if "." in name else "")
    original = f"{base}/{quoted}"
    thumb_url = f"{upload_url.rstrip('/')}/thumb/{digest[0]}/{digest[:2]}/{quoted}/{thumb}px-{short}"
    return original, thumb_url


def scale_height(width: int, height: int, to_width: int) -> int:
    """MediaWiki's File::scaleHeight: round(height * to_width / width), halves away from zero."""
    return (2 * height * to_width + width) // (2 * width) if width else 0


def entity_row(entity: dict, image: dict | None, cfg: dict, retrieved_at: str) -> dict:
    """The manifest row of one MediaInfo entity and its image table row (None when absent): a
    licensed rendition, or the same identity with the reason it is refused in `collect_reason`
    (the first that applies: no title, no image row, the licence, no author, the media type)."""
    cfg = _cfg(cfg)
    page_id = entity["id"][1:]
    title = entity.get("title") or ""
    license_id, reason, items = licence(entity)
    row = {"source": SOURCE, "source_id": page_id, "title": title, "retrieved_at": retrieved_at,
           "page_id": page_id, "file_name": _name(entity), "copyright_status": " ".join(_items(entity, "P6216")),
           "license_items": " ".join(items), "licence_source": LICENCE_SOURCE, "license": license_id,
           "license_url": url_of(license_id) if license_id else "", "attribution": attribution(entity),
           "entity_modified": str(entity.get("modified") or "")}  # when the licence statement last changed
    if not title:
        return {**row, REASON: "collect: no title in the MediaInfo entity, so no image table row to join"}
    if image is None:
        return {**row, REASON: "collect: file not in the image table dump"}
    width, height, mime = image["width"], image["height"], image["mime"]
    original, _ = file_urls(row["file_name"], cfg["upload_url"], 0)
    row |= {"sha1": _sha1_hex(image["sha1"]), "mime": mime, "original_url": original,
            "original_width": str(width), "original_height": str(height),
            "upload_time": _iso(image["upload_time"]), "url": original, "width": str(width), "height": str(height)}
    thumb = rendition_width(int(cfg["thumb_width"]))
    scaled = bool(thumb) and width > thumb
    if reason:
        return {**row, REASON: reason}
    if NEEDS_ATTRIBUTION.match(license_id) and not row["attribution"]:
        return {**row, REASON: "collect: attribution required but no author"}
    if mime not in THUMB_SAME_FORMAT | ORIGINAL_ONLY:
        return {**row, REASON: f"collect: {mime}: not a raster type the fetch stage reads"}
    if scaled and mime not in THUMB_SAME_FORMAT:
        return {**row, REASON: f"collect: {mime}: no verified thumbnail rule, and the original is wider than {thumb}"}
    if scaled:
        row |= {"url": file_urls(row["file_name"], cfg["upload_url"], thumb)[1], "width": str(thumb),
                "height": str(scale_height(width, height, thumb))}
    return row


def _sha1_hex(base36: str) -> str:
    """img_sha1 (base 36, zero-padded to 31 digits) as the usual 40 hex digits."""
    return f"{int(base36, 36):040x}" if base36 else ""


def _iso(stamp: str) -> str:
    """img_timestamp (YYYYMMDDHHMMSS, UTC) in ISO 8601 as the API's imageinfo gives it (…Z)."""
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ") if stamp else ""
    except ValueError:  # a day the calendar lacks (20200231...): no time rather than a failed part
        return ""


# ---------------------------------------------------------------------------
# The image table: a strict streaming reader of mysqldump output
# ---------------------------------------------------------------------------

READ_BYTES = 8 << 20  # read size; a statement longer than this is read on in doubling steps
MAX_TUPLE = 256 << 20  # a row this long without its closing parenthesis is malformed
_STR = rb"'[^'\\]*+(?:\\.[^'\\]*+)*+'"
_VALUE = rb"(?:" + _STR + rb"|NULL|-?[0-9]++(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?)"
TUPLE = re.compile(rb"\(" + _VALUE + rb"(?:," + _VALUE + rb")*+\)", re.S)
FIELD = re.compile(rb"'([^'\\]*+(?:\\.[^'\\]*+)*+)'|(NULL)|([^,]++)", re.S)
AFTER = re.compile(rb"\s*+([,;])", re.S)
SPACE = re.compile(rb"\s*+", re.S)
INSERT = re.compile(rb"INSERT INTO `([^`]+)` VALUES\s*+", re.S)
STATEMENT = re.compile(rb"(?:[^;'`\"]++|" + _STR + rb"|`[^`]*+`|\"[^\"\\]*+(?:\\.[^\"\\]*+)*+\")*+;", re.S)
COLUMN = re.compile(rb"^\s*`([^`]+)`\s", re.M)
ESCAPES = {b"0": b"\0", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"Z": b"\x1a", b"\\": b"\\",
           b"'": b"'", b'"': b'"'}
ESCAPE = re.compile(rb"\\(.)", re.S)
BASE36 = re.compile(r"[0-9a-z]{0,31}")
TIMESTAMP = re.compile(r"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])(?:[01][0-9]|2[0-3])(?:[0-5][0-9]){2}")


def _unescape(raw: bytes) -> bytes:
    def one(m: re.Match) -> bytes:
        if m.group(1) not in ESCAPES:
            raise CollectError(f"image table: unknown escape \\{m.group(1).decode(errors='replace')} in {raw[:80]!r}")
        return ESCAPES[m.group(1)]
    return ESCAPE.sub(one, raw)


class _Reader:
    """A byte buffer over a stream that reads on only when a token runs past its end."""

    def __init__(self, f: IO[bytes], path: Path):
        self.f, self.path = f, path
        self.buf, self.pos, self.base, self.eof = b"", 0, 0, False

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(max(READ_BYTES, len(self.buf) - self.pos))
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos:] + chunk, 0
        self.eof = not chunk
        return bool(chunk)

    def match(self, pattern: re.Pattern, limit: int = MAX_TUPLE) -> re.Match | None:
        """`pattern` at the current position, reading on while the buffer could cut a match short."""
        while True:
            m = pattern.match(self.buf, self.pos)
            if m and (m.end() < len(self.buf) or self.eof):
                return m
            if len(self.buf) - self.pos > limit or not self.more():
                return pattern.match(self.buf, self.pos)

    def startswith(self, prefix: bytes) -> bool:
        while len(self.buf) - self.pos < len(prefix) and self.more():
            pass
        return self.buf.startswith(prefix, self.pos)

    def error(self, what: str) -> CollectError:
        near = self.buf[self.pos:self.pos + 80]
        return CollectError(f"image table {self.path.name}: {what} at byte {self.base + self.pos}: {near!r}")


def image_rows(path: Path) -> Iterator[dict]:
    """Every row of the `image` table in a mysqldump file (plain or .gz), as a dict of the NEEDED
    columns, strings decoded and unescaped (img_metadata is skipped, never decoded). Anything
    the grammar does not allow raises CollectError with the byte offset."""
    columns = IMAGE_COLUMNS
    with _open(path) as f:
        r = _Reader(f, path)
        while True:
            r.pos = r.match(SPACE, 1 << 20).end()
            if r.pos >= len(r.buf) and not r.more():
                return
            if r.startswith(b"--"):
                while (end := r.buf.find(b"\n", r.pos)) < 0 and r.more():
                    pass
                r.pos = len(r.buf) if end < 0 else end + 1
            elif r.startswith(b"/*"):
                while (end := r.buf.find(b"*/", r.pos)) < 0 and r.more():
                    pass
                if end < 0:
                    raise r.error("unterminated comment")
                r.pos = end + 2
                if r.startswith(b";"):
                    r.pos += 1
            elif (m := r.match(INSERT, 1 << 10)) and m.group(1) == b"image":
                r.pos = m.end()
                yield from _tuples(r, columns)
            else:
                m = r.match(STATEMENT)
                if m is None:
                    raise r.error("unterminated statement")
                if re.match(rb"CREATE TABLE `image` \(", m.group()):
                    columns = [c.decode() for c in COLUMN.findall(m.group())]
                    missing = [c for c in NEEDED if c not in columns]
                    if missing:
                        raise r.error(f"CREATE TABLE `image` lacks {', '.join(missing)}")
                r.pos = m.end()


@functools.cache
def _row_pattern(n: int) -> re.Pattern:
    """One row of n values, each captured as (string body, NULL, number): one regex pass per row."""
    value = rb"(?:'([^'\\]*+(?:\\.[^'\\]*+)*+)'|(NULL)|(-?[0-9]++(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?))"
    return re.compile(rb"\(" + rb",".join([value] * n) + rb"\)", re.S)


def _tuples(r: _Reader, columns: list[str]) -> Iterator[dict]:
    row = _row_pattern(len(columns))
    at = {c: 3 * columns.index(c) for c in NEEDED}
    while True:
        m = r.match(row)
        if m is None:
            if (any_row := r.match(TUPLE)) is None:
                raise r.error("malformed row")
            n = len(list(FIELD.finditer(r.buf, any_row.start() + 1, any_row.end() - 1)))
            raise r.error(f"row has {n} values for {len(columns)} columns")
        r.pos = m.end()
        yield _image_row(m.groups(), at, r)
        sep = r.match(AFTER, 1 << 10)
        if sep is None:
            raise r.error("expected ',' or ';' after a row")
        r.pos = sep.end()
        if sep.group(1) == b";":
            return


def _image_row(g: tuple, at: dict[str, int], r: _Reader) -> dict:
    def text(c: str) -> str:
        i = at[c]
        raw = g[i] if g[i] is not None else g[i + 2] if g[i + 2] is not None else b""  # NULL reads as ''
        try:
            return (_unescape(raw) if b"\\" in raw else raw).decode()
        except UnicodeDecodeError:
            raise r.error(f"{c} is not UTF-8") from None

    def number(c: str) -> int:
        raw = g[at[c] + 2]
        if raw is None or not raw.isdigit():
            raise r.error(f"{c} is not a non-negative integer")
        return int(raw)

    # Values the grammar allows but that are not a SHA-1 or a time are kept out, not fatal.
    sha1, stamp = text("img_sha1"), text("img_timestamp")
    return {"name": text("img_name"), "size": number("img_size"), "width": number("img_width"),
            "height": number("img_height"), "media_type": text("img_media_type"),
            "mime": f"{text('img_major_mime')}/{text('img_minor_mime')}",
            "upload_time": stamp if TIMESTAMP.fullmatch(stamp) else "", "sha1": sha1 if BASE36.fullmatch(sha1) else ""}


# ---------------------------------------------------------------------------
# The image table lookup (SQLite)
# ---------------------------------------------------------------------------

INDEX_FIELDS = ["name", "size", "width", "height", "media_type", "mime", "upload_time", "sha1"]


def lookup_path(images: Path) -> Path:
    """Beside the dump when its folder is writable, else in the temp folder under a name made
    from the dump's path."""
    if os.access(images.parent, os.W_OK):
        return images.with_name(images.name + ".gpic-lookup.sqlite")
    digest = hashlib.sha256(str(images.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gpic-commons-image-{digest}.sqlite"


def _signature(images: Path) -> str:
    st = images.stat()
    return f"{LOOKUP_VERSION}:{st.st_size}:{st.st_mtime_ns}"


def _current(lookup: Path, signature: str) -> bool:
    if not lookup.exists():
        return False
    try:
        with contextlib.closing(_read_only(lookup)) as db:
            return db.execute("SELECT value FROM meta WHERE key = 'source'").fetchone() == (signature,)
    except sqlite3.Error:
        return False


def image_lookup(images: Path) -> Path:
    """The SQLite lookup of an image table dump, built first if missing or stale. One process
    builds it (an exclusive lock on `{lookup}.lock`), into a temporary file renamed into place,
    so a crash leaves no half lookup and a concurrent part waits, then reads the finished one."""
    if not images.is_file():
        raise CollectError(f"image table dump {images} does not exist")
    lookup, signature = lookup_path(images), _signature(images)
    if _current(lookup, signature):
        return lookup
    with open(lookup.with_name(lookup.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _current(lookup, signature):
            return lookup
        for stale in lookup.parent.glob(glob.escape(lookup.name) + ".tmp*"):  # a build that crashed
            stale.unlink(missing_ok=True)
        tmp = lookup.with_name(lookup.name + f".tmp{os.getpid()}")
        try:
            rows = _build(images, tmp, signature)
            os.replace(tmp, lookup)
        finally:
            tmp.unlink(missing_ok=True)
    log.info("wrote %d image table rows of %s into the lookup %s", rows, images, lookup)
    return lookup


def _build(images: Path, tmp: Path, signature: str) -> int:
    with contextlib.closing(sqlite3.connect(tmp)) as db:
        db.executescript(f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{CACHE_KIB};"
                         "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                         "CREATE TABLE image (name TEXT PRIMARY KEY, size INTEGER, width INTEGER, height INTEGER,"
                         " media_type TEXT, mime TEXT, upload_time TEXT, sha1 TEXT) WITHOUT ROWID;")
        insert = f"INSERT INTO image VALUES ({', '.join('?' * len(INDEX_FIELDS))})"
        n, batch = 0, []
        for row in image_rows(images):
            batch.append(tuple(row[k] for k in INDEX_FIELDS))
            if len(batch) >= BATCH_ROWS:
                n += _insert(db, insert, batch)
                batch = []
        n += _insert(db, insert, batch)
        db.execute("INSERT INTO meta VALUES ('source', ?)", (signature,))
        db.commit()
    return n


def _insert(db: sqlite3.Connection, insert: str, batch: list[tuple]) -> int:
    try:
        db.executemany(insert, batch)
    except sqlite3.IntegrityError:
        names = [b[0] for b in batch]
        dup = next((n for n in names if names.count(n) > 1 or db.execute(
            "SELECT 1 FROM image WHERE name = ?", (n,)).fetchone()), "?")
        raise CollectError(f"image table: img_name {dup!r} occurs twice") from None
    return len(batch)


def _read_only(lookup: Path) -> sqlite3.Connection:
    return sqlite3.connect(lookup.resolve().as_uri() + "?mode=ro", uri=True)


def lookup(db: sqlite3.Connection, names: Iterable[str]) -> dict[str, dict]:
    """Image rows by name, for the names found."""
    names = list(dict.fromkeys(names))
    found = {}
    for i in range(0, len(names), LOOKUP_NAMES):
        chunk = names[i:i + LOOKUP_NAMES]
        sql = f"SELECT {', '.join(INDEX_FIELDS)} FROM image WHERE name IN ({', '.join('?' * len(chunk))})"
        for values in db.execute(sql, chunk):
            found[values[0]] = dict(zip(INDEX_FIELDS, values, strict=True))
    return found
