"""ar_keyframes_diffusion: keyframe grid, windows pinned to their keyframes, long rollouts, cached planner, learning."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch.utils.data import DataLoader

from zoo.data import create_dataset
from zoo.interface import Conditioning
from zoo.models.ar_keyframes_diffusion import keyframe_codes, keyframe_positions, render_windows
from zoo.registry import create_model
from zoo.training import TrainerConfig, train_model

# Small enough for unit tests; the YAML defaults are used by the learning test.
TINY = [
    "planner.transformer.dim=64",
    "planner.transformer.depth=2",
    "planner.head_width=64",
    "planner.head_depth=2",
    "planner.diffusion.num_sampling_steps=4",
    "renderer.dim=32",
    "renderer.depth=1",
    "renderer.diffusion.num_sampling_steps=4",
]


@pytest.fixture(scope="module")
def model(wake_zero_init):
    torch.manual_seed(0)
    model = create_model("ar_keyframes_diffusion", overrides=TINY)
    wake_zero_init(model.planner)
    wake_zero_init(model.renderer)
    return model.eval()


@pytest.mark.parametrize(
    ("num_frames", "interval", "num_context", "positions", "windows"),
    [
        (8, 3, 0, [0, 3, 6, 7], [(0, 3), (3, 6)]),  # 8 = 2*3 + 2: a last gap of 1 needs no window
        (9, 3, 0, [0, 3, 6, 8], [(0, 3), (3, 6), (5, 8)]),  # last gap of 2: its window reaches back over frame 5
        (10, 3, 0, [0, 3, 6, 9], [(0, 3), (3, 6), (6, 9)]),  # divisible: no short window
        (8, 4, 0, [0, 4, 7], [(0, 4), (3, 7)]),
        (8, 3, 2, [0, 1, 4, 7], [(1, 4), (4, 7)]),  # the grid continues from the last context frame
        (9, 3, 4, [0, 1, 2, 3, 6, 8], [(3, 6), (5, 8)]),
        (3, 3, 0, [0, 2], [(0, 2)]),  # shorter than a window
        (1, 3, 0, [0], []),
    ],
)
def test_keyframe_positions_codes_and_windows(num_frames, interval, num_context, positions, windows):
    assert keyframe_positions(num_frames, interval, num_context) == positions
    codes = keyframe_codes(positions)
    assert codes[0] == 0 and codes[1:].tolist() == [b - a for a, b in pairwise(positions)]
    assert codes.max() <= interval
    assert render_windows(positions, interval) == windows
    covered = set(positions) | {f for start, end in windows for f in range(start, end + 1)}
    assert covered == set(range(num_frames)), "every frame is a keyframe or inside a rendered window"


def test_rendered_windows_reproduce_their_keyframes(model):
    frames, num_videos = 9, 2  # 9 = 2*3 + 3 with a last gap of 2: a batched group and a short last window
    prompts = [["a 3 moving left"] * frames] * num_videos
    positions = keyframe_positions(frames, model.keyframe_interval)
    known = torch.zeros(num_videos, 0, *model.autoencoder.latent_shape)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        keyframes = model.plan_keyframes(known, positions, prompts, generator)
        latents = model.render(keyframes, positions, frames, prompts, generator)
        decoded_keyframes = model.autoencoder.decode_video(keyframes)
    assert keyframes.shape == (num_videos, len(positions), *model.autoencoder.latent_shape)
    torch.testing.assert_close(latents[:, positions], keyframes, atol=0, rtol=0)
    for start, end in render_windows(positions, model.keyframe_interval):
        inside = [f for f in range(start + 1, end) if f not in positions]
        assert latents[:, inside].abs().amax(dim=(2, 3, 4)).min() > 0, f"window {start}-{end} left frames empty"
    # The full model is plan-then-render with the same generator: its frames at keyframes decode the planner's.
    videos = model.generate(num_videos, frames, Conditioning(text=["a 3 moving left"] * num_videos), generator=7)
    torch.testing.assert_close(videos[:, positions], decoded_keyframes, atol=1e-5, rtol=0)
    # In-between frames are rendered, not copies of a keyframe.
    assert (videos[:, 1] - videos[:, 0]).abs().max() > 1e-3


def test_long_rollouts_give_the_requested_length(model):
    # 2 context frames + 19 more: the planner slides its window several times, the script switches mid-way,
    # and the frame count fits no multiple of the interval.
    frames = 21
    context = torch.rand(1, 2, *model.frame_size, generator=torch.Generator().manual_seed(3))
    cond = Conditioning(context=context, script=[("a 1 moving up", 10), ("a 7 moving down", frames - 10)])
    videos = model.generate(1, frames, cond, generator=5)
    assert videos.shape == (1, frames, *model.frame_size)
    torch.testing.assert_close(videos[:, :2], context, atol=0, rtol=0)
    assert videos[:, -model.clip_length :].std() > 1e-3


def test_kv_cached_planning_equals_uncached(model):
    frames = 21
    positions = keyframe_positions(frames, model.keyframe_interval, num_context=2)
    assert len(positions) > 2 * model.planner_window, "long enough for several window slides"
    known = torch.randn(2, 2, *model.autoencoder.latent_shape, generator=torch.Generator().manual_seed(3))
    prompts = [["a 1 moving up"] * 10 + ["a 7 moving down"] * (frames - 10), ["a 2 moving left"] * frames]
    plans = {}
    for use_kv_cache in (True, False):
        model.config.use_kv_cache = use_kv_cache
        plans[use_kv_cache] = model.plan_keyframes(known, positions, prompts, torch.Generator().manual_seed(4))
    model.config.use_kv_cache = True
    torch.testing.assert_close(plans[True], plans[False], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plans[True][:, :2], known, atol=0, rtol=0)


def _held_out_losses(model, batch) -> dict[str, float]:
    # The loss draws sub-sequences, timesteps, noise and dropout from the global RNG: fix them to compare like with like.
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123)
        return {name: float(value) for name, value in model.compute_loss(batch).items()}


@pytest.mark.slow
def test_ar_keyframes_diffusion_learns_moving_digits(tmp_path):
    torch.manual_seed(0)
    model = create_model("ar_keyframes_diffusion")
    clips = create_dataset("moving_digits", "val", num_frames=model.clip_length)
    held_out = next(iter(DataLoader(clips, batch_size=16)))
    before = _held_out_losses(model.train(), held_out)
    train_model(model, "moving_digits", tmp_path, TrainerConfig(max_steps=40, batch_size=8, enable_progress_bar=False))
    after = _held_out_losses(model.train(), held_out)
    for part in ("planner", "renderer"):
        assert after[part] < 0.5 * before[part], f"{part} loss went from {before[part]:.3f} to {after[part]:.3f}"
