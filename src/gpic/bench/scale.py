"""`gpic bench scale`: wall time and peak RSS of every step that reads across shards, at N keys,
fitted and extrapolated to GPIC's 110M.

For each N the bench writes what a run over N keys leaves behind, then runs each cross-shard
step in a fresh process and takes that child's own peak RSS and wall time from `os.wait4`:

- source manifests as the collectors write them (parquet parts of production size: Commons dump
  chunks and Flickr weekly windows; every column a string, with the collectors' own columns and
  refusals) with the field lengths the sources print;
- **partition** (measured): the real `gpic.stages.partition`, which writes the shard manifests;
- per shard, as the prepare and assess jobs write them: the fetch table and a raw tar whose
  members are tiny JPEGs (a 16x16 image plus the key: the sha256 in the tables is the member's,
  so verify can check it; the wire bytes say 180 kB an image), the filter, judge and embed
  tables (512-d fp16 descriptors, the filter's pHash), with planted duplicates (exact, pHash
  and descriptor-only copies, half of them of an image in the previous shard); stamps and
  Snakemake benchmark files;
- **dedup** (measured): the real global dedup job (`gpic.stages.dedup.run`) over those embed
  tables, forced to the IVF index that auto picks at 110M; not selected or skipped, the planted
  decisions are written instead;
- per shard, as the caption and provenance jobs write them: caption tables (four levels of
  realistic length), then the REAL pack (`pack.run` per train shard, `pack.gather` per held-out
  bucket) and the REAL provenance (`provenance.run`), so every packed tar, index and final state
  is what the pipeline writes from those tables;
- **summary**, **publish** (card and SHA256SUMS of every tar and index, no upload), **verify**
  (the real `gpic verify`: checksums, every index against its tar, records, keys, provenance),
  **report**, **cost**, **status**, each as the command or script the workflow runs.

A step whose peak, projected from the sizes measured before (dedup: from its descriptors before
any), would not fit in the memory the machine has free is skipped with that reason; a step that
fails is reported with its exit status and the end of its output; the bench goes on either way.

The tars hold tiny images, so hashing them says nothing about 110M images of real size: sha256
throughput is measured apart on a generated file (`tar_sha256_s_per_gb`) and turned into hours
over the packed bytes at 110M (`tar_sha256_hours_110m`, one core: publish hashes on one thread,
verify on every core).

With two or more sizes, each step's seconds and peak RSS are fitted by least squares to a + b*N
(b clamped at 0: no step gets cheaper with more keys) and extrapolated to 110M keys at the same
shard count. A linear fit misjudges a step whose cost is not linear in N: `{step}_exponent`, the
log-log slope of its seconds, flags one that grows faster (dedup's IVF search, ~N^1.5 with nlist ~ sqrt(N)) and the
RSS of a step with bounded memory (partition) levels off where the fit keeps climbing. The last
line ends with `worst_rss_gb_110m=... worst_hours_110m=... step_rss=... step_hours=...`."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from PIL import Image

from gpic import licenses
from gpic.bench import REPO
from gpic.config import Config, load_config
from gpic.contracts import HELD_OUT, LEVELS
from gpic.identity import config_hash, file_sha256, shard_name
from gpic.jobs import write_stamp
from gpic.layout import Layout, block_names, block_shards
from gpic.stages import dedup, pack, provenance
from gpic.stages import judge as judging
from gpic.stages.fetch import fetch_params
from gpic.stages.filter import COLUMNS as FILTER_COLUMNS
from gpic.stages.filter import scores_hash
from gpic.store import TarWriter, read_table, with_producer, write_json, write_table

STEPS = ("partition", "dedup", "summary", "publish", "verify", "report", "cost", "status")
TARGET_KEYS = 110_000_000
DIM = 512  # SSCD descriptors
# The embed and caption modules import torch; their tables' columns, as they write them (a test
# keeps these equal to gpic.stages.embed.COLUMNS and gpic.stages.caption.COLUMNS).
EMBED_COLUMNS = ["key", "embed_status", "embed_reason", "phash", "descriptor", "split", "sha256", "width", "height"]
CAPTION_COLUMNS = ["key", "caption_status", "caption_reason"] + [
    f"{lv}{x}" for lv in LEVELS for x in ("", "_raw", "_opening", "_tokens", "_flags", "_recaptioned", "_agreement")]

# Proportions (of the keys reaching each stage), chosen so that ~92% of the keys are packed, GPIC's
# 101.2M of 110M.
COMMONS_SHARE = 0.13  # ~14M of ~110M keys from the Commons dumps, the rest from Flickr (production.yaml)
COMMONS_PART_ROWS = 220_000  # a Commons dump chunk: ~14M keys in 64 chunks
FLICKR_PART_ROWS = 90_000  # a Flickr weekly window: ~96M keys in ~1,140 weeks
REFUSED = 0.002  # the collector's own refusal (collect_reason): partition drops the key
REPEATED = 0.001  # rows repeating an earlier (source, source_id): the same key, counted by partition
SHARE_ALIKE = 0.005  # a licence outside the allowlist: the licence gate drops it before any download
FETCH_FAILED = 0.022  # 404, 410, timeouts, the host's placeholder for a removed photo
OPT_OUT = 0.003  # X-Robots-Tag
FILTER_DROP = 0.02
JUDGE_DROP = 0.01
DUPLICATES = 0.025  # embedded keys planted as copies: a third exact, a third pHash, a third descriptor
CAPTION_FAILED = 0.001
IMAGE_BYTES = 180_000  # assumed mean size of a fetched image (1024-px Flickr "b", 960-px Commons thumbnails)
JSON_BYTES = 2_600  # a sample's JSON record with GPIC-length captions (measured on the synthesized records)
TAR_OVERHEAD = 1_536  # two 512-byte headers and the padding, per sample

FLICKR_LICENCES = [("Attribution License", "https://creativecommons.org/licenses/by/2.0/", 0.60),
                   ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/", 0.10),
                   ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/", 0.30)]
COMMONS_LICENCES = [("CC-BY-4.0", 0.35), ("CC-BY-3.0", 0.20), ("CC-BY-2.0", 0.10), ("CC0-1.0", 0.20),
                    ("PDM-1.0", 0.15)]
SHARE_ALIKE_LICENCES = {"flickr": ("Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
                        "wikimedia": ("CC-BY-SA-4.0", licenses.url_of("CC-BY-SA-4.0"))}
FETCH_FAILURES = [("http error: 404", 404, False, 0.5), ("http error: 410", 410, False, 0.15),
                  ("timeout: no data for 20 s", 0, True, 0.2),
                  ("gone: the source served its placeholder for a removed image (sha256 "
                   "3f1bb1ee9fb2d4d3a2df8fe7c3e8b5a41ee2fc43a5d9a5c8e1e4b2a7b0c1d9e4)", 200, False, 0.15)]
JUDGE_MODEL = ("Qwen/Qwen3-VL-4B-Instruct", "ebb281ec70b05090")
AGREEMENT_MODEL = ("google/siglip-base-patch16-224", "7fd15f0689c79d79")
EMBED_MODEL = ("sscd_disc_mixup", "9f26bd4c848cc19b")
CAPTION_WORDS = {"label": (2, 5), "short": (12, 20), "medium": (40, 65), "long": (120, 190)}  # words per level
TOKENS_PER_WORD = 1.3
BENCH_COLUMNS = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time"]
# Per-key cost written into the synthesized Snakemake benchmark files of the per-block jobs, so
# that `gpic cost` has its inputs: (wall s, cpu s per key, fixed s per job, max RSS MB).
BLOCK_COSTS = {"prepare": (0.05, 0.004, 5, 900), "assess": (0.017, 0.02, 60, 14_000),
               "caption": (0.6, 0.65, 60, 16_000), "provenance": (0.0002, 0.0002, 3, 600),
               "pack": (0.0005, 0.0005, 3, 800)}
DEDUP_BYTES_PER_KEY = 3_000  # projected dedup peak per embedded key before any size was measured here

Say = Callable[[str], None]


# ---- text and numbers, vectorised ------------------------------------------------------------

_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _hex(raw: np.ndarray) -> pa.Array:
    """Rows of bytes (n, k) as n hex strings of 2k characters."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return pa.array(np.ascontiguousarray(_HEX[raw]).view(f"S{2 * raw.shape[1]}").ravel()).cast(pa.string())


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _vocabulary(rng: np.random.Generator, n: int = 3000) -> list[str]:
    """Pseudo-words of 1-4 syllables (English-like lengths; they compress like text)."""
    onsets = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "ch", "sh"]
    vowels = ["a", "e", "i", "o", "u", "a", "e", "o", "ea", "ou"]
    words: set[str] = set()
    while len(words) < n:  # ~5 characters on average, as English running text
        syllables = int(rng.choice([1, 1, 2, 2, 2, 3]))
        words.add("".join(str(rng.choice(onsets)) + str(rng.choice(vowels)) for _ in range(syllables))
                  + str(rng.choice(["", "", "n", "s", "r", "t"])))
    return sorted(words)


class Pools:
    """Pools of titles, names and caption halves, drawn from once per key: a key's text is a
    combination (several halves, a number), so values repeat as little as in real data."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed + 7)
        self.words = _vocabulary(rng)

        def phrases(count: int, lo: int, hi: int, cap: bool = False) -> pa.Array:
            out = []
            for _ in range(count):
                text = " ".join(rng.choice(self.words, int(rng.integers(lo, hi + 1))))
                out.append(text.capitalize() if cap else text)
            return pa.array(out, pa.string())

        self.titles = phrases(4096, 5, 9, cap=True)  # ~40-60 characters with the number after it
        self.names = phrases(8192, 3, 5, cap=True)  # ~20-40 characters
        self.files = phrases(4096, 2, 4)
        self.captions = {level: (phrases(2048, (lo + 1) // 2, (hi + 1) // 2, cap=True), phrases(2048, lo // 2, hi // 2))
                         for level, (lo, hi) in CAPTION_WORDS.items()}

    def pick(self, pool: pa.Array, rng: np.random.Generator, n: int) -> pa.Array:
        return pool.take(pa.array(rng.integers(0, len(pool), n)))


# ---- source manifests -------------------------------------------------------------------------

def _dates(rng: np.random.Generator, n: int, start: str, days: int) -> np.ndarray:
    seconds = rng.integers(0, days * 86400, n)
    return np.datetime64(start, "s") + seconds.astype("timedelta64[s]")


def _iso(times: np.ndarray) -> pa.Array:
    return _join(_text(np.datetime_as_string(times, unit="s")), "+00:00")


def _choose(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    p = np.asarray(weights, float)
    return rng.choice(len(p), n, p=p / p.sum())


def _licences(rng: np.random.Generator, source: str, n: int) -> tuple[pa.Array, pa.Array]:
    if source == "flickr":
        table = [(name, url) for name, url, _ in FLICKR_LICENCES]
        weights = [w for _, _, w in FLICKR_LICENCES]
    else:
        table = [(lic, licenses.url_of(lic)) for lic, _ in COMMONS_LICENCES]
        weights = [w for _, w in COMMONS_LICENCES]
    table.append(SHARE_ALIKE_LICENCES[source])
    pick = _choose(rng, n, [w * (1 - SHARE_ALIKE) / sum(weights) for w in weights] + [SHARE_ALIKE])
    names, urls = pa.array([t[0] for t in table]), pa.array([t[1] for t in table])
    return names.take(pa.array(pick)), urls.take(pa.array(pick))


def _sizes(rng: np.random.Generator, n: int, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Landscape (70%) or portrait renditions with the given long side."""
    short = rng.integers(long_side * 9 // 16, long_side * 3 // 4 + 1, n)
    landscape = rng.random(n) < 0.7
    return np.where(landscape, long_side, short), np.where(landscape, short, long_side)


def _refusals(rng: np.random.Generator, n: int, reason: str) -> pa.Array:
    return pa.array(np.where(rng.random(n) < REFUSED, reason, ""), pa.string())


def _repeat_some(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Some rows repeat an earlier row's id (a record listed twice): the same key."""
    repeat = np.flatnonzero(rng.random(len(ids)) < REPEATED)
    repeat = repeat[repeat > 0]
    ids = ids.copy()
    ids[repeat] = ids[rng.integers(0, repeat)] if len(repeat) else ids[repeat]
    return ids


def flickr_rows(rows: np.ndarray, rng: np.random.Generator, pools: Pools) -> pa.Table:
    """Flickr API rows (gpic.collect.flickr_api) for row numbers `rows`."""
    n = len(rows)
    photo = _text(_repeat_some(20_000_000_000 + rows * 397 + rng.integers(0, 397, n), rng))
    owner_number = rng.integers(0, max(100, n // 30), n)
    owner = _join(_text(10_000_000 + owner_number * 13), "@N0", _text(owner_number % 9 + 1))
    owner_name = pools.names.take(pa.array(owner_number % len(pools.names)))
    width, height = _sizes(rng, n, 1024)
    licence, licence_url = _licences(rng, "flickr", n)
    uploaded = _dates(rng, n, "2005-01-01", 7000)
    week = uploaded.astype("datetime64[W]").astype("datetime64[D]")
    return pa.table({
        "source": pa.array(["flickr"] * n), "source_id": photo,
        "url": _join("https://live.staticflickr.com/", _text(rng.integers(1000, 65536, n)), "/", photo, "_",
                     _hex(rng.integers(0, 256, (n, 5), dtype=np.uint8)), "_b.jpg"),
        "license": licence, "license_url": licence_url, "attribution": owner_name,
        "title": _join(pools.pick(pools.titles, rng, n), " ", _text(rng.integers(1000, 99999, n))),
        "retrieved_at": _iso(_dates(rng, n, "2026-11-01", 3)), "width": _text(width), "height": _text(height),
        "owner_id": owner, "owner_name": owner_name,
        "upload_date": _text(uploaded.astype("datetime64[s]").astype(np.int64)),
        "license_id_flickr": pa.array(np.where(
            pc.equal(licence, FLICKR_LICENCES[0][0]).to_numpy(zero_copy_only=False), "4", "9")),
        "page_url": _join("https://www.flickr.com/photos/", owner, "/", photo, "/"), "size": pa.array(["url_l"] * n),
        "original_width": _text(width * 4), "original_height": _text(height * 4),
        "window": _join(_text(np.datetime_as_string(week, "D")), "/", _text(np.datetime_as_string(week + 7, "D"))),
        "collect_reason": _refusals(rng, n, "flickr: attribution required by CC-BY-2.0 but the photo has no owner"),
    })


def commons_rows(rows: np.ndarray, rng: np.random.Generator, pools: Pools) -> pa.Table:
    """Commons dump rows (gpic.collect.commons_dump) for row numbers `rows`."""
    n = len(rows)
    page = _text(_repeat_some(1_000_000 + rows * 5 + rng.integers(0, 5, n), rng))
    name = pc.replace_substring(_join(pools.pick(pools.files, rng, n), " ", _text(rng.integers(1900, 2026, n)), ".jpg"),
                                " ", "_")
    digest = _hex(rng.integers(0, 256, (n, 1), dtype=np.uint8))
    folder = _join(pc.utf8_slice_codeunits(digest, 0, 1), "/", digest, "/")
    width, height = _sizes(rng, n, 960)
    licence, licence_url = _licences(rng, "wikimedia", n)
    return pa.table({
        "source": pa.array(["wikimedia"] * n), "source_id": page,
        "url": _join("https://upload.wikimedia.org/wikipedia/commons/thumb/", folder, name, "/960px-", name),
        "license": licence, "license_url": licence_url, "attribution": pools.pick(pools.names, rng, n),
        "title": _join("File:", pc.replace_substring(name, "_", " ")),
        "retrieved_at": _iso(_dates(rng, n, "2026-11-01", 3)), "width": _text(width), "height": _text(height),
        "page_id": page, "file_name": name, "sha1": _hex(rng.integers(0, 256, (n, 20), dtype=np.uint8)),
        "mime": pa.array(["image/jpeg"] * n),
        "original_url": _join("https://upload.wikimedia.org/wikipedia/commons/", folder, name),
        "original_width": _text(width * 3), "original_height": _text(height * 3),
        "upload_time": _iso(_dates(rng, n, "2006-01-01", 7000)), "copyright_status": pa.array(["Q50423863"] * n),
        "license_items": pa.array(["Q20007257"] * n), "licence_source": pa.array(["structured data"] * n),
        "entity_modified": _iso(_dates(rng, n, "2026-10-01", 30)),
        "collect_reason": _refusals(rng, n, "collect: attribution required by CC-BY-4.0 but no author is given"),
    })


def write_sources(folder: Path, n: int, seed: int = 0, pools: Pools | None = None) -> list[str]:
    """Source manifests of n rows as the collectors write them (parquet, every column a string,
    one row group a part): Commons dump chunks of at most COMMONS_PART_ROWS rows (64 chunks of
    ~14M keys) and Flickr weekly windows of at most FLICKR_PART_ROWS (~96M keys in ~1,140
    weeks), so partition reads parts of the production size whatever n is."""
    pools = pools or Pools(seed)
    rng = np.random.default_rng(seed)
    commons = round(n * COMMONS_SHARE)
    parts = []
    for name, make, lo, hi, rows in (("commons-dump", commons_rows, 0, commons, COMMONS_PART_ROWS),
                                     ("flickr", flickr_rows, commons, n, FLICKR_PART_ROWS)):
        count = max(1, math.ceil((hi - lo) / rows))
        bounds = np.linspace(lo, hi, count + 1).round().astype(int)
        parts += [(f"{name}-{i:05d}", make, int(bounds[i]), int(bounds[i + 1])) for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make, lo, hi in parts:
        path = folder / f"{name}.parquet"
        pq.write_table(make(np.arange(lo, hi, dtype=np.int64), rng, pools), path, compression="zstd",
                       row_group_size=max(1, hi - lo))
        paths.append(str(path))
    return paths


# ---- the configuration ------------------------------------------------------------------------

def bench_config(folder: Path, shards: int, sources: list[str]) -> Path:
    """production.yaml at `shards` shards (held-out shards in its proportions), reading `sources`,
    dedup on the index that `auto` picks at 110M keys (product codes re-scored exactly), whatever N is."""
    config = yaml.safe_load((REPO / "config" / "production.yaml").read_text())
    config.update(sources=sources, shards=shards)
    config["splits"].update(val_shards=max(1, round(config["splits"]["val_shards"] * shards / 8000)),
                            test_shards=max(1, round(config["splits"]["test_shards"] * shards / 8000)))
    config["dedup"]["index"] = "ivfpq"
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- per-shard tables: prepare and assess -----------------------------------------------------

def _tiny(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 200)).save(buffer, fmt)
    return buffer.getvalue()


TINY = {"jpg": _tiny("JPEG"), "png": _tiny("PNG")}


def _phash_hex(codes: np.ndarray) -> pa.Array:
    return _hex(codes.astype(">u8").view(np.uint8).reshape(-1, 8))


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@dataclass
class Originals:
    """A shard's embedded keys that were not planted as copies: what the next shard copies."""

    keys: np.ndarray
    members: list[bytes]
    sha256: np.ndarray
    phash: np.ndarray
    descriptors: np.ndarray  # float32, unit rows


@dataclass
class Planted:
    """Copies planted in one shard: (copy key, original key, layer, similarity)."""

    copy: list[str]
    original: list[str]
    layer: list[str]
    similarity: list[float]


class Synthesizer:
    """Writes the per-shard files of every block job, shard by shard in order, from the shard
    manifests partition wrote."""

    def __init__(self, layout: Layout, cfg: Config, seed: int, pools: Pools):
        self.layout, self.cfg, self.seed, self.pools = layout, cfg, seed, pools
        self.shards = cfg["shards"]
        self.blocks = block_names(self.shards, cfg["shards_per_job"])
        self.planted: dict[str, Planted] = {}
        self.licence_verdicts: dict[tuple[str, str], licenses.Verdict] = {}
        self.packed_bytes = 0  # what the samples packed here would take at real image sizes
        self.packed = 0

    def rng(self, shard: int, stage: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, shard, sum(map(ord, stage))])

    def verdict(self, licence: str, url: str) -> licenses.Verdict:
        if (licence, url) not in self.licence_verdicts:
            allow = self.cfg["licenses"]["allow"]
            self.licence_verdicts[(licence, url)] = licenses.check(licence, url, "someone", allow)
        return self.licence_verdicts[(licence, url)]

    # -- prepare (fetch, filter) and assess (judge, embed), one shard ------------------------

    def prepare_assess(self, index: int, previous: Originals | None) -> tuple[dict, dict, Originals]:
        shard = shard_name(index)
        files, rng = self.layout.shard(shard), self.rng(index, "prepare")
        m = read_table(files.table("manifests"), columns=["key", "split", "url", "license", "license_url",
                                                          "contract_error", "width", "height"])
        n, keys = len(m), m["key"].to_numpy(dtype=object)
        verdicts = [self.verdict(a, b) for a, b in zip(m["license"], m["license_url"], strict=True)]
        refused = (m["contract_error"] != "").to_numpy()
        licence_ok = np.array([v.ok for v in verdicts], bool)
        u = rng.random(n)
        status = np.select([refused, ~licence_ok, u < OPT_OUT, u < OPT_OUT + FETCH_FAILED],
                           ["skipped", "dropped", "dropped", "failed"], "ok").astype(object)
        ok = status == "ok"
        reason = np.full(n, "", object)
        reason[refused] = m["contract_error"].to_numpy(dtype=object)[refused]
        gate = ~refused & ~licence_ok
        reason[gate] = [v.reason for v, g in zip(verdicts, gate, strict=True) if g]
        opt_out = ~refused & licence_ok & (u < OPT_OUT)
        reason[opt_out] = "opt-out: X-Robots-Tag noai"
        failed = status == "failed"
        kind = _choose(rng, n, [w for *_, w in FETCH_FAILURES])
        reason[failed] = np.array([f[0] for f in FETCH_FAILURES], object)[kind[failed]]
        http = np.where(failed, np.array([f[1] for f in FETCH_FAILURES])[kind], np.where(ok, 200, 0))
        retryable = failed & np.array([f[2] for f in FETCH_FAILURES])[kind]
        attempted = ok | failed | opt_out
        attempts = np.where(attempted, 1 + (rng.random(n) < 0.03) + 2 * retryable, 0)
        wire = np.where(ok, rng.lognormal(math.log(IMAGE_BYTES) - 0.18, 0.6, n).astype(np.int64), 0)
        ext = np.where(rng.random(n) < 0.05, "png", "jpg").astype(object)
        width = np.where(ok, m["width"].astype(np.int64), 0)
        height = np.where(ok, m["height"].astype(np.int64), 0)

        # filter: every fetched key; a few dropped with the reason the filter gives
        frng = self.rng(index, "filter")
        blur = frng.lognormal(math.log(400), 0.7, n)
        std = frng.uniform(35, 75, n)
        drop_kind = np.where(frng.random(n) < FILTER_DROP, frng.integers(1, 4, n), 0) * ok
        min_blur, min_side, min_std = (self.cfg["filter"][k] for k in ("min_blur", "min_side", "min_std"))
        blur = np.where(drop_kind == 1, frng.uniform(5, min_blur * 0.98, n), np.maximum(blur, min_blur * 1.05))
        small = drop_kind == 2
        width, height = np.where(small, frng.integers(120, min_side, n), width), np.where(small, frng.integers(
            90, min_side, n), height)
        std = np.where(drop_kind == 3, frng.uniform(1, min_std * 0.95, n), std)
        filter_reason = np.full(n, "", object)
        for i in np.flatnonzero(drop_kind):
            filter_reason[i] = (f"blurry: laplacian variance {blur[i]:.1f} < {min_blur}" if drop_kind[i] == 1 else
                                f"too small: {width[i]}x{height[i]} < {min_side}" if drop_kind[i] == 2 else
                                f"near-blank: std {std[i]:.1f} < {min_std}")
        passed = ok & (drop_kind == 0)

        # judge: every key the filter passed; p_reject mostly far below the threshold
        jrng = self.rng(index, "judge")
        criteria = list(self.cfg["judge"]["criteria"])
        threshold = self.cfg["judge"]["reject_threshold"]
        p_reject = jrng.beta(1, 12, (n, len(criteria)))
        rejected = passed & (jrng.random(n) < JUDGE_DROP)
        p_reject[rejected, jrng.integers(0, len(criteria), n)[rejected]] = jrng.uniform(0.55, 0.97, int(rejected.sum()))
        mass = jrng.uniform(0.8, 0.995, (n, len(criteria)))
        judge_verdict, judge_reason = np.full(n, "pass", object), np.full(n, "", object)
        for i in np.flatnonzero(passed & (p_reject.max(axis=1) > threshold)):
            judge_verdict[i], judge_reason[i] = judging.decide(dict(zip(criteria, p_reject[i], strict=True)), threshold)
        embedded = passed & (judge_verdict == "pass")

        # member bytes, hashes and descriptors; then copies planted among the embedded keys
        members = [TINY[e] + k.encode() if o else b"" for k, e, o in zip(keys, ext, ok, strict=True)]
        erng = self.rng(index, "embed")
        phash = erng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * 2 + erng.integers(0, 2, n).astype(
            np.uint64)
        where = np.flatnonzero(embedded)
        descriptors = np.zeros((n, DIM), np.float32)
        descriptors[where] = _unit(erng.standard_normal((len(where), DIM), dtype=np.float32))
        copies = where[erng.random(len(where)) < DUPLICATES]
        originals_here = np.setdiff1d(where, copies)
        planted = Planted([], [], [], [])
        for c in copies:
            layer = ("exact", "phash", "descriptor")[int(erng.integers(0, 3))]
            if previous is not None and len(previous.keys) and erng.random() < 0.5:
                j = int(erng.integers(0, len(previous.keys)))
                o_key, o_member, o_phash, o_desc = (previous.keys[j], previous.members[j], previous.phash[j],
                                                    previous.descriptors[j])
            elif len(originals_here):
                j = int(originals_here[erng.integers(0, len(originals_here))])
                o_key, o_member, o_phash, o_desc = keys[j], members[j], phash[j], descriptors[j]
            else:
                continue
            if layer == "exact":
                members[c], phash[c], descriptors[c], similarity = o_member, o_phash, o_desc, 1.0
            else:
                noise = 0.3 if layer == "phash" else 0.38  # cosine ~0.96 and ~0.93, above cosine_min 0.9
                descriptors[c] = _unit((o_desc + noise * erng.standard_normal(DIM).astype(np.float32)
                                        / math.sqrt(DIM))[None])[0]
                similarity = float(descriptors[c] @ o_desc)
                if layer == "phash":
                    flips = erng.choice(64, int(erng.integers(1, 3)), replace=False)
                    phash[c] = o_phash ^ np.uint64(sum(1 << int(f) for f in flips))
                    similarity = 1 - len(flips) / 64
            planted.copy.append(keys[c])
            planted.original.append(o_key)
            planted.layer.append(layer)
            planted.similarity.append(round(similarity, 4))
        self.planted[shard] = planted
        sha = np.array([hashlib.sha256(b).hexdigest() if o else "" for b, o in zip(members, ok, strict=True)], object)
        descriptors16 = descriptors.astype(np.float16)
        phash_hex = _phash_hex(phash).to_numpy(zero_copy_only=False).astype(object)

        # raw tar (members in name order, as fetch writes it) and the fetch table (manifest order)
        offsets = np.full(n, -1, np.int64)
        names = np.where(ok, keys + "." + ext, "")
        with TarWriter(files.raw) as tar:
            for i in sorted(np.flatnonzero(ok), key=lambda i: names[i]):
                offsets[i] = tar.add(names[i], members[i])[0]
        sizes = np.array([len(b) for b in members], np.int64)
        fetched_at = _iso(_dates(rng, n, "2026-11-05", 20)).to_numpy(zero_copy_only=False).astype(object)
        fetch = pd.DataFrame({
            "key": keys, "fetch_status": status, "fetch_reason": reason, "retryable": retryable,
            "http_status": http.astype(np.int64), "bytes": sizes, "sha256": sha,
            "content_type": np.where(ok, np.where(ext == "png", "image/png", "image/jpeg"), "").astype(object),
            "fetched_at": np.where(ok, fetched_at, "").astype(object), "raw_member": names.astype(object),
            "license_id": np.array([v.license_id for v in verdicts], object), "attempts": attempts.astype(np.int64),
            "host": np.where(m["url"].str.startswith("https://live"), "live.staticflickr.com",
                             "upload.wikimedia.org").astype(object),
            "wire_bytes": (wire * attempts.clip(max=1)).astype(np.int64),
            "fetch_s": np.where(attempted, rng.lognormal(-0.7, 0.6, n) * attempts, 0.0), "raw_offset": offsets})
        write_table(with_producer(fetch, "fetch", fetch_params(self.cfg)), files.table("fetch"))

        filtered = pd.DataFrame({
            "key": keys, "format": np.where(ext == "png", "PNG", "JPEG").astype(object), "width": width,
            "height": height, "aspect": np.maximum(width, height) / np.maximum(np.minimum(width, height), 1),
            "orientation": np.ones(n, np.int64), "frames": np.ones(n, np.int64), "blur": blur,
            "overexposed": frng.beta(1, 60, n), "underexposed": frng.beta(1, 60, n), "std": std,
            "entropy": frng.uniform(6.5, 7.9, n), "phash": phash_hex,
            "filter_verdict": np.where(passed, "pass", "drop").astype(object), "filter_reason": filter_reason})[ok]
        filtered = with_producer(filtered[FILTER_COLUMNS], "filter", self.cfg["filter"],
                         scores_hash=scores_hash(self.cfg["filter"]))
        write_table(filtered, files.table("filter"))

        judged = pd.DataFrame({"key": keys, "judge_verdict": judge_verdict, "judge_reason": judge_reason,
                               **{f"{c}_{x}": values[:, i] for i, c in enumerate(criteria)
                                  for x, values in (("p_reject", p_reject), ("mass", mass))}})[passed]
        judged = judged[judging.COLUMNS + [f"{c}_{x}" for c in criteria for x in ("p_reject", "mass")]]
        criteria_hash = config_hash(self.cfg["judge"]["criteria"])
        judged = with_producer(judged, "judge", self.cfg["judge"], prompt_hash=criteria_hash,
                               model_id=JUDGE_MODEL[0], model_revision=JUDGE_MODEL[1])
        write_table(judged, files.table("judge"))

        embed = pd.DataFrame({
            "key": keys[embedded], "embed_status": "ok", "embed_reason": "", "phash": phash_hex[embedded],
            "descriptor": [row.tobytes() for row in descriptors16[embedded]], "split": m["split"].to_numpy()[embedded],
            "sha256": sha[embedded], "width": width[embedded], "height": height[embedded]}, columns=EMBED_COLUMNS)
        embed = with_producer(embed, "embed", self.cfg["embed"], model_id=EMBED_MODEL[0], model_revision=EMBED_MODEL[1])
        write_table(embed, files.table("embed"))

        mine = np.isin(where, originals_here)
        kept = Originals(keys[where][mine], [members[i] for i in where[mine]], sha[where][mine], phash[where][mine],
                         descriptors16[where][mine].astype(np.float32))
        counts = ({"fetch": _counts(fetch["fetch_status"]), "filter": _counts(filtered["filter_verdict"])},
                  {"judge": _counts(judged["judge_verdict"]), "embed": _counts(embed["embed_status"])})
        return counts[0], counts[1], kept

    # -- planted decisions, when the real dedup does not run -----------------------------------

    def planted_decisions(self) -> None:
        """What dedup would decide from the planted copies alone: each copy removed for its
        original (no keep-order or test preference), in the dedup stage's columns."""
        frames = []
        for index in range(self.shards):
            shard = shard_name(index)
            table = read_table(self.layout.table("embed", shard), columns=["key", "split"])
            p = self.planted.get(shard, Planted([], [], [], []))
            link = pd.DataFrame({"key": p.copy, "duplicate_of": p.original, "dedup_layer": p.layer,
                                 "similarity": p.similarity},
                                columns=["key", "duplicate_of", "dedup_layer", "similarity"])
            link = link.drop_duplicates("key")
            table = table.merge(link, on="key", how="left")
            frames.append(table.assign(shard=shard))
        decisions = pd.concat(frames, ignore_index=True)
        removed = decisions["duplicate_of"].notna()
        decisions["cluster"] = decisions["duplicate_of"].where(removed, decisions["key"])
        decisions["cluster_size"] = decisions.groupby("cluster")["key"].transform("size").astype(np.int64)
        decisions["kept"] = ~removed
        decisions["duplicate_of"] = decisions["duplicate_of"].fillna("")
        decisions["dedup_layer"] = decisions["dedup_layer"].fillna("")
        decisions = decisions[dedup.DECISIONS].sort_values(["shard", "key"]).reset_index(drop=True)
        decisions = with_producer(decisions, "dedup", self.cfg["dedup"])
        by_shard = dict(iter(decisions.groupby("shard")))
        for index in range(self.shards):
            shard = shard_name(index)
            write_table(by_shard.get(shard, decisions.iloc[:0]), self.layout.table("dedup", shard))
        for block in self.blocks:
            write_json({"shards": {s: dedup.slice_digest(by_shard.get(s, decisions.iloc[:0]))
                                   for s in block_shards(block)}}, self.layout.block_digest(block))
        write_table(decisions, self.layout.decisions)

    # -- caption (and the real pack) ------------------------------------------------------------

    def captions(self, index: int) -> dict:
        shard = shard_name(index)
        files, rng = self.layout.shard(shard), self.rng(index, "caption")
        decisions = read_table(files.table("dedup"), columns=["key", "kept"])
        keys = np.sort(decisions.loc[decisions["kept"].astype(bool), "key"].to_numpy(dtype=object))
        n = len(keys)
        failed = rng.random(n) < CAPTION_FAILED
        columns: dict[str, object] = {
            "key": keys, "caption_status": np.where(failed, "failed", "ok").astype(object),
            "caption_reason": np.where(failed, "decode corrupt: OSError: image file is truncated", "").astype(object)}
        for level in LEVELS:
            first, second = self.pools.captions[level]
            text = _join(self.pools.pick(first, rng, n), " ", self.pools.pick(second, rng, n), ".")
            words = pc.add(pc.count_substring(text, " "), 1).to_numpy(zero_copy_only=False)
            tokens = np.round(words * TOKENS_PER_WORD + rng.integers(0, 4, n))
            flags = np.where(failed, "", np.where(rng.random(n) < (0.02 if level == "long" else 0.002), "truncated",
                                                  "")).astype(object)
            columns[level] = columns[f"{level}_raw"] = np.where(failed, "", text.to_numpy(zero_copy_only=False)).astype(
                object)
            columns[f"{level}_opening"] = np.full(n, "", dtype=object)
            columns[f"{level}_tokens"] = np.where(failed, 0, tokens).astype(np.int64)
            columns[f"{level}_flags"] = flags
            columns[f"{level}_recaptioned"] = np.zeros(n, dtype=bool)
            columns[f"{level}_agreement"] = np.where(failed, np.nan, rng.normal(0.12, 0.03, n))
        table = pd.DataFrame(columns, columns=CAPTION_COLUMNS)
        caption = self.cfg["caption"]
        generation = json.dumps({"backend": caption["backend"], "do_sample": False, "num_beams": 1,
                                 "batch_size": caption["batch_size"],
                                 "max_new_tokens": {lv: caption["levels"][lv]["max_new_tokens"] for lv in LEVELS},
                                 "max_pixels": caption["max_pixels"], "recaption": caption["recaption"]},
                                sort_keys=True)
        table = with_producer(table, "caption", caption, prompt_hash=config_hash(caption["levels"]), decoding="greedy",
                              generation=generation, model_id=JUDGE_MODEL[0], model_revision=JUDGE_MODEL[1],
                              agreement_model_id=AGREEMENT_MODEL[0], agreement_model_revision=AGREEMENT_MODEL[1])
        write_table(table, files.table("captions"))
        packed = pack.run(files, self.cfg)  # the real pack: tar and index of train shard `index`
        self.count_packed(packed)
        return {"caption": _counts(table["caption_status"]), "packed_train": int(len(packed))}

    def count_packed(self, index: pd.DataFrame) -> None:
        """Bytes these samples would take packed with images of real size."""
        self.packed += len(index)
        if len(index):
            self.packed_bytes += len(index) * (IMAGE_BYTES + TAR_OVERHEAD) + int(index["json_size"].sum())


def _counts(column: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in column.value_counts().sort_index().items()}


def _benchmark(path: Path, seconds: float, cpu_s: float, rss_mb: float) -> None:
    """One Snakemake `benchmark:` file (the columns Snakemake writes)."""
    clock = time.strftime("%H:%M:%S", time.gmtime(seconds))
    row = [f"{seconds:.4f}", clock, f"{rss_mb:.2f}", f"{rss_mb * 1.3:.2f}", f"{rss_mb * 0.95:.2f}",
           f"{rss_mb * 0.97:.2f}", "0.00", "0.00", "95.00", f"{cpu_s:.2f}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(BENCH_COLUMNS) + "\n" + "\t".join(row) + "\n")


def _block_benchmark(layout: Layout, job: str, name: str, keys: int) -> None:
    wall, cpu, fixed, rss = BLOCK_COSTS[job]
    _benchmark(layout.benchmark(job, name), fixed + wall * keys, fixed + cpu * keys, rss)


def synthesize_assessed(layout: Layout, cfg: Config, seed: int, pools: Pools) -> Synthesizer:
    """Fetch, filter, judge and embed tables and raw tars of every shard, the prepare and
    assess stamps and benchmark files (from the shard manifests)."""
    synth = Synthesizer(layout, cfg, seed, pools)
    previous = None
    for block in synth.blocks:
        prepared, assessed, keys = {}, {}, 0
        for shard in block_shards(block):
            prepared[shard], assessed[shard], previous = synth.prepare_assess(int(shard), previous)
            keys += sum(prepared[shard]["fetch"].values())
        write_stamp(layout.stamp("prepare", block), "prepare", block, prepared, layout)
        write_stamp(layout.stamp("assess", block), "assess", block, assessed, layout)
        _block_benchmark(layout, "prepare", block, keys)
        _block_benchmark(layout, "assess", block, sum(sum(c["judge"].values()) for c in assessed.values()))
    return synth


def synthesize_captioned(synth: Synthesizer) -> None:
    """Caption tables, the real pack of every train shard and held-out bucket, the real
    provenance of every shard, with the caption and provenance stamps and benchmark files."""
    layout, cfg = synth.layout, synth.cfg
    for block in synth.blocks:
        counts = {}
        for shard in block_shards(block):
            counts[shard] = synth.captions(int(shard))
        write_stamp(layout.stamp("caption", block), "caption", block, counts, layout)
        _block_benchmark(layout, "caption", block, sum(sum(c["caption"].values()) for c in counts.values()))
    for split in HELD_OUT:
        for bucket in range(cfg["splits"][f"{split}_shards"]):
            index = pack.gather(layout, cfg, split, shard_name(bucket))
            synth.count_packed(index)
            _block_benchmark(layout, "pack", f"{split}_{shard_name(bucket)}", len(index))
    for block in synth.blocks:
        counts, keys = {}, 0
        for shard in block_shards(block):
            table = provenance.run(layout.shard(shard), cfg)
            counts[shard], keys = _counts(table["state"]), keys + len(table)
        write_stamp(layout.stamp("provenance", block), "provenance", block, counts, layout)
        _block_benchmark(layout, "provenance", block, keys)


# ---- measuring one step -----------------------------------------------------------------------

@dataclass
class Measured:
    seconds: float = math.nan
    rss_mb: float = math.nan
    cpu_s: float = math.nan
    error: str = ""  # empty when the step ran and exited 0; "skipped: ..." when it was not run


# The step's process is started by a small launcher, which takes the step's rusage from
# os.wait4. Started from this process directly, its peak RSS would not be its own: Linux carries
# the high-water RSS of the address space a process replaces at exec into its own maximum, and
# the child of a fork (or vfork) from here execs out of this process's address space, which
# holds the synthesized corpus (1 GB here gives a child running `pass` a 1 GB peak). The
# launcher's own ~10 MB is the floor it leaves in the figures.
LAUNCHER = """import json, os, subprocess, sys, time
out, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "wb") as stream:
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
child.returncode = code = os.waitstatus_to_exitcode(status)
with open(out, "w") as stream:
    json.dump({"seconds": seconds, "rss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
               "code": code}, stream)
"""


def measure(argv: list[str], log: Path, cwd: Path) -> Measured:
    """Run one command in a fresh process: its wall time, and its own peak RSS and CPU time
    from os.wait4 (its waited-for children included, as the kernel accounts them)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.with_suffix(".rusage.json")
    launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(out), str(log), *argv], cwd=cwd,
                              capture_output=True, text=True)
    if launcher.returncode:
        return Measured(error=f"launcher failed: {launcher.stderr[-600:]}")
    usage = json.loads(out.read_text())
    code = usage["code"]
    result = Measured(usage["seconds"], usage["rss_kb"] / 1024, usage["cpu_s"])
    if code:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        cause = (f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "") if code < 0
                 else f"exit {code}")
        result.error = f"{cause}: {' | '.join(tail)[-600:]}"
    return result


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _gpic(*args: str) -> list[str]:
    return _python("from gpic.cli import app; app(prog_name='gpic')", *args)


STAGE_RUN = ("import sys\nfrom pathlib import Path\nfrom gpic.config import load_config\n"
             "from gpic.layout import Layout\nfrom gpic.stages import {module}\n"
             "{module}.run(Layout(Path(sys.argv[1])), load_config(sys.argv[2]))")


def commands(results: Path, config: Path) -> dict[str, list[str]]:
    """Each step as its job or command runs it (the workflow's scripts call the stage's `run`)."""
    r, c, layout = str(results), str(config), Layout(results)
    return {
        "partition": _python(STAGE_RUN.format(module="partition"), r, c),
        "dedup": _python(STAGE_RUN.format(module="dedup"), r, c),
        "summary": _gpic("summary", "--results", r, "--json"),
        "publish": _python(STAGE_RUN.format(module="publish"), r, c),
        "verify": _gpic("verify", r),
        "report": _gpic("report", "--results", r, "--config", c, "--out", str(layout.report)),
        "cost": _gpic("cost", "--results", r, "--config", c, "--out", str(layout.cost)),
        "status": _gpic("status", "--results", r, "--config", c),
    }


def available_mb() -> float:
    """MemAvailable of this machine, MB."""
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


def fit(ns: Iterable[float], ys: Iterable[float]) -> tuple[float, float]:
    """Least squares y = a + b*n; b clamped at 0 (then a is the mean): no step gets cheaper
    with more keys, and noise at small sizes must not extrapolate to a negative cost."""
    n, y = np.asarray(list(ns), float), np.asarray(list(ys), float)
    if len(n) < 2 or len(set(n)) < 2:
        return math.nan, math.nan
    b, a = np.polyfit(n, y, 1)
    if b < 0:
        return float(y.mean()), 0.0
    return float(a), float(b)


def exponent(ns: Iterable[float], ys: Iterable[float]) -> float:
    """Least-squares slope of log y against log n: 1 for linear growth, NaN under two sizes."""
    n, y = np.asarray(list(ns), float), np.asarray(list(ys), float)
    if len(set(n)) < 2 or (y <= 0).any():
        return math.nan
    return float(np.polyfit(np.log(n), np.log(y), 1)[0])


def tar_sha256_s_per_gb(folder: Path, gb: float) -> float:
    """Seconds gpic.identity.file_sha256 takes per GB (1e9 bytes) of a freshly written file of
    `gb` GB (in the page cache: the hashing, not the disk)."""
    path = folder / "sha256-throughput.bin"
    block = np.random.default_rng(0).integers(0, 256, 1 << 24, dtype=np.uint8).tobytes()
    size = max(1, int(gb * 1e9))
    with path.open("wb") as out:
        for start in range(0, size, len(block)):
            out.write(block[: min(len(block), size - start)])
    started = time.perf_counter()
    file_sha256(path)
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds / (size / 1e9)


# ---- the bench --------------------------------------------------------------------------------

def run_size(folder: Path, n: int, shards: int, steps: tuple[str, ...], seed: int, pools: Pools, say: Say,
             earlier: dict[str, dict[int, Measured]]) -> tuple[dict[str, Measured], Synthesizer]:
    """Synthesize a run of n keys in `folder` and measure `steps` on it."""
    results = folder / "results"
    layout = Layout(results)
    started = time.perf_counter()
    sources = write_sources(folder / "sources", n, seed, pools=pools)
    config = bench_config(folder, shards, sources)
    cfg = load_config(config)
    say(f"[{n:,} keys] source manifests written in {time.perf_counter() - started:.0f} s")
    argv, measured = commands(results, config), {}

    def step(name: str, record: bool = True, guess_mb: float = 0.0) -> Measured:
        """Measure a step, unless its peak projected from the sizes measured so far (or
        `guess_mb`) would not fit in the memory this machine has free: then skip it, saying why."""
        projected, free = _projected_mb(earlier.get(name, {}), n, guess_mb), available_mb()
        if projected > 0.9 * free:
            result = Measured(error=f"skipped: projected peak {projected:,.0f} MB, {free:,.0f} MB available")
        else:
            result = measure(argv[name], folder / "logs" / f"{name}.log", folder)
        if record:
            measured[name] = result
            shown = f"FAILED {result.error}" if result.error else "ok"
            say(f"[{n:,} keys] {name}: {result.seconds:.1f} s, peak RSS {result.rss_mb:,.0f} MB, {shown}")
        return result

    part = step("partition", "partition" in steps)
    if part.error:  # nothing else has its inputs
        for name in steps:
            measured.setdefault(name, Measured(error=f"skipped: partition failed ({part.error[:200]})"))
        return measured, Synthesizer(layout, cfg, seed, pools)
    _benchmark(layout.benchmark("partition", "partition"), part.seconds, part.cpu_s, part.rss_mb)
    t = time.perf_counter()
    synth = synthesize_assessed(layout, cfg, seed, pools)
    say(f"[{n:,} keys] fetch, filter, judge and embed tables of {shards} shards written in "
        f"{time.perf_counter() - t:.0f} s")
    ran_dedup = False
    if "dedup" in steps:
        embedded = sum(pq.read_metadata(layout.table("embed", shard_name(i))).num_rows for i in range(shards))
        result = step("dedup", guess_mb=300 + embedded * DEDUP_BYTES_PER_KEY / 2**20)
        ran_dedup = not result.error
        if ran_dedup:
            _benchmark(layout.benchmark("dedup", "dedup"), result.seconds, result.cpu_s, result.rss_mb)
    if not ran_dedup:
        synth.planted_decisions()
    t = time.perf_counter()
    synthesize_captioned(synth)
    say(f"[{n:,} keys] captions, packed shards ({synth.packed:,} samples) and provenance written in "
        f"{time.perf_counter() - t:.0f} s")
    for name in ("summary", "publish", "verify", "report", "cost", "status"):
        if name in steps:
            step(name)
        elif name == "publish" and "verify" in steps:  # verify checks the SHA256SUMS publish writes
            step(name, record=False)
    return measured, synth


def _projected_mb(earlier: dict[int, Measured], n: int, guess_mb: float) -> float:
    """A step's peak at n keys: fitted on the sizes measured so far (proportional to one), else
    the guess."""
    done = {k: m.rss_mb for k, m in earlier.items() if not m.error}
    if len(done) >= 2:
        a, b = fit(done, done.values())
        return a + b * n
    if len(done) == 1:
        (k, rss), = done.items()
        return rss * max(1.0, n / k)
    return guess_mb


def bench_scale(keys: list[int], shards: int = 8000, steps: Iterable[str] = STEPS, work: str | Path | None = None,
                seed: int = 0, tar_gb: float = 1.0, say: Say | None = None) -> dict[str, float | int | str]:
    """Figures of `steps` at each number of keys (seconds and peak RSS MB per step and size),
    the sha256 throughput of tars, and with two or more sizes each step's fit a + b*N
    extrapolated to 110M keys at `shards` shards; the last four figures are the worst step in
    memory and in time. `work`: keep everything there (default: a temporary folder, deleted)."""
    say = say or (lambda line: None)
    asked = set(steps)
    unknown, steps = asked - set(STEPS), tuple(s for s in STEPS if s in asked)
    if unknown or not steps:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    keys = sorted({int(k) for k in keys})
    if not keys or keys[0] < 1:
        raise ValueError("give at least one positive number of keys")
    root = Path(work) if work else Path(tempfile.mkdtemp(prefix="gpic-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    pools = Pools(seed)
    per_size: dict[str, dict[int, Measured]] = {s: {} for s in steps}
    packed_share, json_bytes = math.nan, JSON_BYTES
    try:
        for n in keys:
            folder = root / f"keys-{n}"
            if folder.exists():
                shutil.rmtree(folder)
            measured, synth = run_size(folder, n, shards, steps, seed, pools, say, per_size)
            for name in steps:
                per_size[name][n] = measured.get(name, Measured(error="skipped: not run"))
            if synth.packed:
                packed_share = synth.packed / n
                json_bytes = (synth.packed_bytes / synth.packed) - IMAGE_BYTES - TAR_OVERHEAD
            if not work:
                shutil.rmtree(folder, ignore_errors=True)
        sha_s_per_gb = tar_sha256_s_per_gb(root, tar_gb)
    finally:
        if not work:
            shutil.rmtree(root, ignore_errors=True)
    return figures(keys, shards, steps, per_size, sha_s_per_gb, packed_share, json_bytes)


def figures(keys: list[int], shards: int, steps: tuple[str, ...], per_size: dict[str, dict[int, Measured]],
            sha_s_per_gb: float, packed_share: float, json_bytes: float) -> dict[str, float | int | str]:
    """The bench's figures, names fixed by the steps and sizes asked for; NaN where a step
    failed or was skipped (`failed` names them)."""
    out: dict[str, float | int | str] = {"keys": ",".join(map(str, keys)), "shards": shards}
    for n in keys:
        for name in steps:
            m = per_size[name][n]
            out[f"{name}_s_{n}"] = m.seconds if not m.error else math.nan
            out[f"{name}_rss_mb_{n}"] = m.rss_mb if not m.error else math.nan
    worst_rss, worst_hours = ("none", math.nan), ("none", math.nan)
    for name in steps:
        done = {n: m for n, m in per_size[name].items() if not m.error}
        a_s, b_s = fit(done, (m.seconds for m in done.values()))
        a_mb, b_mb = fit(done, (m.rss_mb for m in done.values()))
        hours, rss_gb = (a_s + b_s * TARGET_KEYS) / 3600, (a_mb + b_mb * TARGET_KEYS) / 1024
        out.update({f"{name}_s_per_mkey": b_s * 1e6, f"{name}_mb_per_mkey": b_mb * 1e6,
                    f"{name}_exponent": exponent(done, (m.seconds for m in done.values())),
                    f"{name}_hours_110m": hours, f"{name}_rss_gb_110m": rss_gb})
        if rss_gb > worst_rss[1] or math.isnan(worst_rss[1]) and not math.isnan(rss_gb):
            worst_rss = (name, rss_gb)
        if hours > worst_hours[1] or math.isnan(worst_hours[1]) and not math.isnan(hours):
            worst_hours = (name, hours)
    tar_tb = packed_share * TARGET_KEYS * (IMAGE_BYTES + json_bytes + TAR_OVERHEAD) / 1e12
    out.update({"tar_sha256_s_per_gb": sha_s_per_gb, "tar_tb_110m": tar_tb,
                "tar_sha256_hours_110m": tar_tb * 1000 * sha_s_per_gb / 3600})
    failed = [f"{name}@{n}" for name in steps for n, m in per_size[name].items() if m.error]
    out["failed"] = ",".join(failed) or "none"
    out.update({"worst_rss_gb_110m": worst_rss[1], "worst_hours_110m": worst_hours[1], "step_rss": worst_rss[0],
                "step_hours": worst_hours[0]})
    return out

