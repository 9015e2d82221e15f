"""Partition streams its manifests: every row accounted for, the first of a repeated key kept,
shards sorted, and the same bytes as reading each manifest as one table."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pyarrow as pa
import pytest

from gpic.identity import shard_of, split_of
from gpic.stages import partition as stage
from gpic.stages.partition import COLUMNS, FIELDS, MAX_CHARS, REQUIRED, contract_error, partition, row_key
from gpic.store import read_table, write_json, write_table

GOOD = dict(license="CC0", license_url="https://creativecommons.org/publicdomain/zero/1.0/", attribution="Jane Doe",
            title="A title")
BAD = [  # (row changes, reason prefix): one row per contract rule, rows 60 to 68 of a.csv
    (dict(source=""), "manifest empty source"),
    (dict(source="myspace"), "manifest source not allowed: myspace"),
    (dict(source_id=""), "manifest empty source_id"),
    (dict(url=""), "manifest empty url"),
    (dict(title="T" * 17000), "manifest field too long: title has 17000"),
    (dict(url="https://example.org/a b.jpg"), "manifest bad url: contains whitespace"),
    (dict(url="http://example.org:99999/a.jpg"), "manifest bad url: Port out of range"),
    (dict(url="ftp://example.org/a.jpg"), "manifest unsupported url scheme: ftp"),
    (dict(width="-3"), "manifest bad width"),
]


def row(name: str, **changes) -> dict:
    return {"source": "wikimedia", "source_id": name, "url": f"https://example.org/{name}.jpg", **GOOD,
            "retrieved_at": "2025-03-01T10:10:00Z", "width": "640", "height": "480", **changes}


@pytest.fixture
def manifests(tmp_path) -> list[str]:
    """Three formats with repeated keys within and across files, every kind of bad row, a CSV
    value with a quoted newline, a JSON lines column on some lines only and a parquet with numbers."""
    good = [row(f"M{i}") for i in range(60)]
    bad = [row(f"B{i}", **changes) for i, (changes, _) in enumerate(BAD)]
    csv = pd.DataFrame(good + bad + [row("M3", title="repeat of M3 in the same file")])
    csv.loc[5, "title"] = "first line\nsecond line"
    csv["note"] = [f"n{i}" for i in range(len(csv))]
    csv.to_csv(tmp_path / "a.csv", index=False)
    lines = [{**row(f"M{i}" if i % 4 == 0 else f"J{i}"), "width": 100 + i} for i in range(40)]
    for i in range(0, 40, 7):
        lines[i]["camera"] = f"cam {i}"
    lines.append({key: value for key, value in row("J99").items() if key != "height"})
    lines.append(row("J99", title="repeat of J99 in the same batch"))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    numbers = pd.DataFrame([row(f"P{i}") for i in range(30)] + [row("J1"), row("M0")])
    numbers["width"] = [float(i) if i % 3 else None for i in range(len(numbers))]
    numbers["height"] = range(len(numbers))
    numbers.to_parquet(tmp_path / "c.parquet")
    return [str(tmp_path / name) for name in ("a.csv", "b.jsonl", "c.parquet")]


@pytest.fixture
def small(monkeypatch):
    """Batches of 7 rows and buckets small enough to be spread again: every seam is crossed."""
    monkeypatch.setattr(stage, "BUCKETS", 3)
    monkeypatch.setattr(stage, "BUCKET_BYTES", 2000)
    monkeypatch.setitem(stage.partition.__kwdefaults__, "rows", 7)


def whole_table(sources: list[str], config, out_dir) -> dict:
    """The partition as it was before streaming: every manifest read whole with pandas, one scan
    per shard. Kept as the reference the streaming version must match byte for byte."""
    frames = []
    for path in sources:
        read = {".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
                ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
                ".parquet": pd.read_parquet}[path[path.rindex("."):]]
        df = read(path)
        df = df.astype(object).where(df.notna(), "").map(stage._text)
        missing = [c for c in REQUIRED if c not in df.columns]
        extra = [c for c in df.columns if c not in FIELDS]
        records = []
        for number, record in enumerate(df.to_dict("records")):
            core = {c: record.get(c, "") for c in FIELDS}
            key = row_key(core)
            records.append({"key": key, "shard": shard_of(key, config["shards"]),
                            "split": split_of(key, config["splits"]["val_fraction"],
                                              config["splits"]["test_fraction"]),
                            **core, "extra": json.dumps({c: record[c] for c in extra}, sort_keys=True,
                                                        ensure_ascii=False),
                            "manifest_file": path, "manifest_row": number,
                            "contract_error": contract_error(core, missing, config["allowed_sources"])})
        frames.append(pd.DataFrame(records, columns=COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    repeated = rows.duplicated("key", keep="first")
    unique = rows[~repeated]
    summary = {"shards": config["shards"], "rows": len(rows), "keys": len(unique),
               "repeated_keys": int(repeated.sum()), "contract_errors": int((unique["contract_error"] != "").sum()),
               "per_shard": {}}
    for index in range(config["shards"]):
        part = unique[unique["shard"] == index].sort_values("key")
        write_table(part, out_dir / f"{index:05d}.parquet")
        summary["per_shard"][f"{index:05d}"] = len(part)
    write_json(summary, out_dir / "partition.json")
    return summary


@pytest.mark.parametrize("shards", [1, 5, 40])
def test_streaming_writes_the_same_bytes_as_the_whole_table(tmp_path, base_config, manifests, small, shards):
    base_config.update(shards=shards)
    expected = whole_table(manifests, base_config, tmp_path / "expected")
    assert partition(manifests, base_config, tmp_path / "out") == expected
    for name in [f"{index:05d}.parquet" for index in range(shards)] + ["partition.json"]:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "expected" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in
                                                                          (tmp_path / "expected").iterdir())


def test_every_row_is_accounted_for_and_shards_are_sorted(tmp_path, base_config, manifests, small):
    base_config.update(shards=6)
    summary = partition(manifests, base_config, tmp_path / "out")
    tables = [read_table(tmp_path / "out" / f"{index:05d}.parquet") for index in range(6)]
    every = pd.concat(tables, ignore_index=True)
    read = 70 + 42 + 32  # data rows of a.csv, b.jsonl, c.parquet
    assert summary["rows"] == read == summary["keys"] + summary["repeated_keys"]
    assert summary["repeated_keys"] == 1 + 11 + 2  # M3 again in a.csv; M0, M4 .. M36, J99 in b.jsonl; J1, M0
    assert every["key"].is_unique and len(every) == summary["keys"]
    assert summary["contract_errors"] == (every["contract_error"] != "").sum() == len(BAD)
    for index, table in enumerate(tables):
        assert table["key"].tolist() == sorted(table["key"]) and (table["shard"] == index).all()
        assert summary["per_shard"][f"{index:05d}"] == len(table)
    assert not list((tmp_path / "out").glob(".partition-*"))  # the temporary buckets are gone


def test_the_first_row_of_a_repeated_key_wins(tmp_path, base_config, manifests, small):
    partition(manifests, base_config, tmp_path / "out")
    every = pd.concat(read_table(p) for p in (tmp_path / "out").glob("*.parquet")).set_index("source_id")
    assert every.loc["M3", "title"] == "A title" and every.loc["M3", "manifest_file"].endswith("a.csv")
    assert every.loc["J1", "manifest_file"].endswith("b.jsonl") and every.loc["J1", "width"] == "101"
    assert every.loc["P4", "manifest_row"] == 4 and every.loc["P4", "width"] == "4"  # 4.0 read as text "4"


def test_every_contract_rule_gives_its_reason(tmp_path, base_config, manifests, small):
    partition(manifests, base_config, tmp_path / "out")
    every = pd.concat(read_table(p) for p in (tmp_path / "out").glob("*.parquet"))
    csv = every[every["manifest_file"].str.endswith("a.csv")].set_index("manifest_row")
    for number, (_, reason) in enumerate(BAD, start=60):
        assert csv.loc[number, "contract_error"].startswith(reason), (number, csv.loc[number, "contract_error"])
    assert (csv.loc[range(60), "contract_error"] == "").all()


def test_a_quoted_newline_and_a_column_on_some_lines_survive_batching(tmp_path, base_config, manifests, small):
    partition(manifests, base_config, tmp_path / "out")
    every = pd.concat(read_table(p) for p in (tmp_path / "out").glob("*.parquet"))
    csv = every[every["manifest_file"].str.endswith("a.csv")].set_index("manifest_row")
    assert csv.loc[5, "title"] == "first line\nsecond line" and json.loads(csv.loc[5, "extra"]) == {"note": "n5"}
    lines = every[every["manifest_file"].str.endswith("b.jsonl")].set_index("manifest_row")
    assert json.loads(lines.loc[7, "extra"]) == {"camera": "cam 7"}
    assert json.loads(lines.loc[9, "extra"]) == {"camera": ""}  # a file's column, empty where a line lacks it
    assert lines.loc[40, "height"] == "" and lines.loc[40, "contract_error"] == ""  # not its repeat on line 41
    assert sorted(lines.index) == [i for i in range(41) if i % 4 or i == 40]  # M0, M4 .. came first in a.csv


def test_a_bad_manifest_leaves_no_shards_behind(tmp_path, base_config, manifests):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="broken.parquet: cannot read manifest"):
        partition([*manifests, str(tmp_path / "broken.parquet")], base_config, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())
    with pytest.raises(ValueError, match="unknown manifest format '.xlsx'"):  # refused before reading any
        partition([*manifests, str(tmp_path / "m.xlsx")], base_config, tmp_path / "out2")


TRICKY = [  # row changes the batch-wide checks must judge exactly as contract_error does
    *[dict(changes) for changes, _ in BAD], {}, dict(source="x" * 100), dict(source="Flickr"), dict(source=" flickr"),
    *[{name: c * n} for name, limit in MAX_CHARS.items() for c in ("a", "é", "😀") for n in (limit, limit + 1)],
    *[dict(url=u) for u in ("https://example.org/a\n", "https://example.org/\x00", "https://example.org/\xa0x",
                            "HTTP://example.org/a.jpg", "Https://example.org/a.jpg", "FILE:///tmp/a.jpg",
                            "file:///tmp/a.jpg", "file://host/a.jpg", "http://example.org:8080/a.jpg",
                            "http://example.org:99999/a", "http://example.org:x/a", "https://[::1]/a",
                            "https://[::1/a", "https://user:pw@example.org/a", "https://exämple.org/a",
                            "https://example.org/ä.jpg", "https://example.org", "https://example.org/",
                            "https://", "example.org/a.jpg", "//example.org/a", "mailto:a@example.org", "ftp://a/b",
                            "https://example.org?q=1", "https://example.org/a b", "https://ex ample.org/")],
    *[{name: v} for name in ("width", "height") for v in ("", "0", "007", "-3", "3.0", "1e3", "٣", "²", "5 ", "x")],
    dict(source="", width="x"), dict(url="", title="T" * 17000),  # the first failing rule is the one given
    dict(source_id=""), dict(source_id="", url="ftp://a/b"),  # keyed by content
]


@pytest.mark.parametrize("missing", [[], ["title"]])
@pytest.mark.parametrize("allowed", [["flickr", "wikimedia"], ["flickr", "wikimedia", ""]])
def test_batch_checks_give_the_per_row_verdict(base_config, missing, allowed):
    base_config.update(allowed_sources=allowed, shards=7)
    rows = [row(f"T{i}", **changes) for i, changes in enumerate(TRICKY)]
    rows += [{**r, "collect_reason": "collect: no author"} for r in rows[::3]]
    extras = [{"collect_reason": r.get("collect_reason", ""), 'odd "name"': f"{i} ünï 😀",  # one escape a column
               "quote": ["", 'a "q"'][i % 2], "slash": ["b\\s", "plain"][i % 2],
               "control": ["tab\tnl\n\x01\x1f", "x"][i % 2]} for i, r in enumerate(rows)]
    texts = {c: [r[c] for r in rows] for c in FIELDS if c not in missing}
    texts.update({c: [e[c] for e in extras] for c in extras[0]})
    got = stage.assign(len(rows), texts, missing, "m.csv", 3, base_config).to_pydict()
    cores = [{c: r[c] if c not in missing else "" for c in FIELDS} for r in rows]
    assert got["contract_error"] == [e["collect_reason"] or contract_error(core, missing, allowed)
                                     for core, e in zip(cores, extras, strict=True)]
    assert got["key"] == [row_key(core) for core in cores]
    assert got["shard"] == [shard_of(key, 7) for key in got["key"]]
    assert got["split"] == [split_of(key, 0.002, 0.01) for key in got["key"]]
    assert got["extra"] == [json.dumps(e, sort_keys=True, ensure_ascii=False) for e in extras]
    assert got["manifest_row"] == list(range(3, 3 + len(rows)))
    columns = {c: pa.array([core[c] for core in cores]) for c in FIELDS}
    passes = stage._passes(columns, allowed).tolist()  # the fast path is taken, and only where it may be
    assert passes[len(BAD)] and 20 < sum(passes) < len(rows) // 2
    assert all(contract_error(core, [], allowed) == "" for core, ok in zip(cores, passes, strict=True) if ok)


def test_keying_in_two_processes_writes_the_same_bytes(tmp_path, base_config, manifests, monkeypatch):
    submitted = []

    class Counted(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            submitted.append(args[1])
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(stage, "ProcessPoolExecutor", Counted)
    base_config.update(shards=5)
    one = partition(manifests, base_config, tmp_path / "one", rows=7)
    assert not submitted
    assert partition(manifests, base_config, tmp_path / "two", workers=2, rows=7) == one
    # 70, 42 (and the blank last line: an empty batch) and 32 rows in batches of 7, all keyed in the pool
    assert len(submitted) == 10 + 7 + 5
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 6
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    submitted.clear()
    batches = stage.keyed_batches(manifests, base_config, 7, workers=2)
    path, first = next(batches)
    assert path == manifests[0] and first.column("manifest_row").to_pylist() == list(range(7))
    assert len(submitted) == 4  # look-ahead: twice the workers, not the whole manifest
    batches.close()
