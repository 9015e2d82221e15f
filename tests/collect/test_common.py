"""The collection base: checkpointed parts (resume without duplicates, settings changes), the
driver's failure handling, HTML attributions, windows, rate limits, and collector refusals
reaching partition as recorded drops."""

from __future__ import annotations

import json
import sys
import types
from datetime import UTC, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gpic import collect
from gpic.collect.common import (
    REASON,
    CollectError,
    Page,
    RateLimit,
    Window,
    collect_part,
    html_to_text,
    require_user_agent,
    windows,
)
from gpic.config import validate_config
from gpic.http import retry_after
from gpic.stages import partition

UA = "gpic-test/0 (test@example.org)"


def row(i: int, **extra) -> dict:
    return {"source": "wikimedia", "source_id": str(i), "url": f"https://upload.example.org/{i}.jpg",
            "license": "CC0", "license_url": "https://creativecommons.org/publicdomain/zero/1.0/",
            "attribution": "Ann", "title": f"File:{i}.jpg", "retrieved_at": "2026-11-30T10:00:00+00:00",
            "width": "800", "height": "600", **extra}


class Killed(Exception):
    pass


def numbered_pages(total: int, per_page: int, calls: list, kill_after: int | None = None):
    """A collector's pages over ids 0..total-1; state = the next id. Records each page it makes."""
    def pages(state):
        start = state or 0
        made = 0
        while True:
            if kill_after is not None and made == kill_after:
                raise Killed
            ids = list(range(start, min(start + per_page, total)))
            calls.append(start)
            start += per_page
            made += 1
            yield Page([row(i) for i in ids], start if start < total else None)
            if start >= total:
                return
    return pages


def test_a_killed_part_resumes_from_its_last_page_without_duplicates(tmp_path):
    out = tmp_path / "part.parquet"
    calls = []
    with pytest.raises(Killed):
        collect_part(out, numbered_pages(10, 3, calls, kill_after=2), ["page_id"])
    assert not out.exists() and calls == [0, 3]
    assert collect_part(out, numbered_pages(10, 3, calls), ["page_id"]) == 10
    assert calls == [0, 3, 6, 9]  # pages 0 and 3 were not asked for again
    table = pq.read_table(out).to_pandas()
    assert table["source_id"].tolist() == [str(i) for i in range(10)]
    assert list(table.columns[:10]) == collect.common.MANIFEST and REASON in table.columns
    assert not out.with_suffix(".pages").exists()


def test_a_part_is_its_pages_in_order_and_partition_keeps_the_first_of_a_repeat(tmp_path):
    """No safety net in the part hides a collector that repeats rows: the checkpoints keep a
    resumed part free of repeats, and a row the source lists twice is one key to partition."""
    def pages(state):
        yield Page([row(1), row(2)], {"next": 1})
        yield Page([], {"next": 2})  # a page with no rows (a window split) is a checkpoint only
        yield Page([row(2, title="again"), row(3)], None)

    out = tmp_path / "p.parquet"
    assert collect_part(out, pages, []) == 4
    assert pq.read_table(out).column("title").to_pylist() == ["File:1.jpg", "File:2.jpg", "again", "File:3.jpg"]
    summary = partition.partition([str(out)], validate_config({"sources": [str(out)], "shards": 1}), tmp_path / "m")
    assert (summary["keys"], summary["repeated_keys"]) == (3, 1)
    assert pd.read_parquet(tmp_path / "m" / "00000.parquet").set_index("source_id").loc["2", "title"] == "File:2.jpg"


def test_pages_written_with_other_settings_are_not_resumed(tmp_path):
    out = tmp_path / "p.parquet"
    calls = []
    with pytest.raises(Killed):
        collect_part(out, numbered_pages(6, 2, calls, kill_after=1), [], params="old")
    collect_part(out, numbered_pages(6, 2, calls), [], params="new")
    assert calls == [0, 0, 2, 4]  # started again: the old page does not mix into the new part


def test_a_collector_that_stops_early_fails_the_part(tmp_path):
    def pages(state):
        yield Page([row(1)], {"more": True})

    with pytest.raises(CollectError, match="without finishing"):
        collect_part(tmp_path / "p.parquet", pages, [])
    assert not (tmp_path / "p.parquet").exists()


@pytest.fixture
def fake_collector(monkeypatch):
    """A registered collector whose parts are three windows; part 'b' fails while `broken` holds."""
    mod = types.ModuleType("gpic_test_fake_collector")
    mod.COLUMNS = ["page_id"]
    mod.broken = True
    mod.calls = []

    def parts(cfg):
        return ["a", "b", "c"]

    def pages(part, cfg, ctx, state):
        mod.calls.append((part, cfg.get("size"), cfg.get("allow")))
        if part == "b" and mod.broken:
            raise CollectError("b: HTTP 500 forever")
        yield Page([row(ord(part), page_id=part)], None)

    mod.parts, mod.pages = parts, pages
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(collect.COLLECTORS, "fake", (mod.__name__, "fake"))
    return mod


def test_a_failed_part_is_recorded_and_a_rerun_retries_only_it(tmp_path, fake_collector):
    cfg = {"user_agent": UA, "fake": {"size": 1, "end": "2020"}}
    with pytest.raises(CollectError, match="1 of 3 parts failed .*b: HTTP 500"):
        collect.collect("fake", cfg, tmp_path, allow=["CC0-1.0"])
    summary = json.loads((tmp_path / collect.SUMMARY).read_text())
    assert summary["failed"] == {"b": "b: HTTP 500 forever"} and summary["part_rows"] == {"a": 1, "c": 1}
    assert fake_collector.calls[0] == ("a", 1, ["CC0-1.0"])

    fake_collector.broken, fake_collector.calls[:] = False, []
    summary = collect.collect("fake", cfg, tmp_path, allow=["CC0-1.0"])
    assert [c[0] for c in fake_collector.calls] == ["b"] and summary["rows"] == 3 and not summary["failed"]
    assert [p.name for p in collect.part_files(tmp_path / collect.SUMMARY)] == ["a.parquet", "b.parquet",
                                                                              "c.parquet"]
    # Only the part list changed (the end of the range): finished parts are kept.
    fake_collector.calls[:] = []
    collect.collect("fake", {**cfg, "fake": {"size": 1, "end": "2021"}}, tmp_path, allow=["CC0-1.0"])
    assert fake_collector.calls == []
    # A setting that shapes the rows changed (or the licences asked for): every part is collected again.
    collect.collect("fake", {**cfg, "fake": {"size": 2, "end": "2021"}}, tmp_path, allow=["CC0-1.0"])
    assert [c[0] for c in fake_collector.calls] == ["a", "b", "c"]
    fake_collector.calls[:] = []
    collect.collect("fake", {**cfg, "fake": {"size": 2, "end": "2021"}}, tmp_path, allow=["CC-BY-[0-9]*"])
    assert [c[0] for c in fake_collector.calls] == ["a", "b", "c"]


def test_only_names_parts_of_the_config(tmp_path, fake_collector):
    with pytest.raises(ValueError, match="no such part 'z'"):
        collect.collect("fake", {"user_agent": UA, "fake": {}}, tmp_path, only=["z"])
    with pytest.raises(ValueError, match="unknown collector 'nope'"):
        collect.parts({}, "nope")
    with pytest.raises(ValueError, match="collect.commons is missing"):
        collect.parts({}, "commons")


@pytest.mark.parametrize("agent", ["", "gpic-collector/0.1", "python-requests/2.32"])
def test_a_user_agent_without_contact_is_refused(agent):
    with pytest.raises(ValueError, match="no contact"):
        require_user_agent(agent)
    with pytest.raises(ValueError, match="no contact"):
        collect.Context(agent).client()


def test_user_agents_with_a_contact_pass():
    assert require_user_agent(UA) == UA
    assert require_user_agent("gpic/0.1 (https://example.org/gpic)")


@pytest.mark.parametrize(("fragment", "text"), [
    ('<a href="//commons.wikimedia.org/wiki/User:Ann" title="User:Ann">Ann&nbsp;Smith</a>', "Ann Smith"),
    ('<span class="fn"><a href="https://www.flickr.com/people/x">x</a></span> from Paris', "x from Paris"),
    ("Photo by <b>Jo</b><br/>NASA", "Photo by Jo NASA"),
    ('<a href="https://example.org/me"></a>', "https://example.org/me"),
    ("R&amp;D <script>alert(1)</script>lab", "R&D lab"),
    ("  plain   text ", "plain text"),
    ("Unclosed <i>tag", "Unclosed tag"),
])
def test_html_attributions_become_plain_text(fragment, text):
    assert html_to_text(fragment) == text


def test_windows_are_half_open_and_split_in_halves():
    parts = windows("2020-01-01", "2020-01-10", 4)
    assert [(w.start.day, w.end.day) for w in parts] == [(1, 5), (5, 9), (9, 10)]
    first = parts[0]
    assert first.contains(first.start) and not first.contains(first.end)
    low, high = first.halves()
    assert low.end == high.start == datetime(2020, 1, 3, tzinfo=UTC)
    assert Window.parse(first.name) == first
    with pytest.raises(ValueError, match="not after start"):
        windows("2020-01-10", "2020-01-01", 1)


def test_rate_limit_spaces_calls():
    now, waits = [0.0], []

    def sleep(s):
        waits.append(s)
        now[0] += s

    bucket = RateLimit(per_second=2.0, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        bucket.take()
    assert waits == [0.5, 0.5, 0.5, 0.5]  # 2 per second


def test_retry_after_reads_seconds_and_dates():
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("soon") is None and retry_after(None) is None


def test_collector_refusals_reach_partition_as_recorded_drops(tmp_path):
    def pages(state):
        yield Page([row(1), row(2, **{REASON: "collect: restricted: trademarked"})], None)

    part = tmp_path / "collect" / "p.parquet"
    collect_part(part, pages, [])
    config = validate_config({"sources": [str(part)], "shards": 2})
    partition.partition([str(part)], config, tmp_path / "manifests")
    shards = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "manifests").glob("0*.parquet"))])
    errors = dict(zip(shards["source_id"], shards["contract_error"], strict=True))
    assert errors == {"1": "", "2": "collect: restricted: trademarked"}


def test_a_secret_never_reaches_a_log_or_an_error(caplog):
    """A connection error's text holds the whole URL, query and API key included."""
    import logging
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: every request is refused
    client = collect.Context(UA, {"retries": 2}, sleep=lambda s: None).client(secrets=("k3y-value",))
    with caplog.at_level(logging.INFO), pytest.raises(CollectError) as failure:
        client.get(f"http://127.0.0.1:{port}/rest", {"api_key": "k3y-value", "q": 1}, "flickr w1")
    assert "gave up after 3 attempts" in str(failure.value) and "ConnectionError" in str(failure.value)
    assert "***" in str(failure.value) and "k3y-value" not in str(failure.value)
    assert "retry 2" in caplog.text and "k3y-value" not in caplog.text
