"""A streaming training loader over packed shards: reads each tar front to back (local files or
any fsspec URL, `hf://` included), splits shards across ranks and DataLoader workers so every
sample is read exactly once per epoch, mixes samples in a seeded shuffle buffer, decodes images
into the stages' normal form (EXIF orientation applied, transparency on white), JPEGs at the
smallest scale that covers the target, and resumes mid-epoch without losing or repeating a
sample.

Splitting. Each epoch the shard list is shuffled with `(seed, epoch)`, the same on every rank.
The R ranks x W workers are C consumers, consumer `rank * W + worker`. With at least C shards,
consumer c reads shards c, c + C, c + 2C, ... of that order (whole shards; consumers differ by
at most one shard). With fewer shards than consumers, consumer c reads shard `c % S` and keeps
the samples whose index in the tar is congruent to its turn among that shard's consumers, so
exactly-once still holds, each consumer still reads a single tar and decodes only its samples.
Consumers can end an epoch a few batches apart: with DDP, train a fixed number of steps.

Records. A sample's `{key}.json` is ours or GPIC's published record (`gpic.contracts.read_record`,
members in any order within a sample). A GPIC record holds one caption: the requested level
is used when the record has it (ours has all four; `pack.schema: gpic` writes all four under
GPIC's names), else the record's own caption, and the sample's `level` says which (our names:
GPIC's `tag` is `label`).

Resume. The state counts, per consumer, the samples taken out of its shuffle buffer (yielded
or skipped as corrupt). The buffer's choices depend only on the number of items pushed, so a
restarted consumer replays it over sample positions alone (each shard's count comes from its
parquet index's footer, beside the tar or in `index_dir`: `gpic index` builds them), re-reads
from the oldest shard still in the buffer without decoding, and continues with exactly the
samples it had not yielded. With workers, `Loader` records each batch's position as the
training loop receives it (prefetched batches are read again); resume needs the same shards,
seed, shuffle buffer, ranks and `num_workers`, and `load_state_dict` or the first iteration
says which differs.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import logging
import math
import random
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
import yaml
from fsspec.implementations.local import LocalFileSystem
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg

from gpic.contracts import IMAGE_EXTENSIONS, LEVEL_OF_CAPTION_TYPE, LEVELS, member_key, read_record
from gpic.images import ROTATED, normalise, orientation
from gpic.layout import RESULTS_LAYOUT, index_path

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
# What a corrupt sample raises: PIL (OSError, SyntaxError, bombs), torchvision (RuntimeError),
# json or a record in neither schema (ValueError, KeyError) and a record without the chosen caption
# (KeyError, TypeError).
CORRUPT = (OSError, SyntaxError, ValueError, RuntimeError, KeyError, TypeError, Image.DecompressionBombError)


def tier_shards(card: str, tier: str, split: str = "train") -> list[str]:
    """The shards of one tier and split as the dataset card's `configs:` lists them, as URLs
    beside the card (`card` is the packed folder, its README.md, or an hf:// repo)."""
    readme = card if card.endswith(".md") else card.rstrip("/") + "/README.md"
    root = readme.rsplit("/", 1)[0] if "/" in readme else "."
    try:
        with fsspec.open(readme, "rt") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset card not found: {readme}") from None
    parts = text.split("---", 2)
    header = yaml.safe_load(parts[1]) if text.startswith("---") and len(parts) == 3 else {}
    configs = {c["config_name"]: c for c in (header or {}).get("configs", [])}
    if tier not in configs:
        raise ValueError(f"unknown tier {tier!r}: {readme} lists {', '.join(configs) or 'no configs'}")
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_NAMES)}")
    files = {f["split"]: f["path"] for f in configs[tier]["data_files"]}
    if SPLIT_NAMES[split] not in files:
        raise ValueError(f"tier {tier!r} of {readme} has no {SPLIT_NAMES[split]!r} split (the card lists only "
                         "splits that hold samples)")
    paths = files[SPLIT_NAMES[split]]
    return resolve_shards([f"{root}/{p}" for p in ([paths] if isinstance(paths, str) else paths)])


def resolve_shards(shards: str | Path | list[str | Path], card: str = str(RESULTS_LAYOUT.packed_root),
                   split: str = "train") -> list[str]:
    """Shard URLs from tar paths or URLs, folders (their *.tar), globs, or a tier name looked up
    in the dataset card `card`. Local tars are checked up front so a typo fails before training;
    remote ones fail when opened (checking 8,000 URLs one by one takes minutes)."""
    if isinstance(shards, (str, Path)):
        name = str(shards)
        if "/" not in name and not name.endswith(".tar") and not Path(name).exists():
            return tier_shards(card, name, split)
        shards = [name]
    urls: list[str] = []
    for entry in map(str, shards):
        fs, path = fsspec.core.url_to_fs(entry)
        local = isinstance(fs, LocalFileSystem)
        if any(c in path for c in "*?["):
            found = sorted(fs.glob(path))
        elif path.endswith(".tar"):
            if local and not fs.isfile(path):
                raise FileNotFoundError(f"shard not found: {entry}")
            found = [path]
        elif fs.isdir(path):
            found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".tar"))
        else:
            raise FileNotFoundError(f"shard not found: {entry}")
        if not found:
            raise FileNotFoundError(f"no .tar shards in {entry} (give a split folder such as results/packed/train, "
                                    "shard paths, or a tier name)")
        urls += [p if local else fs.unstrip_protocol(p) for p in found]
    return urls


# What turns the stored pixels upright per EXIF orientation, as ImageOps.exif_transpose: the
# dims of a (3, H, W) tensor to flip, then whether to swap H and W (orientations 5-8).
ORIENT = {1: ((), False), 2: ((2,), False), 3: ((1, 2), False), 4: ((1,), False), 5: ((), True), 6: ((1,), True),
          7: ((1, 2), True), 8: ((2,), True)}


class JpegHeader(NamedTuple):
    width: int  # as stored, before the orientation is applied
    height: int
    components: int  # 1 grey, 3 YCbCr; 4 (CMYK, YCCK) is left to PIL
    orientation: int  # EXIF orientation, 1 when absent or unreadable


# EXIF value types PIL reads as integers, type: (bytes, signed); the others it knows, type: bytes.
INTEGER_TYPES = {3: (2, False), 4: (4, False), 6: (1, True), 8: (2, True), 9: (4, True), 13: (4, False), 16: (8, False)}
OTHER_TYPES = {1: 1, 2: 1, 5: 8, 7: 1, 10: 8, 11: 4, 12: 8}
TIFF_ORDER = {b"II*\0": "little", b"II\0*": "little", b"MM\0*": "big", b"MM*\0": "big"}  # the headers PIL accepts
XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # PIL's fallback when EXIF has no tag


def _exif_orientation(exif: bytes) -> int | None:
    """IFD0's Orientation tag in an APP1 Exif payload as PIL's getexif() reads it, so that
    corrupt EXIF turns an image the same way here and in the stages: None when the tag is
    absent (or PIL skips or never reaches it), 1 when the TIFF header is unreadable or the
    value not an integer."""
    tiff = exif[12:] if exif.startswith(b"Exif\0\0Exif\0\0") else exif[6:]
    if not tiff:
        return None
    order = TIFF_ORDER.get(tiff[:4])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    entries = int.from_bytes(tiff[ifd:ifd + 2], order) if ifd + 2 <= len(tiff) else 0
    seen, total = set(), 0
    for entry in range(ifd + 2, min(ifd + 2 + 12 * entries, len(tiff) - 11), 12):  # a cut IFD keeps what precedes
        tag, kind = int.from_bytes(tiff[entry:entry + 2], order), int.from_bytes(tiff[entry + 2:entry + 4], order)
        count = int.from_bytes(tiff[entry + 4:entry + 8], order)
        unit, signed = INTEGER_TYPES.get(kind, (OTHER_TYPES.get(kind), None))
        if tag in seen or unit is None or count == 0:
            continue  # PIL keeps a tag's first value and skips unknown types and empty values
        at = entry + 8
        if unit * count > 4:  # stored elsewhere: skipped once such values add up to more than
            total += unit * count  # the data, and PIL stops at one that runs past the end
            if total > len(tiff):
                continue
            at = int.from_bytes(tiff[at:at + 4], order)
            if at + unit * count > len(tiff):
                return None
        if tag == 0x0112:
            return 1 if signed is None else int.from_bytes(tiff[at:at + unit], order, signed=signed)
        seen.add(tag)
    return None


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Size, components and EXIF orientation from a JPEG's markers, or None if `data` is not a
    JPEG whose markers parse up to the scan: one pass over a few hundred bytes, cheaper than
    opening it with PIL just to choose a decoder. Orientation as PIL reads it: the first Exif
    APP1, else the last XMP APP1's tiff:Orientation."""
    if data[:2] != b"\xff\xd8":
        return None
    i, frame, exif, xmp = 2, None, None, None
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, markers without a length
            i += 1 if marker == 0xFF else 2
            continue
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # start of scan: every header marker has been seen
            if frame is None:
                return None
            turn = _exif_orientation(exif) if exif is not None else None
            if turn is None and xmp is not None and (match := XMP_ORIENTATION.search(xmp)):
                turn = int(match[2])
            return JpegHeader(*frame, turn if turn in ORIENT else 1)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and end >= i + 10:  # start of frame
            frame = (int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big"), data[i + 9])
        elif marker == 0xE1 and data.startswith(b"Exif\0\0", i + 4):
            exif = exif or data[i + 4:end]
        elif marker == 0xE1 and data.startswith(b"http://ns.adobe.com/xap/1.0/\0", i + 4):
            xmp = data[i + 33:end]
        i = end
    return None


def _cover(w: int, h: int, size: tuple[int, int]) -> tuple[int, int]:
    """The smallest (width, height) of a w x h image scaled to cover `size` (height, width)."""
    scale = max(size[0] / h, size[1] / w)
    return max(1, math.ceil(w * scale - 1e-9)), max(1, math.ceil(h * scale - 1e-9))


def _reduction(head: JpegHeader, size: tuple[int, int]) -> int:
    """How many times the stored JPEG exceeds what covers `size` once it is turned upright
    (turned by 90 degrees, it must cover the transposed target); 2 or more allows a draft."""
    stored = size[::-1] if ORIENT[head.orientation][1] else size
    return min(d // c for d, c in zip(head[:2], _cover(head.width, head.height, stored)))


def decode_image(data: bytes, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) in the stages' normal form (`gpic.images.normalise`: EXIF orientation
    applied, transparency flattened on white, 16-bit scaled), scaled so it covers `size`
    (antialiased), then centre-cropped, so training sees the pixels that were captioned.

    A JPEG at least twice the needed size is decoded at 1/2, 1/4 or 1/8 scale (PIL draft:
    libjpeg skips the discarded DCT coefficients); any other grey or YCbCr JPEG by torchvision,
    which writes RGB straight into a tensor at about half the cost of PIL's full decode
    (torchvision 0.29 deprecates it for TorchCodec; the exact pin keeps it), turned upright
    with the orientation read from its header. Sizes are compared in the stored frame, so an
    image turned by 90 degrees covers the transposed target. Only the crop region is resized."""
    head, turn = jpeg_header(data), 1
    if head and head.components in (1, 3) and _reduction(head, size) < 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        turn = head.orientation
    else:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", _cover(*image.size, size[::-1] if orientation(image) in ROTATED else size))  # JPEG only
        image = normalise(image)
        pixels = torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB"))).permute(2, 0, 1)
    # Crop and resize in the stored frame, then turn the small result upright: resizing a
    # transposed view is slower than the decode itself. A flipped axis takes the crop mirrored,
    # so that odd margins fall as they would on the upright image.
    flips, turned = ORIENT[turn]
    height, width = size[::-1] if turned else size
    h, w = pixels.shape[1:]
    scale = max(height / h, width / w)
    crop_h, crop_w = min(h, round(height / scale)), min(w, round(width / scale))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    top, left = (h - crop_h - top if 1 in flips else top), (w - crop_w - left if 2 in flips else left)
    crop = pixels[:, top:top + crop_h, left:left + crop_w]
    if (crop_h, crop_w) != (height, width):
        crop = F.interpolate(crop[None], size=(height, width), mode="bilinear", antialias=True)[0]
    crop = crop.flip(flips) if flips else crop
    return (crop.transpose(1, 2) if turned else crop).contiguous()


def _tar_samples(url: str, wanted: Callable[[int], bool]) -> Iterator[tuple[int, str, dict[str, bytes]]]:
    """(index in the tar, key, {extension: bytes}) of the wanted samples, streaming the tar
    once; unwanted members are skipped, never extracted."""
    with fsspec.open(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        index, key, members = -1, None, None
        for info in tar:
            name = info.name
            if name.startswith("/") or ".." in PurePosixPath(name).parts:
                log.warning("%s: refusing tar member %r", url, name)
                continue
            if not info.isfile():
                continue
            stem, ext = member_key(name)
            if stem != key:
                if members is not None:
                    yield index, key, members
                index, key = index + 1, stem
                members = {} if wanted(index) else None
            if members is not None:
                members[ext] = tar.extractfile(info).read()
        if members is not None:
            yield index, key, members


def _index_rows(url: str, index_dir: str | None = None) -> int:
    """Samples in a shard, from its parquet index's footer (one small read, also remote):
    `x.parquet` beside `x.tar`, or `index_dir/x.parquet` (where `gpic index --out` puts it)."""
    index = index_path(url, index_dir)
    try:
        with fsspec.open(index, "rb") as stream:
            return pq.ParquetFile(stream).metadata.num_rows
    except FileNotFoundError:
        where = f"in index_dir {index_dir}" if index_dir else "beside each shard"
        raise FileNotFoundError(f"resuming needs the parquet index {where}: {index} not found (build it with "
                                "`gpic index`)") from None


class _Buffer:
    """Shuffle buffer: fills to `size`, then each new item swaps out a random held one; the
    rest leaves in shuffled order. Its choices depend only on how many items came in, which is
    what lets a resumed stream replay it over positions alone."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.items, self.drained = max(1, size), rng, [], False

    def push(self, item: tuple) -> tuple | None:
        if len(self.items) < self.size:
            self.items.append(item)
            return None
        slot = self.rng.randrange(self.size)
        out, self.items[slot] = self.items[slot], item
        return out

    def drain(self) -> list[tuple]:
        if not self.drained:
            self.rng.shuffle(self.items)
        out, self.items, self.drained = self.items, [], True
        return out


class PackedDataset(IterableDataset):
    """Samples `{"key", "image": uint8 (3, H, W), "caption", "level", "_position"}` of packed
    shards; `_position` is (consumer, taken, skipped), the bookkeeping `Loader` saves.

    `size` is an int or (height, width). `caption` is a level (label/short/medium/long; GPIC's
    `tag` is `label`) or {level: weight} for a per-sample mix, drawn from a hash of (seed,
    epoch, key) so it does not depend on workers or resume; a GPIC record without the drawn
    level gives its own caption and level. `index_dir` is where the parquet indexes are, when
    not beside the tars (only resume reads them).
    `rank`/`world_size` default to torch.distributed's when it is initialised; each rank saves
    its own state. Call `set_epoch(n)` before each epoch (same shard order otherwise, as with
    DistributedSampler)."""

    def __init__(self, shards: str | Path | list[str | Path], *, size: int | tuple[int, int] = 256,
                 caption: str | dict[str, float] = "long", seed: int = 0, shuffle_buffer: int = 1000,
                 rank: int | None = None, world_size: int | None = None, card: str = str(RESULTS_LAYOUT.packed_root),
                 split: str = "train", index_dir: str | Path | None = None):
        self.shards = resolve_shards(shards, card, split)
        if not self.shards:
            raise ValueError(f"no shards in {shards!r}")
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        weights = {caption: 1.0} if isinstance(caption, str) else dict(caption)
        weights = {LEVEL_OF_CAPTION_TYPE.get(level, level): weight for level, weight in weights.items()}
        unknown = set(weights) - set(LEVELS)
        if unknown or not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"caption must be one of {LEVELS} or a mapping of them to weights, got {caption!r}")
        self.levels = [level for level in weights if weights[level] > 0]
        total = sum(weights.values())
        self.cumulative = list(itertools.accumulate(weights[level] / total for level in self.levels))
        if rank is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.rank, self.world_size = rank or 0, world_size or 1
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        self.seed, self.shuffle_buffer, self.epoch = seed, shuffle_buffer, 0
        self.index_dir = str(index_dir) if index_dir else None
        self.workers = 1  # DataLoader workers per rank that `_position` refers to
        self._position: dict[int, tuple[int, int]] = {}  # consumer -> (taken from buffer, skipped)

    @property
    def skipped(self) -> int:
        """Corrupt samples skipped so far this epoch; through `Loader` with workers, as of each
        worker's last batch received."""
        return sum(skipped for _, skipped in self._position.values())

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` (a new shard order); the same epoch again keeps the position."""
        if epoch != self.epoch:
            self.epoch, self._position = epoch, {}

    def _fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.shards).encode()).hexdigest()[:16]

    def state_dict(self) -> dict:
        """JSON-able state: what is needed to continue this epoch exactly where it stopped."""
        return {"seed": self.seed, "epoch": self.epoch, "rank": self.rank, "world_size": self.world_size,
                "workers": self.workers, "shuffle_buffer": self.shuffle_buffer, "shards": len(self.shards),
                "shards_sha256": self._fingerprint(),
                "position": {str(c): list(p) for c, p in sorted(self._position.items())}}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for name in ("rank", "world_size", "shuffle_buffer", "shards", "shards_sha256"):
            if state[name] != mine[name]:
                raise ValueError(f"cannot resume: the state was saved with {name}={state[name]!r}, "
                                 f"this loader has {name}={mine[name]!r}")
        self.seed, self.epoch, self.workers = state["seed"], state["epoch"], state["workers"]
        self._position = {int(c): (int(p[0]), int(p[1])) for c, p in state["position"].items()}

    def check_workers(self, workers: int) -> None:
        """Positions are per worker: refuse to resume them with a different number of workers."""
        if self._position and workers != self.workers:
            raise ValueError(f"cannot resume: the state was saved with {self.workers} DataLoader worker(s) per rank, "
                             f"this loader has {workers}; rebuild it with num_workers={self.workers}")
        self.workers = workers

    def _plan(self, consumer: int, consumers: int) -> list[tuple[str, int, int]]:
        """(shard, stride, offset) per shard this consumer reads this epoch; it keeps the
        samples whose index in the tar is `offset` modulo `stride`."""
        order = list(self.shards)
        random.Random(f"gpic-shards:{self.seed}:{self.epoch}").shuffle(order)
        if len(order) >= consumers:
            return [(shard, 1, 0) for shard in order[consumer::consumers]]
        sharers = len(range(consumer % len(order), consumers, len(order)))
        return [(order[consumer % len(order)], sharers, consumer // len(order))]

    def _level(self, key: str) -> str:
        if len(self.levels) == 1:
            return self.levels[0]
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{key}".encode(), digest_size=8).digest()
        draw = int.from_bytes(digest, "big") / 2**64
        return self.levels[min(bisect.bisect_right(self.cumulative, draw), len(self.levels) - 1)]

    def _sample(self, url: str, key: str, members: dict[str, bytes]) -> dict | None:
        """The decoded sample, or None (logged) when its image or record is unusable."""
        try:
            ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            if ext is None or "json" not in members:
                raise KeyError(f"members {sorted(members)}: need an image and a json")
            level, caption = read_record(members["json"]).caption(self._level(key))
            image = decode_image(members[ext], self.size)
        except CORRUPT as error:
            log.warning("%s: skipping sample %s: %s: %s", url, key, type(error).__name__, error)
            return None
        return {"key": key, "image": image, "caption": caption, "level": level}

    def _fast_forward(self, plan: list[tuple[str, int, int]], buffer: _Buffer, taken: int) -> tuple[int, int]:
        """Replay the buffer over positions until `taken` items left it; return the first
        position not yet pushed (the buffer then holds placeholders for what it held)."""
        count = 0
        for p, (url, stride, offset) in enumerate(plan):
            for i in range(offset, _index_rows(url, self.index_dir), stride):
                if buffer.push(((p, i), None, None)) is not None:
                    count += 1
                    if count == taken:
                        return p, i + 1
        rest = buffer.drain()
        if taken - count > len(rest):
            raise ValueError(f"cannot resume: the state says {taken} samples were taken but this consumer's "
                             f"shards hold {count + len(rest)}")
        buffer.items = rest[taken - count:]
        return len(plan), 0

    def _stream(self, consumer: int, consumers: int) -> Iterator[dict]:
        plan = self._plan(consumer, consumers)
        rng = random.Random(f"gpic-buffer:{self.seed}:{self.epoch}:{consumer}/{consumers}")
        buffer = _Buffer(self.shuffle_buffer, rng)
        taken, skipped = self._position.get(consumer, (0, 0))
        start = self._fast_forward(plan, buffer, taken) if taken else (0, 0)
        held = {item[0]: slot for slot, item in enumerate(buffer.items)}  # placeholders to refill
        first = min([start[0], *(p for p, _ in held)])

        def ordered() -> Iterator[tuple]:
            """The buffer's output; re-read items it held at the resume point refill their slots."""
            for p in range(first, len(plan)):
                url, stride, offset = plan[p]

                def wanted(i: int, p: int = p, stride: int = stride, offset: int = offset) -> bool:
                    return i % stride == offset and ((p, i) >= start or (p, i) in held)

                for i, key, members in _tar_samples(url, wanted):
                    if (p, i) < start:
                        buffer.items[held[(p, i)]] = ((p, i), key, members)
                    elif (out := buffer.push(((p, i), key, members))) is not None:
                        yield out
            yield from buffer.drain()

        for (p, i), key, members in ordered():
            if key is None:
                raise RuntimeError(f"{plan[p][0]}: its index lists sample {i} but the tar ends before it; "
                                   "run `gpic verify`")
            sample = self._sample(plan[p][0], key, members)
            taken, skipped = taken + 1, skipped + (sample is None)
            self._position[consumer] = (taken, skipped)
            if sample is not None:
                sample["_position"] = (consumer, taken, skipped)
                yield sample

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        self.check_workers(workers)
        return self._stream(self.rank * workers + worker, self.world_size * workers)


def collate(samples: list[dict]) -> dict:
    """A batch: images stacked (B, 3, H, W) uint8, keys/captions/levels as lists, and the
    position of its last sample (a batch comes from one worker)."""
    return {"key": [s["key"] for s in samples], "image": torch.stack([s["image"] for s in samples]),
            "caption": [s["caption"] for s in samples], "level": [s["level"] for s in samples],
            "_position": samples[-1]["_position"]}


class Loader(DataLoader):
    """DataLoader over a PackedDataset whose state covers exactly the batches handed to the
    training loop. Workers are not persistent: each epoch they get the current epoch and
    position."""

    def __init__(self, dataset: PackedDataset, batch_size: int = 256, num_workers: int = 4, **options):
        super().__init__(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                         persistent_workers=False, **options)

    def __iter__(self) -> Iterator[dict]:
        self.dataset.check_workers(max(1, self.num_workers))
        for batch in super().__iter__():
            consumer, taken, skipped = batch.pop("_position")
            self.dataset._position[consumer] = (taken, skipped)
            yield batch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)


def make_loader(shards: str | Path | list[str | Path], *, batch_size: int = 256, num_workers: int = 4,
                pin_memory: bool = False, drop_last: bool = False, **dataset_options) -> Loader:
    """`Loader(PackedDataset(shards, **dataset_options), ...)`: batches ready for the GPU."""
    return Loader(PackedDataset(shards, **dataset_options), batch_size=batch_size, num_workers=num_workers,
                  pin_memory=pin_memory, drop_last=drop_last)
