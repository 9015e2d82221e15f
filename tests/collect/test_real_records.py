"""The conformance corpus (tests/collect/real/): records that other projects captured from the
live sources, each with the row a correct collector writes or the reason it refuses, held to
the code through the same loopback servers and files the collector tests use. Where each file
came from and under which licence it is copied: the SOURCES.yaml beside it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pyarrow.parquet as pq
import pytest
import yaml
from test_commons_api import server  # noqa: F401 (the loopback MediaWiki API: a fixture, used by name)
from test_flickr import KEY, FlickrServer, serving
from test_flickr import config as flickr_config
from typer.testing import CliRunner

from gpic import licenses
from gpic.cli import app
from gpic.collect import collect, commons_dump, flickr_api, part_files
from gpic.collect.common import REASON

REAL = Path(__file__).parent / "real"
ALLOW = ["CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-[0-9]*"]  # the default allowlist
DESCRIBED = {"SOURCES.yaml", "expected.yaml", "README.md", "licences_expected.yaml", "urls.yaml", "strings.yaml"}
# An expected refusal, and the words the recorded reason (the collector's, else the gate's) must hold.
REFUSALS = {
    "not on the allowlist": ("not on the allowlist", "licence not allowed"),
    "not on allowlist": ("not on the allowlist", "licence not allowed"),
    "all rights reserved": ("all-rights-reserved", "All Rights Reserved"),
    "no image URL": ("no image URL",),
    "licence conflict": ("licence conflict",),
    "licence unrecognised": ("licence unrecognised",),
    "restricted": ("collect: restricted",),
    "no author": ("no author", "attribution missing"),
    "not an image": ("not an image", "not a raster type"),
    "no structured data": ("no structured data",),
    "malformed": ("missing pageid", "missing imageinfo"),  # a record the request's answer format does not allow
}


def load(folder: str, name: str):
    return yaml.safe_load((REAL / folder / name).read_text())


def cases(folder: str) -> list[tuple[dict, str, dict]]:
    """(file entry, record id, expectation) of every record a folder's expected.yaml holds."""
    return [(entry, rid, want) for entry in load(folder, "expected.yaml") for rid, want in entry["records"].items()]


def final_reason(row: dict, allow=ALLOW) -> str:
    """Why the key ends dropped: the collector's refusal, else the licence gate's ('' = kept)."""
    if row.get(REASON):
        return row[REASON]
    return licenses.check(row["license"], row["license_url"], row["attribution"], allow).reason


def holds(row: dict, want: dict, where: str) -> None:
    """A row is what its expectation says: the fields a correct collector writes and the
    canonical licence the gate admits, or a refusal of the expected kind."""
    reason = final_reason(row)
    if "refused" in want:
        assert reason, f"{where}: expected refused ({want['refused']}), but kept"
        assert any(words in reason for words in REFUSALS[want["refused"]]), f"{where}: {reason!r} is not " \
            f"a refusal for {want['refused']!r}"
        if want.get("canonical") and (row.get("license") or row.get("license_url")):
            assert licenses.canonical(row["license"], row["license_url"]) == want["canonical"], where
        return
    assert not reason, f"{where}: refused: {reason}"
    got = {k: row.get(k) for k in ("url", "license", "license_url", "attribution")}
    got |= {k: int(row[k]) if row.get(k) else None for k in ("width", "height")}
    assert got == {k: want[k] for k in got}, where
    assert licenses.check(row["license"], row["license_url"], row["attribution"], ALLOW).license_id \
        == want["canonical"], where


def read_rows(out: Path) -> list[dict]:
    return [row for path in part_files(out / "collection.json") for row in pq.read_table(path).to_pylist()]


def test_every_captured_file_says_where_it_came_from_and_under_which_licence():
    for folder in sorted(p for p in REAL.iterdir() if p.is_dir()):
        listed = {entry["file"]: entry for entry in yaml.safe_load((folder / "SOURCES.yaml").read_text())
                  if "file" in entry}
        captured = {p.name for p in folder.iterdir()} - DESCRIBED
        assert captured <= set(listed), f"{folder.name}: not in SOURCES.yaml: {sorted(captured - set(listed))}"
        for name in captured:
            entry = listed[name]
            assert entry["origin"] and entry["fixture_licence"] and entry["cut"], f"{folder.name}/{name}"


# ---------------------------------------------------------------------------
# Flickr
# ---------------------------------------------------------------------------

def _element(e: ET.Element) -> dict:
    out: dict = dict(e.attrib)
    children = defaultdict(list)
    for child in e:
        children[child.tag].append(child)
    for tag, found in children.items():
        if tag in ("photo", "license"):
            out[tag] = [_element(c) for c in found]
        else:
            out[tag] = {**found[0].attrib, "_content": found[0].text or ""}
    return out


def flickr_answer(name: str) -> dict:
    """A captured REST answer as Flickr's format=json sends it. Most captures are in Flickr's
    default XML (format=rest), whose JSON form is the same tree: each attribute a key (a
    string), each repeated element (photo, license) a list, each text element
    {"_content": text}."""
    path = REAL / "flickr" / name
    if path.suffix == ".json":
        return json.loads(path.read_text())
    root = ET.fromstring(path.read_bytes())
    return {"stat": root.get("stat"), **{child.tag: _element(child) for child in root}}


class Replay(FlickrServer):
    """Flickr's REST API answering with captured answers: getInfo's, and the search's first
    page (later pages are empty: the capture has no more)."""

    answers: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        params = dict(parse_qsl(urlsplit(self.path).query))
        self.calls.append(params)
        if params["method"] == "flickr.photos.licenses.getInfo":
            return self._send(self.answers["getinfo"])
        if params["page"] == "1":
            return self._send(self.answers["search"])
        self._send({"photos": {"page": int(params["page"]), "pages": 1, "total": "0", "photo": []}, "stat": "ok"})


@pytest.fixture
def replay(monkeypatch):
    monkeypatch.setenv("GPIC_TEST_FLICKR_KEY", KEY)
    Replay.calls = []
    with serving(Replay) as base:
        yield base + "/services/rest/"


def flickr_rows(api: str, out: Path, getinfo: str, search: str) -> dict[str, dict]:
    Replay.answers = {"getinfo": flickr_answer(getinfo), "search": flickr_answer(search)}
    cfg = flickr_config(api, start="2004-02-01", end="2026-01-01", window_days=10_000, per_page=500,
                        max_results=10**12)
    cfg["flickr"].pop("size", None)  # the default size
    collect("flickr", cfg, out, allow=ALLOW, sleep=lambda s: None)
    return {row["source_id"]: row for row in read_rows(out)}


FLICKR = cases("flickr")


@pytest.mark.parametrize("answer", sorted({entry["file"] for entry, _, _ in FLICKR}))
def test_flickr_answers_give_their_expected_rows(replay, tmp_path, answer):
    entries = [entry for entry in load("flickr", "expected.yaml") if entry["file"] == answer]
    rows = flickr_rows(replay, tmp_path, entries[0]["getinfo"], answer)
    for entry in entries:
        for rid, want in entry["records"].items():
            assert rid in rows, f"{answer}: photo {rid} not written"
            holds(rows[rid], want, f"{answer} photo {rid}")


@pytest.mark.parametrize("answer", sorted(load("flickr", "licences_expected.yaml")))
def test_flickr_licence_lists_of_every_year_read_as_their_licences(answer):
    expected = load("flickr", "licences_expected.yaml")[answer]
    verdicts = {v["id"]: v for v in flickr_api.licence_verdicts(flickr_answer(answer), answer, ALLOW)}
    assert set(verdicts) == set(expected)
    for license_id, want in expected.items():
        v = verdicts[license_id]
        assert (v["name"], v["url"], v["canonical"]) == (want["name"], want["url"], want["canonical"]), license_id
        assert v["drift"] in ("", "new id: not in the built-in table") or license_id not in licenses.FLICKR_IDS, v


# ---------------------------------------------------------------------------
# YFCC100M
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dump", sorted({entry["file"] for entry, _, _ in cases("yfcc")}))
def test_yfcc_lines_give_their_expected_rows(tmp_path, dump):
    collect("yfcc", {"yfcc": {"metadata": str(REAL / "yfcc" / dump)}}, tmp_path, allow=ALLOW, sleep=lambda s: None)
    rows = {row["source_id"]: row for row in read_rows(tmp_path)}
    for entry, rid, want in cases("yfcc"):
        if entry["file"] == dump:
            holds(rows[rid], want, f"{dump} photo {rid}")


def cli_config(tmp_path: Path, api: str) -> Path:
    section = {"api": api, "api_key_env": "GPIC_TEST_FLICKR_KEY", "start": "2004-02-01", "end": "2026-01-01",
               "window_days": 10_000, "max_results": 10**9}
    cfg = {"shards": 1, **{stage: {"model": "m"} for stage in ("judge", "embed", "caption", "eval")},
           "collect": {"collectors": ["flickr"], "user_agent": "gpic-test/0 (test@example.org)", "flickr": section}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "c.yaml"


def gpic(*args) -> tuple[int, str]:
    run = CliRunner().invoke(app, [str(a) for a in args], terminal_width=400)
    return run.exit_code, run.output


def test_the_live_licence_list_is_shown_beside_the_table_and_drift_fails(replay, tmp_path):
    config = cli_config(tmp_path, replay)
    Replay.answers = {"getinfo": flickr_answer("getinfo_2025-06-19.xml")}
    code, shown = gpic("collect", "flickr", "--config", config, "--licences")
    lines = {line.split("\t")[0]: line.split("\t") for line in shown.splitlines()}
    assert code == 0 and shown.splitlines()[-1] == "17 licences, 0 drifted"
    assert lines["8"][1:] == ["United States Government Work", "https://www.usa.gov/government-copyright",
                              "public-domain", "public-domain", "yes", "ok"]
    assert lines["11"][3:6] == ["CC-BY-4.0", "CC-BY-4.0", "yes"]
    assert lines["0"][3:6] == ["all-rights-reserved", "all-rights-reserved", "no"]
    # the same list, as it would read if Flickr renamed id 4 and added an id
    answer = flickr_answer("getinfo_2025-06-19.xml")
    entries = answer["licenses"]["license"]
    entries[1] = {**entries[1], "name": "CC BY-NC 2.0"}
    entries.append({"id": "17", "name": "CC BY 5.0", "url": "https://creativecommons.org/licenses/by/5.0/"})
    Replay.answers = {"getinfo": answer}
    code, shown = gpic("collect", "flickr", "--config", config, "--licences")
    assert code == 1 and shown.splitlines()[-1] == "18 licences, 2 drifted: ids 4, 17"
    assert "licence conflict: text CC-BY-NC-2.0, url CC-BY-2.0" in shown
    assert "new id: not in the built-in table" in shown
    assert gpic("collect", "yfcc", "--config", config, "--licences")[0] == 2


def test_a_finished_collection_counts_its_licence_strings(replay, tmp_path):
    config = cli_config(tmp_path, replay)
    out = tmp_path / "out"
    flickr_rows(replay, out, "getinfo_2025-06-19.xml", "photos_search_tags-nature_2024-05-01.xml")
    code, shown = gpic("collect", "flickr", "--config", config, "--out", out, "--report")
    rows = {rid: want for entry, rid, want in FLICKR if entry["file"] == "photos_search_tags-nature_2024-05-01.xml"}
    reserved = sum(want.get("canonical") == "all-rights-reserved" for want in rows.values())
    assert code == 0 and f"flickr: {len(rows)} rows ({len(rows) - sum('refused' not in w for w in rows.values())} " \
        f"refused by the collector)" in shown
    assert f"{reserved}\tall-rights-reserved" in shown.splitlines()
    assert "unreadable (0):" in shown
    assert gpic("collect", "flickr", "--config", config, "--out", tmp_path / "none", "--report")[0] == 2


# ---------------------------------------------------------------------------
# Commons API
# ---------------------------------------------------------------------------

# Captured answers that continue one another (a prop continuation of one generator batch).
CHAINS = {"cccatalog_wmc_pretty1.json": ["cccatalog_wmc_pretty2.json", "cccatalog_wmc_pretty3.json"]}


class ReplayWiki:
    """The MediaWiki API answering with captured answers in order, then with the end of the
    query. A capture of a single page object is framed as the one page of an answer."""

    def __init__(self, names: list[str]):
        self.answers = [self.framed(json.loads((REAL / "commons_api" / n).read_text())) for n in names]
        self.requests, self.agents = [], []

    @staticmethod
    def framed(captured: dict) -> dict:
        return captured if "query" in captured else {"batchcomplete": True, "query": {"pages": [captured]}}

    def answer(self, params: dict) -> tuple[int, dict, dict]:
        return 200, {}, self.answers.pop(0) if self.answers else {"batchcomplete": True}


COMMONS = [entry for entry in load("commons_api", "expected.yaml") if entry["records"]]


@pytest.mark.parametrize("entry", COMMONS, ids=[entry["file"] for entry in COMMONS])
def test_commons_api_answers_give_their_expected_rows(server, tmp_path, entry):  # noqa: F811 (the fixture)
    use, api = server
    use(ReplayWiki([entry["file"], *CHAINS.get(entry["file"], [])]))
    cfg = {"user_agent": "gpic-test/0 (test@example.org)", "retries": 1,
           "commons": {"api": api, "end": "2030-01-01", "categories": ["Replay"], "thumb_width": 960}}
    collect("commons", cfg, tmp_path, allow=ALLOW, sleep=lambda s: None)
    rows = read_rows(tmp_path)
    found = {row["source_id"]: row for row in rows if row["source_id"]} | {row["title"]: row for row in rows}
    for rid, want in entry["records"].items():
        assert rid in found, f"{entry['file']}: {rid} not written"
        holds(found[rid], want, f"{entry['file']} {rid}")


def test_commons_file_urls_are_the_ones_commons_gives_whichever_collector_found_the_file():
    """The dump collector builds a file's URL from its name; the API states it. One file, one URL."""
    named = load("commons_api", "urls.yaml")
    assert len(named) >= 60
    for entry in named:
        if "/wikipedia/commons/" not in entry["url"]:
            continue  # a local file of another wiki
        name = entry["title"].removeprefix("File:").replace(" ", "_")
        upload = commons_dump.DEFAULTS["upload_url"]
        original, thumb = commons_dump.file_urls(name, upload, entry.get("thumbwidth", 960))
        assert original == entry["url"], entry["title"]
        if entry.get("thumburl") and name.lower().endswith((".jpg", ".jpeg", ".png", ".gif")):
            assert thumb == entry["thumburl"], entry["title"]  # other types' thumbnails are renamed


# ---------------------------------------------------------------------------
# Commons dumps: MediaInfo entities and image table rows
# ---------------------------------------------------------------------------

def entities(name: str) -> dict[str, dict]:
    """Entities of a captured file, by id: a dump slice (one entity a line, inside [ ]), a
    wbgetentities or wbeditentity answer, or a lone P170 statement list."""
    text = (REAL / "commons_dump" / name).read_text()
    if name.endswith(".slice.json"):
        lines = [line.strip().rstrip(",") for line in text.splitlines()]
        return {e["id"]: e for e in map(json.loads, (line for line in lines if line not in ("[", "]", "")))}
    captured = json.loads(text)
    if "entities" in captured:
        return {e.get("id", key): e for key, e in captured["entities"].items()}
    if "entity" in captured:
        return {captured["entity"]["id"]: captured["entity"]}
    return {"statement": {"statements": captured if "P170" in captured else {"P170": [captured]}}}


DUMP = [(entry, rid, want) for entry, rid, want in cases("commons_dump") if entry["file"].endswith(".json")]


@pytest.mark.parametrize("entry,rid,want", DUMP, ids=[f"{e['file']}:{rid}" for e, rid, _ in DUMP])
def test_mediainfo_entities_give_their_licence_and_author(entry, rid, want):
    found = entities(entry["file"])
    entity = found.get(rid) or found["statement"]
    author = commons_dump.attribution(entity)
    if "attribution" in want:
        assert author == want["attribution"]
    if "canonical" not in want and "refused" not in want:
        return  # a lone creator statement: no licence to judge
    license_id, reason, _ = commons_dump.licence(entity)
    if "refused" in want:
        refusal = reason or ("" if author or not licenses.NEEDS_ATTRIBUTION.match(license_id) else "no author")
        if not refusal:
            refusal = licenses.check(license_id, licenses.url_of(license_id), author, ALLOW).reason
        assert any(words in refusal for words in REFUSALS[want["refused"]]), (refusal, want)
    else:
        assert (license_id, reason) == (want["canonical"], "")


# The image table as mysqldump wrote it in 2007 (MediaWiki 1.10's tables.sql): the captured rows' layout.
IMAGE_2007 = "CREATE TABLE `image` (\n" + ",\n".join(f"  `{c}` {t}" for c, t in [
    ("img_name", "varbinary(255) NOT NULL default ''"), ("img_size", "int(8) unsigned NOT NULL default '0'"),
    ("img_width", "int(5) NOT NULL default '0'"), ("img_height", "int(5) NOT NULL default '0'"),
    ("img_metadata", "mediumblob NOT NULL"), ("img_bits", "int(3) NOT NULL default '0'"),
    ("img_media_type", "enum('UNKNOWN','BITMAP','DRAWING','AUDIO','VIDEO','MULTIMEDIA','OFFICE','TEXT','EXECUTABLE',"
                       "'ARCHIVE') default NULL"),
    ("img_major_mime", "enum('unknown','application','audio','image','text','video','message','model','multipart')"
                       " NOT NULL default 'unknown'"),
    ("img_minor_mime", "varbinary(32) NOT NULL default 'unknown'"), ("img_description", "tinyblob NOT NULL"),
    ("img_user", "int(5) unsigned NOT NULL default '0'"), ("img_user_text", "varbinary(255) NOT NULL default ''"),
    ("img_timestamp", "varbinary(14) NOT NULL default ''"), ("img_sha1", "varbinary(32) NOT NULL default ''")]) \
    + ",\n  PRIMARY KEY  (`img_name`)\n) ENGINE=InnoDB;\n"


def captured_sql_rows() -> list[str]:
    """The captured rows, without the comment marks of the script that holds them."""
    text = (REAL / "commons_dump" / "enwikinews_image_rows_wa-images.py.lines27-29.txt").read_text()
    return [line.removeprefix("#").removeprefix(",").rstrip().rstrip(",") for line in text.splitlines()]


def test_image_table_rows_read_with_their_own_layout_and_oldimage_rows_skipped(tmp_path):
    """The image row is read through the CREATE TABLE of its time; the two oldimage rows
    (another table, another column order) are not image rows."""
    image, *oldimage = captured_sql_rows()
    dump = tmp_path / "image.sql"
    dump.write_text(f"{IMAGE_2007}INSERT INTO `image` VALUES {image};\nINSERT INTO `oldimage` VALUES "
                    f"{','.join(oldimage)};\n")
    rows = list(commons_dump.image_rows(dump))
    want = load("commons_dump", "expected.yaml")[-1]["records"]["World_C_29May2007at2130UTC.jpg"]
    assert [(r["name"], r["width"], r["height"], r["mime"]) for r in rows] == [
        (want["name"], want["width"], want["height"], want["mime"])]
    assert commons_dump._sha1_hex(rows[0]["sha1"]) == want["sha1"] and rows[0]["sha1"] == want["sha1_base36"]


@pytest.mark.parametrize("dump", ["commons-20231207-mediainfo.slice.json", "commons-20231207-mediainfo.slice.json.bz2"])
def test_a_real_dump_slice_is_read_by_the_dump_collector(tmp_path, dump):
    """The dump's own layout ([ and ] lines, an entity a line ending in ',', escaped slashes):
    both entities are read with their licence and author; with no image row they are refused
    for that, never lost."""
    (tmp_path / "image.sql").write_text(IMAGE_2007)
    cfg = {"commons_dump": {"mediainfo": str(REAL / "commons_dump" / dump), "images": str(tmp_path / "image.sql")}}
    collect("commons-dump", cfg, tmp_path / "out", allow=ALLOW, sleep=lambda s: None)
    rows = {row["source_id"]: row for row in read_rows(tmp_path / "out")}
    assert {rid: (row["license"], row["attribution"], row[REASON]) for rid, row in rows.items()} == {
        "76": ("CC-BY-1.0", "Andre Engels", "collect: file not in the image table dump"),
        "99": ("CC-BY-1.0", "Andre Engels", "collect: file not in the image table dump")}


# ---------------------------------------------------------------------------
# Licence strings as the sources print them
# ---------------------------------------------------------------------------

STRINGS = load("licences", "strings.yaml")


@pytest.mark.parametrize("entry", STRINGS, ids=[f"{i}-{e['source']}-{e['text'][:40]}" for i, e in enumerate(STRINGS)])
def test_real_licence_strings_read_as_their_licence(entry):
    license_id, reason = licenses.resolve(entry["text"], entry["url"])
    if entry["expect"] == "conflict":
        assert license_id is None and reason.startswith("licence conflict"), reason
    elif entry["expect"] == "unrecognised":
        assert license_id is None, license_id
    else:
        assert license_id == entry["expect"], reason


def corpus_licence_pairs() -> set[tuple[str, str]]:
    """Every distinct (licence text, URL) pair the corpus holds: the strings list, each getInfo
    entry, and each record's expected licence."""
    pairs = {(e["text"], e["url"]) for e in STRINGS}
    pairs |= {(v["name"], v["url"]) for answer in load("flickr", "licences_expected.yaml").values()
              for v in answer.values()}
    for folder in ("flickr", "yfcc", "commons_api"):
        pairs |= {(want["license"], want["license_url"]) for _, _, want in cases(folder) if "license" in want}
    return pairs


def test_the_corpus_is_as_large_as_its_readme_says():
    records = {folder: len(cases(folder)) for folder in ("flickr", "yfcc", "commons_api", "commons_dump")}
    records["getinfo"] = sum(len(v) for v in load("flickr", "licences_expected.yaml").values())
    assert sum(records.values()) >= 60 and all(records.values()), records
    assert len(corpus_licence_pairs()) >= 150
