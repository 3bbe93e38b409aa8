"""KID/KVD: the unbiased estimator, seeded subsets, order independence and kept real features."""

from __future__ import annotations

import pytest
import torch

from benchmarks.metrics import KernelVideoDistance, kernel_distance
from benchmarks.metrics.kernel import unbiased_mmd2


def explicit_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² written out with loops over pairs, cubic kernel (x·y/d + 1)³."""
    d, m = x.shape[1], x.shape[0]

    def k(a, b):
        return float((a @ b / d + 1) ** 3)

    within_x = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return within_x + within_y - 2 * across


def test_unbiased_mmd2_matches_the_definition():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=generator, dtype=torch.float64), torch.randn(7, 5, generator=generator).double()
    assert unbiased_mmd2(x, y).item() == pytest.approx(explicit_mmd2(x, y), rel=1e-10)


def test_same_distribution_is_near_zero_and_shifted_is_positive():
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    same = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    mean_same, std_same = kernel_distance(real, same, num_subsets=10, subset_size=100)
    mean_shifted, _ = kernel_distance(real, same + 0.5, num_subsets=10, subset_size=100)
    assert abs(mean_same.item()) < 3 * std_same.item() + 1e-3
    assert mean_shifted.item() > 10 * abs(mean_same.item())


def test_seeded_subsets_are_reproducible_and_order_independent():
    generator = torch.Generator().manual_seed(2)
    real = torch.randn(50, 4, generator=generator, dtype=torch.float64)
    fake = torch.randn(60, 4, generator=generator, dtype=torch.float64) + 0.2
    first = kernel_distance(real, fake, num_subsets=10, subset_size=20, seed=3)
    shuffled = kernel_distance(
        real[torch.randperm(50)], fake[torch.randperm(60)], num_subsets=10, subset_size=20, seed=3
    )
    other_seed = kernel_distance(real, fake, num_subsets=10, subset_size=20, seed=4)
    assert first[0].item() == shuffled[0].item()
    assert first[0].item() != other_seed[0].item()


def test_kvd_metric_keeps_real_features_and_counts(video_extractor, helpers):
    real, fake = helpers.random_videos(10, seed=1), helpers.random_videos(10, seed=2, shift=0.3)
    metric = KernelVideoDistance(video_extractor, clip_frames=None, subset_size=10, num_subsets=4,
                                 reset_real_features=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    first = metric.compute()
    expected = kernel_distance(video_extractor(real), video_extractor(fake), num_subsets=4, subset_size=10)
    assert first["value"].item() == pytest.approx(expected[0].item(), rel=1e-12)
    assert (first["num_real"].item(), first["num_fake"].item(), first["subset_size"].item()) == (10, 10, 10)
    metric.reset()
    metric.update(fake, real=False)
    assert metric.compute()["value"].item() == pytest.approx(first["value"].item(), rel=1e-12)


def test_kid_needs_both_sets(video_extractor, helpers):
    metric = KernelVideoDistance(video_extractor, clip_frames=None)
    metric.update(helpers.random_videos(4), real=True)
    with pytest.raises(ValueError, match="needs real and generated"):
        metric.compute()
