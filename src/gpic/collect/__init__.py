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
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq

from gpic.collect.common import ApiClient, CollectError, RateLimit, collect_part
from gpic.store import write_json

log = logging.getLogger(__name__)

# collector name -> (module, config section)
COLLECTORS = {
    "commons": ("gpic.collect.commons_api", "commons"),
    "commons-dump": ("gpic.collect.commons_dump", "commons_dump"),
    "flickr": ("gpic.collect.flickr_api", "flickr"),
    "yfcc": ("gpic.collect.yfcc", "yfcc"),
}
SUMMARY = "collection.json"


CLIENT_KEYS = ("timeout_s", "retries", "backoff_s", "max_backoff_s", "max_wait_s")


@dataclass
class Context:
    """What a collector gets besides its section: the shared User-Agent and request settings
    of `collect:`, and the sleep it waits with (tests pass one that records instead)."""

    user_agent: str
    settings: dict = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep

    def client(self, check: Callable | None = None, rate: RateLimit | None = None) -> ApiClient:
        """A polite API client with the configured timeouts and retries; refuses a User-Agent
        without a contact."""
        return ApiClient(self.user_agent, check=check, rate=rate, sleep=self.sleep,
                         **{k: self.settings[k] for k in CLIENT_KEYS if k in self.settings})


def module(name: str) -> ModuleType:
    if name not in COLLECTORS:
        raise ValueError(f"unknown collector {name!r}: choose one of {', '.join(COLLECTORS)}")
    return importlib.import_module(COLLECTORS[name][0])


def section(collect_config: dict, name: str) -> dict:
    key = COLLECTORS[name][1]
    if key not in collect_config:
        raise ValueError(f"config collect.{key} is missing: the {name} collector has nothing to read")
    return collect_config[key]


def parts(collect_config: dict, name: str) -> list[str]:
    """The part names of one collector: windows or chunks, from the config alone."""
    return module(name).parts(section(collect_config, name))


def part_files(out_dir: str | Path) -> list[Path]:
    """The finished parts of a collection folder, in order: what partition reads."""
    return sorted(p for p in Path(out_dir).glob("*.parquet"))


def collect(name: str, collect_config: dict, out_dir: str | Path, *, only: list[str] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> dict:
    """Collect every part not yet finished (or only the named ones) into `out_dir`, in series.
    A part that fails is recorded with its reason and the others go on; the summary is written
    either way, then CollectError names the failed parts, so a rerun retries only those."""
    mod, cfg = module(name), section(collect_config, name)
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
        if out.exists():
            rows[part] = pq.read_metadata(out).num_rows
            continue
        started = time.monotonic()
        try:
            rows[part] = collect_part(out, lambda state, part=part: mod.pages(part, cfg, ctx, state), mod.COLUMNS)
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
