"""The packed demo corpus as its consumers see it: tars and indexes, byte-identical rebuilds,
`gpic verify` catching damage, the card loading in `datasets`, the tars in `webdataset`."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile

import datasets
import pandas as pd
import pytest
import webdataset as wds
import yaml
from typer.testing import CliRunner

from gpic.cli import app
from gpic.contracts import LEVELS
from gpic.layout import Layout
from gpic.review.verify import verify
from gpic.stages.pack import MANIFEST_FIELDS, ShardInputs, heldout_digest, pack, write_heldout_digest
from gpic.stages.publish import published_files
from gpic.store import read_table, read_tar, write_table, write_tar


@pytest.mark.slow
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
            for level in ("label", "short", "medium", "long"):  # every packed caption: its flags and its score
                assert record["caption_flags"][level] == getattr(row, f"{level}_flags")
                assert -1 <= record["caption_agreement"][level] == getattr(row, f"{level}_agreement") <= 1
            assert record["license_id"] and record["attribution"] is not None
            image = raw[row.image_offset: row.image_offset + row.image_size]
            assert hashlib.sha256(image).hexdigest() == record["sha256"]
        total += len(index)
    assert total == (provenance["state"] == "packed").sum()
    card = (packed / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in header["configs"]] == ["nano", "lite", "full"]
    captions = card.split("## Captions")[1]
    assert "scored against their image by siglip-tiny" in captions and "### Biases" in captions
    assert re.search(r"\| vocabulary \(distinct words\) \| \d+ \| \d+ \| \d+ \| \d+ \|", captions)
    assert re.search(r"\| agreement \(p5 / median / p95\) \| -?0\.\d+ / ", captions)
    assert f"{(provenance['state'] == 'packed').sum()} kept" in captions
    for line in (packed / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((packed / name).read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_packing_is_byte_identical_on_rebuild(demo, tmp_path):
    r = demo / "results"
    inputs = [ShardInputs(*(str(r / d / f"00003.{e}") for d, e in (("manifests", "parquet"), ("fetch", "parquet"),
                                                                   ("filter", "parquet"), ("captions", "parquet"),
                                                                   ("raw", "tar"))))]
    pack(inputs, "train", "full", tmp_path / "again.tar", tmp_path / "again.parquet")
    assert (tmp_path / "again.tar").read_bytes() == (r / "packed" / "train" / "gpic_train_00003.tar").read_bytes()


@pytest.fixture
def results(demo, tmp_path):
    """A private copy of the demo's results that a test may damage."""
    out = tmp_path / "results"
    for part in ("packed", "provenance", "manifests"):
        shutil.copytree(demo / "results" / part, out / part)
    return out


@pytest.mark.slow
def test_verify_passes_on_the_demo(demo):
    assert verify(demo / "results") == []
    run = CliRunner().invoke(app, ["verify", str(demo / "results")])
    assert run.exit_code == 0 and "verified" in run.output


@pytest.mark.slow
def test_verify_catches_a_corrupted_byte(results):
    tar = results / "packed" / "train" / "gpic_train_00002.tar"
    index = read_table(tar.with_suffix(".parquet"))
    blob = bytearray(tar.read_bytes())
    blob[int(index["image_offset"].iloc[0]) + 100] ^= 0xFF
    tar.write_bytes(bytes(blob))
    problems = verify(results)
    assert "train/gpic_train_00002.tar: sha256 differs from SHA256SUMS" in problems
    assert (f"train/gpic_train_00002.tar: {index['image_member'].iloc[0]} bytes do not match "
            "the sha256 in the index") in problems
    run = CliRunner().invoke(app, ["verify", str(results)])
    assert run.exit_code == 1 and "gpic_train_00002.tar" in run.output


@pytest.mark.slow
def test_verify_catches_a_deleted_member(results):
    tar = results / "packed" / "val" / "gpic_val_00000.tar"
    members = read_tar(tar)
    gone = sorted(members)[0]
    write_tar(tar, [(name, data) for name, data in members.items() if name != gone])
    problems = verify(results)
    assert f"val/gpic_val_00000.tar: member {gone} is in the index but not in the tar" in problems


@pytest.mark.slow
def test_verify_catches_a_key_packed_twice(results):
    train = results / "packed" / "train"
    key = read_table(train / "gpic_train_00001.parquet")["key"].iloc[0]
    for ext in ("tar", "parquet"):
        shutil.copy(train / f"gpic_train_00001.{ext}", train / f"gpic_train_00099.{ext}")
    problems = verify(results)
    assert f"key {key} is packed more than once: train/gpic_train_00001.tar, train/gpic_train_00099.tar" in problems
    assert "train/gpic_train_00099.tar: not in SHA256SUMS" in problems


@pytest.mark.slow
def test_verify_catches_a_key_missing_from_provenance(results):
    path = results / "provenance" / "00004.parquet"
    table = read_table(path)
    table.iloc[1:].to_parquet(path)
    problems = verify(results)
    assert any(p.startswith("provenance/00004:") for p in problems)


@pytest.mark.slow
def test_card_loads_with_datasets_and_round_trips(demo, tmp_path):
    packed = demo / "results" / "packed"
    indexes = {split: pd.concat([read_table(p) for p in sorted((packed / split).glob("*.parquet"))])
               for split in ("train", "val", "test")}
    for tier, train_shards in (("nano", 1), ("full", 8)):
        ds = datasets.load_dataset(str(packed), tier, cache_dir=str(tmp_path / "cache"))
        assert set(ds) == {"train", "validation", "test"}
        train_index = indexes["train"][
            indexes["train"]["tar"].isin([f"gpic_train_{i:05d}.tar" for i in range(train_shards)])]
        assert len(ds["train"]) == len(train_index)
        assert len(ds["validation"]) == len(indexes["val"]) and len(ds["test"]) == len(indexes["test"])
    by_key = indexes["test"].set_index("key")
    for sample in ds["test"]:
        row = by_key.loc[sample["__key__"]]
        image = sample["jpg"] if sample["jpg"] is not None else sample["png"]
        assert image.size == (row["width"], row["height"])
        assert sample["json"]["captions"]["long"] == row["long"] and sample["json"]["license"] == row["license"]


@pytest.mark.slow
def test_tars_stream_with_webdataset(demo):
    packed = demo / "results" / "packed"
    tars = sorted(str(p) for p in (packed / "val").glob("*.tar"))
    index = read_table(packed / "val" / "gpic_val_00000.parquet").set_index("key")
    seen = 0
    for sample in wds.WebDataset(tars, shardshuffle=False).decode("pil"):
        row = index.loc[sample["__key__"]]
        image = sample.get("jpg") or sample.get("png")
        assert image.size == (row["width"], row["height"])
        assert sample["json"]["captions"]["short"] == row["short"]
        seen += 1
    assert seen == len(index)


@pytest.mark.slow
def test_publish_dry_run_lists_the_files_with_sizes(demo):
    packed = demo / "results" / "packed"
    files = published_files(packed)
    names = {str(p.relative_to(packed)) for p in files}
    assert {"README.md", "SHA256SUMS", "train/gpic_train_00000.tar", "test/gpic_test_00001.parquet"} <= names
    assert len(names) == 2 + 2 * 11
    run = CliRunner().invoke(app, ["publish", str(demo / "results"), "--dry-run"])
    assert run.exit_code == 0, run.output
    total = sum(p.stat().st_size for p in files)
    assert f"{total:,}" in run.output and "gpic_val_00000.tar" in run.output


@pytest.mark.slow
def test_publish_refuses_a_damaged_corpus(results):
    (results / "packed" / "SHA256SUMS").write_text("")
    run = CliRunner().invoke(app, ["publish", str(results), "--repo-id", "org/gpic"])
    assert run.exit_code == 1 and "refusing to publish" in run.output


def test_retrieved_at_is_the_manifest_time_else_the_download_time():
    """A mirrored crawl carries its own collection time; without one, the record says when
    fetch downloaded the bytes, never when pack ran."""
    from gpic.contracts import LEVELS
    from gpic.stages.pack import COPIED, record

    row = {**dict.fromkeys(COPIED, "x"), "width": 640, "height": 480, "fetched_at": "2026-01-02T03:04:05+00:00",
           **{level: f"{level} caption" for level in LEVELS}, "caption_model_id": "m", "caption_model_revision": "r",
           **{f"{level}_flags": "" for level in LEVELS}, **{f"{level}_agreement": 0.1 for level in LEVELS}}
    assert record({**row, "retrieved_at": "2025-03-01T12:51:17Z"}, "nano").retrieved_at == "2025-03-01T12:51:17Z"
    for missing in ("", None):
        assert record({**row, "retrieved_at": missing}, "nano").retrieved_at == "2026-01-02T03:04:05+00:00"


def test_an_index_without_samples_has_the_schema_of_every_index(tmp_path):
    """A split that receives no samples still gets a tar and an index, typed like the others."""
    import pyarrow.parquet as pq

    from gpic.stages.pack import CAPTION_FIELDS, FETCH_FIELDS, INDEX_SCHEMA, MANIFEST_FIELDS
    from gpic.store import write_table

    tables = {"manifest": MANIFEST_FIELDS, "fetch": FETCH_FIELDS, "filter": ["key", "width", "height"],
              "captions": CAPTION_FIELDS}
    for name, columns in tables.items():
        write_table(pd.DataFrame(columns=columns), tmp_path / f"{name}.parquet")
    write_tar(tmp_path / "raw.tar", [])
    inputs = ShardInputs(*(str(tmp_path / f"{name}.parquet") for name in tables), raw=str(tmp_path / "raw.tar"))
    index = pack([inputs], "test", "nano", tmp_path / "out.tar", tmp_path / "out.parquet")
    assert len(index) == 0
    assert pq.read_schema(tmp_path / "out.parquet").remove_metadata() == INDEX_SCHEMA
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getmembers() == []


def write_block(root, captions: dict[str, str], fetched_at="t", retrieved_at="x") -> Layout:
    """Shards 00000-00001 with keys k0 (train), k1 (val), k2 (test), k3 (val, caption failed)."""
    layout = Layout(root)
    splits = {"k0": "train", "k1": "val", "k2": "test", "k3": "val"}
    for shard in ("00000", "00001"):
        keys = [f"{shard}-{k}" for k in splits]
        files = layout.shard(shard)
        write_table(pd.DataFrame({"key": keys, "split": list(splits.values()), "retrieved_at": retrieved_at,
                                  **{c: "x" for c in MANIFEST_FIELDS if c not in ("key", "split", "retrieved_at")}}),
                    files.table("manifests"))
        write_table(pd.DataFrame({"key": keys, "sha256": [f"h{k}" for k in keys], "raw_member": "m",
                                  "fetched_at": fetched_at, "license_id": "CC0-1.0"}), files.table("fetch"))
        write_table(pd.DataFrame({"key": keys, "width": 300, "height": 200}), files.table("filter"))
        write_table(pd.DataFrame({"key": keys, "caption_status": ["ok", "ok", "ok", "failed"],
                                  **{level: [captions.get(k, "a photo") for k in splits] for level in LEVELS},
                                  **{f"{level}_flags": "" for level in LEVELS},
                                  **{f"{level}_agreement": 0.1 for level in LEVELS},
                                  "caption_model_id": "m", "caption_model_revision": "r"}), files.table("captions"))
    return layout


def test_the_heldout_digest_follows_the_val_and_test_samples_only(tmp_path):
    """Held-out packing depends on this digest, not on the caption stamp: captioning a block
    again must leave it unchanged unless a val/test sample changed."""
    first = heldout_digest(write_block(tmp_path / "a", {}), "00000-00001")
    assert {split: d["rows"] for split, d in first.items()} == {"val": 2, "test": 2}
    train_changed = heldout_digest(write_block(tmp_path / "b", {"k0": "another train caption"}), "00000-00001")
    failed_changed = heldout_digest(write_block(tmp_path / "c", {"k3": "never packed"}), "00000-00001")
    assert train_changed == failed_changed == first
    val_changed = heldout_digest(write_block(tmp_path / "d", {"k1": "a new val caption"}), "00000-00001")
    assert val_changed["val"] != first["val"] and val_changed["test"] == first["test"]
    write_heldout_digest(write_block(tmp_path / "e", {}), "00000-00001", tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text()) == {"block": "00000-00001", **first}


def test_a_refetch_changes_the_heldout_digest_only_where_the_fetch_time_is_the_records_time(tmp_path):
    """A digest covers what the held-out samples carry: `retrieved_at` is the manifest's time,
    or the fetch time where the manifest has none."""
    first = heldout_digest(write_block(tmp_path / "a", {}), "00000-00001")
    assert heldout_digest(write_block(tmp_path / "b", {}, fetched_at="later"), "00000-00001") == first
    bare = heldout_digest(write_block(tmp_path / "c", {}, retrieved_at=""), "00000-00001")
    assert bare != first
    assert heldout_digest(write_block(tmp_path / "d", {}, fetched_at="later", retrieved_at=""), "00000-00001") != bare
