"""The one Fréchet distance used by every feature space (FID, FVD, their domain and over-time variants).

    FD = ||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)

`tr((S1 S2)^½)` is the sum of the square roots of the eigenvalues of `S1 S2`, which are those of the symmetric
positive semi-definite `A^T S2 A` with `S1 = A A^T` (`A = U Λ^½` from `eigh(S1)`). We take them with `eigvalsh` in
float64 and set to zero the ones below the rounding floor of the problem (`d · ε · ||S1|| ||S2||`): with fewer
samples than dimensions (8 videos in a 400-d feature space, a 16-video window of a long rollout) some eigenvalues
are zero up to rounding, and the square root of a rounding error of 1e-16 is 1e-8, so an untruncated sum moves with
summation order (the DDP flake of issue 13). On full-rank covariances this matches the `scipy.linalg.sqrtm` form of
pytorch-fid / clean-fid / StyleGAN-V to ~1e-12 relative, and it needs no `sqrtm(disp=...)`, which SciPy 1.18 removes.

Fallback (`eps`): if the decomposition fails or its eigenvalues are not finite, `eps` is added to both diagonals and the product is decomposed
again, as pytorch-fid does for a singular `sqrtm`.

States are numerically robust moments, not raw sums: per group, the row count, the mean and the centred sum of
outer products `M2 = Σ (x - mean)(x - mean)ᵀ`. Batches and DDP ranks merge with the pairwise formula of Chan,
Golub & LeVeque (`merge_moments`), so no `Σxxᵀ - nμμᵀ` cancellation loses digits when the mean is large next to
the spread, and the merged moments do not depend on how rows were split over ranks beyond float64 rounding.

The covariance convention matters because FD is biased by sample count: `covariance_ddof=1` divides by N-1
(pytorch-fid, clean-fid, torchmetrics, cd-fvd: `np.cov`), `covariance_ddof=0` divides by N (StyleGAN / StyleGAN-V's
`FeatureStats.get_mean_cov`). Results must carry the sample counts and convention to be compared.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmarks.metrics.base import DISTRIBUTION, FeatureMetric

DEFAULT_EPS = 1e-6


def row_moments(rows: Tensor) -> Tensor:
    """Moments of feature rows `[N, d]` packed as one float64 vector `[1 + d + d²]`: count, mean, centred M2."""
    rows = rows.double()
    count = rows.shape[0]
    mean = rows.mean(dim=0) if count else rows.new_zeros(rows.shape[1])
    centred = rows - mean
    return torch.cat([rows.new_tensor([count]), mean, (centred.T @ centred).flatten()])


def unpack_moments(moments: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`(count, mean [..., d], M2 [..., d, d])` of packed moments `[..., 1 + d + d²]`."""
    dim = int(round((moments.shape[-1] - 1) ** 0.5))
    if 1 + dim + dim * dim != moments.shape[-1]:
        raise ValueError(f"packed moments have length {moments.shape[-1]}, not 1 + d + d² for any d")
    count = moments[..., 0]
    mean = moments[..., 1 : 1 + dim]
    m2 = moments[..., 1 + dim :].unflatten(-1, (dim, dim))
    return count, mean, m2


def merge_moments(stacked: Tensor) -> Tensor:
    """Merge packed moments stacked on dim 0 (`[K, ..., 1 + d + d²]`, K parts of one sample) into one.

    Chan et al.'s pairwise update generalised to K parts at once: `n = Σ n_k`, `mean = Σ n_k mean_k / n`,
    `M2 = Σ M2_k + Σ n_k (mean_k - mean)(mean_k - mean)ᵀ`. Parts with no rows contribute nothing. This is the
    `dist_reduce_fx` of the states, so DDP ranks, `forward` and `merge_state` all merge the same way.
    """
    counts, means, m2s = unpack_moments(stacked)
    total = counts.sum(dim=0)
    weights = counts / total.clamp(min=1).unsqueeze(0)
    mean = (weights.unsqueeze(-1) * means).sum(dim=0)
    offsets = (means - mean) * counts.unsqueeze(-1).sqrt()
    m2 = m2s.sum(dim=0) + torch.einsum("k...i,k...j->...ij", offsets, offsets)
    return torch.cat([total.unsqueeze(-1), mean, m2.flatten(-2)], dim=-1)


def covariance_from_moments(moments: Tensor, covariance_ddof: int = 1) -> tuple[Tensor, Tensor]:
    """Mean and covariance (float64) of packed moments; `covariance_ddof=1` divides by N-1 (np.cov), `0` by N."""
    count, mean, m2 = unpack_moments(moments)
    n = int(count)
    if n - covariance_ddof <= 0:
        raise ValueError(f"need more than {covariance_ddof} samples to estimate a covariance, got {n}")
    return mean, m2 / (n - covariance_ddof)


def _trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """`tr((S1 S2)^½)` through the symmetric form `A^T S2 A` (`S1 = A A^T`), rounding-level eigenvalues zeroed."""
    eigenvalues1, vectors1 = torch.linalg.eigh(sigma1)
    factor = vectors1 * eigenvalues1.clamp(min=0).sqrt()
    product = factor.T @ sigma2 @ factor
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    norm1, norm2 = eigenvalues1.abs().max(), torch.linalg.eigvalsh(sigma2).abs().max()
    floor = sigma1.shape[0] * torch.finfo(sigma1.dtype).eps * norm1 * norm2
    return torch.where(eigenvalues > floor, eigenvalues, torch.zeros_like(eigenvalues)).sqrt().sum()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64 scalar tensor (see module docstring)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"Gaussians of different dimension: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
            f"sigma {tuple(sigma1.shape)} vs {tuple(sigma2.shape)}"
        )
    try:
        trace_sqrt_product = _trace_sqrt_product(sigma1, sigma2)
    except torch.linalg.LinAlgError:  # eigh did not converge
        trace_sqrt_product = torch.tensor(float("nan"), dtype=sigma1.dtype)
    if not torch.isfinite(trace_sqrt_product):
        offset = torch.eye(sigma1.shape[0], dtype=sigma1.dtype, device=sigma1.device) * eps
        trace_sqrt_product = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    return diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product


class FrechetMetric(FeatureMetric):
    """Fréchet distance between real and generated feature Gaussians, kept as merged moments (O(d²) memory).

    Rows can fall into `num_groups` groups (frame-index buckets, sliding windows), each with its own distance;
    with one group `compute()["value"]` is a scalar, otherwise a curve. States are packed moments per group
    (`[num_groups, 1 + d + d²]`: count, mean, centred M2) merged across batches and DDP ranks by `merge_moments`.

    Args:
        extractor, per_frame, clip_frames, num_features, batch_size: see `FeatureMetric`.
        num_groups: number of separately scored groups of rows.
        reset_real_features: if False, `reset()` keeps the real statistics (a fixed reference set).
        covariance_ddof: 1 divides the covariance by N-1 (clean-fid, torchmetrics), 0 by N (StyleGAN-V).
        eps: diagonal offset of the fallback decomposition (see `frechet_distance`).
    """

    higher_is_better = False
    inputs = DISTRIBUTION

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
            self.add_state(
                f"{role}_moments", torch.zeros(num_groups, 1 + dim + dim * dim, dtype=torch.float64),
                dist_reduce_fx=merge_moments,
            )

    @property
    def real_count(self) -> Tensor:
        """Real rows per group `[num_groups]` (long)."""
        return self.real_moments[:, 0].long()

    @property
    def fake_count(self) -> Tensor:
        """Generated rows per group `[num_groups]` (long)."""
        return self.fake_moments[:, 0].long()

    def rows_and_groups(self, videos: Tensor) -> tuple[Tensor, Tensor]:
        """Feature rows `[N, d]` of validated videos and the group index `[N]` of each row (default: group 0)."""
        rows = self.embed(videos).flatten(0, -2)
        return rows, torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch of real (`real=True`) or generated videos."""
        role = "real" if real else "fake"
        rows, groups = self.rows_and_groups(self.check_videos(videos, role))
        batch = torch.stack([row_moments(rows[groups == group]) for group in range(self.num_groups)])
        state = f"{role}_moments"
        setattr(self, state, merge_moments(torch.stack([getattr(self, state), batch.to(getattr(self, state))])))

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
            mu_real, sigma_real = covariance_from_moments(self.real_moments[group], self.covariance_ddof)
            mu_fake, sigma_fake = covariance_from_moments(self.fake_moments[group], self.covariance_ddof)
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
        kept = self.real_moments.clone()
        super().reset()
        self.real_moments = kept


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
