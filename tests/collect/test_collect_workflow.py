"""Stage 1 feeding the whole workflow: `snakemake` starts from a Commons dump (MediaInfo and
image table, in the published formats) instead of manifests, and every file the dump lists ends
in exactly one final state, the collector's refusals included, traceable to the dump's entity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from gpic.collect.commons_dump import file_urls
from gpic.identity import make_key

from commons_dumps import author, entity, image, stmt, write_images, write_mediainfo
from helpers import BIN, jpeg_bytes, small_run, snakemake

COPYRIGHTED, CC_BY_4, CC_BY_NC_4 = "Q50423863", "Q20007257", "Q34179348"


@pytest.fixture(scope="module")
def collected_run(tmp_path_factory, photos, tiny_models) -> Path:
    """Twelve licensed photos, one non-commercial, one copyrighted without a licence and one
    entity whose file the image table lacks; the fetch stage reads the originals from a folder
    laid out like Commons' upload host."""
    work = tmp_path_factory.mktemp("collect-run")
    upload = work / "upload"
    entities, images = [], []
    for n in range(15):
        name = f"Photo_{n:02d}.jpg"
        photo = list(photos.values())[n % len(photos)]
        left = (n // len(photos)) * 40
        crop = photo.crop((left, 0, left + 300, 300)).rotate(90 * (n // 4))
        original, _ = file_urls(name, upload.as_uri(), 0)
        path = Path(original.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(crop))
        licence = [stmt("P275", CC_BY_NC_4 if n == 12 else CC_BY_4)] if n != 13 else []
        entities.append(entity(1000 + n, f"File:{name.replace('_', ' ')}", stmt("P6216", COPYRIGHTED), *licence,
                               author(f"Author {n}")))
        if n != 14:
            images.append(image(name, 300, 300, timestamp=f"202001010000{n:02d}"))
    write_mediainfo(work / "commons-mediainfo.json", entities)
    write_images(work / "commonswiki-image.sql.gz", sorted(images))
    collect = {"collectors": ["commons-dump"], "user_agent": "gpic-test/0 (test@example.org)",
               "commons_dump": {"mediainfo": str(work / "commons-mediainfo.json"),
                                "images": str(work / "commonswiki-image.sql.gz"), "chunks": 2,
                                "thumb_width": 0, "upload_url": upload.as_uri()}}
    return small_run(work, tiny_models, upload, sources=[], collect=collect)


def key(n: int) -> str:
    return make_key("wikimedia", str(1000 + n))


@pytest.mark.slow
def test_a_collection_feeds_the_workflow_and_every_file_ends_in_one_state(collected_run):
    results = collected_run / "results"
    summary = json.loads((results / "collect" / "commons-dump" / "collection.json").read_text())
    assert (summary["parts"], summary["rows"], summary["failed"]) == (2, 15, {})
    provenance = pd.concat(pd.read_parquet(p) for p in sorted((results / "provenance").glob("*.parquet")))
    assert sorted(provenance["key"]) == sorted(key(n) for n in range(15))
    final = provenance.set_index("key")
    assert final.loc[key(12), ["state", "stage"]].tolist() == ["dropped", "fetch"]
    assert final.loc[key(12), "reason"].startswith("licence not allowed: CC-BY-NC-4.0")
    assert final.loc[key(13), ["state", "stage", "reason"]].tolist() == [
        "dropped", "partition", "collect: no licence in structured data"]
    assert final.loc[key(14), ["state", "stage"]].tolist() == ["dropped", "partition"]
    assert "image table" in final.loc[key(14), "reason"]
    licensed = final.loc[[key(n) for n in range(12)]]
    assert not licensed["stage"].isin(["partition", "fetch"]).any(), licensed[["stage", "reason"]]
    assert (licensed["state"] == "packed").sum() >= 6


@pytest.mark.slow
def test_lineage_reaches_the_dump_entity_and_a_rerun_collects_nothing(collected_run):
    shown = subprocess.run([str(BIN / "gpic"), "lineage", key(3), "--results", "results", "--json"],
                           capture_output=True, text=True, cwd=collected_run)
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)["manifests"]
    assert manifest["manifest_file"].endswith("collect/commons-dump/chunk-00000-of-00002.parquet")
    assert manifest["extra"]["page_id"] == "1003" and manifest["license"] == "CC-BY-4.0"
    assert manifest["extra"]["entity_modified"] == "2024-01-01T00:00:00Z"
    assert manifest["attribution"] == "Author 3" and manifest["url"].startswith("file://")
    dry = snakemake(collected_run, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
