"""The YFCC100M reader on small files in the published tab-separated layouts: every line read
exactly once whatever the chunk boundaries, compressed files as one part, videos and broken
lines kept with a reason naming chunk and line, and a killed read resumed where it stopped."""

from __future__ import annotations

import bz2
import gzip
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from gpic.collect import collect, part_files, parts, yfcc
from gpic.collect.common import REASON
from gpic.stages.partition import contract_error

BY = ("Attribution License", "http://creativecommons.org/licenses/by/2.0/")
NC = ("Attribution-NonCommercial+License", "http://creativecommons.org/licenses/by-nc/2.0/")  # URL-encoded name


def fields23(pid, title="Costa+Rica", licence=BY, marker="0", uploaded="1331840483", nickname="nino+63004"):
    """One record in Webscope's 23-field layout, values as the dataset writes them."""
    return [pid, "39089491@N00", nickname, "2012-02-16 09:56:37.0", uploaded, "Canon+PowerShot+A480", title,
            "My+vacation", "canon,costa+rica", "", "-81.804885", "24.550558", "12",
            f"http://www.flickr.com/photos/39089491@N00/{pid}/", f"http://farm8.staticflickr.com/7205/{pid}_df77.jpg",
            licence[0], licence[1], "7205", "8", "df7747990d", "692d7e0a7f", "jpg", marker]


def fields25(number, pid, **kwargs):
    """The Multimedia Commons layout: line number and hash before the 23 fields."""
    record = fields23(pid, **kwargs)
    return [str(number), record[0], f"{int(pid) if pid.isdigit() else 0:032x}", *record[1:]]


def dataset() -> tuple[list[bytes], dict[str, set[int]]]:
    """Lines of a 25-field file (varied lengths) and the line indexes of each kind."""
    lines, kinds = [], {"ok": set(), "nc": set(), "video": set(), "broken": set()}

    def add(kind, fields=None, raw=None):
        kinds[kind].add(len(lines))
        lines.append(raw if raw is not None else ("\t".join(fields) + "\n").encode())

    for i in range(36):
        pid = str(5_000_000 + i * 7)
        title = "photo+number+" + str(i) + "+" + "x" * (i * 5 % 23)
        if i % 9 == 4:
            add("video", fields25(i, pid, title=title, marker="1"))
        elif i % 5 == 3:
            add("nc", fields25(i, pid, title=title, licence=NC))
        else:
            add("ok", fields25(i, pid, title=title))
        if i == 10:
            add("broken", raw=b"only\tten\tfields\there\t1\t2\t3\t4\t5\t6\n")
        if i == 20:
            add("broken", fields25(i, "12ab"))
        if i == 25:
            add("broken", raw=b"\t".join([b"99", b"6985418911", b"\xff\xfe title"] + [b"x"] * 22) + b"\n")
        if i == 30:
            add("broken", raw=b"\n")
    lines[-1] = lines[-1].rstrip(b"\n")  # the last line without its newline
    return lines, kinds


LINES, KINDS = dataset()


@pytest.fixture
def metadata(tmp_path):
    path = tmp_path / "yfcc100m_dataset"
    path.write_bytes(b"".join(LINES))
    return path


def run(path, out, chunks=1) -> list[dict]:
    collect("yfcc", {"yfcc": {"metadata": str(path), "chunks": chunks}}, out, sleep=lambda s: None)
    return [row for part in part_files(out / "collection.json") for row in pq.read_table(part).to_pylist()]


def offsets() -> list[int]:
    starts, at = [], 0
    for line in LINES:
        starts.append(at)
        at += len(line)
    return starts


def test_every_line_is_read_exactly_once_whatever_the_chunk_boundaries(metadata, tmp_path, monkeypatch):
    monkeypatch.setattr(yfcc, "PAGE_ROWS", 4)
    size, starts = metadata.stat().st_size, offsets()
    counts = [1, 2, 3, 4, 5, 7, 11, len(LINES), 2 * len(LINES) + 1]
    boundaries = {i * size // n for n in counts for i in range(1, n)}
    assert boundaries & set(starts) and boundaries - set(starts)  # both cases happen: on a line start and inside one
    ids = [line.split(b"\t")[1].decode() for i, line in enumerate(LINES) if i not in KINDS["broken"]] + ["12ab"]
    for chunks in counts:
        rows = run(metadata, tmp_path / f"chunks-{chunks}", chunks)
        assert len(rows) == len(LINES), chunks
        assert Counter(r["source_id"] for r in rows if r["source_id"]) == Counter(ids), chunks
        # every reason names its line by byte offset: the refused lines are exactly the ones expected
        refused = sorted(int(re.search(r"\(byte (\d+)\)", r[REASON]).group(1)) for r in rows if r[REASON])
        assert refused == sorted(starts[i] for i in KINDS["nc"] | KINDS["video"] | KINDS["broken"]), chunks
        taken = {r["source_id"] for r in rows if not r[REASON]}
        assert taken == {LINES[i].split(b"\t")[1].decode() for i in KINDS["ok"]}, chunks


def test_rows_carry_the_dump_values_and_refusals_name_chunk_and_line(metadata, tmp_path):
    assert parts({"yfcc": {"metadata": str(metadata), "chunks": 3}}, "yfcc") == [
        "chunk-0000-of-0003", "chunk-0001-of-0003", "chunk-0002-of-0003"]
    rows = run(metadata, tmp_path / "out", 3)
    by_id = {r["source_id"]: r for r in rows if r["source_id"]}
    first = by_id["5000000"]
    assert first[REASON] == "" and contract_error(first, [], ["flickr", "wikimedia"]) == ""
    assert (first["source"], first["url"]) == ("flickr", "http://farm8.staticflickr.com/7205/5000000_df77.jpg")
    assert (first["license"], first["license_url"]) == BY
    assert (first["title"], first["attribution"], first["owner_nickname"]) == ("photo number 0", "nino 63004",
                                                                               "nino 63004")
    assert (first["owner_id"], first["upload_date"], first["date_taken"]) == (
        "39089491@N00", "2012-03-15T19:41:23+00:00", "2012-02-16 09:56:37.0")
    assert (first["page_url"], first["yfcc_line"], first["yfcc_hash"]) == (
        "http://www.flickr.com/photos/39089491@N00/5000000/", "0", f"{5_000_000:032x}")
    assert (first["retrieved_at"], first["width"], first["height"]) == ("", "", "")  # the dump's, not read by us
    assert all(contract_error(r, [], ["flickr", "wikimedia"]) == "" for r in rows if not r[REASON])
    nc = by_id["5000021"]  # i = 3
    assert nc["license"] == "Attribution-NonCommercial License"
    assert nc[REASON] == (f"yfcc chunk-0000-of-0003 line 4 (byte {offsets()[3]}): photo 5000021: licence not allowed: "
                          "CC-BY-NC-2.0 (Attribution-NonCommercial License)")
    assert by_id["5000028"][REASON].endswith("video 5000028: the corpus takes photos")  # i = 4
    assert by_id["12ab"][REASON].endswith("photo id '12ab' is not a number")
    broken = {re.sub(r"^.*?\): ", "", r[REASON]) for r in rows if not r["source_id"]}
    assert broken == {"1 tab-separated fields, a YFCC100M line has 23 or 25",  # the empty line
                      "10 tab-separated fields, a YFCC100M line has 23 or 25",
                      "not UTF-8 (invalid start byte at byte 14)"}
    assert all(re.match(r"yfcc chunk-000\d-of-0003 line \d+ \(byte \d+\): ", r[REASON]) for r in rows if r[REASON])


@pytest.mark.parametrize("suffix, opener", [(".gz", gzip.open), (".bz2", bz2.open)])
def test_a_compressed_file_is_one_part_read_line_by_line(metadata, tmp_path, suffix, opener):
    packed = tmp_path / f"yfcc100m_dataset{suffix}"
    with opener(packed, "wb") as stream:
        stream.write(metadata.read_bytes())
    assert parts({"yfcc": {"metadata": str(packed), "chunks": 3}}, "yfcc") == ["chunk-0000-of-0001"]
    rows, plain = run(packed, tmp_path / "packed", 3), run(metadata, tmp_path / "plain", 3)
    assert [r["source_id"] for r in rows] == [r["source_id"] for r in plain]
    assert [re.sub(r"^.*?: ", "", r[REASON]) for r in rows] == [re.sub(r"^.*?: ", "", r[REASON]) for r in plain]
    assert rows[3][REASON].startswith("yfcc chunk-0000-of-0001 line 4: photo 5000021: licence not allowed")


class Killed(BaseException):
    """A kill: nothing in the collector catches it."""


@pytest.mark.parametrize("packed", [False, True])
def test_a_killed_read_resumes_after_its_last_page(metadata, tmp_path, monkeypatch, packed):
    path = metadata
    if packed:
        path = tmp_path / "yfcc100m_dataset.gz"
        path.write_bytes(gzip.compress(metadata.read_bytes()))
    reference = run(path, tmp_path / "reference", 2)
    monkeypatch.setattr(yfcc, "PAGE_ROWS", 4)
    original, calls = yfcc.record_row, []

    def counted(raw, where, allow, kill_at=0):
        calls.append(where)
        if len(calls) == kill_at:
            raise Killed
        return original(raw, where, allow)

    monkeypatch.setattr(yfcc, "record_row", lambda *a: counted(*a, kill_at=10))
    with pytest.raises(Killed):
        run(path, tmp_path / "out", 2)
    calls.clear()
    monkeypatch.setattr(yfcc, "record_row", counted)
    assert run(path, tmp_path / "out", 2) == reference
    assert len(calls) == len(LINES) - 8  # the two pages on disk (8 lines) are not read again
    assert calls[0].startswith("yfcc chunk-0000-of-000") and " line 9" in calls[0]


def test_the_webscope_layout_of_23_fields_is_read_too(tmp_path):
    path = tmp_path / "yfcc100m_dataset-0"
    lines = [fields23("6985418911", title="IMG_0520"), fields23("6985418912"), fields23("6985418913")[:-1]]
    path.write_text("".join("\t".join(f) + "\n" for f in lines))
    rows = run(path, tmp_path / "out")
    assert [r["source_id"] for r in rows] == ["6985418911", "6985418912", ""]
    assert (rows[0]["title"], rows[0]["yfcc_line"], rows[0][REASON]) == ("IMG_0520", "", "")
    third = len("\t".join(lines[0])) + len("\t".join(lines[1])) + 2
    assert rows[2][REASON].endswith(f"line 3 (byte {third}): 22 tab-separated fields, a YFCC100M line has 23 or 25")
