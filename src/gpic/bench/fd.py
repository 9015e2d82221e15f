"""`gpic bench fd`: our FD-DINOv2 preprocessing and forward against the checkpoint's
AutoImageProcessor on the same JPEG bytes; then the cost of the bootstrap interval, which
resamples stored features (never recomputes them), at DINOv2-L's 1024 and Inception's 2048
dimensions, against a general matrix square root per resample and against the FID Inception
network's feature extraction."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gpic.bench import best_of, gpic_sized_jpegs
from gpic.fd import DEFAULT_RESAMPLES, ReferenceDistance, Stats, decode, frechet_distance, preprocess_inception
from gpic.inference.dinov2 import DinoV2Features


def bench_fd(model: str | Path, n: int = 64, batch_size: int = 32, repeat: int = 3, device: str = "cpu") -> dict:
    """Feature extraction images/s from the same JPEG bytes: ours (PIL resize + numpy
    normalisation + forward) against the usual path (decode, the checkpoint's
    AutoImageProcessor, the same forward). Both include decoding; one thread each."""
    import torch
    from transformers import AutoImageProcessor

    blobs = gpic_sized_jpegs(n)
    batches = [blobs[i:i + batch_size] for i in range(0, n, batch_size)]
    features = DinoV2Features(model, device)
    processor = AutoImageProcessor.from_pretrained(model)

    def ours() -> None:
        for batch in batches:
            features(np.stack([decode(str(i), b) for i, b in enumerate(batch)]))

    def baseline() -> None:
        for batch in batches:
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in batch]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            with torch.inference_mode():
                features.model(pixel_values=pixels).last_hidden_state[:, 0].cpu()

    ours(), baseline()  # warm-up: first calls allocate
    ours_s, baseline_s = best_of(ours, repeat), best_of(baseline, repeat)
    return {"images": n, "batch_size": batch_size, "model": features.model_id,
            "baseline_processor": type(processor).__name__, "ours_images_per_s": n / ours_s,
            "baseline_images_per_s": n / baseline_s, "ratio": baseline_s / ours_s,
            "ours_s": ours_s, "baseline_s": baseline_s}


def synthetic_features(n: int, dim: int, seed: int) -> np.ndarray:
    """n float32 features with a spread-out spectrum (eigenvalues from 0.01 to 1), like a
    network's pool features rather than white noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    scales = np.sqrt(np.geomspace(1.0, 0.01, dim))
    return ((rng.normal(size=(n, dim)) * scales) @ basis.T + rng.normal(scale=0.05, size=dim)).astype(np.float32)


def interval_cost(dim: int, n: int, timed: int = 3, resamples: int = DEFAULT_RESAMPLES, device: str = "cpu") -> dict:
    """Seconds of the bootstrap interval on n stored dim-d features: the one-off preparation
    (R = sqrt(S_ref), features projected), `timed` resamples measured (one weighted Gram
    matrix and one symmetric eigendecomposition each), the interval of `resamples` projected
    from them; and one scipy.linalg.sqrtm of the covariance product, what each resample would
    cost computed the plain way."""
    samples = synthetic_features(n, dim, seed=1)
    reference = Stats.empty(dim, "synthetic", "synthetic")
    reference.update(synthetic_features(max(2 * n, 4 * dim), dim, seed=2))
    start = time.perf_counter()
    dist = ReferenceDistance(samples, reference, device)
    prepare_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(timed):
        dist(np.bincount(rng.integers(0, n, n), minlength=n))
    resample_s = (time.perf_counter() - start) / timed
    mean, cov = samples.mean(0, dtype=np.float64), np.cov(samples, rowvar=False)
    start = time.perf_counter()
    frechet_distance(mean, cov, reference.mean, reference.covariance)
    sqrtm_s = time.perf_counter() - start
    return {"prepare_s": prepare_s, "resample_s": resample_s, "interval_s": prepare_s + resamples * resample_s,
            "sqrtm_s": sqrtm_s}


def inception_rate(n: int = 8, batch_size: int = 8, device: str = "cpu") -> float:
    """Images/s of FID feature extraction (decode, pytorch-fid's resize to 299, the FID
    Inception forward) on GPIC-sized JPEGs, with random weights in the real architecture."""
    from gpic.devkit.tiny_models import build_random_fid_inception
    from gpic.inference.inception import InceptionFeatures

    blobs = gpic_sized_jpegs(n, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        network = InceptionFeatures(build_random_fid_inception(Path(tmp) / "fid_inception.pth"), device)

    def run() -> None:
        for i in range(0, n, batch_size):
            network(np.stack([decode(str(j), b, preprocess_inception) for j, b in enumerate(blobs[i:i + batch_size])]))

    run()  # warm-up
    return n / best_of(run, 1)


def bench_interval(n: int = 10000, timed: int = 3, inception_images: int = 8, device: str = "cpu") -> dict:
    """The interval's figures: per resample and for the default number of resamples at 1024-d
    (DINOv2-L) and 2048-d (Inception), sqrtm per resample for comparison, and the 2048-d
    interval against extracting Inception features of the same n images."""
    figures: dict = {"interval_images": n, "interval_resamples": DEFAULT_RESAMPLES}
    for dim in (1024, 2048):
        cost = interval_cost(dim, n, timed, DEFAULT_RESAMPLES, device)
        figures.update({f"resample_{dim}_s": cost["resample_s"], f"sqrtm_{dim}_s": cost["sqrtm_s"],
                        f"interval_{dim}_s": cost["interval_s"]})
    rate = inception_rate(inception_images, device=device)
    figures["inception_images_per_s"] = rate
    figures["interval_vs_extraction_2048"] = figures["interval_2048_s"] / (n / rate)
    return figures
