"""Throughput of every metric on this machine: `python -m benchmarks.bench_metrics [--videos 4 --frames 16 ...]`.

Feature networks have their real architecture but random weights: the cost of a forward pass does not depend on
the weight values, and timing needs no downloads. The numbers are for timing only, never a score.
Each metric gets `--videos` real and `--videos` generated (or reference) videos; only `update()` is timed for the
throughput, `compute()` separately.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.features import CleanInceptionFeatures, I3DFeatures, InceptionI3d, StateDictI3D
from benchmarks.metrics import create_metric, list_metrics


@dataclass
class Throughput:
    """Timing of one metric on `num_videos` videos of `num_frames` frames."""

    metric: str
    num_videos: int
    num_frames: int
    update_s: float
    compute_s: float

    @property
    def videos_per_s(self) -> float:
        return self.num_videos / self.update_s

    @property
    def frames_per_s(self) -> float:
        return self.num_videos * self.num_frames / self.update_s


def _inception_timing_backbone() -> nn.Module:
    import torchvision

    network = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    network.fc = nn.Identity()
    network.num_features = 2048
    return network


class _TimingClassifier(nn.Module):
    """A two-head video classifier of about the domain network's size, for prompt adherence timing."""

    label_names = ("class", "motion")

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(channels, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten()
        )
        self.heads = nn.ModuleDict({"class": nn.Linear(32, 10), "motion": nn.Linear(32, 4)})

    def forward(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(videos.transpose(1, 2))
        return {name: head(features) for name, head in self.heads.items()}


def _timing_modules(name: str, frames: int, channels: int) -> dict:
    if name in ("fvd", "kvd", "fvd_sliding_window"):
        modules: dict = {"extractor": I3DFeatures(StateDictI3D(InceptionI3d()))}
        if name == "fvd_sliding_window":
            modules.update(num_frames=frames, window=min(16, frames), stride=max(1, min(16, frames) // 2))
        else:
            modules["clip_frames"] = min(16, frames)
        return modules
    if name in ("fid", "kid", "fid_over_time"):
        return {"extractor": CleanInceptionFeatures(_inception_timing_backbone())}
    if name == "tlp":
        import lpips

        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            return {"lpips_net": lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)}
    if name == "prompt_adherence":
        return {"classifier": _TimingClassifier(channels)}
    return {}


def _feeder(name: str, metric, reference: torch.Tensor) -> Callable[[torch.Tensor, bool], None]:
    if name in ("fvd", "kvd", "fid", "kid", "fid_over_time", "fvd_sliding_window"):
        return lambda videos, real: metric.update(videos, real=real)
    if name in ("tof", "tlp"):
        return lambda videos, real: metric.update(videos, reference)
    if name == "prompt_adherence":
        labels = {"class": torch.zeros(reference.shape[0], dtype=torch.long)}
        return lambda videos, real: metric.update(videos, labels)
    return lambda videos, real: metric.update(videos)


def measure(name: str, num_videos: int, num_frames: int, size: int, channels: int = 3) -> Throughput:
    """Time `update()` on real + generated batches and `compute()` for metric `name`."""
    generator = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(num_videos, num_frames, channels, size, size, generator=generator) for _ in range(2))
    metric = create_metric(name, **_timing_modules(name, num_frames, channels))
    feed = _feeder(name, metric, real)
    started = time.perf_counter()
    feed(real, True)
    feed(fake, False)
    updated = time.perf_counter()
    metric.compute()
    return Throughput(name, 2 * num_videos, num_frames, updated - started, time.perf_counter() - updated)


def main(argv: Sequence[str] | None = None) -> list[Throughput]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos per side (real and generated)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--metrics", default=",".join(list_metrics()), help="comma-separated metric names")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.metrics.split(",") if name.strip()]
    print(f"# {args.videos}+{args.videos} videos of {args.frames}x{args.channels}x{args.size}x{args.size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, random weights (timing only)")
    print(f"{'metric':<20} {'videos/s':>10} {'frames/s':>10} {'update s':>9} {'compute s':>10}")
    results = []
    for name in names:
        result = measure(name, args.videos, args.frames, args.size, args.channels)
        results.append(result)
        print(f"{name:<20} {result.videos_per_s:>10.2f} {result.frames_per_s:>10.1f} "
              f"{result.update_s:>9.2f} {result.compute_s:>10.2f}", flush=True)
    return results


if __name__ == "__main__":
    main()
