"""Kills: the demo workflow is SIGKILLed inside each stage in turn, resumed each time the way
an operator would (`snakemake --unlock`, then `--rerun-incomplete`), and its final outputs
are compared with an uninterrupted run in the same folder."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, REPO, contents, demo_workspace, snakemake

# stage -> a file that exists only once the stage's job is under way, and the stamp that
# marks the job finished (killing after it would not be a kill inside the stage)
INSIDE = {
    "prepare": ("results/fetch/00000.parquet", "results/done/prepare/00000-00003.json"),
    "assess": ("results/judge/00000.parquet", "results/done/assess/00000-00003.json"),
    "dedup": ("results/logs/dedup/dedup.log", "results/dedup/decisions.parquet"),
    # the job's log, opened when it starts: a shard of one batch has its part folder for milliseconds
    "caption": ("results/logs/caption/00000-00003.log", "results/done/caption/00000-00003.json"),
    "provenance": ("results/provenance/00000.parquet", "results/done/provenance/00000-00003.json"),
}


def start(work: Path) -> subprocess.Popen:
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), "--cores", "1", "--rerun-incomplete"]
    return subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_inside(work: Path, stage: str, rng: random.Random) -> bool:
    """Run until the stage is under way, wait a random moment, SIGKILL snakemake and its jobs.
    False if the stage finished before it could be caught."""
    marker, finished = (work / p for p in INSIDE[stage])
    run = start(work)
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert run.poll() is None, f"the workflow ended before {stage} began"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.05))  # a block of the demo's small shards takes well under a second
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    return not finished.exists()


@pytest.mark.slow
def test_killed_in_every_stage_the_workflow_resumes_to_the_same_outputs(tiny_models, tmp_path):
    work = demo_workspace(tmp_path, tiny_models)
    rng = random.Random(0)
    caught = []
    for stage in INSIDE:
        if kill_inside(work, stage, rng):
            caught.append(stage)
        unlock = snakemake(work, "--unlock")
        assert unlock.returncode == 0, unlock.stderr[-2000:]
    resumed = snakemake(work, "--cores", "2", "--rerun-incomplete")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert len(caught) >= 4, caught  # the kills landed inside the stages, not after them
    (work / "results").rename(work / "results-killed")
    fresh = snakemake(work, "--cores", "2")
    assert fresh.returncode == 0, fresh.stderr[-4000:]
    killed, clean = contents(work / "results-killed"), contents(work / "results")
    assert len(clean) > 50 and killed.keys() == clean.keys()
    assert [name for name in clean if killed[name] != clean[name]] == []
    # the held-out digests cover what the val/test samples carry, not when the bytes were fetched:
    # a resumed run that fetched again repacks no held-out bucket
    heldout = work / "results" / "captions" / "heldout"
    digests = {p.name: p.read_bytes() for p in heldout.glob("*.json")}
    assert digests and digests == {p.name: p.read_bytes() for p in (work / "results-killed" / heldout.relative_to(
        work / "results")).glob("*.json")}
