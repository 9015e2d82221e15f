"""The whole demo workflow through Snakemake on real files: every key ends in exactly one
final state, every bad input kind gets its reason, and the packed corpus is complete."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from gpic.store import read_table

from helpers import BIN, snakemake
from helpers import DEMO_SHARDS as SHARDS

EXPECTED = {  # demo category -> (state, stage, reason prefix)
    "truncated": ("dropped", "filter", "decode corrupt"),
    "not_image": ("dropped", "filter", "decode not an image"),
    "too_small": ("dropped", "filter", "too small"),
    "blank": ("dropped", "filter", "near-blank"),
    "overexposed": ("dropped", "filter", "over-exposed"),
    "blurry": ("dropped", "filter", "blurry"),
    "license": ("dropped", "fetch", "licence"),
    "attribution": ("dropped", "fetch", "licence attribution missing"),
    "missing_url": ("dropped", "partition", "manifest empty url"),
    "fetch_error": ("failed", "fetch", "no such file"),
    "bad_scheme": ("dropped", "partition", "manifest unsupported url scheme"),
    "missing_source_id": ("dropped", "partition", "manifest empty source_id"),
}


@pytest.mark.slow
def test_every_key_ends_in_exactly_one_state(demo, provenance):
    summary = json.loads((demo / "results" / "manifests" / "partition.json").read_text())
    for shard in SHARDS:
        rows = provenance[provenance["shard"] == shard]
        manifest = read_table(demo / "results" / "manifests" / f"{shard}.parquet")
        assert sorted(rows["key"]) == sorted(manifest["key"])
        counts = rows["state"].value_counts()
        assert summary["per_shard"][shard] == (counts.get("packed", 0) + counts.get("dropped", 0)
                                               + counts.get("failed", 0))
    assert provenance["key"].is_unique
    assert set(provenance["state"]) == {"packed", "dropped", "failed"}
    assert (provenance.loc[provenance["state"] != "packed", "reason"] != "").all()
    out = subprocess.run([str(BIN / "gpic"), "summary", "--results", str(demo / "results"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["conserved"]


@pytest.mark.slow
def test_every_bad_input_kind_gets_its_reason(demo, provenance):
    expected = pd.read_csv(demo / "resources" / "demo" / "expected.csv", dtype=str, keep_default_na=False)
    for category, (state, stage, reason) in EXPECTED.items():
        rows = expected[expected["expect"] == category]
        assert len(rows), category
        if category == "missing_source_id":  # keyed by content; find them by their reason
            hits = provenance[provenance["reason"] == reason]
            assert len(hits) == len(rows)
            continue
        got = rows.merge(provenance, on=["source", "source_id"])
        assert len(got) == len(rows), category
        assert (got["state"] == state).all() and (got["stage"] == stage).all(), (
            category, got[["state", "stage", "reason"]])
        assert got["reason"].str.startswith(reason).all(), (category, got["reason"].tolist())


@pytest.mark.slow
def test_good_photos_are_packed_and_planted_copies_removed(demo, provenance):
    expected = pd.read_csv(demo / "resources" / "demo" / "expected.csv", dtype=str, keep_default_na=False)
    got = expected.merge(provenance, on=["source", "source_id"])
    copies = got[got["expect"] == "duplicate"]
    by_id = got.set_index(["source_id"])
    for copy in copies.itertuples():
        parent = by_id.loc[copy.parent_source_id]
        pair = {copy.state, parent["state"]}
        assert pair == {"packed", "dropped"}, (copy.source_id, copy.state, parent["state"])
        loser_reason = copy.reason if copy.state == "dropped" else parent["reason"]
        assert loser_reason.startswith("duplicate ("), loser_reason
    distinct = got[(got["expect"] == "packed") & ~got["source_id"].isin(copies["parent_source_id"])]
    assert (distinct["state"] == "packed").all(), distinct.loc[distinct["state"] != "packed", ["source_id", "reason"]]


@pytest.mark.slow
def test_lineage_of_a_packed_and_a_dropped_key(demo, provenance):
    for state in ("packed", "dropped"):
        key = provenance.loc[provenance["state"] == state, "key"].iloc[0]
        out = subprocess.run([str(BIN / "gpic"), "lineage", key, "--results", str(demo / "results"), "--json"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        assert record["manifests"]["url"].startswith("file://") or record["manifests"]["contract_error"]
        assert record["provenance"]["state"] == state
        if state == "packed":
            assert record["captions"]["caption_model_id"] == "qwen3-vl-tiny"
            assert record["dedup"]["cluster_members"]
            assert record["provenance"]["tar"].endswith(".tar")
    human = subprocess.run([str(BIN / "gpic"), "lineage", key, "--results", str(demo / "results")],
                           capture_output=True, text=True)
    assert human.returncode == 0 and key in human.stdout
    missing = subprocess.run([str(BIN / "gpic"), "lineage", "0" * 20, "--results", str(demo / "results")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "not in shard" in missing.stdout


@pytest.mark.slow
def test_nothing_pending_after_a_full_run(demo):
    run = snakemake(demo, "-n")
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr
