"""Small runs the demo never makes: 20 keys whose val and test splits end up empty, and 20
keys that are all refused by the licence gate. Both must complete through Snakemake, with
indexes of one schema, a report that says what happened and a card `datasets` can load."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml
from PIL import Image

from gpic.stages.pack import INDEX_SCHEMA

from helpers import BIN, jpeg_bytes, small_run

ROWS = 20


def small_workspace(work: Path, photos: dict[str, Image.Image], tiny_models: dict, *, licence: str) -> Path:
    """20 crops of real photos, every one under `licence`, in two raw shards; no key goes to
    val or test (fractions 0), as happens by chance to any small run with the defaults."""
    images = work / "images"
    images.mkdir(parents=True)
    rows = []
    for n in range(ROWS):
        photo = list(photos.values())[n % len(photos)]
        left, top = (n // len(photos)) * 9, (n // len(photos)) * 7
        path = images / f"img_{n:02d}.jpg"
        path.write_bytes(jpeg_bytes(photo.crop((left, top, left + 280, top + 280))))
        rows.append({"source": "wikimedia", "source_id": f"File:Small_{n}.jpg", "url": path.as_uri(),
                     "license": licence, "license_url": "", "attribution": "Jane Doe", "title": f"Crop {n}"})
    pd.DataFrame(rows).to_csv(work / "manifest.csv", index=False)
    return small_run(work, tiny_models, images, sources=[str(work / "manifest.csv")])


def gpic(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gpic"), *args], capture_output=True, text=True)


def index_dataset(results: Path) -> ds.Dataset:
    """Every index of the run read as one pyarrow dataset: it fails when their schemas differ."""
    paths = sorted(str(p) for p in (results / "packed").glob("*/*.parquet"))
    assert {Path(p).parent.name for p in paths} == {"train", "val", "test"}
    for path in paths:
        assert ds.dataset(path).schema.remove_metadata() == INDEX_SCHEMA, path
    return ds.dataset(paths, format="parquet")


def card_configs(results: Path) -> dict:
    header = (results / "packed" / "README.md").read_text().split("---")[1]
    return {c["config_name"]: c for c in yaml.safe_load(header)["configs"]}


@pytest.fixture(scope="module")
def empty_splits(tmp_path_factory, photos, tiny_models) -> Path:
    return small_workspace(tmp_path_factory.mktemp("empty-splits"), photos, tiny_models, licence="CC BY 4.0")


@pytest.fixture(scope="module")
def all_refused(tmp_path_factory, photos, tiny_models) -> Path:
    return small_workspace(tmp_path_factory.mktemp("all-refused"), photos, tiny_models, licence="CC BY-NC 2.0")


@pytest.mark.slow
def test_a_run_with_empty_val_and_test_splits_completes(empty_splits):
    results = empty_splits / "results"
    table = index_dataset(results).to_table()
    assert table.num_rows > 0 and set(table.column("split").to_pylist()) == {"train"}
    assert gpic("verify", str(results)).returncode == 0
    summary = json.loads(gpic("summary", "--results", str(results), "--json").stdout)
    assert summary["conserved"] and sum(s["in"] for s in summary["shards"].values()) == ROWS
    report = (results / "report" / "index.html").read_text()
    assert "The val, test splits are empty" in report
    for name, config in card_configs(results).items():
        assert [f["split"] for f in config["data_files"]] == ["train"], name


@pytest.mark.slow
def test_empty_splits_load_and_stream_without_errors(empty_splits):
    import datasets

    from gpic.loader import PackedDataset

    packed = empty_splits / "results" / "packed"
    loaded = datasets.load_dataset(str(packed), "full", cache_dir=str(empty_splits / "hf-cache"))
    assert list(loaded) == ["train"] and len(loaded["train"]) > 0
    assert list(PackedDataset(packed / "test", size=32)) == []  # an empty shard streams nothing
    with pytest.raises(ValueError, match="no 'test' split"):
        PackedDataset("full", card=str(packed), split="test")
    shard = next((packed / "train").glob("*.tar"))
    fd = gpic("fd", str(shard), "--ref", str(empty_splits / "results" / "eval" / "fd_dinov2_test.npz"))
    assert fd.returncode == 1 and "reference statistics of 0 image(s)" in fd.stdout + fd.stderr


@pytest.mark.slow
def test_a_run_where_every_key_is_refused_completes(all_refused):
    results = all_refused / "results"
    assert index_dataset(results).count_rows() == 0
    provenance = pd.concat(pd.read_parquet(p) for p in sorted((results / "provenance").glob("*.parquet")))
    assert len(provenance) == ROWS and (provenance["state"] == "dropped").all()
    assert provenance["reason"].str.startswith("licence not allowed: CC-BY-NC-2.0").all()
    assert gpic("verify", str(results)).returncode == 0
    assert json.loads(gpic("summary", "--results", str(results), "--json").stdout)["conserved"]
    report = (results / "report" / "index.html").read_text()
    assert "No sample was packed" in report and "None: no sample was packed" in report
    assert card_configs(results) == {}
    cost = json.loads((results / "report" / "cost.json").read_text())
    assert cost["jobs"]
