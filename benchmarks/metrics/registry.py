"""`create_metric(name, **kwargs)` and `list_metrics()`: the metrics by name, for configs and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchmetrics import Metric

from benchmarks.metrics.frechet import FrechetInceptionDistance, FrechetVideoDistance
from benchmarks.metrics.kernel import KernelInceptionDistance, KernelVideoDistance
from benchmarks.metrics.over_time import FIDOverTime, SlidingWindowFVD
from benchmarks.metrics.prompt_adherence import LabelPersistence, PromptAdherence
from benchmarks.metrics.temporal import Flicker, MotionMagnitude, WarpingError
from benchmarks.metrics.temporal_reference import TemporalLPIPS, TemporalOF
from hvz_registry import Registry, UnknownNameError


@dataclass(frozen=True)
class MetricEntry:
    """A metric class and the extractor names its module arguments default to (resolved by `create_extractor`)."""

    cls: type[Metric]
    default_modules: dict[str, str] = field(default_factory=dict)


class UnknownMetricError(UnknownNameError):
    """A metric name that is not registered."""


METRICS: Registry[MetricEntry] = Registry("metric", error=UnknownMetricError)
METRICS.register("fvd", MetricEntry(FrechetVideoDistance, {"extractor": "i3d_torchscript"}))
METRICS.register("kvd", MetricEntry(KernelVideoDistance, {"extractor": "i3d_torchscript"}))
METRICS.register("fid", MetricEntry(FrechetInceptionDistance, {"extractor": "inception_clean"}))
METRICS.register("kid", MetricEntry(KernelInceptionDistance, {"extractor": "inception_clean"}))
METRICS.register("fid_over_time", MetricEntry(FIDOverTime, {"extractor": "inception_clean"}))
METRICS.register("fvd_sliding_window", MetricEntry(SlidingWindowFVD, {"extractor": "i3d_torchscript"}))
METRICS.register("warping_error", MetricEntry(WarpingError))
METRICS.register("flicker", MetricEntry(Flicker))
METRICS.register("motion_magnitude", MetricEntry(MotionMagnitude))
METRICS.register("tof", MetricEntry(TemporalOF))
METRICS.register("tlp", MetricEntry(TemporalLPIPS, {"lpips_net": "lpips_alex"}))
METRICS.register("prompt_adherence", MetricEntry(PromptAdherence))
METRICS.register("label_persistence", MetricEntry(LabelPersistence))


# The arguments of a metric that take a module, given as one or as a `benchmarks.features` extractor name.
MODULE_ARGUMENTS = ("extractor", "lpips_net", "classifier")


def list_metrics(pattern: str = "*") -> list[str]:
    """Registered metric names matching a shell-style pattern, sorted."""
    return METRICS.names(pattern)


def extractor_names(name: str, **kwargs: Any) -> dict[str, str]:
    """{module argument: extractor name} that `create_metric(name, **kwargs)` resolves: the names given, else the
    metric's defaults; arguments given as modules are left out. Builds nothing."""
    defaults = METRICS.get(name).default_modules
    resolved = {argument: kwargs.get(argument, defaults.get(argument)) for argument in MODULE_ARGUMENTS}
    return {argument: value for argument, value in resolved.items() if isinstance(value, str)}


def create_metric(name: str, **kwargs: Any) -> Metric:
    """Build metric `name`. Module arguments (`MODULE_ARGUMENTS`) may be given as modules or as
    `benchmarks.features` extractor names; left out, they default to the canonical extractor (e.g. FVD: I3D).
    """
    entry = METRICS.get(name)
    for argument, extractor in extractor_names(name, **kwargs).items():
        from benchmarks.features import create_extractor

        kwargs[argument] = create_extractor(extractor)
    return entry.cls(**kwargs)
