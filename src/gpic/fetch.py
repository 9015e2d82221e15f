"""The fetch stage: licence gate first (nothing non-permissive is downloaded), then the
bytes of every admitted URL, each key ending with one fetch record."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd

from gpic import licenses
from gpic.store import stamp, write_table, write_tar

log = logging.getLogger(__name__)

MAGIC = [
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
]
OPT_OUT = {"noai", "noimageai"}
RETRY_STATUS = {429, 500, 502, 503, 504}


def sniff(data: bytes) -> tuple[str, str]:
    """Content type and file extension from magic bytes, never from a server's header."""
    for magic, mime, ext in MAGIC:
        if data.startswith(magic):
            return mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return "application/octet-stream", "bin"


class FetchError(Exception):
    def __init__(self, message: str, http_status: int = 0, retryable: bool = False):
        super().__init__(message)
        self.http_status = http_status
        self.retryable = retryable


class OptOut(Exception):
    """The source asked not to be used for AI training (X-Robots-Tag)."""


@dataclass
class Fetched:
    data: bytes
    http_status: int


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 5


def _read_limited(stream, max_bytes: int) -> bytes:
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError(f"body too large: over {max_bytes} bytes")
    return data


def _check_host(host: str, allow_private: bool) -> None:
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise FetchError(f"dns error: {host}: {exc}", retryable=True) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise FetchError(f"non-public address: {address} for {host}")


def fetch_file(url: str, roots: list[Path], max_bytes: int) -> Fetched:
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise FetchError(f"file outside file_roots: {path}")
    if not path.is_file():
        raise FetchError(f"no such file: {path}")
    with path.open("rb") as stream:
        return Fetched(_read_limited(stream, max_bytes), 0)


def fetch_http(url: str, cfg: dict) -> Fetched:
    _check_host(urlsplit(url).hostname or "", cfg["allow_private_addresses"])
    opener = urllib.request.build_opener(_LimitedRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": cfg["user_agent"]})
    try:
        with opener.open(request, timeout=cfg["timeout_s"]) as response:
            tags = {t.strip().lower() for t in response.headers.get("X-Robots-Tag", "").replace(";", ",").split(",")}
            if tags & OPT_OUT:
                raise OptOut(f"opt-out: X-Robots-Tag {', '.join(sorted(tags & OPT_OUT))}")
            return Fetched(_read_limited(response, cfg["max_bytes"]), response.status)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"http error: {exc.code}", exc.code, exc.code in RETRY_STATUS) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, socket.timeout) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"connection error: {reason}", retryable=True) from None


def fetch_url(url: str, cfg: dict, roots: list[Path]) -> tuple[Fetched, int]:
    """Fetch with retries (connection errors, 429 and 5xx only); return the result and attempts."""
    scheme = urlsplit(url).scheme.lower()
    for attempt in range(1, cfg["retries"] + 2):
        try:
            if scheme == "file":
                return fetch_file(url, roots, cfg["max_bytes"]), attempt
            if scheme in ("http", "https"):
                return fetch_http(url, cfg), attempt
            raise FetchError(f"unsupported url scheme: {scheme}")
        except FetchError as exc:
            if not exc.retryable or attempt > cfg["retries"]:
                exc.attempts = attempt
                raise
            time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def blank_record(key: str) -> dict:
    return {"key": key, "fetch_status": "", "fetch_reason": "", "http_status": 0, "bytes": 0, "sha256": "",
            "content_type": "", "fetched_at": "", "raw_member": "", "license_id": "", "attempts": 0}


def fetch_one(row: dict, cfg: dict, allow: list[str], roots: list[Path]) -> tuple[dict, tuple[str, bytes] | None]:
    """One key's fetch record and, when fetched, its raw tar member."""
    record = blank_record(row["key"])
    if row["contract_error"]:
        return {**record, "fetch_status": "skipped", "fetch_reason": row["contract_error"]}, None
    verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)
    record["license_id"] = verdict.license_id
    if not verdict.ok:
        return {**record, "fetch_status": "dropped", "fetch_reason": verdict.reason}, None
    try:
        fetched, attempts = fetch_url(row["url"], cfg, roots)
    except OptOut as exc:
        return {**record, "fetch_status": "dropped", "fetch_reason": str(exc), "attempts": 1}, None
    except FetchError as exc:
        return {**record, "fetch_status": "failed", "fetch_reason": str(exc), "http_status": exc.http_status,
                "attempts": getattr(exc, "attempts", 1)}, None
    mime, ext = sniff(fetched.data)
    member = f"{row['key']}.{ext}"
    record.update(fetch_status="ok", http_status=fetched.http_status, bytes=len(fetched.data),
                  sha256=hashlib.sha256(fetched.data).hexdigest(), content_type=mime, attempts=attempts,
                  fetched_at=datetime.now(UTC).isoformat(timespec="seconds"), raw_member=member)
    return record, (member, fetched.data)


def fetch_shard(manifest: pd.DataFrame, config: dict, raw_tar: str | Path, records_path: str | Path) -> pd.DataFrame:
    """Fetch every key of a shard manifest into one raw tar plus one record per key."""
    cfg, allow = config["fetch"], config["licenses"]["allow"]
    roots = [Path(root).resolve() for root in cfg["file_roots"]]
    rows = manifest.to_dict("records")
    with ThreadPoolExecutor(max_workers=cfg["workers"]) as pool:
        results = list(pool.map(lambda row: fetch_one(row, cfg, allow, roots), rows))
    records = pd.DataFrame([r for r, _ in results], columns=list(blank_record("")))
    write_tar(raw_tar, [m for _, m in results if m is not None])
    records = stamp(records, "fetch", {"fetch": cfg, "licenses": config["licenses"]})
    write_table(records, records_path)
    counts = records["fetch_status"].value_counts().to_dict() if len(records) else {}
    log.info("fetched shard: %d keys %s", len(records), counts)
    return records
