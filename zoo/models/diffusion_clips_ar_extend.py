"""diffusion_clips_ar_extend: a diffusion model writes the opening clip, a token AR model extends it.

Paper idea: the "diffusion keyframe/clip, autoregressive continuation" split of hybrid generators. A latent video
diffusion model (VDM / Latte-style factorized space-time DiT in the latent space of a frozen KL autoencoder,
text cross-attention, classifier-free guidance) samples the first `clip_length` frames jointly; a VideoGPT / LVT-style
causal transformer over the VQ tokens of every frame (raster order within a frame, frame after frame, text as a prefix)
then extends the clip frame by frame with a KV cache, looking at a sliding window of the last frames.

Why divide the work this way: the opening clip is what a viewer judges first and what every later frame is
conditioned on, so it gets the expensive, globally coherent sampler (all frames denoised together, guidance on the
prompt); continuation is local (the next frame follows from the last few) and is where the cost of a long video
lies, so it gets the cheap one (one transformer step per token, cached). The two parts live in different latent
spaces (continuous KL latents vs discrete VQ codes); pixel frames are the common currency: the diffusion clip is
decoded to pixels and VQ-encoded as the AR's context, exactly as caller-given context frames are. Each part can thus
use the latent space it models best, and either can be swapped without retraining the other's autoencoder.

Interpolation between two clips: with `end_context`, the first `end_prefix_frames` frames of the end clip are VQ
tokens in the AR's prefix (after the text, attended by every position), placed at their true frame position in the
AR's view of `clip_length` frames; training puts the clip's own last frames there for a random share
(`end_probability`) of the batches. The end clip enters the view once it fits beside `end_view_history` frames of
history (`ar_view`); the output ends with the end clip verbatim. With an end clip, the opening clip covers at most
half of the gap, so the AR, which sees the end clip, writes the approach (`opening_length`).

Training: both parts learn jointly on data clips (loss = diffusion + `ar_loss_weight` * AR cross-entropy, the AR
term on every `ar_every_n_steps`-th step: how a compute budget is split between the parts). The
denoiser learns with random known first frames (channel-concat + mask), so caller context also conditions the
opening clip; prompts are dropped for guidance. Scripts: the denoiser takes a prompt per frame; the AR re-prefixes
(re-fills its cache) when the prompt of the frame it writes changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.components.ar import ARConfig, CausalTransformer, TokenSampling, TokenSlotEmbedding, write_frames
from zoo.components.autoencoder import load_autoencoder_for
from zoo.components.denoiser import LatentVideoDenoiser
from zoo.components.sampling import DiffusionConfig, DiffusionProcess
from zoo.components.text import NULL_PROMPT, build_text_encoder, drop_prompts, encode_prompts_per_frame
from zoo.config import ConfigError
from zoo.interface import Conditioning, ModelConfig, VideoGenerator, autoencoder_field, training_flops
from zoo.registry import register_model


@dataclass
class DiffusionClipsARExtendConfig(ModelConfig):
    """Latent spaces, the diffusion part (denoiser_*, diffusion), the AR part (ar, sampling) and how they train.

    context_probability: share of training clips whose denoiser gets known first frames (count uniform in [1, T-1]).
    end_prefix_frames: end-clip frames the AR sees as prefix; end_probability: share of AR batches trained with one.
    end_view_history: frames of history the AR's view keeps once the end clip joins it (the rest is gap + end clip).
    temperature / top_k (0 = off): AR token sampling. use_kv_cache: cached decoding (same samples, faster).
    ar_every_n_steps: the AR part trains on every n-th step only, how a compute budget is split between the parts
    (its next-token step costs more than the denoiser's); skipped steps give its weights no gradient, so under DDP
    they need `strategy: ddp_find_unused_parameters_true`.
    """

    kl_autoencoder: str = autoencoder_field("kl")
    vq_autoencoder: str = autoencoder_field("vq")
    text_encoder: str = "learned"
    text_dim: int = 64
    text_dropout: float = 0.1
    # diffusion part
    denoiser_dim: int = 96
    denoiser_depth: int = 2
    denoiser_heads: int = 4
    denoiser_conv_width: int = 0
    denoiser_conv_depth: int = 1
    patch_size: int = 2
    mlp_ratio: float = 4.0
    context_probability: float = 0.5
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # AR part
    ar: ARConfig = field(default_factory=ARConfig)
    end_prefix_frames: int = 2
    end_probability: float = 0.5
    end_view_history: int = 2
    temperature: float = 1.0
    top_k: int = 0
    use_kv_cache: bool = True
    ar_loss_weight: float = 1.0
    ar_every_n_steps: int = 1

    def __post_init__(self) -> None:
        if self.clip_length < 2:
            raise ConfigError(f"clip_length must be >= 2 (the AR needs history), got {self.clip_length}")
        if not 1 <= self.end_prefix_frames < self.clip_length:
            raise ConfigError(
                f"end_prefix_frames ({self.end_prefix_frames}) must be in [1, clip_length - 1 = {self.clip_length - 1}]"
            )
        room = self.clip_length - self.end_prefix_frames - 1
        if not 1 <= self.end_view_history <= room:
            raise ConfigError(
                f"end_view_history ({self.end_view_history}) must be in [1, clip_length - end_prefix_frames - 1 = {room}]"
            )
        for name in ("text_dropout", "context_probability", "end_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.ar_every_n_steps < 1:
            raise ConfigError(f"ar_every_n_steps must be >= 1 (1: the AR trains every step), got {self.ar_every_n_steps}")
        if self.temperature <= 0 or self.top_k < 0:
            raise ConfigError(f"need temperature > 0 and top_k >= 0 (0 = off), got {self.temperature} and {self.top_k}")


def opening_length(num_context: int, end_start: int, clip_length: int, has_end: bool) -> int:
    """Frames `[0, n)` the diffusion part is responsible for (given context included); the AR writes `[n, end_start)`.

    No diffusion when the context already fills a clip. With an end clip the opening covers at most half of the gap,
    so the AR, which sees the end clip, writes the approach.
    """
    if num_context >= clip_length:
        return num_context
    if not has_end:
        return min(clip_length, end_start)
    return min(clip_length, num_context + max(1, (end_start - num_context) // 2))


def ar_view(frame: int, end_start: int, num_end: int, clip_length: int, history: int) -> tuple[int, bool]:
    """(first frame of the AR's view, whether the end clip is in it) for writing `frame`.

    The view spans `clip_length` frames, as in training. Without an end clip (`num_end` = 0) or while it is far, it is
    the sliding window of the last `clip_length - 1` frames. The end clip's `num_end` frames join once they fit in the
    view beside `history` frames of history; the view is then pinned so they sit at its end, as in training.
    """
    pinned = max(0, end_start + num_end - clip_length)
    if num_end and frame - pinned >= min(frame, history):
        return pinned, True
    return max(0, frame - (clip_length - 1)), False


@register_model("diffusion_clips_ar_extend", config=DiffusionClipsARExtendConfig)
class DiffusionClipsARExtend(VideoGenerator):
    """Latent video diffusion for the opening clip, then VQ-token AR extension / interpolation with a KV cache."""

    strategy = "diffusion_clips_ar_extend"
    prefix_consistent = True
    supported_conditions = frozenset({"text", "context", "script", "end_context"})

    def __init__(self, config: DiffusionClipsARExtendConfig) -> None:
        super().__init__(config)
        self.kl_autoencoder = load_autoencoder_for(config.kl_autoencoder, config.channels, config.image_size, kind="kl")
        self.vq_autoencoder = load_autoencoder_for(config.vq_autoencoder, config.channels, config.image_size, kind="vq")
        self.text_encoder = build_text_encoder(config.text_encoder, config.text_dim)

        # Diffusion part: the denoiser over KL latents of a whole clip.
        self.denoiser = LatentVideoDenoiser.text_conditioned(
            self.kl_autoencoder.latent_shape, config.text_dim, patch_size=config.patch_size, dim=config.denoiser_dim, depth=config.denoiser_depth,
            num_heads=config.denoiser_heads, mlp_ratio=config.mlp_ratio, known_frames=True,
            conv_width=config.denoiser_conv_width, conv_depth=config.denoiser_conv_depth,
        )
        self.diffusion = DiffusionProcess(config.diffusion)

        # AR part: a causal transformer over VQ tokens; inputs are the previous token plus the position of the
        # token being predicted (cell within the frame, frame within the view).
        _, token_rows, token_cols = self.vq_autoencoder.latent_shape
        self.tokens_per_frame = token_rows * token_cols
        width = config.ar.dim
        self.ar = CausalTransformer(config.ar, vocab_size=self.vq_autoencoder.codebook_size)
        codebook_size = self.vq_autoencoder.codebook_size
        self.slot_embed = TokenSlotEmbedding(codebook_size, self.tokens_per_frame, config.clip_length, width)
        self.text_proj = nn.Linear(config.text_dim, width)
        self.end_marker = nn.Parameter(torch.randn(width) * 0.02)  # tells end-clip prefix tokens from context

    def metadata(self) -> dict[str, Any]:
        """Base facts plus the sampling cost knobs the throughput report needs."""
        return {
            **super().metadata(),
            "num_sampling_steps": self.diffusion.num_sampling_steps,
            "guidance_scale": self.config.diffusion.guidance_scale,
            "tokens_per_frame": self.tokens_per_frame,
            "use_kv_cache": self.config.use_kv_cache,
        }

    # ---- training ------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Both parts on the same clips: denoising loss on KL latents + next-token cross-entropy on VQ tokens (the
        latter on every `ar_every_n_steps`-th step)."""
        video = batch["video"]
        prompts = drop_prompts(list(batch["text"]), self.config.text_dropout, None)
        diffusion_loss = self._diffusion_loss(video, prompts)
        losses = {"loss": diffusion_loss, "diffusion": diffusion_loss.detach()}
        if self.global_step % self.config.ar_every_n_steps == 0:  # by step, so every DDP rank decides alike
            ar_loss = self._ar_loss(video, prompts)
            losses["loss"] = diffusion_loss + self.config.ar_loss_weight * ar_loss
            losses["ar"] = ar_loss.detach()
        return losses

    def training_flops_per_step(self, batch: dict[str, Any]) -> float:
        """The mean over `ar_every_n_steps` steps: the denoiser's every step, the AR part's on one of them."""
        video, prompts = batch["video"], list(batch["text"])
        return (training_flops(self, lambda: self._diffusion_loss(video, prompts))
                + training_flops(self, lambda: self._ar_loss(video, prompts)) / self.config.ar_every_n_steps)

    def _diffusion_loss(self, video: Tensor, prompts: list[str]) -> Tensor:
        """Denoising loss on the frames not given as context (a random number of known first frames per clip)."""
        batch_size, frames = video.shape[:2]
        with torch.no_grad():
            latents = self.kl_autoencoder.encode_video(video)
        has_context = torch.rand(batch_size, device=self.device) < self.config.context_probability
        num_known = torch.randint(1, frames, (batch_size,), device=self.device) * has_context
        known = (torch.arange(frames, device=self.device) < num_known[:, None]).float()[..., None, None, None]
        text = encode_prompts_per_frame(self.text_encoder, [[prompt] * frames for prompt in prompts])
        timesteps = self.diffusion.sample_timesteps((batch_size,), device=self.device)
        denoise = self._denoise_fn(_concat(latents, known), text)
        return self.diffusion.training_loss(denoise, latents, timesteps, weight=1.0 - known)

    def _ar_loss(self, video: Tensor, prompts: list[str]) -> Tensor:
        """Next-token cross-entropy over the clip's VQ tokens; some batches move the clip's last frames to the prefix.

        Those batches are also cut to a random length, so the end clip is seen at every position of the view.
        """
        with torch.no_grad():
            tokens = self.vq_autoencoder.encode_video_tokens(video).flatten(2)  # [B, T, h*w]
        end_tokens = None
        frames = tokens.shape[1]
        if frames > 1 and torch.rand(()).item() < self.config.end_probability:
            num_end = int(torch.randint(1, min(self.config.end_prefix_frames, frames - 1) + 1, ()))
            length = int(torch.randint(num_end + 1, frames + 1, ()))
            end_tokens, tokens = tokens[:, length - num_end : length], tokens[:, : length - num_end]
        prefix, prefix_mask = self._ar_prefix(prompts, end_tokens, end_position=tokens.shape[1])
        stream = tokens.flatten(1)
        inputs = torch.cat([prefix, self.slot_embed(stream, 0, stream.shape[1])], dim=1)
        # Raster order: plain causal attention over tokens (block_size 1), after the bidirectional prefix.
        hidden, _ = self.ar(inputs, prefix_len=prefix.shape[1], prefix_mask=prefix_mask)
        logits = self.ar.token_head(hidden[:, prefix.shape[1] :])
        return F.cross_entropy(logits.flatten(0, 1), stream.flatten())

    # ---- generation ----------------------------------------------------------------------------------
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        prompts = cond.prompts_per_frame(num_videos, num_frames) or [[NULL_PROMPT] * num_frames] * num_videos
        end_start = num_frames - (0 if cond.end_context is None else cond.end_context.shape[1])
        video = cond.context if cond.context is not None else self._empty_video(num_videos)
        opening = opening_length(video.shape[1], end_start, self.clip_length, cond.end_context is not None)
        if opening > video.shape[1]:
            # The clip is sampled at its training length and cut, so the denoiser sees what it was trained on.
            clip_prompts = [
                (video_prompts + video_prompts[-1:] * self.clip_length)[: self.clip_length] for video_prompts in prompts
            ]
            video = self.sample_opening_clip(clip_prompts, cond.context, generator)[:, :opening]
        if end_start > video.shape[1]:
            video = torch.cat([video, self.extend(video, end_start, prompts, cond.end_context, generator)], dim=1)
        if cond.end_context is not None:
            video = torch.cat([video, cond.end_context], dim=1)
        return video

    def _empty_video(self, num_videos: int) -> Tensor:
        return torch.zeros(num_videos, 0, *self.frame_size, device=self.device)

    # ---- the diffusion part --------------------------------------------------------------------------
    @torch.no_grad()
    def sample_opening_clip(
        self, prompts: list[list[str]], context: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        """The diffusion part alone: a clip `[B, clip_length, C, H, W]` in [0, 1] for prompts `[B][clip_length]`.

        `context` `[B, T0, C, H, W]` (T0 < clip_length), if given, conditions the clip and is returned verbatim.
        """
        num_videos, frames = len(prompts), self.clip_length
        if any(len(video) != frames for video in prompts):
            raise ValueError(f"sample_opening_clip needs one prompt per frame of the clip ({frames}) for every video")
        shape = (num_videos, frames, *self.kl_autoencoder.latent_shape)
        values = torch.zeros(shape, device=self.device)
        mask = torch.zeros(num_videos, frames, 1, 1, 1, device=self.device)
        num_known = 0 if context is None else context.shape[1]
        if num_known:
            values[:, :num_known] = self.kl_autoencoder.encode_video(context)
            mask[:, :num_known] = 1.0
        concat = _concat(values, mask)
        uncond_fn = None
        if any(prompt != NULL_PROMPT for video in prompts for prompt in video):
            null_prompts = [[NULL_PROMPT] * frames] * num_videos
            uncond_fn = self._denoise_fn(concat, encode_prompts_per_frame(self.text_encoder, null_prompts))
        latents = self.diffusion.sample(
            self._denoise_fn(concat, encode_prompts_per_frame(self.text_encoder, prompts)),
            shape,
            generator,
            uncond_fn=uncond_fn,
            known=(values, mask) if num_known else None,
            device=values.device,
            dtype=values.dtype,
        )
        clip = self.kl_autoencoder.decode_video(latents)
        if num_known:
            # Context frames are observations, not samples: hand them back exactly as given.
            clip[:, :num_known] = context
        return clip

    def _denoise_fn(self, concat: Tensor, text: tuple[Tensor, Tensor, Tensor]):
        tokens, mask, pooled = text
        return lambda x_t, t: self.denoiser(x_t, t, concat, tokens, mask, pooled)

    # ---- the AR part ---------------------------------------------------------------------------------
    @torch.no_grad()
    def extend(
        self,
        video: Tensor,
        end_start: int,
        prompts: list[list[str]],
        end_context: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """The AR part alone: frames `[T, end_start)` continuing `video` `[B, T, C, H, W]`, as pixels in [0, 1].

        `prompts` `[B][>= end_start]` is the prompt per frame; `end_context`, if given, is the clip that starts at
        frame `end_start` and conditions the frames before it.
        """
        num_videos, known = video.shape[:2]
        tokens = self.vq_autoencoder.encode_video_tokens(video).flatten(2)
        end_tokens = None
        if end_context is not None:
            # The end clip's first frames are the ones the gap must lead into.
            end_frames = end_context[:, : self.config.end_prefix_frames]
            end_tokens = self.vq_autoencoder.encode_video_tokens(end_frames).flatten(2)
        tokens = self._write_frames(tokens, end_start, prompts, end_tokens, generator)
        new = tokens[:, known:].reshape(num_videos, end_start - known, *self.vq_autoencoder.latent_shape[1:])
        return self.vq_autoencoder.decode_video_tokens(new)

    def _write_frames(
        self,
        tokens: Tensor,
        end_start: int,
        prompts: list[list[str]],
        end_tokens: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Tokens `[B, T, h*w]` extended to `[B, end_start, h*w]`, token by token within a frame, frame by frame.

        The KV cache lives until the view slides, the end clip joins it, or the prompt changes (`ar_view`).
        """
        num_end = 0 if end_tokens is None else end_tokens.shape[1]

        def view_of(frame: int) -> tuple[int, tuple[bool, tuple[str, ...]]]:
            start, with_end = ar_view(frame, end_start, num_end, self.clip_length, self.config.end_view_history)
            return start, (with_end, tuple(video[frame] for video in prompts))

        def prefix_of(frame: int, start: int) -> tuple[Tensor, Tensor]:
            with_end = view_of(frame)[1][0]
            frame_prompts = [video[frame] for video in prompts]
            return self._ar_prefix(frame_prompts, end_tokens if with_end else None, end_position=end_start - start)

        config = self.config
        sampling = TokenSampling(config.temperature, config.top_k, use_kv_cache=config.use_kv_cache)
        return write_frames(
            self.ar, self.slot_embed, tokens, end_start, view_of, prefix_of, self.clip_length, generator, sampling
        )

    def _ar_prefix(self, prompts: list[str], end_tokens: Tensor | None, end_position: int) -> tuple[Tensor, Tensor]:
        """AR prefix `[B, P, dim]` and its mask: the text tokens, then the end clip's tokens (if any) at frame
        positions `end_position, end_position + 1, ...` of the view."""
        text, text_mask, _ = self.text_encoder.encode(prompts)
        parts, masks = [self.text_proj(text)], [text_mask]
        if end_tokens is not None:
            num_end = end_tokens.shape[1]
            first = end_position * self.tokens_per_frame  # the end clip's tokens sit at their own view positions
            slots = torch.arange(first, first + num_end * self.tokens_per_frame, device=end_tokens.device)
            slots = slots.view(num_end, self.tokens_per_frame)
            end = self.slot_embed.token(end_tokens) + self.slot_embed.position(slots) + self.end_marker
            parts.append(end.flatten(1, 2))
            masks.append(torch.ones(end.shape[0], num_end * self.tokens_per_frame, dtype=torch.bool, device=end.device))
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)


def _concat(known: Tensor, mask: Tensor) -> Tensor:
    """Channel-concat input of the denoiser: known latents (zero elsewhere) and the known-mask as one extra channel."""
    return torch.cat([known * mask, mask.expand(*known.shape[:2], 1, *known.shape[3:])], dim=2)
