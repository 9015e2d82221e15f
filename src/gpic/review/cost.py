"""A cost model measured on a run and extrapolated to a target scale.

Each job's Snakemake `benchmark:` files give its wall and CPU seconds; the row counts of the
stage tables (parquet footers only) give how many images it handled. Per-image costs scale
to the target counts in config. A GPU stage measured on a CPU (the demo's tiny models) says
nothing about an H100, so its rate comes from `cost.gpu_images_per_s` and is marked assumed
until a run on a GPU measures it. Storage comes from the measured bytes per packed and per
raw image; egress from downloading each tier once."""

from __future__ import annotations

import glob
import platform
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from gpic.config import Config, tier_shard_counts
from gpic.layout import Layout

RELATIVE = Layout(Path())  # patterns below are relative to the results folder


@dataclass(frozen=True)
class Job:
    """A workflow job, what its work scales with, and the tables whose rows count it."""

    name: str
    resource: str  # "cpu", or the config section whose device decides ("judge", ...)
    unit: str  # key of cost.target
    counted_by: tuple[str, ...]  # globs under results/, rows summed


JOBS = [
    Job("partition", "cpu", "raw", (str(RELATIVE.table("manifests", "[0-9]*")),)),
    Job("prepare", "cpu", "raw", (str(RELATIVE.table("fetch", "*")),)),
    Job("assess", "judge", "judged", (str(RELATIVE.table("judge", "*")),)),
    Job("dedup", "cpu", "raw", (str(RELATIVE.decisions),)),
    Job("caption", "caption", "captioned", (str(RELATIVE.table("captions", "*")),)),
    Job("pack", "cpu", "heldout", tuple(str(RELATIVE.packed(split, "*", "parquet")) for split in ("val", "test"))),
    Job("provenance", "cpu", "raw", (str(RELATIVE.table("provenance", "*")),)),
    Job("eval", "eval", "test", (str(RELATIVE.packed("test", "*", "parquet")),)),
]


def rows(results: Path, patterns: tuple[str, ...]) -> int:
    return sum(pq.read_metadata(p).num_rows for pattern in patterns for p in glob.glob(str(results / pattern)))


def file_bytes(results: Path, pattern: str) -> int:
    return sum(Path(p).stat().st_size for p in glob.glob(str(results / pattern)))


def measured(results: Path, job: Job) -> dict | None:
    """Wall and CPU seconds of every benchmark file of a job, with the images it handled."""
    files = sorted(Layout(results).benchmarks(job.name).glob("*.tsv"))
    if not files:
        return None
    bench = pd.concat([pd.read_csv(f, sep="\t") for f in files])
    wall = float(bench["s"].sum())
    cpu = float(bench["cpu_time"].sum()) if "cpu_time" in bench else 0.0
    return {"jobs": len(files), "wall_s": wall, "cpu_s": cpu or wall, "images": rows(results, job.counted_by),
            "max_rss_mb": float(bench["max_rss"].max())}


def estimate(results: str | Path, config: Config) -> dict:
    """The cost report: per job, storage, egress per tier and totals (JSON-able)."""
    results = Path(results)
    cfg = config["cost"]
    target, prices, cluster = cfg["target"], cfg["prices"], cfg["cluster"]
    host = f"{platform.machine()} CPU, host {platform.node()}"
    jobs, totals = [], {"cpu_core_hours": 0.0, "gpu_hours": 0.0, "compute_usd": 0.0, "wall_hours": 0.0}
    for job in JOBS:
        m = measured(results, job)
        device = "cpu" if job.resource == "cpu" else config[job.resource]["device"]
        units = target[job.unit]
        row = {"job": job.name, "unit": job.unit, "target_images": units, "device": device, "measured": m}
        if job.resource == "cpu":
            if not m or not m["images"]:
                row.update(source="not measured")
                jobs.append(row)
                continue
            core_s = m["cpu_s"] / m["images"]
            row.update(kind="cpu", source="measured", measured_on=host, core_ms_per_image=1000 * core_s,
                       cpu_core_hours=core_s * units / 3600)
            row["usd"] = row["cpu_core_hours"] * prices["cpu_core_hour"]
            row["wall_hours"] = row["cpu_core_hours"] / cluster["cpu_cores"]
            totals["cpu_core_hours"] += row["cpu_core_hours"]
        else:
            if device.startswith("cuda") and m and m["images"]:
                rate, source, on = m["images"] / m["wall_s"], "measured", device
            else:
                rate, source, on = cfg["gpu_images_per_s"][job.name], "assumed", "config cost.gpu_images_per_s"
            row.update(kind="gpu", source=source, measured_on=on, images_per_gpu_s=rate, gpu_hours=units / rate / 3600)
            row["usd"] = row["gpu_hours"] * prices["gpu_hour"]
            row["wall_hours"] = row["gpu_hours"] / cluster["gpus"]
            totals["gpu_hours"] += row["gpu_hours"]
        totals["compute_usd"] += row["usd"]
        totals["wall_hours"] += row["wall_hours"]  # stages one after another: an upper bound
        jobs.append(row)

    packed_images = rows(results, (str(RELATIVE.packed("*", "*", "parquet")),))
    raw_keys = rows(results, (str(RELATIVE.table("fetch", "*")),))
    packed_bpi = file_bytes(results, str(RELATIVE.packed("*", "*", "tar"))) / packed_images if packed_images else 0.0
    raw_bpi = file_bytes(results, str(RELATIVE.raw("*"))) / raw_keys if raw_keys else 0.0
    packed_tb = packed_bpi * (target["captioned"] + target["heldout"]) / 1e12
    raw_tb = raw_bpi * target["raw"] / 1e12
    storage = {"source": "measured bytes per image of this run", "packed_bytes_per_image": packed_bpi,
               "raw_bytes_per_key": raw_bpi, "packed_tb": packed_tb, "raw_tb": raw_tb,
               "usd_per_month": (packed_tb + raw_tb) * prices["storage_tb_month"]}
    shards = tier_shard_counts(config["tiers"], target["shards"])
    train_tb = packed_bpi * target["captioned"] / 1e12
    heldout_tb = packed_bpi * target["heldout"] / 1e12
    egress = {tier: {"tb": (tb := train_tb * n / target["shards"] + heldout_tb), "usd": tb * prices["egress_tb"]}
              for tier, n in shards.items()}
    totals["compute_usd"] = round(totals["compute_usd"], 2)
    return {"target": target, "prices": prices, "cluster": cluster, "jobs": jobs, "storage": storage,
            "egress_per_download": egress, "totals": totals,
            "notes": ["CPU figures scale the measured core-seconds per image linearly; dedup's index search "
                      "grows faster than linearly at scale (gpic bench dedup).",
                      "Measured per-image figures include each job's start-up (imports, model loading), "
                      "which dominates a small run such as the demo and is amortised over blocks in production.",
                      "Wall hours add the stages one after another on the configured cluster: an upper bound, "
                      "since blocks of different stages overlap."]}
