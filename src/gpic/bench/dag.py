"""`gpic bench dag`: Snakemake dry-run cost at GPIC's shard count, block jobs against one job
per shard."""

from __future__ import annotations

import os
import re
import resource
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
    Snakemake's metadata for them; returns the caption stamps (the last per-block GPU outputs)."""
    blocks, r = block_names(shards, per_job), Layout()
    stages = [[r.partition],
              *([r.stamp(job, b) for b in blocks] for job in ("prepare", "assess")),
              [r.decisions, *(r.block_digest(b) for b in blocks)],
              [r.stamp("caption", b) for b in blocks],
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
    _snakemake(work, "--touch", "--cores", "1")  # records the metadata a real run leaves
    return [work / name for name in stages[4]]


def _snakemake(work: Path, *args: str) -> str:
    command = [str(Path(sys.executable).parent / "snakemake"), *args, "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--configfile", str(work / "config.yaml")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=work)
    if run.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {work}:\n{run.stderr[-2000:]}")
    return run.stdout


def _dry_run(work: Path) -> tuple[float, int]:
    """Seconds of `snakemake -n --quiet rules` on the repository's workflow, and jobs pending."""
    start = time.perf_counter()
    out = _snakemake(work, "-n", "--quiet", "rules")
    totals = re.findall(r"^total\s+(\d+)", out, re.MULTILINE)
    return time.perf_counter() - start, int(totals[-1]) if totals else 0


def bench_dag(shards: int = 8000, per_job: int = 10, baseline_per_job: int = 1) -> dict[str, float | int]:
    """Dry-run seconds at `shards` with nothing built, everything built and 1% of the caption
    blocks rebuilt (newer than what depends on them), for our block size and for one job per shard (the baseline)."""
    figures: dict[str, float | int] = {"shards": shards}
    for label, size in (("ours", per_job), ("baseline", baseline_per_job)):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            config = yaml.safe_load(_dag_config(work, shards, size).read_text())
            seconds, jobs = _dry_run(work)
            figures.update({f"{label}_jobs": jobs, f"{label}_empty_s": seconds})
            captions = _build_everything(work, shards, size, config["splits"]["val_shards"],
                                         config["splits"]["test_shards"])
            figures[f"{label}_built_s"], _ = _dry_run(work)
            for stamp in captions[::100]:  # 1% of the blocks were captioned again: downstream is stale
                stamp.touch()
            figures[f"{label}_stale_s"], figures[f"{label}_stale_jobs"] = _dry_run(work)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    figures["ratio"] = figures["baseline_empty_s"] / figures["ours_empty_s"]
    return figures
