"""Under DDP (2 gloo processes on CPU) every metric gives the single-process result on the same data, within the
rounding its own conditioning allows; dropping or double counting a rank's data is far outside that."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.metrics import FrechetMetric, covariance_from_moments, frechet_distance, list_metrics

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ddp_worker.py")
EPS = torch.finfo(torch.float64).eps


def frechet_values(metric: FrechetMetric, real_moments: torch.Tensor, fake_moments: torch.Tensor) -> torch.Tensor:
    """The metric's Fréchet distance per group from given moments (the functional path `compute()` takes)."""
    return torch.stack([
        frechet_distance(*covariance_from_moments(real, metric.covariance_ddof),
                         *covariance_from_moments(fake, metric.covariance_ddof), eps=metric.eps)
        for real, fake in zip(real_moments, fake_moments, strict=True)
    ])


def frechet_rounding_tolerance(metric: FrechetMetric, draws: int = 16) -> float:
    """How far summation order alone can move this metric's value: a finite-difference condition estimate.

    Merging n rows in another order changes each moment entry by up to ~n·ε relative (float64 summation), so we
    perturb the single-process moments by random relative changes of that size and take 10x the largest move of
    the distance. An ill-conditioned problem (fewer rows than dimensions) gets a wider tolerance, a
    well-conditioned one a tight one; either stays orders of magnitude below what a dropped or doubled rank does.
    """
    real, fake = metric.real_moments.clone(), metric.fake_moments.clone()
    base = frechet_values(metric, real, fake)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(draws):
        moved = []
        for moments in (real, fake):
            noise = torch.randn(moments.shape, generator=generator, dtype=torch.float64)
            noise[:, 0] = 0  # row counts are exact integers
            moved.append(moments * (1 + moments[:, :1] * EPS * noise))
        worst = max(worst, (frechet_values(metric, *moved) - base).abs().max().item())
    return 10 * worst + 1e-14 * base.abs().max().item()


@functools.cache
def single_process_frechet_tolerance(helpers, name: str) -> float:
    """`frechet_rounding_tolerance` of metric `name` fed every video in one process (computed once per metric)."""
    return frechet_rounding_tolerance(helpers.fed_metric(name, torch.arange(helpers.DDP_VIDEOS)))


def tolerance(helpers, name: str, key: str, expected: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) of the DDP-equality check of `compute()[key]` of metric `name` (`<metric>[|suffix]`)."""
    if not expected.is_floating_point():
        return 0.0, 0.0  # counts and flags must be exact
    metric_name = name.split("|")[0]
    if key == "value" and isinstance(helpers.build_metric(metric_name)[0], FrechetMetric):
        return 0.0, single_process_frechet_tolerance(helpers, metric_name)
    # Other float outputs are sums of at most n² float64 terms (kernel MMD) or of n per-video values: summation
    # order changes them by at most ~n²·ε relative.
    return 4 * helpers.DDP_VIDEOS**2 * EPS, 1e-15


def within_tolerance(helpers, name: str, got: dict, expected: dict) -> bool:
    for key, value in expected.items():
        rtol, atol = tolerance(helpers, name, key, value)
        if not torch.allclose(got[key].to(value.dtype), value, rtol=rtol, atol=atol):
            return False
    return True


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(helpers, tmp_path):
    output, rendezvous = tmp_path / "ddp_results.pt", tmp_path / "rendezvous"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", str(rendezvous), str(output)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    logs = [rank.communicate(timeout=300)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(logs)[-3000:]

    distributed = torch.load(output, weights_only=True)
    single = helpers.sharded_metric_results(rank=0, world_size=1)
    assert set(distributed) == set(single)
    for name, expected in single.items():
        assert set(distributed[name]) == set(expected), name
        for key, value in expected.items():
            rtol, atol = tolerance(helpers, name, key, value)
            torch.testing.assert_close(distributed[name][key], value, rtol=rtol, atol=atol, msg=f"{name}/{key}")


@pytest.mark.parametrize("name", list_metrics())
def test_a_dropped_or_doubled_rank_is_outside_the_tolerance(helpers, name):
    everything = torch.arange(helpers.DDP_VIDEOS)
    expected = {k: v.detach().clone() for k, v in helpers.fed_metric(name, everything).compute().items()}
    rank1 = torch.arange(1, helpers.DDP_VIDEOS, 2)
    dropped = helpers.fed_metric(name, torch.arange(0, helpers.DDP_VIDEOS, 2)).compute()
    doubled = helpers.fed_metric(name, everything, duplicate=rank1).compute()
    assert not within_tolerance(helpers, name, dropped, expected)
    assert not within_tolerance(helpers, name, doubled, expected)


def test_frechet_tolerance_is_far_below_what_a_lost_rank_moves(helpers):
    for name in ("fvd", "fid", "fid_over_time", "fvd_sliding_window"):
        everything = torch.arange(helpers.DDP_VIDEOS)
        metric = helpers.fed_metric(name, everything)
        value = metric.compute()["value"]
        doubled = helpers.fed_metric(name, everything, duplicate=torch.arange(1, helpers.DDP_VIDEOS, 2))
        moved = (doubled.compute()["value"] - value).abs().min().item()
        assert moved > 1e4 * frechet_rounding_tolerance(metric), name
