"""The Frechet distance against closed forms and an independent computation: scipy's sqrtm
path (the protocol's point estimate) and the resampling path (tr sqrt(R S R) with
R = sqrt(S_ref), used for the interval and FD-infinity) on Gaussians of known FD."""

from __future__ import annotations

import numpy as np
import pytest

from gpic.fd import ReferenceDistance, Stats, frechet_distance


def closed_form(mu1, var1, mu2, var2) -> float:
    """Two Gaussians whose covariances share eigenvectors (variances var1, var2 along them):
    FD = |mu1 - mu2|^2 + sum (sqrt(var1) - sqrt(var2))^2."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))


def independent_fd(mu1, s1, mu2, s2) -> float:
    """tr sqrt(S1 S2) from the eigenvalues of sqrt(S2) S1 sqrt(S2), both by numpy's eigh."""
    w, v = np.linalg.eigh(s2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root @ s1 @ root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def reference_of(mean: np.ndarray, cov: np.ndarray, count: int = 10**9) -> Stats:
    """Statistics whose mean and covariance are exactly these (sums of `count` images)."""
    stats = Stats.empty(len(mean), "synthetic", "synthetic")
    stats.count = count
    stats.sum = mean * count
    stats.sum_outer = cov * (count - 1) + np.outer(stats.sum, stats.sum) / count
    return stats


@pytest.mark.parametrize("dim,rotate", [(8, False), (64, False), (64, True), (256, True)])
def test_known_fd_of_gaussians_with_shared_eigenvectors(dim, rotate):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    var1, var2 = rng.uniform(0.1, 3.0, dim), rng.uniform(0.1, 3.0, dim)
    q = np.linalg.qr(rng.normal(size=(dim, dim)))[0] if rotate else np.eye(dim)
    s1, s2 = (q * var1) @ q.T, (q * var2) @ q.T  # same eigenvectors, not diagonal when rotated
    expected = closed_form(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)
    assert independent_fd(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Equal covariances: only the means count; equal Gaussians: zero.
    assert frechet_distance(mu1, s1, mu2, s1) == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9 * np.trace(s1))


def test_the_resampling_path_equals_the_sqrtm_path_on_samples_of_known_fd():
    """Features drawn from N(mu1, S1) against the exact reference N(mu2, S2): the resampling
    path on all features equals scipy's sqrtm on their mean and covariance, and both come
    close to the closed form (the sample's own FD, finite-sample bias included)."""
    rng = np.random.default_rng(0)
    dim, n = 48, 6000
    q = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    var1, var2 = rng.uniform(0.2, 2.0, dim), rng.uniform(0.2, 2.0, dim)
    mu1, mu2 = rng.normal(scale=0.3, size=dim), np.zeros(dim)
    features = mu1 + (rng.normal(size=(n, dim)) * np.sqrt(var1)) @ q.T
    reference = reference_of(mu2, (q * var2) @ q.T)
    sample_fd = frechet_distance(features.mean(0), np.cov(features, rowvar=False), reference.mean,
                                 reference.covariance)
    dist = ReferenceDistance(features, reference)
    assert dist(np.ones(n, dtype=np.int64)) == pytest.approx(sample_fd, rel=1e-9)
    truth = closed_form(mu1, var1, mu2, var2)
    assert sample_fd == pytest.approx(truth, rel=0.05) and sample_fd > truth  # FD at N is biased upward


@pytest.mark.parametrize("n,dim", [(300, 16), (20, 40)])  # the second: fewer images than dimensions
def test_resampled_multisets_equal_the_fd_of_their_features_written_out(n, dim, monkeypatch):
    """A bootstrap draw (multiplicities) or a subset (0/1) gives the FD of the features it
    selects, repeated, computed the plain way; small row chunks exercise the accumulation."""
    monkeypatch.setattr("gpic.fd._CHUNK", 7)
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim) + rng.normal(size=dim)
    other = rng.normal(size=(5 * dim, dim)) * rng.uniform(0.5, 1.5, dim)
    reference = reference_of(other.mean(0), np.cov(other, rowvar=False))
    dist = ReferenceDistance(features.astype(np.float32), reference)
    features = features.astype(np.float32).astype(np.float64)  # what the path sees
    draws = [np.bincount(rng.integers(0, n, n), minlength=n)]
    subset = np.zeros(n, dtype=np.int64)
    subset[rng.permutation(n)[: n // 2]] = 1
    for counts in draws + [subset]:
        chosen = np.repeat(features, counts, axis=0)
        expected = independent_fd(chosen.mean(0), np.cov(chosen, rowvar=False), reference.mean, reference.covariance)
        assert dist(counts) == pytest.approx(expected, rel=1e-7, abs=1e-9)
    if n > dim:  # full rank: scipy's sqrtm agrees as well
        chosen = np.repeat(features, draws[0], axis=0)
        assert dist(draws[0]) == pytest.approx(frechet_distance(chosen.mean(0), np.cov(chosen, rowvar=False),
                                                                reference.mean, reference.covariance), rel=1e-7)
    with pytest.raises(ValueError, match="dimension"):
        ReferenceDistance(features[:, :-1], reference)
