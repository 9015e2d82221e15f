"""The fetch stage: licence gate first (nothing non-permissive is downloaded), then the
bytes of every admitted URL, each key ending with one fetch record.

Downloads run in a thread pool with a per-host limit, so one slow or rate-limiting host
neither monopolises the pool nor sees more than `per_host` requests at a time. Each host keeps
a pool of up to `per_host` kept-alive connections (http.client, one per request in flight), so
a host pays the TCP and TLS handshakes once per connection, not once per image; certificates
are verified against the system store or `ca_bundle`, never skipped. Every request has a
connect/read timeout and a total deadline, a size cap checked before and while reading, and a
bounded number of redirects, which our code follows hop by hop. Every new connection, the
first and each redirect target's, resolves its host once, refuses it unless every address is
globally routable (or inside `allow_networks`) and connects to the address it checked, so DNS
cannot answer differently between check and connect. Environment proxies are never used: a
proxy would make the connection, and the check would see the proxy's address.

Only connection errors, timeouts, truncated bodies, 429 and 5xx are retried, after a random
wait (full jitter up to an exponential cap) or the server's Retry-After, when it is not too
long. A 429 or 503 with Retry-After pauses its host for every worker of the shard. A host
listed in `host_budget` gets at most budget / `concurrent_jobs` requests per second from this
job, so all the jobs running at once keep to the budget together."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import ipaddress
import itertools
import logging
import os
import random
import select
import socket
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

from gpic import licenses
from gpic.config import Config, FetchConfig
from gpic.identity import config_hash
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import TarWriter, read_table, stamp, tar_places, write_table

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
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits (RFC 6052)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
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


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """`fetch.allow_networks` as networks; a bad entry stops the fetch naming it (the schema
    only checks its characters)."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value))
        except ValueError as exc:
            raise ValueError(f"config fetch.allow_networks: {value!r} is not a network: {exc}") from None
    return tuple(networks)


def address_allowed(address: str, networks: tuple[Network, ...]) -> bool:
    """True for an address inside `networks` or globally routable; otherwise a manifest or a
    redirect could make the fetcher probe the cluster's own network (private, loopback,
    link-local, shared 100.64/10, multicast, reserved). An IPv4 address written as IPv6
    (::ffff:a.b.c.d, 6to4, NAT64) must pass as IPv4 too."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in network for network in networks):
        return True
    judged = [ip]
    if ip.version == 6:
        judged += [ip.sixtofour] if ip.sixtofour else []
        judged += [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)] if ip in NAT64 else []
    # is_global (Python 3.11) still counts multicast and IPv6 site-local as global
    return all(one.is_global and not one.is_multicast and not (one.version == 6 and one.is_site_local)
               for one in judged)


def resolve(host: str, port: int, networks: tuple[Network, ...]) -> list[tuple]:
    """The host's addresses (getaddrinfo tuples), resolved once; refused when any of them is
    not allowed, as a host cannot choose which of its addresses the connection uses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"dns error: {host}: {exc}", retryable=True) from None
    except UnicodeError as exc:  # a label IDNA cannot encode: asking again will not help
        raise FetchError(f"bad host name: {host}: {exc}") from None
    if not infos:
        raise FetchError(f"dns error: {host}: no address", retryable=True)
    for info in infos:
        if not address_allowed(info[4][0], networks):
            raise FetchError(f"non-public address: {info[4][0]} for {host}")
    return infos


class CheckedConnection(http.client.HTTPConnection):
    """An HTTP connection to an address that passed the check: http.client's `_create_connection`
    (kept replaceable for this) connects to what `resolve` checked, so nothing looks the host
    up again between check and connect."""

    def __init__(self, *args, networks: tuple[Network, ...], **kwargs):
        super().__init__(*args, **kwargs)
        self._networks = networks
        self._create_connection = self._connect_checked

    def _connect_checked(self, address: tuple[str, int], timeout=None, source_address=None) -> socket.socket:
        """socket.create_connection on the checked addresses, in the resolver's order."""
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in resolve(host, port, self._networks):
            sock = socket.socket(family, kind, proto)
            try:
                if isinstance(timeout, int | float):
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"no address for {host}")


class CheckedHTTPSConnection(CheckedConnection, http.client.HTTPSConnection):
    """HTTPS over a checked address; TLS still wraps with server_hostname = the URL's host, so
    SNI and the certificate check use the name, not the address."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Certificate and host name verified, against `ca_bundle` or the system store."""
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ValueError(f"config fetch.ca_bundle: {ca_bundle} is not a file")
    context = ssl.create_default_context(cafile=ca_bundle or None)
    context.set_alpn_protocols(["http/1.1"])
    return context


def dropped(connection: http.client.HTTPConnection) -> bool:
    """True when an idle kept-alive connection can no longer carry a request: closed, or
    readable (the server closed it, or sent something unasked)."""
    sock = connection.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


@dataclass
class Host:
    """What every worker of a Fetcher shares about one host: its request slots, the time before
    which it is paused (a 429/503 with Retry-After) and, under a budget, the earliest time the
    next request may start."""

    slots: threading.BoundedSemaphore
    interval: float  # seconds between requests under this job's share of the budget; 0: no budget
    not_before: float = 0.0
    next_start: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


PAUSE_STATUS = {429, 503}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
DRAIN = 1 << 16  # an error or redirect body up to this size is read, so its connection can be kept


class Fetcher:
    """Downloads for one shard under the `fetch` config; thread-safe. `rng`, `clock` and `sleep`
    drive the retry jitter and the host gates (tests pass seeded or fake ones). Close it (or use
    it as a context manager) to close its kept-alive connections."""

    def __init__(self, cfg: FetchConfig, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.roots = [Path(root).resolve() for root in cfg["file_roots"]]
        self.networks = parse_networks(cfg["allow_networks"])
        self.tls = tls_context(cfg.get("ca_bundle", ""))
        self.rng, self.clock, self.sleep = rng or random.Random(), clock, sleep
        self.budget = {host.lower(): rate / cfg.get("concurrent_jobs", 1)
                       for host, rate in cfg.get("host_budget", {}).items()}
        self._hosts: dict[str, Host] = {}
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self.connections = 0  # opened so far, for tests and the benchmark

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections; the Fetcher can still be used (it opens new ones)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def host(self, name: str) -> Host:
        with self._lock:
            if name not in self._hosts:
                rate = self.budget.get(name)
                self._hosts[name] = Host(threading.BoundedSemaphore(self.cfg["per_host"]), 1 / rate if rate else 0.0)
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
            now = self.clock()
            with host.lock:
                wait = host.not_before - now
            if wait <= 0:
                break
            if wait > self.cfg["max_backoff_s"]:
                raise FetchError(f"host paused: {name} asked for {wait:.0f} s more (Retry-After), longer than "
                                 f"max_backoff_s", retryable=True, again=False, requested=False)
            self.sleep(wait)
            waited += wait
        if host.interval:
            with host.lock:
                start = max(now, host.next_start)
                host.next_start = start + host.interval
            if start > now:
                self.sleep(start - now)
                waited += start - now
        return waited

    def backoff(self, attempt: int, exc: FetchError) -> float:
        """Seconds to wait before retrying after `exc`: the server's Retry-After (already waited
        for by the host's pause after a 429 or 503), else full jitter up to an exponential cap."""
        cfg = self.cfg
        if exc.retry_after is not None:
            if exc.retry_after > cfg["max_backoff_s"]:
                raise FetchError(f"{exc} (Retry-After {exc.retry_after:.0f} s is too long)", exc.http_status, True)
            return 0.0 if exc.http_status in PAUSE_STATUS else exc.retry_after
        return self.rng.uniform(0, min(cfg["max_backoff_s"], cfg["backoff_s"] * 2 ** (attempt - 1)))

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
        key = (scheme, name, port)
        connection = None
        try:
            transfer.begin()
            connection, response = self.request(key, target)
            status = response.status
            if status in REDIRECT_STATUS and (location := response.headers.get("Location")
                                              or response.headers.get("URI")):
                location = quote(urljoin(url, location), encoding="iso-8859-1", safe=string.punctuation)
                scheme_to = urlsplit(location).scheme.lower()
                if scheme_to not in ("http", "https"):
                    raise FetchError(f"redirect to unsupported url scheme: {scheme_to}", status)
                self.release(key, connection, response, transfer, deadline)
                connection = None
                return status, location
            if not 200 <= status < 300:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                if status in PAUSE_STATUS and retry_after is not None:
                    self.pause(name, retry_after)
                self.release(key, connection, response, transfer, deadline)
                connection = None  # pooled or closed by release: not ours to close any more
                raise FetchError(f"http error: {status}", status, status in RETRY_STATUS, retry_after)
            tags = opt_out_tags(response.headers.get_all("X-Robots-Tag") or [], cfg["opt_out_directives"])
            if tags:
                raise OptOut(f"opt-out: X-Robots-Tag {', '.join(sorted(tags))}")
            data = self.read_body(response, response.headers.get("Content-Length"), deadline, transfer)
            self.keep(key, connection, response)
            return Fetched(data, status)
        except BaseException:
            if connection is not None:
                connection.close()
            raise

    def request(self, key: tuple[str, str, int], target: str) -> tuple[http.client.HTTPConnection,
                                                                       http.client.HTTPResponse]:
        """Send the GET on an idle connection of the pool, or a new one, and read the response
        head. A kept-alive connection the server closed meanwhile is replaced once, silently."""
        headers = {"User-Agent": self.cfg["user_agent"], "Accept-Encoding": "identity"}
        connection, reused = self.connection(key)
        while True:
            try:
                connection.request("GET", target, headers=headers)
                return connection, connection.getresponse()
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError,
                    http.client.RemoteDisconnected) as exc:
                connection.close()
                if not reused:
                    raise self.failure(exc, key[1]) from None
                connection, reused = self.open(key), False
            except BaseException as exc:
                connection.close()
                raise self.failure(exc, key[1]) from None

    def connection(self, key: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to scheme://host:port that still works (most recently used
        first), or a new one; and whether it was reused."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None:
                return self.open(key), False
            if not dropped(connection):
                return connection, True
            connection.close()

    def open(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        """A new connection; it connects, through the address check, when the request is sent."""
        scheme, name, port = key
        with self._lock:
            self.connections += 1
        if scheme == "https":
            return CheckedHTTPSConnection(name, port, timeout=self.cfg["timeout_s"], context=self.tls,
                                          networks=self.networks)
        return CheckedConnection(name, port, timeout=self.cfg["timeout_s"], networks=self.networks)

    def keep(self, key: tuple[str, str, int], connection: http.client.HTTPConnection,
             response: http.client.HTTPResponse) -> None:
        """Back to the pool when the response was read to its end and the server keeps the
        connection open; at most per_host idle connections per host."""
        # read1 leaves a Content-Length response open at its end; http.client needs it closed
        # (which keeps the socket) before the connection's next request
        if not (response.isclosed() or response.length == 0) or response.will_close or connection.sock is None:
            connection.close()
            return
        response.close()
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.cfg["per_host"]:
                idle.append(connection)
                return
        connection.close()

    def release(self, key: tuple[str, str, int], connection: http.client.HTTPConnection,
                response: http.client.HTTPResponse, transfer: Transfer, deadline: float) -> None:
        """Read a small error or redirect body to its end, within the deadline, to keep the
        connection; close it otherwise."""
        try:
            size = 0
            while size <= DRAIN and time.monotonic() <= deadline and (chunk := response.read1(CHUNK)):
                size += len(chunk)
                transfer.wire_bytes += len(chunk)
        except (OSError, http.client.HTTPException):
            connection.close()
            return
        self.keep(key, connection, response)

    def failure(self, exc: BaseException, name: str) -> BaseException:
        """An error from connecting, TLS or reading the head, as the FetchError it means."""
        cfg = self.cfg
        if isinstance(exc, FetchError | OptOut):
            return exc
        if isinstance(exc, ssl.SSLCertVerificationError):
            # not retried now (it will not change within seconds); retryable, so a rerun with a
            # fixed ca_bundle or a renewed certificate fetches the key
            return FetchError(f"certificate verify failed: {exc.verify_message} ({name})", retryable=True,
                              again=False)
        if isinstance(exc, TimeoutError):
            return FetchError(f"timeout: no data for {cfg['timeout_s']} s", retryable=True)
        if isinstance(exc, http.client.InvalidURL):
            return FetchError(f"bad url: {exc}")
        if isinstance(exc, UnicodeError):
            return FetchError(f"bad host name: {name}: {exc}")
        if isinstance(exc, ssl.SSLError):
            return FetchError(f"tls error: {exc.reason or exc}", retryable=True)
        if isinstance(exc, OSError | http.client.HTTPException):
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
        except http.client.IncompleteRead as exc:
            raise FetchError(f"truncated body: {size + len(exc.partial)} bytes, {exc.expected} missing",
                             retryable=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self.failure(exc, "") from None
        if content_length and content_length.isdigit() and size < int(content_length):
            # http.client returns a short body at EOF without complaint
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
    records = stamp(records, "fetch", fetch_params(config))
    write_table(records, records_path)
    counts = records["fetch_status"].value_counts().to_dict() if len(records) else {}
    log.info("fetched shard: %d keys %s, %d kept from an earlier run, %d connections opened", len(records), counts,
             sum(row["key"] in earlier for row in rows), fetcher.connections)
    return records


COLUMNS = [*blank_record(""), "fetch_config_hash", "fetch_version"]


def load_model(config: Config) -> Fetcher:
    """The block's fetcher (the stage's per-block resource, as a model is for the GPU stages)."""
    return Fetcher(config["fetch"])


def run(files: ShardFiles, cfg: Config, *, model: Fetcher | None = None) -> pd.DataFrame:
    """Fetch one shard, unless its raw tar and fetch table are already current; `model` is the
    block's fetcher when the block job gives one."""
    manifest, records = files.table("manifests"), files.table("fetch")
    if fetch_is_current(manifest, files.raw, records, cfg):
        log.info("shard %s: fetch table and raw tar are current, not fetching again", files.shard)
        return read_table(records)
    return fetch_shard(read_table(manifest), cfg, files.raw, records, fetcher=model)
