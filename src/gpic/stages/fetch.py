"""The fetch stage: licence gate first (nothing non-permissive is downloaded), then the
bytes of every admitted URL, each key ending with one fetch record.

Downloads run in a thread pool with a per-host limit, so one slow or rate-limiting host
neither monopolises the pool nor sees more than `per_host` requests at a time. Each host keeps
up to `per_host` kept-alive connections (urllib3, through gpic.http's address check), so a
host pays the TCP and TLS handshakes once per connection, not once per image; certificates
are verified against the system store or `ca_bundle`, never skipped. Every request has a
connect/read timeout and a total deadline, a size cap checked before and while reading, and a
bounded number of redirects, which our code follows hop by hop, so every hop passes its host's
gate and the address check. Environment proxies are never used.

Only connection errors, timeouts, truncated bodies, 429 and 5xx are retried, after a random
wait (full jitter up to an exponential cap) or the server's Retry-After, when it is not too
long. A 429 or 503 with Retry-After pauses its host for every worker of the shard. A host
listed in `host_budget` gets at most budget / `concurrent_jobs` requests per second from this
job, so all the jobs running at once keep to the budget together."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import logging
import os
import random
import ssl
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import pandas as pd
import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NewConnectionError, ReadTimeoutError

from gpic import licenses
from gpic.config import Config, FetchConfig
from gpic.http import (
    CheckedPools,
    RateLimit,
    Refused,
    cause,
    discard,
    disconnected,
    full_jitter,
    parse_networks,
    retry_after,
)
from gpic.identity import config_hash
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import TarWriter, read_table, tar_places, with_producer, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["fetch"]

MAGIC = [
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
    (b"II*\x00", "image/tiff", "tif"),
    (b"MM\x00*", "image/tiff", "tif"),
    (b"BM", "image/bmp", "bmp"),
]
RETRY_STATUS = {429, 500, 502, 503, 504}
CHUNK = 1 << 16


def sniff(data: bytes) -> tuple[str, str]:
    """Content type and file extension from magic bytes, never from a server's header."""
    for magic, mime, ext in MAGIC:
        if data.startswith(magic):
            return mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    if data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "text/html", "html"
    return "application/octet-stream", "bin"


class FetchError(Exception):
    """A key's download failed. `retryable`: worth asking again, in this run (unless `again` is
    False) or the next; `requested`: raised after a request for this attempt was sent."""

    def __init__(self, message: str, http_status: int = 0, retryable: bool = False, retry_after: float | None = None,
                 again: bool = True, requested: bool = True):
        super().__init__(message)
        self.http_status = http_status
        self.retryable = retryable
        self.retry_after = retry_after
        self.again = again
        self.requested = requested
        self.attempts = 1
        self.wire_bytes = 0
        self.fetch_s = 0.0


class OptOut(Exception):
    """The source asked not to be used for AI training (X-Robots-Tag)."""

    attempts = 1
    wire_bytes = 0
    fetch_s = 0.0


@dataclass
class Fetched:
    data: bytes
    http_status: int
    wire_bytes: int = 0  # body bytes received for the key: every attempt and redirect, headers excluded
    fetch_s: float = 0.0  # from the first request sent to the body complete, retries included


@dataclass
class Transfer:
    """What one key's download cost so far (see Fetched)."""

    wire_bytes: int = 0
    started: float | None = None

    def begin(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def seconds(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started


def opt_out_tags(headers: list[str], directives: list[str]) -> set[str]:
    """The opt-out directives among all X-Robots-Tag header lines (a server may send several).
    Directives may be scoped to a user agent ("otherbot: noai"); any scope counts, so an
    opt-out is never missed (img2dataset only honours its own agent's)."""
    tags = set()
    for header in headers:
        for part in header.replace(";", ",").split(","):
            tags.add(part.split(":")[-1].strip().lower())
    return tags & {directive.lower() for directive in directives}


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Certificate and host name verified, against `ca_bundle` or the system store."""
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ValueError(f"config fetch.ca_bundle: {ca_bundle} is not a file")
    context = ssl.create_default_context(cafile=ca_bundle or None)
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass
class Host:
    """What every worker of a Fetcher shares about one host: its request slots, the time before
    which it is paused (a 429/503 with Retry-After) and, under a budget, this job's share of it."""

    slots: threading.BoundedSemaphore
    budget: RateLimit | None
    not_before: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


PAUSE_STATUS = {429, 503}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
DRAIN = 1 << 16  # an error or redirect body up to this size is read, so its connection can be kept
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError)


class Fetcher:
    """Downloads for one shard under the `fetch` config; thread-safe. `rng`, `clock` and `sleep`
    drive the retry jitter and the host gates (tests pass seeded or fake ones). Close it (or use
    it as a context manager) to close its kept-alive connections."""

    def __init__(self, cfg: FetchConfig, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.roots = [Path(root).resolve() for root in cfg["file_roots"]]
        self.rng, self.clock, self.sleep = rng or random.Random(), clock, sleep
        self.budget = {host.lower(): rate / cfg.get("concurrent_jobs", 1)
                       for host, rate in cfg.get("host_budget", {}).items()}
        self.pools = CheckedPools(parse_networks(cfg["allow_networks"]), tls_context(cfg.get("ca_bundle", "")),
                                  cfg["per_host"], cfg["timeout_s"])
        self._hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    @property
    def connections(self) -> int:
        """Connections opened so far, for tests and the benchmark."""
        return self.pools.connections

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections; the Fetcher can still be used (it opens new ones)."""
        self.pools.close()

    def host(self, name: str) -> Host:
        with self._lock:
            if name not in self._hosts:
                rate = self.budget.get(name)
                self._hosts[name] = Host(threading.BoundedSemaphore(self.cfg["per_host"]),
                                         RateLimit(rate, clock=self.clock, sleep=self.sleep) if rate else None)
            return self._hosts[name]

    def host_slot(self, name: str) -> threading.BoundedSemaphore:
        return self.host(name).slots

    def pause(self, name: str, seconds: float) -> None:
        """Every worker waits `seconds` before its next request to the host (a 429 or 503 said so)."""
        host = self.host(name)
        with host.lock:
            host.not_before = max(host.not_before, self.clock() + seconds)
        log.info("host %s paused for %.1f s (Retry-After)", name, seconds)

    def admit(self, name: str) -> float:
        """Wait until a request to the host may start: after its pause, and under its budget no
        sooner than one interval after the previous request; return the seconds waited. A pause
        longer than max_backoff_s fails the key at once, retryable, without a request."""
        host = self.host(name)
        waited = 0.0
        while True:
            with host.lock:
                wait = host.not_before - self.clock()
            if wait <= 0:
                break
            if wait > self.cfg["max_backoff_s"]:
                raise FetchError(f"host paused: {name} asked for {wait:.0f} s more (Retry-After), longer than "
                                 f"max_backoff_s", retryable=True, again=False, requested=False)
            self.sleep(wait)
            waited += wait
        return waited + (host.budget.take() if host.budget else 0.0)

    def backoff(self, attempt: int, exc: FetchError) -> float:
        """Seconds to wait before retrying after `exc`: the server's Retry-After (already waited
        for by the host's pause after a 429 or 503), else full jitter up to an exponential cap."""
        cfg = self.cfg
        if exc.retry_after is not None:
            if exc.retry_after > cfg["max_backoff_s"]:
                raise FetchError(f"{exc} (Retry-After {exc.retry_after:.0f} s is too long)", exc.http_status, True)
            return 0.0 if exc.http_status in PAUSE_STATUS else exc.retry_after
        return full_jitter(attempt, cfg["backoff_s"], cfg["max_backoff_s"], self.rng)

    def fetch(self, url: str) -> tuple[Fetched, int]:
        """Fetch with retries (connection errors, timeouts, 429 and 5xx only); return the
        result and the number of attempts. Raises FetchError (with .attempts) or OptOut; both
        carry the key's wire_bytes and fetch_s."""
        scheme = urlsplit(url).scheme.lower()
        retries = self.cfg["retries"]
        transfer = Transfer()
        try:
            for attempt in range(1, retries + 2):
                try:
                    if scheme == "file":
                        return self.fetch_file(url), attempt
                    if scheme in ("http", "https"):
                        fetched = self.fetch_http(url, transfer)
                        fetched.wire_bytes, fetched.fetch_s = transfer.wire_bytes, transfer.seconds()
                        return fetched, attempt
                    raise FetchError(f"unsupported url scheme: {scheme}")
                except OptOut as exc:
                    exc.attempts = attempt
                    raise
                except FetchError as exc:
                    exc.attempts = attempt if exc.requested else attempt - 1
                    if not exc.retryable or not exc.again or attempt > retries:
                        raise
                    try:
                        wait = self.backoff(attempt, exc)
                    except FetchError as too_long:
                        too_long.attempts = exc.attempts
                        raise too_long from None
                    self.sleep(wait)
            raise AssertionError("unreachable")
        except (FetchError, OptOut) as exc:
            exc.wire_bytes, exc.fetch_s = transfer.wire_bytes, transfer.seconds()
            raise

    def fetch_file(self, url: str) -> Fetched:
        path = Path(unquote(urlsplit(url).path)).resolve()
        if not any(path.is_relative_to(root) for root in self.roots):
            raise FetchError(f"file outside file_roots: {path}")
        if not path.is_file():
            raise FetchError(f"no such file: {path}")
        with path.open("rb") as stream:
            return Fetched(self.read_body(stream, None, time.monotonic() + self.cfg["deadline_s"]), 0)

    def fetch_http(self, url: str, transfer: Transfer | None = None) -> Fetched:
        """One attempt: the request and each redirect, one hop at a time, every hop through its
        host's gate and slot. Raises FetchError (OptOut for an opt-out)."""
        cfg, transfer = self.cfg, transfer or Transfer()
        deadline = None  # deadline_s from the first request; a later hop's wait at its host's gate extends it
        for redirects in range(cfg["max_redirects"] + 2):
            parts = urlsplit(url)
            name = (parts.hostname or "").lower()
            if not name:
                raise FetchError(f"bad url: no host in {url}")
            try:
                name.encode("idna")
                port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            except UnicodeError as exc:  # a label IDNA cannot encode: asking again will not help
                raise FetchError(f"bad host name: {name}: {exc}") from None
            except ValueError as exc:
                raise FetchError(f"bad url: {exc}") from None
            with self.host_slot(name):
                waited = self.admit(name)
                deadline = time.monotonic() + cfg["deadline_s"] if deadline is None else deadline + waited
                result = self.hop(parts.scheme.lower(), name, port, url, deadline, transfer)
            if isinstance(result, Fetched):
                return result
            status, location = result
            if redirects >= cfg["max_redirects"]:
                raise FetchError(f"too many redirects (over {cfg['max_redirects']})", status)
            url = location
        raise AssertionError("unreachable")

    def hop(self, scheme: str, name: str, port: int, url: str, deadline: float,
            transfer: Transfer) -> Fetched | tuple[int, str]:
        """One request on a pooled connection: the body, or (status, location) of a redirect.
        The connection goes back to the pool only after a response read to its end."""
        cfg = self.cfg
        parts = urlsplit(url)
        target = quote(parts.path or "/", safe=string.punctuation) + (
            "?" + quote(parts.query, safe=string.punctuation) if parts.query else "")
        transfer.begin()
        response = self.request(self.pools.pool(scheme, name, port), name, target)
        try:
            status = response.status
            if status in REDIRECT_STATUS and (location := response.headers.get("Location")
                                              or response.headers.get("URI")):
                location = quote(urljoin(url, location), encoding="iso-8859-1", safe=string.punctuation)
                scheme_to = urlsplit(location).scheme.lower()
                if scheme_to not in ("http", "https"):
                    raise FetchError(f"redirect to unsupported url scheme: {scheme_to}", status)
                self.drain(response, transfer, deadline)
                return status, location
            if not 200 <= status < 300:
                wait = retry_after(response.headers.get("Retry-After"))
                if status in PAUSE_STATUS and wait is not None:
                    self.pause(name, wait)
                self.drain(response, transfer, deadline)
                raise FetchError(f"http error: {status}", status, status in RETRY_STATUS, wait)
            tags = opt_out_tags(response.headers.getlist("X-Robots-Tag"), cfg["opt_out_directives"])
            if tags:
                raise OptOut(f"opt-out: X-Robots-Tag {', '.join(sorted(tags))}")
            # read to its end, the response hands its connection back to the pool
            return Fetched(self.read_body(response, response.headers.get("Content-Length"), deadline, transfer),
                           status)
        except BaseException:
            discard(response)
            raise

    def request(self, pool: HTTPConnectionPool, name: str, target: str) -> urllib3.BaseHTTPResponse:
        """Send the GET and read the response head. A connection the server closed before
        answering (a kept-alive one it dropped as the request went out) is replaced once,
        silently: urllib3 only checks an idle connection before taking it."""
        headers = {"User-Agent": self.cfg["user_agent"], "Accept-Encoding": "identity"}
        for last in (False, True):
            try:
                # body bytes as served (no decoding); a short body is ours to report (read_body)
                return pool.urlopen("GET", target, headers=headers, retries=False, redirect=False,
                                    preload_content=False, decode_content=False, enforce_content_length=False)
            except BaseException as exc:
                if last or not disconnected(exc):
                    raise self.failure(exc, name) from None
        raise AssertionError("unreachable")

    def drain(self, response: urllib3.BaseHTTPResponse, transfer: Transfer, deadline: float) -> None:
        """Read a small error or redirect body to its end, within the deadline, to keep the
        connection; close it otherwise."""
        try:
            size = 0
            while size <= DRAIN and time.monotonic() <= deadline and (chunk := response.read1(CHUNK)):
                size += len(chunk)
                transfer.wire_bytes += len(chunk)
        except TRANSPORT_ERRORS:
            pass  # urllib3 has closed the connection
        discard(response)

    def failure(self, exc: BaseException, name: str) -> BaseException:
        """An error from connecting, TLS or reading, as the FetchError it means."""
        cfg = self.cfg
        if isinstance(exc, FetchError | OptOut):
            return exc
        if isinstance(exc, Refused):
            return FetchError(str(exc), retryable=exc.retryable)
        exc = cause(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            # not retried now (it will not change within seconds); retryable, so a rerun with a
            # fixed ca_bundle or a renewed certificate fetches the key
            return FetchError(f"certificate verify failed: {exc.verify_message} ({name})", retryable=True,
                              again=False)
        timed_out = isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError)
        if timed_out or isinstance(exc, TimeoutError | ReadTimeoutError):
            return FetchError(f"timeout: no data for {cfg['timeout_s']} s", retryable=True)
        if isinstance(exc, http.client.InvalidURL | LocationParseError):
            return FetchError(f"bad url: {exc}")
        if isinstance(exc, UnicodeError):
            return FetchError(f"bad host name: {name}: {exc}")
        if isinstance(exc, ssl.SSLError):
            return FetchError(f"tls error: {exc.reason or exc}", retryable=True)
        if isinstance(exc, NewConnectionError):
            return FetchError(f"connection error: {exc.args[-1].split(': ', 1)[-1]}", retryable=True)
        if isinstance(exc, TRANSPORT_ERRORS):
            return FetchError(f"connection error: {type(exc).__name__}: {exc}" if not str(exc).startswith("[")
                              else f"connection error: {exc}", retryable=True)
        return exc

    def read_body(self, stream, content_length: str | None, deadline: float, transfer: Transfer | None = None) -> bytes:
        """The body in chunks, failing as soon as it is known to be too large or too slow."""
        limit = self.cfg["max_bytes"]
        if content_length and content_length.isdigit() and int(content_length) > limit:
            raise FetchError(f"body too large: {content_length} bytes announced, limit {limit}")
        chunks, size = [], 0
        try:
            while chunk := stream.read1(CHUNK):  # what has arrived, so the deadline is checked often
                size += len(chunk)
                if transfer is not None:
                    transfer.wire_bytes += len(chunk)
                if size > limit:
                    raise FetchError(f"body too large: over {limit} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"timeout: body not complete after {self.cfg['deadline_s']} s", retryable=True)
                chunks.append(chunk)
        except TRANSPORT_ERRORS as exc:
            raise self.failure(exc, "") from None
        if content_length and content_length.isdigit() and size < int(content_length):
            raise FetchError(f"truncated body: {size} of {content_length} bytes", retryable=True)
        return b"".join(chunks)


def blank_record(key: str) -> dict:
    """A fetch record before the attempt; its keys are the stage's columns. `host`: the URL's
    host (empty for file URLs); `wire_bytes`: body bytes received for the key, every attempt and
    redirect included, headers and TLS framing excluded; `fetch_s`: seconds from its first request
    to the body complete (or the last failure), retries and waits between them included;
    `raw_offset`: where the member's bytes start in the raw tar (-1 when none), so one image is
    one seek (its size is `bytes`)."""
    return {"key": key, "fetch_status": "", "fetch_reason": "", "retryable": False, "http_status": 0, "bytes": 0,
            "sha256": "", "content_type": "", "fetched_at": "", "raw_member": "", "license_id": "", "attempts": 0,
            "host": "", "wire_bytes": 0, "fetch_s": 0.0, "raw_offset": -1}


def url_host(url: str) -> str:
    """The lower-case host of an http(s) URL, "" for anything else."""
    if not isinstance(url, str):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return (parts.hostname or "") if parts.scheme.lower() in ("http", "https") else ""


def gone(record: dict, digest: str) -> dict:
    """A body the source serves in place of a removed image (Flickr answers a deleted photo with
    200 and a stand-in picture): the key fails for good, and the stand-in is not stored."""
    return {**record, "fetch_status": "failed", "retryable": False, "bytes": 0, "sha256": "", "content_type": "",
            "raw_member": "", "fetch_reason": f"gone: the source served its placeholder for a removed image "
                                              f"(sha256 {digest})"}


def fetch_one(row: dict, fetcher: Fetcher, allow: list[str]) -> tuple[dict, tuple[str, bytes] | None]:
    """One key's fetch record and, when fetched, its raw tar member."""
    record = {**blank_record(row["key"]), "host": url_host(row["url"])}
    if row["contract_error"]:
        return {**record, "fetch_status": "skipped", "fetch_reason": row["contract_error"]}, None
    verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)
    record["license_id"] = verdict.license_id
    if not verdict.ok:
        return {**record, "fetch_status": "dropped", "fetch_reason": verdict.reason}, None
    try:
        fetched, attempts = fetcher.fetch(row["url"])
    except OptOut as exc:
        return {**record, "fetch_status": "dropped", "fetch_reason": str(exc), "attempts": exc.attempts,
                "wire_bytes": exc.wire_bytes, "fetch_s": exc.fetch_s}, None
    except FetchError as exc:
        return {**record, "fetch_status": "failed", "fetch_reason": str(exc), "retryable": exc.retryable,
                "http_status": exc.http_status, "attempts": exc.attempts, "wire_bytes": exc.wire_bytes,
                "fetch_s": exc.fetch_s}, None
    record.update(wire_bytes=fetched.wire_bytes, fetch_s=fetched.fetch_s)
    digest = hashlib.sha256(fetched.data).hexdigest()
    if digest in fetcher.cfg.get("placeholder_sha256", ()):
        return gone({**record, "http_status": fetched.http_status, "attempts": attempts}, digest), None
    mime, ext = sniff(fetched.data)
    member = f"{row['key']}.{ext}"
    record.update(fetch_status="ok", http_status=fetched.http_status, bytes=len(fetched.data),
                  sha256=digest, content_type=mime, attempts=attempts,
                  fetched_at=datetime.now(UTC).isoformat(timespec="seconds"), raw_member=member)
    return record, (member, fetched.data)


def reusable(records_path: Path, raw_tar: Path) -> dict[str, tuple[dict, tuple[int, int] | None]]:
    """Outcomes of an earlier run of this shard that a rerun keeps: every download attempted
    that did not fail with a retryable error (with where its bytes lie in the earlier raw tar,
    read only when it is copied into the new one). Licence decisions are not kept: they are
    cheap and follow the current allowlist."""
    if not (records_path.exists() and raw_tar.exists()):
        return {}
    previous = read_table(records_path)
    if "retryable" not in previous.columns:
        return {}
    places = tar_places(raw_tar)
    kept = {}
    blank = blank_record("")  # a table written before a column came has its blank value
    previous = previous.assign(**{c: v for c, v in blank.items() if c not in previous.columns})
    for record in previous[list(blank)].to_dict("records"):
        if record["attempts"] == 0 or (record["fetch_status"] == "failed" and record["retryable"]):
            continue
        if record["fetch_status"] == "ok":
            if record["raw_member"] not in places:
                continue
            kept[record["key"]] = (record, places[record["raw_member"]])
        else:
            kept[record["key"]] = (record, None)
    return kept


def ordered_results(pool: ThreadPoolExecutor, work: Callable, items: list, ahead: int) -> Iterator:
    """`pool.map` with at most `ahead` items in flight or finished but not yet taken: results
    come in the items' order while memory holds `ahead` of them, not a whole shard's bodies
    (pool.map submits everything at once, and finished bodies wait behind one slow download)."""
    pending: deque = deque()
    items = iter(items)
    for item in itertools.islice(items, ahead):
        pending.append(pool.submit(work, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(items, 1):
            pending.append(pool.submit(work, item))
        yield result


def fetch_params(config: Config) -> dict:
    """The configuration a fetch record is stamped with (and compared against)."""
    return {"fetch": config["fetch"], "licenses": config["licenses"]}


def fetch_is_current(manifest_path: Path, raw_tar: Path, records_path: Path, config: Config) -> bool:
    """True when the raw tar and fetch table are newer than the manifest, were made with the
    same fetch and licence config and hold no retryable failure: fetching again would
    download nothing and rewrite the same bytes. A filter-only change (which reruns prepare
    through Snakemake's params tracking) then leaves them, and the scores kept beside them
    for their mtime, untouched."""
    if not (raw_tar.exists() and records_path.exists()) or records_path.stat().st_mtime < manifest_path.stat().st_mtime:
        return False
    records = read_table(records_path)
    if "retryable" not in records or "fetch_config_hash" not in records:
        return False
    retry = (records["fetch_status"] == "failed") & records["retryable"].astype(bool)
    return bool((records["fetch_config_hash"] == config_hash(fetch_params(config))).all() and not retry.any())


def fetch_shard(manifest: pd.DataFrame, config: Config, raw_tar: str | Path, records_path: str | Path,
                fetcher: Fetcher | None = None) -> pd.DataFrame:
    """Fetch every key of a shard manifest into one raw tar plus one record per key. A rerun
    downloads again only the keys whose earlier attempt failed with a retryable error. A block
    job passes one `fetcher` for all its shards, so connections, host pauses and budgets carry
    from shard to shard."""
    cfg, allow = config["fetch"], config["licenses"]["allow"]
    raw_tar, records_path = Path(raw_tar), Path(records_path)
    earlier = reusable(records_path, raw_tar)
    own = fetcher is None  # a fetcher made here is closed here; the block's stays open for its next shard
    fetcher = fetcher or Fetcher(cfg)

    def outcome(row: dict) -> tuple[dict, tuple[str, bytes] | None]:
        if row["key"] in earlier and not row["contract_error"]:
            record, place = earlier[row["key"]]
            verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)
            record = {**record, "license_id": verdict.license_id, "host": url_host(row["url"])}
            if verdict.ok and record["sha256"] in cfg.get("placeholder_sha256", ()):  # a hash listed since that run
                return gone(record, record["sha256"]), None
            if verdict.ok:
                return record, (record["raw_member"], os.pread(old_tar, place[1], place[0])) if place else None
        return fetch_one(row, fetcher, allow)

    # Fetched in key order, so members reach the tar in name order as they arrive (the tar is
    # written as it goes: memory holds the bodies in flight, not the shard); the table keeps
    # the manifest's order.
    rows = manifest.to_dict("records")
    position = {row["key"]: i for i, row in enumerate(rows)}
    rows = sorted(rows, key=lambda row: row["key"])
    records, ahead = [], 2 * cfg["workers"]
    old_tar = os.open(raw_tar, os.O_RDONLY) if earlier else -1
    try:
        with (fetcher if own else contextlib.nullcontext()), ThreadPoolExecutor(max_workers=cfg["workers"]) as pool, \
                TarWriter(raw_tar) as tar:
            for done, (record, member) in enumerate(ordered_results(pool, outcome, rows, ahead), 1):
                if member is not None:
                    record = {**record, "raw_offset": tar.add(*member)[0]}
                records.append(record)
                if done % 1000 == 0:
                    log.info("fetch progress: %d of %d keys", done, len(rows))
    finally:
        if old_tar >= 0:
            os.close(old_tar)
    records.sort(key=lambda record: position[record["key"]])
    records = pd.DataFrame(records, columns=list(blank_record("")))
    records = with_producer(records, "fetch", fetch_params(config))
    write_table(records, records_path)
    counts = records["fetch_status"].value_counts().to_dict() if len(records) else {}
    log.info("fetched shard: %d keys %s, %d kept from an earlier run, %d connections opened", len(records), counts,
             sum(row["key"] in earlier for row in rows), fetcher.connections)
    return records


COLUMNS = [*blank_record(""), "fetch_config_hash", "fetch_version"]


def open_fetcher(config: Config) -> Fetcher:
    """The block's fetcher: the stage's per-block resource (what a model is to the GPU stages),
    passed to `run` as its `model`."""
    return Fetcher(config["fetch"])


def run(files: ShardFiles, cfg: Config, *, model: Fetcher | None = None) -> pd.DataFrame:
    """Fetch one shard, unless its raw tar and fetch table are already current; `model` is the
    block's fetcher when the block job gives one."""
    manifest, records = files.table("manifests"), files.table("fetch")
    if fetch_is_current(manifest, files.raw, records, cfg):
        log.info("shard %s: fetch table and raw tar are current, not fetching again", files.shard)
        return read_table(records)
    return fetch_shard(read_table(manifest), cfg, files.raw, records, fetcher=model)
