"""FID per frame-index bucket and sliding-window FVD return curves that equal per-slice FID/FVD."""

from __future__ import annotations

import pytest
import torch

from benchmarks.metrics import FIDOverTime, FrechetInceptionDistance, FrechetVideoDistance, SlidingWindowFVD


def drifting_videos(helpers, seed: int, drift: float) -> torch.Tensor:
    """Videos that get brighter over time by `drift` per frame (a stand-in for rollout drift)."""
    videos = helpers.random_videos(6, frames=8, seed=seed)
    return (videos + drift * torch.arange(8).view(1, 8, 1, 1, 1)).clamp(0, 1)


def test_fid_over_time_equals_fid_per_bucket(frame_extractor, helpers):
    real, fake = drifting_videos(helpers, 1, 0.0), drifting_videos(helpers, 2, 0.05)
    curve = FIDOverTime(frame_extractor, num_buckets=2)
    curve.update(real, real=True)
    curve.update(fake, real=False)
    result = curve.compute()
    assert result["bucket_start"].tolist() == [0, 4] and result["bucket_end"].tolist() == [4, 8]
    for bucket, (start, end) in enumerate([(0, 4), (4, 8)]):
        single = FrechetInceptionDistance(frame_extractor)
        single.update(real[:, start:end], real=True)
        single.update(fake[:, start:end], real=False)
        assert result["value"][bucket].item() == pytest.approx(single.compute()["value"].item(), rel=1e-10)
    assert result["num_fake"].tolist() == [24, 24]
    assert result["value"][1] > result["value"][0]  # the drift shows up late


def test_fid_over_time_refuses_more_buckets_than_frames(frame_extractor, helpers):
    with pytest.raises(ValueError, match="cannot fill"):
        FIDOverTime(frame_extractor, num_buckets=9).update(helpers.random_videos(2), real=True)


def test_sliding_window_fvd_equals_fvd_per_window(video_extractor, helpers):
    real, fake = drifting_videos(helpers, 3, 0.0), drifting_videos(helpers, 4, 0.05)
    curve = SlidingWindowFVD(video_extractor, num_frames=8, window=4, stride=2)
    curve.update(real, real=True)
    curve.update(fake, real=False)
    result = curve.compute()
    assert result["window_start"].tolist() == [0, 2, 4]
    for index, start in enumerate([0, 2, 4]):
        single = FrechetVideoDistance(video_extractor, clip_frames=None)
        single.update(real[:, start : start + 4], real=True)
        single.update(fake[:, start : start + 4], real=False)
        assert result["value"][index].item() == pytest.approx(single.compute()["value"].item(), rel=1e-10)


def test_sliding_window_fvd_checks_video_length(video_extractor, helpers):
    with pytest.raises(ValueError, match="8-frame videos"):
        SlidingWindowFVD(video_extractor, num_frames=8, window=4).update(helpers.random_videos(2, frames=6), real=True)
    with pytest.raises(ValueError, match="window"):
        SlidingWindowFVD(video_extractor, num_frames=8, window=16)
