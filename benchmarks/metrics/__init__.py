"""Video generation metrics as torchmetrics `Metric`s, usable on anyone's videos (this package imports no `zoo`).

Input everywhere: videos `[B, T, C, H, W]` (C = 1 or 3), float in [0, 1] or uint8. NaN/Inf values, other
ranges, and real/generated (or generated/reference) videos of different frame count or resolution are refused with
a one-line `ValueError`. States carry `dist_reduce_fx`, so results are the same under DDP as in one process.

`compute()` always returns a dict of tensors: `"value"` (a scalar, or a curve for the over-time metrics) plus the
counts to compare like with like (`num_real`/`num_fake` feature rows for FD/KD, `num_videos` otherwise).

Distribution metrics, `update(videos, real: bool)`; `extractor` is any `nn.Module` mapping videos (clip metrics)
or frames `[N, C, H, W]` (frame metrics) in [0, 1] to `[N, d]`, with a `num_features` attribute:

    FrechetVideoDistance(extractor, clip_frames=16, reset_real_features=True, covariance_ddof=1, eps=1e-6)
    FrechetInceptionDistance(extractor, ...)            # one row per frame
    KernelVideoDistance(extractor, clip_frames=16, num_subsets=100, subset_size=1000, seed=0)
    KernelInceptionDistance(extractor, ...)
    FIDOverTime(extractor, num_buckets=4)               # value: FID per frame-index bucket
    SlidingWindowFVD(extractor, num_frames, window=16, stride=8)   # value: FVD per window
    -> {"value", "num_real", "num_fake", "covariance_ddof"} (FD) / {"value", "std", "num_real", "num_fake", ...} (KD)

Temporal consistency of generated videos, `update(videos)`, weight-free:

    WarpingError(preset="medium")   # DIS flow, forward-backward occlusion mask; lower is better
    Flicker()                       # mean |frame_t+1 - frame_t|; also "vbench_score" = 1 - value
    MotionMagnitude(preset="medium")  # mean flow magnitude, pixels/frame: a frozen video scores 0

Paired with reference videos, `update(videos, reference)`:

    TemporalOF()                    # TecoGAN tOF, Farneback flow
    TemporalLPIPS(lpips_net)        # TecoGAN tLP

Labels, `update(videos, labels={"digit": LongTensor[B], ...})`:

    PromptAdherence(classifier)     # fraction of videos whose predicted labels match the prompt

The same classifier on the videos alone, `update(videos)`:

    LabelPersistence(classifier, window=8)  # fraction of videos read alike in every 8-frame window (no morphing)

By name: `create_metric("fvd")` (default extractor I3D TorchScript), `create_metric("fid", extractor=my_module)`,
`create_metric("fvd", extractor="domain_moving_digits")`; `list_metrics()` lists the names. The math lives in
plain functions: `frechet_distance`, `row_moments` / `merge_moments` / `covariance_from_moments` (the
robust states of every Fréchet metric), `kernel_distance`; bootstrap draws of FD, KD and
per-video means from features computed once are in `benchmarks.metrics.bootstrap`.
"""

from benchmarks.metrics.frechet import (
    FrechetInceptionDistance,
    FrechetMetric,
    FrechetVideoDistance,
    covariance_from_moments,
    frechet_distance,
    merge_moments,
    row_moments,
)
from benchmarks.metrics.kernel import KernelInceptionDistance, KernelMetric, KernelVideoDistance, kernel_distance
from benchmarks.metrics.over_time import FIDOverTime, SlidingWindowFVD
from benchmarks.metrics.prompt_adherence import LabelPersistence, PromptAdherence
from benchmarks.metrics.registry import UnknownMetricError, create_metric, list_metrics
from benchmarks.metrics.temporal import Flicker, MotionMagnitude, WarpingError
from benchmarks.metrics.temporal_reference import TemporalLPIPS, TemporalOF

__all__ = [
    "FIDOverTime",
    "Flicker",
    "FrechetInceptionDistance",
    "FrechetMetric",
    "FrechetVideoDistance",
    "KernelInceptionDistance",
    "KernelMetric",
    "KernelVideoDistance",
    "LabelPersistence",
    "MotionMagnitude",
    "PromptAdherence",
    "SlidingWindowFVD",
    "TemporalLPIPS",
    "TemporalOF",
    "UnknownMetricError",
    "WarpingError",
    "create_metric",
    "covariance_from_moments",
    "frechet_distance",
    "kernel_distance",
    "list_metrics",
    "merge_moments",
    "row_moments",
]
