"""Quality over time for long rollouts: FID per frame-index bucket and FVD over sliding windows, as curves.

Autoregressive generators drift: a single FID/FVD over a long video hides whether late frames are worse than early
ones. Both metrics return `value` as a curve (one distance per bucket or window) with the frame range of each point.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmarks.metrics.frechet import FrechetMetric


class FIDOverTime(FrechetMetric):
    """FID per bucket of frame indices: frame t of a T-frame video falls into bucket `t * num_buckets // T`.

    `compute()` adds `bucket_start` and `bucket_end` (frame index ranges, end exclusive) to the Fréchet fields.
    """

    def __init__(self, extractor: nn.Module, num_buckets: int = 4, **kwargs) -> None:
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        super().__init__(extractor, per_frame=True, num_groups=num_buckets, **kwargs)
        self.num_frames: int | None = None

    def rows_and_groups(self, videos: Tensor) -> tuple[Tensor, Tensor]:
        frames = videos.shape[1]
        if frames < self.num_groups:
            raise ValueError(f"{frames}-frame videos cannot fill {self.num_groups} buckets; use fewer num_buckets")
        self.num_frames = frames
        features = self.embed(videos)
        buckets = torch.arange(frames, device=features.device) * self.num_groups // frames
        return features.flatten(0, 1), buckets.repeat(videos.shape[0])

    def compute(self) -> dict[str, Tensor]:
        result = super().compute()
        if self.num_frames is not None:
            # Bucket b holds frames t with b <= t * K / T < b + 1, so it starts at ceil(b * T / K).
            starts = [-(-bucket * self.num_frames // self.num_groups) for bucket in range(self.num_groups)]
            result["bucket_start"] = torch.tensor(starts)
            result["bucket_end"] = torch.tensor(starts[1:] + [self.num_frames])
        return result


class SlidingWindowFVD(FrechetMetric):
    """FVD of every `window`-frame window starting at 0, `stride`, 2·`stride`, ... of `num_frames`-frame videos.

    `compute()` adds `window_start` (first frame of each window) to the Fréchet fields.
    """

    def __init__(self, extractor: nn.Module, num_frames: int, window: int = 16, stride: int = 8, **kwargs) -> None:
        if window > num_frames or window < 1 or stride < 1:
            raise ValueError(f"need 1 <= window <= num_frames and stride >= 1, got {window=}, {num_frames=}, {stride=}")
        self.window_starts = list(range(0, num_frames - window + 1, stride))
        super().__init__(extractor, per_frame=False, num_groups=len(self.window_starts), **kwargs)
        self.num_frames, self.window, self.stride = num_frames, window, stride

    def rows_and_groups(self, videos: Tensor) -> tuple[Tensor, Tensor]:
        if videos.shape[1] != self.num_frames:
            raise ValueError(f"this metric was built for {self.num_frames}-frame videos, got {videos.shape[1]} frames")
        clips = torch.cat([videos[:, start : start + self.window] for start in self.window_starts])
        rows = self.embed(clips)
        windows = torch.arange(len(self.window_starts), device=rows.device).repeat_interleave(videos.shape[0])
        return rows, windows

    def compute(self) -> dict[str, Tensor]:
        result = super().compute()
        result["window_start"] = torch.tensor(self.window_starts)
        return result
