"""The global dedup stage: exact sha256, perceptual-hash Hamming distance and
copy-detection cosine similarity link images into clusters; each cluster keeps one key
by a deterministic policy that favours the held-out test split (no train/test leakage)."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from gpic.embed import read_descriptors
from gpic.store import read_table, stamp, write_table

log = logging.getLogger(__name__)

LAYERS = ("exact", "phash", "descriptor")  # strongest evidence first
SPLIT_RANK = {"test": 0, "val": 1, "train": 2}


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def exact_pairs(sha: pd.Series) -> list[tuple[int, int, float]]:
    pairs = []
    for positions in sha.groupby(sha.values).indices.values():
        pairs += [(int(positions[0]), int(p), 1.0) for p in positions[1:]]
    return pairs


def _range_pairs(lims: np.ndarray, ids: np.ndarray, sims: np.ndarray) -> list[tuple[int, int, float]]:
    pairs = []
    for i in range(len(lims) - 1):
        for j, s in zip(ids[lims[i] : lims[i + 1]], sims[lims[i] : lims[i + 1]]):
            if i < j:
                pairs.append((i, int(j), float(s)))
    return pairs


def phash_pairs(phashes: pd.Series, max_distance: int) -> list[tuple[int, int, float]]:
    """Pairs within the Hamming radius; similarity = 1 - distance/64."""
    if phashes.empty:
        return []
    codes = np.frombuffer(b"".join(bytes.fromhex(h) for h in phashes), dtype=np.uint8).reshape(len(phashes), 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    lims, dist, ids = index.range_search(codes, max_distance + 1)  # faiss keeps distance < radius
    return _range_pairs(lims, ids, 1 - dist / 64)


def descriptor_pairs(descriptors: np.ndarray, cosine_min: float) -> list[tuple[int, int, float]]:
    """Pairs at or above the cosine threshold (exact inner-product search)."""
    if len(descriptors) == 0:
        return []
    index = faiss.IndexFlatIP(descriptors.shape[1])
    index.add(descriptors)
    lims, sims, ids = index.range_search(descriptors, cosine_min - 1e-6)  # faiss keeps sim > radius
    return _range_pairs(lims, ids, sims)


def cluster(table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Decisions for every embedded key: cluster, kept, duplicate_of, layer, similarity."""
    table = table.reset_index(drop=True)
    edges = {
        "exact": exact_pairs(table["sha256"]),
        "phash": phash_pairs(table["phash"], cfg["phash_max_distance"]),
        "descriptor": descriptor_pairs(read_descriptors(table), cfg["cosine_min"]),
    }
    uf = UnionFind(len(table))
    best: dict[int, tuple[int, str, float]] = {}  # member -> (rank of layer, layer, similarity)
    for rank, layer in enumerate(LAYERS):
        for i, j, sim in edges[layer]:
            uf.union(i, j)
            for k in (i, j):
                if k not in best or (rank, -sim) < (best[k][0], -best[k][2]):
                    best[k] = (rank, layer, sim)
    roots = np.array([uf.find(i) for i in range(len(table))])
    order = table.assign(_root=roots, _split=table["split"].map(SPLIT_RANK),
                         _pixels=-(table["width"] * table["height"]))
    order = order.sort_values(["_root", "_split", "_pixels", "key"])
    kept_of_root = order.groupby("_root")["key"].first()
    size_of_root = order.groupby("_root").size()
    out = table[["key", "shard", "split"]].copy()
    out["cluster"] = kept_of_root.reindex(roots).to_numpy()
    out["cluster_size"] = size_of_root.reindex(roots).to_numpy()
    out["kept"] = out["key"] == out["cluster"]
    out["duplicate_of"] = np.where(out["kept"], "", out["cluster"])
    out["dedup_layer"] = [best[i][1] if i in best and not kept else "" for i, kept in enumerate(out["kept"])]
    out["similarity"] = [best[i][2] if i in best and not kept else np.nan for i, kept in enumerate(out["kept"])]
    log.info("dedup: %d keys, %d removed (%s)", len(out), (~out["kept"]).sum(),
             out.loc[~out["kept"], "dedup_layer"].value_counts().to_dict())
    return out.sort_values("key")


def dedup_corpus(embed_paths: dict[str, str], cfg: dict, decisions_path: str | Path,
                 shard_paths: dict[str, str]) -> pd.DataFrame:
    """Global decisions from every shard's embed table; one slice per shard for the
    per-shard stages downstream."""
    frames = []
    for shard, path in sorted(embed_paths.items()):
        t = read_table(path)
        frames.append(t[t["embed_status"] == "ok"].assign(shard=shard))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    decisions = stamp(cluster(table, cfg), "dedup", cfg)
    write_table(decisions, decisions_path)
    for shard, path in shard_paths.items():
        write_table(decisions[decisions["shard"] == shard], path)
    return decisions
