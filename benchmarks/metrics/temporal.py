"""Temporal consistency of generated videos, weight-free: warping error, flicker and motion magnitude.

Report them together: a frozen video has zero warping error and zero flicker, so consistency alone can be won by
not moving; `MotionMagnitude` shows that it did not move.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from benchmarks.metrics.base import GENERATED_ONLY, VideoMetric
from benchmarks.metrics.optical_flow import DISFlow, consistent_flow_mask, video_to_numpy, warp


class _MeanOverVideos(VideoMetric):
    """Averages one number per video; `compute()` gives `value` and `num_videos`. States sum across DDP ranks."""

    inputs = GENERATED_ONLY

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_videos", torch.tensor(0), dist_reduce_fx="sum")

    def per_video(self, video: Tensor) -> float:
        """The score of one validated `[T, C, H, W]` video."""
        raise NotImplementedError

    def update(self, videos: Tensor) -> None:
        """Add a batch of generated videos `[B, T, C, H, W]` (at least 2 frames each)."""
        videos = self.check_videos(videos, "fake")
        if videos.shape[1] < 2:
            raise ValueError(f"{type(self).__name__} needs videos of at least 2 frames, got {videos.shape[1]}")
        for video in videos:
            self.total += self.per_video(video)
            self.num_videos += 1

    def compute(self) -> dict[str, Tensor]:
        if int(self.num_videos) == 0:
            raise ValueError(f"{type(self).__name__} has no videos; call update() first")
        return {"value": self.total / self.num_videos, "num_videos": self.num_videos.clone()}


class WarpingError(_MeanOverVideos):
    """Warping error (Lai et al. 2018) with OpenCV DIS flow between consecutive generated frames.

    For each pair (t, t+1): frame t+1 is warped back to t with the DIS flow t→t+1, and the squared RGB error
    ||V_t - warp(V_{t+1})||² is averaged over pixels that pass the forward-backward occlusion test (Ruder et al.)
    and whose source lies inside the frame. Per video: the mean over pairs; `value`: the mean over videos.
    Variant "DIS" (not FlowNet2 as in Lai et al.), so compare only with results of the same variant.
    """

    higher_is_better = False

    def __init__(self, preset: str = "medium", **kwargs) -> None:
        super().__init__(**kwargs)
        DISFlow(preset)  # fail on a bad preset now, not at the first update
        self.preset = preset

    def per_video(self, video: Tensor) -> float:
        frames, grey = video_to_numpy(video)
        flow = DISFlow(self.preset)  # OpenCV objects cannot be copied or pickled, so none is kept on the metric
        errors = []
        for t in range(len(frames) - 1):
            forward, backward = flow(grey[t], grey[t + 1]), flow(grey[t + 1], grey[t])
            warped, inside = warp(frames[t + 1], forward)
            valid = inside & consistent_flow_mask(forward, backward)
            if valid.any():
                errors.append(float(np.sum((frames[t] - warped) ** 2, axis=-1)[valid].mean()))
        # A pair with no visible pixel (everything occluded) carries no evidence either way.
        return float(np.mean(errors)) if errors else 0.0


class Flicker(_MeanOverVideos):
    """Mean absolute difference between consecutive frames, in [0, 1] units (VBench's temporal flickering).

    VBench reports `(255 - MAE_uint8) / 255`, which is `1 - value`; `compute()` adds it as `vbench_score`.
    """

    higher_is_better = False

    def per_video(self, video: Tensor) -> float:
        return float((video[1:] - video[:-1]).abs().mean())

    def compute(self) -> dict[str, Tensor]:
        result = super().compute()
        result["vbench_score"] = 1.0 - result["value"]
        return result


class MotionMagnitude(_MeanOverVideos):
    """Mean DIS optical-flow magnitude between consecutive frames, in pixels per frame (0 for a frozen video)."""

    higher_is_better = None  # neither: it guards consistency metrics against videos that do not move

    def __init__(self, preset: str = "medium", **kwargs) -> None:
        super().__init__(**kwargs)
        DISFlow(preset)
        self.preset = preset

    def per_video(self, video: Tensor) -> float:
        _, grey = video_to_numpy(video)
        flow = DISFlow(self.preset)
        magnitudes = [np.linalg.norm(flow(grey[t], grey[t + 1]), axis=-1).mean() for t in range(len(grey) - 1)]
        return float(np.mean(magnitudes))
