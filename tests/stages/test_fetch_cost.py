"""`gpic cost` on the fetch tables: throughput by host and the collection wall time that
fetch.host_budget allows at the target scale."""

from __future__ import annotations

import pandas as pd
import pytest

from gpic.config import validate_config
from gpic.review.cost import estimate
from gpic.stages.fetch import blank_record


@pytest.fixture
def config():
    return validate_config({"sources": ["unused.csv"], "shards": 4, "judge": {"model": "m"}, "embed": {"model": "m"},
                            "caption": {"model": "m"}, "eval": {"model": "m"}})


def record(key: int, host: str, status: str = "ok", attempts: int = 1, wire_bytes: int = 0, fetch_s: float = 0.0):
    return {**blank_record(f"{key:020x}"), "host": host, "fetch_status": status, "attempts": attempts,
            "wire_bytes": wire_bytes, "fetch_s": fetch_s}


def test_cost_states_throughput_by_host_and_the_collection_wall_time(tmp_path, config):
    results = tmp_path / "results"
    (results / "fetch").mkdir(parents=True)
    commons, flickr = "upload.wikimedia.org", "live.staticflickr.com"
    rows = ([record(i, commons, wire_bytes=100_000, fetch_s=0.5) for i in range(6)]
            + [record(10 + i, flickr, wire_bytes=50_000, fetch_s=0.25) for i in range(3)]
            + [record(20, flickr, "failed", attempts=2, wire_bytes=10, fetch_s=1.0),
               record(21, "", wire_bytes=0, fetch_s=0.01),  # a file URL: no host
               record(22, commons, "dropped", attempts=0)])  # licence drop: never asked
    pd.DataFrame(rows).to_parquet(results / "fetch" / "00000.parquet")
    # a table from before the columns came: its keys count, its hosts are unknown
    old = pd.DataFrame([{"key": "e" * 20, "fetch_status": "ok", "attempts": 1}])
    old.to_parquet(results / "fetch" / "00001.parquet")
    keys = len(rows) + 1
    config["fetch"].update(host_budget={commons: 50}, concurrent_jobs=500, per_host=4)
    config["cost"]["target"]["raw"] = 110e6

    report = estimate(results, config)
    collected = report["collection"]
    hosts = {h["host"]: h for h in collected["hosts"]}
    assert sorted(hosts) == [flickr, commons] and collected["keys"] == keys
    c, f = hosts[commons], hosts[flickr]
    assert (c["keys"], c["ok"], c["requests"], c["wire_bytes"]) == (6, 6, 6, 600_000)
    assert c["images_per_s"] == pytest.approx(2.0) and c["bytes_per_s"] == pytest.approx(200_000)
    assert (c["bound"], c["requests_per_s"]) == ("budget", 50)  # 2,000 connections could carry 4,000/s
    assert c["target_requests"] == pytest.approx(110e6 * 6 / keys)
    assert c["wall_hours"] == pytest.approx(110e6 * 6 / keys / 50 / 3600)
    assert (f["requests"], f["ok"], f["bound"]) == (5, 3, "connections")
    assert f["requests_per_s"] == pytest.approx(500 * 4 * 5 / 1.75)
    assert collected["wall_hours"] == c["wall_hours"] and collected["slowest_host"] == commons
    prepare = next(job for job in report["jobs"] if job["job"] == "prepare")
    assert prepare["wall_hours"] == c["wall_hours"] and prepare["wall_bound"] == f"collection from {commons}"
    assert report["totals"]["wall_hours"] == pytest.approx(sum(job.get("wall_hours", 0) for job in report["jobs"]))
    assert any(note.startswith(f"Collection wall time at the target: {c['wall_hours']:,.1f} h, set by {commons}")
               for note in report["notes"])
    assert any(note.startswith(f"Collection from {commons}: 6 images, 0.6 MB received here (2.0 images/s, "
                               "0.20 MB/s per connection)") and "its budget of 50 requests/s" in note
               for note in report["notes"])


def test_cost_without_http_downloads_says_so(tmp_path, config):
    (tmp_path / "fetch").mkdir()
    pd.DataFrame([record(1, "", fetch_s=0.01)]).to_parquet(tmp_path / "fetch" / "00000.parquet")
    report = estimate(tmp_path, config)
    assert report["collection"]["hosts"] == [] and report["collection"]["wall_hours"] is None
    assert "Collection: no http(s) downloads in this run's fetch tables, so no throughput by host." in report["notes"]
