"""The whole demo workflow through Snakemake on real files: every key ends in exactly one
final state, every bad input kind gets its reason, and the packed corpus is complete."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gpic.demo import build_demo
from gpic.pack import ShardInputs, pack
from gpic.store import read_table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARDS = [f"{i:05d}" for i in range(8)]

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


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=work)


@pytest.fixture(scope="session")
def demo(tmp_path_factory, tiny_models) -> Path:
    work = tmp_path_factory.mktemp("demo")
    build_demo(work / "resources" / "demo")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for stage, model in (("judge", "vlm"), ("caption", "vlm"), ("embed", "copy_detector")):
        config[stage]["model"] = str(tiny_models[model])
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(work, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    return work


@pytest.fixture(scope="session")
def provenance(demo) -> pd.DataFrame:
    return pd.concat([read_table(demo / "results" / "provenance" / f"{s}.parquet").assign(shard=s) for s in SHARDS])


def test_every_key_ends_in_exactly_one_state(demo, provenance):
    summary = json.loads((demo / "results" / "manifests" / "partition.json").read_text())
    for shard in SHARDS:
        rows = provenance[provenance["shard"] == shard]
        manifest = read_table(demo / "results" / "manifests" / f"{shard}.parquet")
        assert sorted(rows["key"]) == sorted(manifest["key"])
        counts = rows["state"].value_counts()
        assert summary["per_shard"][shard] == counts.get("packed", 0) + counts.get("dropped", 0) + counts.get("failed", 0)
    assert provenance["key"].is_unique
    assert set(provenance["state"]) == {"packed", "dropped", "failed"}
    assert (provenance.loc[provenance["state"] != "packed", "reason"] != "").all()
    out = subprocess.run([str(BIN / "gpic"), "summary", "--results", str(demo / "results"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["conserved"]


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
        assert (got["state"] == state).all() and (got["stage"] == stage).all(), (category, got[["state", "stage", "reason"]])
        assert got["reason"].str.startswith(reason).all(), (category, got["reason"].tolist())


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


def test_packed_shards_indexes_and_card(demo, provenance):
    packed = demo / "results" / "packed"
    tars = {split: sorted((packed / split).glob("*.tar")) for split in ("train", "val", "test")}
    assert [len(tars[s]) for s in ("train", "val", "test")] == [8, 1, 2]
    total = 0
    for tar_path in sum(tars.values(), []):
        index = read_table(tar_path.with_suffix(".parquet"))
        raw = tar_path.read_bytes()
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
        assert names == sorted(names) and len(names) == 2 * len(index)
        for row in index.itertuples():
            record = json.loads(raw[row.json_offset: row.json_offset + row.json_size])
            assert record["key"] == row.key and record["split"] in tar_path.name
            assert set(record["captions"]) == {"label", "short", "medium", "long"}
            assert record["license_id"] and record["attribution"] is not None
            image = raw[row.image_offset: row.image_offset + row.image_size]
            assert hashlib.sha256(image).hexdigest() == record["sha256"]
        total += len(index)
    assert total == (provenance["state"] == "packed").sum()
    card = (packed / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in header["configs"]] == ["nano", "lite", "full"]
    for line in (packed / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((packed / name).read_bytes()).hexdigest() == digest


def test_packing_is_byte_identical_on_rebuild(demo, tmp_path):
    r = demo / "results"
    inputs = [ShardInputs(*(str(r / d / f"00003.{e}") for d, e in (("manifests", "parquet"), ("fetch", "parquet"),
                                                                   ("filter", "parquet"), ("captions", "parquet"), ("raw", "tar"))))]
    pack(inputs, "train", "full", tmp_path / "again.tar", tmp_path / "again.parquet")
    assert (tmp_path / "again.tar").read_bytes() == (r / "packed" / "train" / "gpic_train_00003.tar").read_bytes()


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


def test_nothing_pending_after_a_full_run(demo):
    run = snakemake(demo, "-n")
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr
