"""LatentVideoDenoiser (shapes, per-frame levels, causal time, conditioning) and DiffusionHead (learns a toy task)."""

from __future__ import annotations

import pytest
import torch

from zoo.components.denoiser import ConvFrameHead, DenoiserConfig, DiffusionHead, LatentVideoDenoiser
from zoo.components.sampling import DiffusionConfig, DiffusionProcess
from zoo.config import ConfigError

B, T, C, S = 2, 5, 4, 8  # batch, frames, latent channels, latent size
TEXT_DIM, FRAME_DIM = 16, 8


def _tiny(**overrides) -> DenoiserConfig:
    fields = dict(latent_channels=C, latent_size=S, patch_size=2, concat_channels=C + 1, text_dim=TEXT_DIM,
                  frame_cond_dim=FRAME_DIM, dim=32, depth=2, num_heads=2)
    return DenoiserConfig(**{**fields, **overrides})


@pytest.fixture(params=["factorized", "joint"])
def denoiser(request) -> LatentVideoDenoiser:
    """A tiny denoiser whose output layer is randomised, so outputs depend on the inputs (zero-init hides that);
    every test that takes it runs with both space-time attention layouts."""
    torch.manual_seed(0)
    model = LatentVideoDenoiser(_tiny(time_attention=request.param)).eval()
    torch.nn.init.normal_(model.proj_out.weight, std=0.2)
    return model


@pytest.fixture()
def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x_t": torch.randn(B, T, C, S, S, generator=g),
        "timesteps": torch.randint(0, 1000, (B, T), generator=g),
        "concat": torch.randn(B, T, C + 1, S, S, generator=g),
        "text_emb": torch.randn(B, 3, TEXT_DIM, generator=g),
        "text_mask": torch.tensor([[True, True, False], [True, False, False]]),
        "frame_cond": torch.randn(B, T, FRAME_DIM, generator=g),
    }


def test_unknown_time_attention_is_a_config_error():
    with pytest.raises(ConfigError, match="time_attention must be one of"):
        _tiny(time_attention="full")


def test_joint_attention_differs_from_factorized_with_the_same_weights(inputs):
    torch.manual_seed(0)
    factorized = LatentVideoDenoiser(_tiny()).eval()
    torch.nn.init.normal_(factorized.proj_out.weight, std=0.2)
    joint = LatentVideoDenoiser(_tiny(time_attention="joint")).eval()
    joint.load_state_dict(factorized.state_dict())  # one layout's weights fit the other: only the token grouping differs
    with torch.no_grad():
        assert (joint(**inputs) - factorized(**inputs)).abs().max() > 1e-3


def test_output_shape_and_zero_initialised_output():
    model = LatentVideoDenoiser(_tiny())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, C, S, S, generator=g)
    out = model(x, torch.full((B, T), 500), text_emb=torch.randn(B, 3, TEXT_DIM, generator=g))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out)), "an untrained denoiser predicts exactly 0 (stable start)"


def test_every_parameter_gets_a_gradient(denoiser, inputs):
    denoiser(**inputs).square().mean().backward()
    missing = [name for name, p in denoiser.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph: {missing}"


@torch.no_grad()
def test_per_frame_timesteps(denoiser, inputs):
    per_video = torch.tensor([100, 800])
    uniform = denoiser(**{**inputs, "timesteps": per_video})
    torch.testing.assert_close(uniform, denoiser(**{**inputs, "timesteps": per_video[:, None].expand(B, T)}))
    # Changing only frame 2's noise level changes frame 2's output most: its own AdaLN reads it directly.
    levels = per_video[:, None].repeat(1, T)
    levels[:, 2] = 999
    changed = (denoiser(**{**inputs, "timesteps": levels}) - uniform).abs().flatten(2).mean(-1)
    assert (changed[:, 2] > 0).all()
    assert (changed[:, 2] > 2 * changed[:, [0, 1, 3, 4]].max(dim=1).values).all()


@torch.no_grad()
def test_causal_time_hides_future_frames(denoiser, inputs):
    future = dict(inputs)
    for key in ("x_t", "concat", "frame_cond"):
        future[key] = inputs[key].clone()
        future[key][:, 3:] = torch.randn_like(future[key][:, 3:])
    causal, causal_future = denoiser(**inputs, causal_time=True), denoiser(**future, causal_time=True)
    torch.testing.assert_close(causal[:, :3], causal_future[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(causal[:, 3:], causal_future[:, 3:])
    full, full_future = denoiser(**inputs), denoiser(**future)
    assert (full[:, :3] - full_future[:, :3]).abs().max() > 1e-3, "without causal_time the past sees the future"


@torch.no_grad()
def test_block_causal_time_attends_within_blocks_and_causally_across(denoiser, inputs):
    def with_frames_replaced(frames: slice) -> dict[str, torch.Tensor]:
        altered = dict(inputs)
        for key in ("x_t", "concat", "frame_cond"):
            altered[key] = inputs[key].clone()
            altered[key][:, frames] = torch.randn_like(altered[key][:, frames])
        return altered

    reference = denoiser(**inputs, temporal_block_size=2)  # blocks {0, 1}, {2, 3}, {4}
    changed_3 = denoiser(**with_frames_replaced(slice(3, 4)), temporal_block_size=2)
    torch.testing.assert_close(changed_3[:, :2], reference[:, :2], atol=1e-6, rtol=0)
    assert (changed_3[:, 2] - reference[:, 2]).abs().max() > 1e-3, "frame 2 sees frame 3 in its own block"
    assert (changed_3[:, 4] - reference[:, 4]).abs().max() > 1e-3, "a later block sees earlier ones"
    # Block size 1 is causal_time; a block as long as the clip is full attention.
    torch.testing.assert_close(denoiser(**inputs, temporal_block_size=1), denoiser(**inputs, causal_time=True))
    torch.testing.assert_close(denoiser(**inputs, temporal_block_size=T), denoiser(**inputs))
    with pytest.raises(ValueError, match="not both"):
        denoiser(**inputs, causal_time=True, temporal_block_size=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        denoiser(**inputs, temporal_block_size=0)


@torch.no_grad()
def test_conditioning_inputs_are_used(denoiser, inputs):
    reference = denoiser(**inputs)
    for key in ("concat", "text_emb", "frame_cond"):
        altered = {**inputs, key: inputs[key] + 1.0}
        assert not torch.allclose(denoiser(**altered), reference), f"{key} has no effect"
    # concat=None means "nothing known": the same as zeros.
    torch.testing.assert_close(
        denoiser(**{**inputs, "concat": None}), denoiser(**{**inputs, "concat": torch.zeros_like(inputs["concat"])})
    )


@torch.no_grad()
def test_text_mask_and_per_frame_prompts(denoiser, inputs):
    reference = denoiser(**inputs)
    padded = inputs["text_emb"].clone()
    padded[0, 2] = 100.0  # a masked-out token may hold anything
    padded[1, 1:] = -100.0
    torch.testing.assert_close(denoiser(**{**inputs, "text_emb": padded}), reference, atol=1e-5, rtol=0)
    per_frame = {
        **inputs,
        "text_emb": inputs["text_emb"][:, None].expand(B, T, -1, -1),
        "text_mask": inputs["text_mask"][:, None].expand(B, T, -1),
    }
    torch.testing.assert_close(denoiser(**per_frame), reference, atol=1e-6, rtol=0)
    # A different prompt on the last frame only changes that frame the most.
    per_frame["text_emb"] = per_frame["text_emb"].clone()
    per_frame["text_emb"][:, -1] = torch.randn(B, 3, TEXT_DIM)
    changed = (denoiser(**per_frame) - reference).abs().flatten(2).mean(-1)
    assert (changed[:, -1] > changed[:, :-1].max(dim=1).values).all()


def test_text_denoiser_requires_text_and_bad_sizes_are_config_errors(inputs):
    model = LatentVideoDenoiser(_tiny())
    with pytest.raises(ValueError, match="pass text_emb"):
        model(inputs["x_t"], inputs["timesteps"])
    with pytest.raises(ConfigError, match="divisible by 2 \\* num_heads"):
        _tiny(dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="patch_size"):
        _tiny(patch_size=3)


def test_tiny_denoiser_fits_a_batch_quickly():
    torch.manual_seed(0)
    model = LatentVideoDenoiser(_tiny(text_dim=0, frame_cond_dim=0, concat_channels=0))
    process = DiffusionProcess(DiffusionConfig(prediction_type="epsilon", beta_schedule="scaled_linear"))
    g = torch.Generator().manual_seed(0)
    # Structured data: a per-video constant image repeated over time, so the task is learnable in a few steps.
    x0 = torch.randn(4, 1, C, S, S, generator=g).expand(4, T, C, S, S).contiguous()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        t = process.sample_timesteps((4,), g)
        loss = process.training_loss(model, x0, t, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


# ---- DiffusionHead --------------------------------------------------------------------------------------------
CENTERS = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])


def _toy_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 3, (n,), generator=g)
    x0 = CENTERS[labels] + 0.1 * torch.randn(n, 3, generator=g)
    return x0, torch.nn.functional.one_hot(labels, 3).float()


def test_diffusion_head_starts_at_zero_and_its_loss_is_seeded():
    head = DiffusionHead(token_dim=3, cond_dim=3, width=32, depth=2)
    x0, z = _toy_batch(8, torch.Generator().manual_seed(0))
    assert torch.equal(head(x0, torch.full((8,), 10), z), torch.zeros(8, 3))
    a = head.loss(x0, z, torch.Generator().manual_seed(4))
    b = head.loss(x0, z, torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.ndim == 0


def test_diffusion_head_learns_a_conditional_distribution():
    torch.manual_seed(0)
    head = DiffusionHead(
        token_dim=3, cond_dim=3, width=64, depth=2, diffusion=DiffusionConfig(sampler="dpmpp", num_sampling_steps=20)
    )
    steps = 400
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x0, z = _toy_batch(256, g)
        loss = head.loss(x0, z, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    head.eval()
    z = torch.eye(3).repeat_interleave(200, dim=0)
    samples = head.sample(z, torch.Generator().manual_seed(1)).view(3, 200, 3)
    # Each condition's samples sit on its own centre with about the data's spread, not on the others'.
    torch.testing.assert_close(samples.mean(dim=1), CENTERS, atol=0.06, rtol=0)
    spread = samples.std(dim=1)  # the data's is 0.1
    assert (spread > 0.04).all() and (spread < 0.16).all()
    assert head.sample(z[:4], torch.Generator().manual_seed(1), steps=5).shape == (4, 3)


# ---- ConvFrameHead --------------------------------------------------------------------------------------------
def test_frame_head_lays_each_patch_vector_over_its_cells_and_starts_at_zero():
    head = ConvFrameHead((3, 4, 6), patch_size=2, cond_dim=5, width=16, depth=2)
    z = torch.randn(2, 6, 5)  # 2 x 3 patches of 2 x 2 cells, raster order
    grid = head.condition_map(z)
    assert grid.shape == (2, 5, 4, 6)
    for token in range(6):
        row, col = divmod(token, 3)
        cells = grid[:, :, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2]
        torch.testing.assert_close(cells, z[:, token, :, None, None].expand_as(cells), rtol=0, atol=0)
    x_t = torch.randn(2, 3, 4, 6)
    assert torch.equal(head(x_t, torch.tensor([10, 500]), z), torch.zeros_like(x_t))
    assert head.sample(z, torch.Generator().manual_seed(0), steps=2).shape == (2, 3, 4, 6)


def test_frame_head_learns_a_shape_from_the_map_of_its_conditions():
    """Each of two conditions asks for a bar in another place of the frame, told only through the map's layout."""
    torch.manual_seed(0)
    head = ConvFrameHead((1, 4, 4), patch_size=2, cond_dim=1, width=16, depth=2,
                         diffusion=DiffusionConfig(sampler="dpmpp", num_sampling_steps=10))
    bars = torch.zeros(2, 1, 4, 4)
    bars[0, 0, :, :2], bars[1, 0, :, 2:] = 1.0, 1.0  # left bar, right bar
    # Patch vectors: 1 on the patches the bar covers, 0 elsewhere (raster order of the 2 x 2 patches).
    z = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])[..., None]
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        which = torch.randint(0, 2, (64,), generator=g)
        loss = head.loss(bars[which], z[which], g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    samples = head.sample(z.repeat_interleave(32, dim=0), torch.Generator().manual_seed(1)).view(2, 32, 4, 4)
    torch.testing.assert_close(samples.mean(dim=1), bars[:, 0], atol=0.15, rtol=0)


def test_conv_stem_and_head_keep_shapes_start_at_zero_and_see_within_a_patch(inputs):
    torch.manual_seed(0)
    model = LatentVideoDenoiser(_tiny(conv_width=16, conv_depth=2)).eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs), torch.zeros_like(inputs["x_t"])), "zero-initialised output convolution"
        torch.nn.init.normal_(model.conv_out[-1].weight, std=0.2)
        out = model(**inputs)
        assert out.shape == inputs["x_t"].shape
        # A latent pixel's change reaches its neighbours in the same frame through the convolutions.
        nudged = {**inputs, "x_t": inputs["x_t"].clone()}
        nudged["x_t"][0, 2, :, 4, 4] += 1.0
        changed = (model(**nudged) - out).abs().amax(dim=2)  # [B, T, h, w]
    assert changed[0, 2, 3:6, 3:6].min() > 0
    assert changed[1].max() == 0, "another video is untouched"
    model.train()
    model(**inputs).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ConfigError, match="conv_width"):
        _tiny(conv_width=12)

