"""The diffusion process shared by every diffusion part of the zoo: training targets and samplers.

`DiffusionProcess` wraps diffusers schedulers: a `DDPMScheduler` defines the forward (noising) process for training,
and every `sample` call builds a fresh `DPMSolverMultistepScheduler` (DPM-Solver++), `DDIMScheduler` or
`DDPMScheduler` for the reverse process, so no state leaks between calls. All noise comes from the caller's generator.
Timesteps may carry one level per sample or per frame (`[B]` or `[B, T]`), the basis for diffusion-forcing schedules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from zoo.config import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction")
SAMPLERS = ("dpmpp", "ddim", "ddpm")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
"""`denoise_fn(x_t, t)`: the model's prediction for `x_t` at timesteps `t` (long, one per sample, `[B]`)."""


@dataclass
class DiffusionConfig:
    """How a model is trained to denoise and how it samples.

    prediction_type: "epsilon" or "v_prediction"; sampler: "dpmpp" (DPM-Solver++), "ddim" or "ddpm".
    guidance_scale: classifier-free guidance weight at sampling; 1 means plain conditional sampling.
    frame_noise_correlation: for video latents `[B, T, ...]`, the share of the noise's variance that every frame of
    a video has in common (PYoCo's mixed noise prior, Ge et al. 2023), in training and sampling alike; 0 draws each
    frame's noise independently.
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"
    sampler: str = "dpmpp"
    num_sampling_steps: int = 10
    guidance_scale: float = 1.0
    frame_noise_correlation: float = 0.0

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("prediction_type", self.prediction_type, PREDICTION_TYPES),
            ("sampler", self.sampler, SAMPLERS),
            ("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
        ):
            if value not in choices:
                raise ConfigError(f"diffusion.{name} must be one of {list(choices)}, got '{value}'")
        if self.prediction_type == "epsilon" and self.beta_schedule == "squaredcos_cap_v2":
            # The cosine schedule ends at SNR ~1e-9, where x0 = (x_t - sigma * eps) / alpha multiplies any error in
            # eps by ~1e4 at the first sampling step: samples explode.
            raise ConfigError(
                "epsilon prediction is unstable with the cosine schedule's near-zero final SNR; "
                "use diffusion.prediction_type=v_prediction or diffusion.beta_schedule=scaled_linear"
            )
        if not 0.0 <= self.frame_noise_correlation < 1.0:
            raise ConfigError(
                f"diffusion.frame_noise_correlation must be in [0, 1), got {self.frame_noise_correlation}"
            )
        if not 1 <= self.num_sampling_steps <= self.num_train_timesteps:
            raise ConfigError(
                f"diffusion.num_sampling_steps must be in [1, {self.num_train_timesteps}], got {self.num_sampling_steps}"
            )


def _per_leading(fn: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, other: Tensor, t: Tensor) -> Tensor:
    # diffusers' add_noise/get_velocity flatten `t` and broadcast it over dim 0 only; per-frame timesteps [B, T]
    # therefore go through with the leading dims folded into one batch dim.
    lead = t.dim()
    if tuple(x.shape[:lead]) != tuple(t.shape):
        raise ValueError(f"timesteps of shape {list(t.shape)} do not match the leading dims of {list(x.shape)}")
    folded = fn(x.flatten(0, lead - 1), other.flatten(0, lead - 1), t.flatten())
    return folded.view(x.shape)


class DiffusionProcess:
    """Training helpers and samplers for one `DiffusionConfig` (not an nn.Module: it holds no weights)."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.noise_schedule = DDPMScheduler(**self._schedule_kwargs(), clip_sample=False)

    def _schedule_kwargs(self) -> dict:
        c = self.config
        return {
            "num_train_timesteps": c.num_train_timesteps,
            "beta_schedule": c.beta_schedule,
            "beta_start": c.beta_start,
            "beta_end": c.beta_end,
            "prediction_type": c.prediction_type,
        }

    @property
    def num_sampling_steps(self) -> int:
        """Denoiser evaluations per sample without guidance (doubled with guidance)."""
        return self.config.num_sampling_steps

    def noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> Tensor:
        """Standard normal noise of `shape`; for videos `[B, T, ...]` with `frame_noise_correlation` rho, each frame's
        is `sqrt(rho) shared + sqrt(1 - rho) own`, so every frame is still N(0, 1) and frames correlate by rho."""
        own = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        rho = self.config.frame_noise_correlation
        if rho == 0.0 or len(shape) < 5:
            return own
        shared = randn_tensor((shape[0], 1, *shape[2:]), generator=generator, device=device, dtype=dtype)
        return rho**0.5 * shared + (1.0 - rho) ** 0.5 * own

    # ---- training ------------------------------------------------------------------------------------
    def sample_timesteps(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """Uniform integer timesteps of `shape` (e.g. `[B]`, or `[B, T]` for per-frame noise levels)."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.config.num_train_timesteps, shape, generator=generator, device=gen_device)
        return t.to(device)

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """`x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`; `timesteps` covers the leading dims of `x0`."""
        return _per_leading(self.noise_schedule.add_noise, x0, noise, timesteps)

    def training_target(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """What the denoiser must predict: the noise (epsilon) or the velocity `sqrt(a) noise - sqrt(1-a) x0`."""
        if self.config.prediction_type == "epsilon":
            return noise
        return _per_leading(self.noise_schedule.get_velocity, x0, noise, timesteps)

    def loss(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Mean squared error; `weight` (broadcastable, e.g. 0 on known context frames) averages only where > 0."""
        if weight is None:
            return F.mse_loss(prediction, target)
        weight = weight.to(prediction.dtype).expand_as(prediction)
        return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)

    def training_loss(
        self,
        denoise_fn: Callable[[Tensor, Tensor], Tensor],
        x0: Tensor,
        timesteps: Tensor,
        generator: torch.Generator | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        """Noise `x0` at `timesteps`, run `denoise_fn(x_t, timesteps)` and return the loss against the target."""
        noise = self.noise(x0.shape, generator, x0.device, x0.dtype)
        prediction = denoise_fn(self.add_noise(x0, noise, timesteps), timesteps)
        return self.loss(prediction, self.training_target(x0, noise, timesteps), weight)

    # ---- sampling ------------------------------------------------------------------------------------
    def make_sampler(
        self, num_steps: int | None = None, device: torch.device | str | None = None
    ) -> DDIMScheduler | DDPMScheduler | DPMSolverMultistepScheduler:
        """A fresh reverse-process scheduler with `num_steps` (default: the config's) timesteps set."""
        c = self.config
        # "trailing" spacing starts from the last training timestep, which matters at few steps (Lin et al. 2023).
        common = {**self._schedule_kwargs(), "timestep_spacing": "trailing"}
        if c.sampler == "dpmpp":
            scheduler = DPMSolverMultistepScheduler(
                **common, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
            )
        elif c.sampler == "ddim":
            scheduler = DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
        else:
            scheduler = DDPMScheduler(**common, clip_sample=False)
        scheduler.set_timesteps(num_steps or c.num_sampling_steps, device=device)
        return scheduler

    @torch.no_grad()
    def sample(
        self,
        denoise_fn: DenoiseFn,
        shape: tuple[int, ...],
        generator: torch.Generator,
        *,
        uncond_fn: DenoiseFn | None = None,
        guidance_scale: float | None = None,
        known: tuple[Tensor, Tensor] | None = None,
        num_steps: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw samples of `shape` by running the reverse process from pure noise.

        uncond_fn + guidance_scale: classifier-free guidance `uncond + s * (cond - uncond)`; s = 1 skips `uncond_fn`.
        known = (values, mask): where mask is 1, the sample is pinned to `values` (noised to the current level
        before each step, exact at the end), inpainting-style. `num_steps` overrides the config's step count.
        Randomness comes only from `generator`.
        """
        device = torch.device(device) if device is not None else generator.device
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        guided = uncond_fn is not None and scale != 1.0
        scheduler = self.make_sampler(num_steps, device)
        x = self.noise(shape, generator, device, dtype)
        for t in scheduler.timesteps:
            t_batch = t.expand(shape[0])
            if known is not None:
                values, mask = known
                noise = self.noise(shape, generator, device, dtype)
                x = torch.where(mask.bool(), self.add_noise(values, noise, t_batch), x)
            model_input = scheduler.scale_model_input(x, t)
            prediction = denoise_fn(model_input, t_batch)
            if guided:
                unconditional = uncond_fn(model_input, t_batch)
                prediction = unconditional + scale * (prediction - unconditional)
            x = scheduler.step(prediction, t, x, generator=generator).prev_sample
        if known is not None:
            values, mask = known
            x = torch.where(mask.bool(), values.to(dtype), x)
        return x
