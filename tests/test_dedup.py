"""Global dedup: three layers, clusters, and a keep policy that protects the test split."""

from __future__ import annotations

import imagehash
import numpy as np
import pandas as pd

from gpic.dedup import cluster

CFG = {"phash_max_distance": 4, "cosine_min": 0.9}


def table(photos):
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(6, 32)).astype(np.float32)
    descriptors[5] = descriptors[4] + 0.05 * rng.normal(size=32)  # a planted copy for the descriptor layer
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
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
    assert out.loc["k4", "dedup_layer"] == "descriptor" and out.loc["k4", "similarity"] >= 0.9
    assert out["cluster_size"].tolist() == [2, 2, 2, 2, 2, 2]
    assert out["kept"].sum() == 3


def test_thresholds_are_respected(photos):
    strict = cluster(table(photos), {"phash_max_distance": 0, "cosine_min": 0.999})
    assert strict.set_index("key").loc["k4", "kept"]  # the descriptor copy is no longer linked
    assert not strict.set_index("key").loc["k0", "kept"]  # exact copies always are


def test_decisions_are_deterministic(photos):
    t = table(photos)
    shuffled = t.sample(frac=1, random_state=3)
    pd.testing.assert_frame_equal(cluster(t, CFG).reset_index(drop=True), cluster(shuffled, CFG).reset_index(drop=True))
