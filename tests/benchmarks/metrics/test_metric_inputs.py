"""Every registered metric refuses NaN/Inf, out-of-range and mismatched videos, and accepts uint8 videos."""

from __future__ import annotations

import pytest
import torch

from benchmarks.metrics import UnknownMetricError, create_metric, list_metrics
from benchmarks.metrics.video_input import as_float_videos

ALL_METRICS = list_metrics()
DISTRIBUTION_METRICS = ["fvd", "kvd", "fid", "kid", "fid_over_time", "fvd_sliding_window"]


def test_registry_lists_every_metric_of_the_brief():
    assert set(ALL_METRICS) == {
        "fvd", "kvd", "fid", "kid", "fid_over_time", "fvd_sliding_window", "warping_error", "flicker",
        "motion_magnitude", "tof", "tlp", "prompt_adherence", "label_persistence",
    }
    assert list_metrics("f*") == ["fid", "fid_over_time", "flicker", "fvd", "fvd_sliding_window"]


def test_unknown_metric_names_get_a_hint():
    with pytest.raises(UnknownMetricError, match="did you mean 'warping_error'"):
        create_metric("warp_error")


@pytest.mark.parametrize("name", ALL_METRICS)
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_nan_and_inf_videos_are_refused(name, bad_value, helpers):
    metric, feed = helpers.build_metric(name)
    videos = helpers.random_videos(2)
    videos[1, 3, 0, 2, 2] = bad_value
    with pytest.raises(ValueError, match="NaN or Inf"):
        feed(videos)


@pytest.mark.parametrize("name", ALL_METRICS)
def test_mismatched_frame_counts_are_refused(name, helpers):
    metric, feed = helpers.build_metric(name)
    if name in ("tof", "tlp"):
        with pytest.raises(ValueError, match="mismatched frame counts"):
            feed(helpers.random_videos(2), other=helpers.random_videos(2, frames=6))
        return
    feed(helpers.random_videos(2), role="real")
    with pytest.raises(ValueError, match="mismatched frame counts"):
        feed(helpers.random_videos(2, frames=6), role="fake")


@pytest.mark.parametrize("name", ALL_METRICS)
def test_mismatched_resolutions_are_refused(name, helpers):
    metric, feed = helpers.build_metric(name)
    if name in ("tof", "tlp"):
        with pytest.raises(ValueError, match="mismatched resolutions"):
            feed(helpers.random_videos(2), other=helpers.random_videos(2, size=20))
        return
    feed(helpers.random_videos(2), role="real")
    with pytest.raises(ValueError, match="mismatched resolutions"):
        feed(helpers.random_videos(2, size=20), role="fake")


@pytest.mark.parametrize("name", DISTRIBUTION_METRICS)
def test_uint8_and_float_videos_give_the_same_result(name, helpers):
    real, fake = helpers.random_videos(6, seed=1), helpers.random_videos(6, seed=2, shift=0.2)
    real, fake = (torch.round(v * 255) / 255 for v in (real, fake))
    results = []
    for convert in (lambda v: v, lambda v: torch.round(v * 255).to(torch.uint8)):
        metric, feed = helpers.build_metric(name)
        feed(convert(real), role="real")
        feed(convert(fake), role="fake")
        results.append(metric.compute()["value"])
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_wrong_layout_range_and_dtype_have_one_line_errors():
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        as_float_videos(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        as_float_videos(torch.rand(2, 4, 16, 16, 3))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        as_float_videos(torch.rand(2, 4, 3, 16, 16) * 2 - 1)
    with pytest.raises(TypeError, match="uint8"):
        as_float_videos(torch.ones(2, 4, 3, 16, 16, dtype=torch.int64))
    assert as_float_videos(torch.full((1, 2, 1, 4, 4), 1.0005)).max().item() == 1.0


@pytest.mark.parametrize("name", list_metrics())
def test_every_metric_declares_what_update_consumes(helpers, name):
    import inspect

    from benchmarks.metrics.base import DISTRIBUTION, GENERATED_ONLY, INPUTS, LABELLED, PAIRED

    metric, _ = helpers.build_metric(name)
    assert metric.inputs in INPUTS
    arguments = list(inspect.signature(metric.update).parameters)[1:]
    expected = {DISTRIBUTION: ["real"], LABELLED: ["labels"], PAIRED: ["reference"], GENERATED_ONLY: []}
    assert arguments == expected[metric.inputs]


def test_a_metric_without_declared_inputs_is_refused_by_the_harness():
    from torchmetrics import Metric

    from benchmarks.harness.scoring import metric_kind

    class Undeclared(Metric):
        def update(self, videos):
            pass

        def compute(self):
            return {}

    with pytest.raises(ValueError, match="declares no `inputs`"):
        metric_kind(Undeclared())
