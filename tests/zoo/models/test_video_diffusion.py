"""video_diffusion: conditioning, sliding-window extension, guidance cost and learning on moving_digits.

The shared contract (shapes, seeding, checkpoints, accepted conditions) is tested for every model in
tests/zoo/test_models.py; this file tests what is particular to latent video diffusion.
"""

from __future__ import annotations

import pytest
import torch

from zoo.config import ConfigError
from zoo.interface import Conditioning
from zoo.registry import create_model

STEPS = 3  # sampling steps in the fast tests


@pytest.fixture(scope="module")
def model():
    """The default tiny model with a randomised output layer, so conditioning visibly changes samples."""
    torch.manual_seed(0)
    model = create_model("video_diffusion", overrides=[f"diffusion.num_sampling_steps={STEPS}"]).eval()
    torch.nn.init.normal_(model.denoiser.proj_out.weight, std=0.05)
    return model


@pytest.fixture()
def denoiser_calls(model):
    """Records the channel-concat input of every denoiser call."""
    calls: list[torch.Tensor] = []
    handle = model.denoiser.register_forward_hook(lambda module, args, out: calls.append(args[2].clone()))
    yield calls
    handle.remove()


def test_registration_and_metadata(model):
    assert model.strategy == "pure_diffusion"
    assert model.supported_conditions == frozenset({"text", "context", "script"})
    meta = model.metadata()
    assert meta["num_sampling_steps"] == STEPS and meta["guidance_scale"] == model.config.diffusion.guidance_scale
    assert not any(p.requires_grad for p in model.autoencoder.parameters()), "the autoencoder stays frozen"
    model.train()
    assert not model.autoencoder.training
    model.eval()


def test_config_errors_are_one_line_and_actionable():
    with pytest.raises(ConfigError, match="extension_context"):
        create_model("video_diffusion", extension_context=8)
    with pytest.raises(ConfigError, match="pick another autoencoder"):
        create_model("video_diffusion", channels=3)
    with pytest.raises(ConfigError, match="sampler must be one of"):
        create_model("video_diffusion", overrides=["diffusion.sampler=euler"])


def test_context_frames_are_returned_exactly_and_condition_the_rest(model):
    g = torch.Generator().manual_seed(0)
    context = torch.rand(2, 3, 1, 32, 32, generator=g)
    videos = model.generate(2, 8, Conditioning(context=context), generator=1)
    assert torch.equal(videos[:, :3], context), "context frames are observations, handed back in pixel space"
    other = model.generate(2, 8, Conditioning(context=1 - context), generator=1)
    assert not torch.allclose(videos[:, 3:], other[:, 3:]), "the generated frames depend on the context"


def test_sliding_windows_condition_on_the_previous_window(model, denoiser_calls, monkeypatch):
    windows: list[torch.Tensor] = []
    sample = model.diffusion.sample
    monkeypatch.setattr(model.diffusion, "sample", lambda *a, **k: windows.append(sample(*a, **k)) or windows[-1])
    # clip_length 8, extension_context 4: 20 frames = 8 new, then 4 + 4 + 4 new with 4 known each.
    videos = model.generate(1, 20, generator=0)
    assert videos.shape == (1, 20, 1, 32, 32)
    assert len(denoiser_calls) == 4 * STEPS, "no text: no guidance, one call per step per window"
    concats = denoiser_calls[::STEPS]
    assert [int(concat[0, :, -1, 0, 0].sum()) for concat in concats] == [0, 4, 4, 4]
    for previous, concat, window in zip(windows, concats[1:], windows[1:], strict=False):
        # The known latents of a window are the last 4 frames of the previous window, and come back unchanged.
        torch.testing.assert_close(concat[:, :4, :-1], previous[:, -4:], atol=0, rtol=0)
        torch.testing.assert_close(window[:, :4], previous[:, -4:], atol=0, rtol=0)
    torch.testing.assert_close(videos[:, 16:], model.autoencoder.decode_video(windows[-1][:, 4:]))


def test_first_window_keeps_all_given_context(model, denoiser_calls):
    context = torch.rand(1, 6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    model.generate(1, 12, Conditioning(context=context), generator=0)
    known_per_window = [int(concat[0, :, -1, 0, 0].sum()) for concat in denoiser_calls[::STEPS]]
    # 6 given -> window of 6 known + 2 new, then 4 known + 4 new = 12 frames.
    assert known_per_window == [6, 4]


def test_text_guidance_costs_one_extra_call_and_scale_one_none(model, denoiser_calls):
    cond = Conditioning(text=["a 3 moving left", "a 7 moving up"])
    guided = model.generate(2, 8, cond, generator=0)
    assert len(denoiser_calls) == 2 * STEPS
    denoiser_calls.clear()
    scale = model.config.diffusion.guidance_scale
    model.config.diffusion.guidance_scale = 1.0
    try:
        plain = model.generate(2, 8, cond, generator=0)
    finally:
        model.config.diffusion.guidance_scale = scale
    assert len(denoiser_calls) == STEPS
    assert not torch.allclose(guided, plain)
    other_text = model.generate(2, 8, Conditioning(text=["a 0 moving down", "a 5 moving right"]), generator=0)
    assert not torch.allclose(guided, other_text), "the prompt changes the video"


def test_script_gives_every_frame_its_segment_prompt(model, monkeypatch):
    seen: list[list[list[str]]] = []
    from zoo.models import video_diffusion

    encode = video_diffusion.encode_prompts_per_frame
    monkeypatch.setattr(video_diffusion, "encode_prompts_per_frame",
                        lambda encoder, prompts: seen.append(prompts) or encode(encoder, prompts))
    script = [("a 1 moving up", 6), ("a 7 moving down", 6)]
    model.generate(1, 12, Conditioning(script=script), generator=0)
    conditional = [prompts[0] for prompts in seen if any(prompts[0])]
    assert conditional[0] == ["a 1 moving up"] * 6 + ["a 7 moving down"] * 2  # window 1: frames 0-7
    assert conditional[1] == ["a 1 moving up"] * 2 + ["a 7 moving down"] * 6  # window 2: frames 4-11
    assert all(p == "" for prompts in seen if not any(prompts[0]) for p in prompts[0]), "uncond = null prompt"


@pytest.mark.slow
def test_loss_halves_on_moving_digits(held_out_loss_before_and_after, tmp_path):
    before, after = held_out_loss_before_and_after("video_diffusion", tmp_path)
    assert after < 0.5 * before, f"held-out loss went from {before:.3f} to {after:.3f}"


@pytest.mark.slow
def test_text_conditioning_is_real_on_a_tiny_overfit_set():
    """Trained on two captioned clips, the model makes, for each caption, a video closer to that caption's clip than to
    the other: far more often than the 50% that ignoring the text would give."""
    from zoo.data import create_dataset

    clips = create_dataset("moving_digits", "train", overrides={"num_frames": 8, "num_digits": [1]})
    first = clips[0]
    second = next(clips[i] for i in range(1, 50) if clips[i]["label"] != first["label"])
    videos, prompts = torch.stack([first["video"], second["video"]]), [first["text"], second["text"]]
    model = create_model("video_diffusion", context_probability=0.0).train()  # every step text-conditioned
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(300):
        model.compute_loss({"video": videos.repeat(4, 1, 1, 1, 1), "text": prompts * 4}).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    generated = model.generate(16, 8, Conditioning(text=prompts * 8), generator=0)
    distance = ((generated[:, None] - videos[None]) ** 2).flatten(2).mean(dim=2)  # [16 generated, 2 clips]
    nearest_is_prompted = distance.argmin(dim=1) == torch.arange(16) % 2
    assert nearest_is_prompted.sum() >= 14, (nearest_is_prompted.sum(), distance.tolist())  # chance: 8 of 16; 14+: p < 0.003


@pytest.mark.parametrize("name", ["video_diffusion", "diffusion_forcing"])
def test_stills_add_a_one_frame_denoising_loss_and_training_asks_the_data_for_them(name, tmp_path):
    from torch.utils.data import DataLoader

    from zoo.data import create_dataset
    from zoo.training import TrainerConfig, train_model

    clips = create_dataset("moving_digits", "train", overrides={"num_frames": 8, "stills_per_clip": 2})
    batch = next(iter(DataLoader(clips, batch_size=3)))
    torch.manual_seed(0)
    model = create_model(name, overrides=["stills_per_clip=2"])
    torch.nn.init.normal_(model.denoiser.proj_out.weight, std=0.05)
    without = create_model(name)  # same weights, asks for no stills
    without.load_state_dict(model.state_dict())

    def loss(m, b, seed=1):
        torch.manual_seed(seed)
        return m.compute_loss(b)

    clip_only = loss(without, batch)
    assert loss(without, batch) == clip_only, "a model that asks for no stills ignores them"
    assert loss(model, {"video": batch["video"], "text": batch["text"]}) == clip_only
    # With stills, the loss is the clips' term plus a denoising term on the stills' latents as one-frame videos.
    terms = []
    training_loss = model.diffusion.training_loss

    def recording(denoise, x0, timesteps, *args, **kwargs):
        terms.append((x0, training_loss(denoise, x0, timesteps, *args, **kwargs)))
        return terms[-1][1]

    model.diffusion.training_loss = recording
    joint = loss(model, batch)
    (clip_latents, clip_term), (still_latents, still_term) = terms
    assert clip_term == clip_only
    expected = model.autoencoder.encode_video(batch["stills"].flatten(0, 1)[:, None])
    torch.testing.assert_close(still_latents, expected)  # [B*K, 1, c, h, w]
    assert joint.item() == pytest.approx((clip_term + still_term).item()) and still_term > 0
    model.diffusion.training_loss = training_loss

    seen = []
    compute_loss = model.compute_loss
    model.compute_loss = lambda b: (seen.append(tuple(b["stills"].shape)), compute_loss(b))[1]
    train_model(model, "moving_digits", tmp_path, TrainerConfig(max_steps=1, batch_size=2, enable_progress_bar=False),
                data_overrides={"train_size": 8})
    assert seen == [(2, 2, 1, 32, 32)]
