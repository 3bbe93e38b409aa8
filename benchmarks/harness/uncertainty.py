"""Uncertainty on every score: the per-video evidence a metric's value is made of, tapped while the metric updates
(features are computed once), then a bootstrap over videos into the result entry.

A tap wraps, on one metric instance, the public hook its family computes per-video evidence with, and records
the hook's output with the position of each video it belongs to; the metric's own maths is untouched:

- Fréchet metrics (FVD, FID, their curves): `rows_and_groups` -> feature rows per group. Every video gives each
  group the same number of rows, in video order (true of every `FrechetMetric`; checked per batch).
- Kernel metrics (KVD, KID): `embed` -> `[B, d]` or `[B, T, d]` rows.
- Mean-over-videos metrics: `per_video` (warping error, flicker, motion), `pair_differences` (tOF, tLP: the mean
  over a video's pairs; every video has the same number of pairs) and `judge` (prompt adherence: matched or not).

Distribution metrics record the real set too (cached with the real-set statistics). A draw resamples the generated
videos and, for distribution metrics, the real clips, with replacement (`benchmarks.metrics.bootstrap`): the real
counts of draw b depend only on (seed, b, real-set size), so every result of a protocol shares them and two rows'
draws pair. Generated videos are put in condition order (video j is conditioned on real clip j % num_real), so the
generated counts pair rows by prompt as well. The entry records the bootstrap interval around the value
(`benchmarks.metrics.bootstrap.centred_interval`), the per-draw values (what the leaderboard's paired comparison
needs), the number of draws, the seed and both set sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

# What a draw resamples and how its counts are derived; results pair only when this (and seed, draws, n) agree.
SCHEME = "videos+real-clips/pcg64-multinomial/v1"
STORED_DIGITS = 6  # significant digits of the stored per-draw values


@dataclass(frozen=True)
class BootstrapSettings:
    """How many draws, from which seed, at which level. Fixed defaults, recorded in every entry."""

    draws: int = 1000
    seed: int = 0
    level: float = 0.95


FRECHET, KERNEL, MEAN = "frechet", "kernel", "mean"


def _family(metric: Metric) -> tuple[str, str] | None:
    """(family, hook name) of a metric, or None when it exposes no per-video evidence."""
    # Imported here, as scoring imports the metrics: loading the harness (the `zoo` command) stays light.
    from benchmarks.metrics import FrechetMetric, KernelMetric, PromptAdherence

    if isinstance(metric, FrechetMetric):
        return FRECHET, "rows_and_groups"
    if isinstance(metric, KernelMetric):
        return KERNEL, "embed"
    if isinstance(metric, PromptAdherence):
        return MEAN, "judge"
    for hook in ("pair_differences", "per_video"):
        if callable(getattr(metric, hook, None)):
            return MEAN, hook
    return None


class EvidenceTap:
    """Records a metric's per-video evidence while the harness feeds it (`with tap.feeding(role, positions)`).

    Rows are kept as float32 `(group, positions [N], rows [N, d])` records; values as `(positions [B], values)`.
    """

    def __init__(self, metric: Metric, family: str, hook: str) -> None:
        self.family, self.hook = family, hook
        self.records: dict[str, list[tuple]] = {"real": [], "fake": []}
        self._role: str | None = None
        self._positions: Tensor | None = None
        self._calls = 0
        original = getattr(metric, hook)

        def recording(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if self._role is not None:
                self._record(out)
            return out

        # An instance attribute shadows the method, as torchmetrics itself wraps `update` per instance.
        setattr(metric, hook, recording)

    @classmethod
    def attach(cls, metric: Metric) -> EvidenceTap | None:
        """A tap on `metric`, or None for a metric whose family has no per-video hook."""
        found = _family(metric)
        return None if found is None else cls(metric, *found)

    @contextmanager
    def feeding(self, role: str, positions: list[int] | range) -> Iterator[None]:
        """Attribute what the hook computes during this block to the videos at `positions` (in batch order)."""
        self._role, self._positions, self._calls = role, torch.as_tensor(list(positions), dtype=torch.long), 0
        try:
            yield
        finally:
            self._role, self._positions = None, None

    def _record(self, out: Any) -> None:
        positions = self._positions
        batch = positions.numel()
        if self.family == MEAN:
            if self.hook == "judge":
                self.records[self._role].append((positions, out["matched"].detach().double().cpu()))
            else:  # called once per video, in batch order
                value = torch.as_tensor(out).detach().double().mean().cpu()
                self.records[self._role].append((positions[self._calls:self._calls + 1], value.reshape(1)))
                self._calls += 1
            return
        if self.family == KERNEL:
            rows = out.flatten(0, -2)
            groups = torch.zeros(rows.shape[0], dtype=torch.long)
        else:
            rows, groups = out
        rows, groups = rows.detach().float().cpu(), groups.detach().cpu()
        for group in groups.unique().tolist():
            selected = rows[groups == group]
            if selected.shape[0] % batch:
                raise ValueError(f"{selected.shape[0]} rows of group {group} for {batch} videos: the rows cannot "
                                 "be told apart by video")
            per_video = selected.shape[0] // batch
            self.records[self._role].append((int(group), positions.repeat_interleave(per_video), selected))


def consolidate(family: str, records: list[tuple]) -> dict[str, Any]:
    """Records (possibly from several ranks) as tensors sorted by position: `{"values", "positions"}` for a mean
    metric, `{"groups": {group: {"positions", "rows"}}}` for a distribution metric (what the cache stores)."""
    if family == MEAN:
        positions = torch.cat([r[0] for r in records]) if records else torch.empty(0, dtype=torch.long)
        values = torch.cat([r[1] for r in records]) if records else torch.empty(0, dtype=torch.float64)
        order = torch.argsort(positions, stable=True)
        return {"positions": positions[order], "values": values[order]}
    groups: dict[str, dict[str, Tensor]] = {}
    for group in sorted({r[0] for r in records}):
        parts = [r for r in records if r[0] == group]
        positions, rows = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
        order = torch.argsort(positions, stable=True)
        groups[str(group)] = {"positions": positions[order], "rows": rows[order]}
    return {"groups": groups}


def condition_order(reference_index: list[int]) -> list[int]:
    """The unit of each generated video: its place when videos are sorted by (how many earlier videos share its
    real clip, the clip's index), which is the protocol's order `i % num_real` for any folder that covers it."""
    seen: dict[int, int] = {}
    keys = []
    for position, clip in enumerate(reference_index):
        keys.append((seen.get(clip, 0), clip, position))
        seen[clip] = seen.get(clip, 0) + 1
    unit = [0] * len(keys)
    for rank, (_, _, position) in enumerate(sorted(keys)):
        unit[position] = rank
    return unit


def _unit_rows(evidence: dict[str, Tensor], unit_of_position: Tensor, num_units: int, device: torch.device):
    from benchmarks.metrics.bootstrap import UnitRows

    covered = int(torch.unique(evidence["positions"]).numel())
    if covered != num_units or int(evidence["positions"].max()) >= num_units:
        raise ValueError(f"feature rows cover {covered} of {num_units} videos")
    return UnitRows(evidence["rows"].to(device), unit_of_position[evidence["positions"]].to(device), num_units)


def _stored(value: float) -> float:
    return float(f"{value:.{STORED_DIGITS}g}")


def bootstrap_entry(
    family: str, metric: Metric, value: float, fake: dict[str, Any], real: dict[str, Any] | None,
    reference_index: list[int], num_real: int | None, settings: BootstrapSettings, device: torch.device,
) -> dict[str, Any]:
    """The `bootstrap` field of the entry whose value is `value`: the bootstrap interval around it, the
    per-draw values and what they were drawn from.

    `fake`/`real` are `consolidate`d evidence; `reference_index` gives the generated videos' condition order.
    """
    from benchmarks.metrics.bootstrap import (
        centred_interval,
        frechet_distance_draws,
        kernel_distance_draws,
        mean_draws,
        resample_counts,
    )

    num_fake = len(reference_index)
    unit = torch.as_tensor(condition_order(reference_index), dtype=torch.long)
    fake_counts = resample_counts(num_fake, settings.draws, settings.seed, "generated")
    if family == MEAN:
        if fake["positions"].tolist() != list(range(num_fake)):
            raise ValueError(f"per-video values cover {fake['positions'].numel()} of {num_fake} videos")
        order = torch.argsort(unit)  # order[u] = the position of unit u
        draws = mean_draws(fake["values"][order], fake_counts)
        num_real = None
    else:
        if real is None or num_real is None:
            raise ValueError("the real-set features were not kept")
        real_counts = resample_counts(num_real, settings.draws, settings.seed, "real")
        real_unit = torch.arange(num_real)
        per_group = []
        if set(real["groups"]) != set(fake["groups"]):
            raise ValueError(f"real rows in groups {sorted(real['groups'])}, generated in {sorted(fake['groups'])}")
        for group in sorted(fake["groups"], key=int):
            real_rows = _unit_rows(real["groups"][group], real_unit, num_real, device)
            fake_rows = _unit_rows(fake["groups"][group], unit, num_fake, device)
            if family == FRECHET:
                per_group.append(frechet_distance_draws(real_rows, fake_rows, real_counts, fake_counts,
                                                        metric.covariance_ddof))
            else:
                per_group.append(kernel_distance_draws(real_rows, fake_rows, real_counts, fake_counts))
        # A curve's entry is the mean over its points; so is each draw's.
        draws = torch.stack(per_group).mean(0)
    draws = draws.cpu()
    if not bool(torch.isfinite(draws).all()):
        raise ValueError("a bootstrap draw is not finite")
    lower_bound = 0.0 if family == FRECHET else None  # a Fréchet distance is never negative
    low, high = centred_interval(value, draws, settings.level, lower_bound)
    return {"low": low, "high": high, "level": settings.level, "method": "centred-percentile", "lower_bound": lower_bound,
            "draws": settings.draws,
            "seed": settings.seed, "n": num_fake, "n_real": num_real, "scheme": SCHEME,
            "values": [_stored(v) for v in draws.tolist()]}


def missing_bootstrap(reason: str) -> dict[str, str]:
    """The `bootstrap` field when no interval could be drawn (the value still stands)."""
    return {"missing_reason": reason or "no interval"}
