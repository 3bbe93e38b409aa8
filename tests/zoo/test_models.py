"""Conformance suite over every registered zoo model (like timm's test_models.py).

A new model file gets these checks for free: shape/range/dtype, seeding, long rollouts, conditions accepted or
rejected, and checkpoint round trips (Lightning .ckpt and safetensors) giving identical samples.
"""

from __future__ import annotations

import pytest
import torch

from zoo.interface import CONDITION_KINDS, Conditioning, ConditioningError
from zoo.registry import create_model, export_safetensors, get_entry, list_models, load_model
from zoo.training import TrainerConfig, train_model

ZOO_MODELS = [name for name in list_models() if get_entry(name).cls.__module__.startswith("zoo.models.")]


@pytest.fixture(scope="module", params=ZOO_MODELS)
def model(request):
    torch.manual_seed(0)
    return create_model(request.param).eval()


def _condition(model, kind: str, num_videos: int, num_frames: int) -> Conditioning:
    channels, size, _ = model.frame_size
    if kind == "text":
        return Conditioning(text=["a 3 moving left"] * num_videos)
    if kind == "context":
        return Conditioning(context=torch.rand(num_videos, 2, channels, size, size))
    if kind == "end_context":
        return Conditioning(end_context=torch.rand(num_videos, 2, channels, size, size))
    half = num_frames // 2
    return Conditioning(script=[("a 1 moving up", half), ("a 7 moving down", num_frames - half)])


def test_registered_zoo_is_complete():
    expected = {"video_diffusion", "video_ar", "interleaved_latent", "ar_keyframes_diffusion",
                "diffusion_clips_ar_extend"}
    missing = expected - set(ZOO_MODELS)
    assert not missing, f"models not registered: {sorted(missing)}"


def test_output_contract_and_seeding(model):
    frames = model.clip_length
    a = model.generate(2, frames, generator=0)
    assert a.shape == (2, frames, *model.frame_size) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, model.generate(2, frames, generator=0)), "same seed must give the same videos"
    # Seeds must change the very first frames (shorter videos: AR sampling costs one step per token).
    assert not torch.equal(a[:, :2], model.generate(2, 2, generator=1)), "different seeds must differ"
    metadata = model.metadata()
    assert metadata["strategy"] == model.strategy and metadata["num_parameters"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("factor", [4])  # past two window boundaries: what 2x checks, and more
def test_long_rollouts(model, factor):
    if not model.can_extend:
        with pytest.raises(ConditioningError, match="cannot extend"):
            model.generate(1, model.clip_length * factor)
        return
    videos = model.generate(1, model.clip_length * factor, generator=0)
    assert videos.shape[1] == model.clip_length * factor
    # A rollout must keep producing content, not collapse to a constant after the first window.
    tail = videos[:, -model.clip_length:]
    assert torch.isfinite(tail).all() and tail.std() > 1e-3


def test_prefix_consistent_models_start_long_rollouts_as_short_ones(model):
    """A benchmark takes a prefix-consistent model's 1x videos from its 2x ones: that must be bit for bit what a 1x
    generation with the same seed makes, under a prompt and over a window boundary."""
    declared = {name for name in ZOO_MODELS if get_entry(name).cls.prefix_consistent}
    assert declared == {"video_diffusion", "interleaved_latent", "video_ar", "diffusion_clips_ar_extend"}, \
        "update this list when a model's sampling order changes"
    if not model.prefix_consistent:
        return
    frames = model.clip_length
    text = Conditioning(text=["a 3 moving left", "a 7 and a 1 moving down"])
    short = model.generate(2, frames, cond=text, generator=3)
    long = model.generate(2, 2 * frames, cond=text, generator=3)
    assert torch.equal(long[:, :frames], short)
    assert not torch.equal(long[:, frames:], long[:, :frames])


@pytest.mark.parametrize("kind", CONDITION_KINDS)
def test_conditions_accepted_or_rejected(model, kind):
    frames = model.clip_length
    cond = _condition(model, kind, 2, frames)
    if kind not in model.supported_conditions:
        with pytest.raises(ConditioningError, match="does not support"):
            model.generate(2, frames, cond=cond)
        return
    videos = model.generate(2, frames, cond=cond, generator=0)
    assert videos.shape == (2, frames, *model.frame_size)
    if kind == "context":
        torch.testing.assert_close(videos[:, :2], cond.context, atol=1e-6, rtol=0)
    if kind == "end_context":
        torch.testing.assert_close(videos[:, -2:], cond.end_context, atol=1e-6, rtol=0)


def test_checkpoint_round_trips_give_identical_samples(model, tmp_path):
    model.train()  # the fixture's model is in eval mode for sampling
    result = train_model(
        model, "moving_digits", tmp_path, TrainerConfig(max_steps=2, batch_size=2, enable_progress_bar=False),
        data_overrides={"image_size": model.config.image_size},
    )
    model.eval()
    reference = model.generate(1, model.clip_length, generator=5)
    from_ckpt = load_model(result.checkpoint)
    torch.testing.assert_close(from_ckpt.generate(1, model.clip_length, generator=5), reference, atol=0, rtol=0)
    exported = export_safetensors(model, tmp_path / "export.safetensors")
    from_safetensors = load_model(exported)
    torch.testing.assert_close(from_safetensors.generate(1, model.clip_length, generator=5), reference, atol=0, rtol=0)


def test_bf16_sampling_runs_in_bfloat16_and_keeps_seeds_and_prefixes(model):
    """`sampling_precision: bf16-mixed` (what the pretrained zoo samples with) runs the layers in bfloat16, returns
    float32 videos near the float32 sampling's, and keeps what the benchmark relies on: same seed, same videos, and
    a prefix-consistent model's long rollout starting as its short one."""
    frames = model.clip_length
    text = Conditioning(text=["a 3 moving left", "a 7 and a 1 moving down"])
    in_float32 = model.generate(2, frames, cond=text, generator=3)
    dtypes = set()
    hooks = [layer.register_forward_hook(lambda _, __, out: dtypes.add(out.dtype))
             for layer in model.modules() if isinstance(layer, torch.nn.Linear)]
    model.config.sampling_precision = "bf16-mixed"
    try:
        in_bf16 = model.generate(2, frames, cond=text, generator=3)
        assert torch.equal(in_bf16, model.generate(2, frames, cond=text, generator=3))
        if model.prefix_consistent:
            assert torch.equal(model.generate(2, 2 * frames, cond=text, generator=3)[:, :frames], in_bf16)
    finally:
        model.config.sampling_precision = "32-true"
        for hook in hooks:
            hook.remove()
    assert dtypes == {torch.bfloat16}
    assert in_bf16.dtype == torch.float32 and in_bf16.shape == in_float32.shape
    difference = (in_bf16 - in_float32).abs().mean()
    assert 0 < difference < 0.05


def test_an_unknown_sampling_precision_is_a_one_line_error():
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match=r"sampling_precision must be one of \['32-true', 'bf16-mixed'\], got 'bf16'"):
        create_model("video_diffusion", overrides={"sampling_precision": "bf16"})
