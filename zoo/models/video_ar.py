"""video_ar: the pure autoregressive baseline. Every frame is VQ tokens, and one causal transformer predicts them all.

Paper idea: VideoGPT (Yan et al., 2021) / LVT (Rakhimov et al., 2020): a frozen VQ autoencoder turns each frame into
a grid of discrete codes, and a GPT-style transformer models the flattened code sequence, raster order within a
frame and frame after frame, with a next-token cross-entropy loss.

How the work divides: AR does everything, diffusion nothing. The text prompt is a prefix of token embeddings that
every position attends (classifier-free guidance mixes the logits of the prompt and the null prompt ""); context
frames are encoded to tokens and teacher-forced; sampling is token by token (temperature / top-k) with a KV cache.

Each input slot holds the previous token plus learned embeddings of the position of the token it predicts (cell
within the frame, frame within the view) on top of the transformer's rotary positions; with `text_to_slots` also the
prompt's pooled embedding (projected), a direct path from the prompt to every token, as `text_to_head` gives the
next-latent AR heads. Videos longer than a clip
slide a view of the last `clip_length - 1` frames; the cache is re-filled whenever the view slides or the prompt
changes (scripts re-prefix at segment boundaries), so every frame is written in the situation training showed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.components.ar import ARConfig, CausalTransformer, TokenSampling, TokenSlotEmbedding, write_frames
from zoo.components.autoencoder import load_autoencoder_for
from zoo.components.text import NULL_PROMPT, build_text_encoder, drop_prompts
from zoo.config import ConfigError
from zoo.interface import Conditioning, ModelConfig, VideoGenerator, autoencoder_field
from zoo.registry import register_model


@dataclass
class VideoARConfig(ModelConfig):
    """The VQ autoencoder, text encoder, transformer size and how tokens are sampled.

    text_dropout: share of training prompts replaced by "" (teaches the unconditional branch for guidance).
    guidance_scale: classifier-free guidance on the prompt (1 = none). temperature / top_k (0 = off): sampling.
    use_kv_cache: cached decoding; gives the same samples as the uncached reference, faster.
    text_to_slots: add the prompt's pooled embedding (projected) to every token slot's input, not only the prefix.
    """

    autoencoder: str = autoencoder_field("vq")
    text_encoder: str = "learned"
    text_dim: int = 64
    text_dropout: float = 0.1
    ar: ARConfig = field(default_factory=ARConfig)
    temperature: float = 1.0
    top_k: int = 0
    guidance_scale: float = 1.0
    use_kv_cache: bool = True
    text_to_slots: bool = False

    def __post_init__(self) -> None:
        if self.clip_length < 2:
            raise ConfigError(f"clip_length must be >= 2 (a sliding view needs history), got {self.clip_length}")
        if not 0.0 <= self.text_dropout <= 1.0:
            raise ConfigError(f"text_dropout must be a probability in [0, 1], got {self.text_dropout}")
        if self.temperature <= 0 or self.top_k < 0 or self.guidance_scale < 0:
            raise ConfigError(
                "need temperature > 0, top_k >= 0 (0 = off) and guidance_scale >= 0, got "
                f"{self.temperature}, {self.top_k} and {self.guidance_scale}"
            )


@register_model("video_ar", config=VideoARConfig)
class VideoAR(VideoGenerator):
    """VideoGPT-style next-token prediction over the VQ tokens of every frame, with a text prefix and a KV cache."""

    strategy = "pure_ar"
    prefix_consistent = True
    supported_conditions = frozenset({"text", "context", "script"})

    def __init__(self, config: VideoARConfig) -> None:
        super().__init__(config)
        self.autoencoder = load_autoencoder_for(config.autoencoder, config.channels, config.image_size, kind="vq")
        _, rows, cols = self.autoencoder.latent_shape
        self.tokens_per_frame = rows * cols
        if config.ar.max_positions < config.clip_length * self.tokens_per_frame + 64:
            raise ConfigError(
                f"ar.max_positions={config.ar.max_positions} cannot hold a text prefix plus {config.clip_length} frames "
                f"of {self.tokens_per_frame} tokens; raise it"
            )
        width = config.ar.dim
        self.text_encoder = build_text_encoder(config.text_encoder, config.text_dim)
        self.text_proj = nn.Linear(config.text_dim, width)
        codebook_size = self.autoencoder.codebook_size
        self.transformer = CausalTransformer(config.ar, vocab_size=codebook_size)
        self.slot_embed = TokenSlotEmbedding(codebook_size, self.tokens_per_frame, config.clip_length, width)
        self.text_to_slots = nn.Linear(config.text_dim, width) if config.text_to_slots else None

    def metadata(self) -> dict[str, Any]:
        """Base facts plus the sampling cost knobs the throughput report needs."""
        return {
            **super().metadata(),
            "tokens_per_frame": self.tokens_per_frame,
            "use_kv_cache": self.config.use_kv_cache,
            "guidance_scale": self.config.guidance_scale,
        }

    # ---- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> Tensor:
        """Next-token cross-entropy over the VQ tokens of a clip, prompts dropped to "" at `text_dropout`."""
        video = batch["video"][:, : self.clip_length]
        prompts = list(batch.get("text") or [NULL_PROMPT] * video.shape[0])
        prompts = drop_prompts(prompts, self.config.text_dropout)
        with torch.no_grad():
            stream = self.autoencoder.encode_video_tokens(video).flatten(1)  # [B, T*h*w], raster within a frame
        prefix, prefix_mask, slot_bias = self._prefix(prompts)
        inputs = torch.cat([prefix, self.slot_embed(stream, 0, stream.shape[1]) + slot_bias], dim=1)
        # Raster order: plain causal attention over tokens (block_size 1), after the bidirectional prefix.
        hidden, _ = self.transformer(inputs, prefix_len=prefix.shape[1], prefix_mask=prefix_mask)
        logits = self.transformer.token_head(hidden[:, prefix.shape[1] :])
        return F.cross_entropy(logits.flatten(0, 1), stream.flatten())

    # ---- generation ----------------------------------------------------------------------------------
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        prompts = cond.prompts_per_frame(num_videos, num_frames) or [[NULL_PROMPT] * num_frames] * num_videos
        tokens = torch.zeros(num_videos, 0, self.tokens_per_frame, dtype=torch.long, device=self.device)
        if cond.context is not None:
            tokens = self.autoencoder.encode_video_tokens(cond.context).flatten(2)
        num_known = tokens.shape[1]
        tokens = self.sample_tokens(tokens, num_frames, prompts, generator)
        new = tokens[:, num_known:].unflatten(2, self.autoencoder.latent_shape[1:])
        video = self.autoencoder.decode_video_tokens(new)
        if cond.context is not None:
            # Context frames are observations, not samples: hand them back exactly as given.
            video = torch.cat([cond.context, video], dim=1)
        return video

    @torch.no_grad()
    def sample_tokens(
        self, tokens: Tensor, num_frames: int, prompts: list[list[str]], generator: torch.Generator
    ) -> Tensor:
        """Extend tokens `[B, T0, h*w]` to `[B, num_frames, h*w]`, token by token, under prompts `[B][num_frames]`.

        The view is the last `clip_length - 1` frames plus the one being written; the KV cache lives until the view
        slides or the prompt changes. Guidance runs the prompt and the null prompt as one batch of 2B rows.
        """
        num_videos = tokens.shape[0]
        config = self.config

        def view_of(frame: int) -> tuple[int, tuple[str, ...]]:
            return max(0, frame - (self.clip_length - 1)), tuple(video[frame] for video in prompts)

        slot_bias: Tensor | float = 0.0  # the current view's prompt term, one row per stream

        def prefix_of(frame: int, start: int) -> tuple[Tensor, Tensor]:
            nonlocal slot_bias
            frame_prompts = [video[frame] for video in prompts]
            guided = config.guidance_scale != 1.0 and any(p != NULL_PROMPT for p in frame_prompts)
            streams = frame_prompts + [NULL_PROMPT] * num_videos if guided else frame_prompts
            prefix, mask, slot_bias = self._prefix(streams)
            return prefix, mask

        def embed_slots(stream: Tensor, first_slot: int, num_slots: int) -> Tensor:
            return self.slot_embed(stream, first_slot, num_slots) + slot_bias

        sampling = TokenSampling(config.temperature, config.top_k, config.guidance_scale, config.use_kv_cache)
        return write_frames(
            self.transformer, embed_slots, tokens, num_frames, view_of, prefix_of, self.clip_length, generator,
            sampling,
        )

    # ---- the transformer's inputs ------------------------------------------------------------------------
    def _prefix(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor | float]:
        """Text prefix `[B, L, dim]`, its mask `[B, L]` (True = real token) and what every token slot adds: the
        projected pooled prompt `[B, 1, dim]` with `text_to_slots`, else 0."""
        text, mask, pooled = self.text_encoder.encode(prompts)
        slot_bias = self.text_to_slots(pooled)[:, None] if self.text_to_slots is not None else 0.0
        return self.text_proj(text), mask, slot_bias
