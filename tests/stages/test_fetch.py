"""Partition and fetch: manifests in, one record per key out, whatever the rows contain."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import math
import random
import socket
import ssl
import threading
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpic.bench.fetch import make_certificates
from gpic.cli import app
from gpic.config import ConfigError, validate_config
from gpic.http import CheckedHTTPSConnection, Refused, parse_networks, resolve
from gpic.stages.fetch import Fetcher, FetchError, fetch_shard, sniff
from gpic.stages.partition import partition
from gpic.store import read_table, read_tar, write_tar

from helpers import jpeg_bytes

GOOD = dict(license="CC BY 4.0", license_url="", attribution="Jane Doe", title="t")
LOOPBACK = ["127.0.0.0/8"]


def write_manifests(tmp_path, image_path):
    url = image_path.as_uri()
    csv_rows = [
        dict(source="wikimedia", source_id="A", url=url, **GOOD),
        dict(source="wikimedia", source_id="B", url="", **GOOD),
        dict(source="wikimedia", source_id="C", url="ftp://x/y.jpg", **GOOD),
        dict(source="wikimedia", source_id="", url=url, **GOOD),
        dict(source="myspace", source_id="D", url=url, **GOOD),
        dict(source="wikimedia", source_id="A", url=url, **GOOD),  # repeated key
    ]
    pd.DataFrame(csv_rows).to_csv(tmp_path / "a.csv", index=False)
    jsonl = [
        dict(source="flickr", source_id="1", url=url, license="Attribution-NonCommercial License",
             license_url="", attribution="x", title="nc", camera="Nikon"),
        dict(source="flickr", source_id="2", url=url, license="Attribution License", license_url="",
             attribution="", title="no attribution"),
        dict(source="flickr", source_id="3", url=(tmp_path / "missing.jpg").as_uri(), **GOOD),
        dict(source="flickr", source_id="4", url=url, license="Public Domain Mark", license_url="",
             attribution="", title="ok", width="abc"),
    ]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jsonl))
    return [str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")]


def test_partition_keeps_every_row_with_a_reason(tmp_path, base_config, photos):
    image = tmp_path / "img.jpg"
    image.write_bytes(jpeg_bytes(photos["coffee"]))
    summary = partition(write_manifests(tmp_path, image), base_config, tmp_path / "manifests")
    assert summary["rows"] == 10 and summary["keys"] == 9 and summary["repeated_keys"] == 1
    rows = pd.concat([read_table(tmp_path / "manifests" / f"{s:05d}.parquet") for s in range(4)])
    assert len(rows) == 9 and sum(summary["per_shard"].values()) == 9
    errors = dict(zip(rows["source_id"] + "@" + rows["source"], rows["contract_error"]))
    assert errors["B@wikimedia"] == "manifest empty url"
    assert errors["C@wikimedia"] == "manifest unsupported url scheme: ftp"
    assert errors["@wikimedia"] == "manifest empty source_id"
    assert errors["D@myspace"] == "manifest source not allowed: myspace"
    assert errors["4@flickr"].startswith("manifest bad width")
    assert errors["A@wikimedia"] == ""
    assert json.loads(rows.set_index("source_id").loc["1", "extra"]) == {"camera": "Nikon"}
    for shard in range(4):  # every key sits in the shard its key hashes to
        part = read_table(tmp_path / "manifests" / f"{shard:05d}.parquet")
        assert (part["shard"] == shard).all()


def test_fetch_records_every_key(tmp_path, base_config, photos):
    image = tmp_path / "img.jpg"
    image.write_bytes(jpeg_bytes(photos["coffee"]))
    partition(write_manifests(tmp_path, image), base_config, tmp_path / "manifests")
    manifest = pd.concat([read_table(tmp_path / "manifests" / f"{s:05d}.parquet") for s in range(4)])
    base_config["fetch"]["file_roots"] = [str(tmp_path)]
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "fetch.parquet")
    assert len(records) == len(manifest)
    by_id = records.assign(sid=manifest["source_id"].to_numpy() + "@" + manifest["source"].to_numpy()).set_index("sid")
    assert by_id.loc["A@wikimedia", "fetch_status"] == "ok"
    assert by_id.loc["A@wikimedia", "content_type"] == "image/jpeg"
    assert by_id.loc["1@flickr", "fetch_status"] == "dropped"
    assert by_id.loc["1@flickr", "fetch_reason"].startswith("licence not allowed: CC-BY-NC-2.0")
    assert by_id.loc["2@flickr", "fetch_reason"].startswith("licence attribution missing")
    assert by_id.loc["3@flickr", "fetch_status"] == "failed"
    assert by_id.loc["3@flickr", "fetch_reason"].startswith("no such file")
    assert by_id.loc["B@wikimedia", "fetch_status"] == "skipped"
    raw = read_tar(tmp_path / "raw.tar")
    assert set(raw) == set(records.loc[records["fetch_status"] == "ok", "raw_member"])
    assert all(raw[m] == image.read_bytes() for m in raw)


def test_file_urls_outside_roots_are_refused(tmp_path, base_config, photos):
    image = tmp_path / "img.jpg"
    image.write_bytes(jpeg_bytes(photos["coffee"]))
    partition(write_manifests(tmp_path, image), base_config, tmp_path / "manifests")
    manifest = pd.concat([read_table(tmp_path / "manifests" / f"{s:05d}.parquet") for s in range(4)])
    base_config["fetch"]["file_roots"] = [str(tmp_path / "elsewhere")]
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "fetch.parquet")
    ok_before = records[records["fetch_reason"].str.startswith("file outside file_roots")]
    assert len(ok_before) >= 1 and (records["fetch_status"] != "ok").all()


class FaultServer(http.server.BaseHTTPRequestHandler):
    """Serves one fault per path; `hits` counts requests per path, `arrivals` their times
    (time.monotonic), `busy` the most requests in flight at once, `connections` the TCP
    connections accepted."""

    protocol_version = "HTTP/1.1"
    image = b""
    hits: dict[str, int] = {}
    arrivals: dict[str, list[float]] = {}
    in_flight = busy = connections = 0
    lock = threading.Lock()
    healed = False  # /down.jpg answers 503 until the test heals it
    elsewhere = ""  # where /elsewhere redirects

    def do_GET(self):  # noqa: N802 (http.server's naming)
        cls = FaultServer
        with cls.lock:
            cls.hits[self.path] = hit = cls.hits.get(self.path, 0) + 1
            cls.arrivals.setdefault(self.path, []).append(time.monotonic())
            cls.in_flight += 1
            cls.busy = max(cls.busy, cls.in_flight)
        try:
            path = self.path
            if path.startswith("/wait-"):  # /wait-300/limited.jpg: /limited.jpg, answered 0.3 s late
                wait, path = path.removeprefix("/wait-").split("/", 1)
                time.sleep(int(wait) / 1000)
                path = "/" + path
            self.serve(path, hit)
        finally:
            with cls.lock:
                cls.in_flight -= 1

    def serve(self, path, hit):
        if path.startswith("/ok") or (path == "/flaky.jpg" and hit > 1) or (path == "/slow-ok.jpg"):
            if path == "/slow-ok.jpg":
                time.sleep(0.2)
            self._send(200, self.image)
        elif path == "/flaky.jpg":
            self._send(500, b"busy")
        elif path.startswith("/closing"):  # kept alive as far as the client can tell, then closed
            self._send(200, self.image)
            self.close_connection = True
        elif path == "/limited.jpg":
            self._send(429, b"slow down", {"Retry-After": "1"}) if hit == 1 else self._send(200, self.image)
        elif path == "/limited-long.jpg":
            self._send(429, b"slow down", {"Retry-After": "3600"})
        elif path == "/down.jpg":
            self._send(200, self.image) if FaultServer.healed else self._send(503, b"down")
        elif path == "/noai.jpg":
            self._send(200, self.image, {"X-Robots-Tag": "googlebot: noimageai, noarchive"})
        elif path == "/noai-second-line.jpg":  # the opt-out is on the second header line only
            self._send(200, self.image, [("X-Robots-Tag", "noarchive"), ("X-Robots-Tag", "otherbot: noai")])
        elif path == "/noindex.jpg":
            self._send(200, self.image, {"X-Robots-Tag": "noindex"})
        elif path == "/html.jpg":
            self._send(200, b"<!DOCTYPE html><html>not an image</html>", {"Content-Type": "image/jpeg"})
        elif path == "/stall.jpg":  # headers, half the body, then nothing past the read timeout
            self._send_head(200, len(self.image))
            self.wfile.write(self.image[:1000])
            self.wfile.flush()
            time.sleep(1.5)
        elif path == "/trickle.jpg":  # a byte at a time, each within the read timeout
            self._send_head(200, 400)
            for _ in range(400):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.01)
        elif path == "/truncated.jpg":
            self._send_head(200, len(self.image))
            self.wfile.write(self.image[: len(self.image) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif path == "/huge.jpg":
            self._send(200, self.image + bytes(200_000))
        elif path == "/huge-chunked.jpg":  # no Content-Length: the cap must hold while reading
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(self.image + bytes(200_000))
            self.close_connection = True
        elif path.startswith("/loop"):
            self._send(302, b"", {"Location": "/loop-again" if path == "/loop" else "/loop"})
        elif path == "/to-file":
            self._send(302, b"", {"Location": "file:///etc/passwd"})
        elif path == "/moved":
            self._send(301, b"", {"Location": "/ok-moved.jpg"})
        elif path == "/elsewhere":
            self._send(302, b"", {"Location": FaultServer.elsewhere})
        else:
            self._send(404, b"missing")

    def _send_head(self, code, length, headers=None):
        self.send_response(code)
        for name, value in headers.items() if isinstance(headers, dict) else headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, code, body, headers=None):
        self._send_head(code, len(body), headers)
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    """Counts the connections it accepts (on the handler class) and, given a TLS context,
    speaks HTTPS (the handshake happens in the handler's thread, on its first read)."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self):
        sock, address = super().get_request()
        with FaultServer.lock:
            self.RequestHandlerClass.connections += 1
        if self.tls:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address):
        pass  # clients that refuse the certificate or hang up mid-body


@contextlib.contextmanager
def serving(address, handler, tls: ssl.SSLContext | None = None):
    """A threaded HTTP(S) server on `address`, port chosen by the system; yields its base URL."""
    httpd = Server((address, 0), handler)
    httpd.tls = tls
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://{address}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A CA made for the test run and a certificate it signed for the loopback hosts the tests use."""
    return make_certificates(tmp_path_factory.mktemp("tls"), ("127.0.0.1", "127.0.0.2", "127.0.0.3", "localhost",
                                                              "rebind.test"))


def server_context(certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert, certificates.key)
    return context


@pytest.fixture(params=["http", "https"])
def tls(request, certificates, base_config):
    """Every test of a server runs over HTTP and over HTTPS; over HTTPS the fetch config trusts
    the test CA (fetch.ca_bundle) and nothing else."""
    if request.param == "http":
        return None
    base_config["fetch"]["ca_bundle"] = str(certificates.ca)
    return server_context(certificates)


@pytest.fixture
def server(photos, tls):
    FaultServer.image = jpeg_bytes(photos["astronaut"])
    FaultServer.hits, FaultServer.arrivals, FaultServer.healed, FaultServer.elsewhere = {}, {}, False, ""
    FaultServer.busy = FaultServer.connections = 0
    with serving("127.0.0.1", FaultServer, tls) as base:
        yield base


@pytest.fixture
def other(server, tls):
    """The fault server on a second host (127.0.0.3), sharing the first one's counters."""
    with serving("127.0.0.3", FaultServer, tls) as base:
        yield base


class Witness(http.server.BaseHTTPRequestHandler):
    """A second loopback server (127.0.0.2) that must never be reached; `requests` lists what it got."""

    requests: list[str] = []
    connections = 0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        Witness.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def witness(tls):
    Witness.requests = []
    with serving("127.0.0.2", Witness, tls) as base:
        yield base


def http_manifest(base: str, paths: list[str]) -> pd.DataFrame:
    rows = [dict(key=f"{i:020x}", url=base + p, contract_error="", **GOOD) for i, p in enumerate(paths)]
    return pd.DataFrame(rows)


FAULTS = {  # path -> (status, reason prefix, retryable, attempts); /limited-long.jpg is asked of another host
    "/ok.jpg": ("ok", "", False, 1),
    "/moved": ("ok", "", False, 1),
    "/flaky.jpg": ("ok", "", False, 2),  # 500, then 200
    "/limited.jpg": ("ok", "", False, 2),  # 429 with Retry-After: 1, then 200
    "/limited-long.jpg": ("failed", "http error: 429 (Retry-After 3600 s is too long)", True, 1),
    "/gone.jpg": ("failed", "http error: 404", False, 1),
    "/down.jpg": ("failed", "http error: 503", True, 3),
    "/noai.jpg": ("dropped", "opt-out: X-Robots-Tag noimageai", False, 1),
    "/html.jpg": ("ok", "", False, 1),  # fetched: the filter drops it as not an image
    "/stall.jpg": ("failed", "timeout: no data for 0.5 s", True, 3),
    "/trickle.jpg": ("failed", "timeout: body not complete after 1.0 s", True, 3),
    "/truncated.jpg": ("failed", "truncated body", True, 3),
    "/huge.jpg": ("failed", "body too large: ", False, 1),
    "/huge-chunked.jpg": ("failed", "body too large: over 150000 bytes", False, 1),
    "/loop": ("failed", "too many redirects (over 3)", False, 1),
    "/to-file": ("failed", "redirect to unsupported url scheme: file", False, 1),
}


def test_every_http_fault_ends_in_its_recorded_state_in_bounded_time(tmp_path, base_config, server, other):
    """Over HTTP and HTTPS. The 429 with Retry-After 3600 comes from a second host, as it
    pauses its host for the rest of the shard (test_a_long_retry_after_fails_the_hosts_other_keys...)."""
    manifest = http_manifest(server, list(FAULTS))
    manifest["url"] = [other + p if p == "/limited-long.jpg" else u for p, u in zip(FAULTS, manifest["url"])]
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=2, timeout_s=0.5, deadline_s=1.0,
                                backoff_s=0.05, max_backoff_s=2, max_bytes=150_000, max_redirects=3, workers=8)
    started = time.monotonic()
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert time.monotonic() - started < 10
    got = {path: (r.fetch_status, r.fetch_reason, r.retryable, r.attempts)
           for path, r in zip(FAULTS, records.itertuples())}
    for path, (status, reason, retryable, attempts) in FAULTS.items():
        assert got[path][0] == status and got[path][1].startswith(reason), (path, got[path])
        assert got[path][2:] == (retryable, attempts), (path, got[path])
    ok = records[records["fetch_status"] == "ok"].set_index("key")
    members = read_tar(tmp_path / "raw.tar")
    assert sorted(members) == sorted(ok["raw_member"])
    for _, row in ok.iterrows():
        data = members[row["raw_member"]]
        assert row["bytes"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    html = records.iloc[list(FAULTS).index("/html.jpg")]
    assert (html["content_type"], html["raw_member"][-5:]) == ("text/html", ".html")  # sniffed, not the header
    assert set(records["http_status"].iloc[[5, 6]]) == {404, 503}


def test_licence_conflicts_are_dropped_before_any_request(tmp_path, base_config, server):
    """Rows whose licence text contradicts their CC BY 2.0 URL are refused with both sides in
    the reason, and the server never sees a request for them; agreeing rows are fetched."""
    by_2 = "https://creativecommons.org/licenses/by/2.0/"
    texts = {"/ok-nc.jpg": "CC BY-NC 2.0", "/ok-nd.jpg": "CC BY-ND 4.0", "/ok-arr.jpg": "All Rights Reserved",
             "/ok-flickr-nc.jpg": "Attribution-NonCommercial License", "/ok-empty.jpg": "",
             "/ok-agrees.jpg": "Attribution License"}
    manifest = http_manifest(server, list(texts)).assign(license=list(texts.values()), license_url=by_2)
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0)
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "f.parquet").set_index("key")
    got = dict(zip(texts, records["fetch_reason"]))
    assert got["/ok-nc.jpg"] == "licence conflict: text CC-BY-NC-2.0, url CC-BY-2.0"
    assert got["/ok-nd.jpg"] == "licence conflict: text CC-BY-ND-4.0, url CC-BY-2.0"
    assert got["/ok-arr.jpg"] == "licence conflict: text all-rights-reserved, url CC-BY-2.0"
    assert got["/ok-flickr-nc.jpg"] == "licence conflict: text CC-BY-NC-2.0, url CC-BY-2.0"
    assert records["fetch_status"].tolist() == ["dropped"] * 4 + ["ok", "ok"]
    assert sorted(FaultServer.hits) == ["/ok-agrees.jpg", "/ok-empty.jpg"]  # an empty text stands on the URL


def test_a_rerun_fetches_again_only_retryable_failures(tmp_path, base_config, server):
    paths = ["/ok.jpg", "/ok2.jpg", "/down.jpg", "/gone.jpg", "/noai.jpg"]
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0)
    args = (http_manifest(server, paths), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    first = fetch_shard(*args)
    assert first["fetch_status"].tolist() == ["ok", "ok", "failed", "failed", "dropped"]
    FaultServer.healed = True
    second = fetch_shard(*args)
    assert second["fetch_status"].tolist() == ["ok", "ok", "ok", "failed", "dropped"]
    assert FaultServer.hits == {"/ok.jpg": 1, "/ok2.jpg": 1, "/down.jpg": 2, "/gone.jpg": 1, "/noai.jpg": 1}
    assert len(read_tar(tmp_path / "raw.tar")) == 3
    keep = ["key", "fetch_status", "sha256", "raw_member", "fetched_at"]
    assert second.loc[[0, 1, 3, 4], keep].equals(first.loc[[0, 1, 3, 4], keep])


def test_a_rerun_after_the_allowlist_shrinks_drops_the_stored_download(tmp_path, base_config, server):
    """A share-alike image fetched while CC-BY-SA was allowed is dropped, and its bytes leave
    the raw tar, when a rerun's allowlist no longer has it; nothing is requested again."""
    manifest = http_manifest(server, ["/ok-sa.jpg", "/ok-by.jpg"]).assign(license=["CC BY-SA 4.0", "CC BY 4.0"])
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0)
    allow = base_config["licenses"]["allow"]
    args = (manifest, base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    base_config["licenses"]["allow"] = [*allow, "CC-BY-SA-*"]
    assert fetch_shard(*args)["fetch_status"].tolist() == ["ok", "ok"]
    base_config["licenses"]["allow"] = allow
    second = fetch_shard(*args)
    assert second["fetch_status"].tolist() == ["dropped", "ok"]
    assert second["fetch_reason"].iloc[0] == "licence not allowed: CC-BY-SA-4.0 (CC BY-SA 4.0)"
    assert (second["raw_member"].iloc[0], second["sha256"].iloc[0]) == ("", "")
    assert sorted(read_tar(tmp_path / "raw.tar")) == [second["raw_member"].iloc[1]]
    assert FaultServer.hits == {"/ok-sa.jpg": 1, "/ok-by.jpg": 1}


def test_requests_to_one_host_are_limited(tmp_path, base_config, server):
    base_config["fetch"].update(allow_networks=LOOPBACK, workers=8, per_host=2)
    records = fetch_shard(http_manifest(server, ["/slow-ok.jpg"] * 8), base_config, tmp_path / "raw.tar",
                          tmp_path / "f.parquet")
    assert (records["fetch_status"] == "ok").all()
    assert FaultServer.busy == 2


def test_user_agent_comes_from_config(tmp_path, base_config, server):
    seen = []
    original = FaultServer.serve
    FaultServer.serve = lambda self, path, hit: (seen.append(self.headers["User-Agent"]), original(self, path, hit))
    try:
        base_config["fetch"].update(allow_networks=LOOPBACK, user_agent="gpic-test/1 (ops@example.org)")
        fetch_shard(http_manifest(server, ["/ok.jpg"]), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    finally:
        FaultServer.serve = original
    assert seen == ["gpic-test/1 (ops@example.org)"]


def test_loopback_refused_unless_allowed(tmp_path, base_config, server):
    records = fetch_shard(http_manifest(server, ["/ok.jpg"]), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["failed"]
    assert records["fetch_reason"].iloc[0].startswith("non-public address: 127.0.0.1")


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "localhost",
                                  "100.64.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1", "239.1.2.3",
                                  "ff02::1", "fe80::1", "fc00::1", "fec0::1", "0.0.0.0", "255.255.255.255",
                                  "64:ff9b::a00:1", "2002:7f00:1::1"])
def test_addresses_that_are_not_globally_routable_are_refused(host):
    with pytest.raises(Refused, match="non-public address"):
        resolve(host, 80, ())
    resolve(host, 80, parse_networks(["0.0.0.0/0", "::/0"]))


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_globally_routable_addresses_pass(host):
    assert resolve(host, 80, ())[0][4][1] == 80


def test_allowed_networks_admit_only_their_addresses():
    networks = parse_networks(["127.0.0.1/32", "fd00::/8"])
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "fd00::5"):
        resolve(host, 80, networks)
    for host in ("127.0.0.2", "10.0.0.1", "fc00::1"):
        with pytest.raises(Refused, match=f"non-public address: {host} for {host}"):
            resolve(host, 80, networks)


def test_a_host_name_idna_cannot_encode_fails_without_retry(base_config):
    with pytest.raises(FetchError, match="bad host name") as failure:
        Fetcher(base_config["fetch"]).fetch("http://" + "a" * 70 + ".example.org/x.jpg")
    assert not failure.value.retryable and failure.value.attempts == 1


def test_allow_networks_replaces_allow_private_addresses(base_config):
    with pytest.raises(ConfigError, match="allow_private_addresses"):
        validate_config({"sources": ["s.csv"], "shards": 1, "judge": {"model": "m"}, "embed": {"model": "m"},
                         "caption": {"model": "m"}, "fetch": {"allow_private_addresses": True}})
    with pytest.raises(ConfigError, match="fetch/allow_networks/0"):
        validate_config({"sources": ["s.csv"], "shards": 1, "judge": {"model": "m"}, "embed": {"model": "m"},
                         "caption": {"model": "m"}, "fetch": {"allow_networks": ["localhost"]}})
    for bad in ("10.0.0.1/8", "300.1.2.3/32", "::1/200"):
        with pytest.raises(ValueError, match=f"fetch.allow_networks: '{bad}'"):
            Fetcher({**base_config["fetch"], "allow_networks": ["127.0.0.0/8", bad]})


def test_a_redirect_to_a_loopback_address_not_allowed_is_refused(tmp_path, base_config, server, witness):
    FaultServer.elsewhere = witness + "/ok.jpg"
    base_config["fetch"].update(allow_networks=["127.0.0.1/32"], retries=0)
    records = fetch_shard(http_manifest(server, ["/elsewhere", "/ok.jpg"]), base_config, tmp_path / "raw.tar",
                          tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["failed", "ok"]
    assert records["fetch_reason"].iloc[0] == "non-public address: 127.0.0.2 for 127.0.0.2"
    assert not records["retryable"].iloc[0]
    assert FaultServer.hits == {"/elsewhere": 1, "/ok.jpg": 1} and Witness.requests == []


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path, base_config, server, witness, monkeypatch):
    """DNS answers 127.0.0.1 (allowed), then 127.0.0.2 (not allowed): the connection must look
    the name up once and connect where that answer pointed."""
    real = socket.getaddrinfo
    port, other_port = int(server.rsplit(":", 1)[1]), int(witness.rsplit(":", 1)[1])
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.test":
            return real(host, *args, **kwargs)
        lookups.append(host)
        address = ("127.0.0.1", port) if len(lookups) == 1 else ("127.0.0.2", other_port)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    base_config["fetch"].update(allow_networks=["127.0.0.1/32"], retries=0)
    scheme = server.split(":")[0]  # over HTTPS the certificate is checked against the name rebind.test
    records = fetch_shard(http_manifest(f"{scheme}://rebind.test:{port}", ["/ok.jpg"]), base_config,
                          tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["ok"], records["fetch_reason"].tolist()
    assert lookups == ["rebind.test"] and Witness.requests == [] and FaultServer.hits == {"/ok.jpg": 1}


def test_https_connects_to_the_checked_address_and_verifies_the_name(monkeypatch):
    """TLS gets the URL's host name (SNI, certificate check) over a socket to the checked address."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))])

    class Context:
        verify_mode, check_hostname, post_handshake_auth = ssl.CERT_REQUIRED, True, None
        wrapped: list = []

        def set_alpn_protocols(self, protocols):
            pass

        def wrap_socket(self, sock, server_hostname=None):
            self.wrapped.append((sock.getpeername(), server_hostname))
            return sock

    context = Context()
    connection = CheckedHTTPSConnection("images.example.org", 443, timeout=2, ssl_context=context,
                                        networks=parse_networks(["127.0.0.1/32"]))
    try:
        connection.connect()
    finally:
        connection.close()
        listener.close()
    assert context.wrapped == [(("127.0.0.1", port), "images.example.org")]


def test_x_robots_tag_is_read_from_every_header_line(tmp_path, base_config, server):
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0)
    records = fetch_shard(http_manifest(server, ["/noai-second-line.jpg", "/noindex.jpg", "/ok.jpg"]), base_config,
                          tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["dropped", "dropped", "ok"]
    assert records["fetch_reason"].tolist()[:2] == ["opt-out: X-Robots-Tag noai", "opt-out: X-Robots-Tag noindex"]


def test_opt_out_directives_come_from_config(tmp_path, base_config, server):
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0, opt_out_directives=["NoAI", "noimageai"])
    records = fetch_shard(http_manifest(server, ["/noai-second-line.jpg", "/noindex.jpg"]), base_config,
                          tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["dropped", "ok"]


def test_sniff():
    assert sniff(b"\x89PNG\r\n\x1a\nxxxx") == ("image/png", "png")
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image/webp", "webp")
    assert sniff(b"  <html>") == ("text/html", "html")
    assert sniff(b"\x00\x01") == ("application/octet-stream", "bin")


@pytest.mark.parametrize("options", [[], ["--tls", "--latency-ms", "20", "--hosts", "2"]], ids=["http", "https"])
def test_bench_fetch_runs_both_fetchers_on_the_same_urls(options):
    from gpic.bench.fetch import find_img2dataset

    try:
        find_img2dataset(None)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))  # `make test` installs it first
    result = CliRunner().invoke(app, ["bench", "fetch", "--images", "30", "--workers", "4", *options])
    assert result.exit_code == 0, result.output
    figures = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    # like for like: both downloaded every URL and kept the served bytes (img2dataset re-encodes by default)
    assert figures["ours_ok"] == figures["baseline_ok"] == figures["same_bytes"] == "30"
    # the server (HTTPS only with --tls) answered each: img2dataset opens a connection per image, ours at most
    # per_host (= workers) per host
    assert figures["ours_requests"] == figures["baseline_requests"] == figures["baseline_connections"] == "30"
    assert int(figures["ours_connections"]) <= 4 * (2 if options else 1)
    assert figures["tls"] == ("1" if options else "0")
    rates = [float(figures[k]) for k in ("ours_images_per_s", "baseline_images_per_s", "ratio")]
    assert all(math.isfinite(r) and r > 0 for r in rates), figures
    assert 0.01 < float(figures["ratio"]) < 100
    assert abs(float(figures["ratio"]) - rates[0] / rates[1]) < 0.01 * float(figures["ratio"])


def test_a_placeholder_body_fails_its_key_as_gone_and_is_not_stored(tmp_path, base_config, server):
    """Flickr answers a removed photo with 200 and its 'photo unavailable' picture: a body whose
    sha256 is configured as a placeholder fails the key for good, with no raw member; a rerun
    does not ask again. Other bodies from the same host are fetched as usual."""
    placeholder = hashlib.sha256(FaultServer.image).hexdigest()
    config = validate_config({**base_config, "fetch": {**base_config["fetch"], "allow_networks": LOOPBACK,
                                                       "retries": 0, "placeholder_sha256": [placeholder]}})
    args = (http_manifest(server, ["/ok-removed.jpg", "/html.jpg"]), config, tmp_path / "raw.tar",
            tmp_path / "f.parquet")
    records = fetch_shard(*args)
    gone, other = records.iloc[0], records.iloc[1]
    assert (gone["fetch_status"], bool(gone["retryable"]), gone["http_status"]) == ("failed", False, 200)
    assert gone["fetch_reason"] == f"gone: the source served its placeholder for a removed image (sha256 {placeholder})"
    assert (gone["raw_member"], gone["sha256"]) == ("", "")
    assert other["fetch_status"] == "ok"
    assert sorted(read_tar(tmp_path / "raw.tar")) == [other["raw_member"]]
    assert fetch_shard(*args)["fetch_reason"].iloc[0] == gone["fetch_reason"]
    assert FaultServer.hits == {"/ok-removed.jpg": 1, "/html.jpg": 1}


def test_a_placeholder_listed_after_a_run_fails_the_stored_body_without_a_request(tmp_path, base_config, server):
    """A hash added to fetch.placeholder_sha256 after a shard was fetched: the rerun fails the
    key as gone from its stored record and drops the stand-in from the raw tar."""
    placeholder = hashlib.sha256(FaultServer.image).hexdigest()
    fetch = {**base_config["fetch"], "allow_networks": LOOPBACK, "retries": 0}
    manifest = http_manifest(server, ["/ok-removed.jpg"])
    paths = (tmp_path / "raw.tar", tmp_path / "f.parquet")
    first = fetch_shard(manifest, validate_config({**base_config, "fetch": fetch}), *paths)
    assert first["fetch_status"].iloc[0] == "ok" and first["sha256"].iloc[0] == placeholder
    later = validate_config({**base_config, "fetch": {**fetch, "placeholder_sha256": [placeholder]}})
    record = fetch_shard(manifest, later, *paths).iloc[0]
    assert (record["fetch_status"], bool(record["retryable"]), record["raw_member"]) == ("failed", False, "")
    assert record["fetch_reason"].startswith("gone: ") and read_tar(paths[0]) == {}
    assert FaultServer.hits == {"/ok-removed.jpg": 1}


def test_connections_to_a_host_are_kept_alive_and_reused(tmp_path, base_config, server):
    """Twelve images from one host through three workers: at most three connections (one per
    request in flight, per_host), each carrying several requests; over HTTPS each one
    handshake."""
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0, workers=3, per_host=3)
    paths = [f"/ok-{i}.jpg" for i in range(12)]
    records = fetch_shard(http_manifest(server, paths), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert (records["fetch_status"] == "ok").all() and (records["attempts"] == 1).all()
    assert sum(FaultServer.hits.values()) == 12 and 1 <= FaultServer.connections <= 3


def test_a_block_keeps_its_connections_from_shard_to_shard(tmp_path, base_config, server):
    """The prepare job gives its shards one fetcher: the second shard's requests go out on the
    first shard's connections, and the fetcher closes them when the block is done."""
    from gpic.stages.fetch import Fetcher

    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0, workers=1, per_host=1)
    config = validate_config(base_config)
    with Fetcher(config["fetch"]) as fetcher:
        for shard in ("a", "b", "c"):
            paths = [f"/ok-{shard}{i}.jpg" for i in range(3)]
            records = fetch_shard(http_manifest(server, paths), config, tmp_path / f"{shard}.tar",
                                  tmp_path / f"{shard}.parquet", fetcher=fetcher)
            assert (records["fetch_status"] == "ok").all()
        assert FaultServer.connections == 1 and fetcher.connections == 1 and fetcher.pools.idle() == 1
    assert fetcher.pools.idle() == 0


def test_a_kept_alive_connection_the_server_closed_is_replaced(tmp_path, base_config, server):
    """A server may close an idle kept-alive connection at any time: the next request to it
    goes out on a new connection, without costing the key an attempt or a retry."""
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0, workers=1)
    paths = ["/closing-1.jpg", "/ok-1.jpg", "/closing-2.jpg", "/ok-2.jpg", "/ok-3.jpg"]
    records = fetch_shard(http_manifest(server, paths), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["ok"] * 5 and (records["attempts"] == 1).all()
    assert FaultServer.connections == 3 and FaultServer.hits == dict.fromkeys(paths, 1)


def test_a_429_with_retry_after_pauses_the_host_for_every_worker(tmp_path, base_config, server):
    """One worker's request is answered (0.3 s after it arrives) 429 with Retry-After: 1 while
    the other worker is busy with an image that takes 0.6 s; that worker's next request to the
    host waits out the pause too, arriving 1.3 s after the first, not at 0.6 s."""
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=1, workers=2, per_host=2)
    paths = ["/wait-300/limited.jpg", "/wait-600/ok-slow.jpg", "/ok-a.jpg", "/ok-b.jpg"]
    records = fetch_shard(http_manifest(server, paths), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["ok"] * 4
    assert records["attempts"].tolist() == [2, 1, 1, 1]
    arrivals = FaultServer.arrivals
    limited = arrivals["/wait-300/limited.jpg"][0]
    for path in ("/ok-a.jpg", "/ok-b.jpg"):
        assert arrivals[path][0] - limited >= 1.25, (path, arrivals[path][0] - limited)
    assert arrivals["/wait-300/limited.jpg"][1] - limited >= 1.25


def test_a_long_retry_after_fails_the_hosts_other_keys_without_a_request(tmp_path, base_config, server, other):
    """A host that asks for an hour (429, Retry-After: 3600, over max_backoff_s) is asked
    nothing more by this shard: its later keys fail at once, retryable (the next run tries
    them), with no attempt spent; another host is fetched as usual."""
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=2, workers=2, per_host=2, max_backoff_s=2)
    # the 429 comes 0.3 s after its request, while the other worker's 0.6 s image is under way
    manifest = http_manifest(server, ["/wait-300/limited-long.jpg", "/wait-600/ok-slow.jpg", "/ok-later.jpg"])
    manifest = pd.concat([manifest, http_manifest(other, ["/ok-other.jpg"]).assign(key="f" * 20)], ignore_index=True)
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["failed", "ok", "failed", "ok"]
    assert records["fetch_reason"].iloc[0] == "http error: 429 (Retry-After 3600 s is too long)"
    assert records["fetch_reason"].iloc[2].startswith("host paused: 127.0.0.1 asked for 3600 s more (Retry-After)")
    assert records["retryable"].tolist() == [True, False, True, False]
    assert records["attempts"].tolist() == [1, 1, 0, 1]
    assert "/ok-later.jpg" not in FaultServer.hits and FaultServer.hits["/wait-300/limited-long.jpg"] == 1


def test_retry_waits_are_full_jitter_from_a_seeded_generator(base_config, server):
    """Before retry n: uniform in [0, min(max_backoff_s, backoff_s * 2^(n-1))], drawn from the
    Fetcher's generator (seeded here), never the fixed exponential step."""
    cfg = {**base_config["fetch"], "allow_networks": LOOPBACK, "retries": 4, "backoff_s": 0.1, "max_backoff_s": 0.3}
    waits = []
    with Fetcher(cfg, rng=random.Random(7), sleep=waits.append) as fetcher, pytest.raises(FetchError) as failure:
        fetcher.fetch(server + "/down.jpg")
    expected = random.Random(7)
    assert waits == [expected.uniform(0, cap) for cap in (0.1, 0.2, 0.3, 0.3)]
    assert failure.value.attempts == 5 and len(set(waits)) == 4


def test_host_budget_spaces_requests_by_the_budget_over_the_concurrent_jobs(base_config):
    """host_budget 20/s shared by 4 concurrent jobs: this job starts a request to the host at
    most every 0.2 s (a fake clock); a host without a budget never waits."""
    now = [100.0]
    cfg = {**base_config["fetch"], "host_budget": {"upload.example.org": 20}, "concurrent_jobs": 4}
    fetcher = Fetcher(cfg, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    starts = []
    for _ in range(6):
        fetcher.admit("upload.example.org")
        starts.append(now[0])
    assert starts == pytest.approx([100.0, 100.2, 100.4, 100.6, 100.8, 101.0])
    now[0] += 5  # idle: the budget does not accumulate into a burst
    fetcher.admit("upload.example.org")
    fetcher.admit("upload.example.org")
    assert now[0] == pytest.approx(106.2)
    fetcher.admit("other.example.org")
    assert now[0] == pytest.approx(106.2)


def test_host_budget_holds_across_workers_in_real_time(tmp_path, base_config, server):
    """Budget 40/s over 2 jobs: 20 requests/s from this one; 4 workers asking for 9 images
    are spread over 8 intervals of 0.05 s, where without a budget they take a few milliseconds.
    Measured at the server, the first arrival also waits for its connection (a TLS handshake on
    a busy machine takes tens of milliseconds), so one interval is left as slack."""
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0, workers=4, per_host=4,
                                host_budget={"127.0.0.1": 40}, concurrent_jobs=2)
    records = fetch_shard(http_manifest(server, [f"/ok-{i}.jpg" for i in range(9)]), base_config,
                          tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert (records["fetch_status"] == "ok").all()
    arrivals = sorted(t for times in FaultServer.arrivals.values() for t in times)
    assert arrivals[-1] - arrivals[0] >= 7 * 0.05


def test_an_untrusted_certificate_fails_the_key_with_a_clear_reason(tmp_path, base_config, certificates, photos):
    """Verification stays on: a server whose certificate another CA signed is refused before
    any request, trusting the system store or the test CA alike; not retried now, retryable
    for a run with a fixed ca_bundle."""
    FaultServer.hits, FaultServer.connections = {}, 0
    FaultServer.image = jpeg_bytes(photos["astronaut"])
    stranger = server_context(make_certificates(tmp_path / "stranger"))
    with serving("127.0.0.1", FaultServer, stranger) as base:
        for ca_bundle in ("", str(certificates.ca)):
            base_config["fetch"].update(allow_networks=LOOPBACK, retries=2, ca_bundle=ca_bundle)
            record = fetch_shard(http_manifest(base, ["/ok.jpg"]), base_config, tmp_path / "raw.tar",
                                 tmp_path / "f.parquet").iloc[0]
            assert record["fetch_status"] == "failed"
            assert record["fetch_reason"].startswith("certificate verify failed: ") and "(127.0.0.1)" in record[
                "fetch_reason"], record["fetch_reason"]
            assert (bool(record["retryable"]), record["attempts"]) == (True, 1)
    assert FaultServer.hits == {} and FaultServer.connections == 2


def test_a_certificate_for_other_names_is_refused(tmp_path, base_config, certificates, photos):
    """The test CA's certificate names 127.0.0.1-3 but not 127.0.0.4: trusted issuer, wrong name."""
    FaultServer.hits = {}
    with serving("127.0.0.4", FaultServer, server_context(certificates)) as base:
        base_config["fetch"].update(allow_networks=LOOPBACK, retries=0, ca_bundle=str(certificates.ca))
        record = fetch_shard(http_manifest(base, ["/ok.jpg"]), base_config, tmp_path / "raw.tar",
                             tmp_path / "f.parquet").iloc[0]
    assert record["fetch_reason"] == "certificate verify failed: IP address mismatch, certificate is not valid for " \
                                     "'127.0.0.4'. (127.0.0.4)"
    assert FaultServer.hits == {}


def test_a_missing_ca_bundle_stops_the_fetch_naming_it(base_config, tmp_path):
    with pytest.raises(ValueError, match="fetch.ca_bundle: .*nowhere.pem is not a file"):
        Fetcher({**base_config["fetch"], "ca_bundle": str(tmp_path / "nowhere.pem")})


def test_each_key_records_its_host_bytes_on_the_wire_and_time(tmp_path, base_config, server):
    """wire_bytes: every body received for the key (a 500's, a redirect's, the image's),
    headers excluded; fetch_s: first request to body complete, the retry's wait included."""
    base_config["fetch"].update(allow_networks=LOOPBACK, retries=1, backoff_s=0.2, max_backoff_s=0.2)
    paths = ["/ok.jpg", "/flaky.jpg", "/moved", "/slow-ok.jpg", "/gone.jpg"]
    manifest = http_manifest(server, paths)
    manifest = pd.concat([manifest, manifest.iloc[[0]].assign(key="f" * 20, license="CC BY-NC 4.0")],
                         ignore_index=True)
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    image = len(FaultServer.image)
    assert records["wire_bytes"].tolist() == [image, len(b"busy") + image, image, image, len(b"missing"), 0]
    assert records["host"].tolist() == ["127.0.0.1"] * 6
    assert records["fetch_s"].iloc[3] >= 0.2 and records["fetch_s"].iloc[-1] == 0  # the licence drop asks nothing
    assert (records["fetch_s"].iloc[:5] > 0).all() and records["fetch_s"].iloc[0] < 1


def test_a_table_from_before_the_new_columns_is_reused(tmp_path, base_config, server):
    """A fetch table written before host, wire_bytes and fetch_s existed still spares its keys
    a second download."""
    import pyarrow.parquet as pq

    base_config["fetch"].update(allow_networks=LOOPBACK, retries=0)
    args = (http_manifest(server, ["/ok.jpg", "/down.jpg"]), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    fetch_shard(*args)
    old = pq.read_table(tmp_path / "f.parquet")
    pq.write_table(old.drop_columns(["host", "wire_bytes", "fetch_s"]), tmp_path / "f.parquet")
    records = fetch_shard(*args)
    assert records["fetch_status"].tolist() == ["ok", "failed"]
    assert FaultServer.hits == {"/ok.jpg": 1, "/down.jpg": 2}
    assert records["host"].tolist() == ["127.0.0.1"] * 2 and records["wire_bytes"].iloc[0] == 0


def test_bodies_stream_into_the_raw_tar_with_their_offsets(tmp_path, base_config, monkeypatch):
    """Memory holds the bodies in flight, not the shard's: 40 images of 1 MB fetched by two
    workers, the first one slow, never hold more than a few at once; each record says where its
    bytes lie in the tar, and the tar is the one write_tar would have written from all of them."""
    import time
    import tracemalloc

    from gpic.stages.fetch import Fetcher

    read_file = Fetcher.fetch_file

    def slow_first(self, url):
        if url.endswith(f"{0:020x}.jpg"):
            time.sleep(0.5)  # the other worker could fetch the whole shard meanwhile
        return read_file(self, url)

    monkeypatch.setattr(Fetcher, "fetch_file", slow_first)

    rng = np.random.default_rng(0)
    bodies = {f"{i:020x}": b"\xff\xd8\xff" + rng.bytes(1 << 20) for i in range(40)}
    for key, body in bodies.items():
        (tmp_path / f"{key}.jpg").write_bytes(body)
    keys = list(bodies)[::-1]  # the manifest's order is not the tar's
    manifest = pd.DataFrame([dict(key=k, url=(tmp_path / f"{k}.jpg").as_uri(), contract_error="", **GOOD)
                             for k in keys])
    config = validate_config({**base_config, "fetch": {**base_config["fetch"], "workers": 2,
                                                       "file_roots": [str(tmp_path)]}})
    tracemalloc.start()
    records = fetch_shard(manifest, config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 * (1 << 20), f"peak {peak / (1 << 20):.0f} MB for 40 MB of bodies"
    assert records["key"].tolist() == keys and (records["fetch_status"] == "ok").all()
    with open(tmp_path / "raw.tar", "rb") as raw:
        for record in records.itertuples():
            raw.seek(record.raw_offset)
            assert raw.read(record.bytes) == bodies[record.key]
    write_tar(tmp_path / "expected.tar", [(f"{k}.jpg", b) for k, b in bodies.items()])
    assert (tmp_path / "raw.tar").read_bytes() == (tmp_path / "expected.tar").read_bytes()
    # a rerun keeps every body, copied from the earlier tar member by member
    again = fetch_shard(manifest, config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert again["raw_offset"].tolist() == records["raw_offset"].tolist()
    assert (tmp_path / "raw.tar").read_bytes() == (tmp_path / "expected.tar").read_bytes()
