"""Tiny deterministic extractors, video makers and metric builders for the metric tests (no downloaded weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TinyVideoExtractor(nn.Module):
    """Videos `[B, T, C, H, W]` -> `[B, d]`: a 4x2x2 average pool of the grey video through a fixed projection."""

    def __init__(self, num_features: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(16, num_features, generator=generator))
        self.num_features = num_features

    def forward(self, videos: Tensor) -> Tensor:
        grey = videos.mean(dim=2).unsqueeze(1)  # [B, 1, T, H, W]
        pooled = F.adaptive_avg_pool3d(grey, (4, 2, 2)).flatten(1)
        return torch.tanh((pooled - 0.5) @ self.projection * 2)


class TinyFrameExtractor(nn.Module):
    """Frames `[N, C, H, W]` in [0, 1] -> `[N, d]`: a 4x4 average pool of the grey frame through a fixed projection."""

    def __init__(self, num_features: int = 8, seed: int = 1) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(16, num_features, generator=generator))
        self.num_features = num_features

    def forward(self, frames: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(frames.mean(dim=1, keepdim=True), 4).flatten(1)
        return torch.tanh((pooled - 0.5) @ self.projection * 2)


class TinyClassifier(nn.Module):
    """Predicts label "brightness" (dark / bright) and "channel" (which RGB channel is strongest) of a video."""

    label_names = ("brightness", "channel")

    def forward(self, videos: Tensor) -> dict[str, Tensor]:
        mean = videos.mean(dim=(1, 3, 4))  # [B, C]
        brightness = mean.mean(dim=1, keepdim=True) - 0.5
        return {"brightness": torch.cat([-brightness, brightness], dim=1), "channel": mean}


class TinyLPIPS(nn.Module):
    """LPIPS-shaped stand-in: mean squared difference per image pair, `[N, 1, 1, 1]`."""

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        return ((first - second) ** 2).mean(dim=(1, 2, 3), keepdim=True)


def random_videos(batch: int, frames: int = 8, channels: int = 3, size: int = 16, seed: int = 0, shift: float = 0.0):
    """Smooth random videos in [0, 1] (float32), optionally brightened by `shift`."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, frames, channels, size // 4, size // 4, generator=generator)
    videos = F.interpolate(coarse.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False)
    return (videos.view(batch, frames, channels, size, size) + shift).clamp(0, 1)


def build_metric(name: str, frames: int = 8):
    """A registered metric with tiny modules, and a function feeding it a batch in a given role."""
    from benchmarks.metrics import create_metric

    modules = {
        "fvd": dict(extractor=TinyVideoExtractor(), clip_frames=None),
        "kvd": dict(extractor=TinyVideoExtractor(), clip_frames=None, num_subsets=5, subset_size=4),
        "fid": dict(extractor=TinyFrameExtractor()),
        "kid": dict(extractor=TinyFrameExtractor(), num_subsets=5, subset_size=8),
        "fid_over_time": dict(extractor=TinyFrameExtractor(), num_buckets=2),
        "fvd_sliding_window": dict(extractor=TinyVideoExtractor(), num_frames=frames, window=4, stride=2),
        "tlp": dict(lpips_net=TinyLPIPS()),
        "prompt_adherence": dict(classifier=TinyClassifier()),
        "label_persistence": dict(classifier=TinyClassifier(), window=max(1, frames // 2)),
    }
    metric = create_metric(name, **modules.get(name, {}))

    def feed(videos: Tensor, role: str = "fake", other: Tensor | None = None) -> None:
        if name in ("fvd", "kvd", "fid", "kid", "fid_over_time", "fvd_sliding_window"):
            metric.update(videos, real=role == "real")
        elif name in ("tof", "tlp"):
            metric.update(videos, other if other is not None else videos.flip(0))
        elif name == "prompt_adherence":
            metric.update(videos, {"brightness": torch.ones(videos.shape[0], dtype=torch.long)})
        else:
            metric.update(videos)

    return metric, feed


class TinyInceptionBackbone(nn.Module):
    """Stands in for clean-fid's Inception: `[N, 3, 299, 299]` in [0, 255] -> `[N, 16]`."""

    num_features = 16

    def __init__(self, seed: int = 2) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(48, self.num_features, generator=generator))

    def forward(self, images: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(images / 255.0, 4).flatten(1)
        return torch.tanh((pooled - 0.5) @ self.projection * 2)


DDP_VIDEOS = 8


def fed_metric(name: str, mine: Tensor, duplicate: Tensor | None = None):
    """Metric `name` fed the fixed real/generated/reference videos at indices `mine`, in batches of two (as a
    DistributedSampler shard is fed); `duplicate` indices are fed a second time (a test of what double counting
    does). Returns the metric, not yet computed."""
    real, fake = random_videos(DDP_VIDEOS, seed=1), random_videos(DDP_VIDEOS, seed=2, shift=0.2)
    reference = random_videos(DDP_VIDEOS, seed=3)
    metric, feed = build_metric(name)
    batches = list(mine.split(2)) if len(mine) else []  # an empty tensor splits into one empty batch
    batches += list(duplicate.split(2)) if duplicate is not None else []
    for batch in batches:
        feed(real[batch], role="real", other=reference[batch])
        feed(fake[batch], role="fake", other=reference[batch])
    return metric


def sharded_metric_results(rank: int, world_size: int) -> dict[str, dict[str, Tensor]]:
    """Every registered metric on fixed data, this rank feeding videos rank, rank + world_size, ... (as
    DistributedSampler shards), in batches of two; `compute()` syncs across ranks when a process group exists.
    Under `<name>|rank0_only` the same, with every video fed by rank 0: the other ranks sync without any update
    (fewer sample files than ranks).
    """
    from benchmarks.metrics import list_metrics

    shares = {"": torch.arange(rank, DDP_VIDEOS, world_size),
              "|rank0_only": torch.arange(DDP_VIDEOS if rank == 0 else 0)}
    results = {}
    for suffix, mine in shares.items():
        for name in list_metrics():
            metric = fed_metric(name, mine)
            results[name + suffix] = {key: value.detach().clone() for key, value in metric.compute().items()}
    return results
