"""The Fréchet core against a scipy.linalg.sqrtm reference (pytorch-fid / clean-fid / StyleGAN-V form)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from benchmarks.metrics import (
    FrechetInceptionDistance,
    FrechetVideoDistance,
    covariance_from_moments,
    frechet_distance,
    merge_moments,
    row_moments,
)


def scipy_frechet_distance(mu1, sigma1, mu2, sigma2):
    """The reference form, without SciPy's deprecated `disp` argument."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def two_feature_sets(dim: int, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    real = rng.normal(size=(samples, dim)) @ mixing
    fake = rng.normal(size=(samples, dim)) @ (mixing * 1.2) + 0.1
    return real, fake


@pytest.mark.parametrize("dim", [64, 256])
def test_matches_scipy_sqrtm_reference(dim):
    real, fake = two_feature_sets(dim, samples=2 * dim)
    stats = (*gaussian_stats(real), *gaussian_stats(fake))
    expected = scipy_frechet_distance(*stats)
    actual = frechet_distance(*(torch.from_numpy(s) for s in stats)).item()
    assert actual == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_matches_scipy_sqrtm_reference_at_inception_dimension():
    real, fake = two_feature_sets(2048, samples=2500)
    stats = (*gaussian_stats(real), *gaussian_stats(fake))
    actual = frechet_distance(*(torch.from_numpy(s) for s in stats)).item()
    assert actual == pytest.approx(scipy_frechet_distance(*stats), rel=1e-6)


@pytest.mark.parametrize("dim", [64, 256])
def test_identical_sets_have_zero_distance(dim):
    real, _ = two_feature_sets(dim, samples=2 * dim)
    mu, sigma = (torch.from_numpy(s) for s in gaussian_stats(real))
    assert abs(frechet_distance(mu, sigma, mu, sigma).item()) < 1e-6


def test_equal_covariances_leave_the_squared_mean_difference():
    real, _ = two_feature_sets(64, samples=200)
    mu, sigma = (torch.from_numpy(s) for s in gaussian_stats(real))
    shifted = mu + torch.linspace(-1, 1, 64, dtype=torch.float64)
    expected = (mu - shifted).square().sum().item()
    assert frechet_distance(mu, sigma, shifted, sigma).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_singular_covariances_fall_back_to_a_finite_distance():
    # Fewer samples than dimensions: both covariances are singular.
    real, fake = two_feature_sets(64, samples=20)
    stats = [torch.from_numpy(s) for s in (*gaussian_stats(real), *gaussian_stats(fake))]
    value = frechet_distance(*stats).item()
    assert np.isfinite(value)
    assert value == pytest.approx(scipy_frechet_distance(*(s.numpy() for s in stats)), rel=1e-4)


def test_merged_moments_give_np_cov_and_the_n_convention():
    features = np.random.default_rng(1).normal(size=(50, 6))
    parts = [torch.from_numpy(part) for part in (features[:7], features[7:7], features[7:31], features[31:])]
    moments = merge_moments(torch.stack([row_moments(part) for part in parts]))
    mean, unbiased = covariance_from_moments(moments, covariance_ddof=1)
    _, biased = covariance_from_moments(moments, covariance_ddof=0)
    np.testing.assert_allclose(mean.numpy(), features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(unbiased.numpy(), np.cov(features, rowvar=False), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(biased.numpy(), np.cov(features, rowvar=False, bias=True), rtol=1e-10, atol=1e-12)


def test_moments_keep_their_digits_where_running_sums_lose_them():
    # A large mean next to a small spread: Σxxᵀ - nμμᵀ cancels ~16 digits of 1e8² away; centred moments do not.
    features = 1e8 + np.random.default_rng(2).normal(size=(400, 3))
    chunks = [torch.from_numpy(chunk) for chunk in np.array_split(features, 9)]
    _, covariance = covariance_from_moments(merge_moments(torch.stack([row_moments(c) for c in chunks])))
    np.testing.assert_allclose(covariance.numpy(), np.cov(features, rowvar=False), rtol=1e-6, atol=1e-7)
    sums = features.sum(axis=0), features.T @ features
    naive = (sums[1] - np.outer(sums[0], sums[0]) / 400) / 399
    assert np.abs(naive - np.cov(features, rowvar=False)).max() > 1e-2  # what the old running sums gave


def test_rank_deficient_distance_does_not_move_with_summation_order():
    # 8 rows in 8 dimensions (a sliding FVD window): one eigenvalue of S1 S2 is zero up to rounding.
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(8, 8)), rng.normal(loc=0.3, size=(8, 8))
    values = []
    for order in range(20):
        permutation = np.random.default_rng(order).permutation(8)
        stats = []
        for rows in (real[permutation], fake[permutation]):
            parts = [torch.from_numpy(part) for part in np.array_split(rows, 1 + order % 4)]
            stats += covariance_from_moments(merge_moments(torch.stack([row_moments(p) for p in parts])))
        values.append(frechet_distance(*stats).item())
    assert max(values) - min(values) < 1e-12 * abs(values[0])


def test_dimension_mismatch_is_refused():
    with pytest.raises(ValueError, match="different dimension"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_fvd_equals_the_reference_on_extracted_features(video_extractor, helpers):
    real, fake = helpers.random_videos(12, seed=1), helpers.random_videos(12, seed=2, shift=0.2)
    metric = FrechetVideoDistance(video_extractor, clip_frames=None)
    metric.update(real[:5], real=True)
    metric.update(real[5:], real=True)
    metric.update(fake, real=False)
    result = metric.compute()
    real_features, fake_features = video_extractor(real).double().numpy(), video_extractor(fake).double().numpy()
    expected = scipy_frechet_distance(*gaussian_stats(fake_features), *gaussian_stats(real_features))
    assert result["value"].item() == pytest.approx(expected, rel=1e-6)
    assert (result["num_real"].item(), result["num_fake"].item(), result["covariance_ddof"].item()) == (12, 12, 1)


def test_stylegan_v_covariance_convention_divides_by_n(video_extractor, helpers):
    real, fake = helpers.random_videos(12, seed=1), helpers.random_videos(12, seed=2, shift=0.2)
    metric = FrechetVideoDistance(video_extractor, clip_frames=None, covariance_ddof=0)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    real_features, fake_features = video_extractor(real).double().numpy(), video_extractor(fake).double().numpy()
    stats = [(f.mean(axis=0), np.cov(f, rowvar=False, bias=True)) for f in (fake_features, real_features)]
    expected = scipy_frechet_distance(*stats[0], *stats[1])
    assert metric.compute()["value"].item() == pytest.approx(expected, rel=1e-6)
    assert metric.compute()["covariance_ddof"].item() == 0


def test_fvd_scores_the_first_clip_frames(video_extractor, helpers):
    long_real, long_fake = helpers.random_videos(10, frames=12, seed=3), helpers.random_videos(10, frames=12, seed=4)
    clipped = FrechetVideoDistance(video_extractor, clip_frames=8)
    clipped.update(long_real, real=True)
    clipped.update(long_fake, real=False)
    exact = FrechetVideoDistance(video_extractor, clip_frames=None)
    exact.update(long_real[:, :8], real=True)
    exact.update(long_fake[:, :8], real=False)
    assert clipped.compute()["value"].item() == pytest.approx(exact.compute()["value"].item(), rel=1e-12)
    with pytest.raises(ValueError, match="16-frame clips"):
        FrechetVideoDistance(video_extractor).update(long_real, real=True)


def test_fid_uses_every_frame(frame_extractor, helpers):
    real, fake = helpers.random_videos(4, seed=5), helpers.random_videos(4, seed=6, shift=0.1)
    metric = FrechetInceptionDistance(frame_extractor)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    result = metric.compute()
    frames = [frame_extractor(v.flatten(0, 1)).double().numpy() for v in (fake, real)]
    expected = scipy_frechet_distance(*gaussian_stats(frames[0]), *gaussian_stats(frames[1]))
    assert result["value"].item() == pytest.approx(expected, rel=1e-6)
    assert result["num_real"].item() == 4 * 8


def test_reset_keeps_real_statistics_when_asked(video_extractor, helpers):
    real, fake = helpers.random_videos(10, seed=1), helpers.random_videos(10, seed=2, shift=0.2)
    metric = FrechetVideoDistance(video_extractor, clip_frames=None, reset_real_features=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    first = metric.compute()["value"].item()
    metric.reset()
    assert metric.real_count.item() == 10 and metric.fake_count.item() == 0
    metric.update(fake, real=False)
    assert metric.compute()["value"].item() == pytest.approx(first, rel=1e-12)


def test_too_few_samples_is_a_clear_error(video_extractor, helpers):
    metric = FrechetVideoDistance(video_extractor, clip_frames=None)
    metric.update(helpers.random_videos(1), real=True)
    metric.update(helpers.random_videos(3), real=False)
    with pytest.raises(ValueError, match="at least 2 real"):
        metric.compute()


def test_extractor_without_feature_size_is_refused():
    with pytest.raises(ValueError, match="num_features"):
        FrechetVideoDistance(torch.nn.Identity())
