"""Source manifests in, hash-partitioned shard manifests out (the partition stage).

A row that breaks the input contract is kept with its reason in `contract_error`, so it
still reaches a final state in provenance instead of vanishing or failing its shard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from gpic.config import Config
from gpic.identity import make_key, shard_name, shard_of, split_of
from gpic.layout import Layout
from gpic.stages import STAGES
from gpic.store import write_json, write_table

STAGE = STAGES["partition"]
REQUIRED = ["source", "source_id", "url", "license", "license_url", "attribution", "title"]
OPTIONAL = ["retrieved_at", "width", "height"]
SCHEMES = ("http", "https", "file")
# Longer fields are a broken or hostile row: refused with a reason rather than carried into
# every later table and tar record.
MAX_CHARS = {"source_id": 256, "url": 4096, "license": 512, "license_url": 2048, "attribution": 16384,
             "title": 16384}
COLUMNS = ["key", "shard", "split", *REQUIRED, *OPTIONAL, "extra", "manifest_file", "manifest_row", "contract_error"]


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest as text columns (types are checked per row, not trusted per file)."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    readers = {".csv": lambda: pd.read_csv(path, dtype=str, keep_default_na=False),
               ".jsonl": lambda: pd.read_json(path, lines=True, dtype=False),
               ".ndjson": lambda: pd.read_json(path, lines=True, dtype=False),
               ".parquet": lambda: pd.read_parquet(path)}
    reader = readers.get(suffix.removesuffix(".gz"))
    if reader is None:
        raise ValueError(f"{path}: unknown manifest format {suffix!r} (use .parquet, .csv or .jsonl)")
    try:
        df = reader()
    except Exception as exc:  # a file that does not parse at all is the operator's to fix
        raise ValueError(f"{path}: cannot read manifest: {type(exc).__name__}: {exc}") from None
    return df.astype(object).where(df.notna(), "").map(_text)


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def contract_error(row: dict, missing_columns: list[str], allowed_sources: list[str]) -> str:
    """Why a manifest row cannot enter the pipeline, or '' when it can."""
    if missing_columns:
        return f"manifest missing column: {', '.join(missing_columns)}"
    if not row["source"]:
        return "manifest empty source"
    if row["source"] not in allowed_sources:
        return f"manifest source not allowed: {row['source'][:80]}"
    if not row["source_id"]:
        return "manifest empty source_id"
    if not row["url"]:
        return "manifest empty url"
    for name, limit in MAX_CHARS.items():
        if len(row[name]) > limit:
            return f"manifest field too long: {name} has {len(row[name])} characters, limit {limit}"
    if any(ord(ch) < 32 or ch.isspace() for ch in row["url"]):
        return "manifest bad url: contains whitespace or control characters"
    try:
        parts = urlsplit(row["url"])
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError as exc:
        return f"manifest bad url: {exc}"
    if parts.scheme.lower() not in SCHEMES:
        return f"manifest unsupported url scheme: {parts.scheme.lower()[:20] or '(none)'}"
    for name in ("width", "height"):
        if row.get(name) and not row[name].isdigit():
            return f"manifest bad {name}: not a non-negative integer: {row[name][:40]}"
    return ""


def row_key(row: dict) -> str:
    """Key from (source, source_id); a row without a source_id is keyed by its content,
    which is still stable across machines and runs."""
    if row["source_id"]:
        return make_key(row["source"], row["source_id"])
    content = json.dumps(row, sort_keys=True, ensure_ascii=False)
    return make_key(row["source"], "row-sha256:" + hashlib.sha256(content.encode()).hexdigest())


def assign(df: pd.DataFrame, manifest_file: str, config: Config) -> pd.DataFrame:
    """Give every row of one manifest its key, shard, split and contract verdict."""
    missing = [c for c in REQUIRED if c not in df.columns]
    df = df.copy()
    for column in REQUIRED + OPTIONAL:
        if column not in df.columns:
            df[column] = ""
    extra_columns = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    splits, allowed = config["splits"], config["allowed_sources"]
    rows = []
    for number, record in enumerate(df.to_dict("records")):
        core = {c: record[c] for c in REQUIRED + OPTIONAL}
        key = row_key(core)
        rows.append(
            {
                "key": key,
                "shard": shard_of(key, config["shards"]),
                "split": split_of(key, splits["val_fraction"], splits["test_fraction"]),
                **core,
                "extra": json.dumps({c: record[c] for c in extra_columns}, sort_keys=True, ensure_ascii=False),
                "manifest_file": manifest_file,
                "manifest_row": number,
                "contract_error": contract_error(core, missing, allowed),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def partition(sources: list[str], config: Config, out_dir: str | Path) -> dict:
    """Write `{out_dir}/{shard}.parquet` for every configured shard and a summary.

    Rows repeating an earlier (source, source_id) are the same key: the first one, in
    config order of the manifests, wins and the repeats are counted in the summary."""
    out_dir = Path(out_dir)
    frames = [assign(read_manifest(path), str(path), config) for path in sources]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    repeated = rows.duplicated("key", keep="first")
    unique = rows[~repeated]
    summary = {
        "shards": config["shards"],
        "rows": int(len(rows)),
        "keys": int(len(unique)),
        "repeated_keys": int(repeated.sum()),
        "contract_errors": int((unique["contract_error"] != "").sum()),
        "per_shard": {},
    }
    for index in range(config["shards"]):
        part = unique[unique["shard"] == index].sort_values("key")
        write_table(part, out_dir / f"{shard_name(index)}.parquet")
        summary["per_shard"][shard_name(index)] = int(len(part))
    write_json(summary, out_dir / "partition.json")
    return summary


def run(files: Layout, cfg: Config, *, model=None) -> dict:
    """Every source manifest into one manifest per raw shard, and the summary beside them."""
    return partition(cfg["sources"], cfg, files.manifests)
