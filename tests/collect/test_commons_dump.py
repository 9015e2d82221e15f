"""The commons-dump collector on small dumps written here in Wikimedia's published formats: the
MediaInfo JSON array (plain, gzip, bzip2) and a mysqldump of the image table."""

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gpic.collect import collect, commons_dump, part_files, parts
from gpic.collect.common import REASON, CollectError
from gpic.licenses import check
from gpic.stages.partition import contract_error

from commons_dumps import author, entity, image, stmt, write_images, write_mediainfo

UA = "gpic-test/0 (test@example.org)"
UPLOAD = "https://upload.wikimedia.org/wikipedia/commons"
ALLOW = ["CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-[0-9]*", "CC-BY-SA-*"]
IMAGE_COLUMNS = commons_dump.IMAGE_COLUMNS


# Names the SQL tokenizer must read back exactly: quotes, backslashes, commas, parentheses,
# semicolons, non-ASCII.
TRICKY = ["O'Brien_(2020),_at_home;_\"x\".png", "Back\\slash_\\'n.jpg", "Zürich_(night),_2.jpg", "a,b),(c.jpg"]


def sample(tmp_path: Path, suffix=".json", images_suffix=".sql"):
    """One entity per case the collector decides, and the image table beside them."""
    ents = [
        entity(101, "File:Example.jpg", stmt("P6216", "Q50423863"), stmt("P275", "Q20007257"), author("Jane Doe")),
        entity(102, "File:O'Brien (2020), at home; \"x\".png", stmt("P6216", "Q88088423"),
               stmt("P275", "Q6938433")),
        entity(103, "File:Back\\slash \\'n.jpg", stmt("P6216", "Q19652"), author("Anon Y. Mous")),
        entity(104, "File:Zürich (night), 2.jpg", stmt("P6216", "Q50423863"), author("Jane Doe")),
        entity(105, "File:Conflict.jpg", stmt("P6216", "Q19652"), stmt("P275", "Q34179348")),
        entity(106, "File:No author.jpg", stmt("P6216", "Q50423863"), stmt("P275", "Q19125117")),
        entity(107, "File:Depicts only.jpg", stmt("P180", "Q146")),
        # GFDL + CC BY-SA 3.0, a deprecated CC0 and a creator given as a Wikidata item
        entity(108, "File:Fronalpstock big.jpg", stmt("P6216", "Q50423863"), stmt("P275", "Q50829104"),
               stmt("P275", "Q14946043"), stmt("P275", "Q6938433", rank="deprecated"), stmt("P170", "Q42")),
        entity(109, "File:Drawing.svg", stmt("P275", "Q6938433")),
        entity(110, "File:Deleted since.jpg", stmt("P275", "Q6938433")),
        entity(111, None, stmt("P275", "Q6938433")),  # an old dump: no title
        # a preferred statement outranks the normal ones
        entity(112, "File:Preferred.jpg", stmt("P275", "Q6938433"), stmt("P275", "Q18199165", rank="preferred"),
               author("Jane Doe")),
        # alternatives: CC BY before CC BY-SA, an unknown item ignored
        entity(113, "File:a,b),(c.jpg", stmt("P275", "Q18199165"), stmt("P275", "Q999999999"),
               stmt("P275", "Q20007257"), author("Jane Doe")),
        entity(114, "File:Wide.webp", stmt("P275", "Q6938433")),
        entity(115, "File:Small.webp", stmt("P275", "Q6938433")),
    ]
    rows = [image("Example.jpg", 4000, 3001), image("O'Brien_(2020),_at_home;_\"x\".png", 800, 600, "image/png"),
            image("Back\\slash_\\'n.jpg", 2000, 1000, metadata=None), image("Zürich_(night),_2.jpg", 10, 10),
            image("Conflict.jpg", 10, 10), image("No_author.jpg", 10, 10), image("Depicts_only.jpg", 10, 10),
            image("Fronalpstock_big.jpg", 1280, 720, metadata="line\nbreak\0nul\x1a'q'\\"),
            image("Drawing.svg", 512, 512, "image/svg+xml"), image("Preferred.jpg", 961, 3),
            image("a,b),(c.jpg", 961, 1000), image("Wide.webp", 2000, 1000, "image/webp"),
            image("Small.webp", 900, 100, "image/webp"), image("Unrelated.jpg", 1, 1, sha1="", timestamp="")]
    mediainfo = write_mediainfo(tmp_path / f"commons-20240101-mediainfo{suffix}", ents)
    images = write_images(tmp_path / f"commonswiki-20240101-image{images_suffix}", rows)
    return ents, mediainfo, images


def config(mediainfo, images, **extra):
    return {"user_agent": UA, "commons_dump": {"mediainfo": str(mediainfo), "images": str(images),
                                               "thumb_width": 960, **extra}}


def read_rows(out: Path) -> list[dict]:
    return [r for f in part_files(out / "collection.json") for r in pq.read_table(f).to_pylist()]


# ---------------------------------------------------------------------------
# The image table reader
# ---------------------------------------------------------------------------

def test_sql_reader_reads_tricky_strings_nulls_and_multi_row_inserts(tmp_path, monkeypatch):
    rows = [image(n, i + 1, 2 * i + 1) for i, n in enumerate(TRICKY)]
    rows.append(image("Null_meta.jpg", 5, 6, metadata=None, sha1="", timestamp=""))
    path = write_images(tmp_path / "image.sql", rows, per_insert=2)
    expected = [r[0] for r in rows]
    assert [r["name"] for r in commons_dump.image_rows(path)] == expected
    monkeypatch.setattr(commons_dump, "READ_BYTES", 7)  # every token crosses a read boundary
    got = list(commons_dump.image_rows(path))
    assert [r["name"] for r in got] == expected
    assert got[0] | {"name": ""} == {"name": "", "size": 123456, "width": 1, "height": 1, "media_type": "BITMAP",
                                     "mime": "image/jpeg", "upload_time": "20200102030405",
                                     "sha1": "phoiac9h4m842xq45sp7s6u21eteeq1"}
    assert got[-1]["sha1"] == "" and got[-1]["upload_time"] == ""
    gz = write_images(tmp_path / "image.sql.gz", rows, per_insert=1)
    assert [r["name"] for r in commons_dump.image_rows(gz)] == expected


def test_sql_reader_takes_the_column_order_from_create_table(tmp_path):
    path = write_images(tmp_path / "image.sql", [image("A.jpg", 3, 4)])
    text = path.read_text()
    # swap width and height in both the CREATE TABLE and the rows' meaning
    swapped = text.replace("`img_width` varbinary", "`img_tmp` varbinary").replace(
        "`img_height` varbinary", "`img_width` varbinary").replace("`img_tmp` varbinary", "`img_height` varbinary")
    path.write_text(swapped)
    (row,) = commons_dump.image_rows(path)
    assert (row["width"], row["height"]) == (4, 3)
    bare = write_images(tmp_path / "bare.sql", [image("A.jpg", 3, 4)], create=False)
    assert [(r["width"], r["height"]) for r in commons_dump.image_rows(bare)] == [(3, 4)]


@pytest.mark.parametrize("broken,what", [
    ("INSERT INTO `image` VALUES ('A.jpg',1,2,3,'m',8,'BITMAP','image','jpeg',1,1,'20200101000000','x')",
     "expected ',' or ';'"),
    ("INSERT INTO `image` VALUES ('A.jpg',1,2,3,'unterminated,8);\n", "malformed row"),
    ("INSERT INTO `image` VALUES ('A.jpg',1,2,3);\n", "row has 4 values for 13 columns"),
    ("INSERT INTO `image` VALUES ('A.jpg',1,2,3,'m',8,'BITMAP','image','jpeg',1,1,'20200101000000','x') x;\n",
     "expected ',' or ';'"),
    ("INSERT INTO `image` VALUES ('A.jpg',1,-2,3,'m',8,'BITMAP','image','jpeg',1,1,'20200101000000','x');\n",
     "img_width is not a non-negative integer"),
    ("INSERT INTO `image` VALUES ('A\\q.jpg',1,2,3,'m',8,'BITMAP','image','jpeg',1,1,'20200101000000','x');\n",
     "unknown escape"),
    ("/* never closed", "unterminated comment"),
])
def test_sql_reader_refuses_what_the_grammar_does_not_allow(tmp_path, broken, what):
    path = tmp_path / "image.sql"
    path.write_text("-- header\n" + broken)
    with pytest.raises(CollectError, match="image table") as err:
        list(commons_dump.image_rows(path))
    assert what in str(err.value)


def test_image_index_is_built_once_and_rebuilt_when_the_dump_changes(tmp_path):
    path = write_images(tmp_path / "image.sql", [image(n, 1, 1) for n in TRICKY])
    index = commons_dump.image_lookup(path)
    assert index == tmp_path / "image.sql.gpic-lookup.sqlite"
    built = index.stat().st_mtime_ns
    assert commons_dump.image_lookup(path) == index and index.stat().st_mtime_ns == built
    write_images(path, [image("Other.jpg", 1, 1)])
    with sqlite3.connect(commons_dump.image_lookup(path)) as db:
        assert db.execute("SELECT name FROM image").fetchall() == [("Other.jpg",)]
    duplicate = write_images(tmp_path / "dup.sql", [image("A.jpg", 1, 1), image("A.jpg", 2, 2)])
    with pytest.raises(CollectError, match="occurs twice"):
        commons_dump.image_lookup(duplicate)
    assert not (tmp_path / "dup.sql.gpic-lookup.sqlite").exists()


# ---------------------------------------------------------------------------
# Licences, URLs, reasons
# ---------------------------------------------------------------------------

def test_rows_licences_urls_and_reasons(tmp_path):
    ents, mediainfo, images = sample(tmp_path)
    summary = collect("commons-dump", config(mediainfo, images), tmp_path / "out")
    assert summary["rows"] == len(ents) and summary["failed"] == {}
    rows = {r["source_id"]: r for r in read_rows(tmp_path / "out")}
    reasons = {k: r[REASON] for k, r in rows.items() if r[REASON]}
    assert reasons == {
        "104": "collect: no licence in structured data",
        "105": "collect: licence conflict: copyright status Q19652 (public domain), licence Q34179348 (CC-BY-NC-4.0)",
        "106": "collect: attribution required but no author",
        "107": "collect: no structured data (use the commons API collector for extmetadata)",
        "109": "collect: image/svg+xml: not a raster type the fetch stage reads",
        "110": "collect: file not in the image table dump",
        "111": "collect: no title in the MediaInfo entity, so no image table row to join",
        "114": "collect: image/webp: no verified thumbnail rule, and the original is wider than 960",
    }
    licences = {k: (r["license"], r["license_url"], r["attribution"]) for k, r in rows.items() if not r[REASON]}
    assert licences == {
        "101": ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/", "Jane Doe"),
        "102": ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/", ""),
        "103": ("public-domain", "", "Anon Y. Mous"),
        "108": ("CC-BY-SA-3.0", "https://creativecommons.org/licenses/by-sa/3.0/", "https://www.wikidata.org/wiki/Q42"),
        "112": ("CC-BY-SA-4.0", "https://creativecommons.org/licenses/by-sa/4.0/", "Jane Doe"),
        "113": ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/", "Jane Doe"),
        "115": ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/", ""),
    }
    assert rows["108"]["license_items"] == "Q50829104 Q14946043"  # the deprecated CC0 is not an option
    assert rows["113"]["license_items"] == "Q18199165 Q999999999 Q20007257"
    # URLs: Commons' own paths for these names, a thumbnail only when the original is wider
    ex = rows["101"]
    assert ex["original_url"] == f"{UPLOAD}/a/a9/Example.jpg"
    assert ex["url"] == f"{UPLOAD}/thumb/a/a9/Example.jpg/960px-Example.jpg"
    assert (ex["width"], ex["height"]) == ("960", "720")
    assert (ex["original_width"], ex["original_height"], ex["mime"]) == ("4000", "3001", "image/jpeg")
    assert ex["sha1"] == f"{int('phoiac9h4m842xq45sp7s6u21eteeq1', 36):040x}" and len(ex["sha1"]) == 40
    assert ex["upload_time"] == "2020-01-02T03:04:05Z"
    assert rows["108"]["url"].startswith(f"{UPLOAD}/thumb/3/3f/Fronalpstock_big.jpg/960px-Fronalpstock_big.jpg")
    assert rows["108"]["height"] == "540"
    assert rows["102"]["url"] == rows["102"]["original_url"] and rows["102"]["width"] == "800"
    assert rows["102"]["url"].endswith("/O%27Brien_%282020%29%2C_at_home%3B_%22x%22.png")  # as imageinfo.url
    assert rows["112"]["height"] == "3"  # 3 * 960 / 961 = 2.997 rounds to 3
    assert rows["115"]["url"].endswith("/Small.webp")
    for key, row in rows.items():
        assert row["source"] == "wikimedia" and row["source_id"] == row["page_id"] == key
        assert row["licence_source"] == "structured data" and row["retrieved_at"]
        if not row[REASON]:
            assert contract_error(row, [], ["flickr", "wikimedia"]) == ""
            verdict = check(row["license"], row["license_url"], row["attribution"], ALLOW)
            assert verdict.ok and verdict.license_id == row["license"], (key, verdict)


@pytest.mark.parametrize("statements,expected", [
    ([], ("", "collect: no structured data (use the commons API collector for extmetadata)")),
    ([stmt("P6216", "Q88088423")], ("public-domain", "")),
    ([stmt("P6216", "Q19652"), stmt("P275", "Q7257361")], ("PDM-1.0", "")),
    ([stmt("P6216", "Q50423863"), stmt("P275", "Q7257361")],
     ("", "collect: licence conflict: copyright status Q50423863 (copyrighted), licence Q7257361 (PDM-1.0)")),
    ([stmt("P6216", "Q88088423"), stmt("P275", "Q20007257")],
     ("", "collect: licence conflict: copyright status Q88088423 (dedicated to the public domain), "
          "licence Q20007257 (CC-BY-4.0)")),
    ([stmt("P6216", "Q19652"), stmt("P275", "Q5")],
     ("", "collect: licence conflict: copyright status Q19652 (public domain), licence Q5 (unrecognised)")),
    ([stmt("P6216", "Q19652"), stmt("P6216", "Q50423863"), stmt("P275", "Q20007257")],
     ("", "collect: licence conflict: copyright status Q19652 and Q50423863")),
    ([stmt("P6216", "Q19652", rank="deprecated"), stmt("P6216", "Q50423863"), stmt("P275", "Q20007257")],
     ("CC-BY-4.0", "")),
    ([stmt("P6216", "Q12345"), stmt("P275", "Q20007257")], ("", "collect: copyright status unrecognised: Q12345")),
    ([stmt("P275", "Q5"), stmt("P275", "Q6")], ("", "collect: licence unrecognised: Q5, Q6")),
    ([stmt("P275", snaktype="novalue")], ("", "collect: no structured data (use the commons API collector "
                                               "for extmetadata)")),
    ([stmt("P275", "Q50829104"), stmt("P275", "Q34179348")], ("GFDL-1.2-or-later", "")),
    ([stmt("P275", "Q18199165"), stmt("P275", "Q19125117"), stmt("P275", "Q7257361"), stmt("P275", "Q6938433")],
     ("CC0-1.0", "")),
])
def test_licence_of_statements(statements, expected):
    license_id, reason, _ = commons_dump.licence(entity(1, "File:X.jpg", *statements))
    assert (license_id, reason) == expected


def test_attribution_from_creator_statements():
    assert commons_dump.attribution(entity(1, "File:X.jpg", author("Jane  Doe"), author("Jane Doe"))) == "Jane Doe"
    assert commons_dump.attribution(entity(1, "File:X.jpg", stmt("P170", snaktype="somevalue", P4174=["JDoe"]))) \
        == "JDoe"
    both = entity(1, "File:X.jpg", stmt("P170", "Q42"), author("Ann Other"))
    assert commons_dump.attribution(both) == "https://www.wikidata.org/wiki/Q42; Ann Other"
    assert commons_dump.attribution(entity(1, "File:X.jpg", stmt("P170", snaktype="novalue"))) == ""


def test_thumbnail_widths_urls_and_heights():
    assert [commons_dump.rendition_width(w) for w in (0, 960, 1024, 1280, 5000)] == [0, 960, 1280, 1280, 3840]
    original, thumb = commons_dump.file_urls("Example.jpg", UPLOAD + "/", 330)
    assert original == f"{UPLOAD}/a/a9/Example.jpg"
    assert thumb == f"{UPLOAD}/thumb/a/a9/Example.jpg/330px-Example.jpg"
    long_name = "x" * 157 + ".jpg"  # over 160 bytes: thumbnails are named thumbnail.jpg
    assert commons_dump.file_urls(long_name, UPLOAD, 960)[1].endswith(f"/{long_name}/960px-thumbnail.jpg")
    assert commons_dump.file_urls("x" * 156 + ".jpg", UPLOAD, 960)[1].endswith("/960px-" + "x" * 156 + ".jpg")
    assert [commons_dump.scale_height(4000, 3001, 960), commons_dump.scale_height(3, 1, 2),
            commons_dump.scale_height(4, 1, 2)] == [720, 1, 1]  # 720.24; 0.67; 0.5 rounds away from zero


def test_thumb_width_zero_keeps_originals(tmp_path):
    ents, mediainfo, images = sample(tmp_path)
    collect("commons-dump", config(mediainfo, images, thumb_width=0), tmp_path / "out")
    rows = {r["source_id"]: r for r in read_rows(tmp_path / "out")}
    assert rows["101"]["url"] == rows["101"]["original_url"] and rows["101"]["width"] == "4000"
    assert not rows["114"][REASON]  # a wide WebP original is fine when originals are asked for


# ---------------------------------------------------------------------------
# Parts, chunks and resuming
# ---------------------------------------------------------------------------

def test_parts_are_a_function_of_the_config():
    cfg = {"mediainfo": "commons-20240101-mediainfo.json", "images": "x.sql.gz", "chunks": 4}
    assert parts({"commons_dump": cfg}, "commons-dump") == [f"chunk-0000{i}-of-00004" for i in range(4)]
    assert commons_dump.parts({**cfg, "mediainfo": "m.json.bz2"}) == ["chunk-00000-of-00001"]
    assert commons_dump.parts({**cfg, "mediainfo": "m.json.gz"}) == ["chunk-00000-of-00001"]
    assert commons_dump.parts({k: v for k, v in cfg.items() if k != "chunks"}) == ["chunk-00000-of-00001"]


@pytest.mark.parametrize("chunks", [1, 2, 3, 4, 5, 17])
def test_every_entity_is_read_exactly_once_whatever_the_chunks(tmp_path, chunks):
    ents, mediainfo, images = sample(tmp_path)
    summary = collect("commons-dump", config(mediainfo, images, chunks=chunks), tmp_path / "out")
    assert summary["parts"] == chunks and not summary["failed"]
    ids = [r["source_id"] for r in read_rows(tmp_path / "out")]
    assert sorted(ids) == sorted(e["id"][1:] for e in ents)


def test_chunk_boundaries_on_every_byte(tmp_path):
    """A line belongs to the chunk its first byte lies in, wherever the boundaries fall: with
    one-byte chunks every byte of the file is a boundary once."""
    ents = [{"type": "mediainfo", "id": f"M{i}", "title": f"File:{'x' * i}.jpg", "statements": []}
            for i in range(1, 6)]
    mediainfo = write_mediainfo(tmp_path / "m.json", ents)
    cfg = config(mediainfo, write_images(tmp_path / "i.sql", []))["commons_dump"]
    size = mediainfo.stat().st_size
    for n in (size, size // 2, size // 3 + 1):
        seen = [r["source_id"] for p in commons_dump.parts({**cfg, "chunks": n})
                for page in commons_dump.pages(p, {**cfg, "chunks": n}, None, None) for r in page.rows]
        assert sorted(seen) == [str(i) for i in range(1, 6)], n


@pytest.mark.parametrize("suffix,images_suffix", [(".json.gz", ".sql.gz"), (".json.bz2", ".sql")])
def test_compressed_dumps_are_one_part(tmp_path, suffix, images_suffix):
    ents, mediainfo, images = sample(tmp_path, suffix, images_suffix)
    plain = tmp_path / "plain"
    plain.mkdir()
    _, plain_mediainfo, plain_images = sample(plain)
    summary = collect("commons-dump", config(mediainfo, images, chunks=4), tmp_path / "out")
    assert summary["parts"] == 1
    collect("commons-dump", config(plain_mediainfo, plain_images), tmp_path / "plain_out")

    def stable(rows):
        return sorted({k: v for k, v in r.items() if k != "retrieved_at"}.items() for r in rows)
    assert stable(read_rows(tmp_path / "out")) == stable(read_rows(tmp_path / "plain_out"))


class Killed(Exception):
    pass


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_a_killed_part_resumes_without_duplicates(tmp_path, monkeypatch, suffix):
    ents, mediainfo, images = sample(tmp_path, suffix)
    monkeypatch.setattr(commons_dump, "PAGE_ENTITIES", 2)
    calls = {"n": 0}
    real = commons_dump.lookup

    def dying(db, names):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed
        return real(db, names)
    monkeypatch.setattr(commons_dump, "lookup", dying)
    cfg = config(mediainfo, images, chunks=2)
    with pytest.raises(Killed):
        collect("commons-dump", cfg, tmp_path / "out")
    pages_dir = next((tmp_path / "out").glob("*.pages"))
    assert len(list(pages_dir.glob("page-*.parquet"))) == 3  # three pages were checkpointed
    monkeypatch.setattr(commons_dump, "lookup", real)
    summary = collect("commons-dump", cfg, tmp_path / "out")
    ids = [r["source_id"] for r in read_rows(tmp_path / "out")]
    assert sorted(ids) == sorted(e["id"][1:] for e in ents) and summary["rows"] == len(ents)
    assert not list((tmp_path / "out").glob("*.pages"))


@pytest.mark.parametrize("suffix", [".json", ".json.bz2"])
def test_resuming_from_any_page_state_yields_exactly_the_rest(tmp_path, monkeypatch, suffix):
    """The state after a page is where the next page starts: nothing read twice or skipped."""
    _, mediainfo, images = sample(tmp_path, suffix)
    monkeypatch.setattr(commons_dump, "PAGE_ENTITIES", 3)
    cfg = config(mediainfo, images, chunks=2)["commons_dump"]
    for part in commons_dump.parts(cfg):
        run = [([r["source_id"] for r in p.rows], p.state) for p in commons_dump.pages(part, cfg, None, None)]
        assert [s for _, s in run][-1] is None and all(s is not None for _, s in run[:-1])
        for k, (_, state) in enumerate(run[:-1]):
            rest = [r["source_id"] for p in commons_dump.pages(part, cfg, None, state) for r in p.rows]
            assert rest == [i for ids, _ in run[k + 1:] for i in ids], (part, k)


def test_malformed_statements_fail_the_part_with_the_entity(tmp_path):
    mediainfo = write_mediainfo(tmp_path / "m.json", [entity(7, "File:A.jpg", statements={"P275": ["Q1"]})])
    cfg = config(mediainfo, write_images(tmp_path / "i.sql", [image("A.jpg", 1, 1)]))["commons_dump"]
    with pytest.raises(CollectError, match="entity M7: malformed"):
        list(commons_dump.pages("chunk-00000-of-00001", cfg, None, None))


def test_a_line_that_is_not_an_entity_fails_its_part_only(tmp_path):
    ents, mediainfo, images = sample(tmp_path)
    lines = mediainfo.read_bytes().split(b"\n")
    lines[-3] = b'{"type":"item","id":"Q1"},'  # the last chunk gets a Wikidata item
    mediainfo.write_bytes(b"\n".join(lines))
    with pytest.raises(CollectError, match="1 of 2 parts failed"):
        collect("commons-dump", config(mediainfo, images, chunks=2), tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "collection.json").read_text())
    assert list(summary["failed"]) == ["chunk-00001-of-00002"]
    assert "not a MediaInfo entity" in summary["failed"]["chunk-00001-of-00002"]
