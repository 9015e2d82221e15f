"""Stage 1, collection: enumerate licensed images from the sources' own APIs and dumps into
source manifests that `partition` reads (docs/collection.md).

Collectors: `commons` (the Commons API), `commons-dump` (the structured-data dump joined with
the image table), `flickr` (the Flickr API), `yfcc` (the YFCC100M metadata). Each one turns its
config section into a list of parts (upload-time windows, dump chunks), a pure function of
the config, and writes each part as `{out}/{part}.parquet` through the checkpointed writer of
`gpic.collect.common`; `{out}/collection.json` lists the parts, their row counts and the
parts that failed. Parts run one after another: an API sees one request at a time."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq

from gpic.collect.common import ApiClient, CollectError, RateLimit, collect_part, written_with
from gpic.contracts import COLLECTORS
from gpic.identity import config_hash
from gpic.store import write_json

log = logging.getLogger(__name__)

SUMMARY = "collection.json"
PART_LIST_KEYS = ("start", "end", "chunks", "categories")


CLIENT_KEYS = ("timeout_s", "retries", "backoff_s", "max_backoff_s", "max_wait_s")


@dataclass
class Context:
    """What a collector gets besides its section: the shared User-Agent and request settings
    of `collect:`, and the sleep it waits with (tests pass one that records instead)."""

    user_agent: str
    settings: dict = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep

    def client(self, check: Callable | None = None, rate: RateLimit | None = None,
               secrets: tuple[str, ...] = ()) -> ApiClient:
        """A polite API client with the configured timeouts and retries; refuses a User-Agent
        without a contact."""
        return ApiClient(self.user_agent, check=check, rate=rate, sleep=self.sleep, secrets=secrets,
                         **{k: self.settings[k] for k in CLIENT_KEYS if k in self.settings})


def module(name: str) -> ModuleType:
    if name not in COLLECTORS:
        raise ValueError(f"unknown collector {name!r}: choose one of {', '.join(COLLECTORS)}")
    return importlib.import_module(COLLECTORS[name][0])


def section(collect_config: dict, name: str) -> dict:
    if name not in COLLECTORS:
        raise ValueError(f"unknown collector {name!r}: choose one of {', '.join(COLLECTORS)}")
    key = COLLECTORS[name][1]
    if key not in collect_config:
        raise ValueError(f"config collect.{key} is missing: the {name} collector has nothing to read")
    return collect_config[key]


def parts(collect_config: dict, name: str) -> list[str]:
    """The part names of one collector: windows or chunks, from the config alone."""
    cfg = section(collect_config, name)
    return module(name).parts(cfg)


def part_files(summary: str | Path) -> list[Path]:
    """The parts a collection's summary lists, in order: what partition reads. Files of parts
    the config no longer names (an old window length) may lie beside them and are not read."""
    summary = Path(summary)
    listed = json.loads(summary.read_text())["part_rows"]
    return [summary.parent / f"{part}.parquet" for part in listed]


def params_hash(cfg: dict) -> str:
    """Hash of the settings that shape a part's rows. The keys that only say which parts exist
    (the time range, the chunk count, the categories) are left out, since a part's name already
    says what it covers: extending `end` adds windows and keeps the finished ones."""
    return config_hash({k: v for k, v in cfg.items() if k not in PART_LIST_KEYS})


def collect(name: str, collect_config: dict, out_dir: str | Path, *, allow: list[str] | None = None,
            only: list[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Collect every part not yet finished (or only the named ones) into `out_dir`, in series.
    A finished part is kept while the settings that shaped it are unchanged. A part that fails
    is recorded with its reason and the others go on; the summary is written either way, then
    CollectError names the failed parts, so a rerun retries only those. `allow` is the licence
    allowlist, for collectors that ask the source for allowed licences only (Flickr)."""
    cfg, mod = section(collect_config, name), module(name)
    if allow is not None:
        cfg = {**cfg, "allow": list(allow)}
    params = params_hash(cfg)
    ctx = Context(collect_config.get("user_agent", ""), collect_config, sleep)
    names = mod.parts(cfg)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"{name}: no such part {unknown[0]!r} in this config (first: {names[0]!r})")
        names = [n for n in names if n in only]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = {}, {}
    for i, part in enumerate(names, 1):
        out = out_dir / f"{part}.parquet"
        if out.exists() and written_with(out) == params:
            rows[part] = pq.read_metadata(out).num_rows
            continue
        started = time.monotonic()
        try:
            rows[part] = collect_part(out, lambda state, part=part: mod.pages(part, cfg, ctx, state), mod.COLUMNS,
                                      params)
        except (CollectError, OSError) as exc:
            failed[part] = str(exc)
            log.error("%s part %s failed: %s", name, part, exc)
            continue
        log.info("%s part %d/%d %s: %d rows in %.1f s", name, i, len(names), part, rows[part],
                 time.monotonic() - started)
    summary = {"collector": name, "parts": len(names), "rows": sum(rows.values()), "part_rows": rows,
               "failed": failed}
    write_json(summary, out_dir / SUMMARY)
    if failed:
        first = next(iter(failed.items()))
        raise CollectError(f"{name}: {len(failed)} of {len(names)} parts failed (first: {first[0]}: {first[1]}); "
                           f"finished parts are kept and a rerun retries only the failed ones")
    return summary
