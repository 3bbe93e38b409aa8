"""The one Fréchet distance used by every feature space (FID, FVD, their domain and over-time variants).

    FD = ||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)

`tr((S1 S2)^½)` is the sum of the square roots of the eigenvalues of `S1 @ S2` (real and non-negative for two
covariance matrices, up to rounding), so we compute `eigvals(S1 @ S2).sqrt().real.sum()` in float64 instead of a
matrix square root; this matches the `scipy.linalg.sqrtm` form of pytorch-fid / clean-fid / StyleGAN-V to ~1e-9
relative and does not depend on SciPy's `sqrtm(disp=...)`, which SciPy 1.18 removes.

Fallback (`eps`): if the eigenvalues are not finite (degenerate or ill-conditioned covariances), `eps` is added to
both diagonals and the product is decomposed again, as pytorch-fid does for a singular `sqrtm`.

The covariance convention matters because FD is biased by sample count: `covariance_ddof=1` divides by N-1
(pytorch-fid, clean-fid, torchmetrics, cd-fvd: `np.cov`), `covariance_ddof=0` divides by N (StyleGAN / StyleGAN-V's
`FeatureStats.get_mean_cov`). Results must carry the sample counts and convention to be compared.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmarks.metrics.base import FeatureMetric

DEFAULT_EPS = 1e-6


def mean_and_covariance(
    features_sum: Tensor, outer_sum: Tensor, num_samples: Tensor | int, covariance_ddof: int = 1
) -> tuple[Tensor, Tensor]:
    """Mean and covariance (float64) from running sums `Σx`, `Σxxᵀ` over `num_samples` rows.

    `covariance_ddof=1` divides by N-1 (np.cov), `0` by N (StyleGAN-V).
    """
    n = int(num_samples)
    if n - covariance_ddof <= 0:
        raise ValueError(f"need more than {covariance_ddof} samples to estimate a covariance, got {n}")
    mean = features_sum.double() / n
    covariance = (outer_sum.double() - n * torch.outer(mean, mean)) / (n - covariance_ddof)
    return mean, covariance


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64 scalar tensor (see module docstring)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"Gaussians of different dimension: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
            f"sigma {tuple(sigma1.shape)} vs {tuple(sigma2.shape)}"
        )
    eigenvalues = torch.linalg.eigvals(sigma1 @ sigma2)
    if not torch.isfinite(eigenvalues).all():
        offset = torch.eye(sigma1.shape[0], dtype=sigma1.dtype, device=sigma1.device) * eps
        eigenvalues = torch.linalg.eigvals((sigma1 + offset) @ (sigma2 + offset))
    trace_sqrt_product = eigenvalues.sqrt().real.sum()
    diff = mu1 - mu2
    return diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product


class FrechetMetric(FeatureMetric):
    """Fréchet distance between real and generated feature Gaussians, kept as running sums (O(d²) memory).

    Rows can fall into `num_groups` groups (frame-index buckets, sliding windows), each with its own distance;
    with one group `compute()["value"]` is a scalar, otherwise a curve. States sum across DDP ranks.

    Args:
        extractor, per_frame, clip_frames, num_features, batch_size: see `FeatureMetric`.
        num_groups: number of separately scored groups of rows.
        reset_real_features: if False, `reset()` keeps the real statistics (a fixed reference set).
        covariance_ddof: 1 divides the covariance by N-1 (clean-fid, torchmetrics), 0 by N (StyleGAN-V).
        eps: diagonal offset of the fallback decomposition (see `frechet_distance`).
    """

    higher_is_better = False

    def __init__(
        self,
        extractor: nn.Module,
        per_frame: bool,
        num_groups: int = 1,
        reset_real_features: bool = True,
        covariance_ddof: int = 1,
        eps: float = DEFAULT_EPS,
        **kwargs,
    ) -> None:
        super().__init__(extractor, per_frame, **kwargs)
        if covariance_ddof not in (0, 1):
            raise ValueError(f"covariance_ddof must be 0 (divide by N) or 1 (divide by N-1), got {covariance_ddof}")
        self.num_groups = num_groups
        self.reset_real_features = reset_real_features
        self.covariance_ddof = covariance_ddof
        self.eps = eps
        if not reset_real_features:
            self._roles_kept_on_reset = ("real",)
        dim = self.num_features
        for role in ("real", "fake"):
            self.add_state(f"{role}_sum", torch.zeros(num_groups, dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{role}_outer_sum", torch.zeros(num_groups, dim, dim, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(f"{role}_count", torch.zeros(num_groups, dtype=torch.long), dist_reduce_fx="sum")

    def rows_and_groups(self, videos: Tensor) -> tuple[Tensor, Tensor]:
        """Feature rows `[N, d]` of validated videos and the group index `[N]` of each row (default: group 0)."""
        rows = self.embed(videos).flatten(0, -2)
        return rows, torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch of real (`real=True`) or generated videos."""
        role = "real" if real else "fake"
        rows, groups = self.rows_and_groups(self.check_videos(videos, role))
        getattr(self, f"{role}_sum").index_add_(0, groups, rows)
        getattr(self, f"{role}_count").index_add_(0, groups, torch.ones_like(groups))
        outer_sum = getattr(self, f"{role}_outer_sum")
        for group in groups.unique().tolist():
            selected = rows[groups == group]
            outer_sum[group] += selected.T @ selected

    def compute(self) -> dict[str, Tensor]:
        """`value` (distance per group), `num_real`, `num_fake` (rows per group) and `covariance_ddof`."""
        minimum = self.covariance_ddof + 1
        if int(self.real_count.min()) < minimum or int(self.fake_count.min()) < minimum:
            raise ValueError(
                f"{type(self).__name__} needs at least {minimum} real and {minimum} generated samples per group, "
                f"got {self.real_count.tolist()} real and {self.fake_count.tolist()} generated"
            )
        values = []
        for group in range(self.num_groups):
            mu_real, sigma_real = mean_and_covariance(
                self.real_sum[group], self.real_outer_sum[group], self.real_count[group], self.covariance_ddof
            )
            mu_fake, sigma_fake = mean_and_covariance(
                self.fake_sum[group], self.fake_outer_sum[group], self.fake_count[group], self.covariance_ddof
            )
            values.append(frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake, eps=self.eps))
        value, num_real, num_fake = torch.stack(values), self.real_count.clone(), self.fake_count.clone()
        if self.num_groups == 1:
            value, num_real, num_fake = value[0], num_real[0], num_fake[0]
        return {
            "value": value,
            "num_real": num_real,
            "num_fake": num_fake,
            "covariance_ddof": torch.tensor(self.covariance_ddof),
        }

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        kept = {name: getattr(self, name).clone() for name in ("real_sum", "real_outer_sum", "real_count")}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)


class FrechetVideoDistance(FrechetMetric):
    """FVD: Fréchet distance of clip features (I3D for the canonical protocol, or any video extractor).

    Uses the first `clip_frames` frames of each video (16 in the canonical protocol; None for all frames).
    """

    def __init__(self, extractor: nn.Module, clip_frames: int | None = 16, **kwargs) -> None:
        super().__init__(extractor, per_frame=False, clip_frames=clip_frames, **kwargs)


class FrechetInceptionDistance(FrechetMetric):
    """FID over all frames of the videos (clean-fid Inception, or any frame extractor); one row per frame."""

    def __init__(self, extractor: nn.Module, **kwargs) -> None:
        super().__init__(extractor, per_frame=True, **kwargs)
