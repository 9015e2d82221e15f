"""The Flickr API collector against a loopback server that speaks Flickr's REST JSON: licences
read at run time, windows split below the result cap, temporary failures retried, malformed
records kept with their reason, and a killed collection resumed without repeating a page."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import threading
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pyarrow.parquet as pq
import pytest

from gpic.collect import collect, part_files, parts
from gpic.collect.common import REASON, CollectError
from gpic.stages.partition import contract_error

KEY = "k3y-not-a-secret"
T0 = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
HOUR, DAY = 3600, 86400
LICENCES = [  # getInfo's answer; id 20 is one the built-in table does not know
    {"id": 0, "name": "All Rights Reserved", "url": ""},
    {"id": 2, "name": "Attribution-NonCommercial License", "url": "https://creativecommons.org/licenses/by-nc/2.0/"},
    {"id": 4, "name": "Attribution License", "url": "https://creativecommons.org/licenses/by/2.0/"},
    {"id": 9, "name": "Public Domain Dedication (CC0)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
    {"id": 11, "name": "Attribution-ShareAlike 4.0 International", "url": "https://creativecommons.org/licenses/by-sa/4.0/"},
    {"id": 20, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
]


def photo(pid, uploaded, license_id="4", **fields):
    """A served record: (upload second, licence the server filters on, the JSON Flickr sends)."""
    record = {"id": str(pid), "owner": "12345@N00", "secret": "s", "server": "1", "farm": 1, "title": f"photo {pid}",
              "ispublic": 1, "license": license_id, "dateupload": str(uploaded), "ownername": "Jane Doe",
              "o_width": "4000", "o_height": "3000",
              "url_o": f"https://live.staticflickr.com/1/{pid}_o.jpg", "width_o": 4000, "height_o": 3000,
              "url_l": f"https://live.staticflickr.com/1/{pid}_b.jpg", "width_l": 1024, "height_l": "768"}
    record.update(fields)
    return uploaded, license_id, {k: v for k, v in record.items() if v is not None}


GOOD = [photo(100 + k, T0 + k * HOUR) for k in range(1, 7)]  # 6 in day 1's first quarter: one split too many
BURST = [photo(200 + k, T0 + 20 * HOUR) for k in range(7)]  # 7 in one second: cannot be split below the cap
DAY2 = [
    photo(300, T0 + DAY + HOUR, "20"),  # the licence getInfo added
    photo(301, T0 + DAY + 2 * HOUR, "9", ownername="", url_l=None, width_l=None, height_l=None,
          url_z="https://live.staticflickr.com/1/301_z.jpg", width_z="640", height_z="480"),  # falls back to url_z
    photo(302, T0 + DAY + 3 * HOUR, "2"),  # non-commercial: the server never returns it
    photo(303, T0 + DAY + 4 * HOUR, license=None),  # no license field
    photo(304, T0 + DAY + 5 * HOUR, dateupload="yesterday"),
    photo(305, T0 + DAY + 6 * HOUR, url_o=None, url_l=None),  # no URL at url_l or below
    photo("abc", T0 + DAY + 7 * HOUR),
    photo(306, T0 + DAY + 8 * HOUR, "11", owner="777@N01", ownername=None),  # share-alike: only when allowed
]
PHOTOS = GOOD + BURST + DAY2
# what the default allowlist (CC0, PDM, public domain, CC BY) collects: neither 302 (NC) nor 306 (SA)
COLLECTED = ({str(p[2]["id"]) for p in GOOD + DAY2 if p[2]["id"] not in ("302", "306")}
             | {str(200 + k) for k in range(5)})
WITH_SA = ["CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-[0-9]*", "CC-BY-SA-*"]


class FlickrServer(http.server.BaseHTTPRequestHandler):
    """flickr.photos.licenses.getInfo and flickr.photos.search over `photos`, paging through
    at most `cap` results (later pages repeat the last one, as Flickr's do). `calls` lists the
    parameters of every request; `faults` maps a request number to a fault served once."""

    photos: list = []
    cap = 5
    calls: list[dict] = []
    faults: dict[int, str] = {}
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        params = dict(parse_qsl(urlsplit(self.path).query))
        with self.lock:
            self.calls.append(params)
            fault = self.faults.pop(len(self.calls), "")
        if fault == "429":
            return self._send({"stat": "fail", "code": 0, "message": "slow down"}, 429, {"Retry-After": "7"})
        if fault == "105":
            return self._send({"stat": "fail", "code": 105, "message": "Service currently unavailable"})
        if params.get("api_key") != KEY:
            return self._send({"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"})
        assert (params["format"], params["nojsoncallback"]) == ("json", "1")
        if params["method"] == "flickr.photos.licenses.getInfo":
            return self._send({"licenses": {"license": LICENCES}, "stat": "ok"})
        assert params["method"] == "flickr.photos.search" and params["sort"] == "date-posted-asc"
        lo, hi, allowed = int(params["min_upload_date"]), int(params["max_upload_date"]), params["license"].split(",")
        found = [p for p in sorted(self.photos, key=lambda p: (p[0], str(p[2]["id"])))
                 if lo <= p[0] <= hi and p[1] in allowed]
        per_page, page = int(params["per_page"]), int(params["page"])
        last_reachable = max(1, math.ceil(min(len(found), self.cap) / per_page))
        shown = min(page, last_reachable)  # past the cap Flickr repeats itself
        served = [p[2] for p in found[: self.cap]][(shown - 1) * per_page: shown * per_page]
        self._send({"photos": {"page": page, "pages": math.ceil(len(found) / per_page), "perpage": per_page,
                               "total": str(len(found)), "photo": served}, "stat": "ok"})

    def _send(self, payload, code=200, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("GPIC_TEST_FLICKR_KEY", KEY)
    FlickrServer.photos, FlickrServer.calls, FlickrServer.faults = PHOTOS, [], {}
    with serving(FlickrServer) as base:
        yield base + "/services/rest/"


def config(api: str, **flickr) -> dict:
    section = {"api": api, "api_key_env": "GPIC_TEST_FLICKR_KEY", "start": "2020-01-01", "end": "2020-01-03",
               "window_days": 1, "per_page": 3, "max_results": 5, "calls_per_hour": 36, **flickr}
    return {"user_agent": "gpic-test/0 (test@example.org)", "retries": 2, "backoff_s": 0.5, "flickr": section}


class Recorder(list):
    """The collector's sleep: records each wait, sleeps never; `kill_at` raises on that call."""

    def __init__(self, kill_at: int = 0):
        super().__init__()
        self.kill_at = kill_at

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if len(self) == self.kill_at:
            raise Killed


class Killed(BaseException):
    """A kill: nothing in the collector catches it."""


def read_rows(out) -> list[dict]:
    return [row for path in part_files(out / "collection.json") for row in pq.read_table(path).to_pylist()]


def searches(calls) -> Counter:
    return Counter((c["min_upload_date"], c["max_upload_date"], c["page"]) for c in calls
                   if c.get("method") == "flickr.photos.search")


def test_a_collection_splits_windows_below_the_cap_and_uses_the_licences_getinfo_gives(api, tmp_path):
    summary = collect("flickr", config(api, allow=WITH_SA), tmp_path, sleep=Recorder())
    assert parts(config(api), "flickr") == ["20200101T000000-20200102T000000", "20200102T000000-20200103T000000"]
    assert summary["failed"] == {} and summary["parts"] == 2
    rows = read_rows(tmp_path)
    ok = {r["source_id"]: r for r in rows if not r[REASON]}
    assert set(ok) == {"101", "102", "103", "104", "105", "106", "200", "201", "202", "203", "204", "300", "301", "306"}
    assert {r["source_id"] for r in rows if r["source_id"]} == COLLECTED | {"306"}
    # only the allowed ids are searched, the new id 20 among them; the non-commercial photo never comes back
    assert {c["license"] for c in FlickrServer.calls if "license" in c} == {"4,9,11,20"}
    assert "302" not in {r["source_id"] for r in rows}
    new = ok["300"]
    assert (new["license"], new["license_url"]) == ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/")
    first = ok["101"]
    assert (first["url"], first["size"]) == ("https://live.staticflickr.com/1/101_b.jpg", "url_l")  # not url_o
    assert (first["width"], first["height"], first["original_width"]) == ("1024", "768", "4000")
    assert (first["license"], first["license_url"]) == ("Attribution License",
                                                        "https://creativecommons.org/licenses/by/2.0/")
    assert (first["attribution"], first["title"], first["license_id_flickr"]) == ("Jane Doe", "photo 101", "4")
    assert first["upload_date"] == "2020-01-01T01:00:00+00:00" and first["retrieved_at"].startswith("20")
    assert first["page_url"] == "https://www.flickr.com/photos/12345@N00/101/"
    assert (ok["301"]["url"], ok["301"]["width"], ok["301"]["attribution"]) == (
        "https://live.staticflickr.com/1/301_z.jpg", "640", "Flickr user 12345@N00")
    assert ok["306"]["attribution"] == "Flickr user 777@N01"
    for row in ok.values():  # a part validates as a source manifest
        assert contract_error(row, [], ["flickr", "wikimedia"]) == ""
    # day 1 was split until every piece fits: no window past the cap was paged beyond its first page
    day1 = searches(FlickrServer.calls)
    assert day1[(str(T0), str(T0 + DAY - 1), "1")] == 1 and (str(T0), str(T0 + DAY - 1), "2") not in day1
    assert day1[(str(T0), str(T0 + 6 * HOUR - 1), "2")] == 1  # 5 photos, 3 a page
    # the burst second is read up to the cap and the rest is recorded, not dropped in silence
    second = str(T0 + 20 * HOUR)
    assert day1[(second, second, "1")] == day1[(second, second, "2")] == 1 and (second, second, "3") not in day1
    overflow = [r[REASON] for r in rows if "not collected" in r[REASON]]
    assert overflow == ["flickr 20200101T000000-20200102T000000 window 20200101T200000-20200101T200001 page 1: "
                        "7 photos uploaded in 20200101T200000-20200101T200001 but flickr.photos.search pages "
                        "through at most 5 and a window under two seconds cannot be split: 2 not collected"]


def test_malformed_records_are_kept_with_a_reason_naming_window_and_record(api, tmp_path):
    collect("flickr", config(api), tmp_path, sleep=Recorder())
    reasons = {r["source_id"]: r[REASON] for r in read_rows(tmp_path) if r[REASON] and r["source_id"]}
    # day 2 holds 6 photos under the default allowlist: split once more, into 00-06 h (4) and 06-12 h (2)
    early = "flickr 20200102T000000-20200103T000000 window 20200102T000000-20200102T060000 page"
    late = "flickr 20200102T000000-20200103T000000 window 20200102T060000-20200102T120000 page"
    assert reasons["303"] == f"{early} 1: photo 303: no license field"
    assert reasons["304"] == f"{early} 2: photo 304: dateupload 'yesterday' is not unix seconds"
    assert reasons["305"] == f"{late} 1: photo 305: no image URL at url_l or any smaller size"
    assert reasons["abc"] == f"{late} 1: photo record without a numeric id: abc"
    assert {c["license"] for c in FlickrServer.calls if "license" in c} == {"4,9,20"}  # no share-alike by default
    assert len(reasons) == 4


def test_unavailable_service_is_retried_and_retry_after_honoured_at_the_keys_rate(api, tmp_path):
    FlickrServer.faults = {2: "105", 4: "429"}
    waits = Recorder()
    summary = collect("flickr", config(api), tmp_path, sleep=waits)
    assert summary["failed"] == {}
    assert {r["source_id"] for r in read_rows(tmp_path) if r["source_id"]} == COLLECTED
    requests = len(FlickrServer.calls)
    assert 7.0 in waits  # the server's Retry-After, as given
    backoff = [w for w in waits if w <= 0.5]  # the 105's full-jitter backoff: uniform in [0, backoff_s]
    rate = [w for w in waits if 99 < w <= 100]  # 36 calls an hour: 100 s between calls of one part
    assert len(backoff) == 1 and len(rate) == requests - 2  # every call but each part's first waits its turn
    assert len(waits) == len(backoff) + len(rate) + 1


def test_the_key_comes_from_the_environment(api, tmp_path, monkeypatch):
    monkeypatch.delenv("GPIC_TEST_FLICKR_KEY")
    with pytest.raises(ValueError, match="environment variable GPIC_TEST_FLICKR_KEY"):
        collect("flickr", config(api), tmp_path, sleep=Recorder())
    assert FlickrServer.calls == []
    monkeypatch.setenv("GPIC_TEST_FLICKR_KEY", "wrong-key")
    with pytest.raises(CollectError, match="2 of 2 parts failed"):
        collect("flickr", config(api), tmp_path, sleep=Recorder())
    failed = json.loads((tmp_path / "collection.json").read_text())["failed"]
    assert failed["20200101T000000-20200102T000000"] == ("flickr 20200101T000000-20200102T000000: API error 100: "
                                                         "Invalid API Key (Key has invalid format)")
    assert len(FlickrServer.calls) == 2  # an invalid key is not retried


def test_a_killed_collection_resumes_without_repeating_a_page(api, tmp_path):
    with pytest.raises(Killed):
        collect("flickr", config(api), tmp_path, sleep=Recorder(kill_at=12))  # inside day 1, mid-split
    assert not list(tmp_path.glob("*.parquet")) and list(tmp_path.glob("*.pages/page-*.parquet"))
    before = len(FlickrServer.calls)
    summary = collect("flickr", config(api), tmp_path, sleep=Recorder())
    assert summary["failed"] == {} and before > 5
    rows = read_rows(tmp_path)
    ids = [r["source_id"] for r in rows if r["source_id"]]
    assert set(ids) == COLLECTED and len(ids) == len(set(ids))
    assert len([r for r in rows if "not collected" in r[REASON]]) == 1
    assert all(n == 1 for n in searches(FlickrServer.calls).values())  # no page, and no split probe, twice
    getinfo = [c for c in FlickrServer.calls if c["method"] == "flickr.photos.licenses.getInfo"]
    assert len(getinfo) == 2  # once per part: the killed part's licences came back from its checkpoint
