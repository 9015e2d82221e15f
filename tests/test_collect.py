"""Partition and fetch: manifests in, one record per key out, whatever the rows contain."""

from __future__ import annotations

import http.server
import json
import threading

import pandas as pd
import pytest

from conftest import jpeg_bytes
from gpic.fetch import fetch_shard, sniff
from gpic.manifest import partition
from gpic.store import read_table, read_tar

GOOD = dict(license="CC BY 4.0", license_url="", attribution="Jane Doe", title="t")


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
    image = b""
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        FaultServer.hits[self.path] = FaultServer.hits.get(self.path, 0) + 1
        if self.path == "/ok.jpg" or (self.path == "/flaky.jpg" and FaultServer.hits[self.path] > 1):
            self._send(200, self.image)
        elif self.path == "/flaky.jpg":
            self._send(503, b"busy")
        elif self.path == "/noai.jpg":
            self._send(200, self.image, {"X-Robots-Tag": "noai"})
        elif self.path == "/html.jpg":
            self._send(200, b"<html>not an image</html>", {"Content-Type": "image/jpeg"})
        else:
            self._send(404, b"missing")

    def _send(self, code, body, headers=None):
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(photos):
    FaultServer.image = jpeg_bytes(photos["astronaut"])
    FaultServer.hits = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FaultServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def http_manifest(base: str, paths: list[str]) -> pd.DataFrame:
    rows = [dict(key=f"{i:020x}", url=base + p, contract_error="", **GOOD) for i, p in enumerate(paths)]
    return pd.DataFrame(rows)


def test_fetch_http_faults(tmp_path, base_config, server):
    manifest = http_manifest(server, ["/ok.jpg", "/flaky.jpg", "/noai.jpg", "/html.jpg", "/gone.jpg"])
    base_config["fetch"].update(allow_private_addresses=True, retries=2)
    records = fetch_shard(manifest, base_config, tmp_path / "raw.tar", tmp_path / "f.parquet").set_index("key")
    status = dict(zip(manifest["url"].str.rsplit("/", n=1).str[-1], records["fetch_status"]))
    reason = dict(zip(manifest["url"].str.rsplit("/", n=1).str[-1], records["fetch_reason"]))
    assert status == {"ok.jpg": "ok", "flaky.jpg": "ok", "noai.jpg": "dropped", "html.jpg": "ok", "gone.jpg": "failed"}
    assert reason["noai.jpg"] == "opt-out: X-Robots-Tag noai"
    assert reason["gone.jpg"] == "http error: 404"
    assert records["attempts"].tolist()[1] == 2  # the 503 was retried once
    assert records["content_type"].tolist()[3] == "application/octet-stream"  # sniffed, not the header


def test_loopback_refused_unless_allowed(tmp_path, base_config, server):
    records = fetch_shard(http_manifest(server, ["/ok.jpg"]), base_config, tmp_path / "raw.tar", tmp_path / "f.parquet")
    assert records["fetch_status"].tolist() == ["failed"]
    assert records["fetch_reason"].iloc[0].startswith("non-public address: 127.0.0.1")


def test_sniff():
    assert sniff(b"\x89PNG\r\n\x1a\nxxxx") == ("image/png", "png")
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image/webp", "webp")
    assert sniff(b"<html>") == ("application/octet-stream", "bin")
