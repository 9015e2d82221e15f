"""The training loader: every sample once per epoch across ranks and real DataLoader workers,
a seeded order, exact mid-epoch resume, corrupt samples skipped and counted, uint8 images at
the target size, fixed or mixed caption levels."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image
from PIL.JpegImagePlugin import JpegImageFile
from torchvision.io import ImageReadMode, decode_jpeg
from typer.testing import CliRunner

from gpic import loader
from gpic.bench.loader import synthetic_shards
from gpic.cli import app
from gpic.images import load_rgb, orientation
from gpic.loader import PackedDataset, decode_image, jpeg_header, make_loader
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


# EXIF orientation -> the PIL transpose that stores an image so that it displays upright.
STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
# (height, width) for coffee (600x400), upright or turned: torchvision at full scale (cropping an odd
# margin, 301 pixels), PIL draft at 1/2
FULL, DRAFT = (320, 239), (128, 96)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_orientation(data: bytes, turn: int, **options) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = turn
    return encode(Image.open(io.BytesIO(data)), "JPEG", quality=95, exif=exif.tobytes(), **options)


def normal_form(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """What the stages see (`load_rgb` at full resolution), centre-cropped and resized the way
    the loader does it."""
    image = load_rgb(data)
    height, width = size
    scale = max(height / image.height, width / image.width)
    crop_w, crop_h = min(image.width, round(width / scale)), min(image.height, round(height / scale))
    left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
    crop = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BILINEAR)
    return np.asarray(crop).transpose(2, 0, 1)


def upright_tensor(data: bytes, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's own decode turned upright, then centre-cropped and resized: what the
    loader does on the stored frame before it turns the small result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        upright = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB,
                              apply_exif_orientation=True)
    (height, width), (h, w) = size, upright.shape[1:]
    scale = max(height / h, width / w)
    crop_h, crop_w = min(h, round(height / scale)), min(w, round(width / scale))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = upright[None, :, top:top + crop_h, left:left + crop_w]
    return F.interpolate(crop, size=size, mode="bilinear", antialias=True)[0]


def difference(ours: torch.Tensor, reference: np.ndarray) -> float:
    """Mean absolute difference in uint8 levels: about 1 for the same picture decoded and
    resized two ways, 15 to 90 for the picture mirrored or sideways."""
    assert ours.shape == reference.shape and ours.dtype == torch.uint8
    return float(np.abs(ours.numpy().astype(int) - reference).mean())


@pytest.fixture
def decoders(monkeypatch) -> Counter:
    """Counts the images that went to torchvision (`full`) and to PIL (`pil`)."""
    counts = Counter()
    full, pil = loader.decode_jpeg, loader.normalise
    monkeypatch.setattr(loader, "decode_jpeg", lambda *a, **k: counts.update(["full"]) or full(*a, **k))
    monkeypatch.setattr(loader, "normalise", lambda image: counts.update(["pil"]) or pil(image))
    return counts


@pytest.mark.parametrize("size", [FULL, DRAFT], ids=["full", "draft"])
def test_exif_orientation_is_applied_as_in_the_stages(photos, decoders, size):
    upright = photos["coffee"]
    for turn, method in STORED_AS.items():
        stored = upright if method is None else upright.transpose(method)
        data = with_orientation(encode(stored, "JPEG", quality=95), turn)
        assert jpeg_header(data) == (stored.width, stored.height, 3, turn)
        ours = decode_image(data, size)
        assert difference(ours, normal_form(data, size)) < 1.5, turn
        if size == FULL:  # turning after the resize, the crop falls where it falls on the upright image
            assert (ours.int() - upright_tensor(data, size).int()).abs().max() <= 1, turn
        assert difference(ours, normal_form(encode(upright, "JPEG", quality=95), size)) < 3, turn
        if turn != 1:  # the image as stored, not turned upright, is far outside the tolerance
            assert difference(ours, normal_form(encode(stored, "JPEG", quality=95), size)) > 15, turn
    assert decoders == {"full" if size == FULL else "pil": 8}


def test_turned_jpeg_is_drafted_to_cover_the_turned_target(photos, monkeypatch):
    """Stored 300x451 and turned to 451x300, a 24x96 target needs 1/2 scale; the stored frame
    alone would allow 1/4, then upscale."""
    requested = []
    draft = JpegImageFile.draft
    monkeypatch.setattr(JpegImageFile, "draft", lambda im, mode, size: requested.append(size) or draft(im, mode, size))
    data = with_orientation(encode(photos["chelsea"].transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95), 6)
    ours = decode_image(data, (24, 96))
    assert requested == [(64, 96)] and difference(ours, normal_form(data, (24, 96))) < 5


def test_transparent_cmyk_and_16_bit_images_match_the_stages(photos, decoders):
    photo = photos["coffee"]
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))  # transparent at the top, opaque at the bottom
    palette = photo.quantize(64)
    darkest = int(np.argmin(np.asarray(palette.getpalette()[:192]).reshape(64, 3).sum(axis=1)))
    palette.paste(darkest, (0, 0, 300, 200))
    grey16 = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    assert grey16.mode == "I;16"
    images = {"rgba png": encode(rgba, "PNG"), "la png": encode(rgba.convert("LA"), "PNG"),
              "palette png": encode(palette, "PNG", transparency=darkest), "16-bit png": encode(grey16, "PNG"),
              "cmyk jpeg": encode(photo.convert("CMYK"), "JPEG", quality=95),
              "grey jpeg": encode(photo.convert("L"), "JPEG", quality=95)}
    for name, data in images.items():
        for size in (FULL, DRAFT):
            ours = decode_image(data, size)
            assert difference(ours, normal_form(data, size)) < 1.5, (name, size)
            if "png" in name:  # without the normal form (alpha dropped, 16 bits clipped) it differs
                plain = Image.open(io.BytesIO(data)).convert("RGB").resize(size[::-1], Image.BILINEAR)
                assert difference(ours, np.asarray(plain).transpose(2, 0, 1)) > 15, (name, size)
    assert decoders == {"full": 1, "pil": 11}  # CMYK JPEGs stay with PIL


def tiff(order: str, entries: list[tuple[int, int, int, bytes]], count: int | None = None) -> bytes:
    """An APP1 Exif payload whose IFD0 holds `entries` (tag, type, count, 4-byte value)."""
    end = "<" if order == "II" else ">"
    body = struct.pack(f"{end}H", len(entries) if count is None else count)
    body += b"".join(struct.pack(f"{end}HHL", tag, kind, n) + value for tag, kind, n, value in entries)
    return b"Exif\0\0" + order.encode() + struct.pack(f"{end}HL", 42, 8) + body


@pytest.mark.parametrize("order", ["II", "MM"])
def test_jpeg_header_reads_orientation_as_pil_does(photos, order):
    jpeg = encode(photos["astronaut"].resize((64, 48)), "JPEG")
    end = "<" if order == "II" else ">"
    short6 = struct.pack(f"{end}HH", 6, 0)
    payloads = {
        "short": tiff(order, [(0x010F, 2, 4, b"Cam\0"), (0x0112, 3, 1, short6)]),
        "long": tiff(order, [(0x0112, 4, 1, struct.pack(f"{end}L", 8))]),
        "signed short": tiff(order, [(0x0112, 8, 1, short6)]),
        "absent": tiff(order, [(0x010F, 2, 4, b"Cam\0")]),
        "out of range": tiff(order, [(0x0112, 3, 1, struct.pack(f"{end}HH", 9, 0))]),
        "two values, the first read": tiff(order, [(0x0112, 3, 2, struct.pack(f"{end}HH", 5, 6))]),
        "values past the end": tiff(order, [(0x0112, 3, 3, struct.pack(f"{end}L", 8))]),
        "unknown type skipped": tiff(order, [(0x0112, 99, 1, short6), (0x0112, 3, 1, short6)]),
        "bytes": tiff(order, [(0x0112, 1, 1, b"\x06\0\0\0")]),
        "ifd cut short": tiff(order, [(0x0112, 3, 1, short6)], count=40),
        "ifd past the end": tiff(order, [])[:10] + struct.pack(f"{end}L", 1 << 30),
        "bad byte order": b"Exif\0\0XX" + tiff(order, [(0x0112, 3, 1, short6)])[8:],
        "truncated header": tiff(order, [(0x0112, 3, 1, short6)])[:11],
        "empty": b"Exif\0\0",
        "twice prefixed": b"Exif\0\0" + tiff(order, [(0x0112, 3, 1, short6)]),
    }
    rng = np.random.default_rng(0)
    base = payloads["short"]
    for k in range(300):  # random bytes in the TIFF header and IFD, but for the orientation's type
        noisy = bytearray(base)
        for at in rng.choice([i for i in range(6, len(base)) if i not in (32, 33)], 3, replace=False):
            noisy[at] = rng.integers(0, 256)
        payloads[f"noise {k}"] = bytes(noisy)
    for name, payload in payloads.items():
        data = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about the corrupt ones
            expected = orientation(Image.open(io.BytesIO(data)))
        assert jpeg_header(data) == (64, 48, 3, expected if expected in range(1, 9) else 1), name


def test_xmp_orientation_and_headers_that_do_not_parse(photos):
    jpeg = encode(photos["chelsea"], "JPEG", quality=95)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    data = encode(Image.open(io.BytesIO(jpeg)), "JPEG", quality=95, xmp=xmp)
    assert jpeg_header(data).orientation == 8 == orientation(Image.open(io.BytesIO(data)))
    assert difference(decode_image(data, (300, 200)), normal_form(data, (300, 200))) < 1.5
    both = with_orientation(data, 3, xmp=xmp)  # the EXIF tag wins over XMP, as in PIL
    assert jpeg_header(both).orientation == 3 == orientation(Image.open(io.BytesIO(both)))
    assert jpeg_header(b"\x89PNG\r\n\x1a\n") is None and jpeg_header(jpeg[:200]) is None
    assert jpeg_header(jpeg[:2] + b"\xff\xff" + jpeg[2:]) == (451, 300, 3, 1)  # a fill byte before a marker
