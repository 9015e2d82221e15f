"""`gpic bench dag`: Snakemake dry-run cost at GPIC's shard count, block jobs against one job
per shard.

Snakemake imports every installed executor plugin at start, and the SLURM plugin runs
`scontrol show config` while it does (to read MinJobAge). Where SLURM is installed but no
controller answers (a laptop, this test machine after the SLURM test stopped its cluster), that
call waits out its 10 s timeout on every `snakemake` command; on a cluster it answers in
milliseconds. The bench times that probe once, on its own (`slurm_probe_s`), and runs the
dry-runs with a `scontrol` that fails at once, so its figures are the workflow's cost."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from gpic.bench import REPO
from gpic.identity import shard_name
from gpic.layout import Layout, block_names


def _dag_config(work: Path, shards: int, per_job: int) -> Path:
    """The demo config scaled to `shards` (held-out shards in GPIC's proportions)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    (work / "source.csv").write_text("source,source_id,url,license,license_url,attribution,title\n")
    config.update(shards=shards, shards_per_job=per_job, sources=[str(work / "source.csv")])
    config["splits"].update(val_shards=max(1, shards // 500), test_shards=max(1, shards // 100))
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _build_everything(work: Path, shards: int, per_job: int, val_shards: int, test_shards: int) -> list[Path]:
    """Empty files standing for every output of a finished run, older stages older, and
    Snakemake's metadata for them; returns the caption blocks' outputs (the last per-block GPU
    outputs), as (stamp, held-out digest) pairs."""
    blocks, r = block_names(shards, per_job), Layout()
    stages = [[r.partition],
              *([r.stamp(job, b) for b in blocks] for job in ("prepare", "assess")),
              [r.decisions, *(r.block_digest(b) for b in blocks)],
              [*(r.stamp("caption", b) for b in blocks), *(r.heldout_digest(b) for b in blocks)],
              [r.packed(split, shard_name(i), ext)
               for split, n in (("val", val_shards), ("test", test_shards))
               for i in range(n) for ext in ("tar", "parquet")],
              [r.stamp("provenance", b) for b in blocks] + [r.card, r.checksums, r.reference],
              [r.report, r.cost]]
    now = time.time() - 3600
    os.utime(work / "source.csv", (now - 60, now - 60))
    for age, names in enumerate(stages):
        for name in names:
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path, (now + 60 * age, now + 60 * age))
    # Records the metadata a real run leaves (the input checksums that keep a rewritten but
    # unchanged input from rerunning what reads it). Forced: without it Snakemake touches only
    # jobs it finds stale, and finds none once the workflow's scripts are older than these files
    # (an hour after a checkout), which left no metadata and every rewritten digest stale.
    _snakemake(work, "--touch", "--forceall", "--cores", "64")  # Snakemake pauses 0.1 s a touched job
    return [(work / r.stamp("caption", b), work / r.heldout_digest(b)) for b in blocks]


def slurm_probe_s() -> float:
    """Seconds `scontrol show config` takes here, as the SLURM plugin calls it (0 without SLURM)."""
    if not shutil.which("scontrol"):
        return 0.0
    start = time.perf_counter()
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=10)
    return time.perf_counter() - start


def _without_probe(work: Path) -> dict[str, str]:
    """An environment whose `scontrol` fails at once: the plugin then skips its probe."""
    shim = work / ".bench-bin"
    shim.mkdir(exist_ok=True)
    (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (shim / "scontrol").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}


def _snakemake(work: Path, *args: str) -> str:
    command = [str(Path(sys.executable).parent / "snakemake"), *args, "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--configfile", str(work / "config.yaml")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=work, env=_without_probe(work))
    if run.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {work}:\n{run.stderr[-2000:]}")
    return run.stdout


def _dry_run(work: Path) -> tuple[float, dict[str, int]]:
    """Seconds of `snakemake -n --quiet rules` on the repository's workflow, and the jobs pending
    per rule (with their `total`)."""
    start = time.perf_counter()
    out = _snakemake(work, "-n", "--quiet", "rules")
    seconds = time.perf_counter() - start
    stats = out.split("Job stats:")[-1] if "Job stats:" in out else ""
    jobs = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", stats, re.MULTILINE)}
    return seconds, jobs


def rebuild(outputs: tuple[Path, Path]) -> None:
    """What captioning a block again to other outputs does: a stamp with new content (it
    records the files the job wrote; Snakemake compares checksums, so a touch alone reruns
    nothing), and its held-out digest written again, newer but the same when no val/test sample
    changed."""
    stamp, heldout = outputs
    stamp.write_text(json.dumps({"rebuilt": time.time_ns()}))
    heldout.write_bytes(heldout.read_bytes())


def damage_scan(shards: int, per_job: int) -> dict[str, float | int]:
    """Seconds `gpic status` takes to check every file the block jobs' stamps record (size and
    time, not content), on stamps written by `gpic.jobs.write_stamp` over empty files: what a
    check of damage at DAG time would add to every `snakemake` command."""
    from gpic.config import validate_config
    from gpic.jobs import write_stamp
    from gpic.layout import JOBS, block_shards
    from gpic.review.status import status

    config = validate_config({"sources": ["unused.csv"], "shards": shards, "shards_per_job": per_job,
                              **{stage: {"model": "m"} for stage in ("judge", "embed", "caption")}})
    with tempfile.TemporaryDirectory() as tmp:
        layout, files = Layout(Path(tmp)), 0
        for job in JOBS:
            layout.stamps(job).mkdir(parents=True)
            for block in block_names(shards, per_job):
                for shard in block_shards(block):
                    for path in layout.shard(shard).written_by(job):
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.touch()
                        files += 1
                write_stamp(layout.stamp(job, block), job, block, {}, layout)
        start = time.perf_counter()
        rows = status(Path(tmp), config)
        seconds = time.perf_counter() - start
    if any(row["damaged"] for row in rows):
        raise RuntimeError("the damage scan found damage in an intact tree")
    return {"damage_scan_s": seconds, "damage_scan_files": files}


def bench_dag(shards: int = 8000, per_job: int = 10, baseline_per_job: int = 1) -> dict[str, float | int]:
    """Dry-run seconds at `shards` with nothing built, everything built and 1% of the caption
    blocks rebuilt (newer than what depends on them), for our block size and for one job per shard (the baseline)."""
    figures: dict[str, float | int] = {"shards": shards, "slurm_probe_s": slurm_probe_s()}
    for label, size in (("ours", per_job), ("baseline", baseline_per_job)):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            config = yaml.safe_load(_dag_config(work, shards, size).read_text())
            seconds, jobs = _dry_run(work)
            figures.update({f"{label}_jobs": jobs.get("total", 0), f"{label}_empty_s": seconds})
            captions = _build_everything(work, shards, size, config["splits"]["val_shards"],
                                         config["splits"]["test_shards"])
            figures[f"{label}_built_s"], built = _dry_run(work)
            if built.get("total", 0):
                raise RuntimeError(f"{label}: {built['total']} jobs pending with everything built: {built}")
            rebuilt = captions[::100]  # 1% of the blocks were captioned again: downstream is stale
            for outputs in rebuilt:
                rebuild(outputs)
            figures[f"{label}_stale_s"], stale = _dry_run(work)
            figures[f"{label}_stale_jobs"] = stale.get("total", 0)
            figures[f"{label}_stale_provenance"] = stale.get("provenance", 0)
            figures[f"{label}_stale_blocks"] = len(rebuilt)
            if stale.get("provenance", 0) < len(rebuilt) or not stale.get("report"):
                raise RuntimeError(f"{label}: rebuilding {len(rebuilt)} caption blocks left {stale} stale; "
                                   "at least their provenance and the report must rerun")
    figures.update(damage_scan(shards, per_job))
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    figures["ratio"] = figures["baseline_empty_s"] / figures["ours_empty_s"]
    return figures
