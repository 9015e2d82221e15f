"""The global dedup stage: exact sha256, perceptual-hash Hamming distance and
copy-detection cosine similarity link pairs of images; in a deterministic keep order that
favours the held-out test split, an image is removed only when it is directly linked to an
image that is kept (or, outside test, to any test image: no train/test leakage).

Memory stays bounded at corpus scale: the small columns of every key are held, but
descriptors are streamed from the per-shard embed tables one shard at a time, into a faiss
index and then again as queries against it. Above `flat_max` the index holds 4-bit product
codes (32 bytes a descriptor instead of 1 KB) and every candidate pair it proposes is scored
again exactly from the fp16 descriptors, kept meanwhile in a scratch file on local disk."""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from gpic.config import Config, DedupConfig
from gpic.contracts import descriptor_matrix
from gpic.identity import shard_name
from gpic.layout import Layout, block_names, block_shards
from gpic.stages import STAGES
from gpic.store import atomic_path, read_table, with_producer, write_json, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["dedup"]
LAYERS = ("exact", "phash", "descriptor")  # strongest evidence first
SPLIT_RANK = {"test": 0, "val": 1, "train": 2}
META = ["key", "split", "width", "height", "sha256", "phash"]
DECISIONS = ["key", "shard", "split", "cluster", "cluster_size", "kept", "duplicate_of", "dedup_layer", "similarity"]
COLUMNS = DECISIONS
SCHEMA = pa.schema([(c, pa.bool_() if c == "kept" else pa.int64() if c == "cluster_size" else
                     pa.float64() if c == "similarity" else pa.string())
                    for c in [*DECISIONS, "dedup_config_hash", "dedup_version"]])
CONSUMED = ["key", "kept", "duplicate_of", "dedup_layer", "similarity"]  # what caption and provenance read
TRAIN_PER_LIST = 20  # IVF k-means training vectors per list
QUERY_CHUNK = 1 << 20
RESCORE_QUERIES = 1 << 15  # compressed path: queries searched, and their candidates re-scored, at a time
PQ_MIN = 1000  # fewer descriptors than this are searched exactly whatever the index
# Candidates scored at a time. Each row read maps the kernel's fault-around window of the file
# (64 KB of cached pages) into this process until released: 4,096 rows map at most 256 MB.
GATHER_ROWS = 1 << 12

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, similarity) with i < j
Chunks = Callable[[], Iterable[np.ndarray]]  # a fresh pass over the descriptors, shard by shard


def _unique_pairs(i: np.ndarray, j: np.ndarray, sim: np.ndarray, n: int) -> Edges:
    """Each unordered pair once (a search finds it from both ends), self-matches dropped."""
    i, j, sim = np.asarray(i, np.int64), np.asarray(j, np.int64), np.asarray(sim, np.float32)
    other = i != j
    a, b, sim = np.minimum(i, j)[other], np.maximum(i, j)[other], sim[other]
    code = a * n + b
    order = np.lexsort((-sim, code))
    _, first = np.unique(code[order], return_index=True)
    keep = order[first]
    return a[keep], b[keep], sim[keep]


def _range_pairs(search: Callable, chunks: Iterable[np.ndarray], n: int) -> Edges:
    """Self-join by range search, one chunk of queries at a time (rows numbered in order)."""
    found, offset = [], 0
    for chunk in chunks:
        lims, values, ids = search(chunk)
        rows = offset + np.repeat(np.arange(len(chunk)), np.diff(lims).astype(np.int64))
        found.append((rows, ids, values))
        offset += len(chunk)
    if not found:
        return _unique_pairs([], [], [], n)
    return _unique_pairs(*(np.concatenate(parts) for parts in zip(*found)), n)


def exact_pairs(sha256: np.ndarray | pd.Series) -> Edges:
    """Identical bytes: every member linked to the first key with the same digest."""
    _, first, codes = np.unique(np.asarray(sha256), return_index=True, return_inverse=True)
    first = first[codes.ravel()]
    copy = first != np.arange(len(codes))
    return first[copy].astype(np.int64), np.flatnonzero(copy), np.ones(int(copy.sum()), np.float32)


def phash_codes(phashes: Iterable[str]) -> np.ndarray:
    """64-bit hashes, as the filter writes them (16 hex digits), as (n, 8) bytes."""
    return np.frombuffer(bytes.fromhex("".join(phashes)), dtype=np.uint8).reshape(-1, 8)


def phash_pairs(codes: np.ndarray, max_distance: int) -> Edges:
    """Pairs within the Hamming radius; similarity = 1 - distance/64. A multi-index hash (3
    tables of 21 bits, probing keys within max_distance // 3 flipped bits) is exact by the
    pigeonhole principle and avoids the n^2 comparisons of a flat scan (1M random codes: 15 s
    on two cores against ~5 min flat; 16-bit tables fill up and grow quadratically)."""
    n = len(codes)
    index = faiss.IndexBinaryMultiHash(64, 3, 21)
    index.nflip = max_distance // 3
    index.add(codes)

    def search(queries):
        lims, dist, ids = index.range_search(queries, max_distance + 1)  # faiss keeps distance < radius
        return lims, 1 - dist / 64, ids

    return _range_pairs(search, (codes[s : s + QUERY_CHUNK] for s in range(0, n, QUERY_CHUNK)), n)


def search_kind(n: int, cfg: DedupConfig) -> str:
    """The configured index; below PQ_MIN descriptors product codes cannot be trained (16
    centroids per sub-quantizer want many points each) and exact search costs nothing."""
    if cfg["index"] == "ivfpq" and n < PQ_MIN:
        return "flat"
    if cfg["index"] != "auto":
        return cfg["index"]
    return "flat" if n <= cfg["flat_max"] else "ivfpq"


def auto_nlist(n: int, kind: str = "ivf") -> int:
    """About 4 sqrt(n) lists for fp16 codes, sqrt(n) for 4-bit product codes (their lists
    scan some 30 times faster, so fewer, longer lists cost less coarse assignment); a power
    of two, never more than the vectors can train."""
    per_root = 1 if kind == "ivfpq" else 4
    return max(1, min(2 ** round(math.log2(per_root * math.sqrt(max(n, 1)))), n // TRAIN_PER_LIST))


def _training_sample(chunks: Chunks, need: int) -> np.ndarray:
    """The first `need` descriptors: shards are random samples of the corpus, the first ones will do."""
    sample = []
    for chunk in chunks():
        sample.append(chunk[: need - sum(map(len, sample))].astype(np.float32))
        if sum(map(len, sample)) >= need:
            break
    return np.concatenate(sample)


def _coarse(index: faiss.Index) -> faiss.IndexIVF:
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter, ivf.cp.min_points_per_centroid = 10, TRAIN_PER_LIST  # enough for coarse lists, and quiet
    return ivf


def build_search(chunks: Chunks, n: int, dim: int, cfg: DedupConfig) -> faiss.Index:
    """IndexFlatIP (exact) or IVF over fp16 codes (the stored precision, so similarities are
    exact; only the lists searched are approximate), filled shard by shard."""
    if search_kind(n, cfg) == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = min(cfg["nlist"] or auto_nlist(n), n)
        index = faiss.index_factory(dim, f"IVF{nlist},SQfp16",
                                    faiss.METRIC_INNER_PRODUCT)  # an HNSW quantizer lost recall
        ivf = _coarse(index)
        ivf.by_residual = False  # fp16 of the vectors themselves: lossless for fp16 descriptors
        index.train(_training_sample(chunks, TRAIN_PER_LIST * nlist))
        ivf.nprobe = min(cfg["nprobe"], nlist)
    for chunk in chunks():
        index.add(chunk.astype(np.float32))
    return index


def descriptor_pairs(chunks: Chunks, n: int, cfg: DedupConfig) -> Edges:
    """Pairs at or above the cosine threshold: one pass adds the shards to the index, a
    second searches each shard against it."""
    full = chunks
    chunks = lambda: (c for c in full() if len(c))  # noqa: E731 (a shard with no descriptor is (0, 0): no dimension)
    dim = next((c.shape[1] for c in chunks()), 0)
    if not dim:
        return _unique_pairs([], [], [], n)
    if search_kind(n, cfg) == "ivfpq":
        return compressed_pairs(chunks, n, dim, cfg)
    index = build_search(chunks, n, dim, cfg)
    radius = float(np.nextafter(np.float32(cfg["cosine_min"]), np.float32(-1)))  # faiss keeps sim > radius
    return _range_pairs(lambda q: index.range_search(q.astype(np.float32), radius), chunks(), n)


class ScratchDescriptors:
    """The fp16 descriptors, row after row, in one file on local disk: what the compressed
    index's candidates are re-scored with. Read through a mapping whose pages are released
    after each block of rows, so they never add up to the file's size in memory (a cached
    10 GB file otherwise showed as 5.6 GB of this process's peak)."""

    def __init__(self, folder: str, dim: int):
        self.path, self.dim, self.rows = Path(folder) / "descriptors.f16", dim, 0
        self._file = self.path.open("wb")

    def append(self, chunk: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(chunk, dtype=np.float16).tobytes())
        self.rows += len(chunk)

    def close_writing(self) -> None:
        self._file.close()
        with self.path.open("rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if self.rows else None

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.fromfile(self.path, np.float16, (stop - start) * self.dim, offset=start * self.dim * 2
                           ).reshape(-1, self.dim)

    def similarities(self, queries: np.ndarray, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Inner product of each queries[rows[c]] with stored row ids[c], in float32, a block of
        candidates at a time in ascending order of ids (neighbouring rows share pages)."""
        out = np.empty(len(ids), np.float32)
        matrix = np.frombuffer(self._map, np.float16).reshape(self.rows, self.dim)
        order = np.argsort(ids, kind="stable")
        for s in range(0, len(ids), GATHER_ROWS):
            part = order[s : s + GATHER_ROWS]
            out[part] = np.einsum("ij,ij->i", queries[rows[part]].astype(np.float32),
                                  matrix[ids[part]].astype(np.float32))
            self._map.madvise(mmap.MADV_DONTNEED)  # the file's pages stay cached, just not mapped here
        del matrix
        return out


def _rescored(index: faiss.Index, store: ScratchDescriptors, queries: np.ndarray, first: int,
              cfg: DedupConfig) -> Edges:
    """Each query's nearest neighbours by the product codes, scored exactly, kept at or above
    `cosine_min`. Product codes rank a copy far above unrelated images but misjudge the
    similarity itself (a copy at 0.95 is estimated near 0.4 for spread-out descriptors), so
    the candidates are the k nearest, not a radius. A query whose k candidates all pass may
    have more copies (a burst of photos): it is searched again with 4k, until one fails."""
    threshold = np.float32(cfg["cosine_min"])
    k, todo, found = min(cfg["neighbours"], index.ntotal), np.arange(len(queries)), []
    while len(todo):
        ids = index.search(queries[todo].astype(np.float32), k)[1]
        rows = np.repeat(todo, k)
        ids = ids.ravel()
        valid = (ids >= 0) & (ids != first + rows)
        rows, ids = rows[valid], ids[valid]
        sim = store.similarities(queries, rows, ids)
        hit = sim >= threshold
        passed = np.bincount(rows[hit], minlength=len(queries))[todo]
        again = todo[passed >= k - 1] if k < index.ntotal else todo[:0]  # all k but itself passed
        final = ~np.isin(rows, again)
        found.append((first + rows[hit & final], ids[hit & final], sim[hit & final]))
        todo, k = again, min(4 * k, index.ntotal)
    return tuple(np.concatenate(parts) for parts in zip(*found))


def compressed_pairs(chunks: Chunks, n: int, dim: int, cfg: DedupConfig) -> Edges:
    """Pairs at or above the cosine threshold at 10^8 descriptors: an IVF index of 4-bit
    product codes (PQ with fast scan, dim/8 sub-quantizers), the fp16 descriptors copied to a
    scratch file while the index fills, then every shard's rows searched (`_rescored`). Hours
    at 10^8: each phase is logged, the search every 5%."""
    started = time.perf_counter()
    nlist = min(cfg["nlist"] or auto_nlist(n, "ivfpq"), n)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_subquantizers(dim)}x4fs", faiss.METRIC_INNER_PRODUCT)
    ivf = _coarse(index)
    index.train(_training_sample(chunks, max(TRAIN_PER_LIST * nlist, 1 << 16)))
    ivf.nprobe = min(cfg["nprobe"], nlist)
    log.info("ivfpq: %d lists and product codes trained in %.0f s", nlist, time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="gpic-dedup-", dir=cfg["scratch"] or None) as folder:
        store = ScratchDescriptors(folder, dim)
        for chunk in chunks():
            index.add(chunk.astype(np.float32))
            store.append(chunk)
        store.close_writing()
        log.info("ivfpq: %d descriptors coded, fp16 copy in %s, at %.0f s", n, folder, time.perf_counter() - started)
        found = []
        for s in range(0, n, RESCORE_QUERIES):
            found.append(_rescored(index, store, store.read(s, min(n, s + RESCORE_QUERIES)), s, cfg))
            if (s + RESCORE_QUERIES) * 20 // n > s * 20 // n:
                log.info("ivfpq: %d of %d descriptors searched, %d candidate pairs passed, at %.0f s",
                         min(n, s + RESCORE_QUERIES), n, sum(len(f[0]) for f in found), time.perf_counter() - started)
    return _unique_pairs(*(np.concatenate(parts) for parts in zip(*found)), n)


def pq_subquantizers(dim: int) -> int:
    """Sub-vectors of 4 bits: one per 8 dimensions where the dimension count allows (64 for
    SSCD's 512), else the largest even divisor below that (fast scan wants an even count)."""
    return next((m for m in range(max(2, dim // 8), 1, -1) if dim % m == 0 and m % 2 == 0), 1)


class Keys(NamedTuple):
    """The small columns of every key, in (shard, key) order, as compact arrays: about 50 bytes a
    key plus its sha256, where pandas objects took some 350 (40 GB at 110M keys)."""
    key: np.ndarray  # bytes
    shard: np.ndarray  # index into `shards`
    split: np.ndarray  # SPLIT_RANK
    pixels: np.ndarray
    shards: list[str]

    @classmethod
    def of(cls, frame: pd.DataFrame, shards: list[str] | None = None) -> Keys:
        shards = shards if shards is not None else sorted(set(frame["shard"]))
        return cls(np.array([k.encode() for k in frame["key"]], dtype="S"),
                   frame["shard"].map({s: i for i, s in enumerate(shards)}).to_numpy(np.int32),
                   frame["split"].map(SPLIT_RANK).to_numpy(np.int8),
                   frame["width"].to_numpy(np.int64) * frame["height"].to_numpy(np.int64), shards)

    @classmethod
    def concat(cls, parts: list[Keys], shards: list[str]) -> Keys:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0, t)
                     for f, t in (("key", "S1"), ("shard", np.int32), ("split", np.int8), ("pixels", np.int64))),
                   shards)


class Links(NamedTuple):
    """Each key's decision and the direct link that removed it (-1 and NaN when kept)."""
    kept: np.ndarray
    up: np.ndarray  # row of the key it duplicates
    layer: np.ndarray  # index into LAYERS
    similarity: np.ndarray
    head: np.ndarray  # row of the first key in keep order of its connected component
    size: np.ndarray  # keys in that component


def decide(keys: Keys, sha256: np.ndarray, phashes: np.ndarray, chunks: Chunks, cfg: DedupConfig) -> Links:
    """Decisions for every key (descriptors in `chunks` in the order of `keys`)."""
    n, edges = len(keys.key), {}
    for layer, find in (("exact", lambda: exact_pairs(sha256)),
                        ("phash", lambda: phash_pairs(phashes, cfg["phash_max_distance"])),
                        ("descriptor", lambda: descriptor_pairs(chunks, n, cfg))):
        started = time.perf_counter()
        edges[layer] = find()
        log.info("dedup %s: %d pairs among %d keys in %.1f s", layer, len(edges[layer][0]), n,
                 time.perf_counter() - started)
    return link(keys, edges)


KEPT, REMOVED, OPEN = 1, 2, 0


def keep_order(keys: Keys) -> np.ndarray:
    """Each key's place in the keep policy (0 first): a test member first, then validation,
    then the most pixels, then the smallest key."""
    order = np.lexsort((keys.key, -keys.pixels, keys.split))
    place = np.empty(len(order), np.int64)
    place[order] = np.arange(len(order))
    return place


def keep_decisions(place: np.ndarray, test: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """KEPT or REMOVED per key: in keep order (`place`, 0 first), a key is removed when it is
    directly linked to a key already kept, or when it is not a test key and is directly linked
    to any test key. Links run from the earlier key in keep order (`up`) to the later
    (`down`). Never through a chain: with a~b and b~c, b removed for a, c stays unless c~a.

    Vectorised rounds first: each decides every key whose earlier neighbours are all decided
    (bursts of similar photos take two or three). A run of keys each waiting on the one before
    would take a round per key, so once a round decides few keys, the rest go one at a time
    in keep order, over their own links only."""
    n = len(place)
    status = np.full(n, OPEN, np.int8)
    status[down[test[up] & ~test[down]]] = REMOVED
    while (left := int((status == OPEN).sum())) > 0:
        keep = status[down] == OPEN
        up, down = up[keep], down[keep]
        waiting, beaten = np.zeros(n, bool), np.zeros(n, bool)
        waiting[down[status[up] == OPEN]] = True
        beaten[down[status[up] == KEPT]] = True
        undecided = status == OPEN
        status[undecided & beaten] = REMOVED
        status[undecided & ~beaten & ~waiting] = KEPT
        if left - int((status == OPEN).sum()) < max(1000, left // 100):
            break
    keep = status[down] == OPEN
    up, down = up[keep], down[keep]
    by_down = np.argsort(down, kind="stable")
    starts = np.searchsorted(down[by_down], np.arange(n + 1))
    ups = up[by_down].tolist()
    for key in sorted(np.flatnonzero(status == OPEN).tolist(), key=place.__getitem__):
        earlier = ups[starts[key]:starts[key + 1]]
        status[key] = REMOVED if any(status[u] == KEPT for u in earlier) else KEPT
    return status


def link(keys: Keys, edges: dict[str, Edges]) -> Links:
    """The keep decisions (`keep_decisions`) of all keys, with the direct link that removed
    each removed key: to a kept key by the strongest layer, then the highest similarity, then
    keep order (to a test key that is itself removed only when a non-test key's test links are
    all to removed test keys). The connected component is kept for audit: a component may
    keep several keys that are not alike themselves."""
    n = len(keys.key)
    i, j, sim = (np.concatenate([e[k] for e in edges.values()]).astype(t)
                 for k, t in enumerate((np.int64, np.int64, np.float32)))
    layer = np.concatenate([np.full(len(e[0]), r) for r, e in enumerate(edges.values())]).astype(np.int8)
    place = keep_order(keys)
    up, down = np.where(place[i] < place[j], i, j), np.where(place[i] < place[j], j, i)
    test = keys.split == SPLIT_RANK["test"]
    kept = keep_decisions(place, test, up, down) == KEPT
    candidate = ~kept[down] & (kept[up] | test[up])
    best = np.lexsort((place[up], -sim, layer, ~kept[up], down))
    best = best[candidate[best]]
    removed, first = np.unique(down[best], return_index=True)
    pick = best[first]
    to, by, similarity = np.full(n, -1, np.int64), np.full(n, -1, np.int8), np.full(n, np.nan)
    to[removed], by[removed] = up[pick], layer[pick]
    similarity[removed] = np.round(sim[pick].astype(np.float64), 4)
    component = connected_components(coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n)), directed=False)[1]
    head = np.full(component.max(initial=-1) + 1, n, np.int64)
    np.minimum.at(head, component, place)  # earliest place per component, then its row
    head = np.argsort(place)[head[component]] if n else head
    links = Links(kept, to, by, similarity, head, np.bincount(component)[component] if n else np.zeros(0, np.int64))
    log.info("dedup: %d keys, %d removed (%s), largest component %d", n, (~kept).sum(),
             dict(zip(LAYERS, np.bincount(by[removed], minlength=len(LAYERS)).tolist())), links.size.max(initial=0))
    return links


def frame(keys: Keys, links: Links, lo: int, hi: int) -> pd.DataFrame:
    """The DECISIONS table of rows lo..hi (one shard's slice when the rows are in shard order)."""
    def text(rows: np.ndarray) -> list[str]:
        return [k.decode() for k in keys.key[rows].tolist()]

    rows = np.arange(lo, hi)
    up, layer = links.up[rows], links.layer[rows]
    linked = up >= 0
    duplicate_of = np.full(len(rows), "", dtype=object)
    duplicate_of[linked] = text(up[linked])
    return pd.DataFrame({
        "key": text(rows), "shard": [keys.shards[s] for s in keys.shard[rows].tolist()],
        "split": np.array(list(SPLIT_RANK), dtype=object)[keys.split[rows]],
        "cluster": text(links.head[rows]), "cluster_size": links.size[rows].astype(np.int64),
        "kept": links.kept[rows], "duplicate_of": duplicate_of,
        "dedup_layer": np.array([*LAYERS, ""], dtype=object)[np.where(linked, layer, len(LAYERS))],
        "similarity": links.similarity[rows],
    }, columns=DECISIONS)


def keep(meta: pd.DataFrame, edges: dict[str, Edges]) -> pd.DataFrame:
    """Decisions (`link`) of an in-memory table of keys (key, shard, split, width, height)."""
    if len(meta) == 0:
        return pd.DataFrame(columns=DECISIONS)
    keys = Keys.of(meta.reset_index(drop=True))
    return frame(keys, link(keys, edges), 0, len(meta)).sort_values(["shard", "key"]).reset_index(drop=True)


def cluster(table: pd.DataFrame, cfg: DedupConfig) -> pd.DataFrame:
    """Decisions for an in-memory table of embedded keys (META, shard and descriptor columns)."""
    table = table.sort_values(["shard", "key"]).reset_index(drop=True)
    if table.empty:
        return pd.DataFrame(columns=DECISIONS)
    descriptors = descriptor_matrix(table["descriptor"].tolist())
    keys = Keys.of(table)
    links = decide(keys, table["sha256"].to_numpy(), phash_codes(table["phash"]), lambda: [descriptors], cfg)
    return frame(keys, links, 0, len(table))


def _embedded(path: str | Path, columns: list[str]) -> pd.DataFrame:
    table = read_table(path, columns=["embed_status", *columns])
    return table[table["embed_status"] == "ok"].drop(columns="embed_status").sort_values("key")


def slice_digest(decisions: pd.DataFrame) -> str:
    """Hash of what the per-shard stages downstream read from a shard's decisions."""
    return hashlib.sha256(decisions[CONSUMED].to_csv(index=False).encode()).hexdigest()


def dedup_corpus(embed_paths: dict[str, str], cfg: DedupConfig, decisions_path: str | Path,
                 shard_paths: dict[str, str], digest_paths: dict[str, list[str]] | None = None) -> int:
    """Global decisions from every shard's embed table, one slice per shard for the per-shard
    stages downstream, and per block of shards a digest of its slices (`digest_paths`: file ->
    shards): the workflow tracks the digest, so a block's captions are redone only when its
    own decisions change, not whenever some other shard is rebuilt. The tables are written
    shard by shard, never gathered; returns the number of keys decided."""
    shards = sorted(embed_paths)
    parts, sha256, phashes = [], [], []
    for shard in shards:
        meta = _embedded(embed_paths[shard], META).assign(shard=shard)
        parts.append(Keys.of(meta, shards))
        sha256.append(np.array([h.encode() for h in meta["sha256"]], dtype="S"))
        phashes.append(phash_codes(meta["phash"]))
        del meta
    keys = Keys.concat(parts, shards)
    del parts

    def chunks():
        for shard in shards:
            yield descriptor_matrix(_embedded(embed_paths[shard], ["key", "descriptor"])["descriptor"].tolist())

    sha = np.concatenate(sha256) if sha256 else np.zeros(0, "S1")
    del sha256
    links = decide(keys, sha, np.concatenate(phashes) if phashes else np.zeros((0, 8), np.uint8), chunks, cfg)
    del sha
    bounds = np.searchsorted(keys.shard, np.arange(len(shards) + 1))
    digests = {}
    with atomic_path(decisions_path) as tmp, pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as everything:
        for s, shard in enumerate(shards):
            part = with_producer(frame(keys, links, bounds[s], bounds[s + 1]), "dedup", cfg)
            if shard in shard_paths:
                write_table(part, shard_paths[shard], schema=SCHEMA)
            digests[shard] = slice_digest(part)
            everything.write_table(pa.Table.from_pandas(part, schema=SCHEMA, preserve_index=False))
        empty = with_producer(pd.DataFrame(columns=DECISIONS), "dedup", cfg)
        for shard in set(shard_paths) - set(shards):
            write_table(empty, shard_paths[shard], schema=SCHEMA)
        for path, members in (digest_paths or {}).items():
            write_json({"shards": {s: digests.get(s) or slice_digest(empty) for s in members}}, path)
    return len(keys.key)  # decisions.parquet renamed last: its presence means the job finished


def run(files: Layout, cfg: Config, *, model=None) -> int:
    """Global decisions over every shard's embed table, one slice per shard and one digest
    per block of shards."""
    shards = [shard_name(i) for i in range(cfg["shards"])]
    blocks = block_names(cfg["shards"], cfg["shards_per_job"])
    return dedup_corpus({s: files.table("embed", s) for s in shards}, cfg["dedup"], files.decisions,
                        {s: files.table("dedup", s) for s in shards},
                        {files.block_digest(b): block_shards(b) for b in blocks})
