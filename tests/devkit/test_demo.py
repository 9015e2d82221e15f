"""The bundled demo corpus: deterministic, well-formed, and labelled truthfully."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from gpic.devkit import demo

SMALL = 40  # distinct images in the quick builds used for determinism


def _read_manifests(out: Path) -> list[dict]:
    with (out / "manifests" / "wikimedia.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with (out / "manifests" / "flickr.jsonl").open(encoding="utf-8") as f:
        rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _read_expected(out: Path) -> list[dict]:
    with (out / "expected.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return demo.build_demo(tmp_path_factory.mktemp("demo") / "out")


@pytest.fixture(scope="module")
def table(corpus):
    """Manifest rows joined with their expectations (rows without a source_id by url)."""
    rows = _read_manifests(corpus)
    expected = _read_expected(corpus)
    assert len(rows) == len(expected)
    by_key = {(r["source"], r["source_id"]): r for r in rows if r["source_id"]}
    joined = []
    no_id = [r for r in rows if not r["source_id"]]
    for e in expected:
        row = by_key.get((e["source"], e["source_id"])) if e["source_id"] else None
        if row is None:
            row = next(r for r in no_id if r["source"] == e["source"])
            no_id.remove(row)
        joined.append({**row, **e})
    return joined


def _of(table, expect):
    return [r for r in table if r["expect"] == expect]


@pytest.fixture(scope="module")
def regions(corpus) -> dict[tuple[str, str], dict]:
    """Where each image cut from a photo (or generated) comes from, by (source, source_id)."""
    with (corpus / demo.REGIONS_FILE).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(demo.REGION_COLUMNS)
    return {(r["source"], r["source_id"]): {**r, "box": tuple(float(r[c]) for c in ("x0", "y0", "x1", "y1"))}
            for r in rows if r["source_id"]}


# ----------------------------------------------------------------------------------------


def test_build_is_byte_identical(tmp_path):
    a = demo.build_demo(tmp_path / "a", seed=3, n_variants=SMALL)
    first = _snapshot(a)
    assert demo.build_demo(tmp_path / "a", seed=3, n_variants=SMALL) == a.resolve()
    assert _snapshot(a) == first  # rebuilt in place: every byte, manifests included

    b = demo.build_demo(tmp_path / "b", seed=3, n_variants=SMALL)
    second = _snapshot(b)
    assert second.keys() == first.keys()
    prefix_a, prefix_b = str(a.resolve()).encode(), str(b.resolve()).encode()
    for name, data in first.items():
        # manifests hold absolute file:// URLs; everything else is identical
        assert second[name] == data.replace(prefix_a, prefix_b), name


def test_manifests_have_the_source_columns(corpus):
    wiki = (corpus / "manifests" / "wikimedia.csv").read_text(encoding="utf-8")
    assert wiki.splitlines()[0].split(",") == list(demo.MANIFEST_COLUMNS)
    flickr_lines = (corpus / "manifests" / "flickr.jsonl").read_text(encoding="utf-8").splitlines()
    for line in flickr_lines:
        assert list(json.loads(line)) == list(demo.MANIFEST_COLUMNS)

    rows = _read_manifests(corpus)
    counts = {s: sum(r["source"] == s for r in rows) for s in demo.SOURCES}
    assert set(counts) == {"wikimedia", "flickr"} and sum(counts.values()) == len(rows)
    assert abs(counts["wikimedia"] - counts["flickr"]) <= 0.1 * len(rows)
    for source in demo.SOURCES:
        ids = [r["source_id"] for r in rows if r["source"] == source]
        assert ids == sorted(ids)  # sorted by source_id
        named = [i for i in ids if i]
        assert len(named) == len(set(named))  # unique per source
    for r in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["retrieved_at"])
        assert int(r["width"]) > 0 and int(r["height"]) > 0
        if r["url"].startswith("file://"):
            p = _path(r["url"])
            assert p.is_absolute() and p == p.resolve()
            assert p.parent == (corpus / "images").resolve()


def test_every_expect_category_appears(corpus, table):
    counts = {}
    for r in table:
        counts[r["expect"]] = counts.get(r["expect"], 0) + 1
    assert set(counts) == set(demo.EXPECT_VALUES)
    assert counts["packed"] == demo.N_DISTINCT
    assert 15 <= counts["duplicate"] <= 25
    for bad in demo.BAD_EXPECTS:
        assert counts[bad] >= 2, bad
    header = (corpus / "expected.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(demo.EXPECTED_COLUMNS)


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [2, 2, 8, 8]])
    assert demo.box_iou((0, 0, 10, 10), boxes) == pytest.approx([1.0, 50 / 150, 0.0, 0.36])


def test_distinct_images_are_distinct_by_origin_and_good(table, regions):
    """Distinct images come from different origins or from regions of one photo that overlap
    little, whatever they look like (the pipeline's dedup is tested against this, not itself)."""
    packed = _of(table, "packed")
    imgs = [_open(_path(r["url"])) for r in packed]
    placed = [regions[(r["source"], r["source_id"])] for r in packed]
    for origin in {p["origin"] for p in placed}:
        boxes = [p["box"] for p in placed if p["origin"] == origin]
        for i, box in enumerate(boxes):
            others = np.array(boxes[:i] + boxes[i + 1:])
            assert not len(others) or demo.box_iou(box, others).max() <= demo.MAX_REGION_IOU, origin
    assert len({p["origin"] for p in placed}) < len(placed)  # most are crops sharing a photo
    for r, p, im in zip(packed, placed, imgs):
        (x0, y0, x1, y1), (w, h) = p["box"], im.size
        assert abs((x1 - x0) / (y1 - y0) - w / h) < 0.02 * w / h, r["title"]  # a crop is resized whole
        if "(crop" not in r["title"] and not p["origin"].startswith("generated-"):
            assert (x0, y0) == (0, 0) and (x1, y1) == (w, h)  # an original covers its whole photo
    for r, im in zip(packed, imgs):
        assert im.size == (int(r["width"]), int(r["height"]))
        assert demo.passes_quality(im), r["title"]
    sizes = np.array([im.size for im in imgs], dtype=float)
    mean_w, mean_h = sizes.mean(axis=0)
    assert 430 <= mean_w <= 530 and 530 <= mean_h <= 640
    assert (sizes[:, 0] > sizes[:, 1]).any() and (sizes[:, 1] > sizes[:, 0]).any()
    formats = {_path(r["url"]).suffix for r in packed}
    assert {".jpg", ".png"} <= formats


# True licences of the shipped photos (see the docstrings in skimage/data/_fetchers.py).
REAL = {
    "Astronaut Eileen Collins": ({"No known copyright restrictions", "No restrictions"}, "NASA"),
    "Chelsea the cat": ({"CC0", "Public Domain Dedication (CC0)"}, "Stefan van der Walt"),
    "Coffee cup (Pikolo Espresso Bar)": (
        {"CC0", "Public Domain Dedication (CC0)"}, "Rachel Michetti"),
    "Launch of DSCOVR on Falcon 9": ({"CC0", "Public Domain Dedication (CC0)"}, "SpaceX"),
    "Hubble eXtreme Deep Field": ({"Public domain", "Public Domain Mark"}, "NASA"),
    "Commodore Grace M. Hopper": ({"Public domain", "Public Domain Mark"}, "U.S. Navy"),
    "Cameraman (greyscale)": ({"CC0", "Public Domain Dedication (CC0)"}, "Lav Varshney"),
    "Immunohistochemical staining of colonic glands": (
        {"No known copyright restrictions", "No restrictions"}, "Center for Microscopy"),
}


def test_real_photos_carry_their_true_licences(table):
    by_title = {r["title"]: r for r in table}
    for title, (licences, attribution) in REAL.items():
        r = by_title[title]
        assert r["expect"] == "packed"
        assert r["license"] in licences, title
        assert r["attribution"].startswith(attribution), title
    astronaut = by_title["Astronaut Eileen Collins"]
    assert astronaut["source"] == "flickr"
    assert astronaut["license"] == "No known copyright restrictions"
    assert by_title["Commodore Grace M. Hopper"]["license"] == "Public domain"
    # originals are the shipped files, byte for byte
    for photo in demo.PHOTOS:
        path = demo.photo_path(photo)
        if path is not None and photo.role == "packed":
            assert _path(by_title[photo.title]["url"]).read_bytes() == path.read_bytes()
    # variants inherit the licence and attribution of their photo
    parents = {p.short: p for p in demo.PHOTOS}
    for r in _of(table, "packed") + _of(table, "duplicate"):
        m = re.fullmatch(r"(.+) \(crop \d+\)", r["title"])
        if m:
            p = parents[m.group(1)]
            assert (r["license"], r["license_url"]) == demo.LICENCES[(p.licence, r["source"])]
            assert r["attribution"] == p.attribution
    # nothing packed is under a licence the gate must refuse
    for r in _of(table, "packed") + _of(table, "duplicate"):
        assert r["license"] not in {
            "Attribution-NonCommercial License", "All Rights Reserved", "CC BY-SA 4.0"}
        assert r["attribution"]


def test_near_duplicates_are_edits_of_their_parent(table, regions):
    """Planted copies are fixed edits of one distinct image, overlapping no other one more than
    distinct images overlap each other; how alike they look is left to dedup to find out."""
    by_id = {r["source_id"]: r for r in table if r["source_id"]}
    packed = [regions[(r["source"], r["source_id"])] for r in _of(table, "packed")]
    kinds = {"exact": [], "resize80": [], "crop95": [], "other": []}
    for r in _of(table, "duplicate"):
        parent = by_id[r["parent_source_id"]]
        assert parent["expect"] == "packed"
        a, b = _path(r["url"]), _path(parent["url"])
        assert a != b
        (pw, ph), (w, h) = _open(b).size, _open(a).size
        if a.read_bytes() == b.read_bytes():
            assert (r["source"], r["source_id"]) != (parent["source"], parent["source_id"])
            assert r["source"] != parent["source"]
            kind = "exact"
        elif (w, h) == (round(pw * 0.8), round(ph * 0.8)):
            kind = "resize80"
        elif abs(w - pw * 0.95) <= 1 and abs(h - ph * 0.95) <= 1:
            kind = "crop95"
        else:
            kind = "other"  # JPEG q60 and brightness change keep the size
            assert (w, h) == (pw, ph)
        mine, theirs = regions[(r["source"], r["source_id"])], regions[(parent["source"], parent["source_id"])]
        assert mine["origin"] == theirs["origin"]
        assert demo.box_iou(mine["box"], np.array([theirs["box"]]))[0] >= (0.89 if kind == "crop95" else 0.999)
        others = np.array([p["box"] for p in packed if p["origin"] == mine["origin"] and p is not theirs])
        assert not len(others) or demo.box_iou(mine["box"], others).max() <= demo.MAX_REGION_IOU
        kinds[kind].append(r["source_id"])
    assert all(kinds.values())


def test_bad_rows_are_bad_in_the_stated_way(corpus, table):
    for r in _of(table, "truncated"):
        with pytest.raises(OSError):
            _open(_path(r["url"]))
    for r in _of(table, "not_image"):
        data = _path(r["url"]).read_bytes()
        assert _path(r["url"]).suffix == ".jpg" and data.lstrip().startswith(b"<!DOCTYPE html")
        with pytest.raises(UnidentifiedImageError):
            _open(_path(r["url"]))
    for r in _of(table, "too_small"):
        assert _open(_path(r["url"])).size == (40, 30)
    for r in _of(table, "blank"):
        im = _open(_path(r["url"]))
        assert im.size == (500, 400) and demo.grey_stats(im)[0] == 0.0
    for r in _of(table, "overexposed"):
        im = _open(_path(r["url"]))
        assert (np.asarray(im.convert("L")) >= 250).mean() >= 0.85 and demo.grey_stats(im)[1] > 0.8
    for r in _of(table, "blurry"):
        im = _open(_path(r["url"]))
        assert min(im.size) >= demo.MIN_SIDE and demo.sharpness(im) < 10
        assert demo.grey_stats(im)[0] > demo.MIN_GREY_STD
    lic = {r["license"] for r in _of(table, "license")}
    assert {"Attribution-NonCommercial License", "All Rights Reserved", "CC BY-SA 4.0"} <= lic
    assert "All Rights Reserved" in {
        r["license"] for r in _of(table, "license") if r["title"].startswith("Motorcycle")
    } or demo.photo_path(demo.PHOTOS[-1]) is None
    for r in _of(table, "attribution"):
        assert r["attribution"] == ""
        assert r["license"] in {"CC BY 4.0", "CC BY 2.0", "Attribution License"}
    assert all(r["url"] == "" for r in _of(table, "missing_url"))
    for r in _of(table, "fetch_error"):
        assert r["url"].startswith("file://") and not _path(r["url"]).exists()
    assert all(r["url"].startswith("ftp://") for r in _of(table, "bad_scheme"))
    for r in _of(table, "missing_source_id"):
        assert r["source_id"] == ""
        assert demo.passes_quality(_open(_path(r["url"])))  # only the id is wrong
    # no other row lacks an id, a url, or an attribution
    for r in table:
        if r["expect"] in ("packed", "duplicate"):
            assert r["source_id"] and r["url"].startswith("file://") and r["attribution"]
            assert _path(r["url"]).is_file()
    images = {p.name for p in (corpus / "images").iterdir()}
    referenced = {_path(r["url"]).name for r in table if r["url"].startswith("file://")}
    assert images <= referenced
