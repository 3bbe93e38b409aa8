"""TecoGAN's temporal metrics: how the frame-to-frame change of generated videos differs from that of references.

Both need a reference video per generated video (same conditioning, e.g. the ground-truth continuation of a
prediction task): `update(videos, reference)`.

- tOF: mean over pixels of ||OF(ref_{t-1}, ref_t) - OF(gen_{t-1}, gen_t)||₂ with Farneback flow (TecoGAN's
  parameters, on grey uint8 frames; TecoGAN's 8x8 border crop is not applied, since our frames are small).
- tLP: |LPIPS(ref_{t-1}, ref_t) - LPIPS(gen_{t-1}, gen_t)|, needing LPIPS weights (`lpips` package heads plus the
  torchvision AlexNet backbone, see `benchmarks.features.create_extractor("lpips_alex")`).

Values are means over consecutive frame pairs of all videos (TecoGAN reports tOF×10 and tLP×100).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.metrics.base import PAIRED, VideoMetric
from benchmarks.metrics.optical_flow import farneback_flow, video_to_numpy


class _PairedTemporalMetric(VideoMetric):
    """Sums one difference per consecutive frame pair of (generated, reference) videos; states sum across DDP."""

    higher_is_better = False
    inputs = PAIRED

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_pairs", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("num_videos", torch.tensor(0), dist_reduce_fx="sum")

    def pair_differences(self, video: Tensor, reference: Tensor) -> Tensor:
        """One difference per consecutive frame pair, `[T - 1]`, for validated `[T, C, H, W]` videos."""
        raise NotImplementedError

    def update(self, videos: Tensor, reference: Tensor) -> None:
        """Add generated videos and their references, both `[B, T, C, H, W]` of the same shape, T >= 2."""
        videos, reference = self.check_videos(videos, "fake"), self.check_videos(reference, "reference")
        if videos.shape != reference.shape:
            raise ValueError(f"got {videos.shape[0]} generated videos but {reference.shape[0]} references")
        if videos.shape[1] < 2:
            raise ValueError(f"{type(self).__name__} needs videos of at least 2 frames, got {videos.shape[1]}")
        for video, target in zip(videos, reference, strict=True):
            differences = self.pair_differences(video, target)
            self.total += differences.double().sum().cpu()
            self.num_pairs += differences.numel()
        self.num_videos += videos.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if int(self.num_pairs) == 0:
            raise ValueError(f"{type(self).__name__} has no videos; call update() first")
        return {"value": self.total / self.num_pairs, "num_videos": self.num_videos.clone()}


class TemporalOF(_PairedTemporalMetric):
    """tOF (TecoGAN): mean L2 difference of the Farneback flows of generated and reference videos, in pixels."""

    def pair_differences(self, video: Tensor, reference: Tensor) -> Tensor:
        _, grey = video_to_numpy(video)
        _, reference_grey = video_to_numpy(reference)
        differences = []
        for t in range(1, len(grey)):
            generated_flow = farneback_flow(grey[t - 1], grey[t])
            reference_flow = farneback_flow(reference_grey[t - 1], reference_grey[t])
            differences.append(np.linalg.norm(reference_flow - generated_flow, axis=-1).mean())
        return torch.tensor(differences)


class TemporalLPIPS(_PairedTemporalMetric):
    """tLP (TecoGAN): mean |LPIPS(ref_{t-1}, ref_t) - LPIPS(gen_{t-1}, gen_t)|.

    `lpips_net` is an `lpips.LPIPS`-like module taking two `[N, 3, H, W]` batches in [-1, 1].
    """

    def __init__(self, lpips_net: nn.Module, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lpips_net = lpips_net.eval().requires_grad_(False)

    @torch.no_grad()
    def _consecutive_lpips(self, video: Tensor) -> Tensor:
        video = video.expand(-1, 3, -1, -1) * 2 - 1
        return self.lpips_net(video[:-1], video[1:]).flatten()

    def pair_differences(self, video: Tensor, reference: Tensor) -> Tensor:
        return (self._consecutive_lpips(reference) - self._consecutive_lpips(video)).abs()
