"""`gpic status`: per block job, which blocks are done and which pending, from the stamps on
disk. One directory listing per job, so it stays instant at 8,000 shards; `snakemake -n`
remains the judge of what is stale after a change of code or parameters."""

from __future__ import annotations

import os
from pathlib import Path

from gpic.config import Config
from gpic.contracts import HELD_OUT
from gpic.identity import shard_name
from gpic.layout import JOBS, Layout, block_names


def status(results: Path, config: Config) -> list[dict]:
    """What exists on disk per job: blocks (or files) done and pending."""
    layout = Layout(Path(results))
    blocks = block_names(config["shards"], config["shards_per_job"])

    def single(job: str, path: Path, name: str) -> dict:
        return {"job": job, "total": 1, "pending": [] if path.exists() else [name]}

    rows = [single("partition", layout.partition, layout.partition.name)]
    for job in JOBS:
        folder = layout.stamps(job)
        done = {entry.name.removesuffix(".json") for entry in os.scandir(folder)} if folder.is_dir() else set()
        rows.append({"job": job, "total": len(blocks), "pending": [b for b in blocks if b not in done]})
        if job == "assess":
            rows.append(single("dedup", layout.decisions, layout.decisions.name))
    heldout = [layout.packed(split, shard_name(b)) for split in HELD_OUT
               for b in range(config["splits"][f"{split}_shards"])]
    rows.append({"job": "pack_heldout", "total": len(heldout),
                 "pending": [str(p.relative_to(layout.packed_root)) for p in heldout if not p.exists()]})
    for job, path in (("publish", layout.checksums), ("eval_reference", layout.reference), ("report", layout.report)):
        rows.append(single(job, path, str(path.relative_to(layout.root))))
    for row in rows:
        row["done"] = row["total"] - len(row["pending"])
    return rows
