"""Scheduling matrices (properties of every named schedule) and the schedule sampler (equals plain DDIM, windows)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.components.sampling import DiffusionConfig, DiffusionProcess
from zoo.components.schedules import (
    SCHEDULES,
    ScheduleConfig,
    build_schedule,
    level_timesteps,
    sample_with_schedule,
)
from zoo.config import ConfigError, build_config


@st.composite
def schedules(draw):
    """A random schedule config, frame count, step count and context mask (any positions)."""
    config = ScheduleConfig(
        name=draw(st.sampled_from(SCHEDULES)),
        chunk_size=draw(st.integers(1, 5)),
        lag=draw(st.integers(1, 4)),
        window=draw(st.integers(1, 6)),
    )
    num_frames, num_steps = draw(st.integers(1, 12)), draw(st.integers(1, 8))
    context = torch.tensor(draw(st.lists(st.booleans(), min_size=num_frames, max_size=num_frames)))
    return config, num_frames, num_steps, context


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_every_schedule_has_the_documented_properties(case):
    config, num_frames, num_steps, context = case
    schedule = build_schedule(config, num_frames, num_steps, context)
    levels = schedule.levels
    assert levels.dtype == torch.long and levels.shape[1] == num_frames and levels.shape[0] >= 1
    assert levels.min() >= 0 and levels.max() <= num_steps
    assert torch.equal(levels[0], torch.where(context, 0, num_steps)), "starts all-noisy, context clean"
    assert (levels[-1] == 0).all(), "ends all-clean"
    assert (levels[1:] <= levels[:-1]).all(), "no frame's noise level ever rises"
    assert (levels[:, context] == 0).all(), "context frames stay clean throughout"
    assert torch.equal(schedule.context, context)
    if len(levels) > 1:
        updates_per_row = (levels[1:] != levels[:-1]).sum(1)
        assert updates_per_row.max() <= config.frames_in_flight(num_frames, num_steps)


def _levels(name: str, num_frames: int, num_steps: int, **knobs) -> list[list[int]]:
    return build_schedule(ScheduleConfig(name=name, **knobs), num_frames, num_steps).levels.T.tolist()


def test_named_schedules_exact_matrices():
    # Per frame (rows here), the level before each sampler iteration (columns).
    assert _levels("full_sequence", 2, 3) == [[3, 2, 1, 0]] * 2
    assert _levels("autoregressive", 3, 2, chunk_size=1) == [
        [2, 1, 0, 0, 0, 0, 0], [2, 2, 2, 1, 0, 0, 0], [2, 2, 2, 2, 2, 1, 0]
    ]
    assert _levels("pyramid", 3, 3, lag=1) == [[3, 2, 1, 0, 0, 0], [3, 3, 2, 1, 0, 0], [3, 3, 3, 2, 1, 0]]
    assert _levels("pyramid", 2, 2, lag=2) == _levels("autoregressive", 2, 2, chunk_size=1)
    # FIFO: 2 frames in flight, each drops num_steps / window = 2 levels per iteration, one leaves clean per row.
    assert _levels("rolling", 3, 4, window=2) == [[4, 2, 0, 0, 0], [4, 4, 2, 0, 0], [4, 4, 4, 2, 0]]
    assert _levels("rolling", 4, 3, window=3) == _levels("pyramid", 4, 3, lag=1)


def test_autoregressive_chunks_need_not_divide_the_frame_count():
    # Regression: 7 frames in chunks of 3 -> chunks of 3, 3 and a final 1.
    schedule = build_schedule(ScheduleConfig("autoregressive", chunk_size=3), 7, 2)
    assert schedule.levels.shape == (7, 7)
    starts = (schedule.levels < 2).int().argmax(0).tolist()
    assert starts == [1, 1, 1, 3, 3, 3, 5]
    assert schedule.denoiser_calls() == 6 and (schedule.levels[-1] == 0).all()


def test_context_anywhere_is_skipped_by_the_order():
    context = torch.tensor([False, True, False, False, True])
    levels = build_schedule(ScheduleConfig("autoregressive", chunk_size=2), 5, 2, context).levels
    assert (levels[:, [1, 4]] == 0).all()
    # Frames 0 and 2 form the first chunk (frame 1 is known), frame 3 the second.
    assert levels[:, 0].tolist() == levels[:, 2].tolist() == [2, 1, 0, 0, 0]
    assert levels[:, 3].tolist() == [2, 2, 2, 1, 0]


def test_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'chunk_size'"):
        build_config(ScheduleConfig, {"chunk_sise": 2})
    with pytest.raises(ConfigError, match="schedule.name must be one of"):
        ScheduleConfig(name="diagonal")
    with pytest.raises(ConfigError, match="lag must be >= 1"):
        ScheduleConfig(lag=0)
    with pytest.raises(ValueError, match="bool mask"):
        build_schedule(ScheduleConfig(), 4, 2, torch.zeros(3, dtype=torch.bool))


def test_level_timesteps_are_the_trailing_ddim_grid():
    process = DiffusionProcess(DiffusionConfig(sampler="ddim"))
    assert level_timesteps(process, 5).tolist() == [0, 199, 399, 599, 799, 999]
    assert level_timesteps(process, 5)[1:].flip(0).tolist() == process.make_sampler(5).timesteps.tolist()


# ---- the sampler -------------------------------------------------------------------------------------------------
def _toy_denoiser(seed: int = 0):
    """A fixed nonlinear per-frame-timestep denoiser that mixes frames (so windows and history matter)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(6, 6, generator=g) * 0.3

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        frames = x_t.shape[1]
        t = t[:, None].expand(-1, frames) if t.dim() == 1 else t
        mixed = torch.einsum("st,bt...->bs...", mix[:frames, :frames], x_t)
        return torch.tanh(mixed) * (t.float()[..., None, None] / 1000 + 0.5)

    return denoise


@pytest.mark.parametrize("prediction_type,beta_schedule", [("v_prediction", "squaredcos_cap_v2"),
                                                           ("epsilon", "scaled_linear")])
def test_full_sequence_equals_the_plain_ddim_sampler(prediction_type, beta_schedule):
    process = DiffusionProcess(DiffusionConfig(prediction_type=prediction_type, beta_schedule=beta_schedule,
                                               sampler="ddim", num_sampling_steps=5))
    denoise, shape = _toy_denoiser(), (2, 4, 3, 5)
    plain = process.sample(denoise, shape, torch.Generator().manual_seed(7))
    scheduled = sample_with_schedule(
        lambda x, step: denoise(x, step.timesteps.expand(x.shape[0], -1)),
        process, build_schedule(ScheduleConfig("full_sequence"), 4, 5), shape, torch.Generator().manual_seed(7),
    )
    torch.testing.assert_close(scheduled, plain, atol=0, rtol=0)


def test_known_frames_come_back_and_windows_slide_over_history():
    process = DiffusionProcess(DiffusionConfig(sampler="ddim"))
    calls = []
    denoise = _toy_denoiser()

    def spy(x, step):
        calls.append(step)
        return denoise(x, step.timesteps.expand(x.shape[0], -1))

    known = torch.rand(1, 7, 3, 5)
    context = torch.tensor([True, False, True, False, False, False, False])
    schedule = build_schedule(ScheduleConfig("autoregressive", chunk_size=2), 7, 3, context)
    out = sample_with_schedule(spy, process, schedule, tuple(known.shape), torch.Generator().manual_seed(0),
                               known=known, window=4)
    assert torch.equal(out[:, context], known[:, context])
    assert len(calls) == schedule.denoiser_calls() == 3 * 3
    # Chunks: frames {1, 3}, {4, 5}, {6}; windows of 4 frames end at each chunk's last frame (or start at 0).
    assert [(c.frames.start, c.frames.stop) for c in calls[::3]] == [(0, 4), (2, 6), (3, 7)]
    third = calls[6]
    assert third.active.tolist() == [False, False, False, True] and third.clean.tolist() == [True, True, True, False]
    assert third.timesteps.tolist()[:3] == [0, 0, 0]
    # History is used: other known values change the generated frames.
    other = sample_with_schedule(spy, process, schedule, tuple(known.shape), torch.Generator().manual_seed(0),
                                 known=1 - known, window=4)
    assert not torch.allclose(other[:, 6], out[:, 6])


def test_a_schedule_wider_than_the_window_is_a_clear_error():
    process = DiffusionProcess(DiffusionConfig(sampler="ddim", num_sampling_steps=2))
    with pytest.raises(ValueError, match="denoiser sees 3 frames at once"):
        sample_with_schedule(lambda x, step: torch.zeros_like(x), process,
                             build_schedule(ScheduleConfig("full_sequence"), 5, 2), (1, 5, 2),
                             torch.Generator().manual_seed(0), window=3)
    with pytest.raises(ValueError, match="pass their values as `known`"):
        sample_with_schedule(lambda x, step: torch.zeros_like(x), process,
                             build_schedule(ScheduleConfig(), 2, 2, torch.tensor([True, False])), (1, 2, 2),
                             torch.Generator().manual_seed(0))
