"""The workflow's SLURM path on a real one-node cluster (profiles/slurm-local/cluster.sh):
the demo through `--profile profiles/slurm` gives the same outputs as the local run, GPU jobs
are scheduled on GRES, and a failing job is reported as failed."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from helpers import REPO, contents, demo_workspace, snakemake

CLUSTER = REPO / "profiles" / "slurm-local" / "cluster.sh"
PROFILE = ["--profile", str(REPO / "profiles" / "slurm"), "--workflow-profile", str(REPO / "profiles" / "slurm-local")]


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no slurm and no apt-get to install it")
    up = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True)
    if up.returncode == 3:
        pytest.skip(f"cannot install slurm packages here: {up.stderr.strip()}")
    assert up.returncode == 0, up.stderr
    yield
    subprocess.run([str(CLUSTER), "down"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def slurm_run(cluster, tiny_models, tmp_path_factory):
    """The demo built through SLURM, then again locally in the same folder (file:// URLs,
    and so the keys of rows without a source_id, depend on the folder)."""
    work = demo_workspace(tmp_path_factory.mktemp("slurm"), tiny_models)
    run = snakemake(work, *PROFILE)
    assert run.returncode == 0, run.stderr[-4000:]
    (work / "results").rename(work / "results-slurm")
    local = snakemake(work, "--cores", "2")
    assert local.returncode == 0, local.stderr[-4000:]
    return work, run


@pytest.mark.slow
def test_slurm_run_gives_the_local_outputs(slurm_run):
    work, _ = slurm_run
    local, remote = contents(work / "results"), contents(work / "results-slurm")
    assert len(local) > 50 and local.keys() == remote.keys()
    assert [name for name in local if local[name] != remote[name]] == []


@pytest.mark.slow
def test_gpu_jobs_ran_on_the_h100_partition_with_a_gpu(slurm_run):
    _, run = slurm_run
    log = run.stdout + run.stderr
    assert "slurm_partition=h100" in log and "gpu=1" in log
    assert "Job stats" in log and "assess" in log and "caption" in log


@pytest.mark.slow
def test_a_failing_job_is_reported_failed(slurm_run):
    work, _ = slurm_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["caption"]["model"] = str(work / "no-such-model")
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    stamp = work / "results" / "done" / "caption" / "00004-00007.json"
    stamp.unlink()
    run = snakemake(work, *PROFILE, str(stamp.relative_to(work)))
    assert run.returncode != 0, run.stderr[-4000:]
    assert "Error in rule caption" in run.stderr
    assert not stamp.exists()
    assert "no-such-model" in (work / "results" / "logs" / "caption" / "00004-00007.log").read_text()
