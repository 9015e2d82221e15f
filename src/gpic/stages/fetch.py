"""The fetch stage: licence gate first (nothing non-permissive is downloaded), then the
bytes of every admitted URL, each key ending with one fetch record.

Downloads run in a thread pool with a per-host limit, so one slow or rate-limiting host
neither monopolises the pool nor sees more than `per_host` requests at a time. Every
request has a connect/read timeout and a total deadline, a size cap checked before and while
reading, and a bounded number of redirects. Every connection, the first and each redirect's,
resolves its host once, refuses it unless every address is globally routable (or inside
`allow_networks`) and connects to the address it checked, so DNS cannot answer differently
between check and connect. Environment proxies are ignored: a proxy would make the connection,
and the check would see the proxy's address. Only connection errors, timeouts, truncated
bodies, 429 and 5xx are retried, with exponential backoff (or the server's Retry-After, when it
is not too long)."""

from __future__ import annotations

import email.utils
import functools
import hashlib
import http.client
import ipaddress
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pandas as pd

from gpic import licenses
from gpic.config import Config, FetchConfig
from gpic.identity import config_hash
from gpic.layout import ShardFiles
from gpic.stages import STAGES
from gpic.store import read_table, read_tar, stamp, write_table, write_tar

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
    def __init__(self, message: str, http_status: int = 0, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1


class OptOut(Exception):
    """The source asked not to be used for AI training (X-Robots-Tag)."""


@dataclass
class Fetched:
    data: bytes
    http_status: int


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


class Fetcher:
    """Downloads for one shard under the `fetch` config; thread-safe."""

    def __init__(self, cfg: FetchConfig):
        self.cfg = cfg
        self.roots = [Path(root).resolve() for root in cfg["file_roots"]]
        self._host_slots: dict[str, threading.BoundedSemaphore] = defaultdict(
            lambda: threading.BoundedSemaphore(cfg["per_host"]))
        self._lock = threading.Lock()
        networks = parse_networks(cfg["allow_networks"])

        class Redirects(urllib.request.HTTPRedirectHandler):
            """Redirects to http(s) only; their address is checked when connecting."""

            max_redirections = cfg["max_redirects"]

            def http_error_302(self, req, fp, code, msg, headers):
                target = urlsplit(urljoin(req.full_url, headers.get("Location") or headers.get("URI") or ""))
                if target.scheme.lower() not in ("http", "https"):
                    raise FetchError(f"redirect to unsupported url scheme: {target.scheme}", code)
                return super().http_error_302(req, fp, code, msg, headers)

            http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

        class CheckedHTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(functools.partial(CheckedConnection, networks=networks), req)

        class CheckedHTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(functools.partial(CheckedHTTPSConnection, networks=networks), req)

        # ProxyHandler({}): no proxy from the environment, which would take the connection past the check
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Redirects, CheckedHTTP,
                                                   CheckedHTTPS)

    def host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._host_slots[host]

    def fetch(self, url: str) -> tuple[Fetched, int]:
        """Fetch with retries (connection errors, timeouts, 429 and 5xx only); return the
        result and the number of attempts. Raises FetchError (with .attempts) or OptOut."""
        scheme = urlsplit(url).scheme.lower()
        retries = self.cfg["retries"]
        for attempt in range(1, retries + 2):
            try:
                if scheme == "file":
                    return self.fetch_file(url), attempt
                if scheme in ("http", "https"):
                    with self.host_slot(urlsplit(url).netloc.lower()):
                        return self.fetch_http(url), attempt
                raise FetchError(f"unsupported url scheme: {scheme}")
            except FetchError as exc:
                exc.attempts = attempt
                if not exc.retryable or attempt > retries:
                    raise
                wait = min(self.cfg["max_backoff_s"], self.cfg["backoff_s"] * 2 ** (attempt - 1))
                if exc.retry_after is not None:
                    if exc.retry_after > self.cfg["max_backoff_s"]:
                        raise FetchError(f"{exc} (Retry-After {exc.retry_after:.0f} s is too long)", exc.http_status,
                                         True) from None
                    wait = exc.retry_after
                time.sleep(wait)
        raise AssertionError("unreachable")

    def fetch_file(self, url: str) -> Fetched:
        path = Path(unquote(urlsplit(url).path)).resolve()
        if not any(path.is_relative_to(root) for root in self.roots):
            raise FetchError(f"file outside file_roots: {path}")
        if not path.is_file():
            raise FetchError(f"no such file: {path}")
        with path.open("rb") as stream:
            return Fetched(self.read_body(stream, None, time.monotonic() + self.cfg["deadline_s"]), 0)

    def fetch_http(self, url: str) -> Fetched:
        cfg = self.cfg
        request = urllib.request.Request(url, headers={"User-Agent": cfg["user_agent"]})
        deadline = time.monotonic() + cfg["deadline_s"]
        try:
            with self._opener.open(request, timeout=cfg["timeout_s"]) as response:
                tags = opt_out_tags(response.headers.get_all("X-Robots-Tag") or [], cfg["opt_out_directives"])
                if tags:
                    raise OptOut(f"opt-out: X-Robots-Tag {', '.join(sorted(tags))}")
                return Fetched(self.read_body(response, response.headers.get("Content-Length"), deadline),
                               response.status)
        except urllib.error.HTTPError as exc:
            if str(exc.msg).startswith(urllib.request.HTTPRedirectHandler.inf_msg):
                raise FetchError(f"too many redirects (over {cfg['max_redirects']})", exc.code) from None
            raise FetchError(f"http error: {exc.code}", exc.code, exc.code in RETRY_STATUS,
                             retry_after_seconds(exc.headers.get("Retry-After"))) from None
        except http.client.IncompleteRead as exc:
            raise FetchError(f"truncated body: {len(exc.partial)} bytes, {exc.expected} missing",
                             retryable=True) from None
        except TimeoutError:
            raise FetchError(f"timeout: no data for {cfg['timeout_s']} s", retryable=True) from None
        except urllib.error.URLError as exc:
            raise FetchError(f"connection error: {exc.reason}", retryable=True) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise FetchError(f"connection error: {type(exc).__name__}: {exc}", retryable=True) from None

    def read_body(self, stream, content_length: str | None, deadline: float) -> bytes:
        """The body in chunks, failing as soon as it is known to be too large or too slow."""
        limit = self.cfg["max_bytes"]
        if content_length and content_length.isdigit() and int(content_length) > limit:
            raise FetchError(f"body too large: {content_length} bytes announced, limit {limit}")
        chunks, size = [], 0
        while chunk := stream.read1(CHUNK):  # what has arrived, so the deadline is checked often
            size += len(chunk)
            if size > limit:
                raise FetchError(f"body too large: over {limit} bytes")
            if time.monotonic() > deadline:
                raise FetchError(f"timeout: body not complete after {self.cfg['deadline_s']} s", retryable=True)
            chunks.append(chunk)
        if content_length and content_length.isdigit() and size < int(content_length):
            # http.client returns a short body at EOF without complaint
            raise FetchError(f"truncated body: {size} of {content_length} bytes", retryable=True)
        return b"".join(chunks)


def blank_record(key: str) -> dict:
    """A fetch record before the attempt; its keys are the stage's columns."""
    return {"key": key, "fetch_status": "", "fetch_reason": "", "retryable": False, "http_status": 0, "bytes": 0,
            "sha256": "", "content_type": "", "fetched_at": "", "raw_member": "", "license_id": "", "attempts": 0}


def gone(record: dict, digest: str) -> dict:
    """A body the source serves in place of a removed image (Flickr answers a deleted photo with
    200 and a stand-in picture): the key fails for good, and the stand-in is not stored."""
    return {**record, "fetch_status": "failed", "retryable": False, "bytes": 0, "sha256": "", "content_type": "",
            "raw_member": "", "fetch_reason": f"gone: the source served its placeholder for a removed image "
                                              f"(sha256 {digest})"}


def fetch_one(row: dict, fetcher: Fetcher, allow: list[str]) -> tuple[dict, tuple[str, bytes] | None]:
    """One key's fetch record and, when fetched, its raw tar member."""
    record = blank_record(row["key"])
    if row["contract_error"]:
        return {**record, "fetch_status": "skipped", "fetch_reason": row["contract_error"]}, None
    verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)
    record["license_id"] = verdict.license_id
    if not verdict.ok:
        return {**record, "fetch_status": "dropped", "fetch_reason": verdict.reason}, None
    try:
        fetched, attempts = fetcher.fetch(row["url"])
    except OptOut as exc:
        return {**record, "fetch_status": "dropped", "fetch_reason": str(exc), "attempts": 1}, None
    except FetchError as exc:
        return {**record, "fetch_status": "failed", "fetch_reason": str(exc), "retryable": exc.retryable,
                "http_status": exc.http_status, "attempts": exc.attempts}, None
    digest = hashlib.sha256(fetched.data).hexdigest()
    if digest in fetcher.cfg.get("placeholder_sha256", ()):
        return gone({**record, "http_status": fetched.http_status, "attempts": attempts}, digest), None
    mime, ext = sniff(fetched.data)
    member = f"{row['key']}.{ext}"
    record.update(fetch_status="ok", http_status=fetched.http_status, bytes=len(fetched.data),
                  sha256=digest, content_type=mime, attempts=attempts,
                  fetched_at=datetime.now(UTC).isoformat(timespec="seconds"), raw_member=member)
    return record, (member, fetched.data)


def reusable(records_path: Path, raw_tar: Path) -> dict[str, tuple[dict, tuple[str, bytes] | None]]:
    """Outcomes of an earlier run of this shard that a rerun keeps: every download attempted
    that did not fail with a retryable error (with its bytes when it succeeded). Licence
    decisions are not kept: they are cheap and follow the current allowlist."""
    if not (records_path.exists() and raw_tar.exists()):
        return {}
    previous = read_table(records_path)
    if "retryable" not in previous.columns:
        return {}
    members = read_tar(raw_tar)
    kept = {}
    for record in previous[list(blank_record(""))].to_dict("records"):
        if record["attempts"] == 0 or (record["fetch_status"] == "failed" and record["retryable"]):
            continue
        if record["fetch_status"] == "ok":
            if record["raw_member"] not in members:
                continue
            kept[record["key"]] = (record, (record["raw_member"], members[record["raw_member"]]))
        else:
            kept[record["key"]] = (record, None)
    return kept


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


def fetch_shard(manifest: pd.DataFrame, config: Config, raw_tar: str | Path, records_path: str | Path) -> pd.DataFrame:
    """Fetch every key of a shard manifest into one raw tar plus one record per key. A rerun
    downloads again only the keys whose earlier attempt failed with a retryable error."""
    cfg, allow = config["fetch"], config["licenses"]["allow"]
    raw_tar, records_path = Path(raw_tar), Path(records_path)
    earlier = reusable(records_path, raw_tar)
    fetcher = Fetcher(cfg)

    def outcome(row: dict) -> tuple[dict, tuple[str, bytes] | None]:
        if row["key"] in earlier and not row["contract_error"]:
            record, member = earlier[row["key"]]
            verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)
            if verdict.ok and record["sha256"] in cfg.get("placeholder_sha256", ()):  # a hash listed since that run
                return gone({**record, "license_id": verdict.license_id}, record["sha256"]), None
            if verdict.ok:
                return {**record, "license_id": verdict.license_id}, member
        return fetch_one(row, fetcher, allow)

    rows = manifest.to_dict("records")
    results = []
    with ThreadPoolExecutor(max_workers=cfg["workers"]) as pool:
        for done, result in enumerate(pool.map(outcome, rows), 1):
            results.append(result)
            if done % 1000 == 0:
                log.info("fetch progress: %d of %d keys", done, len(rows))
    records = pd.DataFrame([r for r, _ in results], columns=list(blank_record("")))
    write_tar(raw_tar, [m for _, m in results if m is not None])
    records = stamp(records, "fetch", fetch_params(config))
    write_table(records, records_path)
    counts = records["fetch_status"].value_counts().to_dict() if len(records) else {}
    log.info("fetched shard: %d keys %s, %d kept from an earlier run", len(records), counts,
             sum(row["key"] in earlier for row in rows))
    return records


COLUMNS = [*blank_record(""), "fetch_config_hash", "fetch_version"]


def run(files: ShardFiles, cfg: Config, *, model=None) -> pd.DataFrame:
    """Fetch one shard, unless its raw tar and fetch table are already current."""
    manifest, records = files.table("manifests"), files.table("fetch")
    if fetch_is_current(manifest, files.raw, records, cfg):
        log.info("shard %s: fetch table and raw tar are current, not fetching again", files.shard)
        return read_table(records)
    return fetch_shard(read_table(manifest), cfg, files.raw, records)
