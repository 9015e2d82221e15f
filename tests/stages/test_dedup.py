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
from typer.testing import CliRunner

from gpic.cli import app
from gpic.config import validate_config
from gpic.inference.copy_detector import CopyDetector
from gpic.stages.dedup import cluster, dedup_corpus, descriptor_pairs, phash_pairs
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
    assert out.loc["k0", "similarity"] == 1.0 and out.loc["k0", "linked_to"] == "k1"
    assert out.loc["k2", "kept"] and out.loc["k3", "duplicate_of"] == "k2"
    assert out.loc["k3", "dedup_layer"] == "phash"
    assert out.loc["k5", "kept"] and out.loc["k4", "duplicate_of"] == "k5"
    assert out.loc["k4", "dedup_layer"] == "descriptor" and 0.94 < out.loc["k4", "similarity"] < 0.96
    assert out["cluster_size"].tolist() == [2, 2, 2, 2, 2, 2]
    assert out["kept"].sum() == 3
    kept = out[out["kept"]]
    assert (kept[["duplicate_of", "linked_to", "dedup_layer"]] == "").all().all() and kept["similarity"].isna().all()


def test_thresholds_are_respected(photos):
    strict = cluster(table(photos), {**CFG, "phash_max_distance": 0, "cosine_min": 0.999}).set_index("key")
    assert strict.loc["k4", "kept"]  # the descriptor copy is no longer linked
    assert not strict.loc["k0", "kept"]  # exact copies always are


def test_decisions_are_deterministic(photos):
    t = table(photos)
    shuffled = t.sample(frac=1, random_state=3)
    pd.testing.assert_frame_equal(cluster(t, CFG), cluster(shuffled, CFG))


def test_a_chain_removes_to_one_kept_key_and_names_the_link():
    """a - b by phash, b - c by descriptor only: one cluster; c records the kept key a and
    the link (to b) that put it there."""
    rng = np.random.default_rng(1)
    d = unit(rng, 3)
    d[2] = near(rng, d[1:2], 0.95)[0]
    t = pd.DataFrame({"key": ["a", "b", "c"], "shard": "00000", "split": ["test", "train", "train"],
                      "sha256": ["1", "2", "3"], "phash": ["0000000000000000", "0000000000000001", "ffffffffffffffff"],
                      "width": 100, "height": 100, "descriptor": [v.astype(np.float16).tobytes() for v in d]})
    out = cluster(t, CFG).set_index("key")
    assert out["kept"].tolist() == [True, False, False] and (out["cluster"] == "a").all()
    assert out.loc["b", ["duplicate_of", "linked_to", "dedup_layer"]].tolist() == ["a", "a", "phash"]
    assert out.loc["c", ["duplicate_of", "linked_to", "dedup_layer"]].tolist() == ["a", "b", "descriptor"]


def test_phash_multi_index_hash_is_exact():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    flips = rng.integers(0, 8, size=200)  # near copies at Hamming distances 0..7
    for k, f in enumerate(flips):
        codes[200 + k] = codes[k] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, f, replace=False)))
    hexes = pd.Series([f"{int(c):016x}" for c in codes])
    distance = np.bitwise_count(codes[:, None] ^ codes[None, :])
    for radius in (0, 3, 4, 7):
        i, j, sim = phash_pairs(hexes, radius)
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
    return dedup_corpus(paths, CFG, tmp_path / "dedup" / "decisions.parquet", out, digests), out, list(digests)


def test_corpus_streams_shards_and_writes_slices_and_digests(tmp_path):
    x = unit(np.random.default_rng(4), 12)
    decisions, slices, digests = corpus(tmp_path, x)
    assert len(decisions) == 11 and "c_failed" not in set(decisions["key"])  # only embedded keys are decided
    d = decisions.set_index("key")
    assert d.loc["b0", "duplicate_of"] == "a0" and d.loc["b0", "dedup_layer"] == "descriptor"  # across shards
    for shard, path in slices.items():
        assert set(read_table(path)["key"]) == set(decisions.loc[decisions["shard"] == shard, "key"])
    assert set(json.loads(Path(digests[0]).read_text())["shards"]) == {"00000", "00001"}


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


def test_copy_detector_keeps_the_aspect_ratio_and_batches_by_shape(tiny_models, photos):
    detector = CopyDetector(tiny_models["copy_detector"])
    images = [photos["coffee"], photos["astronaut"], photos["rocket"], photos["coffee"].resize((300, 200))]
    assert tuple(detector.transform(photos["coffee"]).shape) == (3, 288, 432)  # short side 288, no crop
    batched = detector.describe(images)
    assert batched.dtype == np.float16 and batched.shape == (4, 256)
    assert np.allclose(np.linalg.norm(batched.astype(np.float32), axis=1), 1, atol=1e-2)
    one_by_one = np.concatenate([detector.describe([im]) for im in images])
    assert np.allclose(batched.astype(np.float32), one_by_one.astype(np.float32), atol=2e-3)
    cropped = CopyDetector(tiny_models["copy_detector"], center_crop=True)
    assert tuple(cropped.transform(photos["coffee"]).shape) == (3, 288, 288)


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
        assert r.loc[name, "phash"] == r.loc[name, "removed"] == copies[name], name
    assert r.loc["hflip", "phash"] == 0  # a perceptual hash does not see a mirror image


def test_bench_dedup_command_ends_with_figures():
    result = CliRunner().invoke(app, ["bench", "dedup", "--n", "3000", "--flat-n", "1500", "--dim", "64",
                                      "--nprobe", "4"])
    assert result.exit_code == 0, result.output
    figures = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    assert figures["n"] == "3000" and figures["flat_n"] == "1500" and figures["extrapolated"] == "1"
    assert float(figures["flat_recall"]) == 1.0 and float(figures["ivf_recall"]) > 0.5
    assert {"ratio", "ivf_s", "flat_s", "ivf_rss_mb", "flat_rss_mb"} <= set(figures)

