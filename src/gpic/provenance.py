"""Final state of every key (packed, dropped or failed) and the lineage of one key.

The per-stage files are the evidence; provenance is the verdict drawn from them, one row
per key of the shard, so counts conserve: in = packed + dropped + failed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gpic.keys import shard_name, shard_of
from gpic.store import read_table, write_table

STAGES = ["manifests", "fetch", "filter", "judge", "embed", "dedup", "captions"]
COLUMNS = ["key", "state", "stage", "reason", "split", "tar", "member", "source", "source_id", "url"]


def _lookup(table: pd.DataFrame, columns: list[str]) -> dict[str, dict]:
    return table.set_index("key")[columns].to_dict("index")


def final_state(key: str, t: dict[str, dict[str, dict]], packed: dict[str, dict]) -> tuple[str, str, str]:
    """(state, stage, reason) of one key, from the first stage that did not pass it on."""
    m = t["manifests"][key]
    if m["contract_error"]:
        return "dropped", "partition", m["contract_error"]
    f = t["fetch"].get(key)
    if f is None:
        return "failed", "fetch", "no fetch record"
    if f["fetch_status"] in ("dropped", "failed"):
        return f["fetch_status"], "fetch", f["fetch_reason"]
    steps = [("filter", "filter_verdict", "filter_reason"), ("judge", "judge_verdict", "judge_reason"),
             ("embed", "embed_status", "embed_reason")]
    for stage, status, reason in steps:
        r = t[stage].get(key)
        if r is None:
            return "failed", stage, f"no {stage} record"
        if r[status] == "drop":
            return "dropped", stage, r[reason]
        if r[status] == "failed":
            return "failed", stage, r[reason]
    d = t["dedup"].get(key)
    if d is None:
        return "failed", "dedup", "no dedup decision"
    if not d["kept"]:
        return "dropped", "dedup", f"duplicate ({d['dedup_layer']}): of {d['duplicate_of']}, similarity {d['similarity']:.3f}"
    c = t["captions"].get(key)
    if c is None or c["caption_status"] != "ok":
        return "failed", "caption", c["caption_reason"] if c else "no caption record"
    if key not in packed:
        return "failed", "pack", "captioned but missing from the packed output"
    return "packed", "pack", ""


def assemble(paths: dict[str, str], pack_indexes: list[str], out_path: str | Path) -> pd.DataFrame:
    """Provenance of one shard from its stage files (`paths` keyed by STAGES) and the
    indexes of the packed shards its samples can land in."""
    tables = {name: read_table(paths[name]) for name in STAGES}
    columns = {
        "manifests": ["contract_error", "split", "source", "source_id", "url"],
        "fetch": ["fetch_status", "fetch_reason"], "filter": ["filter_verdict", "filter_reason"],
        "judge": ["judge_verdict", "judge_reason"], "embed": ["embed_status", "embed_reason"],
        "dedup": ["kept", "duplicate_of", "dedup_layer", "similarity"], "captions": ["caption_status", "caption_reason"],
    }
    t = {name: _lookup(tables[name], columns[name]) for name in STAGES}
    packed = {}
    for index_path in pack_indexes:
        index = read_table(index_path, columns=["key", "tar", "image_member"])
        packed.update(_lookup(index, ["tar", "image_member"]))
    rows = []
    for key, m in t["manifests"].items():
        state, stage, reason = final_state(key, t, packed)
        p = packed.get(key, {}) if state == "packed" else {}
        rows.append({"key": key, "state": state, "stage": stage, "reason": reason, "split": m["split"],
                     "tar": p.get("tar", ""), "member": p.get("image_member", ""),
                     "source": m["source"], "source_id": m["source_id"], "url": m["url"]})
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values("key")
    write_table(table, out_path)
    return table


def lineage(key: str, results: str | Path) -> dict:
    """Everything recorded about one key, from source URL to final tar, read from one shard."""
    results = Path(results)
    partition = json.loads((results / "manifests" / "partition.json").read_text())
    shard = shard_name(shard_of(key, partition["shards"]))
    out: dict = {"key": key, "shard": shard}
    files = {name: results / name / f"{shard}.parquet" for name in [*STAGES, "provenance"]}
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
    decisions = results / "dedup" / "decisions.parquet"
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
    """Counts of final states per shard, and per (state, stage, reason) over all shards."""
    results = Path(results)
    partition = json.loads((results / "manifests" / "partition.json").read_text())
    frames, shards = [], {}
    for shard in sorted(partition["per_shard"]):
        table = read_table(results / "provenance" / f"{shard}.parquet")
        counts = table["state"].value_counts()
        shards[shard] = {"in": partition["per_shard"][shard], "keys": int(len(table)),
                         **{s: int(counts.get(s, 0)) for s in ("packed", "dropped", "failed")}}
        frames.append(table)
    conserved = all(c["in"] == c["keys"] == c["packed"] + c["dropped"] + c["failed"] for c in shards.values())
    everything = pd.concat(frames, ignore_index=True)
    generic = everything["reason"].str.split(":").str[0]  # reasons read "<kind>: <detail>"
    grouped = everything.assign(reason=generic).groupby(["state", "stage", "reason"]).size().reset_index(name="keys")
    return {"shards": shards, "conserved": conserved, "reasons": grouped.to_dict("records")}
