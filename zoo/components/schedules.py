"""Scheduling matrices: per-frame noise levels over sampling iterations, and one sampler that runs any of them.

A schedule is data, not control flow (Diffusion Forcing, Chen et al. 2024; diffusers' SkyReels-V2
`generate_timestep_matrix`): an integer matrix `levels [R, T]` where row r holds every frame's noise level before
sampler iteration r. Level `num_steps` is pure noise and level 0 is clean; levels k >= 1 are the `num_steps` timesteps
of a "trailing" DDIM grid. Row 0 has every frame to generate at `num_steps` and every known (context) frame at 0, the
last row is all 0, and each frame's level never rises. Every named schedule is one rule: frame j (counted over the
frames to generate) starts descending at row `start_j` and reaches 0 after `duration` rows, evenly.

- `full_sequence`: every frame from row 0, one level per row (plain video diffusion).
- `autoregressive`: `chunk_size` frames at a time, each chunk fully denoised before the next starts.
- `pyramid`: frame j starts `lag` rows after frame j-1, one level per row; later frames are noisier.
- `rolling`: FIFO-Diffusion's diagonal queue: one frame enters per row and every queued frame drops
  `num_steps / window` levels per row, so `window` frames are in flight and one leaves clean per row. Unlike FIFO the
  queue fills from pure noise (no diagonal initialisation from a generated clip); window == num_steps is pyramid, lag 1.

`sample_with_schedule` runs any denoiser that takes per-frame timesteps with any matrix, moving each updated frame from
its level to the next with the deterministic DDIM update (diffusers' `DDIMScheduler.step` math, between arbitrary
timesteps), on a sliding window of frames that ends at the last frame being denoised (or starts at frame 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from zoo.components.sampling import DiffusionProcess
from zoo.config import ConfigError

SCHEDULES = ("full_sequence", "autoregressive", "pyramid", "rolling")


@dataclass
class ScheduleConfig:
    """Which scheduling matrix to sample with, and its one knob.

    chunk_size: frames per chunk of `autoregressive`. lag: rows between consecutive frames' starts in `pyramid`.
    window: frames in flight in `rolling`.
    """

    name: str = "full_sequence"
    chunk_size: int = 1
    lag: int = 1
    window: int = 4

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ConfigError(f"schedule.name must be one of {list(SCHEDULES)}, got '{self.name}'")
        for knob in ("chunk_size", "lag", "window"):
            if getattr(self, knob) < 1:
                raise ConfigError(f"schedule.{knob} must be >= 1, got {getattr(self, knob)}")

    def frames_in_flight(self, num_frames: int, num_steps: int) -> int:
        """The most frames any iteration denoises at once when generating `num_frames` frames."""
        if self.name == "full_sequence":
            return num_frames
        if self.name == "autoregressive":
            return min(self.chunk_size, num_frames)
        if self.name == "pyramid":
            return min(-(-num_steps // self.lag), num_frames)
        return min(self.window, num_frames)


@dataclass(frozen=True)
class Schedule:
    """A scheduling matrix: `levels [R, T]` (long) in [0, num_steps]; row 0 noisy (context clean), last row clean."""

    levels: Tensor
    num_steps: int

    @property
    def num_frames(self) -> int:
        return self.levels.shape[1]

    @property
    def context(self) -> Tensor:
        """`[T]` bool: the frames that are clean from the start (given, never generated)."""
        return self.levels[0] == 0

    def denoiser_calls(self) -> int:
        """Iterations that update at least one frame (each costs one denoiser call, more with guidance)."""
        return int((self.levels[1:] != self.levels[:-1]).any(dim=1).sum())


def build_schedule(
    config: ScheduleConfig, num_frames: int, num_steps: int, context: Tensor | None = None
) -> Schedule:
    """The scheduling matrix of `config` over `num_frames` frames with `num_steps` levels per frame.

    context: `[num_frames]` bool, the known frames (anywhere in the video); they stay clean and the schedule orders
    the remaining frames as if the known ones were not there. A final chunk may be shorter than `chunk_size`.
    """
    if num_frames < 1 or num_steps < 1:
        raise ValueError(f"num_frames and num_steps must be >= 1, got {num_frames} and {num_steps}")
    known = torch.zeros(num_frames, dtype=torch.bool) if context is None else context.bool().cpu()
    if known.shape != (num_frames,):
        raise ValueError(f"context must be a [{num_frames}] bool mask, got shape {list(known.shape)}")
    order = torch.arange(int((~known).sum()))  # rank of each frame to generate
    duration = num_steps
    if config.name == "full_sequence":
        starts = torch.zeros_like(order)
    elif config.name == "autoregressive":
        starts = order // config.chunk_size * num_steps
    elif config.name == "pyramid":
        starts = order * config.lag
    else:
        starts, duration = order, config.window
    num_rows = int(starts.max()) + duration + 1 if len(order) else 1
    rows = torch.arange(num_rows)[:, None]
    # Integer progress, so a frame reaches exactly 0 at `start + duration` and never rises in between.
    progress = ((rows - starts[None, :]).clamp(0, duration) * num_steps) // duration
    levels = torch.zeros(num_rows, num_frames, dtype=torch.long)
    levels[:, ~known] = num_steps - progress
    return Schedule(levels, num_steps)


# ---- sampling ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleStep:
    """What the denoiser sees at one iteration, over the window `frames` of the video (W frames).

    timesteps `[W]`: each frame's timestep input (0 for clean frames). active `[W]`: frames this iteration updates.
    clean `[W]`: frames at level 0 — given context and finished frames, the history the others are conditioned on.
    """

    frames: slice
    timesteps: Tensor
    active: Tensor
    clean: Tensor


ScheduleDenoiseFn = Callable[[Tensor, ScheduleStep], Tensor]
"""`denoise_fn(x_window [B, W, ...], step)`: the model's prediction (its process's type) for the window's frames."""


def level_timesteps(process: DiffusionProcess, num_steps: int) -> Tensor:
    """`[num_steps + 1]` long: the training timestep of each level; level 0 (clean) is fed to denoisers as 0."""
    # The same "trailing" grid as DiffusionProcess.make_sampler, so full_sequence reproduces its DDIM sampler.
    grid = DDIMScheduler(num_train_timesteps=process.config.num_train_timesteps, timestep_spacing="trailing")
    grid.set_timesteps(num_steps)
    return torch.cat([torch.zeros(1, dtype=torch.long), grid.timesteps.flip(0).long()])


def ddim_update(process: DiffusionProcess, x_t: Tensor, prediction: Tensor, alpha_t: Tensor, alpha_next: Tensor) -> Tensor:
    """Deterministic DDIM step (eta = 0) from cumulative alphas `alpha_t` to `alpha_next` (broadcastable to x_t).

    The operations mirror diffusers' `DDIMScheduler.step`, so the update is the same to the last bit.
    """
    beta_t = 1 - alpha_t
    if process.config.prediction_type == "epsilon":
        x0 = (x_t - beta_t ** (0.5) * prediction) / alpha_t ** (0.5)
        epsilon = prediction
    else:
        x0 = (alpha_t**0.5) * x_t - (beta_t**0.5) * prediction
        epsilon = (alpha_t**0.5) * prediction + (beta_t**0.5) * x_t
    return alpha_next ** (0.5) * x0 + (1 - alpha_next) ** (0.5) * epsilon


@torch.no_grad()
def sample_with_schedule(
    denoise_fn: ScheduleDenoiseFn,
    process: DiffusionProcess,
    schedule: Schedule,
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    known: Tensor | None = None,
    window: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sample `shape = [B, T, ...]` by walking `schedule`'s rows; all noise comes from `generator`.

    known `[B, T, ...]`: values of the schedule's context frames (returned unchanged). window: the most frames the
    denoiser sees at once (None: all); each call covers `window` frames ending at the last frame being updated (its
    earlier frames are the history), or the first `window` frames, so videos longer than the window roll out.
    With `full_sequence` this is the DDIM sampler of `process` (when `num_steps` divides the training timesteps).
    """
    if shape[1] != schedule.num_frames:
        raise ValueError(f"shape has {shape[1]} frames but the schedule {schedule.num_frames}")
    device = torch.device(device) if device is not None else generator.device
    x = process.noise(shape, generator, device, dtype)
    context = schedule.context.to(device)
    if context.any():
        if known is None:
            raise ValueError("the schedule has context frames; pass their values as `known`")
        x[:, context] = known[:, context].to(dtype)
    levels, num_frames = schedule.levels.to(device), schedule.num_frames
    timesteps = level_timesteps(process, schedule.num_steps).to(device)
    alphas = process.noise_schedule.alphas_cumprod.to(device)[timesteps]
    alphas[0] = 1.0  # level 0 is clean data, as DDIM's `set_alpha_to_one` final step
    frame_dims = [1] * (x.dim() - 2)
    for now, after in zip(levels[:-1], levels[1:], strict=True):
        updated = (after != now).nonzero().flatten()
        if not len(updated):
            continue
        last = int(updated[-1])
        start = 0 if window is None else max(0, last + 1 - window)
        end = num_frames if window is None else min(num_frames, start + window)
        if int(updated[0]) < start:
            raise ValueError(
                f"the schedule denoises frames {int(updated[0])}..{last} together but the denoiser sees "
                f"{window} frames at once; use a smaller chunk_size/window or a larger lag"
            )
        frames = slice(start, end)
        step = ScheduleStep(frames, timesteps[now[frames]], (after != now)[frames], now[frames] == 0)
        x_window = x[:, frames]
        prediction = denoise_fn(x_window, step)
        alpha_t = alphas[now[frames]].view(1, -1, *frame_dims).to(dtype)
        alpha_next = alphas[after[frames]].view(1, -1, *frame_dims).to(dtype)
        stepped = ddim_update(process, x_window, prediction, alpha_t, alpha_next)
        x[:, frames] = torch.where(step.active.view(1, -1, *frame_dims), stepped, x_window)
    return x
