"""interleaved_latent: frame-by-frame autoregression over continuous latents, each frame drawn by a diffusion head.

Paper idea: next-frame prediction with a diffusion head on continuous latents, as in MAR (Li et al. 2024, "Autoregressive
Image Generation without Vector Quantization") and NOVA (Deng et al. 2024, "Autoregressive Video Generation without
Vector Quantization"), with GameNGen-style context noise augmentation (Valevski et al. 2024) against drift.

How AR and diffusion divide the work: every frame is encoded by the frozen KL autoencoder into a latent `[c, h, w]`,
cut into patch tokens. A block-causal transformer reads `[text prefix][start block][frame 0]...[frame n-1]` (tokens of
a frame see each other, frames see only earlier frames) and emits one conditioning vector per token of frame n: the AR
model decides *what* comes next (layout, identity, motion). A small per-token diffusion head (AdaLN MLP) then denoises
each token of frame n from noise given its vector (trained with MAR's epsilon objective): diffusion models the
*continuous value*, so no quantization is needed. Generation iterates frame by frame, each new frame appended to the
KV cache as one block.

Conditions: text is the prefix (prompts dropped to "" in training for classifier-free guidance, used by the diffusion
head at sampling); context frames are encoded and placed as the first frames of the sequence; a script switches the
prompt at segment boundaries by re-filling the cache under the new prefix. Context noise augmentation: in training the
AR inputs get Gaussian noise of a random level (uniform up to `latent_ar.context_noise_train`), at sampling a fixed small
level (`latent_ar.context_noise_inference`), the level being an input too, so the model learns not to copy its own
errors forward. Videos longer than a clip slide the window: once `clip_length - 1` frames are in context, the cache is
re-filled from the last `rollout_keep_frames`, exactly like the start of a training clip.

Self-forcing option (exposure-bias fix): on `self_forcing_probability` of training steps the AR inputs of the first H
frames are the model's own no-grad, KV-cached rollout from the real first frame (its head sampled with
`self_forcing_steps` steps) instead of the ground-truth latents, and the diffusion-head loss is taken on the real frames
after them. This is scheduled sampling with the model's own rollouts, the training-side half of Self-Forcing / CausVid;
their distribution-matching (DMD) loss on the rollout itself is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zoo.components.latent_ar import NextLatentConfig, TextPrefix, build_latent_ar_parts
from zoo.components.text import NULL_PROMPT, drop_prompts
from zoo.config import ConfigError
from zoo.interface import Conditioning, ModelConfig, VideoGenerator, autoencoder_field
from zoo.registry import register_model


@dataclass
class InterleavedLatentConfig(ModelConfig):
    """Latent space, text encoder, next-latent AR (transformer, head, context noise), rollout and self-forcing knobs.

    use_kv_cache: append each new frame to the KV cache (True) or re-run the whole window every frame (False).
    rollout_keep_frames: frames kept in context when the window slides in a rollout longer than a clip.
    self_forcing_probability / self_forcing_steps: share of training steps whose first AR inputs are the model's own
    rollout, and the head's sampling steps per frame of that rollout.
    """

    autoencoder: str = autoencoder_field("kl")
    text_encoder: str = "learned"
    text_dim: int = 64
    text_dropout: float = 0.1
    use_kv_cache: bool = True
    rollout_keep_frames: int = 4
    self_forcing_probability: float = 0.0
    self_forcing_steps: int = 2
    latent_ar: NextLatentConfig = field(default_factory=NextLatentConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.rollout_keep_frames < self.clip_length:
            raise ConfigError(
                f"rollout_keep_frames ({self.rollout_keep_frames}) must be in "
                f"[1, clip_length - 1 = {self.clip_length - 1}]"
            )
        if not 0.0 <= self.self_forcing_probability <= 1.0:
            raise ConfigError(f"self_forcing_probability must be in [0, 1], got {self.self_forcing_probability}")
        if self.self_forcing_probability > 0 and self.clip_length < 3:
            raise ConfigError("self-forcing needs clip_length >= 3 (a rolled-out frame and a frame after it)")
        if self.self_forcing_steps < 1:
            raise ConfigError(f"self_forcing_steps must be >= 1, got {self.self_forcing_steps}")


@register_model("interleaved_latent", config=InterleavedLatentConfig)
class InterleavedLatent(VideoGenerator):
    """Block-causal AR over KL latents with a per-token diffusion head; text, context and script conditioning."""

    strategy = "interleaved_latent"
    prefix_consistent = True
    supported_conditions = frozenset({"text", "context", "script"})

    def __init__(self, config: InterleavedLatentConfig) -> None:
        super().__init__(config)
        self.autoencoder, self.text_encoder, self.latent_ar = build_latent_ar_parts(config, config.latent_ar)

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
        """Next-latent diffusion loss over the clip's frames (inputs noise-augmented); teacher-forced, or on
        self-forcing steps after a history the model rolled out itself."""
        with torch.no_grad():
            latents = self.autoencoder.encode_video(batch["video"])
        prompts = drop_prompts(list(batch["text"]), self.config.text_dropout)
        history = None
        probability = self.config.self_forcing_probability
        # No random draw at probability 0, so turning the option off leaves training exactly as it was.
        if self.training and probability > 0 and torch.rand(()) < probability:
            history = self._rollout_history(latents, prompts)
        loss = self.latent_ar.loss(latents, self._encode_text(prompts), history=history)
        return {"loss": loss}

    @torch.no_grad()
    def _rollout_history(self, latents: Tensor, prompts: list[str]) -> Tensor:
        """The model's own first H frames (H uniform in [2, T - 1]): frame 0 from data, the rest its few-step,
        KV-cached rollout under the clip's prompt (no guidance), as at sampling time."""
        num_history = int(torch.randint(2, latents.shape[1], ()))
        generator = torch.Generator(device=self.device).manual_seed(int(torch.randint(2**62, ())))
        return self.latent_ar.generate(
            latents[:, :1],
            num_history,
            generator,
            prompts=[[prompt] * num_history for prompt in prompts],
            encode_text=self._encode_text,
            max_input_frames=self.clip_length - 1,
            keep_frames=self.config.rollout_keep_frames,
            guidance_scale=1.0,
            sampling_steps=self.config.self_forcing_steps,
        )

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
