"""GPIC's published layout, read and written: tars whose samples are `{key}.json` then
`{key}.jpg|png` with GPIC's one-caption record, indexed by `gpic index` (local paths and
fsspec URLs), streamed and resumed by the loader, checked by `gpic verify --packed-only`,
turned into FD reference statistics; and `pack.schema: gpic` writing records GPIC's tools
read and ours still do."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpic.cli import app
from gpic.config import ConfigError, validate_config
from gpic.contracts import (
    LEVELS,
    Captions,
    GpicRecord,
    GpicSampleRecord,
    SampleRecord,
    read_record,
    to_gpic,
)
from gpic.index import index_shards, index_tar
from gpic.loader import PackedDataset
from gpic.review.verify import verify, verify_packed
from gpic.stages.pack import INDEX_SCHEMA, pack, tiers_of_shard
from gpic.store import read_table

TYPES = ("tag", "short", "medium", "long")
LEVEL = {"tag": "label", "short": "short", "medium": "medium", "long": "long"}
GPIC_FIELDS = {"key", "retrieved_at", "license", "license_url", "attribution", "img_width", "img_height", "split",
               "caption_type", "caption"}


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def gpic_samples(photos: dict, start: int, n: int) -> list[tuple[dict, str, bytes]]:
    """GPIC records cycling through the four caption types, every third image a PNG, each a
    different crop (so features and hashes differ)."""
    out = []
    names = sorted(photos)
    for i in range(start, start + n):
        photo = photos[names[i % len(names)]].convert("RGB")
        w, h = 40 + 4 * (i % 5), 32 + 2 * (i % 7)
        image = photo.crop((3 * i, 2 * i, 3 * i + 4 * w, 2 * i + 4 * h)).resize((w, h))
        ext = "png" if i % 3 == 2 else "jpg"
        caption_type = TYPES[i % 4]
        record = {"key": f"{i:09d}", "retrieved_at": "2025-05-01T00:00:00Z", "license": "cc-by-4.0",
                  "license_url": "https://creativecommons.org/licenses/by/4.0/", "attribution": f"Author {i}",
                  "img_width": w, "img_height": h, "split": ["lite", "full"] if i % 2 else ["full"],
                  "caption_type": caption_type, "caption": f"{caption_type} caption of image {i}"}
        out.append((record, ext, encoded(image, "PNG" if ext == "png" else "JPEG")))
    return out


def write_gpic_tar(path: Path, samples: list[tuple[dict, str, bytes]]) -> None:
    """As GPIC publishes them: per sample the json first, then the image (not name order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for record, ext, image in samples:
            for name, data in ((f"{record['key']}.json", json.dumps(record).encode()),
                               (f"{record['key']}.{ext}", image)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def gpic_dir(tmp_path_factory, photos) -> Path:
    """Two GPIC test tars (6 and 5 samples) in a flat folder, as downloaded from the hub."""
    folder = tmp_path_factory.mktemp("gpic")
    write_gpic_tar(folder / "gpic_test_00000.tar", gpic_samples(photos, 0, 6))
    write_gpic_tar(folder / "gpic_test_00001.tar", gpic_samples(photos, 6, 5))
    return folder


@pytest.fixture
def indexed(gpic_dir, tmp_path) -> Path:
    """A private copy of the GPIC tars with indexes beside them, built by `gpic index`."""
    folder = tmp_path / "gpic"
    shutil.copytree(gpic_dir, folder)
    run = CliRunner().invoke(app, ["index", str(folder)])
    assert run.exit_code == 0, run.output
    return folder


def records_of(tar: Path) -> dict[str, dict]:
    with tarfile.open(tar) as archive:
        return {m.name[:-5]: json.load(archive.extractfile(m)) for m in archive if m.name.endswith(".json")}


# ---------------------------------------------------------------------------
# The mapping (gpic.contracts)
# ---------------------------------------------------------------------------

def our_record(**changes) -> SampleRecord:
    fields = dict(key="k1", source="wikimedia", source_id="7", url="https://example.org/a.jpg", license="CC BY 4.0",
                  license_id="CC-BY-4.0", license_url="https://creativecommons.org/licenses/by/4.0/",
                  attribution="A. Author", title="A photo", retrieved_at="2026-01-01T00:00:00Z", sha256="ab" * 32,
                  width=640, height=480, split="train", tier="lite",
                  captions=Captions(label="a cat", short="A cat sits.", medium="A cat sits. It is grey.",
                                    long="A grey cat sits on a red sofa in a sunny room."),
                  caption_model="qwen", caption_model_revision="rev")
    return SampleRecord(**(fields | changes))


def test_either_schema_reads_into_one_form_and_ours_round_trips_through_gpics():
    ours = our_record()
    normal = read_record(ours.model_dump_json(), check=True)
    assert normal.record_schema == "ours" and normal.level is None
    assert (normal.width, normal.height, normal.split, normal.tier) == (640, 480, "train", "lite")
    assert normal.caption("long") == ("long", ours.captions.long)

    written = to_gpic(ours, ["lite", "full"], "short")
    data = json.loads(written.model_dump_json())
    assert list(data)[:10] == ["key", "retrieved_at", "license", "license_url", "attribution", "img_width",
                               "img_height", "split", "caption_type", "caption"]
    assert (data["img_width"], data["img_height"], data["split"]) == (640, 480, ["lite", "full"])
    assert (data["caption_type"], data["caption"], data["tag"]) == ("short", "A cat sits.", "a cat")
    GpicRecord.model_validate(data)
    back = read_record(data, check=True)
    assert back.record_schema == "gpic" and back.level == "short" and back.tier == "lite"
    # every fact survives except train/val/test, which GPIC keeps in the tar's name
    assert back.row() == normal.row() | {"split": ""}
    assert back.caption("label") == ("label", "a cat")

    published = {name: data[name] for name in GPIC_FIELDS} | {"caption_type": "tag", "caption": "a dog"}
    one = read_record(published)
    assert one.captions == {"label": "a dog"} and one.license_id == "" and one.source == ""
    assert one.caption("long") == ("label", "a dog")  # not held: its own caption, named by our level

    with pytest.raises(ValueError, match="caption_type"):
        to_gpic(ours, ["full"], "label")
    with pytest.raises(KeyError, match="neither"):
        read_record({"key": "k", "text": "x"})
    with pytest.raises(ValueError):
        read_record(published | {"caption_type": "title"}, check=True)


# ---------------------------------------------------------------------------
# gpic index
# ---------------------------------------------------------------------------

def test_gpic_index_writes_our_index_schema_beside_each_tar(indexed):
    for tar in sorted(indexed.glob("*.tar")):
        path = tar.with_suffix(".parquet")
        assert pq.read_schema(path).remove_metadata() == INDEX_SCHEMA
        index = read_table(path)
        records = records_of(tar)
        assert sorted(index["key"]) == sorted(records) and list(index["key"]) == sorted(index["key"])
        blob = tar.read_bytes()
        for row in index.itertuples():
            record = records[row.key]
            assert json.loads(blob[row.json_offset:row.json_offset + row.json_size]) == record
            image = blob[row.image_offset:row.image_offset + row.image_size]
            assert Image.open(io.BytesIO(image)).size == (record["img_width"], record["img_height"])
            assert row.sha256 == hashlib.sha256(image).hexdigest()
            assert (row.width, row.height, row.split, row.tar) == (record["img_width"], record["img_height"],
                                                                   "test", tar.name)
            assert row.tier == ("lite" if record["split"] == ["lite", "full"] else "full")
            level = LEVEL[record["caption_type"]]
            assert getattr(row, level) == record["caption"]
            assert all(getattr(row, other) == "" for other in LEVELS if other != level)
            assert (row.license, row.attribution, row.source, row.license_id) == (
                "cc-by-4.0", record["attribution"], "", "")
        assert set(index["image_member"].str.rsplit(".", n=1).str[1]) <= {"jpg", "png"}
    both = pd.concat([read_table(p) for p in indexed.glob("*.parquet")])
    assert len(both) == 11 and set(both["image_member"].str[-3:]) == {"jpg", "png"}
    again = CliRunner().invoke(app, ["index", str(indexed)])
    assert again.exit_code == 0 and "indexed 0 tar(s)" in again.output and "2 already had an index" in again.output


def test_gpic_index_streams_fsspec_urls_into_a_cache_or_beside_them(indexed, tmp_path):
    memory = fsspec.filesystem("memory")
    for tar in indexed.glob("*.tar"):
        memory.pipe(f"/gpic-hub/{tar.name}", tar.read_bytes())
    cache = tmp_path / "cache"
    run = CliRunner().invoke(app, ["index", "memory://gpic-hub/*.tar", "--out", str(cache), "--workers", "2"])
    assert run.exit_code == 0, run.output
    for tar in indexed.glob("*.tar"):
        beside = read_table(tar.with_suffix(".parquet"))
        pd.testing.assert_frame_equal(read_table(cache / f"{tar.stem}.parquet"), beside)
    index_shards(["memory://gpic-hub/gpic_test_00001.tar"])  # beside the tar, on the same filesystem
    with memory.open("/gpic-hub/gpic_test_00001.parquet", "rb") as stream:
        pd.testing.assert_frame_equal(pq.read_table(stream).to_pandas(),
                                      read_table(indexed / "gpic_test_00001.parquet"))
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(indexed / "gpic_test_00000.tar", copy)
    run = CliRunner().invoke(app, ["index", f"file://{copy}/gpic_test_00000.tar"])
    assert run.exit_code == 0, run.output
    pd.testing.assert_frame_equal(read_table(copy / "gpic_test_00000.parquet"),
                                  read_table(indexed / "gpic_test_00000.parquet"))
    memory.rm("/gpic-hub", recursive=True)
    with pytest.raises(ValueError, match="--out"):  # never beside a hub tar: that would be a commit
        index_shards(["hf://datasets/stanford-vision-lab/gpic/gpic_test_00000.tar"])


def test_gpic_index_names_the_tar_and_member_at_fault_and_goes_on(gpic_dir, photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(gpic_dir / "gpic_test_00000.tar", folder)
    samples = gpic_samples(photos, 20, 3)
    with tarfile.open(folder / "no_json.tar", "w") as tar:
        for name, data in (("000000020.json", json.dumps(samples[0][0]).encode()), ("000000020.jpg", samples[0][2]),
                           ("000000021.jpg", samples[1][2])):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write_gpic_tar(folder / "bad_json.tar", samples[2:])
    with tarfile.open(folder / "bad_json.tar") as tar:
        members = {m.name: m for m in tar}
    blob = bytearray((folder / "bad_json.tar").read_bytes())
    blob[members["000000022.json"].offset_data] = ord("[")  # no longer a JSON object
    blob[members["000000022.json"].offset_data + 1] = ord("{")
    (folder / "bad_json.tar").write_bytes(bytes(blob))
    run = CliRunner().invoke(app, ["index", str(folder)], terminal_width=400)
    assert run.exit_code == 1
    assert "no_json.tar: member 000000021.jpg: sample 000000021 has no .json record" in run.output
    assert "bad_json.tar: member 000000022.json: not a sample record" in run.output
    assert "2 of 3 tar(s) could not be indexed" in run.output and "indexed 1 tar(s), 6 samples" in run.output
    assert (folder / "gpic_test_00000.parquet").exists()
    assert not (folder / "no_json.parquet").exists() and not (folder / "bad_json.parquet").exists()


# ---------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------

def test_loader_streams_gpic_tars_using_each_records_own_caption_when_the_level_is_missing(indexed):
    records = {**records_of(indexed / "gpic_test_00000.tar"), **records_of(indexed / "gpic_test_00001.tar")}
    samples = list(PackedDataset(str(indexed), size=24, shuffle_buffer=4))
    assert sorted(s["key"] for s in samples) == sorted(records)
    for sample in samples:
        record = records[sample["key"]]
        assert (sample["level"], sample["caption"]) == (LEVEL[record["caption_type"]], record["caption"])
        assert sample["image"].shape == (3, 24, 24)
    tagged = list(PackedDataset(str(indexed), size=16, caption="tag"))  # GPIC's name for our label
    assert {s["level"] for s in tagged} == {"label", "short", "medium", "long"}
    assert all(s["caption"].startswith("tag caption") for s in tagged if s["level"] == "label")
    assert sum(s["level"] == "label" for s in tagged) == sum(r["caption_type"] == "tag" for r in records.values())


@pytest.mark.parametrize("cut", [1, 4, 10])
def test_loader_resumes_exactly_with_indexes_from_gpic_index(gpic_dir, tmp_path, cut):
    cache = tmp_path / "cache"
    assert all(not o.error for o in index_shards([str(p) for p in sorted(gpic_dir.glob("*.tar"))], cache))

    def dataset() -> PackedDataset:
        return PackedDataset(str(gpic_dir), size=16, shuffle_buffer=3, index_dir=cache, seed=3)

    full = [s["key"] for s in dataset()]
    first = dataset()
    stream = iter(first)
    seen = [next(stream)["key"] for _ in range(cut)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = dataset()
    resumed.load_state_dict(state)
    assert seen + [s["key"] for s in resumed] == full and len(full) == 11
    without = PackedDataset(str(gpic_dir), size=16, shuffle_buffer=3, seed=3)
    without.load_state_dict(state)
    with pytest.raises(FileNotFoundError, match="gpic index"):
        list(without)


# ---------------------------------------------------------------------------
# gpic verify
# ---------------------------------------------------------------------------

def test_verify_packed_only_checks_gpic_tars_and_says_what_it_skips(indexed, tmp_path):
    problems, notes = verify_packed(indexed)
    assert problems == []
    assert any("provenance not checked" in n for n in notes) and any("SHA256SUMS does not exist" in n for n in notes)
    run = CliRunner().invoke(app, ["verify", "--packed-only", str(indexed)], terminal_width=400)
    assert run.exit_code == 0 and "verified" in run.output and "note: checksums not checked" in run.output

    index = read_table(indexed / "gpic_test_00001.parquet")
    blob = bytearray((indexed / "gpic_test_00001.tar").read_bytes())
    blob[int(index["image_offset"].iloc[2]) + 20] ^= 0xFF
    (indexed / "gpic_test_00001.tar").write_bytes(bytes(blob))
    for ext in ("tar", "parquet"):
        shutil.copy(indexed / f"gpic_test_00000.{ext}", indexed / f"gpic_test_00007.{ext}")
    shutil.copy(indexed / "gpic_test_00000.tar", indexed / "gpic_test_00008.tar")
    problems, _ = verify_packed(indexed)
    key = read_table(indexed / "gpic_test_00000.parquet")["key"].iloc[0]
    damaged = index["image_member"].iloc[2]
    assert f"gpic_test_00001.tar: {damaged} bytes do not match the sha256 in the index" in problems
    assert f"key {key} is packed more than once: gpic_test_00000.tar, gpic_test_00007.tar" in problems
    assert any(p.startswith("gpic_test_00008.tar: no index at") for p in problems)
    run = CliRunner().invoke(app, ["verify", "--packed-only", str(indexed)], terminal_width=400)
    assert run.exit_code == 1 and "gpic_test_00008.tar: no index" in run.output


def test_verify_packed_only_finds_indexes_in_a_cache_folder(gpic_dir, tmp_path):
    cache = tmp_path / "cache"
    index_shards([str(p) for p in gpic_dir.glob("*.tar")], cache)
    assert verify_packed(gpic_dir, cache)[0] == []
    assert len(verify_packed(gpic_dir)[0]) == 2  # without it: no index beside either tar


def test_a_results_folder_is_checked_as_strictly_as_before(indexed, tmp_path):
    """GPIC's published records in our results layout: verify still demands checksums and
    provenance, and records as complete as our pack writes them."""
    results = tmp_path / "results"
    for name in ("gpic_test_00000.tar", "gpic_test_00000.parquet"):
        (results / "packed" / "test").mkdir(parents=True, exist_ok=True)
        shutil.copy(indexed / name, results / "packed" / "test" / name)
    problems = verify(results)
    assert f"{results / 'packed' / 'SHA256SUMS'}: missing" in problems
    assert f"{results / 'manifests' / 'partition.json'}: missing" in problems
    assert sum("is not a valid sample record: Field required" in p for p in problems) == 6
    run = CliRunner().invoke(app, ["verify", str(indexed)], terminal_width=400)
    assert run.exit_code == 1 and "gpic verify --packed-only" in run.output


# ---------------------------------------------------------------------------
# FD reference statistics
# ---------------------------------------------------------------------------

def test_fd_reference_from_gpic_test_tars_equals_the_same_images_in_our_layout(gpic_dir, tmp_path):
    from gpic.devkit.tiny_models import build_tiny_dinov2
    from gpic.fd import Stats, reference_stats
    from gpic.store import read_tar, write_tar

    model = build_tiny_dinov2(tmp_path / "dinov2")
    out = tmp_path / "eval" / "gpic_ref.npz"
    run = CliRunner().invoke(app, ["fd-reference", str(gpic_dir / "gpic_test_*.tar"), "--model", str(model),
                                   "--out", str(out), "--batch-size", "4"])
    assert run.exit_code == 0, run.output
    gpic = Stats.load(out)
    assert gpic.count == 11 and [s["name"] for s in gpic.sources] == ["gpic_test_00000.tar", "gpic_test_00001.tar"]
    ours = []  # the same members, image first in name order, as our pack writes them
    for tar in sorted(gpic_dir.glob("*.tar")):
        ours.append(tmp_path / "ours" / tar.name)
        write_tar(ours[-1], read_tar(tar).items())
    mine = reference_stats(ours, tmp_path / "ours" / "ref.npz", {"model": str(model), "device": "cpu",
                                                                 "batch_size": 4})
    np.testing.assert_allclose(gpic.sum, mine.sum, rtol=1e-9)
    np.testing.assert_allclose(gpic.sum_outer, mine.sum_outer, rtol=1e-9)
    assert gpic.count == mine.count and np.abs(gpic.sum).sum() > 0
    run = CliRunner().invoke(app, ["fd", str(ours[0]), "--ref", str(out), "--model", str(model)])
    assert run.exit_code == 0 and "FD-DINOv2" in run.output, run.output


# ---------------------------------------------------------------------------
# pack.schema: gpic
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packed_both(tmp_path_factory) -> dict[str, Path]:
    """One synthetic shard packed in both schemas (GPIC's with `caption_type: short`)."""
    from gpic.bench import synthetic_shard
    from gpic.store import read_tar, write_table

    work = tmp_path_factory.mktemp("packed")
    inputs = synthetic_shard(work / "inputs", 5, seed=1)
    fetch, raw = read_table(inputs.fetch), read_tar(inputs.raw)  # the bytes' real sha256, for verify
    fetch["sha256"] = [hashlib.sha256(raw[m]).hexdigest() for m in fetch["raw_member"]]
    write_table(fetch, inputs.fetch)
    out = {}
    for schema in ("ours", "gpic"):
        tar = work / schema / "train" / "gpic_train_00003.tar"
        pack([inputs], "train", "lite", tar, tar.with_suffix(".parquet"), {"schema": schema, "caption_type": "short"},
             ["lite", "full"])
        out[schema] = tar
    return out


def test_pack_schema_gpic_writes_gpic_records_with_every_fact_of_ours(packed_both):
    gpic, ours = records_of(packed_both["gpic"]), records_of(packed_both["ours"])
    assert sorted(gpic) == sorted(ours) and len(gpic) == 5
    for key, record in gpic.items():
        mine = ours[key]
        GpicRecord.model_validate(record)
        GpicSampleRecord.model_validate(record)
        assert set(record) >= GPIC_FIELDS and "captions" not in record and "width" not in record
        assert (record["img_width"], record["img_height"]) == (mine["width"], mine["height"]) == (479, 587)
        assert record["split"] == ["lite", "full"] and mine["tier"] == "lite"
        assert (record["caption_type"], record["caption"]) == ("short", mine["captions"]["short"])
        assert record["tag"] == mine["captions"]["label"] and record["long"] == mine["captions"]["long"]
        assert read_record(record, check=True).row() == read_record(mine, check=True).row() | {"split": ""}
    index = {schema: read_table(tar.with_suffix(".parquet")) for schema, tar in packed_both.items()}
    assert pq.read_schema(packed_both["gpic"].with_suffix(".parquet")).remove_metadata() == INDEX_SCHEMA
    same = [c for c in index["ours"].columns if c not in ("image_offset", "json_offset", "json_size")]
    pd.testing.assert_frame_equal(index["gpic"][same], index["ours"][same])
    for schema, tar in packed_both.items():  # what `gpic index` rebuilds is what pack wrote, in either schema
        pd.testing.assert_frame_equal(index_tar(str(tar)), index[schema])


def test_our_tools_read_a_corpus_packed_in_gpics_schema(packed_both):
    folder = str(packed_both["gpic"].parent)
    records = records_of(packed_both["gpic"])
    for level, name in (("long", "long"), ("label", "tag")):  # all four levels are held: the one asked for
        samples = list(PackedDataset(folder, size=16, caption=level))
        assert len(samples) == 5 and {s["level"] for s in samples} == {level}
        assert all(s["caption"] == records[s["key"]][name] for s in samples)
    assert verify_packed(packed_both["gpic"].parent)[0] == []


def test_pack_section_defaults_to_ours_and_the_job_writes_the_configured_schema(base_config, tmp_path):
    from gpic.bench import synthetic_shard
    from gpic.layout import Layout
    from gpic.stages.pack import DEFAULT_PACK, run

    assert base_config["pack"] == DEFAULT_PACK == {"schema": "ours", "caption_type": "long"}
    config = validate_config({**base_config, "pack": {"schema": "gpic", "caption_type": "tag"}, "shards": 100})
    assert tiers_of_shard(config, 0) == ["nano", "lite", "full"]
    assert tiers_of_shard(config, 5) == ["lite", "full"] and tiers_of_shard(config, 50) == ["full"]
    with pytest.raises(ConfigError, match="theirs"):
        validate_config({**base_config, "pack": {"schema": "theirs"}})

    layout = Layout(tmp_path / "results")
    inputs = synthetic_shard(tmp_path / "inputs", 3)
    for stage, path in (("manifests", inputs.manifest), ("fetch", inputs.fetch), ("filter", inputs.filter),
                        ("captions", inputs.captions)):
        layout.table(stage, "00002").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, layout.table(stage, "00002"))
    layout.raw("00002").parent.mkdir(parents=True)
    shutil.copy(inputs.raw, layout.raw("00002"))
    for cfg, expect in ((config, ("tag", ["lite", "full"])), (base_config, None)):
        index = run(layout.shard("00002"), cfg)
        records = records_of(layout.packed("train", "00002"))
        assert len(records) == len(index) == 3 and set(index["tier"]) == {"lite" if expect else "full"}
        if expect:
            assert all((r["caption_type"], r["split"], r["caption"]) == (*expect, r["tag"]) for r in records.values())
        else:
            assert all(SampleRecord.model_validate(r).tier == "full" for r in records.values())


# ---------------------------------------------------------------------------
# The report's sample view
# ---------------------------------------------------------------------------

def test_report_shows_the_caption_a_gpic_record_has(indexed, tmp_path):
    from gpic.review.report import kept_section

    results = tmp_path / "results"
    (results / "packed" / "test").mkdir(parents=True)
    for name in ("gpic_test_00000.tar", "gpic_test_00000.parquet"):
        shutil.copy(indexed / name, results / "packed" / "test" / name)
    index = read_table(results / "packed" / "test" / "gpic_test_00000.parquet")
    page = kept_section(results, index, 6)
    for record in records_of(indexed / "gpic_test_00000.tar").values():
        assert f"<b>{record['caption']}</b>" in page
    assert page.count("data:image/jpeg;base64,") == 6
