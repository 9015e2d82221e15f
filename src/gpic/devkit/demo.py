"""Deterministic builder of the bundled demo corpus.

The demo corpus exercises every stage of the pipeline (licence gate, fetch, quality filter,
dedup, captioning, packing) without the network. It is built from photographs that ship
with scikit-image and matplotlib, under their true licences, plus generated variety:

* real photos, one row each, byte copies of the shipped files;
* crops of those photos (positions, scales, flips, mild colour changes, resized), each
  inheriting its parent's licence and attribution; all distinct images pass simple quality
  filters and are distinct by where they come from, not by how they look (see
  ``MAX_REGION_IOU``): no similarity measure of the pipeline's dedup (sha256, pHash, the copy
  descriptor) chooses them, so the demo's dedup outcome is a test of dedup, not its echo;
* planted near-duplicates of distinct images (byte copy, JPEG q60, 80 % resize, 95 % centre
  crop, small brightness change);
* deliberately bad rows (truncated file, non-image bytes, tiny, blank, over-exposed, blurry,
  non-permissive or share-alike licence, missing attribution, missing or broken URL, missing
  source id).

``expected.csv`` says what the pipeline should do with each row; ``regions.csv`` says where each
image cut from a photo lies in it (the ground truth of distinctness). The same seed always gives
byte-identical output for the same ``out_dir`` (manifests hold absolute ``file://`` URLs, so
they differ between output directories only in that prefix).

Usage: ``python -m gpic.devkit.demo OUT_DIR [--seed 0] [--n-variants 100]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageStat

# --------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------

SOURCES = ("wikimedia", "flickr")
MANIFEST_FILES = {"wikimedia": "wikimedia.csv", "flickr": "flickr.jsonl"}
MANIFEST_COLUMNS = (
    "source",
    "source_id",
    "url",
    "license",
    "license_url",
    "attribution",
    "title",
    "retrieved_at",
    "width",
    "height",
)
EXPECTED_COLUMNS = ("source", "source_id", "expect", "parent_source_id")
BAD_EXPECTS = (
    "truncated",
    "not_image",
    "too_small",
    "blank",
    "overexposed",
    "blurry",
    "license",
    "attribution",
    "missing_url",
    "fetch_error",
    "bad_scheme",
    "missing_source_id",
)
EXPECT_VALUES = ("packed", "duplicate", *BAD_EXPECTS)

REGIONS_FILE = "regions.csv"
REGION_COLUMNS = ("source", "source_id", "origin", "x0", "y0", "x1", "y1", "mirrored")
# Two distinct images either come from different origins (photos, generated pictures) or are
# regions of one photo whose boxes, in the photo's pixels, have an IoU of at most this; a
# mirror image covers the same box as the unmirrored one, so mirroring never makes a region
# distinct. Chosen without looking at pixels: the planted 95 % centre crop has IoU 0.90 with
# its parent and a 90 % crop 0.81, so distinct regions stay well below what dedup must catch.
MAX_REGION_IOU = 0.5
N_DISTINCT = 100  # distinct images by default: the shipped photos hold about 110 such regions

# What every distinct ("packed") image satisfies. The generator enforces stricter margins
# (the _GEN_* values) so that small differences in resampling filters downstream do not
# move an image across a threshold.
MIN_SIDE = 256
MIN_SHARPNESS = 100.0  # variance of the Laplacian, greyscale, downscaled to max side 512
SCORE_SIDE = 512  # the long side at which ``sharpness`` measures
MIN_GREY_STD = 20.0
MAX_CLIPPED_FRACTION = 0.30  # fraction of greyscale pixels at exactly 0 or 255

_GEN_SHARPNESS = 130.0
_GEN_GREY_STD = 24.0
_GEN_CLIPPED = 0.20

JPEG_QUALITY = 90
_PNG_FRACTION = 0.12
_TARGET_LONG = (520.0, 740.0)  # long side of a variant before the zoom cap
_MAX_ZOOM = 1.9
_MIN_CROP_FRAC = 0.25  # smallest crop side, as a fraction of the largest box of its aspect
_DRAWS_PER_TURN = 500  # crop boxes drawn per photo and turn (cheap: geometry only) ...
_RENDERS_PER_TURN = 10  # ... of which at most this many fitting ones are rendered and scored
_RETRIEVED_BASE = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
_GENERATOR = "GPIC demo generator"

# --------------------------------------------------------------------------------------
# Licences, as each source spells them
# --------------------------------------------------------------------------------------

_CC0_URL = "https://creativecommons.org/publicdomain/zero/1.0/"
LICENCES: dict[tuple[str, str], tuple[str, str]] = {
    ("cc0", "wikimedia"): ("CC0", _CC0_URL),
    ("cc0", "flickr"): ("Public Domain Dedication (CC0)", _CC0_URL),
    ("pd", "wikimedia"): ("Public domain", ""),
    ("pd", "flickr"): ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
    ("nkcr", "wikimedia"): (
        "No restrictions",
        "https://commons.wikimedia.org/wiki/Template:No_restrictions",
    ),
    ("nkcr", "flickr"): ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    ("by", "wikimedia"): ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    ("by", "flickr"): ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    ("by2", "wikimedia"): ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    ("by2", "flickr"): ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    ("by-sa", "wikimedia"): ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    ("by-nc", "flickr"): (
        "Attribution-NonCommercial License",
        "https://creativecommons.org/licenses/by-nc/2.0/",
    ),
    ("arr", "flickr"): ("All Rights Reserved", ""),
}


@dataclass(frozen=True)
class Photo:
    """A photograph shipped with an installed package, with its true licence."""

    key: str
    package: str  # importable package whose directory holds the file
    relpath: str  # path inside that package
    short: str  # short title used for variants: "Astronaut (crop 7)"
    title: str
    licence: str  # licence kind, a key of LICENCES' first element
    attribution: str
    home: str  # source whose manifest lists the original
    provenance: str  # where the licence statement was read
    role: str = "packed"  # "packed", "bad_only" (only derived bad rows), "arr"


PHOTOS: tuple[Photo, ...] = (
    Photo(
        "astronaut", "skimage", "data/astronaut.png", "Astronaut",
        "Astronaut Eileen Collins", "nkcr", "NASA", "flickr",
        "skimage/data/_fetchers.py astronaut(): NASA Great Images database "
        "(https://flic.kr/p/r9qvLn); 'No known copyright restrictions, released into the "
        "public domain.'",
    ),
    Photo(
        "chelsea", "skimage", "data/chelsea.png", "Chelsea",
        "Chelsea the cat", "cc0", "Stefan van der Walt", "wikimedia",
        "skimage/data/_fetchers.py chelsea(): 'No copyright restrictions. CC0 by the "
        "photographer (Stefan van der Walt).'",
    ),
    Photo(
        "coffee", "skimage", "data/coffee.png", "Coffee",
        "Coffee cup (Pikolo Espresso Bar)", "cc0", "Rachel Michetti", "wikimedia",
        "skimage/data/_fetchers.py coffee(): 'courtesy of Pikolo Espresso Bar ... No copyright "
        "restrictions. CC0 by the photographer (Rachel Michetti).'",
    ),
    Photo(
        "rocket", "skimage", "data/rocket.jpg", "Rocket",
        "Launch of DSCOVR on Falcon 9", "cc0", "SpaceX", "flickr",
        "skimage/data/_fetchers.py rocket(): SpaceX Photos on Flickr "
        "(flickr.com/photos/spacexphotos/16511594820); 'captured by SpaceX and released in "
        "the public domain'.",
    ),
    Photo(
        "hubble", "skimage", "data/hubble_deep_field.jpg", "Hubble deep field",
        "Hubble eXtreme Deep Field", "pd", "NASA (HubbleSite, news release 2012-37)",
        "wikimedia",
        "skimage/data/_fetchers.py hubble_deep_field(): HubbleSite release 2012/37; 'captured "
        "by NASA and may be freely used in the public domain'.",
    ),
    Photo(
        "ihc", "skimage", "data/ihc.png", "Immunohistochemistry",
        "Immunohistochemical staining of colonic glands",
        "nkcr", "Center for Microscopy And Molecular Imaging (CMMI)", "flickr",
        "skimage/data/_fetchers.py immunohistochemistry(): 'acquired at the Center for "
        "Microscopy And Molecular Imaging (CMMI). No known copyright restrictions.'",
    ),
    Photo(
        "camera", "skimage", "data/camera.png", "Cameraman",
        "Cameraman (greyscale)", "cc0", "Lav Varshney", "wikimedia",
        "skimage/data/_fetchers.py camera(): 'No copyright restrictions. CC0 by the "
        "photographer (Lav Varshney).'",
    ),
    Photo(
        "grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "Grace Hopper",
        "Commodore Grace M. Hopper", "pd", "U.S. Navy", "wikimedia",
        "matplotlib sample_data (its README.txt states no licence); added in matplotlib PR "
        "#1599 as a public domain image; official U.S. Navy portrait (work of the U.S. "
        "federal government).",
    ),
    # Too smooth for the blur gate at full frame (Laplacian variance about 52 at 512 px),
    # so it is not used as a packed image; its crops supply the blurry and tiny rows.
    Photo(
        "retina", "skimage", "data/retina.jpg", "Retina",
        "Fundus photograph of normal left eye", "cc0", "Mikael Häggström", "wikimedia",
        "skimage/data/_fetchers.py retina(): Wikimedia Commons "
        "File:Fundus_photograph_of_normal_left_eye.jpg; 'made available under the Creative "
        "Commons CC0 1.0 Universal Public Domain Dedication'; reference Häggström (2014).",
        role="bad_only",
    ),
    # Middlebury 2014 stereo benchmark: skimage states no licence for it, so it is listed
    # as the source would list an unlicensed photo (All Rights Reserved) and must be gated.
    Photo(
        "motorcycle", "skimage", "data/motorcycle_left.png", "Motorcycle",
        "Motorcycle (Middlebury 2014 stereo, left view)", "arr",
        "D. Scharstein et al., Middlebury College", "flickr",
        "skimage/data/_fetchers.py stereo_motorcycle(): Middlebury 2014 stereo benchmark; no "
        "licence stated.",
        role="arr",
    ),
)


def photo_path(photo: Photo) -> Path | None:
    """Path of a shipped photo, or None when the package or file is absent (no download)."""
    spec = find_spec(photo.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / photo.relpath
    return path if path.is_file() else None


# --------------------------------------------------------------------------------------
# Image measures (used by the generator and by the tests)
# --------------------------------------------------------------------------------------


def _laplacian_variance(grey: np.ndarray) -> float:
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.var()) if lap.size else 0.0


def sharpness(img: Image.Image) -> float:
    """The generator's own blur measure (variance of the Laplacian of the grey image at max
    side SCORE_SIDE), kept apart from the filter's so the corpus does not move when the filter
    is tuned; the filter's defaults are checked against this corpus instead."""
    grey = img.convert("L")
    if max(grey.size) > SCORE_SIDE:
        grey.thumbnail((SCORE_SIDE, SCORE_SIDE), Image.Resampling.BILINEAR)
    return _laplacian_variance(np.asarray(grey, dtype=np.float32))


def grey_stats(img: Image.Image) -> tuple[float, float]:
    """(standard deviation, fraction of pixels at 0 or 255) of the greyscale image."""
    a = np.asarray(img if img.mode == "L" else img.convert("L"))
    hist = np.bincount(a.reshape(-1), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    n = hist.sum()
    mean = (hist * levels).sum() / n
    std = math.sqrt(max(0.0, (hist * (levels - mean) ** 2).sum() / n))
    return std, float((hist[0] + hist[255]) / n)


def passes_quality(img: Image.Image, strict: bool = False) -> bool:
    """The demo's own quality contract for packed images (``strict``: generation margins):
    min side, greyscale std, clipped fraction, sharpness."""
    if min(img.size) < MIN_SIDE:
        return False
    grey = img.convert("L")
    std, clipped = grey_stats(grey)
    if std < (_GEN_GREY_STD if strict else MIN_GREY_STD):
        return False
    if clipped > (_GEN_CLIPPED if strict else MAX_CLIPPED_FRACTION):
        return False
    return sharpness(grey) >= (_GEN_SHARPNESS if strict else MIN_SHARPNESS)


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.convert("RGB").save(
            buf, "JPEG", quality=quality, subsampling=2, optimize=False, progressive=False
        )
    else:
        img.save(buf, "PNG", compress_level=1, optimize=False)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


# --------------------------------------------------------------------------------------
# Distinctness pool
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """Where an image comes from: a photo (its key) or a generated picture (a name of its
    own), and the box it covers in that origin's pixels."""

    origin: str
    box: tuple[float, float, float, float]
    mirrored: bool = False


def box_iou(box: tuple[float, float, float, float], boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each row of ``boxes`` (x0, y0, x1, y1)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


class _Pool:
    """Regions of the accepted images by origin: a candidate fits when no accepted region of
    its origin overlaps it by more than MAX_REGION_IOU. Geometry only, never pixels, so the
    pipeline's own measures cannot make the demo agree with them."""

    def __init__(self) -> None:
        self.boxes: dict[str, list[tuple[float, float, float, float]]] = {}

    def overlap(self, region: Region, skip: Region | None = None) -> float:
        """Largest IoU with an accepted region of the same origin (0 when there is none);
        ``skip``: one accepted region left out (a planted copy's parent)."""
        boxes = [b for b in self.boxes.get(region.origin, []) if skip is None or b != skip.box]
        return float(box_iou(region.box, np.array(boxes)).max()) if boxes else 0.0

    def fits(self, region: Region) -> bool:
        return self.overlap(region) <= MAX_REGION_IOU

    def add(self, region: Region) -> None:
        self.boxes.setdefault(region.origin, []).append(region.box)


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


@dataclass
class _Row:
    expect: str
    licence: str
    attribution: str
    title: str
    data: bytes | None = None  # file content, None when no file is written
    ext: str = "jpg"
    width: int = 0
    height: int = 0
    source: str | None = None  # fixed source, else assigned to balance the manifests
    url_kind: str = "file"  # file | empty | missing | ftp
    parent: _Row | None = None
    region: Region | None = None  # where the image comes from, when it is a photo or a crop
    other_source_than_parent: bool = False
    empty_id: bool = False
    # assigned later
    source_id: str = ""
    url: str = ""


def _row_from_image(
    expect: str, photo_or_lic: Photo | tuple[str, str], title: str, data: bytes, ext: str,
    size: tuple[int, int], **kw,
) -> _Row:
    if isinstance(photo_or_lic, Photo):
        lic, attr = photo_or_lic.licence, photo_or_lic.attribution
    else:
        lic, attr = photo_or_lic
    return _Row(expect, lic, attr, title, data, ext, size[0], size[1], **kw)


# --------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CropSpec:
    box: tuple[float, float, float, float]  # crop box in parent pixels
    size: tuple[int, int]  # output size
    flip: bool
    jitter: tuple[float, float, float, float, float, float] | None  # sat, 3 gains, contrast, bright


def _sample_crop(
    parent_size: tuple[int, int], rng: np.random.Generator, min_frac: float = 0.55
) -> _CropSpec | None:
    """A crop at a random position and scale, resized to a random portrait/landscape size."""
    w, h = parent_size
    if rng.random() < 0.88:
        aspect = rng.uniform(0.6, 0.84)  # width / height
    else:
        aspect = rng.uniform(1.15, 1.5)
    if w / h > aspect:
        mw, mh = h * aspect, float(h)
    else:
        mw, mh = float(w), w / aspect
    frac = rng.uniform(min_frac, 1.0)
    cw, ch = mw * frac, mh * frac
    x = rng.uniform(0, w - cw)
    y = rng.uniform(0, h - ch)
    zoom = rng.uniform(_TARGET_LONG[0], _TARGET_LONG[1]) / max(cw, ch)
    if min(cw, ch) * zoom < MIN_SIDE:
        zoom = (MIN_SIDE + 1) / min(cw, ch)
    if zoom > _MAX_ZOOM:
        return None
    size = (round(cw * zoom), round(ch * zoom))
    flip = bool(rng.random() < 0.4)
    jitter = None
    if rng.random() < 0.7:
        jitter = (
            float(rng.uniform(0.8, 1.25)),
            *(float(g) for g in rng.uniform(0.92, 1.08, size=3)),
            float(rng.uniform(0.9, 1.15)),
            float(rng.uniform(0.88, 1.12)),
        )
    return _CropSpec((x, y, x + cw, y + ch), size, flip, jitter)


def _apply_jitter(img: Image.Image, jitter) -> Image.Image:
    """Saturation, per-channel gain, contrast and brightness; all through lookup tables."""
    sat, g0, g1, g2, contrast, bright = jitter
    img = ImageEnhance.Color(img).enhance(sat)
    means = ImageStat.Stat(img).mean
    gains = (g0, g1, g2)
    m = sum(g * mc for g, mc in zip(gains, means)) / 3.0
    lut: list[int] = []
    v = np.arange(256, dtype=np.float64)
    for g in gains:
        ch = (v * g - m) * contrast + m * bright
        lut.extend(np.clip(np.rint(ch), 0, 255).astype(int).tolist())
    return img.point(lut)


def _inner(region: Region, margin: tuple[float, float]) -> Region:
    """The region of a centre crop that leaves ``margin`` (fractions of width, height) off
    each side; mirroring does not move a centred box."""
    x0, y0, x1, y1 = region.box
    dx, dy = (x1 - x0) * margin[0], (y1 - y0) * margin[1]
    return Region(region.origin, (x0 + dx, y0 + dy, x1 - dx, y1 - dy), region.mirrored)


def _render(parent: Image.Image, spec: _CropSpec) -> Image.Image:
    """The crop, resized, mirrored and colour-jittered as ``spec`` says."""
    out = parent.resize(spec.size, Image.BICUBIC, box=spec.box)
    if spec.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if spec.jitter is not None:
        out = _apply_jitter(out, spec.jitter)
    return out


def _render_grey_measure(parent_grey: Image.Image, spec: _CropSpec) -> np.ndarray:
    """The crop in grey at the size ``sharpness`` measures it."""
    w, h = spec.size
    s = min(1.0, SCORE_SIDE / max(w, h))
    out = parent_grey.resize((max(3, round(w * s)), max(3, round(h * s))), Image.BICUBIC,
                             box=spec.box)
    return np.asarray(out, dtype=np.float32)


def _synthetic_pattern(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """An abstract picture (smooth colour field, shapes, fine grain) made by the generator."""
    w, h = size
    base = rng.uniform(20, 235, size=(3, 4, 3)).astype(np.uint8)
    img = Image.fromarray(base, "RGB").resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(7, 14))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, size=2) * w)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, size=2) * h)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    a = np.asarray(img, dtype=np.float32) + rng.normal(0, 7, size=(h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def _html_page(rng: np.random.Generator, n: int) -> bytes:
    code = ["404 Not Found", "403 Forbidden", "503 Service Unavailable"][n % 3]
    token = "".join(f"{int(b):02x}" for b in rng.integers(0, 256, size=8))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
        f"<title>{code}</title></head>\n<body>\n<h1>{code}</h1>\n"
        "<p>The requested image could not be served. Please try again later.</p>\n"
        f"<!-- request id {token} -->\n</body>\n</html>\n"
    ).encode()


# --------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, seed: int, n_variants: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_target = n_variants
        self.pool = _Pool()
        self.rows: list[_Row] = []
        self.packed: list[_Row] = []
        self.photos: list[tuple[Photo, Path, Image.Image]] = []
        for p in PHOTOS:
            path = photo_path(p)
            if path is not None:
                with Image.open(path) as im:
                    im.load()
                    self.photos.append((p, path, im.convert("RGB")))
        self.crop_counter: dict[str, int] = {}
        self.n_generated = 0

    # -- helpers -----------------------------------------------------------------------

    def _photos(self, role: str) -> list[tuple[Photo, Path, Image.Image]]:
        return [t for t in self.photos if t[0].role == role]

    def _crop_title(self, photo: Photo) -> str:
        n = self.crop_counter.get(photo.key, 0) + 1
        self.crop_counter[photo.key] = n
        return f"{photo.short} (crop {n})"

    def _generated(self, size: tuple[int, int]) -> Region:
        """The region of a new generator-made picture: an origin of its own."""
        self.n_generated += 1
        return Region(f"generated-{self.n_generated}", (0.0, 0.0, float(size[0]), float(size[1])))

    def _try_add(self, img: Image.Image, fmt: str, region: Region) -> tuple[bytes, Image.Image] | None:
        """Encode a candidate and take it into the pool if it is good and distinct."""
        return self._try_add_bytes(_encode(img, fmt), region)

    def _try_add_bytes(self, data: bytes, region: Region) -> tuple[bytes, Image.Image] | None:
        """Take a file into the pool if its region fits and, as decoded, it clears the quality
        margins."""
        if not self.pool.fits(region):
            return None
        img = _decode(data)
        if not passes_quality(img, strict=True):
            return None
        self.pool.add(region)
        return data, img

    def _add_packed(self, row: _Row) -> None:
        self.rows.append(row)
        self.packed.append(row)  # the image is decoded again from row.data if needed

    # -- content -----------------------------------------------------------------------

    def originals(self) -> None:
        for photo, path, src in self._photos("packed"):
            region = Region(photo.key, (0.0, 0.0, float(src.width), float(src.height)))
            got = self._try_add_bytes(path.read_bytes(), region)
            if got is None:
                continue
            data, img = got
            self._add_packed(_row_from_image(
                "packed", photo, photo.title, data, path.suffix.lstrip(".").lower(), img.size,
                source=photo.home, region=region,
            ))

    def synthetic_cc_by(self, n: int) -> None:
        """A few generator-made pictures under CC BY, so attribution licences get exercised."""
        kinds = [("by", "wikimedia"), ("by", "flickr"), ("by2", "wikimedia")]
        made = 0
        for _ in range(n * 20):
            if made >= n:
                break
            w = int(self.rng.integers(420, 560))
            h = int(self.rng.integers(520, 700))
            region = self._generated((w, h))
            got = self._try_add(_synthetic_pattern(self.rng, (w, h)), "jpg", region)
            if got is None:
                continue
            data, img = got
            lic, src = kinds[made % len(kinds)]
            self._add_packed(_Row(
                "packed", lic, _GENERATOR, f"Abstract test pattern {made + 1}", data, "jpg",
                img.width, img.height, source=src, region=region,
            ))
            made += 1

    def variants(self) -> None:
        """Crops of the shipped photos, round robin, until n_target distinct images; a photo
        whose free area is used up (no fitting crop in many draws) drops out."""
        photos = self._photos("packed")
        if not photos:
            raise RuntimeError("no shipped photos found (scikit-image / matplotlib data)")
        grey = [src.convert("L") for _, _, src in photos]
        misses = [0] * len(photos)
        active = list(range(len(photos)))
        turn = 0
        while len(self.packed) < self.n_target and active:
            i = active[turn % len(active)]
            turn += 1
            photo, _, src = photos[i]
            accepted = False
            rendered = 0
            for _ in range(_DRAWS_PER_TURN):
                spec = _sample_crop(src.size, self.rng, _MIN_CROP_FRAC)
                fmt = "png" if self.rng.random() < _PNG_FRACTION else "jpg"
                if spec is None:
                    continue
                region = Region(photo.key, spec.box, spec.flip)
                if not self.pool.fits(region):  # geometry is free: test it before any pixel
                    continue
                if rendered == _RENDERS_PER_TURN:
                    break
                rendered += 1
                # Sharpness is measured at max side 512, so render just that, in grey.
                if _laplacian_variance(_render_grey_measure(grey[i], spec)) < 0.9 * _GEN_SHARPNESS:
                    continue
                img = _render(src, spec)
                std, clipped = grey_stats(img)
                if std < _GEN_GREY_STD or clipped > _GEN_CLIPPED:
                    continue
                got = self._try_add(img, fmt, region)
                if got is None:
                    continue
                data, dec = got
                self._add_packed(_row_from_image(
                    "packed", photo, self._crop_title(photo), data, fmt, dec.size, region=region,
                ))
                accepted = True
                break
            misses[i] = 0 if accepted else misses[i] + 1
            if misses[i] >= 6:  # this photo has run out of distinct crops
                active.remove(i)

    def near_duplicates(self, per_kind: int) -> None:
        """Planted copies of distinct images, made by fixed edits and never selected by how
        alike they look: what dedup finds of them is its own doing."""
        kinds = ["exact", "jpeg60", "resize80", "crop95", "brightness"]
        candidates = [
            row for row in self.packed
            if row.ext == "jpg" and min(row.width, row.height) >= 330
            and row.licence not in ("by", "by2")
        ]
        order = self.rng.permutation(len(candidates))
        pos = 0
        for kind in kinds:
            made = 0
            while made < per_kind and pos < len(order):
                row = candidates[order[pos]]
                pos += 1
                img = _decode(row.data)
                region = row.region
                if kind == "exact":
                    data = row.data
                elif kind == "jpeg60":
                    data = _encode(img, "jpg", quality=60)
                elif kind == "resize80":
                    size = (round(img.width * 0.8), round(img.height * 0.8))
                    data = _encode(img.resize(size, Image.LANCZOS), "jpg")
                elif kind == "crop95":
                    dx, dy = round(img.width * 0.025), round(img.height * 0.025)
                    data = _encode(img.crop((dx, dy, img.width - dx, img.height - dy)), "jpg")
                    region = _inner(region, (dx / img.width, dy / img.height))
                else:
                    data = _encode(ImageEnhance.Brightness(img).enhance(1.08), "jpg")
                dup = _decode(data)
                # Near its parent only: as far from every other distinct image as the rules allow.
                if min(dup.size) < MIN_SIDE or self.pool.overlap(region, skip=row.region) > MAX_REGION_IOU:
                    continue
                self.rows.append(
                    _Row(
                        "duplicate", row.licence, row.attribution, row.title, data, "jpg",
                        dup.width, dup.height, parent=row, region=region,
                        other_source_than_parent=(kind == "exact"),
                    )
                )
                made += 1

    def _extra_crop(self, photo_role: str = "packed", good: bool = False):
        """A photo crop for a bad row, kept apart from the pool where possible; ``good``:
        one that also passes the quality contract (its row is bad for another reason)."""
        photos = self._photos(photo_role) or self._photos("packed")
        for attempt in range(60):
            photo, _, src = photos[int(self.rng.integers(len(photos)))]
            spec = _sample_crop(src.size, self.rng)
            if spec is None:
                continue
            region = Region(photo.key, spec.box, spec.flip)
            if attempt < 40 and not self.pool.fits(region):
                continue
            img = _render(src, spec)
            if good:
                if not passes_quality(img, strict=True):
                    continue
            else:
                std, clipped = grey_stats(img)
                if std < _GEN_GREY_STD or clipped > _GEN_CLIPPED:
                    continue
            return photo, img, region
        return photo, img, region

    def _register_extra(self, region: Region) -> None:
        """Bad rows that still decode join the pool, so they do not overlap any packed image."""
        self.pool.add(region)

    def bad_rows(self, per_kind: int) -> None:
        rng = self.rng
        packed_photos = self._photos("packed")

        # truncated: the first 40 % of the bytes of a good JPEG
        for _ in range(per_kind):
            photo, img, region = self._extra_crop()
            self._register_extra(region)
            data = _encode(img, "jpg")
            self.rows.append(
                _row_from_image(
                    "truncated", photo, self._crop_title(photo),
                    data[: int(len(data) * 0.4)], "jpg", img.size, region=region,
                )
            )
        # not_image: an HTML error page saved as .jpg
        for k in range(per_kind):
            photo = packed_photos[int(rng.integers(len(packed_photos)))][0]
            w, h = int(rng.integers(400, 700)), int(rng.integers(450, 750))
            self.rows.append(
                _row_from_image(
                    "not_image", photo, self._crop_title(photo), _html_page(rng, k), "jpg", (w, h)
                )
            )
        # too_small: a 40x30 thumbnail of a photo
        for _ in range(per_kind):
            photo, img, region = self._extra_crop("bad_only")
            small = img.resize((40, 30), Image.LANCZOS)
            self.rows.append(
                _row_from_image(
                    "too_small", photo, self._crop_title(photo), _encode(small, "jpg"), "jpg",
                    small.size, region=region,
                )
            )
        # blank: uniform grey 500x400
        for k in range(per_kind):
            level = int(rng.integers(90, 170))
            img = Image.new("RGB", (500, 400), (level, level, level))
            fmt = "png" if k % 2 else "jpg"
            self.rows.append(
                _Row("blank", "cc0", _GENERATOR, f"Grey card {k + 1}", _encode(img, fmt), fmt,
                     500, 400)
            )
        # overexposed: a photo crop blown out: all but its darkest 10 % of pixels pure white
        for _ in range(per_kind):
            photo, img, region = self._extra_crop()
            a = np.asarray(img).copy()
            luma = np.asarray(img.convert("L"))
            a[luma > np.percentile(luma, 10)] = 255
            over = Image.fromarray(a, "RGB")
            data = _encode(over, "png")  # PNG keeps the 255s exact
            dec = _decode(data)
            self._register_extra(region)
            self.rows.append(
                _row_from_image("overexposed", photo, self._crop_title(photo), data, "png", dec.size,
                                region=region)
            )
        # blurry: a photo crop under a heavy Gaussian blur that keeps enough contrast not to
        # read as near-blank
        for k in range(per_kind):
            for _attempt in range(20):
                photo, img, region = self._extra_crop("bad_only" if k % 2 == 0 else "packed")
                blurred = img.filter(ImageFilter.GaussianBlur(12))
                if grey_stats(blurred)[0] > _GEN_GREY_STD:
                    break
            data = _encode(blurred, "jpg")
            dec = _decode(data)
            self._register_extra(region)
            self.rows.append(
                _row_from_image("blurry", photo, self._crop_title(photo), data, "jpg", dec.size,
                                region=region)
            )

        def synthetic(title: str) -> tuple[bytes, tuple[int, int]]:
            """A generated picture: an origin of its own, so distinct from everything."""
            w, h = int(rng.integers(420, 560)), int(rng.integers(520, 700))
            self._register_extra(self._generated((w, h)))
            return _encode(_synthetic_pattern(rng, (w, h)), "jpg"), (w, h)

        # licence: non-commercial, all rights reserved, share-alike
        kinds = ["by-nc"] * per_kind + ["by-sa"] * per_kind + ["arr"] * max(1, per_kind - 1)
        for n_syn, lic in enumerate(kinds, 1):
            data, size = synthetic(f"Abstract test pattern {n_syn}")
            src = "wikimedia" if lic == "by-sa" else "flickr"
            self.rows.append(
                _Row("license", lic, _GENERATOR, f"Abstract test pattern (restricted) {n_syn}",
                     data, "jpg", size[0], size[1], source=src)
            )
        for photo, path, src in self._photos("arr"):
            data = path.read_bytes()
            img = _decode(data)
            region = Region(photo.key, (0.0, 0.0, float(src.width), float(src.height)))
            self._register_extra(region)
            self.rows.append(
                _row_from_image("license", photo, photo.title, data,
                                path.suffix.lstrip(".").lower(), img.size, source=photo.home,
                                region=region)
            )
        # attribution: an attribution licence with the attribution left empty
        for k in range(per_kind):
            lic, src = [("by", "wikimedia"), ("by", "flickr"), ("by2", "wikimedia")][k % 3]
            data, size = synthetic("")
            self.rows.append(
                _Row("attribution", lic, "", f"Abstract test pattern (unattributed) {k + 1}",
                     data, "jpg", size[0], size[1], source=src)
            )
        # rows whose URL cannot be fetched
        for expect, url_kind in (("missing_url", "empty"), ("fetch_error", "missing"),
                                 ("bad_scheme", "ftp")):
            for _ in range(per_kind):
                photo = packed_photos[int(rng.integers(len(packed_photos)))][0]
                w, h = int(rng.integers(400, 700)), int(rng.integers(450, 750))
                self.rows.append(
                    _Row(expect, photo.licence, photo.attribution, self._crop_title(photo),
                         None, "jpg", w, h, url_kind=url_kind)
                )
        # missing_source_id: a good image whose row has no id
        for _ in range(per_kind):
            photo, img, region = self._extra_crop(good=True)
            data = _encode(img, "jpg")
            dec = _decode(data)
            self._register_extra(region)
            self.rows.append(
                _row_from_image("missing_source_id", photo, self._crop_title(photo), data, "jpg",
                                dec.size, empty_id=True, region=region)
            )

    # -- layout ------------------------------------------------------------------------

    def assign(self) -> list[_Row]:
        rng = self.rng
        rows = [self.rows[i] for i in rng.permutation(len(self.rows))]
        counts = {s: sum(1 for r in rows if r.source == s) for s in SOURCES}
        free = [r for r in rows if r.source is None and not r.other_source_than_parent]
        dependent = [r for r in rows if r.other_source_than_parent]
        n_total = len(rows)
        # dependent rows land on either side; keep them out of the balance target
        n_wiki = max(0, min(len(free), (n_total - len(dependent)) // 2 - counts["wikimedia"]))
        picks = np.zeros(len(free), dtype=bool)
        picks[rng.permutation(len(free))[:n_wiki]] = True
        for r, wiki in zip(free, picks):
            r.source = "wikimedia" if wiki else "flickr"
        for r in dependent:
            r.source = "flickr" if r.parent.source == "wikimedia" else "wikimedia"
        seq = {"wikimedia": 0, "flickr": 0}
        for r in rows:
            k = seq[r.source]
            seq[r.source] += 1
            if r.empty_id:
                r.source_id = ""
            elif r.source == "wikimedia":
                r.source_id = f"M{7_100_000 + 3 * k}"
            else:
                r.source_id = f"{53_418_000_000 + 7 * k}"
        return rows


def _write_csv(path: Path, header: tuple[str, ...], records: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for rec in records:
            w.writerow([rec[c] for c in header])


def build_demo(out_dir: Path, seed: int = 0, n_variants: int = N_DISTINCT) -> Path:
    """Writes out_dir/images/*, out_dir/manifests/{wikimedia.csv, flickr.jsonl},
    out_dir/expected.csv, out_dir/regions.csv; returns out_dir.

    ``n_variants`` is the number of distinct good images asked for (the shipped originals,
    crops of them and a few generator-made CC BY pictures; never fewer than the originals);
    the photos hold only so many regions that overlap by at most MAX_REGION_IOU (about 110),
    so a larger ask gets what fits. Planted near-duplicates (5 kinds, up to 4 of each: 20 at
    the default) and 3 bad rows of each kind come on top. Existing ``img_*`` files in
    ``out_dir/images`` are removed first so that a rebuild is exact.
    """
    out_dir = Path(out_dir).resolve()
    images = out_dir / "images"
    manifests = out_dir / "manifests"
    images.mkdir(parents=True, exist_ok=True)
    manifests.mkdir(parents=True, exist_ok=True)
    for old in images.glob("img_*"):
        if old.is_file():
            old.unlink()

    b = _Builder(seed, n_variants)
    b.originals()
    b.synthetic_cc_by(min(6, max(0, n_variants // 16)))
    b.variants()
    b.near_duplicates(per_kind=max(1, min(4, round(n_variants / 25))))
    b.bad_rows(per_kind=3)
    rows = b.assign()

    for file_no, r in enumerate(rows, 1):
        name = f"img_{file_no:04d}.{r.ext}"
        if r.url_kind == "file":
            path = images / name
            path.write_bytes(r.data)
            r.url = path.as_uri()
        elif r.url_kind == "missing":
            r.url = (images / name).as_uri()
        elif r.url_kind == "ftp":
            r.url = f"ftp://ftp.example.org/pub/images/{name}"
        else:
            r.url = ""

    ordered = sorted(rows, key=lambda r: (r.source, r.source_id, r.url))
    per_source: dict[str, list[dict]] = {s: [] for s in SOURCES}
    for i, r in enumerate(ordered):
        lic, lic_url = LICENCES[(r.licence, r.source)]
        when = _RETRIEVED_BASE + timedelta(seconds=int(97 * i + (i * i) % 53))
        per_source[r.source].append(
            {
                "source": r.source,
                "source_id": r.source_id,
                "url": r.url,
                "license": lic,
                "license_url": lic_url,
                "attribution": r.attribution,
                "title": r.title,
                "retrieved_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "width": int(r.width),
                "height": int(r.height),
            }
        )
    _write_csv(manifests / MANIFEST_FILES["wikimedia"], MANIFEST_COLUMNS, per_source["wikimedia"])
    with (manifests / MANIFEST_FILES["flickr"]).open("w", encoding="utf-8", newline="\n") as f:
        for rec in per_source["flickr"]:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    expected = [
        {
            "source": r.source,
            "source_id": r.source_id,
            "expect": "missing_source_id" if r.empty_id else r.expect,
            "parent_source_id": r.parent.source_id if r.parent is not None else "",
        }
        for r in ordered
    ]
    _write_csv(out_dir / "expected.csv", EXPECTED_COLUMNS, expected)
    regions = [
        {"source": r.source, "source_id": r.source_id, "origin": r.region.origin,
         **{c: f"{v:.2f}" for c, v in zip(("x0", "y0", "x1", "y1"), r.region.box)},
         "mirrored": int(r.region.mirrored)}
        for r in ordered if r.region is not None
    ]
    _write_csv(out_dir / REGIONS_FILE, REGION_COLUMNS, regions)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-variants", type=int, default=N_DISTINCT)
    args = ap.parse_args(argv)
    print(build_demo(args.out_dir, seed=args.seed, n_variants=args.n_variants))


if __name__ == "__main__":
    main()
