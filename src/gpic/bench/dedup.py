"""What dedup is measured by: `gpic bench dedup-quality` plants copies of real photos and
counts what each layer catches and what it wrongly links; `gpic bench dedup` times the
descriptor search, exact (flat) against the compressed and fp16 IVF indexes, on synthetic
descriptors with planted copies."""

from __future__ import annotations

import hashlib
import io
import logging
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageOps

from gpic.bench import jpeg, photos
from gpic.images import VLM_MAX_SIDE, load_rgb
from gpic.stages.dedup import auto_nlist, cluster, descriptor_pairs, exact_pairs, phash_codes, phash_pairs

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
                  "retina", "moon", "coins", "clock", "brick", "grass", "gravel", "cell", "page", "text")
SHARD = 13_750  # GPIC's mean raw shard: descriptors are streamed one shard at a time


def _crop(image: Image.Image, keep: float) -> Image.Image:
    dx, dy = round(image.width * (1 - keep) / 2), round(image.height * (1 - keep) / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def _resize(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


# Planted copies: the original's JPEG bytes -> a copy's bytes.
TRANSFORMS = {
    "byte copy": lambda data, im: data,
    "jpeg q75": lambda data, im: jpeg(im, 75),
    "jpeg q50": lambda data, im: jpeg(im, 50),
    "jpeg q30": lambda data, im: jpeg(im, 30),
    "resize 80%": lambda data, im: jpeg(_resize(im, 0.8)),
    "resize 50%": lambda data, im: jpeg(_resize(im, 0.5)),
    "crop 95%": lambda data, im: jpeg(_crop(im, 0.95)),
    "crop 90%": lambda data, im: jpeg(_crop(im, 0.90)),
    "hflip": lambda data, im: jpeg(ImageOps.mirror(im)),
    "colour +8%/+15%": lambda data, im: jpeg(ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.08))
                                                          .enhance(1.15)),
}


def quality_photos(demo_dir: Path | None = None) -> dict[str, Image.Image]:
    """Distinct real photos: scikit-image's and matplotlib's shipped photos, or the demo
    corpus's distinct images (crops of the same photos, pairwise separated: hard negatives)."""
    if demo_dir is None:
        import matplotlib.cbook

        found = dict(zip(SKIMAGE_PHOTOS, photos(SKIMAGE_PHOTOS), strict=True))
        found["grace_hopper"] = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
        return found
    demo_dir = Path(demo_dir)
    expected = pd.read_csv(demo_dir / "expected.csv", dtype=str, keep_default_na=False)
    manifests = pd.concat([pd.read_csv(demo_dir / "manifests" / "wikimedia.csv", dtype=str, keep_default_na=False),
                           pd.read_json(demo_dir / "manifests" / "flickr.jsonl", lines=True, dtype=str)])
    rows = expected[expected["expect"] == "packed"].merge(manifests, on=["source", "source_id"])
    return {f"{r.source}:{r.source_id}": load_rgb(Path(r.url.removeprefix("file://")).read_bytes())
            for r in rows.itertuples()}


def dedup_quality(photos: dict[str, Image.Image], config: dict) -> tuple[pd.DataFrame, dict]:
    """Per planted transform: copies caught by each layer alone and removed by the whole
    dedup; and over every pair of distinct photos: links per layer and photos with no
    image kept (a distinct image wrongly removed)."""
    from gpic.stages.embed import load_model
    from gpic.stages.filter import measure

    cfg = config["dedup"]
    rows = []
    for name, photo in sorted(photos.items()):
        original = jpeg(photo)
        decoded = Image.open(io.BytesIO(original)).convert("RGB")
        first = len(rows)
        rows.append({"photo": name, "transform": "original", "data": original, "original": first})
        rows += [{"photo": name, "transform": t, "data": make(original, decoded), "original": first}
                 for t, make in TRANSFORMS.items()]
    table = pd.DataFrame(rows)
    images = [load_rgb(data, VLM_MAX_SIDE) for data in table["data"]]
    detector = load_model(config)
    batch = config["embed"]["batch_size"]
    descriptors = np.concatenate([detector.describe(images[s : s + batch])
                                  for s in range(0, len(images), batch)]).astype(np.float32)
    table = table.assign(key=[f"{i:06d}" for i in range(len(table))], shard="00000", split="train",
                         sha256=[hashlib.sha256(d).hexdigest() for d in table["data"]],
                         phash=[measure(d, config["filter"])["phash"] for d in table["data"]],  # the filter's
                         width=[im.width for im in images], height=[im.height for im in images],
                         descriptor=[d.astype(np.float16).tobytes() for d in descriptors])
    decisions = cluster(table, cfg).set_index("key").reindex(table["key"])
    # each layer alone, every copy against its original
    orig = table["original"].to_numpy()
    codes = np.array([int(h, 16) for h in table["phash"]], dtype=np.uint64)
    hamming = np.bitwise_count(codes ^ codes[orig])
    cosine = (descriptors * descriptors[orig]).sum(axis=1)
    kept = decisions["kept"].to_numpy()
    table = table.assign(exact=table["sha256"].to_numpy() == table["sha256"].to_numpy()[orig],
                         phash_hit=hamming <= cfg["phash_max_distance"], hamming=hamming,
                         descriptor_hit=cosine >= cfg["cosine_min"], cosine=cosine,
                         removed=~(kept & kept[orig]))  # the pair no longer both survive
    copies = table[table["transform"] != "original"]
    report = (copies.groupby("transform", sort=False)
              .agg(copies=("key", "size"), exact=("exact", "sum"), phash=("phash_hit", "sum"),
                   descriptor=("descriptor_hit", "sum"), removed=("removed", "sum"),
                   median_hamming=("hamming", "median"), median_cosine=("cosine", "median"))
              .reset_index())
    # links between images of different photos, per layer, over every image
    photo_of = table["photo"].to_numpy()
    layers = {"exact": exact_pairs(table["sha256"]),
              "phash": phash_pairs(phash_codes(table["phash"]), cfg["phash_max_distance"]),
              "descriptor": descriptor_pairs(lambda: [descriptors], len(table), {**cfg, "index": "flat"})}
    n_photos = len(photos)
    summary = {"photos": n_photos, "copies": len(copies), "caught": int(copies["removed"].sum()),
               **{f"false_links_{layer}": int((photo_of[i] != photo_of[j]).sum())
                  for layer, (i, j, _) in layers.items()},
               "distinct_removed": n_photos - len(set(photo_of[kept])), **chains(decisions)}
    return report, summary


def chains(decisions: pd.DataFrame) -> dict:
    """What chains of links do to these decisions: the largest connected component, and the
    images that removing all but one per component would have lost beyond those removed
    for a direct link to a kept image."""
    components = decisions["cluster"].nunique()
    return {"largest_component": int(decisions["cluster_size"].max()) if len(decisions) else 0,
            "chain_removed": int(len(decisions) - components - (~decisions["kept"]).sum())}


def _planted(path: Path, n: int, dim: int, pairs: int, cosine_min: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random unit descriptors (SSCD spreads its descriptors over the sphere) written as
    fp16, with `pairs` planted copies at cosine uniform in [cosine_min + 0.01, 0.99] and as
    many hard negatives at [cosine_min - 0.02, cosine_min - 0.005], each pair's ends sorted:
    (copies, negatives). Chance cosines of random 512-d vectors stay below about 0.35, so
    without the negatives no false pair could be found even with the threshold off by 0.5."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float16)
    for s in range(0, n, SHARD):
        block = rng.standard_normal((min(SHARD, n - s), dim), dtype=np.float32)
        x[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    ends = rng.choice(n, size=4 * pairs, replace=False).reshape(2 * pairs, 2)
    src = x[ends[:, 0]].astype(np.float32)
    noise = rng.standard_normal(src.shape, dtype=np.float32)
    noise -= (noise * src).sum(axis=1, keepdims=True) * src
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    c = np.concatenate([rng.uniform(cosine_min + 0.01, 0.99, size=pairs),
                        rng.uniform(cosine_min - 0.02, cosine_min - 0.005, size=pairs)])[:, None].astype(np.float32)
    x[ends[:, 1]] = c * src + np.sqrt(1 - c**2) * noise
    x.tofile(path)
    ends = np.sort(ends, axis=1)
    return ends[:pairs], ends[pairs:]


def _phash_search(n: int, pairs: int, max_distance: int, seed: int) -> tuple[float, float]:
    """(seconds, recall) of the perceptual-hash layer over n random 64-bit codes with
    `pairs` planted copies within the Hamming radius."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    ends = np.sort(rng.choice(n, size=(pairs, 2), replace=False), axis=1)
    bits = np.uint64(1) << rng.integers(0, 64, size=(pairs, max_distance)).astype(np.uint64)
    used = np.arange(max_distance) < rng.integers(0, max_distance + 1, size=(pairs, 1))
    codes[ends[:, 1]] = codes[ends[:, 0]] ^ np.bitwise_or.reduce(np.where(used, bits, np.uint64(0)), axis=1)
    hexes = pd.Series([f"{c:016x}" for c in codes.tolist()])
    started = time.perf_counter()
    i, j, _ = phash_pairs(phash_codes(hexes), max_distance)
    seconds = time.perf_counter() - started
    return seconds, _recall(np.stack([i, j], axis=1), ends)[0]


def _peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM starts afresh at exec, while ru_maxrss keeps the
    parent's peak from before the fork."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines()
                    if line.startswith("VmHWM:")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _search(path: str, n: int, dim: int, cfg: dict) -> dict:
    """One search in a fresh process, so that its peak RSS is its own: descriptors read from
    disk one shard at a time, as dedup reads the embed tables."""
    base = _peak_rss_mb()  # the interpreter and imports (torch among them, as in the dedup job)

    def chunks():
        for s in range(0, n, SHARD):
            rows = min(SHARD, n - s)
            yield np.fromfile(path, dtype=np.float16, count=rows * dim, offset=s * dim * 2).reshape(rows, dim)

    phases = logging.getLogger("gpic.stages.dedup")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    lines: list[str] = []
    phases.addHandler(handler)
    phases.setLevel(logging.INFO)
    started = time.perf_counter()
    i, j, _ = descriptor_pairs(chunks, n, cfg)
    seconds = time.perf_counter() - started
    return {"s": seconds, "rss_mb": _peak_rss_mb(), "base_mb": base, "pairs": np.stack([i, j], axis=1),
            "log": lines}


def _in_child(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_search, *args).result()


def _recall(found: np.ndarray, planted: np.ndarray) -> tuple[float, int]:
    """(share of planted copies found, pairs found that are not planted copies: hard
    negatives or chance pairs)."""
    found_set, planted_set = set(map(tuple, found.tolist())), set(map(tuple, planted.tolist()))
    return len(found_set & planted_set) / max(1, len(planted_set)), len(found_set - planted_set)


def bench_dedup(n: int = 1_000_000, dim: int = 512, flat_n: int = 100_000, cosine_min: float = 0.9,
                nlist: int = 0, nprobe: int = 16, copies: float = 0.01, seed: int = 0,
                indexes: tuple[str, ...] = ("ivfpq", "ivf"), neighbours: int = 8
                ) -> tuple[dict[str, float | int], dict[str, list[str]]]:
    """Descriptor search wall time, peak RSS, recall of planted copies, recall of the pairs
    exact search finds in a sample, and false pairs (found pairs that are not planted copies,
    such as the hard negatives just below the threshold), for each of `indexes` over all n
    (the first is ours: `ratio` is the baseline's time over its), against exact IndexFlatIP
    (the baseline) over the first `flat_n` descriptors, its time extrapolated by (n/flat_n)^2
    and its memory linearly when flat_n < n (flat at 1M costs hours on two cores). Also the
    perceptual-hash layer's time and recall over n codes (its multi-index hash is exact). With
    the figures, each index's own log of its phases."""
    flat_n = min(flat_n, n)
    cfg = {"cosine_min": cosine_min, "nprobe": nprobe, "flat_max": 0, "neighbours": neighbours, "scratch": ""}
    figures: dict[str, float | int] = {"n": n, "dim": dim, "nprobe": nprobe}
    phases: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "descriptors.f16"
        planted, negatives = _planted(path, n, dim, max(1, int(n * copies / 2)), cosine_min, seed)
        flat = _in_child(str(path), flat_n, dim, {**cfg, "nlist": 0, "index": "flat"})
        for kind in indexes:
            lists = nlist or auto_nlist(n, kind)
            run = _in_child(str(path), n, dim, {**cfg, "nlist": lists, "index": kind})
            recall, false = _recall(run["pairs"], planted)
            in_sample = run["pairs"][run["pairs"][:, 1] < flat_n]  # against what exact search finds there
            sample_recall = _recall(in_sample, flat["pairs"])[0] if len(flat["pairs"]) else 1.0
            figures |= {f"{kind}_nlist": lists, f"{kind}_s": run["s"], f"{kind}_rss_mb": round(run["rss_mb"]),
                        f"{kind}_recall": recall, f"{kind}_sample_recall": sample_recall, f"{kind}_false_pairs": false}
            figures.setdefault("base_rss_mb", round(run["base_mb"]))
            phases[kind] = run["log"]
    phash_s, phash_recall = _phash_search(n, len(planted), 4, seed)
    flat_recall, flat_false = _recall(flat["pairs"], planted[planted[:, 1] < flat_n])
    scale = n / flat_n
    flat_s = flat["s"] * scale**2
    ours = indexes[0]
    return {**figures, "planted_pairs": len(planted), "hard_negatives": len(negatives),
            "flat_hard_negatives": int((negatives[:, 1] < flat_n).sum()), "nlist": figures[f"{ours}_nlist"],
            "flat_n": flat_n, "flat_measured_s": flat["s"], "flat_rss_measured_mb": round(flat["rss_mb"]),
            "flat_s": flat_s, "flat_rss_mb": round(flat["base_mb"] + (flat["rss_mb"] - flat["base_mb"]) * scale),
            "flat_recall": flat_recall, "flat_false_pairs": flat_false, "extrapolated": int(scale > 1),
            "phash_s": phash_s, "phash_recall": phash_recall, "ratio": flat_s / figures[f"{ours}_s"]}, phases
