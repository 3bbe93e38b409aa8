"""Bootstrap draws of FD/KD/means: equal to the metric recomputed on each resample, and intervals that cover.

Coverage: on Gaussian features the population FD is closed form (`frechet_distance` of the true means and
covariances); in 100 independent experiments, each drawing fresh real and generated sets, the nominal 95% interval
must contain it at least 90 times (n >> d), and contain FD's expectation at the protocol's counts where they are
small for the dimension (moving_digits' shape, where FD's bias is larger than its spread).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.metrics import bootstrap
from benchmarks.metrics.bootstrap import (
    UnitRows,
    _frechet_in_feature_space,
    _frechet_in_row_space,
    centred_interval,
    frechet_distance_draws,
    kernel_distance_draws,
    mean_draws,
    resample_counts,
)
from benchmarks.metrics.frechet import frechet_distance
from benchmarks.metrics.kernel import polynomial_kernel


def _units(rows: torch.Tensor, per_unit: int) -> UnitRows:
    return UnitRows(rows, torch.arange(rows.shape[0] // per_unit).repeat_interleave(per_unit),
                    rows.shape[0] // per_unit)


def _resampled(units: UnitRows, counts: torch.Tensor) -> torch.Tensor:
    """The rows of a resample spelled out: unit u's rows `counts[u]` times."""
    picked = torch.repeat_interleave(torch.arange(units.num_units), counts)
    return torch.cat([units.rows[units.unit == u] for u in picked.tolist()])


def _gaussian(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
    return factor @ factor.T + 0.5 * torch.eye(d, dtype=torch.float64), generator


def test_resample_counts_are_fixed_by_seed_stream_and_size():
    counts = resample_counts(10, 50, seed=3, stream="real")
    assert counts.shape == (50, 10) and (counts.sum(1) == 10).all() and counts.dtype == torch.int64
    assert torch.equal(counts, resample_counts(10, 50, seed=3, stream="real"))
    assert torch.equal(counts[:20], resample_counts(10, 20, seed=3, stream="real"))  # a prefix of more draws
    assert not torch.equal(counts, resample_counts(10, 50, seed=3, stream="generated"))
    assert not torch.equal(counts, resample_counts(10, 50, seed=4, stream="real"))


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize(("d", "per_unit"), [(6, 1), (6, 3), (24, 1), (3, 4)])
def test_frechet_draws_equal_frechet_distance_of_each_resample(d, per_unit, ddof):
    generator = torch.Generator().manual_seed(d * 10 + per_unit)
    real = _units(torch.randn(20 * per_unit, d, generator=generator, dtype=torch.float64) * 2 + 5, per_unit)
    fake = _units(torch.randn(12 * per_unit, d, generator=generator, dtype=torch.float64) + 5.3, per_unit)
    real_counts, fake_counts = resample_counts(20, 6, 0, "real"), resample_counts(12, 6, 0, "generated")
    expected = []
    for b in range(6):
        x1, x2 = _resampled(real, real_counts[b]), _resampled(fake, fake_counts[b])
        s1 = torch.cov(x1.T, correction=ddof)
        s2 = torch.cov(x2.T, correction=ddof)
        expected.append(float(frechet_distance(x1.mean(0), s1, x2.mean(0), s2)))
    expected = torch.tensor(expected, dtype=torch.float64)
    got = frechet_distance_draws(real, fake, real_counts, fake_counts, covariance_ddof=ddof)
    # frechet_distance's eigvals of a singular S1 @ S2 carry ~1e-8 of rounding (d=24 > 12 rows); else ~1e-15.
    assert got == pytest.approx(expected.tolist(), rel=1e-7)
    # Both internal paths, whichever the cost model picks.
    offset = real.rows.mean(0)
    x1, x2 = real.rows - offset, fake.rows - offset
    rows = _frechet_in_row_space(real, x1, real_counts, fake, x2, fake_counts, ddof)
    features = _frechet_in_feature_space(real, x1, real_counts, fake, x2, fake_counts, ddof)
    assert rows == pytest.approx(expected.tolist(), rel=1e-6)
    assert features == pytest.approx(expected.tolist(), rel=1e-7)


def test_kernel_and_mean_draws_equal_the_estimators_on_each_resample():
    generator = torch.Generator().manual_seed(1)
    real = _units(torch.randn(30, 5, generator=generator, dtype=torch.float64), 2)
    fake = _units(torch.randn(16, 5, generator=generator, dtype=torch.float64) + 0.2, 2)
    real_counts, fake_counts = resample_counts(15, 5, 1, "real"), resample_counts(8, 5, 1, "generated")
    got = kernel_distance_draws(real, fake, real_counts, fake_counts)
    for b in range(5):
        x, y = _resampled(real, real_counts[b]), _resampled(fake, fake_counts[b])
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        m, n = len(x), len(y)
        mmd = ((kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (n * (n - 1))
               - 2 * kxy.mean())
        assert float(got[b]) == pytest.approx(float(mmd), rel=1e-12)
    values = torch.arange(8, dtype=torch.float64)
    assert mean_draws(values, fake_counts) == pytest.approx((fake_counts.double() @ values / 8).tolist())


def test_the_interval_respects_its_lower_bound():
    draws = np.random.default_rng(0).gamma(2.0, 1.0, 500)  # skewed, like FD draws
    assert centred_interval(0.1, draws, 0.95, lower_bound=0.0)[0] == 0.0


def _experiment(mean: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, num_real: int, num_fake: int,
                frames: int, generator: torch.Generator, draws: int, seed: int) -> tuple[float, float, float]:
    """One benchmark run on fresh samples: (value, low, high). With `frames` > 1 each video is a Gaussian
    video-level draw plus per-frame noise (frames of a video correlated), the marginal covariance staying S."""
    d = s1.shape[0]

    def sample(count: int, sigma: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        # Frame = video part (covariance S/2) + frame part (S/2): marginal N(mu, S), frames of a video correlated.
        half = torch.linalg.cholesky(sigma / 2 if frames > 1 else sigma)
        video = torch.randn(count, 1, d, generator=generator, dtype=torch.float64) @ half.T
        frame = torch.randn(count, frames, d, generator=generator, dtype=torch.float64) @ half.T if frames > 1 else 0
        return (mu + video + frame).reshape(count * frames, d)

    x1, x2 = sample(num_real, s1, torch.zeros(d, dtype=torch.float64)), sample(num_fake, s2, mean)
    value = float(frechet_distance(x1.mean(0), torch.cov(x1.T), x2.mean(0), torch.cov(x2.T)))
    real, fake = _units(x1, frames), _units(x2, frames)
    values = frechet_distance_draws(real, fake, resample_counts(num_real, draws, seed, "real"),
                                    resample_counts(num_fake, draws, seed, "generated"))
    low, high = centred_interval(value, values, 0.95, lower_bound=0.0)
    return value, low, high


@pytest.mark.parametrize(("num_real", "num_fake", "frames"), [(1000, 1000, 1), (240, 120, 4)])
def test_95_percent_intervals_cover_the_population_fd(num_real, num_fake, frames):
    # Clip rows, and per-frame rows whose frames are correlated within a video (resampling frames rather than
    # videos would make the interval too narrow). n >> d, so FD's O(d/n) bias is small beside its spread.
    d = 4
    s1, generator = _gaussian(d, seed=d)
    s2 = 1.2 * s1
    mean = torch.full((d,), 0.3, dtype=torch.float64)
    population = float(frechet_distance(torch.zeros(d, dtype=torch.float64), s1, mean, s2))
    hits = 0
    for trial in range(100):
        _, low, high = _experiment(mean, s1, s2, num_real, num_fake, frames, generator, draws=400, seed=trial)
        hits += low <= population <= high
    assert hits >= 90, f"the 95% interval covered the population FD {population:.3f} in {hits} of 100 runs"


def test_95_percent_intervals_cover_the_fd_at_the_protocols_sample_counts():
    # The moving_digits shape: 4x more real clips than generated videos and few of both for the dimension. FD at
    # these counts is ~1.7x the population FD (its O(d/n) bias); the interval is for the number the protocol
    # defines, E[FD at (256, 64)], found here by Monte Carlo over 4000 independent runs.
    d, num_real, num_fake = 8, 256, 64
    s1, generator = _gaussian(d, seed=d)
    s2 = 1.5 * s1
    mean = torch.full((d,), 0.3, dtype=torch.float64)
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    values = []
    for _ in range(4000):
        x1 = torch.randn(num_real, d, generator=generator, dtype=torch.float64) @ l1.T
        x2 = torch.randn(num_fake, d, generator=generator, dtype=torch.float64) @ l2.T + mean
        values.append(float(frechet_distance(x1.mean(0), torch.cov(x1.T), x2.mean(0), torch.cov(x2.T))))
    expected = float(np.mean(values))
    population = float(frechet_distance(torch.zeros(d, dtype=torch.float64), s1, mean, s2))
    assert expected > 1.4 * population
    hits = 0
    for trial in range(100):
        _, low, high = _experiment(mean, s1, s2, num_real, num_fake, 1, generator, draws=400, seed=trial)
        hits += low <= expected <= high
    assert hits >= 90, f"the 95% interval covered E[FD] {expected:.3f} in {hits} of 100 runs"


def test_intervals_shrink_as_the_sample_grows():
    s1, generator = _gaussian(4, seed=0)
    mean = torch.full((4,), 0.5, dtype=torch.float64)
    widths = []
    for n in (32, 128, 512):
        runs = [_experiment(mean, s1, s1, n, n, 1, generator, draws=300, seed=k) for k in range(5)]
        widths.append(float(np.mean([high - low for _, low, high in runs])))
    assert widths[0] > 1.6 * widths[1] > 1.6**2 * widths[2], widths  # ~1/sqrt(n): halves per 4x


def test_draws_do_not_depend_on_how_they_are_chunked(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    real = _units(torch.randn(40, 6, generator=generator, dtype=torch.float64), 2)
    fake = _units(torch.randn(24, 6, generator=generator, dtype=torch.float64) + 0.3, 2)
    real_counts, fake_counts = resample_counts(20, 9, 5, "real"), resample_counts(12, 9, 5, "generated")
    whole = [frechet_distance_draws(real, fake, real_counts, fake_counts),
             kernel_distance_draws(real, fake, real_counts, fake_counts)]
    monkeypatch.setattr(bootstrap, "_CHUNK_ENTRIES", 50)  # a few draws and rows at a time
    chunked = [frechet_distance_draws(real, fake, real_counts, fake_counts),
               kernel_distance_draws(real, fake, real_counts, fake_counts)]
    for a, b in zip(whole, chunked, strict=True):
        assert a.tolist() == pytest.approx(b.tolist(), rel=1e-10)


def test_per_video_outer_products_give_the_draws_of_weighing_each_frame(monkeypatch):
    """With several rows per video (per-frame features) a draw sums per-video outer products (8x fewer flops at 8
    frames) whenever they fit `_PER_UNIT_ENTRIES`, beyond the draw chunk size; the draws equal per-row weighing."""
    generator = torch.Generator().manual_seed(3)
    real = _units(torch.randn(30 * 4, 5, generator=generator, dtype=torch.float64), 4)
    fake = _units(torch.randn(10 * 4, 5, generator=generator, dtype=torch.float64) + 0.4, 4)
    counts = resample_counts(30, 7, 1, "real"), resample_counts(10, 7, 1, "generated")
    monkeypatch.setattr(bootstrap, "_CHUNK_ENTRIES", 200)  # smaller than 30 videos x 5 x 5
    assert bootstrap._SecondMoments(real, real.rows).per_unit is not None
    offset = real.rows.mean(0)
    per_video = _frechet_in_feature_space(real, real.rows - offset, counts[0], fake, fake.rows - offset, counts[1], 1)
    monkeypatch.setattr(bootstrap, "_PER_UNIT_ENTRIES", 0)
    assert bootstrap._SecondMoments(real, real.rows).per_unit is None
    per_row = _frechet_in_feature_space(real, real.rows - offset, counts[0], fake, fake.rows - offset, counts[1], 1)
    assert per_video.tolist() == pytest.approx(per_row.tolist(), rel=1e-12)
