"""`gpic bench loader`: our streaming loader against webdataset's usual PIL pipeline."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.transforms as T
import webdataset as wds
from torch.utils.data import DataLoader

from gpic.bench import best_of, synthetic_shard
from gpic.loader import make_loader, resolve_shards
from gpic.stages.pack import pack


def synthetic_shards(folder: Path, shards: int, per_shard: int) -> list[str]:
    """Packed shards of synthetic 479x587 JPEGs (GPIC's mean size), for benchmarks and tests."""
    paths = []
    for i in range(shards):
        inputs = synthetic_shard(folder / f"inputs_{i}", per_shard, seed=i)
        tar = folder / "train" / f"gpic_train_{i:05d}.tar"
        pack([inputs], "train", "full", tar, tar.with_suffix(".parquet"))
        paths.append(str(tar))
    return paths


def bench_loader(shards: list[str], workers: int = 2, synthetic: int = 0, size: int = 256, batch_size: int = 64,
                 repeat: int = 3) -> dict[str, float | int]:
    """Images/s at size x size of our loader and of webdataset's usual pipeline (decode("pil"),
    torchvision Resize + CenterCrop + PILToTensor) on the same shards: one core
    (num_workers=0, one torch thread), then `workers` DataLoader workers. With `synthetic` N,
    missing shards are replaced by max(2, workers) shards of N synthetic images each."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            urls = resolve_shards(shards)
        except FileNotFoundError:
            if not synthetic:
                raise
            urls = synthetic_shards(Path(tmp), max(2, workers), synthetic)
        transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.PILToTensor()])

        def baseline(num_workers: int) -> DataLoader:
            pipeline = (wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
                        .to_tuple("jpg;jpeg;png;webp", "json").map_tuple(transform, lambda r: r["captions"]["long"]))
            return DataLoader(pipeline, batch_size=batch_size, num_workers=num_workers)

        def ours(num_workers: int) -> DataLoader:
            return make_loader(urls, batch_size=batch_size, num_workers=num_workers, size=size)

        counts: dict[str, int] = {}

        def run(label: str, build: Callable[[int], DataLoader], num_workers: int) -> Callable[[], None]:
            def consume() -> None:
                batches = build(num_workers)
                counts[label] = sum(len(b["key"] if isinstance(b, dict) else b[1]) for b in batches)
            return consume

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            runs = (("ours", ours, 0), ("baseline", baseline, 0), ("ours_workers", ours, workers),
                    ("baseline_workers", baseline, workers))
            seconds = {label: best_of(run(label, build, n), repeat) for label, build, n in runs}
        finally:
            torch.set_num_threads(threads)
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the loaders read different numbers of images: {counts}")
    images = counts["ours"]
    return {"images": images, "shards": len(urls), "workers": workers, "ours_images_per_s": images / seconds["ours"],
            "baseline_images_per_s": images / seconds["baseline"], "ratio": seconds["baseline"] / seconds["ours"],
            "ours_workers_images_per_s": images / seconds["ours_workers"],
            "baseline_workers_images_per_s": images / seconds["baseline_workers"],
            "ours_s": seconds["ours"], "baseline_s": seconds["baseline"]}
