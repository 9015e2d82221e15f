"""Provenance on evidence that does not add up: a key with no fetch record, a key captioned
but not packed, a table that loses or repeats a key. Each must end in a named failure, never
in a silent omission or a count that conserves by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from gpic.cli import app
from gpic.review.verify import check_keys, check_provenance, key_array
from gpic.stages.provenance import assemble
from gpic.store import write_json, write_table

KEYS = ["a_packed", "b_no_fetch", "c_not_packed", "d_duplicate", "e_no_caption"]


def evidence(root: Path) -> tuple[dict[str, str], list[str]]:
    """Per-stage tables of one shard as the stages write them (the columns provenance reads)."""
    every = KEYS
    tables = {
        "manifests": pd.DataFrame({"key": every, "contract_error": "", "split": "train", "source": "flickr",
                                   "source_id": every, "url": [f"https://example.org/{k}.jpg" for k in every]}),
        "fetch": pd.DataFrame({"key": [k for k in every if k != "b_no_fetch"], "fetch_status": "ok",
                               "fetch_reason": ""}),
        "filter": pd.DataFrame({"key": every, "filter_verdict": "keep", "filter_reason": ""}),
        "judge": pd.DataFrame({"key": every, "judge_verdict": "keep", "judge_reason": ""}),
        "embed": pd.DataFrame({"key": every, "embed_status": "ok", "embed_reason": ""}),
        "dedup": pd.DataFrame({"key": every, "kept": [k != "d_duplicate" for k in every],
                               "dedup_layer": ["", "", "", "phash", ""], "duplicate_of": ["", "", "", "a_packed", ""],
                               "similarity": [None, None, None, 0.97, None]}),
        "captions": pd.DataFrame({"key": [k for k in every if k != "e_no_caption"], "caption_status": "ok",
                                  "caption_reason": ""}),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = str(root / name / "00000.parquet")
        write_table(table, paths[name])
    index = root / "packed" / "train" / "gpic_train_00000.parquet"
    write_table(pd.DataFrame({"key": ["a_packed"], "tar": ["gpic_train_00000.tar"], "image_member": ["a_packed.jpg"]}),
                index)
    return paths, [str(index)]


def test_every_manifest_key_gets_a_final_state_and_missing_evidence_fails(tmp_path):
    paths, indexes = evidence(tmp_path)
    out = assemble(paths, indexes, tmp_path / "provenance" / "00000.parquet").set_index("key")
    assert sorted(out.index) == KEYS  # none omitted
    assert out.loc["a_packed", ["state", "tar"]].tolist() == ["packed", "gpic_train_00000.tar"]
    assert out.loc["b_no_fetch", ["state", "stage", "reason"]].tolist() == ["failed", "fetch", "no fetch record"]
    assert out.loc["c_not_packed", ["state", "stage", "reason"]].tolist() == [
        "failed", "pack", "captioned but missing from the packed output"]
    assert out.loc["d_duplicate", ["state", "stage", "reason"]].tolist() == [
        "dropped", "dedup", "duplicate (phash): of a_packed, similarity 0.970"]
    assert out.loc["e_no_caption", ["state", "stage", "reason"]].tolist() == ["failed", "caption", "no caption record"]


def results_folder(root: Path, provenance: dict[str, list[str]], manifest: dict[str, list[str]]) -> Path:
    """A results folder whose partition put `manifest` keys in each shard and whose provenance
    tables hold `provenance` keys (all dropped, so no packed output is needed)."""
    write_json({"shards": len(manifest), "per_shard": {s: len(k) for s, k in manifest.items()}},
               root / "manifests" / "partition.json")
    for shard, keys in manifest.items():
        write_table(pd.DataFrame({"key": keys}), root / "manifests" / f"{shard}.parquet")
    for shard, keys in provenance.items():
        write_table(pd.DataFrame({"key": keys, "state": "dropped", "stage": "fetch", "reason": "licence x",
                                  "tar": "", "member": "", "split": "train", "source": "s", "source_id": keys,
                                  "url": ""}), root / "provenance" / f"{shard}.parquet")
    return root


MANIFEST = {"00000": ["k1", "k2", "k3"], "00001": ["k4", "k5"]}
BROKEN = {
    "lost": {"00000": ["k1", "k2", "k3"], "00001": ["k4"]},
    "repeated": {"00000": ["k1", "k2", "k3"], "00001": ["k4", "k4"]},
    "swapped": {"00000": ["k1", "k2", "k3"], "00001": ["k4", "k9"]},
}


def test_verify_names_the_shard_whose_provenance_does_not_conserve(tmp_path):
    assert check_provenance(results_folder(tmp_path / "good", MANIFEST, MANIFEST), {}) == []
    for case, provenance in BROKEN.items():
        problems = check_provenance(results_folder(tmp_path / case, provenance, MANIFEST), {})
        assert problems and all(p.startswith("provenance/00001") for p in problems), (case, problems)
    swapped = check_provenance(results_folder(tmp_path / "swapped2", BROKEN["swapped"], MANIFEST), {})
    assert swapped == ["provenance/00001: key k5 of the manifest has no final state",
                       "provenance/00001: key k9 is not in the shard's manifest"]


def test_summary_fails_naming_the_shard_whose_provenance_does_not_conserve(tmp_path):
    runner = CliRunner()
    good = runner.invoke(app, ["summary", "--results", str(results_folder(tmp_path / "good", MANIFEST, MANIFEST)),
                               "--json"])
    assert good.exit_code == 0 and json.loads(good.output)["conserved"]
    for case in ("lost", "repeated"):
        result = runner.invoke(app, ["summary", "--results",
                                     str(results_folder(tmp_path / case, BROKEN[case], MANIFEST))])
        assert result.exit_code == 1, (case, result.output)
        assert "00001" in result.output.split("counts do not conserve")[-1], (case, result.output)


def test_verify_names_a_key_packed_in_two_tars():
    indexes = {"train/gpic_train_00000.tar": pd.DataFrame({"key": ["k1", "k2"]}),
               "test/gpic_test_00000.tar": pd.DataFrame({"key": ["k2"]})}
    assert check_keys(indexes) == ["key k2 is packed more than once: test/gpic_test_00000.tar, "
                                   "train/gpic_train_00000.tar"]


def test_verify_keeps_keys_as_arrays_and_names_at_most_twenty_of_a_kind():
    """At 110M samples verify keeps only each tar's keys (bytes arrays), and a corpus-wide fault
    is named by 20 keys and a count, not by millions of lines."""
    keys = np.array([f"k{i:03d}" for i in range(30)], dtype=object)
    indexes = {"train/a.tar": keys, "train/b.tar": keys[:25], "val/c.tar": np.array(["z"], dtype=object)}
    problems = check_keys(indexes)
    assert problems[0] == "key k000 is packed more than once: train/a.tar, train/b.tar"
    assert len(problems) == 21 and problems[-1] == "... and 5 more keys packed more than once"
    assert key_array(pd.DataFrame({"key": ["k1", "k2"]})).tolist() == [b"k1", b"k2"]
    assert check_keys({"train/a.tar": keys}) == []
