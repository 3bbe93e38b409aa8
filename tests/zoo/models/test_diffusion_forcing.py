"""diffusion_forcing: config bounds, schedule sampling, sliding windows, history guidance, self-forcing, learning.

The shared contract (shapes, seeding, checkpoints, accepted conditions, 2x/4x rollouts) is tested for every model in
tests/zoo/test_models.py; this file tests what is particular to diffusion forcing.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from zoo.components.schedules import ScheduleConfig, sample_with_schedule
from zoo.components.text import encode_prompts_per_frame
from zoo.config import ConfigError
from zoo.interface import Conditioning
from zoo.registry import create_model

STEPS = 2  # sampling steps in the fast tests


@pytest.fixture(scope="module")
def model():
    """The default tiny model with a randomised output layer, so conditioning visibly changes samples."""
    torch.manual_seed(0)
    model = create_model("diffusion_forcing", overrides=[f"diffusion.num_sampling_steps={STEPS}"]).eval()
    torch.nn.init.normal_(model.denoiser.proj_out.weight, std=0.05)
    return model


@pytest.fixture()
def configured(model):
    """Swap config fields for one test: `configured(history_guidance_scale=2.0)`; restored afterwards."""
    original = model.config

    def swap(**changes):
        model.config = dataclasses.replace(original, **changes)
        return model

    yield swap
    model.config = original


@pytest.fixture()
def denoiser_calls(model):
    """Records (x_t, timesteps, temporal_block_size) of every denoiser call."""
    calls: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    handle = model.denoiser.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((args[0].clone(), args[1].clone(),
                                                        kwargs["temporal_block_size"])),
        with_kwargs=True,
    )
    yield calls
    handle.remove()


def _latents(model, num_videos: int, num_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_videos, num_frames, *model.autoencoder.latent_shape, generator=torch.Generator().manual_seed(seed))


def test_registration_and_metadata(model):
    assert model.strategy == "per_frame_noise"
    assert model.supported_conditions == frozenset({"text", "context", "script"})
    meta = model.metadata()
    assert meta["block_size"] == 4 and meta["schedule"] == "autoregressive" and meta["num_sampling_steps"] == STEPS
    assert not any(p.requires_grad for p in model.autoencoder.parameters()), "the autoencoder stays frozen"


@pytest.mark.parametrize("block_size", [0, 3, 16])
def test_block_size_must_divide_the_clip(block_size):
    # Decision: block_size must divide clip_length, so every training clip is whole blocks and windows stay aligned.
    with pytest.raises(ConfigError, match="must divide clip_length"):
        create_model("diffusion_forcing", block_size=block_size)


def test_config_errors_are_one_line_and_actionable():
    for block_size in (1, 2, 8):
        assert create_model("diffusion_forcing", block_size=block_size).config.block_size == block_size
    with pytest.raises(ConfigError, match="set diffusion.sampler=ddim"):
        create_model("diffusion_forcing", overrides=["diffusion.sampler=dpmpp"])
    with pytest.raises(ConfigError, match="leaving no history"):
        create_model("diffusion_forcing", overrides=["schedule.chunk_size=8"])
    with pytest.raises(ConfigError, match="raise schedule.lag"):
        create_model("diffusion_forcing", overrides=["schedule.name=pyramid", "schedule.lag=1"])
    with pytest.raises(ConfigError, match="history_guidance must be one of"):
        create_model("diffusion_forcing", history_guidance="cfg")
    with pytest.raises(ConfigError, match="unknown key 'schedule.windw'"):
        create_model("diffusion_forcing", overrides=["schedule.windw=2"])


def test_denoiser_runs_block_causal_with_the_configured_block_size(model, configured, denoiser_calls):
    for block_size in (1, 8):
        configured(block_size=block_size).generate(1, 8, generator=0)
        assert {call[2] for call in denoiser_calls} == {block_size}
        denoiser_calls.clear()


def test_full_sequence_equals_the_plain_sampler(model, configured):
    model = configured(schedule=ScheduleConfig("full_sequence"))
    known = torch.zeros_like(_latents(model, 2, 8))
    scheduled = model.sample_latents(known, torch.zeros(8, dtype=torch.bool), None, torch.Generator().manual_seed(3))
    null = encode_prompts_per_frame(model.text_encoder, [[""] * 8] * 2)
    plain = model.diffusion.sample(
        lambda x, t: model._predict(x, t[:, None].expand(-1, 8), null), tuple(known.shape),
        torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(scheduled, plain, atol=0, rtol=0)


@pytest.mark.parametrize("schedule", [ScheduleConfig("full_sequence"), ScheduleConfig("pyramid", lag=1),
                                      ScheduleConfig("rolling", window=2), ScheduleConfig("autoregressive", chunk_size=3)])
def test_any_schedule_samples_with_context_anywhere(model, configured, schedule):
    model = configured(schedule=schedule)
    known = _latents(model, 1, 8)
    context = torch.tensor([True, False, False, True, False, False, False, True])
    out = model.sample_latents(known, context, None, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, context], known[:, context]), "context frames stay exactly as given"
    assert torch.isfinite(out).all() and not torch.allclose(out[:, ~context], known[:, ~context])


def test_generates_four_times_its_training_length_on_a_sliding_window(model, denoiser_calls):
    videos = model.generate(1, 32, generator=0)
    assert videos.shape == (1, 32, 1, 32, 32) and torch.isfinite(videos).all()
    # Chunks of 4 frames: 8 chunks x STEPS calls, each seeing 8 frames (4 clean history + 4 new after the first).
    assert len(denoiser_calls) == 8 * STEPS
    assert {call[0].shape[1] for call in denoiser_calls} == {8}
    last_timesteps = denoiser_calls[-1][1][0]
    assert (last_timesteps[:4] == 0).all() and (last_timesteps[4:] > 0).all()
    assert videos[:, -8:].std() > 1e-3, "the rollout keeps producing content"


def test_full_sequence_extends_window_by_window(model, configured, denoiser_calls):
    configured(schedule=ScheduleConfig("full_sequence")).generate(1, 12, generator=0)
    # 12 frames: windows of clip_length - extension_context = 4 new frames after 4 history, 3 windows.
    assert len(denoiser_calls) == 3 * STEPS and {call[0].shape[1] for call in denoiser_calls} == {8}


def test_context_condition_is_returned_exactly(model):
    context = torch.rand(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    videos = model.generate(2, 8, Conditioning(context=context), generator=1)
    assert torch.equal(videos[:, :3], context)
    other = model.generate(2, 8, Conditioning(context=1 - context), generator=1)
    assert not torch.allclose(videos[:, 3:], other[:, 3:]), "the generated frames depend on the context"


def _plain_sample(model, known, context):
    """The schedule sampler with the bare denoiser: no guidance code at all."""
    null = encode_prompts_per_frame(model.text_encoder, [[""] * known.shape[1]] * known.shape[0])
    return sample_with_schedule(
        lambda x, step: model._predict(x, step.timesteps.expand(x.shape[0], -1),
                                       tuple(part[:, step.frames] for part in null)),
        model.diffusion, model.schedule_for(known.shape[1], context), tuple(known.shape),
        torch.Generator().manual_seed(4), known=known, window=model.clip_length,
    )


@pytest.mark.parametrize("kind", ["vanilla", "fractional"])
def test_history_guidance_scale_one_is_no_guidance(model, configured, denoiser_calls, kind):
    known, context = _latents(model, 2, 12), torch.arange(12) < 2
    unguided = configured(history_guidance=kind, history_guidance_scale=1.0).sample_latents(
        known, context, None, torch.Generator().manual_seed(4))
    # 10 frames to make in chunks of 4 (4, 4, 2): 3 chunks, every one with clean history.
    assert len(denoiser_calls) == 3 * STEPS
    torch.testing.assert_close(unguided, _plain_sample(model, known, context), atol=0, rtol=0)
    denoiser_calls.clear()

    guided = configured(history_guidance=kind, history_guidance_scale=2.0).sample_latents(
        known, context, None, torch.Generator().manual_seed(4))
    assert len(denoiser_calls) == 3 * STEPS * 2, "one extra pass per iteration with history"
    assert not torch.allclose(guided, unguided)
    # The extra pass sees the history noised: to the top level (vanilla) or to history_noise_level (fractional).
    conditional, without_history = denoiser_calls[0], denoiser_calls[1]
    history = conditional[1][0] == 0
    expected = 999 if kind == "vanilla" else round(0.5 * 999)
    assert history[:2].all() and (without_history[1][0][history] == expected).all()
    assert torch.equal(without_history[1][0][~history], conditional[1][0][~history])
    assert not torch.allclose(without_history[0][:, history], conditional[0][:, history])
    assert torch.equal(without_history[0][:, ~history], conditional[0][:, ~history])


def test_history_guidance_without_history_costs_nothing(model, configured, denoiser_calls):
    configured(history_guidance_scale=2.0).generate(1, 4, generator=0)  # one chunk, no clean frame to guide on
    assert len(denoiser_calls) == STEPS


def test_text_and_history_guidance_compose(model, configured, denoiser_calls):
    cond = Conditioning(text=["a 3 moving left"])
    configured(history_guidance_scale=2.0).generate(1, 8, cond, generator=0)
    # Chunk 1 (no history): conditional + unconditional text; chunk 2: + the history pass.
    assert len(denoiser_calls) == STEPS * 2 + STEPS * 3


def _loss(model, batch, probability: float) -> torch.Tensor:
    model.config = dataclasses.replace(model.config, self_forcing_probability=probability)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        return model.compute_loss(batch)


def test_self_forcing_trains_on_the_models_own_rollout(configured, monkeypatch):
    model = configured(self_forcing_steps=1).train()
    rollouts: list[tuple[int, torch.Tensor]] = []
    rollout = model._rollout_history

    def spy(latents, num_history, text):
        rollouts.append((num_history, out := rollout(latents, num_history, text)))
        return out

    monkeypatch.setattr(model, "_rollout_history", spy)
    video = torch.rand(2, 8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"video": video, "text": ["a 1 moving up", "a 2 moving down"]}
    try:
        teacher_forced = _loss(model, batch, 0.0)
        assert not rollouts, "probability 0: ground-truth history only"
        self_forced = _loss(model, batch, 1.0)
    finally:
        model.eval()
    assert len(rollouts) == 1
    num_history, history = rollouts[0]
    assert 1 <= num_history < 8 and history.shape[1] == num_history
    truth = model.autoencoder.encode_video(video)[:, :num_history]
    torch.testing.assert_close(history[:, 0], truth[:, 0], atol=0, rtol=0)  # the rollout starts from a real frame
    if num_history > 1:
        assert not torch.allclose(history[:, 1:], truth[:, 1:]), "later history frames are the model's own"
    assert torch.isfinite(self_forced) and self_forced.requires_grad
    assert self_forced.item() != teacher_forced.item()
    self_forced.backward()
    assert model.denoiser.proj_out.weight.grad is not None


@pytest.mark.parametrize("probability, shared", [(0.0, False), (1.0, True)])
def test_block_noise_shares_one_level_per_block_and_keeps_blocks_independent(configured, denoiser_calls, probability,
                                                                             shared):
    model = configured(block_noise_probability=probability).train()
    batch = {"video": torch.rand(4, 8, 1, 32, 32, generator=torch.Generator().manual_seed(0)), "text": ["a 1"] * 4}
    try:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            model.compute_loss(batch)
    finally:
        model.eval()
    timesteps = denoiser_calls[0][1]  # [B, 8]: block_size 4
    blocks = timesteps.view(4, 2, 4)
    assert bool((blocks == blocks[..., :1]).all()) is shared
    assert not torch.equal(blocks[:, 0, 0], blocks[:, 1, 0]), "blocks keep their own levels"
    with pytest.raises(ConfigError, match="block_noise_probability must be in"):
        create_model("diffusion_forcing", block_noise_probability=-0.1)


def test_self_forcing_probability_is_validated():
    with pytest.raises(ConfigError, match="self_forcing_probability must be in"):
        create_model("diffusion_forcing", self_forcing_probability=1.5)


@pytest.mark.slow
def test_loss_halves_on_moving_digits(held_out_loss_before_and_after, tmp_path):
    before, after = held_out_loss_before_and_after("diffusion_forcing", tmp_path)
    assert after < 0.5 * before, f"held-out loss went from {before:.3f} to {after:.3f}"
