"""FD-DINOv2: Frechet distance between DINOv2 feature statistics of generated images and of
GPIC's held-out test split (docs/evaluation.md). Papers cite the number, so the protocol is
written out here rather than left to an image processor's defaults, is versioned, and two
statistics are only compared when they share the protocol version and the weights revision.

Protocol (PROTOCOL_VERSION 1): decode with PIL, `convert("RGB")` (no EXIF rotation, as in
pytorch-fid, dgm-eval and the training loader), `resize((224, 224), BICUBIC)` (aspect ratio
not kept), scale to [0, 1], ImageNet mean/std; float32 forward of a transformers
`Dinov2Model`; the feature is the CLS token after the final layer norm
(`last_hidden_state[:, 0]`). Statistics are float64 running sums (count, sum, sum of outer
products), so memory does not grow with the number of images and per-shard statistics
combine exactly into one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from gpic.identity import file_sha256, weights_revision
from gpic.inference.dinov2 import DinoV2Features
from gpic.store import atomic_path, read_tar

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
PROTOCOL = ("DINOv2 CLS token after the final layer norm; PIL convert('RGB'), resize((224, 224), BICUBIC), "
            "ImageNet mean/std; float32 forward; float64 mean and covariance; Frechet distance via "
            "scipy.linalg.sqrtm, eps*I added to both covariances if the square root is not finite")
IMAGE_SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# (v / 255 - mean) / std for every uint8 v, per channel, computed in float32: a table lookup
# gives bit-identical values to the arithmetic at half its cost.
_NORMALISE = (np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0) - MEAN[:, None]) / STD[:, None]


class StatsMismatch(ValueError):
    """Two statistics that must not be compared; the message names the field that differs."""


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------


def preprocess(image: Image.Image) -> np.ndarray:
    """One image -> (3, 224, 224) float32 model input: convert("RGB"), resize((224, 224),
    BICUBIC), then (v / 255 - mean) / std per channel in float32."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
    return np.stack([np.take(_NORMALISE[c], pixels[..., c]) for c in range(3)])


def decode(name: str, data: bytes) -> np.ndarray:
    """Encoded bytes -> model input; an undecodable image is an error naming it, since a
    silently skipped image would change the statistics."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return preprocess(image)
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ValueError(f"cannot decode image {name!r}: {type(exc).__name__}: {exc}") from None


def pixel_batches(images: Iterable[tuple[str, bytes]], batch_size: int, workers: int = 1) -> Iterator[np.ndarray]:
    """(n, 3, 224, 224) batches; with workers > 1 the next batch decodes in threads (PIL and
    numpy release the GIL) while the caller runs the model on this one, at most two batches
    in memory."""
    it = iter(images)
    chunks = iter(lambda: list(islice(it, batch_size)), [])
    if workers <= 1:
        for chunk in chunks:
            yield np.stack([decode(name, data) for name, data in chunk])
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = None
        for chunk in chunks:
            futures = [pool.submit(decode, name, data) for name, data in chunk]
            if pending is not None:
                yield np.stack([f.result() for f in pending])
            pending = futures
        if pending is not None:
            yield np.stack([f.result() for f in pending])


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


@dataclass
class Stats:
    """Sufficient statistics of a feature set: float64 count, sum and sum of outer products
    (exactly additive, so shards combine), plus what made them."""

    count: int
    sum: np.ndarray
    sum_outer: np.ndarray
    model_id: str
    model_revision: str
    protocol_version: int = PROTOCOL_VERSION
    sources: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, dim: int, model_id: str, model_revision: str) -> Stats:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)), model_id, model_revision)

    def update(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64)
        self.count += len(f)
        self.sum += f.sum(axis=0)
        self.sum_outer += f.T @ f

    @property
    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("statistics of zero images have no mean")
        return self.sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased sample covariance (n - 1), as np.cov and pytorch-fid."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 images, these statistics have {self.count}")
        return (self.sum_outer - np.outer(self.sum, self.sum) / self.count) / (self.count - 1)

    def save(self, path: str | Path) -> None:
        """npz without pickles: the sums (to combine further), mean and covariance (for other
        tools), and the identity fields as 0-d arrays."""
        arrays = {"count": np.int64(self.count), "sum": self.sum, "sum_outer": self.sum_outer,
                  "model_id": np.str_(self.model_id), "model_revision": np.str_(self.model_revision),
                  "protocol_version": np.int64(self.protocol_version), "protocol": np.str_(PROTOCOL),
                  "sources": np.str_(json.dumps(self.sources))}
        if self.count >= 2:
            arrays.update(mean=self.mean, covariance=self.covariance)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Stats:
        with np.load(path, allow_pickle=False) as data:
            missing = {"count", "sum", "sum_outer", "model_id", "model_revision", "protocol_version"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not FD-DINOv2 statistics, missing {sorted(missing)}")
            return cls(int(data["count"]), data["sum"].astype(np.float64), data["sum_outer"].astype(np.float64),
                       str(data["model_id"]), str(data["model_revision"]), int(data["protocol_version"]),
                       json.loads(str(data["sources"])) if "sources" in data.files else [])


def check_compatible(a: Stats, b: Stats, names: tuple[str, str] = ("samples", "reference")) -> None:
    """Refuse statistics from a different protocol version or weights revision (the model
    folder's name may differ: the same weights copied elsewhere are the same model)."""
    for attr in ("protocol_version", "model_revision"):
        if getattr(a, attr) != getattr(b, attr):
            raise StatsMismatch(
                f"{attr} differs: {names[0]} {getattr(a, attr)} ({a.model_id}) vs {names[1]} "
                f"{getattr(b, attr)} ({b.model_id}); FD-DINOv2 statistics compare only with the same "
                "protocol version and model weights")
    if a.sum.shape != b.sum.shape:
        raise StatsMismatch(f"feature dimension differs: {names[0]} {a.sum.shape[0]} vs {names[1]} {b.sum.shape[0]}")


def combine(parts: list[Stats]) -> Stats:
    """One statistics from several (e.g. per shard); equal to one pass over all images."""
    if not parts:
        raise ValueError("nothing to combine")
    first = parts[0]
    total = Stats.empty(first.sum.shape[0], first.model_id, first.model_revision)
    total.protocol_version = first.protocol_version
    for part in parts:
        check_compatible(part, first, ("part", "first part"))
        total.count += part.count
        total.sum += part.sum
        total.sum_outer += part.sum_outer
        total.sources += part.sources
    return total


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), in float64.

    As in pytorch-fid and dgm-eval: if the square root of the product is not finite (nearly
    singular covariances, e.g. fewer images than dimensions), eps*I is added to both
    covariances; imaginary parts from round-off are dropped (an error if any diagonal one
    exceeds 1e-3); the result is clamped at zero, which round-off can cross for equal sets."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: mean {mu1.shape} vs {mu2.shape}, covariance {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("sqrtm of the covariance product is not finite; adding %g to the diagonals", eps)
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(np.diagonal(covmean).imag))
        if largest > 1e-3:
            raise ValueError(f"sqrtm of the covariance product has an imaginary component of {largest:.3g}")
        covmean = covmean.real
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return max(float(distance), 0.0)


def fd(samples: Stats, reference: Stats) -> float:
    """FD-DINOv2 of two statistics, after checking they are comparable."""
    check_compatible(samples, reference)
    return frechet_distance(samples.mean, samples.covariance, reference.mean, reference.covariance)


# ---------------------------------------------------------------------------
# Inputs: folders, tar shards, npz statistics
# ---------------------------------------------------------------------------


def folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_sha256(folder: Path) -> str:
    """One hash of a folder's images: sha256 over 'relative/name sha256' lines in name order."""
    lines = "".join(f"{p.relative_to(folder).as_posix()} {file_sha256(p)}\n" for p in folder_images(folder))
    return hashlib.sha256(lines.encode()).hexdigest()


def empty_stats(features: DinoV2Features) -> Stats:
    """Statistics of no images, carrying the model's identity."""
    return Stats.empty(features.dim, features.model_id, features.revision)


def tar_images(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Image members of a tar (webdataset shard: the `{key}.json` records are skipped), in
    name order, read with the package's safe tar reader."""
    members = read_tar(path)
    for name in sorted(members):
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            yield name, members[name]


def image_stats(images: Iterable[tuple[str, bytes]], features: DinoV2Features, batch_size: int = 32,
                workers: int = 1) -> Stats:
    stats = empty_stats(features)
    for pixels in pixel_batches(images, batch_size, workers):
        stats.update(features(pixels))
    return stats


def shard_stats(tar: str | Path, features: DinoV2Features, batch_size: int = 32, workers: int = 1,
                sha256: str | None = None) -> Stats:
    """Statistics of one tar shard, recording its name, sha256 and image count."""
    stats = image_stats(tar_images(tar), features, batch_size, workers)
    stats.sources = [{"name": Path(tar).name, "sha256": sha256 or file_sha256(tar), "count": stats.count}]
    return stats


def reference_stats(tars: list[str | Path], out: str | Path, cfg: dict, workers: int = 1,
                    shard_dir: str | Path | None = None) -> Stats:
    """The test split's reference statistics. Each shard's statistics are saved to
    `shard_dir` (default: `<out folder>/test/`) and reused by a later run when the tar's
    sha256, the weights revision and the protocol version match, so a killed job resumes
    at the next shard and a changed shard recomputes only itself."""
    out = Path(out)
    shard_dir = Path(shard_dir) if shard_dir else out.parent / "test"
    revision = weights_revision(cfg["model"])
    features = None
    parts = []
    for tar in map(Path, tars):
        cached, sha = shard_dir / f"{tar.stem}.npz", file_sha256(tar)
        if cached.exists():
            part = Stats.load(cached)
            if (part.model_revision, part.protocol_version, [s["sha256"] for s in part.sources]) == (
                    revision, PROTOCOL_VERSION, [sha]):
                log.info("%s: reusing %s (%d images)", tar.name, cached, part.count)
                parts.append(part)
                continue
        if features is None:
            features = DinoV2Features(cfg["model"], cfg["device"])
        part = shard_stats(tar, features, cfg["batch_size"], workers, sha)
        part.save(cached)
        log.info("%s: %d images -> %s", tar.name, part.count, cached)
        parts.append(part)
    total = combine(parts)
    total.save(out)
    log.info("reference statistics of %d images from %d shards -> %s", total.count, len(parts), out)
    return total


def samples_stats(path: Path, model: Path | None, device: str = "cpu", batch_size: int = 32, workers: int = 1,
                  expect: Stats | None = None) -> tuple[Stats, dict]:
    """Statistics of SAMPLES (a folder of images, a tar, or an npz of statistics) and a
    description of the input (kind, sha256). With `expect`, the model is checked against it
    before any image is decoded."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples not found: {path}")
    if path.is_file() and path.suffix == ".npz":
        return Stats.load(path), {"path": str(path), "kind": "npz", "sha256": file_sha256(path)}
    if path.is_dir():
        kind, sha, images = "folder", folder_sha256(path), ((str(p), p.read_bytes()) for p in folder_images(path))
    elif path.suffix == ".tar":
        kind, sha, images = "tar", file_sha256(path), tar_images(path)
    else:
        raise ValueError(f"samples must be a folder of images, a .tar shard or an .npz of statistics: {path}")
    if model is None:
        raise ValueError(f"--model is needed to compute features of the {kind} {path}")
    features = DinoV2Features(model, device)
    if expect is not None:
        check_compatible(empty_stats(features), expect)
    stats = image_stats(images, features, batch_size, workers)
    stats.sources = [{"name": path.name, "sha256": sha, "count": stats.count}]
    return stats, {"path": str(path), "kind": kind, "sha256": sha}


def compare(samples: Path, ref: Path, model: Path | None = None, device: str = "cpu", batch_size: int = 32,
            workers: int = 1) -> dict:
    """`gpic fd`: the distance and everything needed to reproduce it."""
    reference = Stats.load(ref)
    if reference.count < 2:  # checked before the samples' features are computed
        raise ValueError(f"{ref}: reference statistics of {reference.count} image(s); FD needs at least 2 "
                         "(the test split of that run is empty or nearly so)")
    stats, source = samples_stats(samples, model, device, batch_size, workers, expect=reference)
    distance = fd(stats, reference)

    def describe(s: Stats, extra: dict) -> dict:
        return {**extra, "count": s.count, "model_id": s.model_id, "model_revision": s.model_revision}

    return {"fd_dinov2": distance, "protocol_version": PROTOCOL_VERSION, "protocol": PROTOCOL,
            "samples": describe(stats, source),
            "reference": describe(reference, {"path": str(ref), "kind": "npz", "sha256": file_sha256(ref)})}
