"""interleaved_latent: frame-by-frame autoregression over continuous latents, each frame drawn by a diffusion head.

Paper idea: next-frame prediction with a diffusion head on continuous latents, as in MAR (Li et al. 2024, "Autoregressive
Image Generation without Vector Quantization") and NOVA (Deng et al. 2024, "Autoregressive Video Generation without
Vector Quantization"), with GameNGen-style context noise augmentation (Valevski et al. 2024) against drift.

How AR and diffusion divide the work: every frame is encoded by the frozen KL autoencoder into a latent `[c, h, w]`,
cut into patch tokens. A block-causal transformer reads `[text prefix][start block][frame 0]...[frame n-1]` (tokens of
a frame see each other, frames see only earlier frames) and emits one conditioning vector per token of frame n: the AR
model decides *what* comes next (layout, identity, motion). A small per-token diffusion head (AdaLN MLP) then denoises
each token of frame n from noise given its vector (trained with MAR's epsilon objective): diffusion models the
*continuous value*, so no quantization is needed. Generation iterates frame by frame, each new frame appended to the KV cache as one block.

Conditions: text is the prefix (prompts dropped to "" in training for classifier-free guidance, used by the diffusion
head at sampling); context frames are encoded and placed as the first frames of the sequence; a script switches the
prompt at segment boundaries by re-filling the cache under the new prefix. Context noise augmentation: in training the
AR inputs get Gaussian noise of a random level (uniform up to `latent_ar.context_noise_train`), at sampling a fixed small
level (`latent_ar.context_noise_inference`), the level being an input too, so the model learns not to copy its own
errors forward. Videos longer than a clip slide the window: once `clip_length - 1` frames are in context, the cache is
re-filled from the last `rollout_keep_frames`, exactly like the start of a training clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zoo.components.autoencoder import load_autoencoder
from zoo.components.latent_ar import NextLatentAR, NextLatentConfig, TextPrefix
from zoo.components.text import NULL_PROMPT, build_text_encoder, drop_prompts
from zoo.config import ConfigError
from zoo.interface import Conditioning, ModelConfig, VideoGenerator
from zoo.registry import register_model


@dataclass
class InterleavedLatentConfig(ModelConfig):
    """Latent space, text encoder, next-latent AR (transformer, diffusion head, context noise) and rollout knobs.

    use_kv_cache: append each new frame to the KV cache (True) or re-run the whole window every frame (False).
    rollout_keep_frames: frames kept in context when the window slides in a rollout longer than a clip.
    """

    autoencoder: str = "moving_digits_kl"
    text_encoder: str = "learned"
    text_dim: int = 64
    text_dropout: float = 0.1
    use_kv_cache: bool = True
    rollout_keep_frames: int = 4
    latent_ar: NextLatentConfig = field(default_factory=NextLatentConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.rollout_keep_frames < self.clip_length:
            raise ConfigError(
                f"rollout_keep_frames ({self.rollout_keep_frames}) must be in [1, clip_length - 1 = {self.clip_length - 1}]"
            )


@register_model("interleaved_latent", config=InterleavedLatentConfig)
class InterleavedLatent(VideoGenerator):
    """Block-causal AR over KL latents with a per-token diffusion head; text, context and script conditioning."""

    strategy = "interleaved_latent"
    supported_conditions = frozenset({"text", "context", "script"})

    def __init__(self, config: InterleavedLatentConfig) -> None:
        super().__init__(config)
        self.autoencoder = load_autoencoder(config.autoencoder)
        ae_config = self.autoencoder.config
        if (ae_config.kind, ae_config.channels, ae_config.image_size) != ("kl", config.channels, config.image_size):
            raise ConfigError(
                f"autoencoder '{config.autoencoder}' is a {ae_config.kind} one for {ae_config.channels}x"
                f"{ae_config.image_size}px frames; this model needs a kl autoencoder for {config.channels}x"
                f"{config.image_size}px frames (e.g. moving_digits_kl)"
            )
        self.text_encoder = build_text_encoder(config.text_encoder, config.text_dim)
        self.latent_ar = NextLatentAR(config.latent_ar, self.autoencoder.latent_shape, text_dim=config.text_dim)

    def metadata(self) -> dict[str, Any]:
        """Base facts plus the sampling cost knobs the throughput report needs."""
        return {
            **super().metadata(),
            "num_sampling_steps": self.config.latent_ar.diffusion.num_sampling_steps,
            "guidance_scale": self.config.latent_ar.diffusion.guidance_scale,
            "use_kv_cache": self.config.use_kv_cache,
            "context_noise_inference": self.config.latent_ar.context_noise_inference,
        }

    def _encode_text(self, prompts: list[str]) -> TextPrefix:
        tokens, mask, _ = self.text_encoder.encode(prompts)
        return tokens, mask

    # ---- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Teacher-forced next-latent diffusion loss over every frame of the clip (inputs noise-augmented)."""
        with torch.no_grad():
            latents = self.autoencoder.encode_video(batch["video"])
        prompts = drop_prompts(list(batch["text"]), self.config.text_dropout)
        loss = self.latent_ar.loss(latents, self._encode_text(prompts))
        return {"loss": loss}

    # ---- generation ----------------------------------------------------------------------------------
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        prompts = cond.prompts_per_frame(num_videos, num_frames) or [[NULL_PROMPT] * num_frames] * num_videos
        known = torch.zeros(num_videos, 0, *self.autoencoder.latent_shape, device=self.device)
        if cond.context is not None:
            known = self.autoencoder.encode_video(cond.context)
        latents = self.latent_ar.generate(
            known,
            num_frames,
            generator,
            prompts=prompts,
            encode_text=self._encode_text,
            max_input_frames=self.clip_length - 1,
            keep_frames=self.config.rollout_keep_frames,
            use_kv_cache=self.config.use_kv_cache,
        )
        videos = self.autoencoder.decode_video(latents)
        if cond.context is not None:
            # Context frames are observations, not samples: hand them back exactly as given.
            videos[:, : cond.context.shape[1]] = cond.context
        return videos
