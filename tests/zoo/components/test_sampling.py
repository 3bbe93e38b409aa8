"""DiffusionProcess: forward-process math, exact-denoiser sampling, determinism, guidance and known-value pinning."""

from __future__ import annotations

import pytest
import torch

from zoo.components.sampling import SAMPLERS, DiffusionConfig, DiffusionProcess
from zoo.config import ConfigError, build_config


def _alphas(process: DiffusionProcess, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = process.noise_schedule.alphas_cumprod.to(t.device)[t]
    return a.sqrt(), (1 - a).sqrt()


def _gaussian_oracle(process: DiffusionProcess, mean: float, std: float):
    """The exact denoiser for data x0 ~ N(mean, std^2) per element, in the process's prediction type."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (v.view(-1, *[1] * (x_t.dim() - 1)) for v in _alphas(process, t))
        x0 = mean + alpha * std**2 * (x_t - alpha * mean) / (alpha**2 * std**2 + sigma**2)
        eps = (x_t - alpha * x0) / sigma
        return eps if process.config.prediction_type == "epsilon" else alpha * eps - sigma * x0

    return denoise


def test_config_rejects_unknown_choices_with_one_line_errors():
    with pytest.raises(ConfigError, match="sampler must be one of"):
        build_config(DiffusionConfig, {"sampler": "euler"})
    with pytest.raises(ConfigError, match="did you mean 'prediction_type'"):
        build_config(DiffusionConfig, {"prediction_typ": "epsilon"})
    with pytest.raises(ConfigError, match="num_sampling_steps"):
        DiffusionConfig(num_sampling_steps=0)
    with pytest.raises(ConfigError, match="epsilon prediction is unstable"):
        DiffusionConfig(prediction_type="epsilon", beta_schedule="squaredcos_cap_v2")


def test_add_noise_and_targets_accept_per_frame_timesteps():
    process = DiffusionProcess(DiffusionConfig(prediction_type="v_prediction"))
    epsilon = DiffusionProcess(DiffusionConfig(prediction_type="epsilon", beta_schedule="scaled_linear"))
    x0, noise = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    t = torch.tensor([[0, 500, 999], [10, 10, 700]])
    alpha, sigma = (v[..., None, None] for v in _alphas(process, t))
    torch.testing.assert_close(process.add_noise(x0, noise, t), alpha * x0 + sigma * noise)
    torch.testing.assert_close(process.training_target(x0, noise, t), alpha * noise - sigma * x0)
    per_sample = torch.tensor([3, 900])
    torch.testing.assert_close(
        process.add_noise(x0, noise, per_sample), process.add_noise(x0, noise, per_sample[:, None].expand(2, 3))
    )
    assert torch.equal(epsilon.training_target(x0, noise, t), noise)
    with pytest.raises(ValueError, match="do not match"):
        process.add_noise(x0, noise, torch.zeros(3, dtype=torch.long))


def test_weighted_loss_averages_only_weighted_elements():
    process = DiffusionProcess(DiffusionConfig())
    pred, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    target[:, :2] = 5.0  # a "known" frame with a large error that must not count
    weight = torch.ones(2, 4, 1)
    weight[:, :2] = 0
    assert process.loss(pred, target, weight).item() == pytest.approx(1.0)
    assert process.loss(pred, target).item() == pytest.approx((25 + 1) / 2)


def test_sample_timesteps_come_from_the_generator():
    process = DiffusionProcess(DiffusionConfig(num_train_timesteps=100))
    a = process.sample_timesteps((4, 3), torch.Generator().manual_seed(1))
    b = process.sample_timesteps((4, 3), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4, 3) and 0 <= a.min() and a.max() < 100


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_exact_denoiser_samples_the_data_distribution(sampler, prediction_type):
    # With the Bayes-optimal denoiser for N(mean, std^2) data, every sampler must reproduce that distribution:
    # checks timestep spacing, prediction-type conversions and the final clean step end to end. Step counts are
    # where each solver's discretisation error (variance shrinkage) falls under the tolerance.
    steps = {"dpmpp": 25, "ddim": 100, "ddpm": 50}[sampler]
    schedule = "squaredcos_cap_v2" if prediction_type == "v_prediction" else "scaled_linear"
    process = DiffusionProcess(
        DiffusionConfig(
            sampler=sampler, prediction_type=prediction_type, beta_schedule=schedule, num_sampling_steps=steps
        )
    )
    mean, std = 0.7, 0.3
    samples = process.sample(_gaussian_oracle(process, mean, std), (4000, 1), torch.Generator().manual_seed(0))
    assert samples.mean().item() == pytest.approx(mean, abs=0.03)
    assert samples.std().item() == pytest.approx(std, abs=0.03)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_is_deterministic_per_generator_and_stateless_between_calls(sampler):
    process = DiffusionProcess(DiffusionConfig(sampler=sampler, num_sampling_steps=5))
    weight = torch.randn(6, 6)

    def denoise(x, t):
        return torch.tanh(x @ weight) * (t[:, None].float() / 1000)

    first = process.sample(denoise, (3, 6), torch.Generator().manual_seed(7))
    process.sample(denoise, (2, 6), torch.Generator().manual_seed(3), num_steps=3)  # different call in between
    again = process.sample(denoise, (3, 6), torch.Generator().manual_seed(7))
    other = process.sample(denoise, (3, 6), torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_make_sampler_builds_fresh_schedulers_with_the_configured_steps():
    process = DiffusionProcess(DiffusionConfig(num_sampling_steps=7))
    a, b = process.make_sampler(), process.make_sampler()
    assert a is not b and len(a.timesteps) == 7 and process.num_sampling_steps == 7
    assert a.timesteps[0] == 999, "trailing spacing starts at the last training timestep"
    assert len(process.make_sampler(num_steps=3).timesteps) == 3


def test_guidance_scale_one_equals_plain_conditional_sampling():
    process = DiffusionProcess(DiffusionConfig(num_sampling_steps=6))

    def cond(x, t):
        return 0.5 * x + 0.1

    def uncond(x, t):
        return -0.3 * x

    plain = process.sample(cond, (5, 4), torch.Generator().manual_seed(0))
    guided_one = process.sample(cond, (5, 4), torch.Generator().manual_seed(0), uncond_fn=uncond, guidance_scale=1.0)
    assert torch.equal(plain, guided_one)
    # Scale s follows uncond + s * (cond - uncond): identical to sampling with that combined denoiser.
    scale = 2.5
    guided = process.sample(cond, (5, 4), torch.Generator().manual_seed(0), uncond_fn=uncond, guidance_scale=scale)

    def combined(x, t):
        return uncond(x, t) + scale * (cond(x, t) - uncond(x, t))

    torch.testing.assert_close(guided, process.sample(combined, (5, 4), torch.Generator().manual_seed(0)))
    assert not torch.allclose(guided, plain)


def test_config_guidance_scale_is_the_default():
    process = DiffusionProcess(DiffusionConfig(num_sampling_steps=4, guidance_scale=3.0))

    def cond(x, t):
        return 0.5 * x

    def uncond(x, t):
        return 0 * x

    by_config = process.sample(cond, (2, 3), torch.Generator().manual_seed(0), uncond_fn=uncond)
    explicit = process.sample(cond, (2, 3), torch.Generator().manual_seed(0), uncond_fn=uncond, guidance_scale=3.0)
    assert torch.equal(by_config, explicit)


def test_known_values_are_pinned_exactly_and_steer_the_rest():
    process = DiffusionProcess(DiffusionConfig(num_sampling_steps=8))
    values = torch.full((2, 4, 3), 0.25)
    mask = torch.zeros(2, 4, 1)
    mask[:, :2] = 1

    def denoise(x, t):  # couples elements so that pinned values influence the free ones
        return x.mean(dim=(1, 2), keepdim=True).expand_as(x) * 0.5

    out = process.sample(denoise, (2, 4, 3), torch.Generator().manual_seed(0), known=(values, mask))
    assert torch.equal(out[:, :2], values[:, :2])
    free = process.sample(denoise, (2, 4, 3), torch.Generator().manual_seed(0))
    assert not torch.allclose(out[:, 2:], free[:, 2:])


def test_video_noise_correlates_frames_as_configured():
    from diffusers.utils.torch_utils import randn_tensor

    shape = (4000, 6, 2, 2, 2)
    # Unchanged at rho 0: the shipped weights retrain, and sample, bit for bit.
    assert torch.equal(DiffusionProcess(DiffusionConfig()).noise(shape, torch.Generator().manual_seed(0), "cpu",
                                                                  torch.float32),
                       randn_tensor(shape, generator=torch.Generator().manual_seed(0)))
    for rho in (0.0, 0.5):
        process = DiffusionProcess(DiffusionConfig(frame_noise_correlation=rho))
        noise = process.noise(shape, torch.Generator().manual_seed(1), "cpu", torch.float32)
        assert noise.var().item() == pytest.approx(1.0, abs=0.02)
        assert (noise[:, 0] * noise[:, 4]).mean().item() == pytest.approx(rho, abs=0.03)
    # Frames (not videos) are drawn as before.
    flat = DiffusionProcess(DiffusionConfig(frame_noise_correlation=0.5))
    assert torch.equal(flat.noise((5, 3), torch.Generator().manual_seed(0), "cpu", torch.float32),
                       torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError, match="frame_noise_correlation"):
        DiffusionConfig(frame_noise_correlation=1.0)
