"""Warping error, flicker, motion magnitude, tOF and tLP on videos whose answer is known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from benchmarks.metrics import Flicker, MotionMagnitude, TemporalLPIPS, TemporalOF, WarpingError
from benchmarks.metrics.optical_flow import consistent_flow_mask, warp


def textured_image(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.random((2 * size, 2 * size, 3)).astype(np.float32), (0, 0), 3)
    return (texture - texture.min()) / (texture.max() - texture.min())


def translated_video(velocity=(1.5, 1.0), frames: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    """One image moved by a known constant flow: frame k is the texture shifted by k * velocity."""
    texture = textured_image(size, seed)
    video = []
    for k in range(frames):
        shift = np.float32([[1, 0, velocity[0] * k], [0, 1, velocity[1] * k]])
        moved = cv2.warpAffine(texture, shift, texture.shape[1::-1], flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        video.append(moved[size // 2 : size // 2 + size, size // 2 : size // 2 + size])
    return torch.from_numpy(np.stack(video)).permute(0, 3, 1, 2)[None]


def score(metric, videos, *args):
    metric.update(videos, *args)
    return metric.compute()["value"].item()


def test_warp_with_the_true_flow_reconstructs_the_frame():
    texture = textured_image(32)
    shift = np.float32([[1, 0, 2], [0, 1, -1]])
    moved = cv2.warpAffine(texture, shift, texture.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    flow = np.broadcast_to(np.float32([2, -1]), (64, 64, 2)).copy()  # texture(x) = moved(x + (2, -1))
    warped, inside = warp(moved, flow)
    np.testing.assert_allclose(warped[inside], texture[inside], atol=1e-5)
    assert not inside[:, -2:].any() and not inside[:1].any()


def test_occlusion_test_accepts_consistent_and_rejects_contradicting_flow():
    forward = np.full((16, 16, 2), 2.0, dtype=np.float32)
    assert consistent_flow_mask(forward, -forward)[4:-4, 4:-4].all()
    assert not consistent_flow_mask(forward, forward)[4:-4, 4:-4].any()


def test_warping_error_is_near_zero_for_a_known_flow_and_larger_on_shuffled_frames():
    video = translated_video()
    smooth = score(WarpingError(), video)
    shuffled = score(WarpingError(), video[:, torch.tensor([0, 5, 2, 7, 1, 4, 6, 3])])
    assert smooth < 1e-4
    assert shuffled > 20 * smooth


def test_warping_error_of_a_frozen_video_is_zero_and_of_noise_large():
    frozen = translated_video()[:, :1].repeat(1, 6, 1, 1, 1)
    assert score(WarpingError(), frozen) == pytest.approx(0.0, abs=1e-12)
    assert score(WarpingError(), torch.rand(1, 6, 3, 64, 64, generator=torch.Generator().manual_seed(0))) > 0.1


def test_flicker_is_the_mean_absolute_frame_difference():
    alternating = torch.zeros(2, 6, 1, 8, 8)
    alternating[:, 1::2] = 0.25  # every step changes every pixel by 0.25
    result = Flicker()
    result.update(alternating)
    values = result.compute()
    assert values["value"].item() == pytest.approx(0.25)
    assert values["vbench_score"].item() == pytest.approx(0.75)
    assert values["num_videos"].item() == 2
    assert score(Flicker(), torch.full((1, 4, 3, 8, 8), 0.3)) == 0.0


def test_motion_magnitude_measures_speed_and_is_zero_when_frozen():
    assert score(MotionMagnitude(), translated_video(velocity=(1.5, 1.0))) == pytest.approx(np.hypot(1.5, 1.0), rel=0.1)
    assert score(MotionMagnitude(), translated_video(velocity=(3.0, 0.0))) == pytest.approx(3.0, rel=0.1)
    assert score(MotionMagnitude(), translated_video()[:, :1].repeat(1, 4, 1, 1, 1)) == 0.0


def test_tof_is_zero_against_itself_and_grows_with_motion_difference():
    video = translated_video(velocity=(1.0, 0.0))
    assert score(TemporalOF(), video, video) == pytest.approx(0.0, abs=1e-9)
    slower = score(TemporalOF(), video, translated_video(velocity=(2.0, 0.0)))
    faster = score(TemporalOF(), video, translated_video(velocity=(4.0, 0.0)))
    assert 0.3 < slower < faster


def test_tlp_compares_consecutive_frame_lpips_with_the_reference(helpers):
    static = torch.full((1, 4, 3, 8, 8), 0.5)
    changing = static.clone()
    changing[:, 1::2] = 0.75
    metric = TemporalLPIPS(helpers.TinyLPIPS())
    assert score(metric, static, static) == 0.0
    # TinyLPIPS is the mean squared difference in [-1, 1] units: (2 * 0.25)² per pair, the reference is static.
    assert score(TemporalLPIPS(helpers.TinyLPIPS()), changing, static) == pytest.approx(0.25)


def test_paired_metrics_need_matching_references():
    with pytest.raises(ValueError, match="mismatched"):
        TemporalOF().update(torch.rand(1, 4, 3, 16, 16), torch.rand(1, 5, 3, 16, 16))
