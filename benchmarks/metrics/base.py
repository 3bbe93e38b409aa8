"""Base classes: `VideoMetric` validates its input once; `FeatureMetric` adds a feature extractor.

Every metric's `compute()` returns a dict of tensors with at least `"value"` (the score, a scalar or a curve)
plus the counts needed to compare results like with like (e.g. `num_real`, `num_fake`, `num_videos`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from benchmarks.metrics.video_input import ShapeGuard, as_float_videos

# What `update` consumes, declared by every metric (as torchmetrics declares `higher_is_better`), so a harness
# knows how to feed it without reading its signature.
DISTRIBUTION = "distribution"  # update(videos, real: bool): real and generated feature distributions
GENERATED_ONLY = "generated_only"  # update(videos): generated videos alone
LABELLED = "labelled"  # update(videos, labels): generated videos and the labels their prompts name
PAIRED = "paired"  # update(videos, reference): each generated video with the real clip it was conditioned on
INPUTS = (DISTRIBUTION, GENERATED_ONLY, LABELLED, PAIRED)


class VideoMetric(Metric):
    """A torchmetrics `Metric` over `[B, T, C, H, W]` videos (float in [0, 1] or uint8).

    Subclasses call `self.check_videos(x, role)` on every input: it validates values and checks that every role
    (real, fake, reference) has the same frame count and resolution.
    """

    is_differentiable = False
    full_state_update = False
    inputs: str  # one of INPUTS: what `update` consumes
    # Roles whose recorded shape survives `reset()` (e.g. "real" when real statistics are kept).
    _roles_kept_on_reset: tuple[str, ...] = ()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shape_guard = ShapeGuard()

    def check_videos(self, videos: Tensor, role: str = "fake") -> Tensor:
        """`videos` validated, as float32 in [0, 1], cut to the frames the metric scores, on its device."""
        checked = self.frames_to_score(as_float_videos(videos, name=f"{role} videos"), role)
        self._shape_guard.check(checked, role)
        return checked.to(self.device)

    def frames_to_score(self, videos: Tensor, role: str) -> Tensor:
        """The part of each video this metric scores (all of it unless a subclass says otherwise)."""
        return videos

    def reset(self) -> None:
        super().reset()
        self._shape_guard.forget(keep=self._roles_kept_on_reset)


def _num_features(extractor: nn.Module, num_features: int | None) -> int:
    if num_features is not None:
        return int(num_features)
    value = getattr(extractor, "num_features", None)
    if value is None:
        raise ValueError(
            f"cannot tell the feature size of {type(extractor).__name__}: give it a `num_features` attribute "
            "or pass num_features= to the metric"
        )
    return int(value)


class FeatureMetric(VideoMetric):
    """A `VideoMetric` that embeds videos with `extractor`, either whole clips or single frames.

    Args:
        extractor: `nn.Module` mapping videos `[B, T, C, H, W]` (or frames `[N, C, H, W]` when `per_frame`)
            in [0, 1] to features `[B, d]`; its `num_features` attribute (or `num_features=`) gives `d`.
        per_frame: embed each frame (FID-style) instead of each clip (FVD-style).
        clip_frames: use only the first `clip_frames` frames of each video (None: all frames).
        batch_size: rows passed to the extractor at once, bounding memory (default 64 frames or 8 clips).
    """

    def __init__(
        self,
        extractor: nn.Module,
        per_frame: bool,
        clip_frames: int | None = None,
        num_features: int | None = None,
        batch_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(extractor, nn.Module):
            raise TypeError(f"extractor must be an nn.Module, got {type(extractor).__name__}")
        self.extractor = extractor.eval().requires_grad_(False)
        self.num_features = _num_features(extractor, num_features)
        self.per_frame = per_frame
        self.clip_frames = clip_frames
        self.batch_size = batch_size or (64 if per_frame else 8)

    def frames_to_score(self, videos: Tensor, role: str) -> Tensor:
        if self.clip_frames is None:
            return videos
        if videos.shape[1] < self.clip_frames:
            raise ValueError(
                f"{role} videos have {videos.shape[1]} frames but this metric scores {self.clip_frames}-frame "
                "clips; generate longer videos or set clip_frames"
            )
        return videos[:, : self.clip_frames]

    @torch.no_grad()
    def embed(self, videos: Tensor) -> Tensor:
        """Features of validated videos: `[B, d]` per clip, or `[B, T, d]` per frame; float64."""
        batch, frames = videos.shape[:2]
        rows = videos.flatten(0, 1) if self.per_frame else videos
        features = torch.cat([self.extractor(chunk) for chunk in rows.split(self.batch_size)])
        if features.ndim != 2 or features.shape != (rows.shape[0], self.num_features):
            raise ValueError(
                f"extractor {type(self.extractor).__name__} returned features of shape {tuple(features.shape)}, "
                f"expected [{rows.shape[0]}, {self.num_features}]"
            )
        features = features.double()
        return features.view(batch, frames, -1) if self.per_frame else features
