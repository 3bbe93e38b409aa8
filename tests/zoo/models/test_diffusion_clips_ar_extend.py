"""diffusion_clips_ar_extend: the opening clip is the diffusion part's, the AR part extends and interpolates."""

from __future__ import annotations

import pytest
import torch

from zoo.config import ConfigError
from zoo.interface import Conditioning
from zoo.models.diffusion_clips_ar_extend import ar_view, opening_length
from zoo.registry import create_model
from zoo.training import TrainerConfig, train_model

NAME = "diffusion_clips_ar_extend"
# Small enough for unit tests on a shared CPU; clip_length 4 makes the AR's view slide within a few frames.
TINY = dict(
    clip_length=4,
    text_dim=16,
    denoiser_dim=32,
    denoiser_depth=1,
    denoiser_heads=2,
    end_prefix_frames=1,
    end_view_history=1,
    ar={"dim": 32, "depth": 1, "heads": 2, "max_positions": 512},
    diffusion={"num_sampling_steps": 2},
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model(NAME, **TINY).eval()


def _frames(num_videos: int, num_frames: int, seed: int) -> torch.Tensor:
    return torch.rand(num_videos, num_frames, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_opening_length_gives_the_diffusion_part_the_first_clip():
    assert opening_length(0, 20, 8, has_end=False) == 8
    assert opening_length(3, 20, 8, has_end=False) == 8  # context is completed to a full clip
    assert opening_length(0, 5, 8, has_end=False) == 5  # short videos are all diffusion
    assert opening_length(10, 20, 8, has_end=False) == 10  # context fills a clip: the AR takes over at once
    # With an end clip the opening covers at most half of the gap, leaving the approach to the AR.
    assert opening_length(0, 6, 8, has_end=True) == 3
    assert opening_length(2, 12, 8, has_end=True) == 7
    assert opening_length(2, 3, 8, has_end=True) == 3


def test_ar_view_slides_then_pins_the_end_clip_where_training_put_it():
    # No end clip: the last clip_length - 1 frames.
    assert ar_view(3, 30, 0, 8, 2) == (0, False)
    assert ar_view(12, 30, 0, 8, 2) == (5, False)
    # End clip of 2 frames at frame 20: it joins once 2 frames of history fit beside it, at view position 8 - 2.
    assert ar_view(15, 20, 2, 8, 2) == (8, False)
    assert ar_view(16, 20, 2, 8, 2) == (14, True)
    assert ar_view(19, 20, 2, 8, 2) == (14, True)
    # A short gap: everything fits in one view from the start.
    assert ar_view(1, 5, 2, 8, 2) == (0, True)


def test_first_clip_comes_from_the_diffusion_part(tiny):
    text = ["a 3 moving left", "a 7 moving up"]
    video = tiny.generate(2, 5, Conditioning(text=text), generator=3)
    assert video.shape[1] == 5
    alone = tiny.sample_opening_clip([[p] * 4 for p in text], None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(video[:, :4], alone, atol=0, rtol=0)
    # With context, the diffusion part completes the first clip around it.
    context = _frames(2, 1, seed=1)
    video = tiny.generate(2, 4, Conditioning(text=text, context=context), generator=4)
    alone = tiny.sample_opening_clip([[p] * 4 for p in text], context, torch.Generator().manual_seed(4))
    torch.testing.assert_close(video[:, :4], alone, atol=0, rtol=0)
    assert torch.equal(video[:, :1], context)


@pytest.mark.parametrize("num_frames", [3, 7])
def test_extension_length_is_arbitrary(tiny, num_frames):
    context = _frames(1, 2, seed=2)
    video = tiny.generate(1, num_frames, Conditioning(context=context), generator=0)
    assert video.shape == (1, num_frames, 1, 32, 32)
    assert torch.equal(video[:, :2], context)
    # Every written frame is new content, not a copy of the frame before it.
    assert all(not torch.equal(video[:, i], video[:, i - 1]) for i in range(2, num_frames))


def test_kv_cached_extension_equals_uncached(tiny):
    # Frames 2..5 cover every cache situation: frame 3 changes the prompt (re-prefix), frame 4 moves the view to the
    # pinned end view (re-fill), frame 5 continues the cache of frame 4.
    video, end_context = _frames(2, 2, seed=5), _frames(2, 1, seed=6)
    script = [["a 1 moving up"] * 3 + ["a 7 moving down"] * 3] * 2
    assert [ar_view(frame, 6, 1, 4, 1) for frame in range(2, 6)] == [(0, False), (0, False), (3, True), (3, True)]
    outputs = []
    for use_cache in (True, False):
        tiny.config.use_kv_cache = use_cache
        try:
            outputs.append(tiny.extend(video, 6, script, end_context, torch.Generator().manual_seed(0)))
        finally:
            tiny.config.use_kv_cache = True
    assert outputs[0].shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


def test_interpolation_starts_with_context_and_ends_with_end_clip(tiny):
    context, end_clip = _frames(2, 2, seed=7), _frames(2, 2, seed=8)
    video = tiny.generate(2, 7, Conditioning(context=context, end_context=end_clip), generator=0)
    assert video.shape == (2, 7, 1, 32, 32)
    assert torch.equal(video[:, :2], context) and torch.equal(video[:, -2:], end_clip)


def _fingerprint_tokens(logits, generator, temperature, top_k):
    # Any change of the logits changes the token, so the samples show exactly what the AR's predictions depend on.
    return (logits.double().sum(-1) * 1e9).long().remainder(logits.shape[-1])


def test_end_clip_conditions_the_ar_from_where_it_joins_the_view(tiny, monkeypatch):
    monkeypatch.setattr("zoo.components.ar.sample_tokens", _fingerprint_tokens)
    context, end_a, end_b = _frames(1, 2, seed=7), _frames(1, 2, seed=8), _frames(1, 2, seed=9)
    video_a = tiny.generate(1, 9, Conditioning(context=context, end_context=end_a), generator=0)
    video_b = tiny.generate(1, 9, Conditioning(context=context, end_context=end_b), generator=0)
    # The gap is frames 2..6; diffusion writes 2..3 (half the gap), the AR 4..6. The end clip joins the AR's view at
    # frame 5 (one frame of history beside it), so exactly frames 5 and 6 depend on which end clip was given.
    assert opening_length(2, 7, 4, has_end=True) == 4
    assert [ar_view(frame, 7, 1, 4, 1)[1] for frame in (4, 5, 6)] == [False, True, True]
    assert torch.equal(video_a[:, :5], video_b[:, :5])
    assert not torch.equal(video_a[:, 5], video_b[:, 5]) and not torch.equal(video_a[:, 6], video_b[:, 6])


def test_ar_trains_with_the_end_clip_prefix_part_of_the_time(tiny, monkeypatch):
    seen = []
    original = tiny._ar_prefix

    def spy(prompts, end_tokens, end_position):
        seen.append(None if end_tokens is None else (end_tokens.shape[1], end_position))
        return original(prompts, end_tokens, end_position)

    monkeypatch.setattr(tiny, "_ar_prefix", spy)
    video = _frames(1, 4, seed=10)
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            tiny._ar_loss(video, ["a 3 moving left"])
    with_end = [s for s in seen if s is not None]
    assert 0 < len(with_end) < len(seen)
    # One end frame (end_prefix_frames=1) right after the kept frames of a clip cut to a random length.
    assert all(num_end == 1 and 1 <= position <= 3 for num_end, position in with_end)


def test_config_errors_say_what_to_fix():
    with pytest.raises(ConfigError, match="end_prefix_frames"):
        create_model(NAME, end_prefix_frames=8)
    with pytest.raises(ConfigError, match="end_view_history"):
        create_model(NAME, end_view_history=6)
    with pytest.raises(ConfigError, match="needs a vq one"):
        create_model(NAME, vq_autoencoder="moving_digits_kl")


@torch.no_grad()
def _part_losses(model, batch) -> dict[str, float]:
    """Each part's loss on a fixed batch, averaged over fixed random draws (timesteps, context, prompt dropout)."""
    model.eval()
    totals = {"diffusion": 0.0, "ar": 0.0}
    for seed in range(3):
        torch.manual_seed(seed)
        losses = model.compute_loss(batch)
        for part in totals:
            totals[part] += float(losses[part]) / 3
    return totals


def _unigram_entropy(tokens: torch.Tensor, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies: the loss of a model that knows nothing but the marginal."""
    p = torch.bincount(tokens.flatten(), minlength=vocab_size).float()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


@pytest.mark.slow
def test_both_parts_learn_on_moving_digits(tmp_path):
    """Diffusion loss halves; the AR's cross-entropy falls from uniform to below the tokens' unigram entropy.

    The AR bar is what moving_digits_vq allows in a CPU minute: its codes spread a blank background over hundreds of
    near-identical entries (unigram entropy ~5.7 nats vs ln(512) = 6.24), so halving needs far longer training.
    """
    from zoo.data import VideoDataModule

    torch.manual_seed(0)
    model = create_model(NAME)
    data = VideoDataModule("moving_digits", batch_size=16, overrides={"num_frames": model.clip_length})
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        tokens = model.vq_autoencoder.encode_video_tokens(batch["video"])
    marginal = _unigram_entropy(tokens, model.vq_autoencoder.codebook_size)
    before = _part_losses(model, batch)
    model.train()  # the loss helper left it in eval mode
    train_model(model, "moving_digits", tmp_path, TrainerConfig(max_steps=100, batch_size=8, enable_progress_bar=False))
    after = _part_losses(model, batch)
    assert after["diffusion"] <= before["diffusion"] / 2, (
        f"diffusion {before['diffusion']:.3f} -> {after['diffusion']:.3f}"
    )
    assert before["ar"] > 6.0 and after["ar"] < marginal, (
        f"ar {before['ar']:.3f} -> {after['ar']:.3f} vs {marginal:.3f}"
    )


def test_ar_every_n_steps_trains_the_ar_part_on_those_steps_only():
    """The budget split: on a skipped step the AR part gets no gradient (its weights stay put under AdamW) and the
    loss is the denoiser's alone; on every n-th step both learn, as with the default of 1."""
    torch.manual_seed(0)
    model = create_model(NAME, **TINY, ar_every_n_steps=3).train()
    batch = {"video": _frames(2, 4, 0), "text": ["a 1 moving left"] * 2}
    ar_parameters = list(model.ar.parameters())
    for step, trains_ar in ((0, True), (1, False), (2, False), (3, True)):
        model.zero_grad(set_to_none=True)
        with torch.random.fork_rng(), pytest.MonkeyPatch.context() as patch:
            torch.manual_seed(1)
            patch.setattr(type(model), "global_step", property(lambda self, step=step: step))
            losses = model.compute_loss(batch)
        losses["loss"].backward()
        assert ("ar" in losses) is trains_ar
        assert any(p.grad is not None for p in ar_parameters) is trains_ar, step
        assert torch.equal(losses["loss"], losses["diffusion"] + losses["ar"] if trains_ar else losses["diffusion"])
    assert next(iter(model.denoiser.parameters())).grad is not None
    with pytest.raises(ConfigError, match="ar_every_n_steps must be >= 1"):
        create_model(NAME, ar_every_n_steps=0)


def test_training_flops_per_step_average_the_steps_that_skip_the_ar_part():
    """Cards state FLOPs per step x steps: with the AR part on one step in n, a step costs the denoiser's FLOPs plus
    1/n of the AR part's; with n = 1 that is the whole compute_loss, as the interface counts it."""
    from zoo.interface import training_flops

    batch = {"video": _frames(2, 4, 0), "text": ["a 1 moving left"] * 2}
    torch.manual_seed(0)
    every_step = create_model(NAME, **TINY, end_probability=0.0)  # no end-clip prefix: every AR step costs alike
    whole = training_flops(every_step, lambda: every_step.compute_loss(batch))
    assert every_step.training_flops_per_step(batch) == pytest.approx(whole)
    one_in_four = create_model(NAME, **TINY, end_probability=0.0, ar_every_n_steps=4)
    denoiser = training_flops(one_in_four, lambda: one_in_four._diffusion_loss(batch["video"], batch["text"]))
    assert one_in_four.training_flops_per_step(batch) == pytest.approx(denoiser + (whole - denoiser) / 4)
    assert whole > 1.5 * denoiser
