"""What every collector shares: the manifest rows it writes, the checkpointed parts that make a
collection resumable, and a polite API client on gpic.http (requests in series, a User-Agent
with a contact, backoff with full jitter, Retry-After honoured, a rate limit per key, API keys
kept out of logs and errors).

A collection is a list of parts (upload-time windows of an API, chunks of a dump), each
written to `{out}/{part}.parquet`. A part is written page by page into `{out}/{part}.pages/`:
each page file holds its rows and, in its metadata, the state to resume from after it (an
API's continue token, a dump's byte offset). A page file appears by an atomic rename, so the
last page on disk is the checkpoint: a restart resumes from it, repeats no finished page and
writes no row twice; a part whose file exists is finished and never read again."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import urllib3

from gpic.http import RateLimit as RateLimit  # the collectors import it from here
from gpic.http import api_pool, full_jitter, retry_after
from gpic.store import atomic_path

log = logging.getLogger(__name__)

# The manifest contract (gpic.stages.partition.FIELDS) plus the collector's verdict: a row the
# collector already refuses keeps its reason in `collect_reason`, and partition turns it into
# a recorded drop, so no enumerated file vanishes between the source and provenance.
MANIFEST = ["source", "source_id", "url", "license", "license_url", "attribution", "title", "retrieved_at",
            "width", "height"]
REASON = "collect_reason"
STATE_KEY = b"gpic.collect.state"  # page metadata: JSON state to resume from; "null" = part finished
PARAMS_KEY = b"gpic.collect.params"  # page and part metadata: hash of the settings that shaped the rows
CONTACT = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+|https?://\S+")


class CollectError(Exception):
    """A response or record the source's format does not allow; the message names the part
    (window or chunk) and, where there is one, the record."""


def now() -> str:
    """When our collector read a licence: `retrieved_at` of the rows it writes."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def require_user_agent(user_agent: str) -> str:
    """The User-Agent, refused unless it names a contact (an e-mail address or a URL):
    Wikimedia's policy asks for one and throttles or blocks clients without it."""
    if not CONTACT.search(user_agent or ""):
        raise ValueError(
            f"config collect.user_agent {user_agent!r} has no contact: name the tool and an e-mail address or "
            "URL, e.g. 'gpic-collector/0.1 (https://example.org/gpic; data-team@example.org)'. Wikimedia "
            "throttles or blocks clients without one, and the collector refuses to run without it.")
    return user_agent


# ---------------------------------------------------------------------------
# Time windows
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """A half-open upload-time window [start, end), in UTC."""

    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"

    @classmethod
    def parse(cls, name: str) -> Window:
        start, end = (datetime.strptime(p, "%Y%m%dT%H%M%S").replace(tzinfo=UTC) for p in name.split("-"))
        return cls(start, end)

    def halves(self) -> tuple[Window, Window]:
        middle = self.start + (self.end - self.start) / 2
        middle = middle.replace(microsecond=0)
        return Window(self.start, middle), Window(middle, self.end)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def as_datetime(value: str | date | datetime) -> datetime:
    """A config date (YAML gives date objects or ISO strings) as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def windows(start: str | date, end: str | date, days: float) -> list[Window]:
    """Consecutive windows of `days` covering [start, end); the last one may be shorter."""
    lo, hi, step = as_datetime(start), as_datetime(end), timedelta(days=days)
    if hi <= lo:
        raise ValueError(f"collection window: end {hi:%Y-%m-%d} is not after start {lo:%Y-%m-%d}")
    out = []
    while lo < hi:
        out.append(Window(lo, min(lo + step, hi)))
        lo += step
    return out


# ---------------------------------------------------------------------------
# HTML attributions
# ---------------------------------------------------------------------------

class _Text(HTMLParser):
    BLOCKS = {"br", "p", "div", "li", "tr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.href: list[tuple[str, int]] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "a":
            self.href.append((dict(attrs).get("href") or "", len(self.parts)))
        elif tag in self.BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag == "a" and self.href:
            href, first = self.href.pop()
            if not "".join(self.parts[first:]).strip() and href:  # a link with no text keeps its target
                self.parts.append(href)

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(value: str) -> str:
    """Plain text of an HTML fragment (Commons' Artist and Credit): tags removed, entities
    decoded, link text kept (an empty link keeps its URL), whitespace collapsed."""
    if "<" not in value and "&" not in value:
        return " ".join(value.split())
    parser = _Text()
    parser.feed(value)
    parser.close()
    return " ".join("".join(parser.parts).split())  # the parser already decoded entities, once


# ---------------------------------------------------------------------------
# Polite API client
# ---------------------------------------------------------------------------

class Retry(Exception):
    """An answer that asks to come back later (Commons' maxlag or ratelimited, Flickr's
    service unavailable): retried after `delay` seconds, or a backoff when None."""

    def __init__(self, reason: str, delay: float | None = None):
        super().__init__(reason)
        self.delay = delay


@dataclass
class ApiClient:
    """One keep-alive connection pool to one API, used in series (one request at a time, as
    Wikimedia's etiquette asks). Connection errors, timeouts, 429, 5xx and answers `check` turns
    into Retry are retried with full-jitter exponential backoff; a Retry-After (header or
    Retry.delay) up to `max_wait_s` is honoured as given. Any other HTTP error, or a body that is
    not JSON, raises CollectError after the retries. The retry loop is ours, not urllib3's: it
    judges answers urllib3 cannot (maxlag in a 200) and waits through `sleep`, capped."""

    user_agent: str
    timeout_s: float = 60.0
    retries: int = 8
    backoff_s: float = 1.0
    max_backoff_s: float = 120.0
    max_wait_s: float = 900.0
    rate: RateLimit | None = None
    check: Callable[[dict, Mapping[str, str]], None] | None = None
    secrets: tuple[str, ...] = ()  # values (an API key) never written to a log or an error
    sleep: Callable[[float], None] = time.sleep
    pool: urllib3.PoolManager | None = None  # made from the settings when not given
    requests_made: int = 0
    waited_s: float = 0.0

    def __post_init__(self):
        require_user_agent(self.user_agent)
        if self.pool is None:
            self.pool = api_pool({"User-Agent": self.user_agent, "Accept-Encoding": "gzip"}, self.timeout_s)

    def _wait(self, attempt: int, delay: float | None) -> None:
        if attempt >= self.retries:  # the last attempt failed: give up now rather than after a wait
            return
        if delay is None:
            delay = full_jitter(attempt + 1, self.backoff_s, self.max_backoff_s)
        delay = min(delay, self.max_wait_s)
        self.waited_s += delay
        self.sleep(delay)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***") if secret else text
        return text

    def get(self, url: str, params: dict, where: str) -> dict:
        """The JSON answer to one GET; `where` (the part and page) goes into every error, the
        `secrets` into none (a connection error's text holds the whole URL, query included)."""
        try:
            return self._get(url, params, where)
        except CollectError as exc:
            raise CollectError(self._redact(str(exc))) from None

    def _get(self, url: str, params: dict, where: str) -> dict:
        fields = {name: value for name, value in params.items() if value is not None}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                log.info("%s: retry %d after %s", where, attempt, self._redact(last))
            if self.rate:
                self.rate.take()
            self.requests_made += 1
            try:
                response = self.pool.request("GET", url, fields=fields)
            except urllib3.exceptions.MaxRetryError as exc:  # urllib3's wrapper: the error is its reason
                last = f"{type(exc.reason).__name__} on {exc.url}: {exc.reason}"
                self._wait(attempt, None)
                continue
            except urllib3.exceptions.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                self._wait(attempt, None)
                continue
            text = response.data.decode("utf-8", "replace")
            if response.status == 429 or response.status >= 500:
                last = f"HTTP {response.status}"
                self._wait(attempt, retry_after(response.headers.get("Retry-After")))
                continue
            if response.status != 200:
                raise CollectError(f"{where}: HTTP {response.status} from {url}: {text[:200]!r}")
            try:
                payload = json.loads(response.data)
            except ValueError:
                last = f"not JSON: {text[:120]!r}"
                self._wait(attempt, None)
                continue
            if not isinstance(payload, dict):
                raise CollectError(f"{where}: answer is not a JSON object: {text[:200]!r}")
            try:
                if self.check:
                    self.check(payload, response.headers)
            except Retry as exc:
                last = str(exc)
                self._wait(attempt, exc.delay if exc.delay is not None else
                           retry_after(response.headers.get("Retry-After")))
                continue
            return payload
        raise CollectError(f"{where}: gave up after {self.retries + 1} attempts: {last}")


# ---------------------------------------------------------------------------
# Parts, pages and checkpoints
# ---------------------------------------------------------------------------

@dataclass
class Page:
    """Rows read from one answer (or one stretch of a dump) and the state to resume from
    after them; `state` None says the part is finished."""

    rows: list[dict]
    state: object


def part_schema(columns: Iterable[str]) -> pa.Schema:
    names = list(dict.fromkeys([*MANIFEST, *columns, REASON]))
    return pa.schema([(name, pa.string()) for name in names])


def _table(rows: list[dict], schema: pa.Schema, state: object, params: str) -> pa.Table:
    columns = {name: [str(row.get(name, "") or "") for row in rows] for name in schema.names}
    meta = {STATE_KEY: json.dumps(state, sort_keys=True).encode(), PARAMS_KEY: params.encode()}
    return pa.table(columns, schema=schema.with_metadata(meta))


def _pages(folder: Path) -> list[Path]:
    return sorted(folder.glob("page-*.parquet")) if folder.is_dir() else []


def written_with(path: Path) -> str | None:
    """The settings hash a part or page file was written with (None: not ours or unreadable)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return meta.get(PARAMS_KEY, b"").decode() if PARAMS_KEY in meta else None


def resume_state(folder: Path, params: str = "") -> tuple[bool, object, int]:
    """(started, state after the last page on disk, pages on disk). Pages written with other
    settings are discarded: resuming them would mix two configurations in one part."""
    pages = _pages(folder)
    if pages and written_with(pages[-1]) != params:
        log.warning("%s: pages written with other settings, starting the part again", folder)
        shutil.rmtree(folder)
        pages = []
    if not pages:
        return False, None, 0
    meta = pq.read_schema(pages[-1]).metadata or {}
    return True, json.loads(meta[STATE_KEY]), len(pages)


def collect_part(out: Path, pages: Callable[[object], Iterator[Page]], columns: Iterable[str],
                 params: str = "") -> int:
    """Write one part: resume from its last checkpoint, append pages, then copy them page by
    page into `out` (memory: one page, whatever the part's size) and remove the page folder.
    Returns the part's row count. Rows are written as the collector gives them: the checkpoints
    alone keep a resumed part free of repeats (a row the source itself lists twice is the same
    key to partition, which keeps the first and counts the rest). `params` (a hash of the
    settings that shape the rows) is stored with every page and the part."""
    schema = part_schema(columns)
    folder = out.with_suffix(".pages")
    started, state, n = resume_state(folder, params)
    if not started or state is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for page in pages(state if started else None):
            with atomic_path(folder / f"page-{n:06d}.parquet") as tmp:
                pq.write_table(_table(page.rows, schema, page.state, params), tmp, compression="zstd")
            n += 1
            if page.state is None:
                break
        else:
            raise CollectError(f"{out.stem}: the collector stopped without finishing the part")
    rows = 0
    meta = schema.with_metadata({PARAMS_KEY: params.encode()})
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, meta, compression="zstd") as writer:
        for path in _pages(folder):
            table = pq.read_table(path, schema=schema)
            if table.num_rows:
                writer.write_table(table)
                rows += table.num_rows
    shutil.rmtree(folder, ignore_errors=True)
    return rows
