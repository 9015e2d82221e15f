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

FID (`--features inception`, FID protocol version 1, the bridge to model cards that quote
FID): pytorch-fid's protocol on the same images: PIL `convert("RGB")`, uint8 / 255 to float32,
torch bilinear resize to 299x299 (`align_corners=False`, no antialiasing), 2x - 1; the 2048-d
pool3 features of the FID Inception network (gpic.inference.inception) with weights from a
local file; the same statistics and distance.

Beyond the number (docs/evaluation.md): a bootstrap interval over the generated features
with the reference statistics fixed (percentiles shifted by the bootstrap's bias estimate,
see bootstrap_interval), and FD at infinite sample size (Chong & Forsyth 2020: FD at 15
subset sizes from N/10 to N, a line in 1/N, its intercept). Both resample the features kept
in memory, never recompute them, and use tr sqrt(S1 S2) = sum sqrt(eig(R S1 R)) with
R = sqrt(S_ref) computed once: a symmetric eigendecomposition per resample instead of a
general matrix square root (`gpic bench fd`: 8x cheaper at 1024-d, 24x at 2048-d).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from gpic.contracts import IMAGE_EXTENSIONS
from gpic.identity import file_sha256, weights_revision
from gpic.inference.dinov2 import DinoV2Features
from gpic.inference.inception import FID_WEIGHTS_SHA256_PREFIX, InceptionFeatures, weights_file_revision
from gpic.store import atomic_path, read_tar

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
PROTOCOL = ("DINOv2 CLS token after the final layer norm; PIL convert('RGB'), resize((224, 224), BICUBIC), "
            "ImageNet mean/std; float32 forward; float64 mean and covariance; Frechet distance via "
            "scipy.linalg.sqrtm, eps*I added to both covariances if the square root is not finite")
IMAGE_SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)
# (v / 255 - mean) / std for every uint8 v, per channel, computed in float32: a table lookup
# gives bit-identical values to the arithmetic at half its cost.
_NORMALISE = (np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0) - MEAN[:, None]) / STD[:, None]


INCEPTION_PROTOCOL_VERSION = 1
INCEPTION_PROTOCOL = ("FID Inception pool3 features (TensorFlow's 2015-12-05 graph as ported by pytorch-fid, "
                      "weights pt_inception-2015-12-05-6726825d.pth), 2048-d; PIL convert('RGB'), uint8 / 255 "
                      "to float32, torch bilinear resize to 299x299 (align_corners=False, no antialiasing), 2x - 1; "
                      "float32 forward; float64 mean and covariance; Frechet distance via scipy.linalg.sqrtm, "
                      "eps*I added to both covariances if the square root is not finite")
INCEPTION_SIZE = 299
DEFAULT_RESAMPLES = 200  # the interval's ends move ~8% of its half-width between seeds (docs)
DEFAULT_POINTS = 15  # FD-infinity subset sizes, as Chong & Forsyth
_CHUNK = 4096  # rows per product when resampling features


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


def preprocess_inception(image: Image.Image) -> np.ndarray:
    """One image -> (3, 299, 299) float32 FID Inception input, as pytorch-fid: convert("RGB"),
    ToTensor's uint8 / 255, `F.interpolate(size=(299, 299), mode="bilinear",
    align_corners=False)` (pytorch-fid resizes inside its network; per image here, which is the
    same for every size and lets sizes differ within a batch), then 2x - 1."""
    import torch
    import torch.nn.functional as F

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous().float().div(255)
    x = F.interpolate(x[None], size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)[0]
    return (2 * x - 1).numpy()


def decode(name: str, data: bytes, transform: Callable[[Image.Image], np.ndarray] | None = None) -> np.ndarray:
    """Encoded bytes -> model input (`transform`: the protocol's preprocessing, FD-DINOv2's by
    default); an undecodable image is an error naming it, since a silently skipped image would
    change the statistics."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (transform or preprocess)(image)
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ValueError(f"cannot decode image {name!r}: {type(exc).__name__}: {exc}") from None


def pixel_batches(images: Iterable[tuple[str, bytes]], batch_size: int, workers: int = 1,
                  transform: Callable[[Image.Image], np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """(n, 3, 224, 224) batches (the protocol's size with `transform`); with workers > 1 the
    next batch decodes in threads (PIL and numpy release the GIL) while the caller runs the
    model on this one, at most two batches in memory."""
    it = iter(images)
    chunks = iter(lambda: list(islice(it, batch_size)), [])
    if workers <= 1:
        for chunk in chunks:
            yield np.stack([decode(name, data, transform) for name, data in chunk])
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = None
        for chunk in chunks:
            futures = [pool.submit(decode, name, data, transform) for name, data in chunk]
            if pending is not None:
                yield np.stack([f.result() for f in pending])
            pending = futures
        if pending is not None:
            yield np.stack([f.result() for f in pending])


# ---------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """One feature protocol: its name (recorded with every statistics), version and text, the
    JSON field of its distance, its default reference file and per-shard folder under
    results/eval/, its preprocessing, and how its network and the network's revision are
    loaded from a local path."""

    features: str  # the `--features` value
    name: str
    key: str
    version: int
    text: str
    reference_file: str
    shard_folder: str
    transform: Callable[[Image.Image], np.ndarray]
    load: Callable[[Path, str], object]
    revision: Callable[[Path], str]


def _load_dinov2(path: Path, device: str) -> DinoV2Features:
    return DinoV2Features(path, device)  # the module global, looked up per call


def _load_inception(path: Path, device: str) -> InceptionFeatures:
    return InceptionFeatures(path, device)


DINOV2 = Protocol("dinov2", "FD-DINOv2", "fd_dinov2", PROTOCOL_VERSION, PROTOCOL, "fd_dinov2_test.npz", "test",
                  preprocess, _load_dinov2, weights_revision)
INCEPTION = Protocol("inception", "FID", "fid", INCEPTION_PROTOCOL_VERSION, INCEPTION_PROTOCOL,
                     "fid_inception_test.npz", "test_inception", preprocess_inception, _load_inception,
                     weights_file_revision)
PROTOCOLS = {p.features: p for p in (DINOV2, INCEPTION)}
_BY_NAME = {p.name: p for p in PROTOCOLS.values()}


def protocol_of(features: str | Protocol) -> Protocol:
    if isinstance(features, Protocol):
        return features
    if features not in PROTOCOLS:
        raise ValueError(f"unknown features {features!r}: one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[features]


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
    protocol_name: str = DINOV2.name  # files written before FID existed are FD-DINOv2's

    @classmethod
    def empty(cls, dim: int, model_id: str, model_revision: str, protocol: Protocol = DINOV2) -> Stats:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)), model_id, model_revision, protocol.version,
                   protocol_name=protocol.name)

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

    def save(self, path: str | Path, features: np.ndarray | None = None) -> None:
        """npz without pickles: the sums (to combine further), mean and covariance (for other
        tools), the identity fields as 0-d arrays and, if given, the per-image features these
        statistics were made from (so an interval can be computed again without the model)."""
        protocol = _BY_NAME.get(self.protocol_name)
        arrays = {"count": np.int64(self.count), "sum": self.sum, "sum_outer": self.sum_outer,
                  "model_id": np.str_(self.model_id), "model_revision": np.str_(self.model_revision),
                  "protocol_version": np.int64(self.protocol_version),
                  "protocol": np.str_(protocol.text if protocol else ""),
                  "protocol_name": np.str_(self.protocol_name), "sources": np.str_(json.dumps(self.sources))}
        if self.count >= 2:
            arrays.update(mean=self.mean, covariance=self.covariance)
        if features is not None:
            if features.shape != (self.count, self.sum.shape[0]):
                raise ValueError(f"features {features.shape} do not match statistics of {self.count} x "
                                 f"{self.sum.shape[0]}")
            arrays["features"] = np.asarray(features, dtype=np.float32)
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
                       json.loads(str(data["sources"])) if "sources" in data.files else [],
                       str(data["protocol_name"]) if "protocol_name" in data.files else DINOV2.name)


def load_features(path: str | Path) -> np.ndarray | None:
    """The per-image features stored beside statistics (`Stats.save(features=...)`), or None."""
    with np.load(path, allow_pickle=False) as data:
        return data["features"] if "features" in data.files else None


def check_compatible(a: Stats, b: Stats, names: tuple[str, str] = ("samples", "reference")) -> None:
    """Refuse statistics from a different protocol (FD-DINOv2 against FID), protocol version
    or weights revision (the model folder's name may differ: the same weights copied elsewhere
    are the same model)."""
    for attr in ("protocol_name", "protocol_version", "model_revision"):
        if getattr(a, attr) != getattr(b, attr):
            raise StatsMismatch(
                f"{attr} differs: {names[0]} {getattr(a, attr)} ({a.model_id}) vs {names[1]} "
                f"{getattr(b, attr)} ({b.model_id}); {a.protocol_name} statistics compare only with the same "
                "protocol, protocol version and model weights")
    if a.sum.shape != b.sum.shape:
        raise StatsMismatch(f"feature dimension differs: {names[0]} {a.sum.shape[0]} vs {names[1]} {b.sum.shape[0]}")


def combine(parts: list[Stats]) -> Stats:
    """One statistics from several (e.g. per shard); equal to one pass over all images."""
    if not parts:
        raise ValueError("nothing to combine")
    first = parts[0]
    total = Stats.empty(first.sum.shape[0], first.model_id, first.model_revision)
    total.protocol_version, total.protocol_name = first.protocol_version, first.protocol_name
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
    """FD-DINOv2 (or FID) of two statistics, after checking they are comparable."""
    check_compatible(samples, reference)
    return frechet_distance(samples.mean, samples.covariance, reference.mean, reference.covariance)


# ---------------------------------------------------------------------------
# Uncertainty and sample-size bias: resampling the stored features
# ---------------------------------------------------------------------------


class ReferenceDistance:
    """FDs against one fixed reference of many multisets of the same stored features (subsets,
    bootstrap resamples), without recomputing a feature. Prepared once: the features centred
    and projected by R = sqrt(S_ref) (symmetric, by eigendecomposition), so per multiset
    tr sqrt(S S_ref) = sum sqrt(eig(R S R)) is one weighted Gram matrix and one symmetric
    eigendecomposition, in float64, on `device` (torch)."""

    def __init__(self, features: np.ndarray, reference: Stats, device: str = "cpu"):
        import torch

        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != reference.sum.shape[0]:
            raise ValueError(f"features {features.shape} do not match the reference's dimension "
                             f"{reference.sum.shape[0]}")
        if len(features) < 2:
            raise ValueError(f"resampling needs at least 2 images, there are {len(features)}")
        self.device = device
        x = torch.as_tensor(features, device=device).to(torch.float64)
        center = x.mean(0)
        self.x = x - center
        cov = torch.as_tensor(reference.covariance, dtype=torch.float64, device=device)
        w, v = torch.linalg.eigh(cov)
        self.y = self.x @ ((v * w.clamp(min=0).sqrt()) @ v.T)
        self.norms = (self.x * self.x).sum(1)
        self.offset = center - torch.as_tensor(reference.mean, dtype=torch.float64, device=device)
        self.ref_trace = float(torch.trace(cov))
        self.n = len(features)

    def __call__(self, counts: np.ndarray) -> float:
        """FD of the multiset holding image i `counts[i]` times (0/1 for a subset, a bootstrap
        draw's multiplicities for a resample), unbiased covariance as for `fd`."""
        import torch

        counts = np.asarray(counts)
        n = int(counts.sum())
        if n < 2:
            raise ValueError("a covariance needs at least 2 images")
        nonzero = np.flatnonzero(counts)
        dim = self.y.shape[1]
        gram = torch.zeros((dim, dim), dtype=torch.float64, device=self.device)
        sum_x = torch.zeros(dim, dtype=torch.float64, device=self.device)
        sum_y = torch.zeros(dim, dtype=torch.float64, device=self.device)
        sum_norms = 0.0
        for start in range(0, len(nonzero), _CHUNK):
            rows = torch.as_tensor(nonzero[start:start + _CHUNK], device=self.device)
            c = torch.as_tensor(counts[nonzero[start:start + _CHUNK]], dtype=torch.float64, device=self.device)
            y = self.y[rows]
            gram += y.T @ (y * c[:, None])
            sum_y += c @ y
            sum_x += c @ self.x[rows]
            sum_norms += float(c @ self.norms[rows])
        mean_x, mean_y = sum_x / n, sum_y / n
        cov_y = (gram - n * torch.outer(mean_y, mean_y)) / (n - 1)
        eig = torch.linalg.eigvalsh((cov_y + cov_y.T) / 2).clamp(min=0)
        trace = (sum_norms - n * float(mean_x @ mean_x)) / (n - 1)
        diff = self.offset + mean_x
        distance = float(diff @ diff) + trace + self.ref_trace - 2 * float(eig.sqrt().sum())
        return max(distance, 0.0)


def bootstrap_interval(dist: ReferenceDistance, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> dict:
    """Bootstrap interval of FD at this N, the reference statistics fixed: `resamples` draws
    of N of the N generated features with replacement (numpy default_rng(seed)) and the FD of
    each. FD is biased upward at finite N, and a resample (about 63% distinct images) adds
    that bias once more: the resamples' FDs sit above FD at N by about its own bias, often by
    more than their spread, so their plain (1 -/+ level)/2 percentiles can miss the expected
    FD at N altogether (in 95-100% of the runs of tests/test_fd_interval.py's simulation). The
    interval is those percentiles shifted down by the bootstrap's bias estimate (mean of the
    resamples minus FD at N): the spread of FD at N from sampling, centred on the number
    reported. Recorded beside it: the plain percentiles, the bias, and the resamples'
    standard deviation (the error bar of FD at N)."""
    if resamples < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 resamples, not {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    rng = np.random.default_rng(seed)
    n = dist.n
    estimate = dist(np.ones(n, dtype=np.int64))
    fds = np.array([dist(np.bincount(rng.integers(0, n, n), minlength=n)) for _ in range(resamples)])
    low, high = np.percentile(fds, [50 * (1 - level), 50 * (1 + level)])
    bias = float(fds.mean() - estimate)
    return {"low": max(float(low) - bias, 0.0), "high": max(float(high) - bias, 0.0), "level": level,
            "std": float(fds.std(ddof=1)), "bias": bias, "percentile_low": float(low),
            "percentile_high": float(high), "resamples": resamples, "seed": seed,
            "method": "bootstrap over the generated features (N of N with replacement), reference statistics "
                      "fixed; percentile interval shifted by the bootstrap bias estimate"}


def infinity_sizes(n: int, points: int = DEFAULT_POINTS) -> np.ndarray:
    """Subset sizes for FD-infinity: `points` evenly spaced from N/10 to N (Chong & Forsyth
    use 15 from 5,000 to 50,000), at least 2 images, duplicates dropped."""
    return np.unique(np.linspace(max(n // 10, 2), n, points).astype(np.int64))


def fd_infinity(dist: ReferenceDistance, points: int = DEFAULT_POINTS, seed: int = 0) -> dict:
    """FD at infinite sample size (Chong & Forsyth, "Effectively Unbiased FID and Inception
    Score and where to find them", CVPR 2020): FD of a random subset (without replacement,
    numpy default_rng(seed), a fresh permutation per size) at each of `infinity_sizes`, a
    least-squares line FD = a + b / N through them, and FD-infinity = a. The expected bias of
    FD at N is linear in 1/N to first order, so the intercept removes it."""
    sizes = infinity_sizes(dist.n, points)
    if len(sizes) < 3:
        raise ValueError(f"FD-infinity needs at least 3 subset sizes, {dist.n} images give {len(sizes)}")
    rng = np.random.default_rng(seed)
    fds = []
    for size in sizes:
        counts = np.zeros(dist.n, dtype=np.int64)
        counts[rng.permutation(dist.n)[:size]] = 1
        fds.append(dist(counts))
    slope, intercept = np.polyfit(1.0 / sizes, fds, 1)
    return {"value": float(intercept), "slope": float(slope), "sizes": sizes.tolist(), "fds": fds,
            "seed": seed, "method": "least-squares line FD = a + b/N over random subsets from N/10 to N "
                                    "(Chong & Forsyth 2020); FD-infinity = a"}


# ---------------------------------------------------------------------------
# Inputs: folders, tar shards, npz statistics
# ---------------------------------------------------------------------------


def folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_sha256(folder: Path) -> str:
    """One hash of a folder's images: sha256 over 'relative/name sha256' lines in name order."""
    lines = "".join(f"{p.relative_to(folder).as_posix()} {file_sha256(p)}\n" for p in folder_images(folder))
    return hashlib.sha256(lines.encode()).hexdigest()


def empty_stats(features, protocol: Protocol = DINOV2) -> Stats:
    """Statistics of no images, carrying the model's identity and the protocol's."""
    return Stats.empty(features.dim, features.model_id, features.revision, protocol)


def tar_images(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Image members of a tar (webdataset shard: the `{key}.json` records are skipped), in
    name order, read with the package's safe tar reader."""
    members = read_tar(path)
    for name in sorted(members):
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            yield name, members[name]


def image_features(images: Iterable[tuple[str, bytes]], features, batch_size: int = 32, workers: int = 1,
                   protocol: Protocol = DINOV2) -> Iterator[np.ndarray]:
    """Per-batch (n, dim) float32 features under the protocol's preprocessing."""
    for pixels in pixel_batches(images, batch_size, workers, protocol.transform):
        yield features(pixels)


def image_stats(images: Iterable[tuple[str, bytes]], features, batch_size: int = 32, workers: int = 1,
                protocol: Protocol = DINOV2) -> Stats:
    stats = empty_stats(features, protocol)
    for batch in image_features(images, features, batch_size, workers, protocol):
        stats.update(batch)
    return stats


def shard_stats(tar: str | Path, features, batch_size: int = 32, workers: int = 1,
                sha256: str | None = None, protocol: Protocol = DINOV2) -> Stats:
    """Statistics of one tar shard, recording its name, sha256 and image count."""
    stats = image_stats(tar_images(tar), features, batch_size, workers, protocol)
    stats.sources = [{"name": Path(tar).name, "sha256": sha256 or file_sha256(tar), "count": stats.count}]
    return stats


def reference_stats(tars: list[str | Path], out: str | Path, cfg: dict, workers: int = 1,
                    shard_dir: str | Path | None = None, features: str | Protocol = "dinov2") -> Stats:
    """The test split's reference statistics (`features`: dinov2 or inception; cfg["model"] is
    the DINOv2 folder or the FID Inception weights file). Each shard's statistics are saved
    to `shard_dir` (default: `<out folder>/test/`, `test_inception/` for FID) and reused by a
    later run when the tar's sha256, the protocol, the weights revision and the protocol
    version match, so a killed job resumes at the next shard and a changed shard recomputes
    only itself."""
    protocol = protocol_of(features)
    out = Path(out)
    shard_dir = Path(shard_dir) if shard_dir else out.parent / protocol.shard_folder
    revision = protocol.revision(Path(cfg["model"]))
    network = None
    parts = []
    for tar in map(Path, tars):
        cached, sha = shard_dir / f"{tar.stem}.npz", file_sha256(tar)
        if cached.exists():
            part = Stats.load(cached)
            if (part.protocol_name, part.model_revision, part.protocol_version,
                    [s["sha256"] for s in part.sources]) == (protocol.name, revision, protocol.version, [sha]):
                log.info("%s: reusing %s (%d images)", tar.name, cached, part.count)
                parts.append(part)
                continue
        if network is None:
            network = protocol.load(Path(cfg["model"]), cfg["device"])
        part = shard_stats(tar, network, cfg["batch_size"], workers, sha, protocol)
        part.save(cached)
        log.info("%s: %d images -> %s", tar.name, part.count, cached)
        parts.append(part)
    total = combine(parts)
    total.save(out)
    log.info("%s reference statistics of %d images from %d shards -> %s", protocol.name, total.count, len(parts),
             out)
    return total


def parse_shards(spec: str) -> list[int]:
    """'0-7' or '0-3,8,10-11' -> shard numbers, in order, each once."""
    numbers: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"--reference-shards {spec!r}: expected numbers and ranges such as 0-7 or 0-3,8")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise ValueError(f"--reference-shards {spec!r}: range {first}-{last} is empty")
        numbers += [i for i in range(first, last + 1) if i not in numbers]
    return numbers


def shard_number(path: Path) -> int | None:
    """The shard number ending a statistics file's name (gpic_test_00003.npz -> 3)."""
    match = re.search(r"(\d+)$", path.stem)
    return int(match[1]) if match else None


def reference_from_shards(shard_dir: str | Path, spec: str) -> tuple[Stats, dict]:
    """Reference statistics of some test shards for a quick look: the per-shard statistics
    `fd-reference` and the eval job keep (`eval/test/gpic_test_NNNNN.npz`), chosen by shard
    number and added up exactly (count, sum, sum of outer products), and a description saying
    how many shards and images were used out of those available."""
    shard_dir = Path(shard_dir)
    files = {shard_number(p): p for p in sorted(shard_dir.glob("*.npz")) if shard_number(p) is not None}
    if not files:
        raise FileNotFoundError(f"no per-shard statistics (*_NNNNN.npz) in {shard_dir}")
    wanted = parse_shards(spec)
    missing = [i for i in wanted if i not in files]
    if missing:
        raise ValueError(f"{shard_dir}: no statistics for test shard(s) {missing}; it has shards "
                         f"{min(files)}-{max(files)} ({len(files)} files)")
    parts = [Stats.load(files[i]) for i in wanted]
    total = combine(parts)
    listing = "".join(f"{files[i].name} {file_sha256(files[i])}\n" for i in wanted)
    return total, {"path": str(shard_dir), "kind": "shards", "shards": spec, "shards_used": len(parts),
                   "shards_available": len(files), "files": [files[i].name for i in wanted],
                   "sha256": hashlib.sha256(listing.encode()).hexdigest()}


def samples_features(path: Path, model: Path | None, device: str = "cpu", batch_size: int = 32, workers: int = 1,
                     expect: Stats | None = None, features: str | Protocol = "dinov2",
                     ) -> tuple[Stats, dict, np.ndarray | None]:
    """Statistics of SAMPLES (a folder of images, a tar, or an npz of statistics), a
    description of the input (kind, sha256) and the per-image features (float32; for an npz,
    those stored with it, else None). With `expect`, the model is checked against it before
    any image is decoded."""
    protocol = protocol_of(features)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples not found: {path}")
    if path.is_file() and path.suffix == ".npz":
        stats, stored = Stats.load(path), load_features(path)
        if stored is not None and len(stored) != stats.count:
            raise ValueError(f"{path}: {len(stored)} stored features for statistics of {stats.count} images")
        return stats, {"path": str(path), "kind": "npz", "sha256": file_sha256(path)}, stored
    if path.is_dir():
        kind, sha, images = "folder", folder_sha256(path), ((str(p), p.read_bytes()) for p in folder_images(path))
    elif path.suffix == ".tar":
        kind, sha, images = "tar", file_sha256(path), tar_images(path)
    else:
        raise ValueError(f"samples must be a folder of images, a .tar shard or an .npz of statistics: {path}")
    if model is None:
        option = "--inception-weights" if protocol is INCEPTION else "--model"
        raise ValueError(f"{option} is needed to compute features of the {kind} {path}")
    network = protocol.load(Path(model), device)
    if expect is not None:
        check_compatible(empty_stats(network, protocol), expect)
    stats = empty_stats(network, protocol)
    batches = []
    for batch in image_features(images, network, batch_size, workers, protocol):
        stats.update(batch)
        batches.append(batch)
    stats.sources = [{"name": path.name, "sha256": sha, "count": stats.count}]
    kept = np.concatenate(batches) if batches else np.zeros((0, stats.sum.shape[0]), dtype=np.float32)
    return stats, {"path": str(path), "kind": kind, "sha256": sha}, kept


def samples_stats(path: Path, model: Path | None, device: str = "cpu", batch_size: int = 32, workers: int = 1,
                  expect: Stats | None = None, features: str | Protocol = "dinov2") -> tuple[Stats, dict]:
    """Statistics of SAMPLES and a description of the input (see samples_features)."""
    stats, source, _ = samples_features(path, model, device, batch_size, workers, expect, features)
    return stats, source


def compare(samples: Path, ref: Path, model: Path | None = None, device: str = "cpu", batch_size: int = 32,
            workers: int = 1, *, features: str = "dinov2", reference_shards: str | None = None,
            shard_dir: Path | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
            infinity_points: int = DEFAULT_POINTS, level: float = 0.95, save_features: Path | None = None) -> dict:
    """`gpic fd`: the distance, its bootstrap interval and FD-infinity (both from the samples'
    features, resampled: none when SAMPLES is statistics without stored features), and
    everything needed to reproduce them. `reference_shards` scores against some test shards'
    statistics (in `shard_dir`, default REF's folder / test, test_inception for FID) instead
    of the whole split's."""
    protocol = protocol_of(features)
    if reference_shards:
        shard_dir = Path(shard_dir) if shard_dir else Path(ref).parent / protocol.shard_folder
        reference, ref_source = reference_from_shards(shard_dir, reference_shards)
    else:
        reference = Stats.load(ref)
        ref_source = {"path": str(ref), "kind": "npz", "sha256": file_sha256(ref),
                      "shards_used": len(reference.sources)}
    if reference.protocol_name != protocol.name:  # checked before the samples' features are computed
        other = next((p.features for p in PROTOCOLS.values() if p.name == reference.protocol_name), "?")
        raise StatsMismatch(f"{ref_source['path']}: {reference.protocol_name} statistics, not {protocol.name} "
                            f"(--features {other} reads them)")
    if reference.count < 2:
        raise ValueError(f"{ref_source['path']}: reference statistics of {reference.count} image(s); FD needs at "
                         "least 2 (the test split of that run is empty or nearly so)")
    stats, source, kept = samples_features(samples, model, device, batch_size, workers, expect=reference,
                                           features=protocol)
    distance = fd(stats, reference)

    def describe(s: Stats, extra: dict) -> dict:
        return {**extra, "count": s.count, "model_id": s.model_id, "model_revision": s.model_revision}

    report = {protocol.key: distance, "protocol_name": protocol.name, "protocol_version": protocol.version,
              "protocol": protocol.text, "features": protocol.features,
              "samples": describe(stats, source), "reference": describe(reference, ref_source)}
    if protocol is INCEPTION:
        report["official_weights"] = stats.model_revision.startswith(FID_WEIGHTS_SHA256_PREFIX)
    report["interval"] = report["fd_infinity"] = None
    notes = []
    if kept is None:
        if resamples or infinity_points:
            notes.append(f"{samples} holds statistics without per-image features: no interval and no FD-infinity "
                         "(`gpic fd --save-features` keeps the features)")
    elif resamples or infinity_points:
        dist = ReferenceDistance(kept, reference, device)
        if resamples:
            report["interval"] = bootstrap_interval(dist, resamples, seed, level)
        if infinity_points:
            try:
                report["fd_infinity"] = fd_infinity(dist, infinity_points, seed)
            except ValueError as exc:
                notes.append(f"no FD-infinity: {exc}")
            else:
                smallest, dim = report["fd_infinity"]["sizes"][0], stats.sum.shape[0]
                if smallest < 2 * dim:
                    notes.append(f"FD-infinity extrapolates from subsets of {smallest} images, fewer than twice "
                                 f"the {dim} feature dimensions: it underestimates (docs/evaluation.md); use "
                                 f"N >= {20 * dim}")
    report["notes"] = notes
    if save_features is not None:
        if kept is None:
            raise ValueError(f"--save-features: {samples} holds no per-image features to save")
        stats.save(save_features, features=kept)
    return report
