"""Uncertainty end to end: taps attribute each feature row to its video, bootstrap records pair across results, and
the leaderboard ranks with the paired test (ties share rank 1 and the bold; a diagnostic is never ranked)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmarks.harness.uncertainty import BootstrapSettings, EvidenceTap, bootstrap_entry, condition_order, consolidate
from benchmarks.leaderboard import build_leaderboard, load_boards
from benchmarks.leaderboard.results import RANKING_RULE, _aggregate, significantly_different
from benchmarks.metrics import create_metric


class VideoId(nn.Module):
    """Features that name the video: every feature of a clip or frame is its mean brightness."""

    num_features = 2

    def forward(self, x):
        return x.flatten(1).mean(1, keepdim=True).expand(-1, 2)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("fvd", {"clip_frames": 8}), ("fid", {}), ("fid_over_time", {"num_buckets": 4}),
    ("fvd_sliding_window", {"num_frames": 8, "window": 4, "stride": 2}), ("kvd", {"clip_frames": 8}), ("kid", {}),
])
def test_taps_attribute_every_row_to_its_video(name, kwargs):
    metric = create_metric(name, extractor=VideoId(), **kwargs)
    tap = EvidenceTap.attach(metric)
    videos = (torch.arange(1, 6, dtype=torch.float32) / 10).view(5, 1, 1, 1, 1).expand(5, 8, 1, 4, 4)
    with tap.feeding("fake", range(10, 15)):  # the videos at positions 10..14 of a folder
        metric.update(videos, real=False)
    evidence = consolidate(tap.family, tap.records["fake"])
    groups = evidence["groups"]
    assert len(groups) == {"fid_over_time": 4, "fvd_sliding_window": 3}.get(name, 1)
    for group in groups.values():
        brightness = group["rows"][:, 0]
        assert torch.allclose(brightness, (group["positions"] - 9).float() / 10)
        # Each video gives each group the same number of rows.
        assert len(set(torch.bincount(group["positions"])[10:].tolist())) == 1


def test_mean_taps_record_one_value_per_video_and_leave_the_value_alone():
    flicker = create_metric("flicker")
    tap = EvidenceTap.attach(flicker)
    videos = torch.rand(4, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with tap.feeding("fake", [3, 2, 1, 0]):
        flicker.update(videos)
    evidence = consolidate(tap.family, tap.records["fake"])
    per_video = [float((v[1:] - v[:-1]).abs().mean()) for v in videos]
    assert evidence["positions"].tolist() == [0, 1, 2, 3]
    assert evidence["values"].tolist() == pytest.approx(per_video[::-1])
    assert float(flicker.compute()["value"]) == pytest.approx(sum(per_video) / 4)


def test_generated_videos_are_resampled_in_condition_order():
    # Video i of the protocol is conditioned on clip i % 3; a folder listing them in another order maps back.
    assert condition_order([0, 1, 2, 0, 1, 2]) == [0, 1, 2, 3, 4, 5]
    assert condition_order([2, 0, 1, 2, 1, 0]) == [2, 0, 1, 5, 4, 3]


D, NUM_REAL, NUM_FAKE = 8, 256, 64  # the moving_digits shape
SETTINGS = BootstrapSettings(draws=400)


def _features(count: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, D, generator=generator) + shift


def _evidence(rows: torch.Tensor) -> dict:
    return {"groups": {"0": {"positions": torch.arange(rows.shape[0]), "rows": rows}}}


def _fvd_entry(fake: torch.Tensor, real: torch.Tensor) -> dict:
    """A result entry as scoring writes it: the FD of the sets and its bootstrap record."""
    x1, x2 = real.double(), fake.double()
    from benchmarks.metrics import frechet_distance

    value = float(frechet_distance(x1.mean(0), torch.cov(x1.T), x2.mean(0), torch.cov(x2.T)))
    record = bootstrap_entry("frechet", SimpleNamespace(covariance_ddof=1), value, _evidence(fake), _evidence(real),
                             list(range(NUM_FAKE)), NUM_REAL, SETTINGS, torch.device("cpu"))
    return {"value": value, "bootstrap": record}


def test_the_paired_test_ties_two_seeds_of_one_model_and_separates_a_shifted_one():
    real = _features(NUM_REAL, seed=0)
    ties, separated = 0, 0
    for replicate in range(20):
        one = _aggregate([_fvd_entry(_features(NUM_FAKE, 100 + replicate), real)])
        other = _aggregate([_fvd_entry(_features(NUM_FAKE, 200 + replicate), real)])
        shifted = _aggregate([_fvd_entry(_features(NUM_FAKE, 300 + replicate, shift=0.6), real)])
        assert one.pairing == other.pairing == shifted.pairing
        ties += not significantly_different(one, other)
        separated += significantly_different(shifted, one) and significantly_different(shifted, other)
    assert ties >= 17, f"two runs of the same model differed significantly in {20 - ties} of 20 replicates"
    assert separated == 20


def test_leaderboard_ranks_by_significance_and_never_ranks_a_diagnostic(tmp_path, make_result, write_result):
    real = _features(NUM_REAL, seed=0)
    root = tmp_path / "results"
    motion = {"value": 1.0, "metric": "motion_magnitude", "variant": "motion_magnitude", "rollout": 1,
              "higher_is_better": None, "num_real": None, "num_fake": NUM_FAKE, "extractor": None}
    for model, seed, shift in (("alpha", 1, 0.0), ("alpha_again", 2, 0.0), ("shifted", 3, 0.6)):
        result = make_result(model, fvd=1.0)
        result["metrics"]["fvd_domain@1x"].update(_fvd_entry(_features(NUM_FAKE, seed, shift), real))
        result["metrics"]["motion_magnitude@1x"] = {**motion, "value": 1.0 + seed}
        write_result(root, result)
    (board,), _ = load_boards(root)
    ranks = {row.id: board.rank("fvd_domain@1x", row) for row in board.rows}
    assert ranks == {"alpha.toy_micro": 1, "alpha_again.toy_micro": 1, "shifted.toy_micro": 3}
    assert [board.bold("fvd_domain@1x", row) for row in board.rows] == [True, True, False]
    assert board.rows[-1].id == "shifted.toy_micro"
    assert all(board.rank("motion_magnitude@1x", row) is None for row in board.rows)
    assert not any(board.bold("motion_magnitude@1x", row) for row in board.rows)

    files = build_leaderboard(root, tmp_path / "board")
    markdown = files["markdown"].read_text()
    assert RANKING_RULE.replace("the bold", "the **bold**") in markdown
    line = next(line for line in markdown.splitlines() if "`alpha.toy_micro`" in line)
    aggregate = board.rows[0].metrics["fvd_domain@1x"]
    assert f"**{aggregate.mean:.3g} ± {aggregate.half_width:.2g}**" in line
    assert "**4**" not in markdown  # motion values (2, 3, 4) are never bold
    csv_text = files["csv"].read_text()
    header = csv_text.splitlines()[0].split(",")
    assert {"fvd_domain@1x_low", "fvd_domain@1x_high", "fvd_domain@1x_rank"} <= set(header)
    assert "motion_magnitude@1x_rank" in header
    page = files["html"].read_text()
    assert "paired bootstrap" in page and "bootstrap interval [" in page


def test_seeds_of_a_row_pool_their_draws(make_result):
    real = _features(NUM_REAL, seed=0)
    entries = [_fvd_entry(_features(NUM_FAKE, seed), real) for seed in (1, 2, 3)]
    pooled = _aggregate(entries)
    single = _aggregate(entries[:1])
    assert pooled.num_seeds == 3 and pooled.std is not None and pooled.draws is not None
    assert pooled.draws[0] == pytest.approx(sum(e["bootstrap"]["values"][0] for e in entries) / 3)
    assert pooled.low <= pooled.mean <= pooled.high
    # The mean of three seeds is known more precisely than one seed's value.
    assert pooled.half_width < single.half_width
    assert "± " in pooled.format() and "(sd " in pooled.format()
    # A seed without a record (scored before intervals) leaves the row without an interval, never a partial one.
    del entries[1]["bootstrap"]
    assert _aggregate(entries).low is None and "±" not in _aggregate(entries).format()
    assert math.isfinite(_aggregate(entries).mean)


def test_groups_continue_down_the_table_and_a_wide_row_ties_with_the_best():
    from benchmarks.leaderboard.results import Aggregate, Row, rank_rows

    def row(name: str, value: float, spread: float, seed: int) -> Row:
        noise = torch.randn(500, generator=torch.Generator().manual_seed(seed))
        draws = (value + 0.3 + spread * noise).tolist()  # biased upwards like FD's draws; the test centres them
        return Row(name, [], {"fvd@1x": Aggregate(value, None, 1, draws=draws, level=0.95, pairing=("same",))})

    # a-b and c-d differ by less than their spread; c is far from a; e is so uncertain it cannot be told from a.
    rows = [row("a", 10.0, 0.1, 1), row("b", 10.05, 0.1, 2), row("c", 11.0, 0.1, 3), row("d", 11.02, 0.1, 4),
            row("e", 11.5, 5.0, 5), row("f", 13.0, 0.1, 6)]
    assert rank_rows(rows, "fvd@1x", higher_is_better=False) == {"a": 1, "b": 1, "e": 1, "c": 4, "d": 4, "f": 6}
    assert rank_rows(rows, "fvd@1x", higher_is_better=True) == {"f": 1, "e": 1, "d": 3, "c": 3, "b": 5, "a": 5}
    assert rank_rows(rows, "fvd@1x", higher_is_better=None) == {}  # a diagnostic is never ranked
