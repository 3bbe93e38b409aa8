"""interleaved_latent: KV-cached == uncached generation, context noise augmentation, prompt switches, self-forcing,
learning."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest
import torch
from torch.utils.data import DataLoader

from zoo.components.denoiser import ConvFrameHead
from zoo.components.text import drop_prompts
from zoo.config import ConfigError
from zoo.data import create_dataset
from zoo.interface import Conditioning
from zoo.registry import create_model
from zoo.training import TrainerConfig, train_model

# Small enough for unit tests; the YAML defaults are used by the learning test.
TINY = [
    "latent_ar.transformer.dim=64",
    "latent_ar.transformer.depth=2",
    "latent_ar.head_width=64",
    "latent_ar.head_depth=2",
    "latent_ar.diffusion.num_sampling_steps=4",
]


# MAR's set-by-set sampling of a frame's tokens (the in-frame decoder), beside the one-shot head.
SET_BY_SET = ["latent_ar.frame_decoder_depth=1", "latent_ar.token_rounds=4"]
# A convolutional head that denoises a whole frame from its tokens' AR vectors, with the prompt's skip to the head.
FRAME_HEAD = ["latent_ar.frame_head_width=16", "latent_ar.frame_head_depth=2", "latent_ar.text_to_head=true"]
HEADS = {"one_shot": [], "set_by_set": SET_BY_SET, "frame_head": FRAME_HEAD}


@pytest.fixture(scope="module", params=list(HEADS))
def model(request, wake_zero_init):
    torch.manual_seed(0)
    model = create_model("interleaved_latent", overrides=TINY + HEADS[request.param])
    wake_zero_init(model.latent_ar)
    return model.eval()


@pytest.fixture(scope="module")
def set_by_set_model(wake_zero_init):
    torch.manual_seed(0)
    model = create_model("interleaved_latent", overrides=TINY + SET_BY_SET)
    wake_zero_init(model.latent_ar)
    return model.eval()


def test_reveal_schedule_follows_mars_cosine_and_reveals_every_token(set_by_set_model):
    ar = set_by_set_model.latent_ar
    assert ar.tokens_per_frame == 16
    assert ar.reveal_schedule() == [14, 11, 6, 0]  # 16 * cos(pi/2 * k/4), floored: sets of 2, 3, 5, 6 tokens
    ar.config.token_rounds = 16
    try:
        assert ar.reveal_schedule() == list(range(15, -1, -1))  # one token per round at the limit
    finally:
        ar.config.token_rounds = 4
    with pytest.raises(ConfigError, match="token_rounds 17 exceeds the 16 tokens"):
        create_model("interleaved_latent", overrides=[*TINY, SET_BY_SET[0], "latent_ar.token_rounds=17"])


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_set_by_set_sampling_reveals_each_token_once_and_shows_the_decoder_what_was_drawn(
    set_by_set_model, monkeypatch, guidance
):
    ar = set_by_set_model.latent_ar
    visible_counts, head_rows = [], []
    decode, sample = ar.decode_frame, ar.head.sample

    def spy_decode(z, tokens, known):
        visible_counts.append(known.sum(dim=1).tolist())
        # What the decoder sees of the frame is exactly what earlier rounds drew; hidden tokens are still zero.
        assert torch.all(tokens[~known] == 0) and torch.all(tokens[known] != 0)
        return decode(z, tokens, known)

    def spy_sample(z, *args, **kwargs):
        head_rows.append(z.shape[0])
        return sample(z, *args, **kwargs)

    monkeypatch.setattr(ar, "decode_frame", spy_decode)
    monkeypatch.setattr(ar.head, "sample", spy_sample)
    monkeypatch.setattr(set_by_set_model.config.latent_ar.diffusion, "guidance_scale", guidance)
    frames = 3
    set_by_set_model.generate(2, frames, Conditioning(text=["a 3 moving left", "a 7 moving up"]), generator=0)
    streams = 1 if guidance == 1.0 else 2
    # Per frame: 4 rounds; the decoder sees 0, 2, 5, 10 drawn tokens (both streams alike) and the head draws 2, 3, 5, 6.
    assert visible_counts == [[0] * 2 * streams, [2] * 2 * streams, [5] * 2 * streams, [10] * 2 * streams] * frames
    assert head_rows == [2 * n for n in (2, 3, 5, 6)] * frames


def test_set_by_set_training_scores_only_hidden_tokens_and_trains_the_decoder(set_by_set_model, monkeypatch):
    ar = set_by_set_model.latent_ar
    scored: list[int] = []
    loss = ar.head.loss
    monkeypatch.setattr(ar.head, "loss", lambda x0, z, *rest: scored.append(x0.shape[0]) or loss(x0, z, *rest))
    video = torch.rand(4, set_by_set_model.clip_length, *set_by_set_model.frame_size)
    batch = {"video": video, "text": ["a 3 moving left"] * 4}
    try:
        set_by_set_model.train()
        set_by_set_model.zero_grad()
        set_by_set_model.compute_loss(batch)["loss"].backward()
    finally:
        set_by_set_model.eval()
    rows = 4 * set_by_set_model.clip_length  # one frame per step, the start block's included
    mul = ar.config.head_batch_mul
    # Between 1 and all 16 tokens of every frame are hidden and scored: more than one per frame, fewer than all.
    assert rows * mul < scored[0] < rows * ar.tokens_per_frame * mul
    assert ar.mask_token.grad.abs().sum() > 0 and ar.known_token_in.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ar.frame_decoder.parameters() if p.requires_grad)


@contextlib.contextmanager
def _transformer_calls(model) -> Iterator[list[int]]:
    """Collects the number of input positions of every transformer call made inside the block."""
    seen: list[int] = []
    handle = model.latent_ar.transformer.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        yield seen
    finally:
        handle.remove()


def test_kv_cached_generation_equals_uncached(model):
    # Context, a prompt switch and a rollout past clip_length exercise cache appends, re-prefixing and window slides.
    frames = 12
    cond = Conditioning(
        context=torch.rand(1, 2, *model.frame_size, generator=torch.Generator().manual_seed(3)),
        script=[("a 3 moving left", 5), ("a 7 moving down", frames - 5)],
    )
    try:
        with _transformer_calls(model) as seen_cached:
            cached = model.generate(1, frames, cond, generator=4)
        model.config.use_kv_cache = False
        with _transformer_calls(model) as seen_uncached:
            uncached = model.generate(1, frames, cond, generator=4)
    finally:
        model.config.use_kv_cache = True
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)
    assert len(seen_cached) == len(seen_uncached) == frames - 2  # one transformer call per generated frame
    assert sum(seen_cached) < sum(seen_uncached) / 2, "the cache must spare re-reading the window"

    # Cache re-fills (calls longer than one frame block): the first generated frame 2, the prompt switch at frame 5,
    # and frame 8, where the window of clip_length - 1 = 7 frames is full and restarts from the last 4.
    tokens_per_frame = model.latent_ar.tokens_per_frame
    refills = [2 + i for i, length in enumerate(seen_cached) if length != tokens_per_frame]
    assert refills == [2, 5, 8]
    keep = model.config.rollout_keep_frames
    assert (1 + keep) * tokens_per_frame < seen_cached[8 - 2] < (2 + keep) * tokens_per_frame  # prefix+start+kept

    # The AR vectors matter (the head is woken up): another prompt gives another video.
    other = Conditioning(context=cond.context, script=[("a 1 moving up", frames)])
    assert not torch.allclose(model.generate(1, frames, other, generator=4), cached)


def test_context_noise_augmentation_only_in_training_at_configured_levels(model):
    ar = model.latent_ar
    config = ar.config
    latents = torch.zeros(64, 6, *ar.latent_shape)
    ar.train()
    try:
        noised, levels = ar.augment_context(latents, torch.Generator().manual_seed(0))
    finally:
        ar.eval()
    assert levels.min() >= 0 and levels.max() <= config.context_noise_train
    assert levels.std() > 0.25 * config.context_noise_train / 3**0.5  # random levels spread over [0, max]
    measured = noised.flatten(2).std(dim=2)
    torch.testing.assert_close(measured, levels, atol=0.03, rtol=0.1)

    noised, levels = ar.augment_context(latents, torch.Generator().manual_seed(0))
    assert torch.all(levels == config.context_noise_inference)
    torch.testing.assert_close(noised.std(), torch.tensor(config.context_noise_inference), atol=2e-3, rtol=0)


def test_training_noises_inputs_and_sampling_uses_the_fixed_level(model, monkeypatch):
    ar = model.latent_ar
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = ar._frame_blocks

    def spy(inputs, levels, codes):
        seen.append((inputs.detach().clone(), levels.detach().clone()))
        return original(inputs, levels, codes)

    monkeypatch.setattr(ar, "_frame_blocks", spy)
    batch = {"video": torch.rand(2, model.clip_length, *model.frame_size), "text": ["a 3 moving left"] * 2}
    try:
        model.train()
        model.compute_loss(batch)
    finally:
        model.eval()
    (train_inputs, train_levels), = seen
    assert train_levels.shape == (2, model.clip_length - 1)  # every AR input frame gets a level
    assert 0 < train_levels.max() <= ar.config.context_noise_train and train_levels.unique().numel() > 1
    # The inputs really carry noise of their level (the last frame is only a target, never an input).
    with torch.no_grad():
        clean = model.autoencoder.encode_video(batch["video"])[:, :-1]
    torch.testing.assert_close((train_inputs - clean).flatten(2).std(dim=2), train_levels, atol=0.03, rtol=0.15)

    seen.clear()
    model.generate(1, 3, Conditioning(text=["a 3 moving left"]), generator=0)
    sample_levels = torch.cat([levels.flatten() for _, levels in seen])
    assert sample_levels.numel() > 0 and torch.all(sample_levels == ar.config.context_noise_inference)


def _seeded_loss(model, batch, probability: float) -> torch.Tensor:
    """compute_loss in training mode at a self-forcing probability, with the global RNG fixed."""
    model.config = dataclasses.replace(model.config, self_forcing_probability=probability)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        return model.compute_loss(batch)["loss"]


def test_self_forcing_trains_after_the_models_own_kv_cached_rollout(model, monkeypatch):
    ar, original_config = model.latent_ar, model.config
    video = torch.rand(2, model.clip_length, *model.frame_size, generator=torch.Generator().manual_seed(0))
    batch = {"video": video, "text": ["a 1 moving up", "a 2 moving down"]}
    with torch.no_grad():
        truth = model.autoencoder.encode_video(video)

    rollouts: list[torch.Tensor] = []
    rollout = model._rollout_history
    monkeypatch.setattr(model, "_rollout_history", lambda *args: rollouts.append(out := rollout(*args)) or out)
    head_steps: list[int | None] = []
    sample = ar.head.sample
    monkeypatch.setattr(
        ar.head, "sample", lambda z, gen, steps=None, **kw: head_steps.append(steps) or sample(z, gen, steps, **kw)
    )
    targets: list[torch.Tensor] = []
    head_loss = ar.head.loss
    monkeypatch.setattr(ar.head, "loss", lambda x0, z, *rest: targets.append(x0) or head_loss(x0, z, *rest))

    model.train()
    try:
        # Probability 0 is the teacher-forced loss exactly as it was before the option existed (same seed, same draws).
        teacher_forced = _seeded_loss(model, batch, 0.0)
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(11)
            prompts = drop_prompts(batch["text"], model.config.text_dropout)
            reference = ar.loss(truth, model._encode_text(prompts))
        assert not rollouts and teacher_forced.item() == reference.item()

        with _transformer_calls(model) as calls:
            self_forced = _seeded_loss(model, batch, 1.0)
    finally:
        model.eval()
        model.config = original_config

    (history,) = rollouts
    num_history = history.shape[1]
    assert 2 <= num_history < model.clip_length
    torch.testing.assert_close(history[:, 0], truth[:, 0], atol=0, rtol=0)  # the rollout starts from the real frame
    assert not torch.allclose(history[:, 1:], truth[:, 1:num_history]), "later history frames are the model's own"
    # Few-step head, KV-cached: one window fill, then one appended frame block per rolled-out frame, then the loss pass.
    rounds = 1 if ar.frame_decoder is None else ar.config.token_rounds  # head calls per frame
    assert head_steps == [model.config.self_forcing_steps] * (num_history - 1) * rounds
    assert calls[1:-1] == [ar.tokens_per_frame] * (num_history - 2)
    # The loss covers only the real frames after the rolled-out history (set by set: only their hidden tokens).
    expected = ar.patchify(truth[:, num_history:]).flatten(0, 2).repeat(ar.config.head_batch_mul, 1)
    if isinstance(ar.head, ConvFrameHead):  # whole frames
        expected = truth[:, num_history:].flatten(0, 1).repeat(ar.config.head_batch_mul, 1, 1, 1)
        torch.testing.assert_close(targets[-1], expected, atol=0, rtol=0)
    elif ar.frame_decoder is None:
        torch.testing.assert_close(targets[-1], expected, atol=0, rtol=0)
    else:
        assert targets[-1].shape[0] < expected.shape[0]
        assert torch.isin(targets[-1][:, 0], expected[:, 0]).all()

    assert torch.isfinite(self_forced) and self_forced.requires_grad
    assert self_forced.item() != teacher_forced.item()
    model.zero_grad(set_to_none=True)
    try:
        self_forced.backward()
        assert ar.transformer.cond_head.weight.grad.abs().sum() > 0, "the AR transformer learns from the rollout inputs"
    finally:
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["self_forcing_probability=1.5"], "self_forcing_probability must be in"),
        (["self_forcing_probability=-0.1"], "self_forcing_probability must be in"),
        (["self_forcing_steps=0"], "self_forcing_steps must be >= 1"),
        (["self_forcing_probability=0.5", "clip_length=2", "rollout_keep_frames=1"], "clip_length >= 3"),
    ],
)
def test_self_forcing_config_is_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        create_model("interleaved_latent", overrides=TINY + overrides)


def test_frame_head_draws_whole_frames_from_their_tokens_vectors(monkeypatch):
    torch.manual_seed(0)
    model = create_model("interleaved_latent", overrides=[*TINY, *FRAME_HEAD, "latent_ar.first_frame_weight=4"])
    ar = model.latent_ar
    seen = []
    loss = ar.head.loss
    monkeypatch.setattr(ar.head, "loss", lambda x0, z, *rest: seen.append((x0, z, rest[1])) or loss(x0, z, *rest))
    with torch.no_grad():
        latents = torch.randn(3, 5, *ar.latent_shape)
    ar.train()
    ar.loss(latents, generator=torch.Generator().manual_seed(0))
    (x0, z, weight), = seen
    # Rows are whole frames (head_batch_mul copies of each), conditioned on all of that frame's token vectors;
    # the first frame of each clip weighs 4.
    mul = ar.config.head_batch_mul
    assert x0.shape == (mul * 15, *ar.latent_shape) and z.shape == (mul * 15, ar.tokens_per_frame, 64)
    torch.testing.assert_close(x0[:15], latents.flatten(0, 1), rtol=0, atol=0)
    assert weight.flatten().tolist() == [4.0, 1, 1, 1, 1] * 3 * mul
    with pytest.raises(ConfigError, match="set one to 0"):
        create_model("interleaved_latent", overrides=[*TINY, *FRAME_HEAD, *SET_BY_SET])
    with pytest.raises(ConfigError, match="multiple of 8"):
        create_model("interleaved_latent", overrides=[*TINY, "latent_ar.frame_head_width=12"])


def test_text_to_head_adds_the_projected_mean_prompt_token_to_every_head_condition():
    torch.manual_seed(0)
    model = create_model("interleaved_latent", overrides=[*TINY, "latent_ar.text_to_head=true"]).eval()
    ar = model.latent_ar
    text = model._encode_text(["a 3 moving left", "a 12 moving up, then down"])
    blocks = ar._sequence(*ar._inference_inputs([torch.randn(2, *ar.latent_shape)], 1, 2), None)
    with torch.no_grad():
        z, _ = ar.conditions(blocks, text)
        skip = ar.text_to_head
        ar.text_to_head = None
        try:
            without, _ = ar.conditions(blocks, text)
        finally:
            ar.text_to_head = skip
        tokens, mask = text
        mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert z.shape == (2, 2, ar.tokens_per_frame, 64)
    torch.testing.assert_close(z - without, skip(mean)[:, None, None].expand_as(z), rtol=1e-5, atol=1e-6)
    assert create_model("interleaved_latent", overrides=TINY).latent_ar.text_to_head is None  # off by default


@pytest.mark.parametrize("overrides", [[], SET_BY_SET], ids=["one_shot", "set_by_set"])
def test_first_frame_weight_weighs_exactly_the_first_steps_tokens(overrides, monkeypatch):
    torch.manual_seed(0)
    model = create_model("interleaved_latent", overrides=[*TINY, *overrides, "latent_ar.first_frame_weight=4"])
    ar = model.latent_ar
    seen = []
    loss = ar.head.loss
    monkeypatch.setattr(ar.head, "loss", lambda x0, z, *rest: seen.append((x0, rest[1])) or loss(x0, z, *rest))
    with torch.no_grad():
        latents = torch.randn(3, 5, *ar.latent_shape)
    ar.train()
    weighted = ar.loss(latents, generator=torch.Generator().manual_seed(0))
    (x0, weight), = seen
    # The first step's tokens (the rows equal to frame 0's tokens) carry 4, every other token 1.
    first = ar.patchify(latents[:, 0]).flatten(0, 1)
    is_first = (x0[:, None] == first[None]).all(-1).any(-1)
    assert is_first.any() and not is_first.all()
    assert torch.equal(weight.flatten(), torch.where(is_first, 4.0, 1.0))
    # After a history the first step is not scored, and nothing is weighted.
    seen.clear()
    ar.loss(latents, generator=torch.Generator().manual_seed(0), history=latents[:, :2])
    assert torch.all(seen[0][1] == 1.0) and torch.isfinite(weighted)
    with pytest.raises(ConfigError, match="first_frame_weight must be > 0"):
        create_model("interleaved_latent", overrides=[*TINY, "latent_ar.first_frame_weight=0"])


def _held_out_loss(model, batch) -> float:
    # The loss draws timesteps, noise, levels and dropout from the global RNG: fix them to compare like with like.
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123)
        return float(model.compute_loss(batch)["loss"])


@pytest.mark.slow
def test_interleaved_latent_learns_moving_digits(tmp_path):
    torch.manual_seed(0)
    model = create_model("interleaved_latent")
    clips = create_dataset("moving_digits", "val", num_frames=model.clip_length)
    held_out = next(iter(DataLoader(clips, batch_size=16)))
    before = _held_out_loss(model.train(), held_out)
    train_model(model, "moving_digits", tmp_path, TrainerConfig(max_steps=40, batch_size=8, enable_progress_bar=False))
    after = _held_out_loss(model.train(), held_out)
    assert after < 0.5 * before, f"held-out loss went from {before:.3f} to {after:.3f}"
