"""Validation of the videos every metric receives: `[B, T, C, H, W]`, float in [0, 1] or uint8.

Converting at this one edge lets the metrics assume clean float32 input and lets users get one clear error for
NaN/Inf values, a wrong layout, or real and generated videos that are not comparable.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Generators overshoot [0, 1] by rounding; more than this means the video is in another range (e.g. [-1, 1]).
RANGE_TOLERANCE = 1e-3


def as_float_videos(videos: Tensor, name: str = "videos") -> Tensor:
    """Check a `[B, T, C, H, W]` batch (float in [0, 1] or uint8) and return it as float32 in [0, 1]."""
    if not isinstance(videos, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, T, C, H, W], got {type(videos).__name__}")
    if videos.ndim != 5:
        raise ValueError(f"{name} must have shape [B, T, C, H, W], got {tuple(videos.shape)}")
    if videos.shape[2] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels ([B, T, C, H, W]), got shape {tuple(videos.shape)}")
    if videos.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if videos.dtype == torch.uint8:
        return videos.float() / 255.0
    if not videos.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1] or uint8, got dtype {videos.dtype}")
    videos = videos.float()
    if not torch.isfinite(videos).all():
        raise ValueError(f"{name} contain NaN or Inf values; fix the generator output before scoring it")
    low, high = videos.min().item(), videos.max().item()
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must be in [0, 1] (got values in [{low:.3g}, {high:.3g}]); map [-1, 1] output with (x + 1) / 2"
        )
    return videos.clamp(0.0, 1.0)


class ShapeGuard:
    """Remembers the `(T, C, H, W)` of each role ("real", "fake", ...) and refuses roles that disagree.

    Distribution metrics compare like with like: real and generated videos must share frame count and resolution.
    """

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def check(self, videos: Tensor, role: str) -> None:
        """Record or compare the per-video shape of `videos` for `role`; raise on any mismatch."""
        shape = tuple(videos.shape[1:])
        for other_role, other in self.shapes.items():
            if other != shape:
                what = "frame counts" if other[0] != shape[0] else "resolutions or channels"
                raise ValueError(
                    f"mismatched {what}: {role} videos are [T, C, H, W]={list(shape)} but {other_role} videos are "
                    f"{list(other)}; score videos of the same length and resolution"
                )
        self.shapes.setdefault(role, shape)

    def forget(self, keep: tuple[str, ...] = ()) -> None:
        """Drop the recorded shapes except those of the roles in `keep`."""
        self.shapes = {role: shape for role, shape in self.shapes.items() if role in keep}
