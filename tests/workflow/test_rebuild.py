"""Damage to the files a block job wrote, repaired through Snakemake: `gpic status` names the
damage, `gpic rebuild` runs exactly the jobs that wrote the damaged files (and downstream only
what their new outputs change), and every file comes back byte-identical to the first build."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import BIN, REPO, contents, demo_workspace, snakemake


def gpic(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gpic"), *args], capture_output=True, text=True, cwd=work)


def ran(output: str) -> list[str]:
    """The jobs a Snakemake run executed, as 'rule block' (or 'rule')."""
    jobs = []
    for match in re.finditer(r"^localrule (\w+):\n((?:    .*\n)*)", output, re.MULTILINE):
        block = re.search(r"wildcards: .*block=([\d-]+)", match.group(2))
        jobs.append(f"{match.group(1)} {block.group(1)}" if block else match.group(1))
    return sorted(jobs)


@pytest.fixture(scope="module")
def built(tiny_models, tmp_path_factory) -> Path:
    """A demo run of its own, damaged and repaired in place (manifests name their files by
    absolute path, so a copy elsewhere could not fetch again)."""
    work = demo_workspace(tmp_path_factory.mktemp("rebuild"), tiny_models)
    run = snakemake(work, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    return work


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


DAMAGE = [  # what is done to which file, what `gpic status` says, the jobs the rebuild runs
    (Path.unlink, "packed/train/gpic_train_00003.tar", "caption 00000-00003: packed/train/gpic_train_00003.tar: "
     "missing", ["caption 00000-00003"]),
    (truncate, "captions/00005.parquet", "caption 00004-00007: captions/00005.parquet: ", ["caption 00004-00007"]),
    # a refetch where the raw tar is gone; its new fetch times reach assess, whose outputs stay the same
    (Path.unlink, "raw/00002.tar", "prepare 00000-00003: raw/00002.tar: missing",
     ["assess 00000-00003", "prepare 00000-00003"]),
]


@pytest.mark.slow
def test_a_damaged_block_is_named_and_rebuilt_to_the_same_bytes(built):
    results = built / "results"
    before = contents(results)
    for damage, file, damaged, expected in DAMAGE:
        fetched = (results / "fetch" / "00002.parquet").read_bytes()
        damage(results / file)
        status = gpic(built, "status")
        assert status.returncode == 1 and f"damaged: {damaged}" in status.stdout, status.stdout
        # plain snakemake cannot see it: only the stamps are tracked
        assert "Nothing to be done" in snakemake(built, "-n").stdout + snakemake(built, "-n").stderr
        shown = gpic(built, "rebuild", "--dry-run", "--", "--snakefile", str(REPO / "Snakefile"))
        assert shown.returncode == 0 and "reason: Forced execution" in shown.stdout, shown.stdout + shown.stderr
        rebuilt = gpic(built, "rebuild", "--", "--snakefile", str(REPO / "Snakefile"), "--cores", "2")
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        assert rebuilt.stdout.startswith("damaged: ") and "running: " in rebuilt.stdout
        assert "--forcerun results/done/" in rebuilt.stdout.split("running: ")[1]
        assert ran(rebuilt.stdout + rebuilt.stderr) == expected, file
        assert gpic(built, "status").returncode == 0
        assert contents(results) == before, file  # fetch tables compared without their fetch times
        if not file.startswith("raw/"):
            assert (results / "fetch" / "00002.parquet").read_bytes() == fetched  # nothing fetched again


@pytest.mark.slow
def test_rebuild_names_what_it_was_asked_and_refuses_what_is_not_a_block(built):
    caption = built / "results" / "captions" / "00005.parquet"
    kept = caption.read_bytes()
    truncate(caption)
    try:
        shown = gpic(built, "rebuild", "--shard", "2", "--dry-run")
        assert shown.stdout.strip() == "nothing damaged in the blocks asked for"
        shown = gpic(built, "rebuild", "--shard", "5", "--job", "caption", "--dry-run", "--", "--snakefile",
                     str(REPO / "Snakefile"))
        assert "damaged: results/done/caption/00004-00007.json: captions/00005.parquet: " in shown.stdout
        assert gpic(built, "rebuild", "--job", "pack").returncode == 2
        assert gpic(built, "rebuild", "--block", "00000-00009").returncode == 2
        assert gpic(built, "rebuild", "--shard", "8").returncode == 2
    finally:
        caption.write_bytes(kept)
        os.utime(caption, ns=(0, 0))  # as old as the stamp says it may be
