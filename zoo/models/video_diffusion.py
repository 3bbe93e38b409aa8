"""video_diffusion: latent video diffusion over whole clips (the pure-diffusion baseline).

Paper idea: Video Diffusion Models (Ho et al. 2022) in the latent space of a frozen per-frame autoencoder
(latent video diffusion, as in Latte / Align-your-Latents), with a factorized space-time transformer denoiser.
Work division: diffusion does everything; there is no autoregressive model. Every frame of a window is denoised
jointly from noise; text enters by cross-attention (tokens) and AdaLN (pooled vector), with classifier-free guidance
learned by dropping prompts in training. Known frames enter by channel-concat of their latents plus a mask channel;
training draws a random number of known first frames, so one network does unconditional generation, context
continuation and window extension (masked conditioning as in MCVD, Voleti et al. 2022, rather than VDM's
reconstruction guidance). Videos longer than a clip are made by sliding windows: each next window is conditioned on
the last `extension_context` frames of the previous one, with every frame's prompt taken from the script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from zoo.components.latent_diffusion import LatentDiffusionConfig, build_latent_diffusion, still_videos
from zoo.components.sampling import DenoiseFn
from zoo.components.text import NULL_PROMPT, drop_prompts, encode_prompts_per_frame
from zoo.interface import Conditioning, VideoGenerator
from zoo.registry import register_model


@dataclass
class VideoDiffusionConfig(LatentDiffusionConfig):
    """The baseline's knobs: those of every latent diffusion model, and its conditioning schedule.

    context_probability: share of training clips that get known first frames (their count is uniform in [1, T-1]).
    """

    context_probability: float = 0.5


@register_model("video_diffusion", config=VideoDiffusionConfig)
class VideoDiffusion(VideoGenerator):
    """Latent video diffusion with text, context and script conditioning; extends by sliding windows."""

    strategy = "pure_diffusion"
    prefix_consistent = True
    supported_conditions = frozenset({"text", "context", "script"})

    def __init__(self, config: VideoDiffusionConfig) -> None:
        super().__init__(config)
        self.autoencoder, self.text_encoder, self.denoiser, self.diffusion = build_latent_diffusion(
            config, known_frames=True)

    def metadata(self) -> dict[str, Any]:
        """Base facts plus the sampling cost knobs the throughput report needs."""
        return {
            **super().metadata(),
            "num_sampling_steps": self.diffusion.num_sampling_steps,
            "guidance_scale": self.config.diffusion.guidance_scale,
        }

    # ---- conditioning -----------------------------------------------------------------------------------
    @staticmethod
    def _concat(known: Tensor, mask: Tensor) -> Tensor:
        """Channel-concat input: known latents (zero elsewhere) and the known-mask as one extra channel."""
        return torch.cat([known * mask, mask.expand(*known.shape[:2], 1, *known.shape[3:])], dim=2)

    def _denoise_fn(self, concat: Tensor, text: tuple[Tensor, Tensor, Tensor]) -> DenoiseFn:
        tokens, mask, pooled = text
        return lambda x_t, t: self.denoiser(x_t, t, concat, tokens, mask, pooled)

    # ---- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> Tensor:
        """Denoising loss on the frames that are not given as context (random context length per clip)."""
        video = batch["video"]
        batch_size, frames = video.shape[:2]
        with torch.no_grad():
            latents = self.autoencoder.encode_video(video)
        has_context = torch.rand(batch_size, device=self.device) < self.config.context_probability
        num_known = torch.randint(1, frames, (batch_size,), device=self.device) * has_context
        known = (torch.arange(frames, device=self.device) < num_known[:, None]).float()[..., None, None, None]
        prompts = drop_prompts(list(batch["text"]), self.config.text_dropout, None)
        text = encode_prompts_per_frame(self.text_encoder, [[prompt] * frames for prompt in prompts])
        timesteps = self.diffusion.sample_timesteps((batch_size,), device=self.device)
        denoise = self._denoise_fn(self._concat(latents, known), text)
        loss = self.diffusion.training_loss(denoise, latents, timesteps, weight=1.0 - known)
        stills = still_videos(batch, self.autoencoder, self.text_encoder, self.config.text_dropout) \
            if self.config.stills_per_clip else None
        if stills is not None:
            latents, text = stills
            nothing_known = latents.new_zeros(latents.shape[0], 1, 1, 1, 1)
            timesteps = self.diffusion.sample_timesteps((latents.shape[0],), device=self.device)
            loss = loss + self.diffusion.training_loss(
                self._denoise_fn(self._concat(latents, nothing_known), text), latents, timesteps)
        return loss

    # ---- generation ----------------------------------------------------------------------------------
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        prompts = cond.prompts_per_frame(num_videos, num_frames) or [[NULL_PROMPT] * num_frames] * num_videos
        latents = torch.zeros(num_videos, 0, *self.autoencoder.latent_shape, device=self.device)
        if cond.context is not None:
            latents = self.autoencoder.encode_video(cond.context)
        first_window = True
        while latents.shape[1] < num_frames:
            # The first window keeps all the context it can; later windows overlap the previous by extension_context.
            overlap = self.clip_length - 1 if first_window else self.config.extension_context
            num_known = min(latents.shape[1], overlap)
            num_new = min(self.clip_length - num_known, num_frames - latents.shape[1])
            start = latents.shape[1] - num_known
            window_prompts = [video[start : start + num_known + num_new] for video in prompts]
            window = self._sample_window(latents[:, start:], num_new, window_prompts, generator)
            latents = torch.cat([latents, window[:, num_known:]], dim=1)
            first_window = False
        videos = self.autoencoder.decode_video(latents)
        if cond.context is not None:
            # Context frames are observations, not samples: hand them back exactly as given.
            videos[:, : cond.context.shape[1]] = cond.context
        return videos

    def _sample_window(
        self, known_latents: Tensor, num_new: int, prompts: list[list[str]], generator: torch.Generator
    ) -> Tensor:
        """Latents `[B, K + num_new, c, h, w]` whose first K frames are `known_latents`, by guided sampling."""
        batch_size, num_known = known_latents.shape[:2]
        shape = (batch_size, num_known + num_new, *self.autoencoder.latent_shape)
        values = known_latents.new_zeros(shape)
        values[:, :num_known] = known_latents
        mask = torch.zeros(batch_size, shape[1], 1, 1, 1, device=values.device)
        mask[:, :num_known] = 1.0
        concat = self._concat(values, mask)
        has_text = any(p != NULL_PROMPT for video in prompts for p in video)
        uncond_fn = None
        if has_text:
            null = [[NULL_PROMPT] * shape[1]] * batch_size
            uncond_fn = self._denoise_fn(concat, encode_prompts_per_frame(self.text_encoder, null))
        return self.diffusion.sample(
            self._denoise_fn(concat, encode_prompts_per_frame(self.text_encoder, prompts)),
            shape,
            generator,
            uncond_fn=uncond_fn,
            known=(values, mask) if num_known else None,
            device=values.device,
            dtype=values.dtype,
        )
