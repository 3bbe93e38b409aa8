"""ar_keyframes_diffusion: an AR planner writes sparse keyframes, a video diffusion renderer fills in the frames between.

Paper idea: hierarchical keyframes-then-interpolation generation, as in CogVideo (Hong et al. 2022: an AR transformer
writes keyframes at a low frame rate, then frames are interpolated between them) and NUWA-XL (Yin et al. 2023: coarse
keyframes first, then local models fill each gap conditioned on both of its ends). Here the planner is a next-latent AR
model with a MAR / NOVA-style diffusion head, and the renderer a latent video diffusion model with masked
(channel-concat) conditioning on both end frames, as in MCVD's interpolation mode (Voleti et al. 2022).

How AR and diffusion divide the work: the AR planner owns the long range. It runs over the keyframes only — every
`keyframe_interval` (k) frames, plus the last frame — so one planner step covers k frames of motion and long videos
cost few AR steps. Each keyframe is a continuous KL latent drawn by a per-token diffusion head from the planner's
vectors; a learned code tells each step how many frames ahead its keyframe lies (k, or less for the last one, so frame
counts not divisible by k work). Continuous latents rather than VQ tokens, because the keyframes live in the very latent
space the renderer denoises in: they enter the renderer as-is, with no quantization error and no pixel round trip.
The diffusion renderer owns the short range: a `LatentVideoDenoiser` over a window of k+1 frames that start and end on
keyframes, which it sees through channel-concat of their latents plus a mask channel (in-betweening) while it denoises
every frame of the window jointly (refining the motion between the two keyframes). The keyframes are also pinned as
known frames during sampling, so a window reproduces its planner keyframes exactly at both ends and neighbouring windows
join seamlessly. Windows between keyframes are independent, so they are rendered as one batch; only a short last window
(frames not divisible by k) runs afterwards, with the frames before its first keyframe already rendered and known.

Conditions: text prefixes the planner and cross-attends (plus pooled AdaLN) in the renderer, with prompts dropped to ""
in training for classifier-free guidance in both; context frames are all given to the planner (step codes of 1) and the
keyframe grid continues from the last context frame; a script gives every keyframe and every rendered frame the prompt of
its segment (the planner re-fills its cache under the new prefix). Longer videos: the planner continues over more
keyframes with a sliding window (re-filled KV cache), then windows are rendered between them. Training is joint on data
clips: the planner on random keyframe sub-sequences of the clip (random context length and clip length, so every gap
and context pattern occurs), the renderer on random (k+1)-frame windows with ground-truth keyframes at both ends
(teacher forcing) and sometimes a known prefix (the short-last-window and context cases). Both diffusion parts use the
epsilon objective on a scaled-linear schedule (MAR's head objective; Stable Diffusion's schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from zoo.components.denoiser import LatentVideoDenoiser
from zoo.components.latent_ar import EPSILON_DIFFUSION, NextLatentConfig, TextPrefix, build_latent_ar_parts
from zoo.components.sampling import DiffusionConfig, DiffusionProcess
from zoo.components.text import NULL_PROMPT, drop_prompts, encode_prompts_per_frame
from zoo.config import ConfigError
from zoo.interface import Conditioning, ModelConfig, VideoGenerator, autoencoder_field
from zoo.registry import register_model


def keyframe_positions(num_frames: int, interval: int, num_context: int = 0) -> list[int]:
    """Frame indices the planner reads or writes, in order: every context frame, then every `interval` frames from the
    last context frame (frame 0 without context), and always the last frame."""
    anchor = max(num_context - 1, 0)
    return sorted(set(range(num_context)) | set(range(anchor, num_frames, interval)) | {num_frames - 1})


def keyframe_codes(positions: list[int]) -> Tensor:
    """Planner step codes: 0 for the first position, else the gap in frames from the previous one."""
    return torch.tensor([0] + [b - a for a, b in pairwise(positions)], dtype=torch.long)


def render_windows(positions: list[int], interval: int) -> list[tuple[int, int]]:
    """Frame ranges `[start, end]` (inclusive) the renderer samples: one per keyframe gap with frames inside, ending on
    the later keyframe and `interval` frames long when the video allows (a short gap reaches back over known frames)."""
    return [(max(0, b - interval), b) for a, b in pairwise(positions) if b - a >= 2]


@dataclass
class RendererConfig:
    """The diffusion renderer: denoiser size (conv_width / conv_depth: `DenoiserConfig`) and its diffusion process.

    known_prefix_probability: share of training windows that also know a random number of leading frames.
    """

    dim: int = 96
    depth: int = 2
    num_heads: int = 4
    patch_size: int = 2
    mlp_ratio: float = 4.0
    conv_width: int = 0
    conv_depth: int = 1
    known_prefix_probability: float = 0.3
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(**EPSILON_DIFFUSION))


@dataclass
class ARKeyframesDiffusionConfig(ModelConfig):
    """Latent space, text encoder, keyframe spacing, the AR planner and the diffusion renderer.

    keyframe_interval: frames between keyframes (k); a rendered window spans k + 1 frames.
    use_kv_cache: the planner appends each keyframe to its KV cache (True) or re-runs its window (False).
    rollout_keep_keyframes: keyframes kept in the planner's context when its window slides.
    """

    autoencoder: str = autoencoder_field("kl")
    text_encoder: str = "learned"
    text_dim: int = 64
    text_dropout: float = 0.1
    keyframe_interval: int = 3
    use_kv_cache: bool = True
    rollout_keep_keyframes: int = 2
    planner: NextLatentConfig = field(default_factory=NextLatentConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)

    def __post_init__(self) -> None:
        if not 2 <= self.keyframe_interval < self.clip_length:
            raise ConfigError(
                f"keyframe_interval ({self.keyframe_interval}) must be in [2, clip_length - 1 = {self.clip_length - 1}] "
                "so that a rendered window of keyframe_interval + 1 frames fits in a training clip"
            )
        planner_window = len(keyframe_positions(self.clip_length, self.keyframe_interval))
        if not 1 <= self.rollout_keep_keyframes < planner_window:
            raise ConfigError(
                f"rollout_keep_keyframes ({self.rollout_keep_keyframes}) must be in [1, {planner_window - 1}] "
                f"(a clip of {self.clip_length} frames holds {planner_window} keyframes)"
            )


@register_model("ar_keyframes_diffusion", config=ARKeyframesDiffusionConfig)
class ARKeyframesDiffusion(VideoGenerator):
    """AR keyframe planner over KL latents + diffusion renderer of the windows between keyframes."""

    strategy = "ar_keyframes_diffusion"
    supported_conditions = frozenset({"text", "context", "script"})

    def __init__(self, config: ARKeyframesDiffusionConfig) -> None:
        super().__init__(config)
        # Planner codes are the gap to the previous keyframe, 1..k, and 0 for the first step.
        self.autoencoder, self.text_encoder, self.planner = build_latent_ar_parts(
            config, config.planner, num_codes=config.keyframe_interval + 1
        )
        r = config.renderer
        self.renderer = LatentVideoDenoiser.text_conditioned(
            self.autoencoder.latent_shape, config.text_dim, patch_size=r.patch_size, dim=r.dim, depth=r.depth,
            num_heads=r.num_heads, mlp_ratio=r.mlp_ratio, known_frames=True, conv_width=r.conv_width,
            conv_depth=r.conv_depth,
        )
        self.diffusion = DiffusionProcess(r.diffusion)

    @property
    def keyframe_interval(self) -> int:
        return self.config.keyframe_interval

    @property
    def planner_window(self) -> int:
        """Keyframes in one training clip: the most the planner sees at once."""
        return len(keyframe_positions(self.clip_length, self.keyframe_interval))

    def metadata(self) -> dict[str, Any]:
        """Base facts plus the sampling cost knobs the throughput report needs."""
        return {
            **super().metadata(),
            "keyframe_interval": self.keyframe_interval,
            "planner_sampling_steps": self.config.planner.diffusion.num_sampling_steps,
            "num_sampling_steps": self.diffusion.num_sampling_steps,
            "guidance_scale": self.config.renderer.diffusion.guidance_scale,
            "use_kv_cache": self.config.use_kv_cache,
        }

    # ---- conditioning -----------------------------------------------------------------------------------
    def _encode_prefix(self, prompts: list[str]) -> TextPrefix:
        tokens, mask, _ = self.text_encoder.encode(prompts)
        return tokens, mask

    @staticmethod
    def _concat(values: Tensor, mask: Tensor) -> Tensor:
        """Channel-concat input: known latents (zero elsewhere) and the known-mask as one extra channel."""
        return torch.cat([values * mask, mask.expand(*values.shape[:2], 1, *values.shape[3:])], dim=2)

    def _denoise_fn(self, concat: Tensor, text: tuple[Tensor, Tensor, Tensor]):
        tokens, mask, pooled = text
        return lambda x_t, t: self.renderer(x_t, t, concat, tokens, mask, pooled)

    # ---- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Joint loss: planner on a random keyframe sub-sequence, renderer on a random window between true keyframes."""
        with torch.no_grad():
            latents = self.autoencoder.encode_video(batch["video"])
        prompts = drop_prompts(list(batch["text"]), self.config.text_dropout)
        tokens, mask, pooled = self.text_encoder.encode(prompts)
        planner_loss = self._planner_loss(latents, (tokens, mask))
        renderer_loss = self._renderer_loss(latents, (tokens, mask, pooled))
        return {"loss": planner_loss + renderer_loss, "planner": planner_loss, "renderer": renderer_loss}

    def _planner_loss(self, latents: Tensor, text: TextPrefix) -> Tensor:
        # A random clip length and context length per batch: every gap (1..k) and context pattern gets trained.
        frames, k = latents.shape[1], self.keyframe_interval
        num_frames = int(torch.randint(k + 1, frames + 1, ()))
        num_context = int(torch.randint(0, num_frames // 2 + 1, ()))
        positions = keyframe_positions(num_frames, k, num_context)
        codes = keyframe_codes(positions).to(latents.device)
        return self.planner.loss(latents[:, positions], text, codes)

    def _renderer_loss(self, latents: Tensor, text: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        batch, frames = latents.shape[:2]
        width = self.keyframe_interval + 1
        device = latents.device
        start = torch.randint(0, frames - width + 1, (batch, 1), device=device)
        window = latents[torch.arange(batch, device=device)[:, None], start + torch.arange(width, device=device)]
        # Keyframes at both ends; sometimes more leading frames known (context, or the short last window).
        with_prefix = torch.rand(batch, device=device) < self.config.renderer.known_prefix_probability
        prefix = torch.where(with_prefix, torch.randint(1, width - 1, (batch,), device=device), 1)
        frame = torch.arange(width, device=device)
        known = ((frame < prefix[:, None]) | (frame == width - 1)).float()[..., None, None, None]
        tokens, mask, pooled = text
        per_frame_pooled = pooled[:, None].expand(-1, width, -1)
        timesteps = self.diffusion.sample_timesteps((batch,), device=device)
        denoise = self._denoise_fn(self._concat(window, known), (tokens, mask, per_frame_pooled))
        return self.diffusion.training_loss(denoise, window, timesteps, weight=1.0 - known)

    # ---- generation ----------------------------------------------------------------------------------
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        prompts = cond.prompts_per_frame(num_videos, num_frames) or [[NULL_PROMPT] * num_frames] * num_videos
        num_context = 0 if cond.context is None else cond.context.shape[1]
        known = torch.zeros(num_videos, 0, *self.autoencoder.latent_shape, device=self.device)
        if cond.context is not None:
            known = self.autoencoder.encode_video(cond.context)
        positions = keyframe_positions(num_frames, self.keyframe_interval, num_context)
        keyframes = self.plan_keyframes(known, positions, prompts, generator)
        latents = self.render(keyframes, positions, num_frames, prompts, generator)
        videos = self.autoencoder.decode_video(latents)
        if cond.context is not None:
            # Context frames are observations, not samples: hand them back exactly as given.
            videos[:, :num_context] = cond.context
        return videos

    @torch.no_grad()
    def plan_keyframes(
        self, known: Tensor, positions: list[int], prompts: list[list[str]], generator: torch.Generator
    ) -> Tensor:
        """Keyframe latents `[B, len(positions), c, h, w]`; the first `known.shape[1]` are the given `known` latents.

        prompts `[B][num_frames]`: the prompt of every frame; each keyframe gets its frame's prompt.
        """
        return self.planner.generate(
            known,
            len(positions),
            generator,
            prompts=[[video[p] for p in positions] for video in prompts],
            encode_text=self._encode_prefix,
            codes=keyframe_codes(positions),
            max_input_frames=self.planner_window - 1,
            keep_frames=self.config.rollout_keep_keyframes,
            use_kv_cache=self.config.use_kv_cache,
        )

    @torch.no_grad()
    def render(
        self,
        keyframes: Tensor,
        positions: list[int],
        num_frames: int,
        prompts: list[list[str]],
        generator: torch.Generator,
    ) -> Tensor:
        """Latents `[B, num_frames, c, h, w]` with `keyframes` at `positions` and every other frame rendered.

        Windows that depend on no other window's frames are sampled together as one batch.
        """
        batch = keyframes.shape[0]
        latents = keyframes.new_zeros(batch, num_frames, *keyframes.shape[2:])
        latents[:, positions] = keyframes
        determined = torch.zeros(num_frames, dtype=torch.bool)
        determined[positions] = True
        group: list[tuple[int, int]] = []
        for window in render_windows(positions, self.keyframe_interval):
            start, end = window
            pending = {f for s, e in group for f in range(s, e + 1) if not determined[f]}
            same_length = not group or group[0][1] - group[0][0] == end - start
            if group and (pending & set(range(start, end + 1)) or not same_length):
                self._render_group(latents, determined, group, prompts, generator)
                group = []
            group.append(window)
        if group:
            self._render_group(latents, determined, group, prompts, generator)
        return latents

    def _render_group(
        self,
        latents: Tensor,
        determined: Tensor,
        windows: list[tuple[int, int]],
        prompts: list[list[str]],
        generator: torch.Generator,
    ) -> None:
        """Sample equal-length `windows` as one batch (window-major) and write their new frames into `latents`."""
        batch = latents.shape[0]
        frames = [list(range(start, end + 1)) for start, end in windows]
        values = torch.cat([latents[:, f] for f in frames])  # [W*B, width, c, h, w]
        mask = torch.cat([determined[f].float() for f in frames for _ in range(batch)]).to(values.device)
        mask = mask.view(len(frames) * batch, -1, 1, 1, 1)
        concat = self._concat(values, mask)
        window_prompts = [[video[i] for i in f] for f in frames for video in prompts]
        uncond_fn = None
        if any(p != NULL_PROMPT for row in window_prompts for p in row):
            null_prompts = [[NULL_PROMPT] * len(row) for row in window_prompts]
            uncond_fn = self._denoise_fn(concat, encode_prompts_per_frame(self.text_encoder, null_prompts))
        sample = self.diffusion.sample(
            self._denoise_fn(concat, encode_prompts_per_frame(self.text_encoder, window_prompts)),
            tuple(values.shape),
            generator,
            uncond_fn=uncond_fn,
            known=(values, mask),
            device=values.device,
            dtype=values.dtype,
        )
        for i, f in enumerate(frames):
            latents[:, f] = sample[i * batch : (i + 1) * batch]
            determined[f] = True
