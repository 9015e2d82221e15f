"""The Commons API collector against a loopback server that answers as the MediaWiki Action
API does (formatversion=2, API:Continue with generators and batchcomplete, maxlag errors),
from a small set of files; every part is read back from the parquet files it wrote."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest

from gpic import collect
from gpic.collect import commons_api
from gpic.collect.common import REASON, CollectError, Retry
from gpic.stages.partition import FIELDS, contract_error, read_manifest

UA = "gpic-test/0.1 (https://example.org/gpic; data-team@example.org)"
W1, W2 = "20200101T000000-20200102T000000", "20200102T000000-20200103T000000"
BY_SA = {"LicenseShortName": "CC BY-SA 4.0", "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0"}


def file(name, timestamp, meta=None, mime="image/jpeg", size=(4000, 3000), **flags) -> dict:
    """One file of the fake wiki: its extmetadata (BY-SA by Anna unless given) and flags that
    break or delay its imageinfo."""
    meta = {**BY_SA, "Artist": "Anna", "ImageDescription": "<p>not asked for</p>"} if meta is None else meta
    return {"title": f"File:{name}", "timestamp": timestamp, "meta": meta, "mime": mime, "size": size,
            "pageid": 1000 + int(hashlib.sha1(name.encode()).hexdigest()[:6], 16) % 9000, **flags}


FILES = [
    file("Alpha.jpg", "2020-01-01T01:00:00Z", {
        **BY_SA, "Artist": '<a href="//commons.wikimedia.org/wiki/User:Alice" title="User:Alice">Alice Example</a>'
                           ' &amp; <bdi>Bob</bdi>', "Credit": "Own work"}),
    file("Bravo.jpg", "2020-01-01T02:00:00Z", {**BY_SA, "Artist": "Brand", "Restrictions": "trademarked|personality"}),
    file("Charlie.jpg", "2020-01-01T03:00:00Z", {**BY_SA, "AttributionRequired": "true"}),
    file("Delta.jpg", "2020-01-01T04:00:00Z", {**BY_SA, "AttributionRequired": "true",
                                               "Credit": '<span class="int-own-work">Own work</span> by Dora'}),
    file("Echo.jpg", "2020-01-01T05:00:00Z", drop="url"),
    file("Foxtrot.jpg", "2020-01-01T06:00:00Z", split=True),  # its imageinfo comes in the next answer
    file("Golf.jpg", "2020-01-01T07:00:00Z", override={"width": "wide"}),
    file("Hotel.jpg", "2020-01-01T08:00:00Z", no_imageinfo=True),
    file("India.jpg", "2020-01-01T09:00:00Z", {"UsageTerms": "Public domain", "Artist": "Unknown author"}),
    file("Juliet.jpg", "2020-01-01T10:00:00Z", {"Artist": "Jules"}),
    file("Kilo.ogg", "2020-01-01T11:00:00Z", mime="audio/ogg", size=(0, 0)),
    file("Lima.svg", "2020-01-01T12:00:00Z", mime="image/svg+xml", size=(512, 512)),
    file("Mike.jpg", "2020-01-02T00:00:00Z"),  # on the boundary: the second window's
    file("November.jpg", "2020-01-02T12:00:00Z"),
    file("Oscar.jpg", "2020-01-03T00:00:00Z"),  # on the end of the range: nobody's
]
CATEGORIES = {"Category:Birds": ["File:Alpha.jpg", "File:Lima.svg", "File:November.jpg"]}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FakeCommons:
    """What the server saw (every request's parameters and User-Agent) and the faults it
    answers with instead, by request number."""

    def __init__(self, files=FILES, faults=None):
        self.files, self.faults = files, dict(faults or {})
        self.requests: list[dict] = []
        self.agents: list[str] = []
        self.listed: Counter = Counter()

    def answer(self, params: dict) -> tuple[int, dict, dict]:
        n = len(self.requests)
        if n in self.faults:
            return self.faults[n]
        expected = {"action": "query", "format": "json", "formatversion": "2", "prop": "imageinfo"}
        if any(params.get(k) != v for k, v in expected.items()) or "maxlag" not in params:
            return 200, {}, {"error": {"code": "badparams", "info": f"unexpected {params}"}}
        if params["generator"] == "allimages":
            assert params["gaisort"] == "timestamp" and params["gaidir"] == "ascending"
            lo, hi = parse_time(params["gaistart"]), parse_time(params["gaiend"])
            chosen = sorted((f for f in self.files if lo <= parse_time(f["timestamp"]) <= hi),  # inclusive
                            key=lambda f: (f["timestamp"], f["title"]))
            key, limit = "gaicontinue", int(params["gailimit"])
            token = lambda f: f"{parse_time(f['timestamp']):%Y%m%d%H%M%S}|{f['title'][5:]}"
        else:
            assert params["gcmtype"] == "file"
            members = CATEGORIES.get(params["gcmtitle"], [])
            chosen = sorted((f for f in self.files if f["title"] in members), key=lambda f: f["title"])
            key, limit = "gcmcontinue", int(params["gcmlimit"])
            token = lambda f: f"file|{f['title'][5:].upper()}|{f['pageid']}"
        first = [token(f) for f in chosen].index(params[key]) if key in params else 0
        batch = chosen[first:first + limit]
        ii_from = [f["title"][5:] for f in batch].index(params["iicontinue"].split("|")[0]) \
            if "iicontinue" in params else 0
        ii_to = next((j for j in range(ii_from + 1, len(batch)) if batch[j].get("split")), len(batch))
        pages = []
        for j, f in enumerate(batch):
            page = {"pageid": f["pageid"], "ns": 6, "title": f["title"]}
            if f.get("no_imageinfo"):
                page["filemissing"] = True
            elif ii_from <= j < ii_to:
                page["imageinfo"] = [self.imageinfo(f, params)]
                self.listed[f["title"]] += 1
            pages.append(page)
        body = {"query": {"pages": pages}} if pages else {}
        if ii_to < len(batch):  # imageinfo unfinished: the same generator batch again (ApiContinuationManager)
            body["continue"] = {"iicontinue": f"{batch[ii_to]['title'][5:]}|{batch[ii_to]['timestamp']}",
                                **({key: params[key]} if key in params else {}),
                                "continue": f"{key}||" if key in params else "||"}
        else:
            body["batchcomplete"] = True
            if first + limit < len(chosen):
                body["continue"] = {key: token(chosen[first + limit]), "continue": f"{key}||"}
        return 200, {}, body

    def imageinfo(self, f: dict, params: dict) -> dict:
        name, (width, height) = f["title"][5:], f["size"]
        url = f"https://upload.wikimedia.org/wikipedia/commons/a/ab/{name}"
        wanted = params["iiextmetadatafilter"].split("|")
        info = {"timestamp": f["timestamp"], "size": 12345, "width": width, "height": height, "url": url,
                "descriptionurl": f"https://commons.wikimedia.org/wiki/{f['title']}", "sha1": hashlib.sha1(
                    name.encode()).hexdigest(), "mime": f["mime"],
                "extmetadata": {k: {"value": v, "source": "commons-desc-page", "hidden": ""}
                                for k, v in f["meta"].items() if k in wanted}}
        thumb = int(params.get("iiurlwidth", 0))
        if thumb and width:
            suffix = ".png" if name.endswith(".svg") else ""
            info |= {"thumburl": f"https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/{name}/"
                                 f"{thumb}px-{name}{suffix}",
                     "thumbwidth": min(thumb, width), "thumbheight": round(height * min(thumb, width) / width)}
        info.pop(f.get("drop"), None)
        return info | f.get("override", {})


@pytest.fixture
def server():
    """Start a fake Commons API; yields (FakeCommons factory, api URL). The factory sets the
    wiki the running server answers from (or takes another object with `answer(params)`)."""
    state = {"wiki": FakeCommons()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            wiki = state["wiki"]
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            status, headers, body = wiki.answer(params)
            wiki.requests.append(params)
            wiki.agents.append(self.headers.get("User-Agent", ""))
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()

    def use(wiki=None, **kwargs) -> FakeCommons:
        state["wiki"] = wiki or FakeCommons(**kwargs)
        return state["wiki"]

    yield use, f"http://127.0.0.1:{httpd.server_address[1]}/w/api.php"
    httpd.shutdown()
    httpd.server_close()


def config(api: str, **commons) -> dict:
    section = {"api": api, "start": "2020-01-01", "end": "2020-01-03", "window_days": 1, "batch": 2,
               "thumb_width": 800, "maxlag": 5, **commons}
    return {"user_agent": UA, "retries": 3, "backoff_s": 0.5, "max_backoff_s": 1, "timeout_s": 10,
            "commons": section}


def read_part(path) -> pd.DataFrame:
    return pd.read_parquet(path).set_index("title")


def content(out) -> dict[str, list[dict]]:
    """Every part's rows without the moment they were read: two runs compare equal."""
    return {p.name: pd.read_parquet(p).drop(columns="retrieved_at").to_dict("records")
            for p in sorted(out.glob("*.parquet"))}


FAULTS = {
    0: (200, {"Retry-After": "5"}, {"error": {"code": "maxlag", "info": "Waiting for db1: 7 seconds lagged",
                                              "host": "db1", "lag": 7, "type": "db"}}),
    2: (429, {"Retry-After": "3"}, {"error": {"code": "http-429", "info": "Too many requests"}}),
    4: (200, {}, {"error": {"code": "ratelimited", "info": "You've exceeded your rate limit."}}),
}


@pytest.fixture
def collected(server, tmp_path):
    """One whole collection of both windows through the faults above."""
    use, api = server
    wiki = use(faults=FAULTS)
    sleeps = []
    summary = collect.collect("commons", config(api), tmp_path, sleep=sleeps.append)
    return summary, wiki, sleeps, tmp_path


def test_parts_are_windows_or_one_per_category():
    cfg = {"start": "2020-01-01", "end": "2020-01-03T12:00:00", "window_days": 1}
    assert commons_api.parts(cfg) == [W1, W2, "20200103T000000-20200103T120000"]
    assert commons_api.parts(cfg) == commons_api.parts(dict(cfg))
    cats = commons_api.parts({**cfg, "categories": ["Birds", "Category:birds", "Ärzte/Ärztinnen", "Ärzte_Ärztinnen"]})
    assert len(cats) == 3 and cats[0] == commons_api.category_part("Category:Birds")
    assert all(name.replace("-", "").replace("_", "").replace(".", "").isalnum() and name.isascii() for name in cats)
    with pytest.raises(ValueError, match="end is missing"):
        commons_api.parts({"start": "2020-01-01"})


def test_every_file_of_the_windows_is_written_once_with_its_rendition(collected):
    summary, wiki, _, out = collected
    assert summary["failed"] == {} and summary["part_rows"] == {W1: 12, W2: 2}
    first, second = read_part(out / f"{W1}.parquet"), read_part(out / f"{W2}.parquet")
    assert sorted(first.index) == sorted(f["title"] for f in FILES[:12])
    assert sorted(second.index) == ["File:Mike.jpg", "File:November.jpg"]
    # the boundary file was answered for both windows and the end of the range too; each is kept once or not at all
    assert wiki.listed["File:Mike.jpg"] == 2 and wiki.listed["File:Oscar.jpg"] == 1
    alpha = first.loc["File:Alpha.jpg"]
    assert alpha["source"] == "wikimedia" and alpha["source_id"] == alpha["page_id"] == str(FILES[0]["pageid"])
    assert alpha["url"] == "https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Alpha.jpg/960px-Alpha.jpg"
    assert (alpha["width"], alpha["height"], alpha["original_width"], alpha["original_height"]) == (
        "960", "720", "4000", "3000")
    assert alpha["original_url"] == "https://upload.wikimedia.org/wikipedia/commons/a/ab/Alpha.jpg"
    assert (alpha["license"], alpha["license_url"]) == ("CC BY-SA 4.0", BY_SA["LicenseUrl"])
    assert alpha["attribution"] == "Alice Example & Bob"
    assert alpha["sha1"] == hashlib.sha1(b"Alpha.jpg").hexdigest() and alpha["mime"] == "image/jpeg"
    assert alpha["upload_time"] == "2020-01-01T01:00:00Z" and alpha[REASON] == ""
    read = datetime.fromisoformat(alpha["retrieved_at"])
    assert abs((datetime.now(UTC) - read).total_seconds()) < 60
    lima = first.loc["File:Lima.svg"]
    assert lima["url"].endswith("/960px-Lima.svg.png") and (lima["width"], lima["height"]) == ("512", "512")
    # Foxtrot's imageinfo came only in the batch's second answer, and Echo's only in its first
    assert first.loc["File:Foxtrot.jpg", REASON] == "" and first.loc["File:Foxtrot.jpg", "url"]


def test_refused_files_keep_their_reasons(collected):
    first = read_part(collected[3] / f"{W1}.parquet")
    record = f"collect: window {W1} record"
    assert first[REASON].to_dict() == {
        "File:Alpha.jpg": "",
        "File:Bravo.jpg": "collect: restricted: trademarked, personality",
        "File:Charlie.jpg": "collect: attribution required but no author",
        "File:Delta.jpg": "",
        "File:Echo.jpg": f"{record} File:Echo.jpg: missing imageinfo.url",
        "File:Foxtrot.jpg": "",
        "File:Golf.jpg": f"{record} File:Golf.jpg: non-numeric imageinfo.width",
        "File:Hotel.jpg": f"{record} File:Hotel.jpg: missing imageinfo",
        "File:India.jpg": "",
        "File:Juliet.jpg": f"{record} File:Juliet.jpg: "
                           "no licence in extmetadata (LicenseShortName, UsageTerms, LicenseUrl)",
        "File:Kilo.ogg": "collect: not an image: audio/ogg",
        "File:Lima.svg": "",
    }
    assert first.loc["File:Delta.jpg", "attribution"] == "Own work by Dora"  # Credit when there is no Artist
    india = first.loc["File:India.jpg"]
    assert (india["license"], india["license_url"], india["license_short_name"], india["usage_terms"]) == (
        "Public domain", "", "", "Public domain")
    assert first.loc["File:Echo.jpg", "license"] == "CC BY-SA 4.0"  # the raw fields stay beside the reason
    assert first.loc["File:Golf.jpg", "width"] == "960" and first.loc["File:Golf.jpg", "original_width"] == ""


def test_parts_are_valid_manifests(collected):
    out = collected[3]
    for part in (W1, W2):
        frame = read_manifest(out / f"{part}.parquet")
        assert [c for c in FIELDS if c not in frame.columns] == []
        for row in frame.to_dict("records"):
            if not row[REASON]:
                assert contract_error(row, [], ["flickr", "wikimedia"]) == "", row["title"]


def test_requests_are_polite_and_lag_is_waited_out(collected):
    summary, wiki, sleeps, _ = collected
    assert sleeps[:2] == [5.0, 3.0]  # maxlag's Retry-After, then the 429's
    assert len(sleeps) == 3 and 0 <= sleeps[2] <= 0.5  # ratelimited without Retry-After: jittered backoff
    assert set(wiki.agents) == {UA}
    answered = [p for i, p in enumerate(wiki.requests) if i not in FAULTS]
    assert len(answered) == 8 + 2  # 7 batches of 2 (one in two answers) in the first window, 2 in the second
    for params in wiki.requests:
        assert params["maxlag"] == "5" and params["formatversion"] == "2" and params["iiurlwidth"] == "960"
        assert set(params["iiprop"].split("|")) >= {"url", "size", "mime", "sha1", "extmetadata", "timestamp"}
        assert params["gailimit"] == "2"
    assert answered[0]["gaistart"] == "2020-01-01T00:00:00Z" and answered[0]["gaiend"] == "2020-01-02T00:00:00Z"
    assert "gaicontinue" not in answered[0] and "gaicontinue" in answered[1]
    # a retried request is the same request; continuation only moves forward
    assert wiki.requests[0] == wiki.requests[1] and wiki.requests[2] == wiki.requests[3]
    assert len({json.dumps(p, sort_keys=True) for p in answered}) == len(answered)
    split = [p for p in answered if "iicontinue" in p]
    assert len(split) == 1 and split[0]["iicontinue"].startswith("Foxtrot.jpg|")


def test_lag_and_rate_limit_errors_ask_to_come_back_later():
    maxlag = lambda lag: {"error": {"code": "maxlag", "info": "Waiting for db1", "lag": lag}}
    waits = []
    for answer, headers in [(maxlag(7), {"Retry-After": "5"}), (maxlag(2), {}), (maxlag(12.5), {}),
                            ({"error": {"code": "ratelimited", "info": "slow down"}}, {})]:
        with pytest.raises(Retry) as retry:
            commons_api.check("window W", answer, headers)
        waits.append(retry.value.delay)
    assert waits == [5.0, 5.0, 12.5, None]  # None: the client's jittered backoff
    with pytest.raises(CollectError, match="window W: API error readonly: The wiki is in read-only mode"):
        commons_api.check("window W", {"error": {"code": "readonly", "info": "The wiki is in read-only mode"}}, {})
    commons_api.check("window W", {"batchcomplete": True}, {})


class Killed(BaseException):
    """The process dies: nothing in the collector catches it."""


def test_a_killed_collection_resumes_without_repeating_a_finished_page(server, tmp_path, monkeypatch):
    use, api = server
    clean = use()
    collect.collect("commons", config(api), tmp_path / "clean", sleep=lambda s: None)

    real = commons_api.pages

    def dies_after_three_pages(part, cfg, ctx, state):
        answers = real(part, cfg, ctx, state)
        for _ in range(3):
            yield next(answers)
        raise Killed

    first = use()
    monkeypatch.setattr(commons_api, "pages", dies_after_three_pages)
    with pytest.raises(Killed):
        collect.collect("commons", config(api), tmp_path / "run", sleep=lambda s: None)
    monkeypatch.setattr(commons_api, "pages", real)
    assert len(list((tmp_path / "run" / f"{W1}.pages").glob("page-*.parquet"))) == 3
    second = use()
    collect.collect("commons", config(api), tmp_path / "run", sleep=lambda s: None)

    assert content(tmp_path / "run") == content(tmp_path / "clean")
    titles = [t for p in (tmp_path / "run").glob("*.parquet") for t in pd.read_parquet(p)["title"]]
    assert len(titles) == len(set(titles)) == 14
    keys = lambda wiki: [json.dumps(p, sort_keys=True) for p in wiki.requests]
    assert len(first.requests) == 4  # three batches, the third in two answers
    assert sorted(keys(first) + keys(second)) == sorted(keys(clean))  # nothing asked twice, nothing skipped
    assert second.requests[0]["gaicontinue"].startswith("20200101070000|Golf.jpg")


def test_a_failed_request_fails_its_part_and_the_rerun_resumes_it(server, tmp_path):
    use, api = server
    broken = use(faults={3: (500, {}, {"error": "boom"})})
    cfg = config(api)
    cfg["retries"] = 0
    sleeps = []
    with pytest.raises(CollectError, match=f"1 of 2 parts failed .*{W1}.*HTTP 500"):
        collect.collect("commons", cfg, tmp_path, sleep=sleeps.append)
    summary = json.loads((tmp_path / "collection.json").read_text())
    assert list(summary["failed"]) == [W1] and summary["part_rows"] == {W2: 2}
    assert len(list((tmp_path / f"{W1}.pages").glob("page-*.parquet"))) == 2
    again = use()
    assert collect.collect("commons", cfg, tmp_path, sleep=sleeps.append)["part_rows"] == {W1: 12, W2: 2}
    # the unfinished batch (its first answer had come) is asked again; the finished ones are not
    assert again.requests[0] == broken.requests[2] and len(again.requests) == 8 - 2
    assert set(read_part(tmp_path / f"{W1}.parquet").index) == {f["title"] for f in FILES[:12]}


def test_an_api_error_fails_the_part_naming_it(server, tmp_path):
    use, api = server
    use(faults={0: (200, {}, {"error": {"code": "badvalue", "info": "Unrecognized value for parameter gaisort"}})})
    with pytest.raises(CollectError) as failure:
        collect.collect("commons", config(api), tmp_path, sleep=lambda s: None)
    failed = json.loads((tmp_path / "collection.json").read_text())["failed"]
    assert failed[W1] == f"window {W1}: API error badvalue: Unrecognized value for parameter gaisort"
    assert W1 in str(failure.value)


def test_a_user_agent_without_contact_is_refused(server, tmp_path):
    use, api = server
    wiki = use()
    cfg = config(api)
    cfg["user_agent"] = "gpic-collector/0.1"
    with pytest.raises(ValueError, match="no contact"):
        collect.collect("commons", cfg, tmp_path, sleep=lambda s: None)
    assert wiki.requests == []


def test_categories_collect_their_files_as_originals(server, tmp_path):
    use, api = server
    wiki = use()
    cfg = config(api, categories=["birds"], thumb_width=0)
    summary = collect.collect("commons", cfg, tmp_path, sleep=lambda s: None)
    part = commons_api.category_part("Category:Birds")
    assert summary["part_rows"] == {part: 3}
    rows = read_part(tmp_path / f"{part}.parquet")
    assert sorted(rows.index) == ["File:Alpha.jpg", "File:Lima.svg", "File:November.jpg"]
    assert rows.loc["File:Alpha.jpg", "url"] == rows.loc["File:Alpha.jpg", "original_url"]
    assert (rows.loc["File:Alpha.jpg", "width"], rows.loc["File:Alpha.jpg", "height"]) == ("4000", "3000")
    assert [p["gcmtitle"] for p in wiki.requests] == ["Category:Birds"] * 2
    assert all("iiurlwidth" not in p and p["gcmtype"] == "file" for p in wiki.requests)
