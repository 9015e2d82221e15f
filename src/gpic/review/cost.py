"""A cost model measured on a run and extrapolated to a target scale.

Each job's Snakemake `benchmark:` files give its wall and CPU seconds; the row counts of the
stage tables (parquet footers only) give how many images it handled. Per-image costs scale
to the target counts in config. A GPU stage measured on a CPU (the demo's tiny models) says
nothing about an H100, so its rate comes from `cost.gpu_images_per_s` and is marked assumed
until a run on a GPU measures it. Storage comes from the measured bytes per packed and per
raw image; egress from downloading each tier once. Collection (the fetch stage's downloads)
is also bounded by the hosts: per host, the fetch tables give requests, bytes and seconds per
key, and `fetch.host_budget` caps the requests per second the whole cluster may make, so the
slowest host's share of the target over its rate is the shortest collection wall time."""

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


def report_settings(config: Config) -> dict:
    """The parts of the config the report and these figures read (the report rule's params):
    the sizes, tiers, prices and fetch settings, and the device of each model stage."""
    return {**{key: config[key] for key in ("shards", "tiers", "cost", "fetch")},
            **{job.resource: {"device": config[job.resource]["device"]} for job in JOBS if job.resource != "cpu"}}


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


FETCH_COLUMNS = ["host", "attempts", "fetch_status", "wire_bytes", "fetch_s"]


def collection(results: Path, config: Config) -> dict:
    """Collection throughput by host from the fetch tables (only the columns needed), and the
    wall time the target's downloads take: per host, its requests at the target (its share of
    this run's requests per key, times `cost.target.raw`) over its rate, the lower of its
    `fetch.host_budget` and what the cluster's connections carry (concurrent_jobs x per_host
    connections, each at the measured requests per second of fetch time). Hosts download in
    parallel, so the slowest sets the wall time. Per-connection figures divide by the summed
    `fetch_s` of the host's keys (retries and waits included), not by elapsed time."""
    fetch, target = config["fetch"], config["cost"]["target"]
    sums, keys = [], 0  # per shard, per host: one shard's rows at a time, never the corpus's
    for path in sorted(glob.glob(str(results / RELATIVE.table("fetch", "*")))):
        keys += pq.read_metadata(path).num_rows
        if set(FETCH_COLUMNS) <= set(pq.read_schema(path).names):  # tables written before these columns: skipped
            table = pq.read_table(path, columns=FETCH_COLUMNS).to_pandas()
            table = table[(table["host"] != "") & (table["attempts"] > 0)]
            sums.append(table.assign(keys=1, ok=table["fetch_status"] == "ok")
                        .groupby("host")[["keys", "ok", "attempts", "wire_bytes", "fetch_s"]].sum())
    per_host = pd.concat(sums).groupby(level=0).sum() if sums else pd.DataFrame()
    connections = fetch["concurrent_jobs"] * fetch["per_host"]
    hosts = []
    for host, rows in per_host.sort_index().iterrows():
        seconds, requests, ok = float(rows["fetch_s"]), int(rows["attempts"]), int(rows["ok"])
        budget = fetch["host_budget"].get(host)
        carried = connections * requests / seconds if seconds else None
        rate = min(r for r in (budget, carried) if r is not None) if (budget or carried) else None
        target_requests = target["raw"] * requests / keys
        hosts.append({"host": host, "keys": int(rows["keys"]), "ok": ok, "requests": requests,
                      "wire_bytes": int(rows["wire_bytes"]), "fetch_s": seconds,
                      "images_per_s": ok / seconds if seconds else None,
                      "bytes_per_s": float(rows["wire_bytes"]) / seconds if seconds else None,
                      "target_requests": target_requests, "budget_requests_per_s": budget,
                      "connections_requests_per_s": carried, "requests_per_s": rate,
                      "bound": "budget" if rate is not None and rate == budget else "connections",
                      "wall_hours": target_requests / rate / 3600 if rate else None})
    walls = [h["wall_hours"] for h in hosts if h["wall_hours"] is not None]
    return {"source": "this run's fetch tables, fetch.host_budget, fetch.concurrent_jobs x fetch.per_host",
            "keys": keys, "connections_per_host": connections, "hosts": hosts,
            "wall_hours": max(walls) if walls else None,
            "slowest_host": max(hosts, key=lambda h: h["wall_hours"] or 0)["host"] if walls else None}


def collection_notes(report: dict) -> list[str]:
    """The collection figures as sentences for `gpic cost` and the report."""
    if not report["hosts"]:
        return ["Collection: no http(s) downloads in this run's fetch tables, so no throughput by host."]
    notes = []
    for h in report["hosts"]:
        per_connection = (f"{h['images_per_s']:.1f} images/s, {h['bytes_per_s'] / 1e6:.2f} MB/s per connection"
                          if h["images_per_s"] is not None else "no fetch time recorded")
        bound = (f"its budget of {h['budget_requests_per_s']:g} requests/s" if h["bound"] == "budget" else
                 f"{report['connections_per_host']} connections (no budget)" if h["budget_requests_per_s"] is None
                 else f"{report['connections_per_host']} connections (under its budget of "
                      f"{h['budget_requests_per_s']:g} requests/s)")
        wall = f"{h['wall_hours']:,.1f} h" if h["wall_hours"] is not None else "unknown"
        notes.append(f"Collection from {h['host']}: {h['ok']:,} images, {h['wire_bytes'] / 1e6:,.1f} MB received "
                     f"here ({per_connection}); {h['target_requests']:,.0f} requests at the target, limited by "
                     f"{bound}: {wall}.")
    if report["wall_hours"] is not None:
        notes.append(f"Collection wall time at the target: {report['wall_hours']:,.1f} h, set by "
                     f"{report['slowest_host']} (hosts download in parallel); prepare's wall hours are at least this.")
    return notes


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
    collected = collection(results, config)
    prepare = next(row for row in jobs if row["job"] == "prepare")
    if collected["wall_hours"] is not None and collected["wall_hours"] > prepare.get("wall_hours", 0):
        totals["wall_hours"] += collected["wall_hours"] - prepare.get("wall_hours", 0)
        prepare.update(wall_hours=collected["wall_hours"], wall_bound=f"collection from {collected['slowest_host']}")
    totals["compute_usd"] = round(totals["compute_usd"], 2)
    return {"target": target, "prices": prices, "cluster": cluster, "jobs": jobs, "storage": storage,
            "egress_per_download": egress, "collection": collected, "totals": totals,
            "notes": ["CPU figures scale the measured core-seconds per image linearly; dedup's index search "
                      "grows faster than linearly at scale (gpic bench dedup).",
                      "Measured per-image figures include each job's start-up (imports, model loading), "
                      "which dominates a small run such as the demo and is amortised over blocks in production.",
                      "Wall hours add the stages one after another on the configured cluster: an upper bound, "
                      "since blocks of different stages overlap.", *collection_notes(collected)]}
