"""The bootstrap interval and FD-infinity on Gaussians of known FD: the interval's spread is
the run-to-run spread of FD at N and it covers the expected FD at N (where the plain
percentile interval does not), FD-infinity removes the small-sample bias, both are
reproducible from their recorded seed, and FD-infinity follows Chong & Forsyth's sizes."""

from __future__ import annotations

import numpy as np
import pytest

from gpic.fd import ReferenceDistance, bootstrap_interval, fd_infinity, frechet_distance, infinity_sizes
from test_fd_frechet import closed_form, reference_of

DIM = 32


def make_population(mean_scale: float) -> dict:
    """Generated images ~ N(mu, diag(var_g)), the reference exactly N(0, diag(var_r))."""
    rng = np.random.default_rng(7)
    var_r = rng.uniform(0.5, 2.0, DIM)
    var_g = var_r * rng.uniform(0.8, 1.2, DIM)
    mu = rng.normal(scale=mean_scale, size=DIM)
    return {"mu": mu, "var": var_g, "reference": reference_of(np.zeros(DIM), np.diag(var_r)),
            "truth": closed_form(mu, var_g, np.zeros(DIM), var_r)}


@pytest.fixture(scope="module")
def population():
    return make_population(0.05)


def draw(population, n: int, rng) -> np.ndarray:
    return population["mu"] + rng.normal(size=(n, DIM)) * np.sqrt(population["var"])


def fd_of(features, reference) -> float:
    return frechet_distance(features.mean(0), np.cov(features, rowvar=False), reference.mean, reference.covariance)


@pytest.mark.parametrize("mean_scale,bias_dominated", [(0.05, True), (0.3, False)])
def test_the_interval_covers_the_expected_fd_at_n_and_its_spread_is_the_run_to_run_spread(mean_scale,
                                                                                          bias_dominated):
    """FD 0.18 (bias 0.44, 11 times the spread: a near-perfect model) and FD 2.0 (bias 0.45,
    4 times), both at N = 800 in 32 dimensions, 60 runs of 100 resamples each."""
    population = make_population(mean_scale)
    n, runs = 800, 60
    rng = np.random.default_rng(0)
    reference = population["reference"]
    spread = np.array([fd_of(draw(population, n, rng), reference) for _ in range(600)])
    expected = spread.mean()  # E[FD at N], from 600 independent runs
    assert expected > population["truth"] + 3 * spread.std()  # biased against its spread, more so in the first
    covered = plain_covered = 0
    stds = []
    for run in range(runs):
        interval = bootstrap_interval(ReferenceDistance(draw(population, n, rng), reference), 100, seed=run)
        covered += interval["low"] <= expected <= interval["high"]
        plain_covered += interval["percentile_low"] <= expected <= interval["percentile_high"]
        stds.append(interval["std"])
        assert interval["low"] < interval["high"] and interval["bias"] > 0
    assert covered / runs >= 0.87  # nominal 0.95
    assert plain_covered / runs <= (0.1 if bias_dominated else 0.5)  # the plain percentiles sit a bias too high
    ratio = np.mean(stds) / spread.std(ddof=1)
    # the bootstrap's spread is the run-to-run spread, or wider (conservative) where the bias dominates
    assert (0.8 < ratio < 1.8) if bias_dominated else (0.8 < ratio < 1.25)


def test_the_interval_is_reproducible_from_its_recorded_seed(population):
    features = draw(population, 300, np.random.default_rng(1))
    dist = ReferenceDistance(features, population["reference"])
    first = bootstrap_interval(dist, 30, seed=5)
    assert first == bootstrap_interval(dist, 30, seed=5)
    assert first["low"] != bootstrap_interval(dist, 30, seed=6)["low"]
    assert (first["resamples"], first["seed"], first["level"]) == (30, 5, 0.95)
    wider = bootstrap_interval(dist, 30, seed=5, level=0.99)
    assert wider["low"] <= first["low"] and wider["high"] >= first["high"]
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(dist, 1)


def test_fd_infinity_removes_the_small_sample_bias(population):
    rng = np.random.default_rng(2)
    truth, reference = population["truth"], population["reference"]
    plain, infinite = [], []
    for run in range(6):
        features = draw(population, 3200, rng)  # smallest subset 320 = 10 x DIM
        plain.append(fd_of(features, reference))
        result = fd_infinity(ReferenceDistance(features, reference), seed=run)
        infinite.append(result["value"])
        assert result["fds"][-1] == pytest.approx(plain[-1], rel=1e-9)  # the last size is all N images
        assert result["slope"] > 0  # FD falls as N grows
    plain_error, infinite_error = abs(np.mean(plain) - truth), abs(np.mean(infinite) - truth)
    assert plain_error > 0.3 * truth  # FD at 3,200 is visibly biased
    assert infinite_error < plain_error / 4


class LineInOneOverN:
    """A distance that is exactly a + b / n on any subset of n images."""

    def __init__(self, n: int, a: float, b: float):
        self.n, self.a, self.b, self.calls = n, a, b, []

    def __call__(self, counts: np.ndarray) -> float:
        assert set(np.unique(counts)) <= {0, 1}  # subsets, without replacement
        self.calls.append(counts.copy())
        return self.a + self.b / counts.sum()


def test_fd_infinity_uses_chong_and_forsyths_sizes_and_fits_the_intercept():
    assert infinity_sizes(50_000).tolist() == np.linspace(5000, 50_000, 15).astype(int).tolist()
    line = LineInOneOverN(50_000, 3.25, 40_000.0)
    result = fd_infinity(line, seed=3)
    assert result["value"] == pytest.approx(3.25, rel=1e-9) and result["slope"] == pytest.approx(40_000.0, rel=1e-6)
    assert result["sizes"] == infinity_sizes(50_000).tolist() and result["seed"] == 3
    assert [int(c.sum()) for c in line.calls] == result["sizes"]
    again, other = LineInOneOverN(50_000, 3.25, 40_000.0), LineInOneOverN(50_000, 3.25, 40_000.0)
    fd_infinity(again, seed=3)
    fd_infinity(other, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(line.calls, again.calls, strict=True))
    assert not np.array_equal(line.calls[0], other.calls[0])  # another seed, other subsets
    assert (infinity_sizes(40)[0], infinity_sizes(40)[-1], infinity_sizes(12)[0]) == (4, 40, 2)  # N/10, at least 2
    with pytest.raises(ValueError, match="3 subset sizes"):
        fd_infinity(LineInOneOverN(3, 1, 1))
