"""diffusion_forcing: one denoiser, per-frame noise levels, any sampling schedule; AR <-> diffusion by block size.

Paper idea: Diffusion Forcing (Chen et al. 2024) and its transformer form DFoT / History-Guided Video Diffusion (Song
et al. 2025): a latent video denoiser is trained with an independent noise level per frame, so at sampling time any
scheduling matrix (zoo.components.schedules: full-sequence, autoregressive, pyramid, rolling) is in distribution and
known frames anywhere are just frames at noise level 0. Temporal attention is block-causal (ACDiT, Hu et al. 2024):
`block_size` frames attend bidirectionally within a block and causally across blocks, so block_size=1 is a frame-level
autoregressive model and block_size=clip_length a full-sequence diffusion model, with the same weights layout.
Work division: the AR part is the causal order over frames (blocks) plus clean history; the diffusion part denoises
each frame. Videos longer than the clip roll out on a sliding window whose earlier frames are the clean history.

History guidance (DFoT): classifier-free guidance over the history, `pred + (s - 1) * (pred - pred_without_history)`,
where "without history" noises the clean history frames to the top level (vanilla) or to `history_noise_level`
(fractional); it composes additively with text guidance, and a scale of 1 skips the extra pass.

Self-forcing option (exposure-bias fix): on `self_forcing_probability` of training steps the history frames are the
model's own no-grad, few-step rollout from the first frame instead of ground truth, and the loss is taken on the
following frames. This is scheduled sampling with diffusion rollouts, the training-side half of Self-Forcing /
CausVid; their distribution-matching (DMD) loss on the rollout itself is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zoo.components.latent_diffusion import LatentDiffusionConfig, build_latent_diffusion, still_videos
from zoo.components.sampling import DiffusionConfig
from zoo.components.schedules import Schedule, ScheduleConfig, ScheduleStep, build_schedule, sample_with_schedule
from zoo.components.text import NULL_PROMPT, drop_prompts, encode_prompts_per_frame
from zoo.config import ConfigError
from zoo.interface import Conditioning, VideoGenerator
from zoo.registry import register_model

HISTORY_GUIDANCE = ("vanilla", "fractional")

TextInputs = tuple[Tensor, Tensor, Tensor]
"""Per-frame prompt encodings: tokens `[B, T, L, D]`, mask `[B, T, L]`, pooled `[B, T, D]`."""


@dataclass
class DiffusionForcingConfig(LatentDiffusionConfig):
    """Diffusion forcing's knobs: latent space, text, denoiser size, block size, schedule, guidance, self-forcing.

    block_size: frames per attention block, dividing clip_length (1 = AR frame by frame, clip_length = full sequence).
    schedule: the scheduling matrix used for sampling (diffusion.num_sampling_steps levels per frame).
    extension_context: history frames per window when a full_sequence schedule extends past clip_length.
    history_guidance: "vanilla" (history dropped to pure noise) or "fractional" (noised to history_noise_level, a
    fraction of the training timesteps); history_guidance_scale 1 turns it off.
    block_noise_probability: share of training clips whose frames share one noise level per attention block (levels
      still independent across blocks: CausVid's chunk-wise levels), the rest one level per frame. The block-by-block
      schedule samples a block's frames at one level, and the first block from the prompt alone, a case independent
      per-frame levels almost never show in training.
    self_forcing_probability / self_forcing_steps: share of training steps whose history is the model's own rollout,
    and the sampling steps per frame of that rollout.
    """

    block_size: int = 1
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="autoregressive"))
    history_guidance: str = "vanilla"
    history_guidance_scale: float = 1.0
    history_noise_level: float = 0.5
    block_noise_probability: float = 0.0
    self_forcing_probability: float = 0.0
    self_forcing_steps: int = 2
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(sampler="ddim"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.block_size <= self.clip_length or self.clip_length % self.block_size:
            raise ConfigError(
                f"block_size ({self.block_size}) must divide clip_length ({self.clip_length}) so every training clip "
                "is whole blocks; pick 1 (autoregressive), clip_length (full sequence) or a divisor in between"
            )
        if self.diffusion.sampler != "ddim":
            raise ConfigError(
                "diffusion_forcing moves each frame between arbitrary noise levels with the DDIM update; "
                "set diffusion.sampler=ddim"
            )
        in_flight = self.schedule.frames_in_flight(self.clip_length + 1, self.diffusion.num_sampling_steps)
        if self.schedule.name != "full_sequence" and in_flight >= self.clip_length:
            raise ConfigError(
                f"schedule '{self.schedule.name}' denoises {in_flight} frames at once, leaving no history in a "
                f"{self.clip_length}-frame window; lower schedule.chunk_size/window or raise schedule.lag"
            )
        if self.history_guidance not in HISTORY_GUIDANCE:
            raise ConfigError(f"history_guidance must be one of {list(HISTORY_GUIDANCE)}, got '{self.history_guidance}'")
        if not 0.0 < self.history_noise_level <= 1.0:
            raise ConfigError(f"history_noise_level must be in (0, 1], got {self.history_noise_level}")
        if not 0.0 <= self.block_noise_probability <= 1.0:
            raise ConfigError(f"block_noise_probability must be in [0, 1], got {self.block_noise_probability}")
        if not 0.0 <= self.self_forcing_probability <= 1.0:
            raise ConfigError(f"self_forcing_probability must be in [0, 1], got {self.self_forcing_probability}")
        if self.self_forcing_steps < 1:
            raise ConfigError(f"self_forcing_steps must be >= 1, got {self.self_forcing_steps}")


@register_model("diffusion_forcing", config=DiffusionForcingConfig)
class DiffusionForcing(VideoGenerator):
    """Diffusion forcing with block-causal time, schedule-driven sampling, history guidance and self-forcing."""

    strategy = "per_frame_noise"
    supported_conditions = frozenset({"text", "context", "script"})

    def __init__(self, config: DiffusionForcingConfig) -> None:
        super().__init__(config)
        self.autoencoder, self.text_encoder, self.denoiser, self.diffusion = build_latent_diffusion(
            config, known_frames=False)

    def metadata(self) -> dict[str, Any]:
        """Base facts plus the knobs that set quality and cost: block size, schedule, steps, guidance scales."""
        c = self.config
        return {
            **super().metadata(),
            "block_size": c.block_size,
            "schedule": c.schedule.name,
            "num_sampling_steps": self.diffusion.num_sampling_steps,
            "guidance_scale": c.diffusion.guidance_scale,
            "history_guidance_scale": c.history_guidance_scale,
        }

    # ---- the network on a window -------------------------------------------------------------------------
    def _predict(self, x_t: Tensor, timesteps: Tensor, text: TextInputs) -> Tensor:
        """The denoiser on `x_t [B, W, c, h, w]` at per-frame `timesteps [B, W]`, block-causal in time."""
        tokens, mask, pooled = text
        return self.denoiser(x_t, timesteps, None, tokens, mask, pooled, temporal_block_size=self.config.block_size)

    # ---- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> Tensor:
        """Denoising loss with an independent noise level per frame, or per block on `block_noise_probability` of the
        clips (on self-forcing steps: after a rolled-out history)."""
        video = batch["video"]
        batch_size, frames = video.shape[:2]
        with torch.no_grad():
            latents = self.autoencoder.encode_video(video)
        prompts = drop_prompts(list(batch["text"]), self.config.text_dropout, None)
        text = encode_prompts_per_frame(self.text_encoder, [[prompt] * frames for prompt in prompts])
        timesteps = self.diffusion.sample_timesteps((batch_size, frames), device=self.device)
        if self.config.block_noise_probability > 0:  # no draw at 0: training stays as it was, bit for bit
            per_block = torch.rand(batch_size, device=self.device) < self.config.block_noise_probability
            block_levels = timesteps[:, :: self.config.block_size].repeat_interleave(self.config.block_size, dim=1)
            timesteps = torch.where(per_block[:, None], block_levels, timesteps)
        weight = None
        if self.training and torch.rand(()) < self.config.self_forcing_probability:
            num_history = int(torch.randint(1, frames, ()))
            latents = torch.cat([self._rollout_history(latents, num_history, text), latents[:, num_history:]], 1)
            timesteps[:, :num_history] = 0  # the history is clean, as it is at sampling time
            weight = (torch.arange(frames, device=self.device) >= num_history).float()[None, :, None, None, None]
        loss = self.diffusion.training_loss(
            lambda x_t, t: self._predict(x_t, t, text), latents, timesteps, weight=weight
        )
        stills = still_videos(batch, self.autoencoder, self.text_encoder, self.config.text_dropout) \
            if self.config.stills_per_clip else None
        if stills is not None:
            latents, still_text = stills
            timesteps = self.diffusion.sample_timesteps((latents.shape[0], 1), device=self.device)
            loss = loss + self.diffusion.training_loss(
                lambda x_t, t: self._predict(x_t, t, still_text), latents, timesteps)
        return loss

    @torch.no_grad()
    def _rollout_history(self, latents: Tensor, num_history: int, text: TextInputs) -> Tensor:
        """The model's own `num_history` first frames: frame 0 from data, the rest a few-step block-by-block rollout."""
        generator = torch.Generator(device=self.device).manual_seed(int(torch.randint(2**62, ())))
        frames = latents[:, :num_history]
        context = torch.zeros(num_history, dtype=torch.bool)
        context[0] = True
        schedule = build_schedule(
            ScheduleConfig("autoregressive", chunk_size=self.config.block_size),
            num_history,
            self.config.self_forcing_steps,
            context,
        )
        history_text = tuple(part[:, :num_history] for part in text)
        return sample_with_schedule(
            lambda x, step: self._predict(x, step.timesteps.expand(x.shape[0], -1), history_text),
            self.diffusion, schedule, tuple(frames.shape), generator, known=frames, device=self.device,
            dtype=frames.dtype,
        )

    # ---- generation ----------------------------------------------------------------------------------
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        known = torch.zeros(num_videos, num_frames, *self.autoencoder.latent_shape, device=self.device)
        context = torch.zeros(num_frames, dtype=torch.bool)
        if cond.context is not None:
            num_context = cond.context.shape[1]
            known[:, :num_context] = self.autoencoder.encode_video(cond.context)
            context[:num_context] = True
        prompts = cond.prompts_per_frame(num_videos, num_frames)
        videos = self.autoencoder.decode_video(self.sample_latents(known, context, prompts, generator))
        if cond.context is not None:
            # Context frames are observations, not samples: hand them back exactly as given.
            videos[:, : cond.context.shape[1]] = cond.context
        return videos

    def schedule_for(self, num_frames: int, context: Tensor) -> Schedule:
        """The config's scheduling matrix over `num_frames`; full_sequence past one clip goes window by window."""
        c = self.config
        schedule = c.schedule
        if schedule.name == "full_sequence" and num_frames > self.clip_length:
            schedule = ScheduleConfig("autoregressive", chunk_size=self.clip_length - c.extension_context)
        return build_schedule(schedule, num_frames, c.diffusion.num_sampling_steps, context)

    @torch.no_grad()
    def sample_latents(
        self, known: Tensor, context: Tensor, prompts: list[list[str]] | None, generator: torch.Generator
    ) -> Tensor:
        """Latents `[B, T, c, h, w]`; frames where `context [T]` is True are `known`'s (any positions), kept clean.

        prompts: one per frame per video (`[B][T]`), or None for unconditional.
        """
        num_videos, num_frames = known.shape[:2]
        has_text = prompts is not None
        prompts = prompts or [[NULL_PROMPT] * num_frames] * num_videos
        text = encode_prompts_per_frame(self.text_encoder, prompts)
        null_text = encode_prompts_per_frame(self.text_encoder, [[NULL_PROMPT] * num_frames] * num_videos) if has_text else None
        return sample_with_schedule(
            lambda x, step: self._guided_prediction(x, step, text, null_text, generator),
            self.diffusion,
            self.schedule_for(num_frames, context),
            tuple(known.shape),
            generator,
            known=known,
            window=self.clip_length,
            device=known.device,
            dtype=known.dtype,
        )

    def _guided_prediction(
        self, x: Tensor, step: ScheduleStep, text: TextInputs, null_text: TextInputs | None, generator: torch.Generator
    ) -> Tensor:
        """`pred + (s_text - 1)(pred - pred_no_text) + (s_hist - 1)(pred - pred_no_history)`; scale 1 skips a pass."""
        c = self.config
        timesteps = step.timesteps.expand(x.shape[0], -1)
        text = tuple(part[:, step.frames] for part in text)
        prediction = self._predict(x, timesteps, text)
        guided = prediction
        text_scale = c.diffusion.guidance_scale
        if null_text is not None and text_scale != 1.0:
            unconditional = self._predict(x, timesteps, tuple(part[:, step.frames] for part in null_text))
            guided = guided + (text_scale - 1.0) * (prediction - unconditional)
        history = step.clean
        if c.history_guidance_scale != 1.0 and history.any():
            level = 1.0 if c.history_guidance == "vanilla" else c.history_noise_level
            t_history = round(level * (c.diffusion.num_train_timesteps - 1))
            noisy_timesteps = torch.where(history, t_history, step.timesteps).expand(x.shape[0], -1)
            noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
            noisy = torch.where(history.view(1, -1, 1, 1, 1), self.diffusion.add_noise(x, noise, noisy_timesteps), x)
            without_history = self._predict(noisy, noisy_timesteps, text)
            guided = guided + (c.history_guidance_scale - 1.0) * (prediction - without_history)
        return guided
