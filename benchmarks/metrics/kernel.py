"""Kernel distances (KID / KVD): unbiased MMD² with the cubic polynomial kernel, averaged over seeded subsets.

    k(x, y) = (x·y / d + 1)³
    MMD²_u = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)

This is the estimator of Bińkowski et al. as clean-fid's `kernel_distance` and torchmetrics' KID implement it.
Unlike FD it is unbiased in the sample count, so it complements FD on small sample sets. Subsets are drawn
without replacement from a `torch.Generator` seeded with `seed`, after putting the rows in a canonical order, so
the result does not depend on the order (or the DDP sharding) in which samples arrived.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.utilities import dim_zero_cat

from benchmarks.metrics.base import DISTRIBUTION, FeatureMetric


def polynomial_kernel(x: Tensor, y: Tensor, degree: int = 3, coef: float = 1.0) -> Tensor:
    """`(x @ y.T / d + coef) ** degree` for rows of dimension d."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def unbiased_mmd2(x: Tensor, y: Tensor, degree: int = 3, coef: float = 1.0) -> Tensor:
    """Unbiased MMD² between equal-sized sample sets `x`, `y` (`[m, d]`, m >= 2) under the polynomial kernel."""
    m = x.shape[0]
    k_xx, k_yy = polynomial_kernel(x, x, degree, coef), polynomial_kernel(y, y, degree, coef)
    k_xy = polynomial_kernel(x, y, degree, coef)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.mean()


def _canonical_order(rows: Tensor, seed: int) -> Tensor:
    # Sorting by a fixed random projection gives a row order that does not depend on arrival order.
    direction = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return rows[torch.argsort(rows @ direction.to(rows.device))]


def kernel_distance(
    real: Tensor,
    fake: Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    coef: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the unbiased MMD² over `num_subsets` seeded subsets (float64)."""
    real, fake = _canonical_order(real.double(), seed), _canonical_order(fake.double(), seed)
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise ValueError(
            f"kernel distance needs at least 2 real and 2 generated samples, got {len(real)} and {len(fake)}"
        )
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(num_subsets):
        fake_subset = fake[torch.randperm(fake.shape[0], generator=generator)[:m].to(fake.device)]
        real_subset = real[torch.randperm(real.shape[0], generator=generator)[:m].to(real.device)]
        estimates.append(unbiased_mmd2(fake_subset, real_subset, degree, coef))
    stacked = torch.stack(estimates)
    std = stacked.std() if num_subsets > 1 else torch.zeros((), dtype=stacked.dtype, device=stacked.device)
    return stacked.mean(), std


class KernelMetric(FeatureMetric):
    """Kernel distance between real and generated features; keeps the features (gathered across DDP ranks).

    Args:
        extractor, per_frame, clip_frames, num_features, batch_size: see `FeatureMetric`.
        num_subsets, subset_size, seed: the subset sampling of `kernel_distance`.
        reset_real_features: if False, `reset()` keeps the real features.
    """

    higher_is_better = False
    inputs = DISTRIBUTION

    def __init__(
        self,
        extractor: nn.Module,
        per_frame: bool,
        num_subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0,
        reset_real_features: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(extractor, per_frame, **kwargs)
        self.num_subsets, self.subset_size, self.seed = num_subsets, subset_size, seed
        self.reset_real_features = reset_real_features
        if not reset_real_features:
            self._roles_kept_on_reset = ("real",)
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch of real (`real=True`) or generated videos."""
        role = "real" if real else "fake"
        rows = self.embed(self.check_videos(videos, role)).flatten(0, -2)
        getattr(self, f"{role}_features").append(rows)

    def sync(self, *args, **kwargs) -> None:
        # A rank that saw no videos of a role (fewer sample files than ranks; real sets live on rank 0) holds [],
        # which torchmetrics would send as a 1-d empty tensor that cannot be gathered with the others' [N, d].
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for role in ("real", "fake"):
                features = getattr(self, f"{role}_features")
                if isinstance(features, list) and not features:
                    features.append(torch.empty(0, self.num_features, dtype=torch.float64, device=self.device))
        super().sync(*args, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        """`value` (mean MMD² over subsets), `std`, `num_real`, `num_fake`, `subset_size`."""
        real = dim_zero_cat(self.real_features) if len(self.real_features) else torch.empty(0)
        fake = dim_zero_cat(self.fake_features) if len(self.fake_features) else torch.empty(0)
        if real.shape[0] == 0 or fake.shape[0] == 0:
            raise ValueError(f"{type(self).__name__} needs real and generated videos before compute()")
        mean, std = kernel_distance(real, fake, self.num_subsets, self.subset_size, self.seed)
        return {
            "value": mean,
            "std": std,
            "num_real": torch.tensor(real.shape[0]),
            "num_fake": torch.tensor(fake.shape[0]),
            "subset_size": torch.tensor(min(self.subset_size, real.shape[0], fake.shape[0])),
        }

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        kept = list(self.real_features) if isinstance(self.real_features, list) else [self.real_features]
        super().reset()
        self.real_features = kept


class KernelInceptionDistance(KernelMetric):
    """KID over all frames of the videos (Inception or any frame extractor)."""

    def __init__(self, extractor: nn.Module, **kwargs) -> None:
        super().__init__(extractor, per_frame=True, **kwargs)


class KernelVideoDistance(KernelMetric):
    """KVD: kernel distance of clip features (I3D or any video extractor), first `clip_frames` frames."""

    def __init__(self, extractor: nn.Module, clip_frames: int | None = 16, **kwargs) -> None:
        super().__init__(extractor, per_frame=False, clip_frames=clip_frames, **kwargs)
