"""`gpic status` and `gpic rebuild`: per block job, which blocks are done, pending or damaged,
from the stamps on disk. A stamp records the files its job wrote (gpic.jobs.write_stamp); a
block is damaged when one of them is missing, has another size, was written after its stamp,
or (with `deep`) no longer has its sha256. Snakemake tracks only the stamps and, by design,
does not make a missing intermediate file again while what depends on it is current, so a
removed stamp would not be rebuilt: `gpic rebuild` runs Snakemake with `--forcerun` of the
damaged blocks' stamps, with those stamps as targets. Then it runs, step by step, only the
jobs a dry-run finds stale on their own: Snakemake compares the checksums of small inputs
between runs (a rebuilt stamp that records the same bytes is the same file), but within one
run it reruns everything downstream of a job that runs, whatever that job wrote.
`snakemake -n` remains the judge of what is stale after a change of code or parameters."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from gpic.config import Config
from gpic.contracts import HELD_OUT
from gpic.identity import file_sha256, shard_name
from gpic.layout import JOBS, Layout, block_names


def damage(stamp: Path, root: Path, deep: bool = False) -> list[str]:
    """What is wrong with the files a stamp records, one line per file ([] when intact)."""
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError) as exc:
        return [f"{stamp.relative_to(root)}: unreadable stamp ({exc})"]
    if "files" not in record:
        return [f"{stamp.relative_to(root)}: records no files (written by an older gpic): rebuild to check"]
    written = stamp.stat().st_mtime_ns
    found = []
    for name, expected in record["files"].items():
        path = root / name
        try:
            info = path.stat()
        except FileNotFoundError:
            found.append(f"{name}: missing")
            continue
        if info.st_size != expected["bytes"]:
            found.append(f"{name}: {info.st_size} bytes, {expected['bytes']} recorded")
        elif info.st_mtime_ns > written:
            found.append(f"{name}: changed after its job finished")
        elif deep and file_sha256(path) != expected["sha256"]:
            found.append(f"{name}: content differs from its recorded sha256")
    return found


def status(results: Path, config: Config, deep: bool = False) -> list[dict]:
    """What exists on disk per job: blocks (or files) done, pending and damaged (block ->
    what is wrong)."""
    layout = Layout(Path(results))
    blocks = block_names(config["shards"], config["shards_per_job"])

    def single(job: str, path: Path, name: str) -> dict:
        return {"job": job, "total": 1, "pending": [] if path.exists() else [name], "damaged": {}}

    rows = [single("partition", layout.partition, layout.partition.name)]
    for job in JOBS:
        folder = layout.stamps(job)
        done = {entry.name.removesuffix(".json") for entry in os.scandir(folder)} if folder.is_dir() else set()
        damaged = {b: found for b in blocks if b in done
                   and (found := damage(layout.stamp(job, b), layout.root, deep))}
        rows.append({"job": job, "total": len(blocks), "pending": [b for b in blocks if b not in done],
                     "damaged": damaged})
        if job == "assess":
            rows.append(single("dedup", layout.decisions, layout.decisions.name))
    heldout = [layout.packed(split, shard_name(b)) for split in HELD_OUT
               for b in range(config["splits"][f"{split}_shards"])]
    rows.append({"job": "pack_heldout", "total": len(heldout), "damaged": {},
                 "pending": [str(p.relative_to(layout.packed_root)) for p in heldout if not p.exists()]})
    for job, path in (("publish", layout.checksums), ("eval_reference", layout.reference), ("report", layout.report)):
        rows.append(single(job, path, str(path.relative_to(layout.root))))
    for row in rows:
        row["done"] = row["total"] - len(row["pending"]) - len(row["damaged"])
    return rows


def damaged_stamps(results: Path, config: Config, *, jobs: list[str] | None = None,
                   blocks: list[str] | None = None, deep: bool = False) -> list[tuple[Path, list[str]]]:
    """(stamp, what is wrong) of the damaged blocks among `jobs` and `blocks` (all when None):
    the stamps to force, so that Snakemake runs exactly those jobs again."""
    layout = Layout(Path(results))
    return [(layout.stamp(row["job"], block), found) for row in status(results, config, deep)
            if row["job"] in JOBS and (not jobs or row["job"] in jobs)
            for block, found in row["damaged"].items() if not blocks or block in blocks]


FOLLOWS = "Input files updated by another job"  # a dry-run's reason for a job that only follows another
MAX_STEPS = 12  # dry-runs a rebuild may take downstream: more than the pipeline has stages


def stale_on_their_own(dry_run: str) -> list[str]:
    """The outputs of the jobs a `snakemake --dry-run` lists for a reason of their own (a
    changed input, a missing output, changed params or code): the next step of a rebuild. A
    job listed only because a job before it runs waits for the dry-run after that one."""
    targets = []
    for job in re.finditer(r"^(?:local)?rule \w+:\n((?:    .*\n?)*)", dry_run, re.MULTILINE):
        fields = dict(re.findall(r"^    (\w+): (.*)$", job.group(1), re.MULTILINE))
        reasons = [r.split(":")[0] for r in fields.get("reason", "").split("; ")]
        if fields.get("output") and any(r != FOLLOWS for r in reasons):
            targets += fields["output"].split(", ")
    return targets
