"""`gpic verify`: the checks a consumer would otherwise discover the hard way, run on the
files as they are on disk: checksums, each index against its tar, each key in one place, and
every key of every shard accounted for in provenance (in = packed + dropped + failed).

`verify_packed` checks a folder of tars alone (GPIC's published shards, indexed by `gpic
index`): index against tar, records in either schema, no key twice, and SHA256SUMS when
there is one; it says which checks it could not run. A results folder gets every check."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from gpic.contracts import STATES, GpicSampleRecord, read_record
from gpic.identity import file_sha256
from gpic.index import split_of_tar
from gpic.layout import Layout, index_path
from gpic.store import read_table


def check_checksums(packed: Path) -> list[str]:
    """Every packed file listed in SHA256SUMS with its digest, and nothing listed missing."""
    sums = packed / "SHA256SUMS"
    if not sums.exists():
        return [f"{sums}: missing"]
    listed = dict(reversed(line.split("  ", 1)) for line in sums.read_text().splitlines() if line.strip())
    problems = []
    on_disk = {str(p.relative_to(packed)) for p in packed.glob("*/*") if p.suffix in (".tar", ".parquet")}
    for name in sorted(on_disk - set(listed)):
        problems.append(f"{name}: not in SHA256SUMS")
    for name, digest in sorted(listed.items()):
        path = packed / name
        if not path.exists():
            problems.append(f"{name}: listed in SHA256SUMS but missing")
        elif file_sha256(path) != digest:
            problems.append(f"{name}: sha256 differs from SHA256SUMS")
    return problems


def check_index(tar_path: Path, index: pd.DataFrame, name: str | None = None, split: str | None = None,
                ours: bool = True) -> list[str]:
    """The index names exactly the tar's members, at the right offsets, with the right bytes.
    `ours`: the records are what our pack writes (else any SampleRecord or GPIC record)."""
    name = name or f"{tar_path.parent.name}/{tar_path.name}"
    split = tar_path.parent.name if split is None else split
    problems = []
    with tarfile.open(tar_path) as tar:
        members: dict[str, tarfile.TarInfo] = {}
        for info in tar:
            if info.name in members:
                problems.append(f"{name}: member {info.name} appears twice")
            members[info.name] = info
    indexed = set(index["image_member"]) | set(index["json_member"])
    problems += [f"{name}: member {m} is in the tar but not in the index" for m in sorted(set(members) - indexed)]
    problems += [f"{name}: member {m} is in the index but not in the tar" for m in sorted(indexed - set(members))]
    if (index["tar"] != tar_path.name).any():
        problems.append(f"{name}: index rows name another tar")
    with tar_path.open("rb") as stream:
        for row in index.itertuples():
            for kind in ("image", "json"):
                info = members.get(getattr(row, f"{kind}_member"))
                if info is None:
                    continue
                offset, size = getattr(row, f"{kind}_offset"), getattr(row, f"{kind}_size")
                if (info.offset_data, info.size) != (offset, size):
                    problems.append(f"{name}: {info.name} is at {info.offset_data}+{info.size}, "
                                    f"index says {offset}+{size}")
                    continue
                stream.seek(offset)
                data = stream.read(size)
                if kind == "image" and hashlib.sha256(data).hexdigest() != row.sha256:
                    problems.append(f"{name}: {info.name} bytes do not match the sha256 in the index")
                if kind == "json":
                    problems += _check_record(name, info.name, data, row, split, ours)
    return problems


def _check_record(tar_name: str, member: str, data: bytes, row, split: str, ours: bool) -> list[str]:
    """Ours must name the key and split of its place; GPIC's (no train/val/test in it) the key
    and the index's tier; written by our pack, GPIC's must carry everything ours would."""
    try:
        record = read_record(data, check=True)
        if ours and record.record_schema == "gpic":
            GpicSampleRecord.model_validate_json(data)
    except ValidationError as exc:
        return [f"{tar_name}: {member} is not a valid sample record: {exc.errors()[0]['msg']}"]
    except (ValueError, KeyError) as exc:
        return [f"{tar_name}: {member} is not a valid sample record: {exc}"]
    if record.record_schema == "ours" and (record.key != row.key or (split and record.split != split)):
        return [f"{tar_name}: {member} says key {record.key} split {record.split}"]
    if record.record_schema == "gpic" and (record.key != row.key or record.tier != row.tier):
        return [f"{tar_name}: {member} says key {record.key} tier {record.tier}, the index {row.key} {row.tier}"]
    return []


def check_keys(indexes: dict[str, pd.DataFrame]) -> list[str]:
    """No key in two tars (so none in two splits) and none twice in one."""
    if not indexes:
        return []
    rows = pd.concat([df[["key"]].assign(where=name) for name, df in indexes.items()], ignore_index=True)
    repeated = rows[rows["key"].duplicated(keep=False)].groupby("key")["where"].apply(sorted)
    return [f"key {key} is packed more than once: {', '.join(where)}" for key, where in repeated.items()]


def check_provenance(results: Path, indexes: dict[str, pd.DataFrame]) -> list[str]:
    """Every shard's keys each in one final state, and packed keys exactly those in the indexes."""
    layout = Layout(results)
    partition_path = layout.partition
    if not partition_path.exists():
        return [f"{partition_path}: missing"]
    per_shard = json.loads(partition_path.read_text())["per_shard"]
    problems, packed = [], set()
    for shard, count in sorted(per_shard.items()):
        path = layout.table("provenance", shard)
        if not path.exists():
            problems.append(f"provenance/{shard}.parquet: missing")
            continue
        table = read_table(path, columns=["key", "state", "tar"])
        if len(table) != count or table["key"].duplicated().any():
            problems.append(f"provenance/{shard}: {table['key'].nunique()} distinct keys, {len(table)} rows, "
                            f"partition put {count} keys in the shard")
        manifest = layout.table("manifests", shard)
        if manifest.exists():  # the same number of keys is not enough: the same keys
            keys = set(read_table(manifest, columns=["key"])["key"])
            lost, foreign = sorted(keys - set(table["key"])), sorted(set(table["key"]) - keys)
            problems += [f"provenance/{shard}: key {k} of the manifest has no final state" for k in lost[:20]]
            problems += [f"provenance/{shard}: key {k} is not in the shard's manifest" for k in foreign[:20]]
        bad = sorted(set(table["state"]) - set(STATES))
        if bad:
            problems.append(f"provenance/{shard}: unknown states {bad}")
        packed |= set(table.loc[table["state"] == "packed", "key"])
    in_tars = set().union(*(set(df["key"]) for df in indexes.values())) if indexes else set()
    problems += [f"key {k} is packed in provenance but in no index" for k in sorted(packed - in_tars)]
    problems += [f"key {k} is in an index but not packed in provenance" for k in sorted(in_tars - packed)]
    return problems


def verify_packed(folder: str | Path, index_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of a folder of tars without a results folder around it: every tar
    under it (any depth) against its index (beside it or in `index_dir`), records of either
    schema, no key twice; SHA256SUMS is checked when present. Provenance cannot be: there is
    none, and the notes say so."""
    folder = Path(folder)
    tars = sorted(folder.rglob("*.tar"))
    problems = [] if tars else [f"{folder}: no .tar files"]
    notes = ["provenance not checked (in = packed + dropped + failed needs a results folder)"]
    if (folder / "SHA256SUMS").exists():
        problems += check_checksums(folder)
    else:
        notes.append(f"checksums not checked: {folder / 'SHA256SUMS'} does not exist")
    indexes = {}
    for tar_path in tars:
        name = str(tar_path.relative_to(folder))
        path = Path(index_path(str(tar_path), index_dir))
        if not path.exists():
            problems.append(f"{name}: no index at {path} (build it with `gpic index`)")
            continue
        try:
            indexes[name] = read_table(path)
            problems += check_index(tar_path, indexes[name], name, split_of_tar(str(tar_path)), ours=False)
        except (tarfile.TarError, OSError, ValueError) as exc:
            problems.append(f"{name}: unreadable: {exc}")
    return problems + check_keys(indexes), notes


def verify(results: str | Path) -> list[str]:
    """Everything wrong with a results folder, each naming the file or key; empty when sound."""
    results = Path(results)
    packed = Layout(results).packed_root
    problems = check_checksums(packed)
    indexes = {}
    for tar_path in sorted(packed.glob("*/*.tar")):
        name = f"{tar_path.parent.name}/{tar_path.name}"
        index_path = tar_path.with_suffix(".parquet")
        if not index_path.exists():
            problems.append(f"{name}: no index beside it")
            continue
        try:
            indexes[name] = read_table(index_path)
            problems += check_index(tar_path, indexes[name])
        except (tarfile.TarError, OSError, ValueError) as exc:  # pyarrow errors are ValueErrors
            problems.append(f"{name}: unreadable: {exc}")
    problems += check_keys(indexes)
    problems += check_provenance(results, indexes)
    return problems
