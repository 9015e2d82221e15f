"""Hostile input and the conservation invariant: whatever a manifest holds, every row ends
as exactly one key with exactly one record, and bad rows carry a reason instead of failing
the shard."""

from __future__ import annotations

import io
import json
import tarfile

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpic.stages.fetch import fetch_shard
from gpic.stages.partition import partition, read_manifest
from gpic.store import read_table, read_tar

from helpers import jpeg_bytes

LICENCES = ["CC BY 4.0", "Attribution License", "CC0", "PD-US", "4", "0", "All Rights Reserved", "CC BY-NC 2.0",
            "", "??", "CC BY-SA 3.0 de"]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@st.composite
def manifest_rows(draw):
    url = draw(st.sampled_from(["ok", "missing", "outside", "", "ftp://x/y.jpg", "javascript:alert(1)",
                                "http://[::1", "http://exa mple.org/a.jpg", "data:image/png;base64,AAAA", "text"]))
    return {"source": draw(st.sampled_from(["flickr", "wikimedia", "myspace", ""])),
            "source_id": draw(st.one_of(st.sampled_from(["1", "2", "3", ""]), TEXT)),
            "url": draw(TEXT) if url == "text" else url,
            "license": draw(st.one_of(st.sampled_from(LICENCES), TEXT)),
            "license_url": draw(st.sampled_from(["", "https://creativecommons.org/licenses/by/2.0/", "x"])),
            "attribution": draw(st.one_of(TEXT, st.just("A" * 20000), st.just("\x00\x1b[31m\u202e"))),
            "title": draw(TEXT)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(manifest_rows(), min_size=1, max_size=12))
def test_every_manifest_row_ends_as_one_key_with_one_fetch_record(tmp_path_factory, base_config, photos, rows):
    tmp = tmp_path_factory.mktemp("prop")
    allowed = tmp / "allowed"
    allowed.mkdir()
    (allowed / "ok.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    (tmp / "outside.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    urls = {"ok": (allowed / "ok.jpg").as_uri(), "missing": (allowed / "gone.jpg").as_uri(),
            "outside": (tmp / "outside.jpg").as_uri()}
    rows = [{**row, "url": urls.get(row["url"], row["url"])} for row in rows]
    (tmp / "m.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    base_config.update(shards=2)
    base_config["fetch"]["file_roots"] = [str(allowed)]
    summary = partition([str(tmp / "m.jsonl")], base_config, tmp / "manifests")
    manifests = [read_table(tmp / "manifests" / f"{s:05d}.parquet") for s in range(2)]
    keys = pd.concat(manifests)["key"]
    assert summary["rows"] == len(rows) == len(keys) + summary["repeated_keys"]
    assert keys.is_unique
    for shard, manifest in enumerate(manifests):
        records = fetch_shard(manifest, base_config, tmp / f"raw{shard}.tar", tmp / f"fetch{shard}.parquet")
        assert records["key"].tolist() == manifest["key"].tolist()  # one record per key, in order
        assert set(records["fetch_status"]) <= {"ok", "dropped", "failed", "skipped"}
        assert (records.loc[records["fetch_status"] != "ok", "fetch_reason"] != "").all()
        ok = records[records["fetch_status"] == "ok"]
        assert sorted(read_tar(tmp / f"raw{shard}.tar")) == sorted(ok["raw_member"])
        assert (manifest.set_index("key").loc[ok["key"], "url"] == urls["ok"]).all()


HOSTILE = {  # source_id -> (url, attribution, expected contract error prefix)
    "ipv6": ("http://[::1/a.jpg", "x", "manifest bad url"),
    "port": ("http://example.org:99999/a.jpg", "x", "manifest bad url"),
    "space": ("http://example.org/a b.jpg", "x", "manifest bad url: contains whitespace"),
    "ctrl": ("http://example.org/a\x07.jpg", "x", "manifest bad url: contains whitespace or control"),
    "js": ("javascript:alert(1)", "x", "manifest unsupported url scheme: javascript"),
    "data": ("data:image/png;base64,AAAA", "x", "manifest unsupported url scheme: data"),
    "huge": ("http://example.org/a.jpg", "A" * 100_000, "manifest field too long: attribution has 100000"),
    "long-url": ("http://example.org/" + "a" * 5000, "x", "manifest field too long: url"),
    "unicode": ("http://example.org/a.jpg", "Zoë \u202e\x00 \U0001f600", ""),
}


def test_hostile_manifest_rows_get_reasons(tmp_path, base_config):
    rows = [dict(source="wikimedia", source_id=sid, url=url, license="CC BY 4.0", license_url="",
                 attribution=attribution, title="t") for sid, (url, attribution, _) in HOSTILE.items()]
    rows.append(dict(source="wikimedia", source_id="ipv6", url="http://example.org/dupe.jpg", license="CC0",
                     license_url="", attribution="", title="repeat of a key"))
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    summary = partition([str(tmp_path / "m.parquet")], base_config, tmp_path / "out")
    table = pd.concat(read_table(tmp_path / "out" / f"{s:05d}.parquet") for s in range(4)).set_index("source_id")
    assert summary["repeated_keys"] == 1 and len(table) == len(HOSTILE)
    for sid, (_, _attribution, reason) in HOSTILE.items():
        assert (table.loc[sid, "contract_error"].startswith(reason)
                and (reason or table.loc[sid, "contract_error"] == "")), sid
    assert table.loc["unicode", "attribution"] == "Zoë \u202e\x00 \U0001f600".strip()  # kept exactly, not mangled


def test_manifest_files_that_do_not_parse_are_named(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="broken.parquet: cannot read manifest"):
        read_manifest(tmp_path / "broken.parquet")
    (tmp_path / "m.xlsx").write_text("")
    with pytest.raises(ValueError, match="unknown manifest format '.xlsx'"):
        read_manifest(tmp_path / "m.xlsx")


@pytest.mark.parametrize("name,kind", [("../escape.jpg", tarfile.REGTYPE), ("/etc/passwd", tarfile.REGTYPE),
                                       ("a/../../b.jpg", tarfile.REGTYPE), ("link.jpg", tarfile.SYMTYPE)])
def test_tars_with_escaping_or_special_members_are_refused(tmp_path, name, kind):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        info.size = 3 if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(b"abc") if kind == tarfile.REGTYPE else None)
    with pytest.raises(ValueError, match="refusing tar member"):
        read_tar(path)


def test_models_given_as_pickles_are_refused(tmp_path, tiny_models):
    from gpic.inference.dinov2 import DinoV2Features
    from gpic.inference.vlm import VisionLanguageModel

    for name, model in (("vlm", VisionLanguageModel), ("dinov2", DinoV2Features)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((tiny_models[name] / "config.json").read_text())
        torch.save({"weight": torch.zeros(1)}, folder / "pytorch_model.bin")  # a pickle
        with pytest.raises((ValueError, OSError), match="safetensors|pytorch_model.bin|model.safetensors"):
            model(folder)
