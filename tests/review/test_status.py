"""`gpic status` from stamps that record their files: done, pending and damaged blocks, each
kind of damage named; and the dry-run reading that steps a rebuild downstream."""

from __future__ import annotations

import os

from gpic.jobs import write_stamp
from gpic.layout import Layout
from gpic.review.status import damage, stale_on_their_own, status


def finished(root, job="caption", block="00000-00001"):
    """A caption block whose files exist, stamped as its job stamps them."""
    layout = Layout(root)
    for shard in ("00000", "00001"):
        for i, path in enumerate(layout.shard(shard).written_by(job)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{path.name} {i}".encode() * 10)
    stamp = layout.stamp(job, block)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    write_stamp(stamp, job, block, {"00000": {}, "00001": {}}, layout)
    return layout, stamp


def test_each_kind_of_damage_is_named(tmp_path, base_config):
    config = {**base_config, "shards": 4, "shards_per_job": 2}
    layout, stamp = finished(tmp_path)
    rows = {row["job"]: row for row in status(tmp_path, config)}
    assert (rows["caption"]["done"], rows["caption"]["pending"], rows["caption"]["damaged"]) == (1, ["00002-00003"], {})
    files = layout.shard("00000").written_by("caption")
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:-1])
    os.utime(layout.shard("00001").table("captions"), (stamp.stat().st_mtime + 5,) * 2)
    same_size = layout.shard("00001").packed("train", "00001")[0]
    same_size.write_bytes(same_size.read_bytes()[::-1])
    os.utime(same_size, (stamp.stat().st_mtime - 5,) * 2)
    assert damage(stamp, tmp_path) == ["captions/00000.parquet: missing",
                                       "captions/00001.parquet: changed after its job finished",
                                       "packed/train/gpic_train_00000.tar: 219 bytes, 220 recorded"]
    deep = damage(stamp, tmp_path, deep=True)
    assert "packed/train/gpic_train_00001.tar: content differs from its recorded sha256" in deep and len(deep) == 4
    row = {row["job"]: row for row in status(tmp_path, config)}["caption"]
    assert row["done"] == 0 and list(row["damaged"]) == ["00000-00001"]


def test_a_stamp_without_files_or_unreadable_is_damaged_not_done(tmp_path):
    stamp = Layout(tmp_path).stamp("prepare", "00000-00001")
    stamp.parent.mkdir(parents=True)
    stamp.write_text('{"stage": "prepare", "block": "00000-00001", "seconds": 1.0}')
    assert damage(stamp, tmp_path) == ["done/prepare/00000-00001.json: records no files (written by an older gpic): "
                                       "rebuild to check"]
    stamp.write_text("{")
    assert "unreadable stamp" in damage(stamp, tmp_path)[0]


def test_the_stamp_depends_on_the_outputs_alone(tmp_path):
    _, stamp = finished(tmp_path / "a")
    _, again = finished(tmp_path / "b")
    assert stamp.read_bytes() == again.read_bytes()


DRY_RUN = """Building DAG of jobs...
rule assess:
    input: results/done/prepare/00000-00003.json
    output: results/done/assess/00000-00003.json
    reason: Updated input files: results/done/prepare/00000-00003.json
    wildcards: block=00000-00003
[Sun Dec  6 20:34:54 2026]
localrule dedup:
    input: results/done/assess/00000-00003.json
    output: results/dedup/decisions.parquet, results/dedup/blocks/00000-00003.json
    reason: Input files updated by another job: results/done/assess/00000-00003.json
[Sun Dec  6 20:34:54 2026]
rule provenance:
    output: results/done/provenance/00004-00007.json
    reason: Missing output files: results/done/provenance/00004-00007.json; Input files updated by another job: x
rule all:
    input: results/done/provenance/00004-00007.json
    reason: Input files updated by another job: results/done/provenance/00004-00007.json
"""


def test_a_rebuild_steps_only_to_the_jobs_stale_on_their_own():
    assert stale_on_their_own(DRY_RUN) == ["results/done/assess/00000-00003.json",
                                           "results/done/provenance/00004-00007.json"]
    assert stale_on_their_own("Nothing to be done (all requested files are present and up to date).") == []
