"""Next-latent autoregression: a block-causal transformer over per-frame continuous latents whose outputs condition a
per-token diffusion head (MAR, Li et al. 2024; NOVA, Deng et al. 2024).

A frame's latent `[c, h, w]` is cut into `(h/p)(w/p)` patch tokens of `c*p*p` values; one frame is one block of the
`CausalTransformer`. The sequence is `[text prefix][start block][frame 0][frame 1]...`; block n's outputs (one vector
per token) condition the `DiffusionHead` that samples frame n's tokens, so the start block predicts the first frame.
Inputs are noised (context noise augmentation, as in GameNGen): by a random level in training and by a fixed small
level in sampling, with the level itself an input, so the model learns not to copy its inputs' errors; this limits
drift in long rollouts. Optional per-step codes tell a block what it predicts (e.g. how far ahead the next keyframe is).
With `frame_decoder_depth` > 0 a frame's tokens are not sampled at once, each from its own noise (then patches cannot
agree on one shape), but set by set as in MAR: a bidirectional decoder over the frame's tokens, the sampled ones
visible and the rest a mask token, conditions the head; training masks a random share of each frame's tokens and
scores the head on those, sampling reveals them in `token_rounds` sets of growing size (MAR's cosine schedule).
With `frame_head_width` > 0 the per-token head is replaced by a convolutional head that denoises the whole frame latent
at once from the map of its tokens' AR vectors (`ConvFrameHead`): the AR transformer decides what goes where, the
convolutions draw it at the latent's full resolution.
Latents are `[B, N, c, h, w]` (N frames or steps) at this module's boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn
from transformers import Cache

from zoo.components.ar import ARConfig, CausalTransformer
from zoo.components.autoencoder import FrameAutoencoder, load_autoencoder_for
from zoo.components.denoiser import ConditionedHead, ConvFrameHead, DiffusionHead
from zoo.components.sampling import DiffusionConfig
from zoo.components.text import NULL_PROMPT, TextEncoder, build_text_encoder, masked_mean
from zoo.config import ConfigError

TextPrefix = tuple[Tensor, Tensor]
"""(token embeddings `[B, L, D]`, mask `[B, L]` bool, True = real token) of one prompt per video."""

EncodeText = Callable[[list[str]], TextPrefix]

# MAR trains its head on epsilon; Stable Diffusion's scaled-linear schedule keeps epsilon prediction stable at few
# sampling steps (the cosine schedule's near-zero final SNR does not).
EPSILON_DIFFUSION = {
    "prediction_type": "epsilon", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
}


@dataclass
class NextLatentConfig:
    """A next-latent AR model: transformer size, patching, diffusion head, and context noise augmentation.

    context_noise_train: AR inputs are noised by `level * N(0, 1)`, level uniform in [0, this] per frame, in training.
    context_noise_inference: the fixed level used when sampling (for given context frames and generated ones alike).
    head_batch_mul: noise draws per AR vector in training (MAR's diffusion batch multiplier).
    diffusion: the head's process; by default MAR's epsilon objective on a scaled-linear schedule.
    frame_decoder_depth: blocks of the bidirectional in-frame decoder; 0 samples a frame's tokens at once.
    token_rounds: with a frame decoder, the rounds in which a frame's tokens are sampled (at most its token count).
    first_frame_weight: the loss weight of the first step's tokens against a later step's. The first frame is drawn
      from the prompt alone (an image task) while later ones mostly continue it, so at 1 what the prompt asks to be
      drawn gets 1/N of the training signal.
    frame_head_width, frame_head_depth: > 0 replaces the per-token MLP head (head_width, head_depth) by a
      convolutional head of that width and depth (residual blocks) that denoises a whole frame (`ConvFrameHead`).
    text_to_head: add the prompt's mean token embedding (projected) to every head condition, a path from the prompt
      to the head past the transformer. Without it the transformer alone must carry what to draw into the first frame,
      and it learns the prompted motion long before the prompted object (README "Pretrained zoo").
    """

    transformer: ARConfig = field(default_factory=ARConfig)
    patch_size: int = 2
    head_width: int = 128
    head_depth: int = 3
    head_batch_mul: int = 2
    context_noise_train: float = 0.3
    context_noise_inference: float = 0.05
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(**EPSILON_DIFFUSION))
    frame_decoder_depth: int = 0
    token_rounds: int = 4
    first_frame_weight: float = 1.0
    frame_head_width: int = 0
    frame_head_depth: int = 4
    text_to_head: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.context_noise_inference <= self.context_noise_train or self.context_noise_train > 1:
            raise ConfigError(
                "need 0 <= context_noise_inference <= context_noise_train <= 1, got "
                f"{self.context_noise_inference} and {self.context_noise_train}"
            )
        if self.head_batch_mul < 1:
            raise ConfigError(f"head_batch_mul must be >= 1, got {self.head_batch_mul}")
        if self.first_frame_weight <= 0:
            raise ConfigError(f"first_frame_weight must be > 0, got {self.first_frame_weight}")
        if self.frame_head_width < 0 or self.frame_head_depth < 1:
            raise ConfigError(
                f"need frame_head_width >= 0 and frame_head_depth >= 1, got {self.frame_head_width} and "
                f"{self.frame_head_depth}"
            )
        if self.frame_head_width and self.frame_decoder_depth:
            raise ConfigError(
                "frame_head_width and frame_decoder_depth are two ways to draw a frame's tokens together; set one to 0"
            )
        if self.frame_decoder_depth < 0 or self.token_rounds < 1:
            raise ConfigError(
                f"need frame_decoder_depth >= 0 and token_rounds >= 1, got {self.frame_decoder_depth} and "
                f"{self.token_rounds}"
            )


class NextLatentAR(nn.Module):
    """Block-causal AR over frame latents `[B, N, c, h, w]`; each next frame comes from a per-token diffusion head.

    `num_codes` > 0 adds a learned embedding of a per-step code to the block that predicts that step.
    """

    def __init__(
        self, config: NextLatentConfig, latent_shape: tuple[int, int, int], text_dim: int = 0, num_codes: int = 0
    ) -> None:
        super().__init__()
        channels, height, width = latent_shape
        p = config.patch_size
        if height % p or width % p:
            raise ConfigError(f"patch_size {p} must divide the latent size {height}x{width}; pick a divisor")
        self.config = config
        self.latent_shape = latent_shape
        self.tokens_per_frame = (height // p) * (width // p)
        self.token_dim = channels * p * p
        dim = config.transformer.dim
        self.transformer = CausalTransformer(config.transformer, cond_dim=dim)
        self.token_in = nn.Linear(self.token_dim, dim)
        self.spatial_position = nn.Parameter(torch.randn(self.tokens_per_frame, dim) * 0.02)
        self.start_block = nn.Parameter(torch.randn(self.tokens_per_frame, dim) * 0.02)
        self.level_embed = nn.Linear(1, dim)
        self.code_embed = nn.Embedding(num_codes, dim) if num_codes else None
        self.text_proj = nn.Linear(text_dim, dim) if text_dim else None
        self.text_to_head = nn.Linear(text_dim, dim) if text_dim and config.text_to_head else None
        self.head: ConditionedHead
        if config.frame_head_width:
            self.head = ConvFrameHead(latent_shape, p, dim, config.frame_head_width, config.frame_head_depth,
                                      config.diffusion)
        else:
            self.head = DiffusionHead(self.token_dim, dim, config.head_width, config.head_depth, config.diffusion)
        self.frame_decoder = None
        if config.frame_decoder_depth:
            if config.token_rounds > self.tokens_per_frame:
                raise ConfigError(
                    f"token_rounds {config.token_rounds} exceeds the {self.tokens_per_frame} tokens of a frame; "
                    "lower it"
                )
            heads = config.transformer.heads
            self.frame_decoder = nn.ModuleList(
                BasicTransformerBlock(dim, heads, dim // heads) for _ in range(config.frame_decoder_depth)
            )
            self.known_token_in = nn.Linear(self.token_dim, dim)
            self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
            self.decoder_norm = nn.LayerNorm(dim)

    # ---- latents <-> tokens ------------------------------------------------------------------------------
    def patchify(self, latents: Tensor) -> Tensor:
        """`[..., c, h, w]` -> `[..., S, c*p*p]` patch tokens in raster order."""
        p = self.config.patch_size
        *lead, c, h, w = latents.shape
        x = latents.reshape(math.prod(lead), c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(*lead, (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """`[..., S, c*p*p]` -> `[..., c, h, w]`."""
        p = self.config.patch_size
        c, h, w = self.latent_shape
        lead = tokens.shape[:-2]
        x = tokens.reshape(math.prod(lead), h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(*lead, c, h, w)

    # ---- context noise augmentation ------------------------------------------------------------------------
    def context_levels(self, shape: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
        """Noise levels `[B, N]` of AR inputs: uniform in [0, context_noise_train] in training, else the fixed level."""
        device = self.start_block.device
        if self.training:
            u = torch.rand(shape, generator=generator, device=self._generator_device(generator)).to(device)
            return u * self.config.context_noise_train
        return torch.full(shape, self.config.context_noise_inference, device=device)

    def augment_context(self, latents: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """AR inputs `[B, N, c, h, w]` plus `level * N(0, 1)` noise, and the levels `[B, N]` they got."""
        levels = self.context_levels(tuple(latents.shape[:2]), generator)
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        return latents + levels[..., None, None, None] * noise, levels

    # ---- the transformer pass -----------------------------------------------------------------------------
    def _frame_blocks(self, inputs: Tensor, levels: Tensor, codes: Tensor | None) -> Tensor:
        """Noised frame latents `[B, M, c, h, w]` -> block embeddings `[B, M*S, dim]`; `codes` `[B, M]` or None."""
        x = self.token_in(self.patchify(inputs)) + self.spatial_position
        x = x + self.level_embed(levels[..., None, None].to(x.dtype))
        if self.code_embed is not None and codes is not None:
            x = x + self.code_embed(codes)[:, :, None]
        return x.flatten(1, 2)

    def _start_blocks(self, batch: int, code: Tensor | None) -> Tensor:
        x = (self.start_block + self.spatial_position).expand(batch, -1, -1)
        if self.code_embed is not None and code is not None:
            x = x + self.code_embed(code)[:, None]
        return x

    def conditions(
        self,
        blocks: Tensor,
        text: TextPrefix | None = None,
        past: Cache | None = None,
        use_cache: bool = False,
        cache_blocks: int | None = None,
    ) -> tuple[Tensor, Cache | None]:
        """Head conditions `[B, M, S, dim]` for `M` new blocks `[B, M*S, dim]` (after `past`), and the cache.

        A new cache (`use_cache` without `past`) holds the prefix and `cache_blocks` blocks (default: as many as fit).
        """
        prefix_len, prefix_mask = 0, None
        if text is not None and self.text_proj is not None:
            prefix_len, prefix_mask = text[0].shape[1], text[1]
            if past is None:
                blocks = torch.cat([self.text_proj(text[0]), blocks], dim=1)
        hidden, cache = self.transformer(
            blocks,
            block_size=self.tokens_per_frame,
            past=past,
            use_cache=use_cache,
            prefix_len=prefix_len,
            prefix_mask=prefix_mask,
            cache_size=None if cache_blocks is None else prefix_len + cache_blocks * self.tokens_per_frame,
        )
        if past is None:
            hidden = hidden[:, prefix_len:]
        z = self.transformer.cond_head(hidden).unflatten(1, (-1, self.tokens_per_frame))
        if text is not None and self.text_to_head is not None:
            z = z + self.text_to_head(masked_mean(*text))[:, None, None]
        return z, cache

    def _sequence(self, inputs: Tensor, levels: Tensor, codes: Tensor | None) -> Tensor:
        """Start block + frame blocks for inputs `[B, M, ...]`; `codes` `[B, M + 1]` (start block first) or None."""
        start = self._start_blocks(inputs.shape[0], None if codes is None else codes[:, 0])
        frames = self._frame_blocks(inputs, levels, None if codes is None else codes[:, 1:])
        return torch.cat([start, frames], dim=1)

    # ---- training ----------------------------------------------------------------------------------------
    def loss(
        self,
        latents: Tensor,
        text: TextPrefix | None = None,
        codes: Tensor | None = None,
        generator: torch.Generator | None = None,
        history: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced diffusion-head loss on every step of `latents [B, N, c, h, w]`.

        codes `[N]` or `[B, N]`: the code of each predicted step (its block carries it), or None.
        history `[B, H, c, h, w]` (1 <= H < N), e.g. the model's own rollout (self-forcing): the AR inputs of the first
        H steps in place of `latents`' own; the loss then covers only the steps after it, H..N-1.
        """
        batch, steps = latents.shape[:2]
        if codes is not None:
            codes = codes.expand(batch, steps)
        inputs, first = latents[:, :-1], 0
        if history is not None:
            first = history.shape[1]
            if not 1 <= first < steps:
                raise ValueError(f"history must hold 1 to {steps - 1} steps, got {first}")
            inputs = torch.cat([history, inputs[:, first:]], dim=1)
        inputs, levels = self.augment_context(inputs, generator)
        z, _ = self.conditions(self._sequence(inputs, levels, codes), text)
        z = z[:, first:].flatten(0, 1)
        step = torch.arange(first, steps, device=z.device).repeat(batch)  # the step of each row
        weight = torch.where(step == 0, self.config.first_frame_weight, 1.0)
        mul = self.config.head_batch_mul
        if isinstance(self.head, ConvFrameHead):
            x0 = latents[:, first:].flatten(0, 1)
            weight = None if self.config.first_frame_weight == 1.0 else weight.repeat(mul)[:, None, None, None]
            return self.head.loss(x0.repeat(mul, 1, 1, 1), z.repeat(mul, 1, 1), generator, weight)
        x0 = self.patchify(latents[:, first:]).flatten(0, 1)
        weight = weight[:, None].expand(-1, x0.shape[1])
        if self.frame_decoder is not None:
            # MAR: a random share (1 to all) of each frame's tokens is hidden; the head learns those from the rest.
            rows, tokens = x0.shape[:2]
            hidden = self._random_ranks(rows, generator) < torch.randint(
                1, tokens + 1, (rows, 1), generator=generator, device=self._generator_device(generator)
            ).to(x0.device)
            x0, z, weight = x0[hidden], self.decode_frame(z, x0, ~hidden)[hidden], weight[hidden]
        else:
            x0, z, weight = x0.flatten(0, 1), z.flatten(0, 1), weight.flatten()
        weight = None if self.config.first_frame_weight == 1.0 else weight.repeat(mul)[:, None]
        return self.head.loss(x0.repeat(mul, 1), z.repeat(mul, 1), generator, weight)

    # ---- the in-frame decoder (MAR's set-by-set sampling) ----------------------------------------------------
    def _generator_device(self, generator: torch.Generator | None) -> torch.device:
        """Where random draws are made: the generator's device (its stream is fixed there), else the module's."""
        return generator.device if generator is not None else self.start_block.device

    def _random_ranks(self, rows: int, generator: torch.Generator | None) -> Tensor:
        """A random order of a frame's tokens per row: `[rows, S]`, the rank of each token (a permutation of 0..S-1)."""
        u = torch.rand((rows, self.tokens_per_frame), generator=generator, device=self._generator_device(generator))
        return u.argsort(dim=1).argsort(dim=1).to(self.start_block.device)

    def decode_frame(self, z: Tensor, tokens: Tensor, known: Tensor) -> Tensor:
        """Head conditions `[R, S, dim]` from AR conditions `z [R, S, dim]` and the frame's tokens `[R, S, c*p*p]`,
        of which only those where `known [R, S]` is True are visible to the decoder."""
        visible = torch.where(known[..., None], self.known_token_in(tokens), self.mask_token.to(z.dtype))
        h = z + visible + self.spatial_position
        for block in self.frame_decoder:
            h = block(h)
        return self.decoder_norm(h)

    def reveal_schedule(self) -> list[int]:
        """Tokens still hidden after each sampling round (MAR's cosine schedule, at least one revealed per round)."""
        tokens, rounds = self.tokens_per_frame, self.config.token_rounds
        return [
            max(rounds - k - 1, min(tokens - k - 1, int(tokens * math.cos(math.pi / 2 * (k + 1) / rounds))))
            for k in range(rounds)
        ]

    # ---- sampling ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        known: Tensor,
        num_steps: int,
        generator: torch.Generator,
        *,
        prompts: Sequence[Sequence[str]] | None = None,
        encode_text: EncodeText | None = None,
        codes: Tensor | None = None,
        max_input_frames: int,
        keep_frames: int,
        use_kv_cache: bool = True,
        guidance_scale: float | None = None,
        sampling_steps: int | None = None,
    ) -> Tensor:
        """Continue `known [B, N0, c, h, w]` to `num_steps` latents `[B, num_steps, c, h, w]`, one step at a time.

        prompts `[B][num_steps]`: the prompt active at each step; a change re-fills the cache under the new prefix.
        codes `[num_steps]`: per-step codes (or None). At most `max_input_frames` latents are in context; when
        more would be, the window restarts from the last `keep_frames` (the cache is re-filled, as at a clip start).
        guidance_scale (default: the head's config) != 1 runs a null-prompt stream beside for classifier-free guidance.
        sampling_steps: the head's denoising steps per frame (default: the head's config).
        """
        if not 1 <= keep_frames <= max_input_frames:
            raise ConfigError(f"need 1 <= keep_frames ({keep_frames}) <= max_input_frames ({max_input_frames})")
        if prompts is not None and encode_text is None:
            raise ValueError("prompts need an encode_text function")
        batch, num_known = known.shape[:2]
        scale = self.config.diffusion.guidance_scale if guidance_scale is None else guidance_scale
        guided = prompts is not None and scale != 1.0 and any(p for video in prompts for p in video)
        streams = 2 if guided else 1
        if codes is not None:
            codes = codes.to(known.device).expand(batch * streams, num_steps)
        outputs = list(known.unbind(1))
        inputs = [self._noised_input(frame, generator) for frame in outputs]
        start, cache, cache_key, text = 0, None, None, None
        for step in range(num_known, num_steps):
            if step - start > max_input_frames:
                start = step - keep_frames  # slide the window: re-fill from the last frames, like a clip start
            step_prompts = None if prompts is None else [video[step] for video in prompts]
            if use_kv_cache and cache is not None and cache_key == (start, step_prompts):
                # Same window and prompt: append the newest frame to the cache as one block.
                new = self._inference_inputs(inputs[step - 1 : step], streams, batch)
                new_codes = None if codes is None else codes[:, step : step + 1]
                z, cache = self.conditions(self._frame_blocks(*new, new_codes), text, past=cache, use_cache=True)
            else:
                text = None
                if step_prompts is not None:
                    text = encode_text(step_prompts + [NULL_PROMPT] * batch if guided else step_prompts)
                window = self._inference_inputs(inputs[start:step], streams, batch)
                window_codes = None if codes is None else torch.cat([codes[:, :1], codes[:, start + 1 : step + 1]], 1)
                # The window holds the start block and at most `max_input_frames` frames.
                blocks = self._sequence(*window, window_codes)
                z, cache = self.conditions(blocks, text, use_cache=use_kv_cache, cache_blocks=max_input_frames + 1)
                cache_key = (start, step_prompts)
            frame = self._sample_frame(z[:, -1], generator, scale if guided else None, sampling_steps)
            outputs.append(frame)
            inputs.append(self._noised_input(frame, generator))
        return torch.stack(outputs, dim=1)

    def _sample_frame(
        self, z: Tensor, generator: torch.Generator, guidance_scale: float | None, steps: int | None
    ) -> Tensor:
        """One frame latent `[B, c, h, w]` from head conditions `[B, S, dim]` (`[2B, ...]`: cond then null stream)."""
        if isinstance(self.head, ConvFrameHead):
            return self._sample_head(z, generator, guidance_scale, steps)
        if self.frame_decoder is None:
            tokens = self._sample_tokens(z, generator, guidance_scale, steps)
            return self.unpatchify(tokens.view(-1, self.tokens_per_frame, self.token_dim))
        streams = 1 if guidance_scale is None else 2
        batch = z.shape[0] // streams
        ranks = self._random_ranks(batch, generator)
        tokens = z.new_zeros(batch, self.tokens_per_frame, self.token_dim)
        known = torch.zeros_like(ranks, dtype=torch.bool)
        hidden_before = self.tokens_per_frame
        for hidden_after in self.reveal_schedule():
            # This round's set: the tokens ranked hidden_after .. hidden_before - 1 (the highest ranks go first).
            chosen = (ranks >= hidden_after) & (ranks < hidden_before)
            conditions = self.decode_frame(z, tokens.repeat(streams, 1, 1), known.repeat(streams, 1))
            tokens[chosen] = self._sample_tokens(
                conditions[chosen.repeat(streams, 1)], generator, guidance_scale, steps
            ).to(tokens.dtype)
            known |= chosen
            hidden_before = hidden_after
        return self.unpatchify(tokens)

    def _sample_tokens(
        self, z: Tensor, generator: torch.Generator, guidance_scale: float | None, steps: int | None
    ) -> Tensor:
        """Tokens `[R, c*p*p]` for head conditions `[..., dim]` (R of them; `2R` with guidance: cond then null)."""
        return self._sample_head(z.reshape(-1, z.shape[-1]), generator, guidance_scale, steps)

    def _sample_head(
        self, z: Tensor, generator: torch.Generator, guidance_scale: float | None, steps: int | None
    ) -> Tensor:
        """The head's samples for conditions `z` (`[2R, ...]` with guidance: cond then null)."""
        if guidance_scale is None:
            return self.head.sample(z, generator, steps)
        z_cond, z_uncond = z.chunk(2)
        return self.head.sample(z_cond, generator, steps, z_uncond=z_uncond, guidance_scale=guidance_scale)

    def _noised_input(self, frame: Tensor, generator: torch.Generator) -> Tensor:
        noise = randn_tensor(frame.shape, generator=generator, device=frame.device, dtype=frame.dtype)
        return frame + self.config.context_noise_inference * noise

    def _inference_inputs(self, frames: list[Tensor], streams: int, batch: int) -> tuple[Tensor, Tensor]:
        """AR inputs `[streams * B, M, c, h, w]` from M noised frames `[B, c, h, w]` (M may be 0), and their levels."""
        if frames:
            stacked = torch.stack(frames, dim=1).repeat(streams, 1, 1, 1, 1)
        else:
            stacked = self.start_block.new_zeros(batch * streams, 0, *self.latent_shape)
        return stacked, stacked.new_full(stacked.shape[:2], self.config.context_noise_inference)


class LatentARModelFields(Protocol):
    """The fields of a model config that the parts of a text-conditioned next-latent AR model are built from."""

    autoencoder: str
    channels: int
    image_size: int
    text_encoder: str
    text_dim: int


def build_latent_ar_parts(
    model: LatentARModelFields, config: NextLatentConfig, num_codes: int = 0
) -> tuple[FrameAutoencoder, TextEncoder, NextLatentAR]:
    """A model's frozen KL autoencoder (checked against its frames), its text encoder, and a `NextLatentAR` over that
    autoencoder's latents whose prefix is that encoder's tokens."""
    autoencoder = load_autoencoder_for(model.autoencoder, model.channels, model.image_size, kind="kl")
    text_encoder = build_text_encoder(model.text_encoder, model.text_dim)
    return autoencoder, text_encoder, NextLatentAR(config, autoencoder.latent_shape, model.text_dim, num_codes)


__all__ = [
    "EPSILON_DIFFUSION",
    "EncodeText",
    "LatentARModelFields",
    "NextLatentAR",
    "NextLatentConfig",
    "TextPrefix",
    "build_latent_ar_parts",
]
