"""The training loader: every sample once per epoch across ranks and real DataLoader workers,
a seeded order, exact mid-epoch resume, corrupt samples skipped and counted, uint8 images at
the target size, fixed or mixed caption levels."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gpic.bench.loader import synthetic_shards
from gpic.cli import app
from gpic.loader import PackedDataset, decode_image, make_loader
from gpic.store import read_table, read_tar, write_tar

# Synthetic shards repeat keys from shard to shard, so a sample is its key and its pixels.
SHARDS, PER_SHARD = 3, 12


def ident(sample: dict) -> tuple[str, str]:
    return sample["key"], hashlib.sha1(sample["image"].numpy().tobytes()).hexdigest()[:12]


def batch_idents(batch: dict) -> list[tuple[str, str]]:
    return [ident({"key": k, "image": image}) for k, image in zip(batch["key"], batch["image"])]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("shards")
    synthetic_shards(folder, SHARDS, PER_SHARD)
    return str(folder / "train")


def dataset(shards: str, **options) -> PackedDataset:
    return PackedDataset(shards, **{"size": 32, "shuffle_buffer": 8, **options})


@pytest.mark.slow
def test_each_sample_once_across_two_ranks_of_two_workers(demo):
    packed = demo / "results" / "packed"
    # 8 train shards split whole; the single val shard is split by sample index.
    for split, source in (("train", str(packed / "train")), ("validation", "full")):
        loaders = [make_loader(source, card=str(packed), split=split, batch_size=8, num_workers=2, size=32,
                               rank=rank, world_size=2) for rank in range(2)]
        keys = [key for loader in loaders for batch in loader for key in batch["key"]]
        folder = packed / ("val" if split == "validation" else split)
        expected = [key for tar in folder.glob("*.tar") for key in read_table(tar.with_suffix(".parquet"))["key"]]
        assert len(keys) == len(set(keys)) and sorted(keys) == sorted(expected), split
        assert sum(loader.dataset.skipped for loader in loaders) == 0


def test_order_is_fixed_by_seed_and_epoch(shards):
    def epoch(seed: int, number: int = 0) -> list:
        data = dataset(shards, seed=seed)
        data.set_epoch(number)
        return [ident(s) for s in data]

    first = epoch(0)
    assert len(first) == SHARDS * PER_SHARD and len(set(first)) == len(first)
    assert epoch(0) == first
    for other in (epoch(1), epoch(0, number=1)):
        assert other != first and sorted(other) == sorted(first)


@pytest.mark.parametrize("world_size", [1, 4])  # 4 consumers > 3 shards: split by sample index
@pytest.mark.parametrize("cut", [1, 5, 13, 30])  # 30 is in the buffer's final drain
def test_resume_yields_exactly_the_remaining_samples(shards, world_size, cut):
    rank = world_size - 1
    full = [ident(s) for s in dataset(shards, rank=rank, world_size=world_size)]
    cut = min(cut, len(full) - 1)
    first = dataset(shards, rank=rank, world_size=world_size)
    stream = iter(first)
    seen = [ident(next(stream)) for _ in range(cut)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    resumed = dataset(shards, rank=rank, world_size=world_size)
    resumed.load_state_dict(state)
    assert seen + [ident(s) for s in resumed] == full


def test_resume_with_workers_and_refusing_other_worker_counts(shards):
    loader = make_loader(shards, batch_size=4, num_workers=2, size=32, shuffle_buffer=8)
    everything = [i for batch in loader for i in batch_idents(batch)]
    loader = make_loader(shards, batch_size=4, num_workers=2, size=32, shuffle_buffer=8)
    seen = []
    for batch in loader:  # stop after 3 batches; prefetched ones are read again after resume
        seen += batch_idents(batch)
        if len(seen) == 12:
            break
    state = loader.state_dict()
    with pytest.raises(ValueError, match="num_workers=2"):
        other = make_loader(shards, batch_size=4, num_workers=1, size=32, shuffle_buffer=8)
        other.load_state_dict(state)
        next(iter(other))
    with pytest.raises(ValueError, match="shuffle_buffer"):
        make_loader(shards, batch_size=4, num_workers=2, size=32, shuffle_buffer=16).load_state_dict(state)
    resumed = make_loader(shards, batch_size=4, num_workers=2, size=32, shuffle_buffer=8)
    resumed.load_state_dict(state)
    rest = [i for batch in resumed for i in batch_idents(batch)]
    assert Counter(seen + rest) == Counter(everything) and len(everything) == SHARDS * PER_SHARD


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    tar = synthetic_shards(tmp_path, 1, 6)[0]
    members = read_tar(tar)
    images = sorted(name for name in members if name.endswith(".jpg"))
    members[images[1]] = b"\xff\xd8\xff\xe0 not a jpeg at all" * 10
    members[images[3].replace(".jpg", ".json")] = b"{not json"
    members["../escape.jpg"] = members[images[0]]  # refused, never read
    write_tar(tar, members.items())
    data = dataset(str(tmp_path / "train"))
    keys = [s["key"] for s in data]
    assert sorted(keys) == sorted(name[:-4] for i, name in enumerate(images) if i not in (1, 3))
    assert data.skipped == 2 and data.state_dict()["position"] == {"0": [6, 2]}


def test_images_are_uint8_at_the_target_size(shards):
    sample = next(iter(dataset(shards, size=(48, 64))))
    assert sample["image"].shape == (3, 48, 64) and sample["image"].dtype == torch.uint8
    batch = next(iter(make_loader(shards, batch_size=5, num_workers=0, size=40)))
    assert batch["image"].shape == (5, 3, 40, 40) and batch["image"].dtype == torch.uint8
    # the same pixels as PIL's antialiased resize of the centre crop, at full and reduced decode
    members = read_tar(sorted(Path(shards).glob("*.tar"))[0])
    photo = Image.open(io.BytesIO(next(data for name, data in members.items() if name.endswith(".jpg"))))
    for scale, size in ((1, 256), (4, 256)):
        image = photo.resize((photo.width * scale, photo.height * scale))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95)
        top = (image.height - image.width) // 2
        reference = np.asarray(Image.open(buffer).convert("RGB").crop((0, top, image.width, top + image.width))
                               .resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
        ours = decode_image(buffer.getvalue(), (size, size)).numpy()
        assert np.abs(ours.astype(int) - reference).mean() < 1


def test_caption_level_fixed_or_mixed(shards):
    fixed = list(dataset(shards, caption="short"))
    assert {s["level"] for s in fixed} == {"short"} and all(s["caption"].startswith("short caption") for s in fixed)
    mixed = list(dataset(shards, caption={"label": 1, "long": 3}, seed=5))
    levels = Counter(s["level"] for s in mixed)
    assert set(levels) == {"label", "long"} and levels["long"] > levels["label"]
    assert all(s["caption"].startswith(f"{s['level']} caption") for s in mixed)
    assert [s["level"] for s in dataset(shards, caption={"label": 1, "long": 3}, seed=5)] == [s["level"] for s in mixed]
    with pytest.raises(ValueError, match="caption"):
        dataset(shards, caption="longest")


def test_bad_inputs_are_named(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="gpic_train_00099.tar"):
        dataset([f"{shards}/gpic_train_00000.tar", f"{shards}/gpic_train_00099.tar"])
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: nano\n  data_files: []\n---\n")
    with pytest.raises(ValueError, match="unknown tier 'huge'.*nano"):
        dataset("huge", card=str(tmp_path))


def test_bench_loader_command_ends_with_figures():
    result = CliRunner().invoke(app, ["bench", "loader", "missing/folder", "--synthetic", "4", "--workers", "1",
                                      "--size", "32", "--batch-size", "4", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    figures = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    assert {"ours_images_per_s", "baseline_images_per_s", "ratio", "ours_workers_images_per_s",
            "baseline_workers_images_per_s", "ours_s", "baseline_s"} <= set(figures)
    assert figures["images"] == "8"
