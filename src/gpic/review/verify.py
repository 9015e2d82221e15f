"""`gpic verify`: the checks a consumer would otherwise discover the hard way, run on the
files as they are on disk: checksums, each index against its tar, each key in one place, and
every key of every shard accounted for in provenance (in = packed + dropped + failed).

`verify_packed` checks a folder of tars alone (GPIC's published shards, indexed by `gpic
index`): index against tar, records in either schema, no key twice, and SHA256SUMS when
there is one; it says which checks it could not run. A results folder gets every check."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from gpic.contracts import STATES, GpicSampleRecord, read_record
from gpic.identity import file_sha256
from gpic.index import split_of_tar
from gpic.layout import Layout, index_path
from gpic.store import read_table

# What check_index reads of an index: members, offsets, the sha256 and the record's key, split and tier.
INDEX_CHECKED = ["key", "tar", "image_member", "json_member", "image_offset", "image_size", "json_offset",
                 "json_size", "sha256", "tier"]


SHOWN = 20  # keys named per kind of mismatch; a corpus-wide fault would otherwise print millions of lines


def workers_default() -> int:
    return os.cpu_count() or 1


def check_checksums(packed: Path, workers: int = 1) -> list[str]:
    """Every packed file listed in SHA256SUMS with its digest, and nothing listed missing.
    Files are hashed `workers` at a time (hashlib releases the GIL on large blocks)."""
    sums = packed / "SHA256SUMS"
    if not sums.exists():
        return [f"{sums}: missing"]
    listed = dict(reversed(line.split("  ", 1)) for line in sums.read_text().splitlines() if line.strip())
    problems = []
    on_disk = {str(p.relative_to(packed)) for p in packed.glob("*/*") if p.suffix in (".tar", ".parquet")}
    for name in sorted(on_disk - set(listed)):
        problems.append(f"{name}: not in SHA256SUMS")
    present = sorted(name for name in listed if (packed / name).exists())
    problems += [f"{name}: listed in SHA256SUMS but missing" for name in sorted(set(listed) - set(present))]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = pool.map(lambda name: file_sha256(packed / name), present)
        problems += [f"{name}: sha256 differs from SHA256SUMS"
                     for name, digest in zip(present, digests, strict=True) if digest != listed[name]]
    return sorted(problems)


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


Keys = dict[str, "pd.DataFrame | np.ndarray"]  # tar name -> its keys (an index, or its key column alone)


def key_array(keys: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Keys as fixed-width bytes: 20 bytes a key, a fraction of a Python string's size, so the
    keys of 110M samples fit in a few GB and sort in seconds."""
    values = keys["key"].to_numpy() if isinstance(keys, pd.DataFrame) else keys
    return np.asarray(values, dtype=object).astype("S") if len(values) else np.empty(0, dtype="S1")


def _named(keys: np.ndarray, message: str) -> list[str]:
    shown = [message.format(key=k.decode()) for k in keys[:SHOWN]]
    return shown + ([f"... and {len(keys) - SHOWN} more like it"] if len(keys) > SHOWN else [])


def check_keys(indexes: Keys) -> list[str]:
    """No key in two tars (so none in two splits) and none twice in one."""
    if not indexes:
        return []
    names = list(indexes)
    arrays = [key_array(indexes[name]) for name in names]
    keys = np.concatenate(arrays)
    where = np.repeat(np.arange(len(names)), [len(a) for a in arrays])
    order = np.argsort(keys, kind="stable")
    keys, where = keys[order], where[order]
    same = keys[1:] == keys[:-1]
    repeated = np.zeros(len(keys), dtype=bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    problems = []
    for key in np.unique(keys[repeated])[:SHOWN]:
        tars = sorted(names[i] for i in where[keys == key])
        problems.append(f"key {key.decode()} is packed more than once: {', '.join(tars)}")
    extra = len(np.unique(keys[repeated])) - SHOWN
    return problems + ([f"... and {extra} more keys packed more than once"] if extra > 0 else [])


def check_provenance(results: Path, indexes: Keys) -> list[str]:
    """Every shard's keys each in one final state, and packed keys exactly those in the indexes.
    Read shard by shard, only the columns needed; the packed keys are kept as byte arrays."""
    layout = Layout(results)
    partition_path = layout.partition
    if not partition_path.exists():
        return [f"{partition_path}: missing"]
    per_shard = json.loads(partition_path.read_text())["per_shard"]
    problems, packed = [], []
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
        packed.append(key_array(table.loc[table["state"] == "packed", "key"].to_numpy()))
    in_provenance = np.unique(np.concatenate(packed)) if packed else np.empty(0, dtype="S1")
    in_tars = np.unique(np.concatenate([key_array(v) for v in indexes.values()])) if indexes else in_provenance[:0]
    problems += _named(np.setdiff1d(in_provenance, in_tars), "key {key} is packed in provenance but in no index")
    problems += _named(np.setdiff1d(in_tars, in_provenance), "key {key} is in an index but not packed in provenance")
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
    indexes: Keys = {}
    for tar_path in tars:
        name = str(tar_path.relative_to(folder))
        path = Path(index_path(str(tar_path), index_dir))
        if not path.exists():
            problems.append(f"{name}: no index at {path} (build it with `gpic index`)")
            continue
        try:
            index = read_table(path)
            problems += check_index(tar_path, index, name, split_of_tar(str(tar_path)), ours=False)
            indexes[name] = key_array(index)
        except (tarfile.TarError, OSError, ValueError) as exc:
            problems.append(f"{name}: unreadable: {exc}")
    return problems + check_keys(indexes), notes


def _check_packed_tar(tar_path: Path) -> tuple[list[str], np.ndarray | None]:
    """(problems, keys) of one packed tar and the index beside it; runs in a worker process."""
    name = f"{tar_path.parent.name}/{tar_path.name}"
    index_file = tar_path.with_suffix(".parquet")
    if not index_file.exists():
        return [f"{name}: no index beside it"], None
    try:
        index = read_table(index_file, columns=INDEX_CHECKED)
        return check_index(tar_path, index), key_array(index)
    except (tarfile.TarError, OSError, ValueError) as exc:  # pyarrow errors are ValueErrors
        return [f"{name}: unreadable: {exc}"], None


def verify(results: str | Path, workers: int | None = None) -> list[str]:
    """Everything wrong with a results folder, each naming the file or key; empty when sound.
    Checksums and tars are checked `workers` at a time (default: every core); of each index only
    the columns the checks read are loaded, and only its keys are kept."""
    results, workers = Path(results), workers or workers_default()
    packed = Layout(results).packed_root
    problems = check_checksums(packed, workers)
    tars = sorted(packed.glob("*/*.tar"))
    indexes: Keys = {}
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(tars) or 1))) as pool:
        for tar_path, (found, keys) in zip(tars, pool.map(_check_packed_tar, tars, chunksize=4), strict=True):
            problems += found
            if keys is not None:
                indexes[f"{tar_path.parent.name}/{tar_path.name}"] = keys
    problems += check_keys(indexes)
    problems += check_provenance(results, indexes)
    return problems
