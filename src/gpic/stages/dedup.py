"""The global dedup stage: exact sha256, perceptual-hash Hamming distance and
copy-detection cosine similarity link pairs of images; in a deterministic keep order that
favours the held-out test split, an image is removed only when it is directly linked to an
image that is kept (or, outside test, to any test image: no train/test leakage).

Memory stays bounded at corpus scale: the small columns of every key are held, but
descriptors are streamed from the per-shard embed tables one shard at a time, into a faiss
index and then again as queries against it."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from gpic.config import Config, DedupConfig
from gpic.identity import shard_name
from gpic.layout import Layout, block_names, block_shards
from gpic.stages import STAGES
from gpic.store import read_table, stamp, write_json, write_table

log = logging.getLogger(__name__)

STAGE = STAGES["dedup"]
LAYERS = ("exact", "phash", "descriptor")  # strongest evidence first
SPLIT_RANK = {"test": 0, "val": 1, "train": 2}
META = ["key", "split", "width", "height", "sha256", "phash"]
DECISIONS = ["key", "shard", "split", "cluster", "cluster_size", "kept", "duplicate_of", "dedup_layer", "similarity"]
COLUMNS = DECISIONS
CONSUMED = ["key", "kept", "duplicate_of", "dedup_layer", "similarity"]  # what caption and provenance read
TRAIN_PER_LIST = 20  # IVF k-means training vectors per list
QUERY_CHUNK = 1 << 20

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, similarity) with i < j
Chunks = Callable[[], Iterable[np.ndarray]]  # a fresh pass over the descriptors, shard by shard


def descriptor_matrix(blobs: list[bytes]) -> np.ndarray:
    """Stored descriptor bytes (the embed stage's fp16) as one (n, d) float16 matrix."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float16)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1)


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


def exact_pairs(sha256: pd.Series) -> Edges:
    """Identical bytes: every member linked to the first key with the same digest."""
    codes = pd.factorize(sha256)[0]
    first = np.unique(codes, return_index=True)[1][codes]
    copy = first != np.arange(len(codes))
    return first[copy].astype(np.int64), np.flatnonzero(copy), np.ones(int(copy.sum()), np.float32)


def phash_pairs(phashes: pd.Series, max_distance: int) -> Edges:
    """Pairs within the Hamming radius; similarity = 1 - distance/64. A multi-index hash (3
    tables of 21 bits, probing keys within max_distance // 3 flipped bits) is exact by the
    pigeonhole principle and avoids the n^2 comparisons of a flat scan (1M random codes: 15 s
    on two cores against ~5 min flat; 16-bit tables fill up and grow quadratically)."""
    n = len(phashes)
    codes = np.frombuffer(bytes.fromhex("".join(phashes)), dtype=np.uint8).reshape(n, 8)
    index = faiss.IndexBinaryMultiHash(64, 3, 21)
    index.nflip = max_distance // 3
    index.add(codes)

    def search(queries):
        lims, dist, ids = index.range_search(queries, max_distance + 1)  # faiss keeps distance < radius
        return lims, 1 - dist / 64, ids

    return _range_pairs(search, (codes[s : s + QUERY_CHUNK] for s in range(0, n, QUERY_CHUNK)), n)


def index_kind(n: int, cfg: DedupConfig) -> str:
    if cfg["index"] != "auto":
        return cfg["index"]
    return "flat" if n <= cfg["flat_max"] else "ivf"


def auto_nlist(n: int) -> int:
    """About 4 sqrt(n) lists (a power of two), never more than the vectors can train."""
    return max(1, min(2 ** round(math.log2(4 * math.sqrt(max(n, 1)))), n // TRAIN_PER_LIST))


def build_index(chunks: Chunks, n: int, dim: int, cfg: DedupConfig) -> faiss.Index:
    """IndexFlatIP (exact) or IVF over fp16 codes (the stored precision, so similarities are
    exact; only the lists searched are approximate), filled shard by shard."""
    if index_kind(n, cfg) == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = min(cfg["nlist"] or auto_nlist(n), n)
        index = faiss.index_factory(dim, f"IVF{nlist},SQfp16",
                                    faiss.METRIC_INNER_PRODUCT)  # an HNSW quantizer lost recall
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter, ivf.cp.min_points_per_centroid = 10, TRAIN_PER_LIST  # enough for coarse lists, and quiet
        ivf.by_residual = False  # fp16 of the vectors themselves: lossless for fp16 descriptors
        sample, need = [], TRAIN_PER_LIST * nlist
        for chunk in chunks():  # shards are random samples of the corpus: the first ones will do
            sample.append(chunk[: need - sum(map(len, sample))].astype(np.float32))
            if sum(map(len, sample)) >= need:
                break
        index.train(np.concatenate(sample))
        ivf.nprobe = min(cfg["nprobe"], nlist)
    for chunk in chunks():
        index.add(chunk.astype(np.float32))
    return index


def descriptor_pairs(chunks: Chunks, n: int, cfg: DedupConfig) -> Edges:
    """Pairs at or above the cosine threshold: one pass adds the shards to the index, a
    second searches each shard against it."""
    dim = next((c.shape[1] for c in chunks() if len(c)), 0)
    if not dim:
        return _unique_pairs([], [], [], n)
    index = build_index(chunks, n, dim, cfg)
    radius = float(np.nextafter(np.float32(cfg["cosine_min"]), np.float32(-1)))  # faiss keeps sim > radius
    return _range_pairs(lambda q: index.range_search(q.astype(np.float32), radius), chunks(), n)


def decide(meta: pd.DataFrame, chunks: Chunks, cfg: DedupConfig) -> pd.DataFrame:
    """Decisions for every key of `meta` (rows in the order `chunks` yields descriptors)."""
    meta = meta.reset_index(drop=True)
    n, edges = len(meta), {}
    for layer, find in (("exact", lambda: exact_pairs(meta["sha256"])),
                        ("phash", lambda: phash_pairs(meta["phash"], cfg["phash_max_distance"])),
                        ("descriptor", lambda: descriptor_pairs(chunks, n, cfg))):
        started = time.perf_counter()
        edges[layer] = find()
        log.info("dedup %s: %d pairs among %d keys in %.1f s", layer, len(edges[layer][0]), n,
                 time.perf_counter() - started)
    return keep(meta, edges)


KEPT, REMOVED, OPEN = 1, 2, 0


def keep_order(meta: pd.DataFrame) -> np.ndarray:
    """Each key's place in the keep policy (0 first): a test member first, then validation,
    then the most pixels, then the smallest key."""
    order = np.lexsort((meta["key"].to_numpy(dtype=object), -(meta["width"].astype(np.int64) * meta["height"]),
                        meta["split"].map(SPLIT_RANK).to_numpy()))
    place = np.empty(len(meta), np.int64)
    place[order] = np.arange(len(meta))
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


def keep(meta: pd.DataFrame, edges: dict[str, Edges]) -> pd.DataFrame:
    """The keep decisions (`keep_decisions`) of all keys, with the direct link that removed
    each removed key: to a kept key by the strongest layer, then the highest similarity, then
    keep order (to a test key that is itself removed only when a non-test key's test links are
    all to removed test keys). `cluster` and `cluster_size` describe the connected component,
    for audit: a component may keep several keys that are not alike themselves."""
    n = len(meta)
    if n == 0:
        return pd.DataFrame(columns=DECISIONS)
    i, j, sim = (np.concatenate([e[k] for e in edges.values()]) for k in range(3))
    layer = np.concatenate([np.full(len(e[0]), r) for r, e in enumerate(edges.values())])
    place = keep_order(meta)
    up, down = np.where(place[i] < place[j], i, j), np.where(place[i] < place[j], j, i)
    test = (meta["split"] == "test").to_numpy()
    kept = keep_decisions(place, test, up, down) == KEPT
    candidate = ~kept[down] & (kept[up] | test[up])
    best = np.lexsort((place[up], -sim, layer, ~kept[up], down))
    best = best[candidate[best]]
    removed, first = np.unique(down[best], return_index=True)
    pick = best[first]
    keys = meta["key"].to_numpy(dtype=object)
    link = pd.DataFrame({"duplicate_of": keys[up[pick]], "dedup_layer": np.array(LAYERS, dtype=object)[layer[pick]],
                         "similarity": np.round(sim[pick].astype(np.float64), 4)}, index=removed).reindex(range(n))
    component = connected_components(coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n)), directed=False)[1]
    by_place = np.argsort(place)
    head = pd.Series(by_place, index=component[by_place]).groupby(level=0).first()  # earliest key per component
    out = pd.DataFrame({
        "key": meta["key"], "shard": meta["shard"], "split": meta["split"],
        "cluster": keys[head.reindex(component).to_numpy()], "cluster_size": np.bincount(component)[component],
        "kept": kept, "duplicate_of": link["duplicate_of"].fillna("").to_numpy(),
        "dedup_layer": link["dedup_layer"].fillna("").to_numpy(), "similarity": link["similarity"].to_numpy(),
    }, columns=DECISIONS)
    log.info("dedup: %d keys, %d removed (%s), largest component %d", n, (~out["kept"]).sum(),
             out.loc[~out["kept"], "dedup_layer"].value_counts().to_dict(), out["cluster_size"].max())
    return out.sort_values(["shard", "key"]).reset_index(drop=True)


def cluster(table: pd.DataFrame, cfg: DedupConfig) -> pd.DataFrame:
    """Decisions for an in-memory table of embedded keys (META, shard and descriptor columns)."""
    table = table.sort_values(["shard", "key"]).reset_index(drop=True)
    descriptors = descriptor_matrix(table["descriptor"].tolist())
    return decide(table, lambda: [descriptors], cfg)


def _embedded(path: str | Path, columns: list[str]) -> pd.DataFrame:
    table = read_table(path, columns=["embed_status", *columns])
    return table[table["embed_status"] == "ok"].drop(columns="embed_status").sort_values("key")


def slice_digest(decisions: pd.DataFrame) -> str:
    """Hash of what the per-shard stages downstream read from a shard's decisions."""
    return hashlib.sha256(decisions[CONSUMED].to_csv(index=False).encode()).hexdigest()


def dedup_corpus(embed_paths: dict[str, str], cfg: DedupConfig, decisions_path: str | Path,
                 shard_paths: dict[str, str], digest_paths: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Global decisions from every shard's embed table, one slice per shard for the per-shard
    stages downstream, and per block of shards a digest of its slices (`digest_paths`: file ->
    shards): the workflow tracks the digest, so a block's captions are redone only when its
    own decisions change, not whenever some other shard is rebuilt."""
    shards = sorted(embed_paths)
    meta = pd.concat([_embedded(embed_paths[s], META).assign(shard=s) for s in shards], ignore_index=True)

    def chunks():
        for shard in shards:
            yield descriptor_matrix(_embedded(embed_paths[shard], ["key", "descriptor"])["descriptor"].tolist())

    decisions = stamp(decide(meta, chunks, cfg), "dedup", cfg)
    by_shard = dict(iter(decisions.groupby("shard")))
    for shard, path in shard_paths.items():
        write_table(by_shard.get(shard, decisions.iloc[:0]), path)
    for path, members in (digest_paths or {}).items():
        write_json({"shards": {s: slice_digest(by_shard.get(s, decisions.iloc[:0])) for s in members}}, path)
    write_table(decisions, decisions_path)  # last: its presence means the job finished
    return decisions


def run(files: Layout, cfg: Config, *, model=None) -> pd.DataFrame:
    """Global decisions over every shard's embed table, one slice per shard and one digest
    per block of shards."""
    shards = [shard_name(i) for i in range(cfg["shards"])]
    blocks = block_names(cfg["shards"], cfg["shards_per_job"])
    return dedup_corpus({s: files.table("embed", s) for s in shards}, cfg["dedup"], files.decisions,
                        {s: files.table("dedup", s) for s in shards},
                        {files.block_digest(b): block_shards(b) for b in blocks})
