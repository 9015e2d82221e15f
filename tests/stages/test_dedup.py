"""Dedup: the embed stage's descriptors, the three global layers, clusters and the keep policy
that protects the test split, the exact and IVF searches, per-block digests that spare
other blocks a rebuild, and the measured quality and scale benches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpic.bench.dedup import chains
from gpic.cli import app
from gpic.config import validate_config
from gpic.inference.copy_detector import CopyDetector
from gpic.stages.dedup import (
    KEPT,
    cluster,
    dedup_corpus,
    descriptor_pairs,
    keep,
    keep_decisions,
    phash_codes,
    phash_pairs,
)
from gpic.stages.embed import read_descriptors
from gpic.store import read_table, write_table


def config(**dedup) -> dict:
    """The schema's defaults, with overrides."""
    return validate_config({"sources": ["unused.csv"], "shards": 4, "judge": {"model": "m"},
                            "embed": {"model": "m"}, "caption": {"model": "m"}, "dedup": dedup})


CFG = config(cosine_min=0.9)["dedup"]


def unit(rng, n, dim=32):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng, x, cosine):
    """A unit vector at exactly `cosine` to each row of x."""
    noise = unit(rng, len(x), x.shape[1])
    noise -= (noise * x).sum(axis=1, keepdims=True) * x
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return cosine * x + np.sqrt(1 - cosine**2) * noise


def table(photos):
    rng = np.random.default_rng(0)
    descriptors = unit(rng, 6)
    descriptors[5] = near(rng, descriptors[4:5], 0.95)[0]  # a planted copy for the descriptor layer
    astronaut, coffee = photos["astronaut"], photos["coffee"]
    rows = [
        # key, split, sha, image, size
        ("k0", "train", "s0", astronaut, (512, 512)),
        ("k1", "test", "s0", astronaut, (512, 512)),  # exact copy in test: test wins
        ("k2", "train", "s2", coffee, (600, 400)),
        ("k3", "train", "s3", coffee.resize((480, 320)), (480, 320)),  # resized copy: larger k2 wins
        ("k4", "train", "s4", photos["chelsea"], (451, 300)),
        ("k5", "val", "s5", photos["rocket"], (427, 640)),  # descriptor-only copy of k4; val beats train
    ]
    return pd.DataFrame({
        "key": [r[0] for r in rows], "shard": "00000", "split": [r[1] for r in rows],
        "sha256": [r[2] for r in rows], "phash": [str(imagehash.phash(r[3])) for r in rows],
        "width": [r[4][0] for r in rows], "height": [r[4][1] for r in rows],
        "descriptor": [d.astype(np.float16).tobytes() for d in descriptors],
    })


def test_layers_clusters_and_keep_policy(photos):
    out = cluster(table(photos), CFG).set_index("key")
    assert out.loc["k1", "kept"] and not out.loc["k0", "kept"]
    assert out.loc["k0", "duplicate_of"] == "k1" and out.loc["k0", "dedup_layer"] == "exact"
    assert out.loc["k0", "similarity"] == 1.0
    assert out.loc["k2", "kept"] and out.loc["k3", "duplicate_of"] == "k2"
    assert out.loc["k3", "dedup_layer"] == "phash"
    assert out.loc["k5", "kept"] and out.loc["k4", "duplicate_of"] == "k5"
    assert out.loc["k4", "dedup_layer"] == "descriptor" and 0.94 < out.loc["k4", "similarity"] < 0.96
    assert out["cluster_size"].tolist() == [2, 2, 2, 2, 2, 2]
    assert out["kept"].sum() == 3
    kept = out[out["kept"]]
    assert (kept[["duplicate_of", "dedup_layer"]] == "").all().all() and kept["similarity"].isna().all()


def test_thresholds_are_respected(photos):
    strict = cluster(table(photos), {**CFG, "phash_max_distance": 0, "cosine_min": 0.999}).set_index("key")
    assert strict.loc["k4", "kept"]  # the descriptor copy is no longer linked
    assert not strict.loc["k0", "kept"]  # exact copies always are


def test_decisions_are_deterministic(photos):
    t = table(photos)
    shuffled = t.sample(frac=1, random_state=3)
    pd.testing.assert_frame_equal(cluster(t, CFG), cluster(shuffled, CFG))


def linked(splits: list[str], links: list[tuple[int, int]], pixels: list[int] | None = None) -> pd.DataFrame:
    """Decisions for keys k0, k1, ... whose only links are the given descriptor pairs."""
    n = len(splits)
    meta = pd.DataFrame({"key": [f"k{k}" for k in range(n)], "shard": "00000", "split": splits,
                         "width": pixels or [100] * n, "height": 100})
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    edges = (np.array([a for a, _ in links]), np.array([b for _, b in links]), np.full(len(links), 0.95, np.float32))
    return keep(meta, {"exact": none, "phash": none, "descriptor": edges}).set_index("key")


def test_a_chain_never_removes_an_image_not_directly_linked_to_a_kept_one():
    """k0~k1~k2~k3 (each only to the next, k0 largest): k1 goes for k0, but k2 is not like k0
    and stays, so k3 goes for k2. Connected components would have kept k0 alone."""
    out = linked(["train"] * 4, [(0, 1), (1, 2), (2, 3)], pixels=[400, 300, 200, 100])
    assert out["kept"].tolist() == [True, False, True, False]
    assert out.loc["k1", ["duplicate_of", "dedup_layer"]].tolist() == ["k0", "descriptor"]
    assert out.loc["k3", "duplicate_of"] == "k2" and out.loc["k3", "similarity"] == 0.95
    assert (out["cluster"] == "k0").all() and (out["cluster_size"] == 4).all()
    assert chains(out) == {"largest_component": 4, "chain_removed": 1}  # what `bench dedup-quality` reports


def test_two_photos_joined_by_one_weak_link_both_stay():
    """Photo k0 with copy k1, photo k2 with copy k3, and one link k1~k3 between the copies:
    both photos are kept, each copy removed for its own photo."""
    out = linked(["train"] * 4, [(0, 1), (2, 3), (1, 3)], pixels=[400, 300, 399, 200])
    assert out["kept"].tolist() == [True, False, True, False]
    assert out["duplicate_of"].tolist() == ["", "k0", "", "k2"]


def test_every_image_linked_to_a_test_image_leaves_train_and_val():
    """k0 (test) is kept, k1 (test) goes for it; k2 (train) and k3 (val) are linked only to the
    removed test key k1, and still go: no train or val image like a test image survives."""
    out = linked(["test", "test", "train", "val", "train"], [(0, 1), (1, 2), (1, 3), (3, 4)])
    assert out["kept"].tolist() == [True, False, False, False, True]  # k4: its only link is to a removed val key
    assert out.loc["k2", "duplicate_of"] == "k1" and out.loc["k3", "duplicate_of"] == "k1"


def test_a_held_out_image_wins_over_a_larger_copy():
    """Split ranks before pixels: a smaller test image beats its larger val and train copies,
    a smaller val image its larger train copy (as in the demo, where a 269,841-pixel train copy
    is linked to a 172,780-pixel test image)."""
    out = linked(["train", "test", "val"], [(0, 1), (0, 2), (1, 2)], pixels=[2698, 1727, 2000])
    assert out["kept"].tolist() == [False, True, False]
    assert out["duplicate_of"].tolist() == ["k1", "", "k1"]
    val_train = linked(["train", "val"], [(0, 1)], pixels=[5000, 100])
    assert val_train["kept"].tolist() == [False, True]
    within = linked(["train", "train"], [(0, 1)], pixels=[100, 5000])  # same split: the most pixels
    assert within["kept"].tolist() == [False, True]
    tie = linked(["train", "train"], [(0, 1)], pixels=[100, 100])  # then the smaller key
    assert tie["kept"].tolist() == [True, False]


def greedy(n: int, order: list[int], test: list[bool], links: set[tuple[int, int]]) -> list[bool]:
    """The keep policy as its definition reads, one key at a time (the reference)."""
    kept = [False] * n
    place = {k: p for p, k in enumerate(order)}
    for k in order:
        earlier = [o for a, b in links for o, me in ((a, b), (b, a)) if me == k and place[o] < place[k]]
        kept[k] = not any(kept[o] for o in earlier) and (test[k] or not any(test[o] for o in earlier))
    return kept


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.permutations(range(n)), st.lists(st.booleans(), min_size=n, max_size=n),
    st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] != e[1]), max_size=3 * n))))
def test_keep_decisions_match_the_one_key_at_a_time_definition(case):
    n, order, test, links = case
    order = sorted(order, key=lambda k: not test[k])  # the keep order puts test keys first
    place = np.empty(n, np.int64)
    place[order] = np.arange(n)
    i = np.array([a for a, _ in links], np.int64)
    j = np.array([b for _, b in links], np.int64)
    up, down = np.where(place[i] < place[j], i, j), np.where(place[i] < place[j], j, i)
    got = keep_decisions(place, np.array(test), up, down) == KEPT
    assert got.tolist() == greedy(n, order, test, links)


def test_a_long_chain_is_decided_without_a_loop_per_key():
    """100k keys in one chain, each linked to the next: half are kept, in a few seconds."""
    n = 100_000
    down = np.arange(1, n)
    status = keep_decisions(np.arange(n), np.zeros(n, bool), down - 1, down)
    assert (status[::2] == KEPT).all() and (status[1::2] != KEPT).all()


def test_phash_multi_index_hash_is_exact():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    flips = rng.integers(0, 8, size=200)  # near copies at Hamming distances 0..7
    for k, f in enumerate(flips):
        codes[200 + k] = codes[k] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, f, replace=False)))
    hexes = pd.Series([f"{int(c):016x}" for c in codes])
    distance = np.bitwise_count(codes[:, None] ^ codes[None, :])
    for radius in (0, 3, 4, 7):
        i, j, sim = phash_pairs(phash_codes(hexes), radius)
        brute = {(a, b) for a, b in zip(*np.nonzero(np.triu(distance <= radius, k=1)))}
        assert set(zip(i.tolist(), j.tolist())) == brute
        assert np.allclose(sim, 1 - distance[i, j] / 64)


def synthetic_descriptors(n=3000, pairs=100, cosine=0.93, seed=3):
    rng = np.random.default_rng(seed)
    x = unit(rng, n, 64)
    ends = rng.choice(n, size=(pairs, 2), replace=False)
    x[ends[:, 1]] = near(rng, x[ends[:, 0]], cosine)
    x = x.astype(np.float16)
    return x, {tuple(sorted(map(int, e))) for e in ends}


def test_flat_finds_every_planted_copy_and_ivf_agrees_when_exhaustive():
    x, planted = synthetic_descriptors()
    shards = lambda: (x[s : s + 700] for s in range(0, len(x), 700))  # noqa: E731 - streamed shard by shard
    flat = descriptor_pairs(shards, len(x), {**CFG, "index": "flat"})
    assert set(zip(flat[0].tolist(), flat[1].tolist())) == planted
    assert np.all(np.abs(flat[2] - 0.93) < 0.01)
    everything = descriptor_pairs(shards, len(x), {**CFG, "index": "ivf", "nlist": 16, "nprobe": 16})
    assert [a.tolist() for a in everything[:2]] == [a.tolist() for a in flat[:2]]
    assert np.allclose(everything[2], flat[2], atol=1e-5)  # fp16 codes: the stored precision, exact
    probed = descriptor_pairs(shards, len(x), {**CFG, "index": "ivf", "nlist": 16, "nprobe": 2})
    assert set(zip(probed[0].tolist(), probed[1].tolist())) <= planted


def pairs_of(edges):
    return set(zip(edges[0].tolist(), edges[1].tolist()))


def test_product_codes_rescored_find_what_flat_finds_with_exact_similarities(tmp_path):
    """ivfpq proposes candidates from 4-bit codes and scores them again from the fp16 scratch
    copy: the pairs and similarities are flat's, and the scratch file is gone afterwards."""
    x, planted = synthetic_descriptors()
    shards = lambda: (x[s : s + 700] for s in range(0, len(x), 700))  # noqa: E731
    flat = descriptor_pairs(shards, len(x), {**CFG, "index": "flat"})
    pq = descriptor_pairs(shards, len(x), {**CFG, "index": "ivfpq", "nlist": 16, "nprobe": 16,
                                           "scratch": str(tmp_path)})
    assert pairs_of(pq) == pairs_of(flat) == planted
    assert np.allclose(pq[2], flat[2], atol=1e-6)
    assert list(tmp_path.iterdir()) == []


def test_product_codes_widen_the_search_for_a_burst_of_copies():
    """40 copies of one photo (780 linked pairs) with 4 candidates per descriptor: every
    descriptor whose candidates all pass is searched again wider, so no pair of the burst is
    cut off; distinct descriptors stay unlinked."""
    rng = np.random.default_rng(8)
    x = unit(rng, 2000, 64)
    x[100:140] = near(rng, np.repeat(x[99:100], 40, axis=0), 0.985)  # pairwise about 0.97
    x = x.astype(np.float16)
    shards = lambda: (x[s : s + 500] for s in range(0, len(x), 500))  # noqa: E731
    flat = descriptor_pairs(shards, len(x), {**CFG, "index": "flat"})
    pq = descriptor_pairs(shards, len(x), {**CFG, "index": "ivfpq", "nlist": 8, "nprobe": 8, "neighbours": 4})
    assert len(pairs_of(flat)) == 41 * 40 // 2
    assert pairs_of(pq) == pairs_of(flat)


def test_auto_searches_exactly_up_to_flat_max_and_with_product_codes_above():
    from gpic.stages.dedup import search_kind

    assert search_kind(CFG["flat_max"], CFG) == "flat"
    assert search_kind(CFG["flat_max"] + 1, CFG) == "ivfpq"
    assert search_kind(10, {**CFG, "index": "ivf"}) == "ivf"
    assert search_kind(999, {**CFG, "index": "ivfpq"}) == "flat"  # too few to train product codes


def embed_table(keys, descriptors, split="train", sha=None):
    return pd.DataFrame({"key": keys, "embed_status": "ok", "embed_reason": "",
                         "phash": [f"{hash(k) & (2**64 - 1):016x}" for k in keys],
                         "descriptor": [d.astype(np.float16).tobytes() for d in descriptors],
                         "split": split, "sha256": sha or keys, "width": 640, "height": 480})


def corpus(tmp_path, x, extra=None):
    """Three shards of embed tables; shard 00000 holds keys a0.., a copy of a0 sits in 00001."""
    tables = {"00000": embed_table([f"a{i}" for i in range(4)], x[:4]),
              "00001": embed_table([f"b{i}" for i in range(4)],
                                   np.concatenate([near(np.random.default_rng(5), x[:1], 0.97), x[5:8]])),
              "00002": embed_table([f"c{i}" for i in range(3)], x[8:11])}
    if extra is not None:
        tables["00002"] = pd.concat([tables["00002"], extra])
    tables["00002"].loc[len(tables["00002"])] = {"key": "c_failed", "embed_status": "failed", "embed_reason": "x"}
    paths = {}
    for shard, t in tables.items():
        paths[shard] = str(tmp_path / "embed" / f"{shard}.parquet")
        write_table(t, paths[shard])
    out = {s: str(tmp_path / "dedup" / f"{s}.parquet") for s in tables}
    digests = {str(tmp_path / "blocks" / "00000-00001.json"): ["00000", "00001"],
               str(tmp_path / "blocks" / "00002-00002.json"): ["00002"]}
    decided = dedup_corpus(paths, CFG, tmp_path / "dedup" / "decisions.parquet", out, digests)
    decisions = read_table(tmp_path / "dedup" / "decisions.parquet")
    assert decided == len(decisions)
    return decisions, out, list(digests)


def test_corpus_streams_shards_and_writes_slices_and_digests(tmp_path):
    x = unit(np.random.default_rng(4), 12)
    decisions, slices, digests = corpus(tmp_path, x)
    assert len(decisions) == 11 and "c_failed" not in set(decisions["key"])  # only embedded keys are decided
    d = decisions.set_index("key")
    assert d.loc["b0", "duplicate_of"] == "a0" and d.loc["b0", "dedup_layer"] == "descriptor"  # across shards
    for shard, path in slices.items():
        assert set(read_table(path)["key"]) == set(decisions.loc[decisions["shard"] == shard, "key"])
    assert set(json.loads(Path(digests[0]).read_text())["shards"]) == {"00000", "00001"}


def test_corpus_decisions_are_the_same_with_product_codes(tmp_path):
    """The whole dedup over embed tables: the compressed path decides exactly as exact search
    (with 1,200 more distinct images and a few copies among them: product codes need a
    thousand descriptors to train)."""
    rng = np.random.default_rng(4)
    x, more = unit(rng, 12), unit(rng, 1200)
    more[600:610] = near(rng, more[:10], 0.93)
    extra = embed_table([f"d{i:04d}" for i in range(1200)], more)
    flat, _, _ = corpus(tmp_path / "flat", x, extra)
    global CFG
    exact, CFG = CFG, {**CFG, "index": "ivfpq", "nlist": 4}
    try:
        pq, _, _ = corpus(tmp_path / "pq", x, extra)
    finally:
        CFG = exact
    assert (~flat["kept"]).sum() == 11
    columns = ["key", "shard", "kept", "duplicate_of", "dedup_layer", "similarity", "cluster", "cluster_size"]
    pd.testing.assert_frame_equal(pq[columns], flat[columns])


def test_rebuilding_another_shard_leaves_a_blocks_decisions_and_digest(tmp_path):
    """Shard 00002 rebuilt with one more distinct image: the first block's slices and digest
    are byte-identical; with a test-split copy of a0 added instead, they change (a0 now loses)."""
    x = unit(np.random.default_rng(4), 14)
    _, slices, digests = corpus(tmp_path, x)
    before = {p: Path(p).read_bytes() for p in [slices["00000"], slices["00001"], digests[0]]}
    corpus(tmp_path, x, extra=embed_table(["c_new"], x[12:13]))
    assert before == {p: Path(p).read_bytes() for p in before}
    assert read_table(slices["00002"])["key"].tolist()[-1] == "c_new"
    decisions, _, _ = corpus(tmp_path, x, extra=embed_table(["c_test"], x[:1], split="test", sha=["a0"]))
    assert decisions.set_index("key").loc["a0", "duplicate_of"] == "c_test"
    assert Path(digests[0]).read_bytes() != before[digests[0]]


@pytest.mark.slow
def test_workflow_recaptions_only_blocks_whose_decisions_changed(tmp_path):
    """After dedup reruns, a block whose digest kept its checksum is not captioned again
    (Snakemake compares the checksums of small inputs); a block whose digest changed is."""
    from gpic.bench.dag import _build_everything, _dag_config, _snakemake

    settings = yaml.safe_load(_dag_config(tmp_path, 8, 4).read_text())
    _build_everything(tmp_path, 8, 4, settings["splits"]["val_shards"], settings["splits"]["test_shards"])
    blocks = tmp_path / "results" / "dedup" / "blocks"
    for digest in blocks.iterdir():
        digest.write_text(json.dumps({"shards": {digest.stem: "abc"}}))
    _snakemake(tmp_path, "--touch", "--cores", "1", "--forcerun", "caption")  # record what caption jobs read
    time.sleep(1)
    (blocks / "00000-00003.json").write_bytes((blocks / "00000-00003.json").read_bytes())  # rewritten, same bytes
    (blocks / "00004-00007.json").write_text('{"shards": {"00004": "changed"}}')
    (tmp_path / "results" / "dedup" / "decisions.parquet").touch()
    plan = _snakemake(tmp_path, "-n")
    assert "output: results/done/caption/00004-00007.json" in plan
    assert "output: results/done/caption/00000-00003.json" not in plan


def test_copy_detector_resizes_to_a_square_and_batches_any_shapes(tiny_models, photos):
    detector = CopyDetector(tiny_models["copy_detector"])
    images = [photos["coffee"], photos["astronaut"], photos["rocket"], photos["coffee"].resize((300, 200))]
    assert tuple(detector.transform(photos["coffee"]).shape) == (3, 320, 320)  # SSCD's skew_320, no crop
    batched = detector.describe(images)
    assert detector.forward_calls == 1
    assert batched.dtype == np.float16 and batched.shape == (4, 256)
    assert np.allclose(np.linalg.norm(batched.astype(np.float32), axis=1), 1, atol=1e-2)
    one_by_one = np.concatenate([detector.describe([im]) for im in images])
    assert np.allclose(batched.astype(np.float32), one_by_one.astype(np.float32), atol=2e-3)


def test_read_descriptors_is_the_stored_fp16():
    x = unit(np.random.default_rng(6), 3).astype(np.float16)
    t = pd.DataFrame({"descriptor": [v.tobytes() for v in x] + [None]})
    assert np.array_equal(read_descriptors(t), x.astype(np.float32))


def test_quality_on_planted_copies_of_real_photos(tiny_models, capsys):
    """The per-transform table of what each layer catches (printed), with the tiny detector:
    descriptor recall says nothing about SSCD here, the hashes' does."""
    from gpic.bench.dedup import dedup_quality, quality_photos

    cfg = config()
    cfg["embed"]["model"] = str(tiny_models["copy_detector"])
    report, summary = dedup_quality(quality_photos(), cfg)
    with capsys.disabled():
        print("\n" + report.to_string(index=False) + "\n" + json.dumps(summary))
    r = report.set_index("transform")
    assert summary["distinct_removed"] == 0 and summary["false_links_exact"] == summary["false_links_phash"] == 0
    copies = r["copies"]
    assert (r.loc["byte copy", ["exact", "removed"]] == copies["byte copy"]).all()
    for name in ("jpeg q75", "jpeg q50", "jpeg q30", "resize 80%", "resize 50%"):
        # the filter's pHash (from its 128x128-pixel working image, what embed records) misses one
        # of 18 heavy re-encodes or resizes at 4 bits; the descriptor removes it all the same
        assert r.loc[name, "removed"] == copies[name] and r.loc[name, "phash"] >= copies[name] - 1, name
    assert r.loc["hflip", "phash"] == 0  # a perceptual hash does not see a mirror image


def test_bench_dedup_command_ends_with_figures():
    result = CliRunner().invoke(app, ["bench", "dedup", "--n", "3000", "--flat-n", "1500", "--dim", "64",
                                      "--nprobe", "4"])
    assert result.exit_code == 0, result.output
    figures = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    assert figures["n"] == "3000" and figures["flat_n"] == "1500" and figures["extrapolated"] == "1"
    assert figures["planted_pairs"] == figures["hard_negatives"] == "15"
    assert float(figures["flat_recall"]) == 1.0 and float(figures["ivf_recall"]) > 0.5
    assert float(figures["ivfpq_recall"]) > 0.9 and float(figures["ivfpq_sample_recall"]) > 0.9
    assert figures["flat_false_pairs"] == figures["ivf_false_pairs"] == figures["ivfpq_false_pairs"] == "0"
    assert figures["nlist"] == figures["ivfpq_nlist"]  # ours is the first index
    assert {"ratio", "ivf_s", "ivfpq_s", "flat_s", "ivf_rss_mb", "ivfpq_rss_mb", "flat_rss_mb"} <= set(figures)
    assert float(figures["ratio"]) == pytest.approx(float(figures["flat_s"]) / float(figures["ivfpq_s"]), rel=1e-3)
    assert all(np.isfinite(float(figures[k])) and float(figures[k]) > 0 for k in ("ratio", "ivf_s", "flat_s"))


@pytest.mark.parametrize("margin,false_pairs", [(0.0, 0), (0.03, 40)])
def test_bench_dedup_hard_negatives_sit_just_below_the_threshold(tmp_path, margin, false_pairs):
    """The scale bench's "0 false pairs" can fail: its hard negatives are found as soon as
    the search threshold is 0.03 too low, while every planted copy is found at the threshold."""
    from gpic.bench.dedup import _planted, _recall, _search

    path = tmp_path / "d.f16"
    copies, negatives = _planted(path, 4000, 64, 40, 0.9, seed=3)
    assert len(copies) == len(negatives) == 40 and len(set(copies.ravel()) | set(negatives.ravel())) == 160
    found = _search(str(path), 4000, 64, {"cosine_min": 0.9 - margin, "index": "flat", "flat_max": 0})["pairs"]
    assert _recall(found, copies) == (1.0, false_pairs)
    assert _recall(found, negatives)[0] == (margin > 0)



@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_a_shard_with_nothing_embedded_between_others_is_decided_around(tmp_path, index):
    """A shard whose every fetch failed has no descriptor (a host down for a whole shard):
    the shards around it are still searched, and a copy across it still found."""
    x = unit(np.random.default_rng(6), 8)
    tables = {"00000": embed_table(["a0", "a1", "a2", "a3"], x[:4]),
              "00001": embed_table(["f0"], np.zeros((1, 32))).assign(embed_status="failed", embed_reason="x"),
              "00002": embed_table(["c0", "c1"], np.concatenate([near(np.random.default_rng(7), x[:1], 0.97), x[5:6]]))}
    paths = {}
    for shard, table in tables.items():
        paths[shard] = str(tmp_path / "embed" / f"{shard}.parquet")
        write_table(table, paths[shard])
    out = {s: str(tmp_path / "dedup" / f"{s}.parquet") for s in tables}
    cfg = {**CFG, "index": index, "nlist": 2, "nprobe": 2}
    assert dedup_corpus(paths, cfg, tmp_path / "decisions.parquet", out) == 6
    decisions = read_table(tmp_path / "decisions.parquet").set_index("key")
    assert decisions.loc["c0", "duplicate_of"] == "a0" and len(read_table(out["00001"])) == 0
