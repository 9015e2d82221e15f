"""The filter stage on real encoded files: every bad kind gets its own reason."""

from __future__ import annotations

import io

import pandas as pd
from PIL import Image, ImageFilter

from conftest import blank, jpeg_bytes
from gpic.filters import assess, filter_shard
from gpic.store import read_table, write_tar


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_real_photos_pass(photos, base_config):
    for name, photo in photos.items():
        record = assess(jpeg_bytes(photo), base_config["filter"])
        assert record["filter_verdict"] == "pass", (name, record)
        assert (record["width"], record["height"]) == photo.size
    assert assess(png_bytes(photos["coffee"]), base_config["filter"])["format"] == "PNG"


def test_each_bad_kind_has_its_reason(photos, base_config):
    cfg = base_config["filter"]
    good = jpeg_bytes(photos["astronaut"])
    gif = io.BytesIO()
    photos["coffee"].save(gif, "GIF")
    cases = {
        "decode corrupt": good[: len(good) * 2 // 5],
        "decode not an image": b"<html><body>404</body></html>",
        "decode format not allowed": gif.getvalue(),
        "too small": jpeg_bytes(photos["coffee"].resize((40, 30))),
        "near-blank": jpeg_bytes(blank()),
        "over-exposed": jpeg_bytes(Image.eval(photos["coffee"], lambda v: min(255, v + 200))),
        "blurry": jpeg_bytes(photos["astronaut"].filter(ImageFilter.GaussianBlur(12))),
        "aspect ratio": jpeg_bytes(photos["coffee"].resize((1200, 260))),
    }
    for reason, data in cases.items():
        record = assess(data, cfg)
        assert record["filter_verdict"] == "drop", (reason, record)
        assert record["filter_reason"].startswith(reason), (reason, record["filter_reason"])


def test_pixel_limit_guards_against_bombs(photos, base_config):
    cfg = dict(base_config["filter"], max_pixels=100_000)
    record = assess(jpeg_bytes(photos["astronaut"]), cfg)
    assert record["filter_reason"] == "decode bomb: 512x512 pixels"


def test_filter_shard_covers_every_fetched_key(tmp_path, photos, base_config):
    members = {"a.jpg": jpeg_bytes(photos["coffee"]), "b.jpg": b"junk"}
    write_tar(tmp_path / "raw.tar", members.items())
    records = pd.DataFrame({"key": ["a", "b", "c"], "fetch_status": ["ok", "ok", "failed"],
                            "raw_member": ["a.jpg", "b.jpg", ""]})
    filter_shard(records, tmp_path / "raw.tar", base_config["filter"], tmp_path / "filter.parquet")
    table = read_table(tmp_path / "filter.parquet")
    assert table["key"].tolist() == ["a", "b"]
    assert table["filter_verdict"].tolist() == ["pass", "drop"]
    assert table["filter_config_hash"].nunique() == 1
