"""video_ar: cached == uncached sampling, context and scripts, config checks, and learning on moving_digits."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.interface import Conditioning
from zoo.registry import create_model, model_config
from zoo.training import TrainerConfig, train_model

TINY = {
    "clip_length": 3,
    "text_dim": 16,
    "ar": {"dim": 32, "depth": 1, "heads": 2, "max_positions": 512},
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("video_ar", overrides=TINY).eval()


def test_defaults_are_tiny_and_registered():
    config = model_config("video_ar")
    assert config.autoencoder == "moving_digits_vq" and config.ar.dim <= 128 and config.clip_length == 8
    model = create_model("video_ar")
    assert model.strategy == "pure_ar" and model.supported_conditions == {"text", "context", "script"}
    assert model.metadata()["tokens_per_frame"] == 64 and model.metadata()["use_kv_cache"] is True


def test_initial_loss_is_uniform_over_codes(model):
    video = torch.rand(2, 3, 1, 32, 32)
    loss = model.compute_loss({"video": video, "text": ["a 3 moving left", "a 1"]})
    assert abs(loss.item() - math.log(model.autoencoder.codebook_size)) < 0.5
    loss.backward()
    assert model.transformer.token_head.weight.grad is not None
    assert all(p.grad is None for p in model.autoencoder.parameters()), "the autoencoder is frozen"
    model.zero_grad()


@pytest.mark.parametrize(
    "cond",
    [
        Conditioning(text=["a 3 moving left", "a 7 moving up"]),
        Conditioning(script=[("a 1 moving up", 2), ("a 7 moving down", 2)]),
    ],
    ids=["text", "script"],
)
def test_kv_cache_gives_the_same_samples(model, cond):
    """With guidance and a rollout past the clip length (the view slides and the cache is re-filled)."""
    model.config.guidance_scale = 2.0
    try:
        model.config.use_kv_cache = True
        cached = model.generate(2, 4, cond=cond, generator=3)
        model.config.use_kv_cache = False
        uncached = model.generate(2, 4, cond=cond, generator=3)
    finally:
        model.config.use_kv_cache, model.config.guidance_scale = True, 1.0
    assert torch.equal(cached, uncached)


def test_text_to_slots_gives_every_slot_the_prompt_and_keeps_cached_sampling_exact():
    torch.manual_seed(0)
    model = create_model("video_ar", overrides={**TINY, "text_to_slots": True}).eval()
    prefix, mask, slot_bias = model._prefix(["a 3 moving left", "a 7 moving up"])
    assert slot_bias.shape == (2, 1, model.config.ar.dim) and not torch.allclose(slot_bias[0], slot_bias[1])
    loss = model.compute_loss({"video": torch.rand(2, 3, 1, 32, 32), "text": ["a 3 moving left", "a 7 moving up"]})
    loss.backward()
    assert model.text_to_slots.weight.grad.abs().sum() > 0, "the loss reaches the prompt through the slots"
    model.zero_grad()
    model.config.guidance_scale = 2.0
    cond = Conditioning(script=[("a 1 moving up", 2), ("a 7 moving down", 2)])
    cached = model.generate(2, 4, cond=cond, generator=3)
    model.config.use_kv_cache = False
    assert torch.equal(model.generate(2, 4, cond=cond, generator=3), cached)
    with torch.no_grad():
        model.text_to_slots.bias.add_(1.0)  # sampling reads the slot term: moving it moves the samples
    assert not torch.equal(model.generate(2, 4, cond=cond, generator=3), cached)
    assert create_model("video_ar", overrides=TINY).text_to_slots is None, "off by default: the shipped tiny config"


def test_context_frames_are_kept_and_condition_the_rest(model):
    context = torch.rand(2, 2, 1, 32, 32)
    videos = model.generate(2, 3, cond=Conditioning(context=context), generator=0)
    assert torch.equal(videos[:, :2], context)
    other = model.generate(2, 3, cond=Conditioning(context=torch.rand(2, 2, 1, 32, 32)), generator=0)
    assert not torch.equal(videos[:, 2:], other[:, 2:])


def test_script_re_prefixes_at_segment_boundaries(monkeypatch):
    """(An untrained model barely listens to its prefix, so the prompts it is given are checked, not its pixels.)"""
    torch.manual_seed(0)
    model = create_model("video_ar", overrides=TINY).eval()
    script = [("a 1 moving up", 2), ("a 7 moving down", 2)]
    first = model.generate(1, 2, cond=Conditioning(text=["a 1 moving up"]), generator=5)
    prefixes = []
    encode = model._prefix
    monkeypatch.setattr(model, "_prefix", lambda prompts: prefixes.append(prompts) or encode(prompts))
    scripted = model.generate(1, 4, cond=Conditioning(script=script), generator=5)
    # Frames 0-1 under the first prompt (one cache fill, clip_length 3 means the view slides at frame 3), then
    # the second prompt from frame 2 on: a fill at the boundary and one when the view slides.
    assert prefixes == [["a 1 moving up"], ["a 7 moving down"], ["a 7 moving down"]]
    assert torch.equal(scripted[:, :2], first), "the first segment is written under its own prompt"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"autoencoder": "moving_digits_kl"}, "needs a vq one"),
        ({"channels": 3}, "set channels/image_size"),
        ({"temperature": 0.0}, "temperature > 0"),
        ({"clip_length": 1}, "clip_length must be >= 2"),
        ({"ar": {"max_positions": 100}}, "raise it"),
    ],
)
def test_config_errors(overrides, message):
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        create_model("video_ar", overrides={**TINY, **overrides})


def _held_out_loss(model, batch) -> float:
    """Cross-entropy on a fixed held-out batch, averaged over fixed prompt-dropout draws."""
    model.eval()
    losses = []
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            losses.append(float(model.compute_loss(batch)))
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_loss_falls_below_the_token_marginal_on_moving_digits(tmp_path):
    """The TINY defaults learn on moving_digits within a CPU minute or so: held-out cross-entropy falls from uniform
    (ln 512 = 6.24) to below the tokens' unigram entropy, the loss of a model that knows only how often each code
    occurs; getting there needs the text and the neighbouring tokens. (Halving takes far longer: blank background
    spreads over hundreds of near-identical codes, so the marginal itself is ~5.7 nats.)"""
    from zoo.data import VideoDataModule

    torch.manual_seed(0)
    model = create_model("video_ar")
    data = VideoDataModule("moving_digits", batch_size=16, overrides={"num_frames": model.clip_length})
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        tokens = model.autoencoder.encode_video_tokens(batch["video"])
    frequencies = torch.bincount(tokens.flatten(), minlength=model.autoencoder.codebook_size).float()
    frequencies = frequencies[frequencies > 0] / frequencies.sum()
    marginal = float(-(frequencies * frequencies.log()).sum())
    before = _held_out_loss(model, batch)
    model.train()  # the loss helper left it in eval mode
    train_model(model, "moving_digits", tmp_path,
                TrainerConfig(max_steps=100, batch_size=8, enable_progress_bar=False, accelerator="cpu"))
    after = _held_out_loss(model, batch)
    assert before > 6.0 and after < marginal, f"loss {before:.3f} -> {after:.3f}, token marginal {marginal:.3f}"
