"""Final state of every key (packed, dropped or failed) and the lineage of one key.

The per-stage files are the evidence; provenance is the verdict drawn from them, one row
per key of the shard, so counts conserve: in = packed + dropped + failed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from gpic.config import Config
from gpic.contracts import HELD_OUT, STATES
from gpic.identity import shard_name, shard_of
from gpic.layout import Layout, ShardFiles, bucket_of
from gpic.stages import PIPELINE, STAGES, TABLES
from gpic.store import read_table, write_table

STAGE = STAGES["provenance"]
COLUMNS = ["key", "state", "stage", "reason", "split", "tar", "member", "source", "source_id", "url"]
WALKED = [stage for stage in PIPELINE if stage.outcome]  # the stages that decide per key, in order
MANIFEST = ["split", "source", "source_id", "url"]  # copied from the manifest into every row


def _lookup(table: pd.DataFrame, columns: list[str]) -> dict[str, dict]:
    return table.set_index("key")[columns].to_dict("index")


def final_state(key: str, evidence: dict[str, dict[str, dict]]) -> tuple[str, str, str]:
    """(state, stage, reason) of one key: the first stage that did not pass it on, else packed.
    `evidence` maps each walked stage's name to its rows by key."""
    for stage in WALKED:
        row = evidence[stage.name].get(key)
        if row is None:
            return "failed", stage.name, stage.outcome.missing
        verdict = stage.outcome.verdict(row)
        if verdict:
            return verdict[0], stage.name, verdict[1]
    return "packed", "pack", ""


def assemble(paths: dict[str, str], pack_indexes: list[str], out_path: str | Path) -> pd.DataFrame:
    """Provenance of one shard from its stage tables (`paths` keyed by table name: TABLES) and
    the indexes of the packed shards its samples can land in."""
    evidence = {}
    for stage in WALKED:
        if stage.table:
            columns = stage.outcome.columns + (MANIFEST if stage.name == "partition" else [])
            evidence[stage.name] = _lookup(read_table(paths[stage.table], columns=["key", *columns]), columns)
    packed: dict[str, dict] = {}
    for index_path in pack_indexes:
        packed.update(_lookup(read_table(index_path, columns=["key", "tar", "image_member"]), ["tar", "image_member"]))
    evidence["pack"] = packed
    rows = []
    for key, m in evidence["partition"].items():
        state, stage, reason = final_state(key, evidence)
        p = packed.get(key, {}) if state == "packed" else {}
        rows.append({"key": key, "state": state, "stage": stage, "reason": reason, "split": m["split"],
                     "tar": p.get("tar", ""), "member": p.get("image_member", ""),
                     "source": m["source"], "source_id": m["source_id"], "url": m["url"]})
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values("key")
    write_table(table, out_path)
    return table


def run(files: ShardFiles, cfg: Config, *, model=None) -> pd.DataFrame:
    """The final state of every key of one raw shard: its train shard and the held-out
    shards its val and test keys were gathered into."""
    shard = int(files.shard)
    indexes = [files.packed("train", files.shard)[1]]
    for split in HELD_OUT:
        bucket = bucket_of(shard, cfg["splits"][f"{split}_shards"], cfg["shards"])
        indexes.append(files.packed(split, shard_name(bucket))[1])
    return assemble({name: files.table(name) for name in TABLES}, indexes, files.table("provenance"))


def lineage(key: str, results: str | Path) -> dict:
    """Everything recorded about one key, from source URL to final tar, read from one shard."""
    layout = Layout(Path(results))
    partition = json.loads(layout.partition.read_text())
    shard = shard_name(shard_of(key, partition["shards"]))
    out: dict = {"key": key, "shard": shard}
    files = {name: layout.table(name, shard) for name in [*TABLES, "provenance"]}
    for name, path in files.items():
        if not path.exists():
            out[name] = None
            continue
        table = read_table(path)
        if "descriptor" in table.columns:
            table = table.drop(columns="descriptor")
        rows = table[table["key"] == key].to_dict("records")
        out[name] = {k: _plain(v) for k, v in rows[0].items()} if rows else None
    if out["manifests"] is None:
        raise KeyError(f"key {key} is not in shard {shard} of {results}")
    if isinstance(out["manifests"].get("extra"), str):  # the source's own columns (a collector's page id, SHA-1)
        out["manifests"]["extra"] = json.loads(out["manifests"]["extra"] or "{}")
    decisions = layout.decisions
    if out.get("dedup") and decisions.exists():
        d = read_table(decisions, columns=["key", "cluster", "kept", "dedup_layer", "similarity"])
        members = d[d["cluster"] == out["dedup"]["cluster"]]
        out["dedup"]["cluster_members"] = [{k: _plain(v) for k, v in r.items()} for r in members.to_dict("records")]
    return out


def _plain(value):
    """JSON-friendly scalars (numpy types and NaN become plain values)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def summarise(results: str | Path) -> dict:
    """Counts of final states per shard, and per (state, stage, reason) over all shards; and
    the health of the judge's scores, since a judge whose scores decide nothing (its answer
    words hold little of the probability, or it has no preference) passes or drops at random
    without any verdict saying so."""
    from gpic.stages.judge import health_warning, judge_health

    layout = Layout(Path(results))
    partition = json.loads(layout.partition.read_text())
    reasons, shards = Counter(), {}  # one shard and four columns at a time: 110M rows are never held together
    judge = {"judged": 0, "low_mass": 0, "undecided": 0, "criteria": {}}
    for shard in sorted(partition["per_shard"]):
        table = read_table(layout.table("provenance", shard), columns=["key", "state", "stage", "reason"])
        counts = table["state"].value_counts()
        shards[shard] = {"in": partition["per_shard"][shard], "keys": int(table["key"].nunique()),
                         "rows": int(len(table)), **{s: int(counts.get(s, 0)) for s in STATES}}
        generic = table["reason"].fillna("").str.split(":").str[0]  # reasons read "<kind>: <detail>"
        reasons.update(zip(table["state"], table["stage"].fillna(""), generic, strict=True))
        if layout.table("judge", shard).exists():
            health = judge_health(read_table(layout.table("judge", shard)))
            for name in ("judged", "low_mass", "undecided"):
                judge[name] += health[name]
            for criterion, n in health["criteria"].items():
                total = judge["criteria"].setdefault(criterion, {"low_mass": 0, "undecided": 0})
                for name in total:
                    total[name] += n[name]
    for name in ("low_mass", "undecided"):
        judge[f"{name}_fraction"] = round(judge[name] / judge["judged"], 4) if judge["judged"] else 0.0
    judge["warning"] = health_warning(judge)
    unconserved = [shard for shard, c in shards.items()
                   if not c["in"] == c["keys"] == c["rows"] == c["packed"] + c["dropped"] + c["failed"]]
    grouped = [{"state": state, "stage": stage, "reason": reason, "keys": n}
               for (state, stage, reason), n in sorted(reasons.items())]
    return {"shards": shards, "conserved": not unconserved, "unconserved": unconserved,
            "reasons": grouped, "judge": judge}
