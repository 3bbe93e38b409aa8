"""Denoisers: a factorized space-time latent video DiT, a MAR-style per-token diffusion head and a convolutional
per-frame one.

`LatentVideoDenoiser` follows Latte / PixArt-α: diffusers `BasicTransformerBlock`s attend within each frame (with text
cross-attention), temporal blocks attend across frames at each spatial position (optionally block-causally), and every
block is AdaLN-modulated per frame from that frame's own noise level (+ an optional per-frame vector), which is what
per-frame noise levels (diffusion forcing) and AR-conditioned denoising need. Known frames enter by channel-concat.

`DiffusionHead` follows MAR (Li et al. 2024) / NOVA: a small AdaLN MLP that denoises one frame's latent vector given a
vector `z` from an AR transformer, trained and sampled with the shared `DiffusionProcess`. `ConvFrameHead` denoises a
whole frame latent at once from the AR vectors of all its patches, laid out as a map: convolutions at the latent's full
resolution, which is what taught the video denoisers what a digit looks like (README "Pretrained zoo").
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from diffusers.models.attention import BasicTransformerBlock, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import PatchEmbed, TimestepEmbedding, Timesteps, get_1d_sincos_pos_embed_from_grid
from diffusers.models.resnet import ResnetBlock2D
from torch import Tensor, nn

from zoo.components.sampling import DiffusionConfig, DiffusionProcess
from zoo.config import ConfigError

# The additive bias diffusers' own pipelines use for masked-out text tokens (finite, so an all-padding prompt is safe).
MASKED_TOKEN_BIAS = -10000.0
TIME_ATTENTION = ("factorized", "joint")


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN: `norm(x) * (1 + scale) + shift` with the norm already applied to `x`."""
    return x * (1 + scale) + shift


@dataclass
class DenoiserConfig:
    """Shape and size of a `LatentVideoDenoiser`.

    concat_channels: channels concatenated to the noisy latents (known latents + mask); 0 for none.
    text_dim: width of text token embeddings for cross-attention; 0 for no text. frame_cond_dim: 0 for none.
    time_attention: "factorized" (Latte: each spatial position attends across frames) or "joint" (each token attends
    to every token of every frame it may see, as in CogVideoX / Open-Sora 2; a moving object's patches can then find
    themselves in other frames in one hop instead of through a spatial and a temporal hop).
    conv_width: 0, or the width of a convolutional stem and head at full latent resolution around the transformer
    (`conv_depth` time-modulated ResNet blocks each, the head also fed the stem's features by a skip, as a one-level
    U-Net with the transformer as its middle): the transformer plans at patch resolution, the convolutions draw the
    detail inside a patch.
    """

    latent_channels: int = 4
    latent_size: int = 8
    patch_size: int = 2
    concat_channels: int = 0
    text_dim: int = 0
    frame_cond_dim: int = 0
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    time_attention: str = "factorized"
    conv_width: int = 0
    conv_depth: int = 1

    def __post_init__(self) -> None:
        if self.conv_width < 0 or self.conv_width % 8:
            raise ConfigError(f"conv_width must be 0 or a positive multiple of 8 (GroupNorm), got {self.conv_width}")
        if self.conv_depth < 1:
            raise ConfigError(f"conv_depth must be >= 1, got {self.conv_depth}")
        if self.time_attention not in TIME_ATTENTION:
            raise ConfigError(f"time_attention must be one of {list(TIME_ATTENTION)}, got '{self.time_attention}'")
        if self.dim % (2 * self.num_heads):
            raise ConfigError(f"denoiser dim ({self.dim}) must be divisible by 2 * num_heads ({2 * self.num_heads})")
        if self.latent_size % self.patch_size:
            raise ConfigError(
                f"latent_size ({self.latent_size}) must be divisible by patch_size ({self.patch_size}); pick a divisor"
            )


class TemporalAttentionBlock(nn.Module):
    """Self-attention across frames at one spatial position, AdaLN-modulated per frame (per token).

    Mirrors `BasicTransformerBlock(norm_type="ada_norm_single")`, whose modulation is per sequence, not per token.
    """

    def __init__(self, dim: int, num_heads: int, ff_inner_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(query_dim=dim, heads=num_heads, dim_head=dim // num_heads, bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, activation_fn="gelu-approximate", inner_dim=ff_inner_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, x: Tensor, modulation: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """x: `[N, T, dim]`; modulation: `[N, T, 6 * dim]`; attention_mask: additive `[N, T, T]` or None."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table + modulation.unflatten(-1, (6, -1))
        ).unbind(-2)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), attention_mask=attention_mask)
        return x + gate_mlp * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))


class LatentVideoDenoiser(nn.Module):
    """Factorized space-time DiT over latent videos `[B, T, c, h, w]` with per-frame noise levels.

    Predicts noise or velocity (whatever it is trained on) with the same shape as `x_t`.
    The output projection is zero-initialised, so an untrained denoiser predicts 0 and training starts stable.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = c = config
        ff_inner_dim = int(c.dim * c.mlp_ratio)
        in_channels = c.latent_channels + c.concat_channels
        if c.conv_width:
            def resnet(channels_in: int) -> ResnetBlock2D:
                return ResnetBlock2D(in_channels=channels_in, out_channels=c.conv_width, temb_channels=c.dim,
                                     groups=8, time_embedding_norm="scale_shift")

            self.conv_in = nn.Conv2d(in_channels, c.conv_width, 3, padding=1)
            self.conv_stem = nn.ModuleList(resnet(c.conv_width) for _ in range(c.conv_depth))
            # The head's first block takes the transformer's output and the stem's skip.
            self.conv_head = nn.ModuleList(resnet(2 * c.conv_width if i == 0 else c.conv_width)
                                           for i in range(c.conv_depth))
            self.conv_out = nn.Sequential(nn.GroupNorm(8, c.conv_width, eps=1e-6), nn.SiLU(),
                                          nn.Conv2d(c.conv_width, c.latent_channels, 3, padding=1))
            nn.init.zeros_(self.conv_out[-1].weight)
            nn.init.zeros_(self.conv_out[-1].bias)
        self.patch_embed = PatchEmbed(
            height=c.latent_size,
            width=c.latent_size,
            patch_size=c.patch_size,
            in_channels=c.conv_width or in_channels,
            embed_dim=c.dim,
        )
        self.time_proj = Timesteps(c.dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(c.dim, c.dim)
        self.frame_cond_proj = nn.Linear(c.frame_cond_dim, c.dim) if c.frame_cond_dim else None
        # One projection of the per-frame embedding feeds every block; each block adds its own table (AdaLN-single).
        self.block_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.spatial_blocks = nn.ModuleList(
            BasicTransformerBlock(
                c.dim,
                c.num_heads,
                c.dim // c.num_heads,
                cross_attention_dim=c.text_dim or None,
                activation_fn="gelu-approximate",
                attention_bias=True,
                norm_type="ada_norm_single",
                norm_elementwise_affine=False,
                norm_eps=1e-6,
                ff_inner_dim=ff_inner_dim,
            )
            for _ in range(c.depth)
        )
        self.temporal_blocks = nn.ModuleList(
            TemporalAttentionBlock(c.dim, c.num_heads, ff_inner_dim) for _ in range(c.depth)
        )
        self.norm_out = nn.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 2 * c.dim))
        self.proj_out = nn.Linear(c.dim, c.patch_size**2 * (c.conv_width or c.latent_channels))
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    @classmethod
    def text_conditioned(
        cls, latent_shape: tuple[int, ...], text_dim: int, *, patch_size: int, dim: int, depth: int, num_heads: int,
        mlp_ratio: float, known_frames: bool, time_attention: str = "factorized", conv_width: int = 0,
        conv_depth: int = 1,
    ) -> LatentVideoDenoiser:
        """The zoo's usual denoiser over an autoencoder's latents `(c, h, w)`: prompt tokens by cross-attention, the
        pooled prompt per frame by AdaLN, and (`known_frames`) known latents + a known-mask channel-concatenated."""
        latent_channels, latent_size = latent_shape[0], latent_shape[1]
        return cls(DenoiserConfig(
            latent_channels=latent_channels,
            latent_size=latent_size,
            patch_size=patch_size,
            concat_channels=latent_channels + 1 if known_frames else 0,
            text_dim=text_dim,
            frame_cond_dim=text_dim,
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            time_attention=time_attention,
            conv_width=conv_width,
            conv_depth=conv_depth,
        ))

    def forward(
        self,
        x_t: Tensor,
        timesteps: Tensor,
        concat: Tensor | None = None,
        text_emb: Tensor | None = None,
        text_mask: Tensor | None = None,
        frame_cond: Tensor | None = None,
        causal_time: bool = False,
        temporal_block_size: int | None = None,
    ) -> Tensor:
        """Predict for noisy latents `x_t [B, T, c, h, w]` at `timesteps` (`[B]`, or `[B, T]` per frame).

        concat `[B, T, concat_channels, h, w]`: known latents + mask (None = nothing known).
        text_emb `[B, L, D]` (one prompt per video) or `[B, T, L, D]` (one per frame), text_mask the same without D
        (True = real token). frame_cond `[B, T, frame_cond_dim]`. causal_time: frame t attends only to frames <= t.
        temporal_block_size: block-causal time (ACDiT): frames attend bidirectionally within consecutive blocks of
        this many frames and causally across blocks; 1 is `causal_time`, >= T is full attention.
        """
        c = self.config
        batch, frames, _, height, width = x_t.shape
        if timesteps.dim() == 1:
            timesteps = timesteps[:, None].expand(batch, frames)
        if c.concat_channels:
            if concat is None:
                concat = x_t.new_zeros(batch, frames, c.concat_channels, height, width)
            x_t = torch.cat([x_t, concat.to(x_t.dtype)], dim=2)
        emb = self.time_embed(self.time_proj(timesteps.flatten()).to(x_t.dtype))  # [B*T, D]
        if self.frame_cond_proj is not None and frame_cond is not None:
            emb = emb + self.frame_cond_proj(frame_cond.flatten(0, 1).to(x_t.dtype))
        features = x_t.flatten(0, 1)
        if c.conv_width:
            features = self.conv_in(features)
            for block in self.conv_stem:
                features = block(features, emb)
            skip = features
        tokens = self.patch_embed(features)  # [B*T, S, D]
        num_patches = tokens.shape[1]
        positions = torch.arange(frames, device=tokens.device, dtype=torch.float32)
        frame_pos = get_1d_sincos_pos_embed_from_grid(c.dim, positions, output_type="pt", dtype=torch.float32)
        tokens = tokens + frame_pos.to(tokens.dtype).repeat(batch, 1)[:, None]

        spatial_modulation = self.block_modulation(emb)  # [B*T, 6D]
        joint = c.time_attention == "joint"
        if joint:  # [B, T*S, 6D]: every token of a frame carries its frame's modulation
            temporal_modulation = spatial_modulation.view(batch, frames, 1, -1).expand(-1, -1, num_patches, -1)
            temporal_modulation = temporal_modulation.flatten(1, 2)
        else:  # [B*S, T, 6D]
            temporal_modulation = (
                spatial_modulation.view(batch, 1, frames, -1).expand(-1, num_patches, -1, -1).flatten(0, 1)
            )
        text, text_bias = self._text_inputs(text_emb, text_mask, batch, frames)
        if causal_time and temporal_block_size not in (None, 1):
            raise ValueError("causal_time is temporal_block_size=1; pass one of them, not both")
        block_size = 1 if causal_time else temporal_block_size
        causal_bias = None
        if block_size is not None and block_size < frames:
            causal_bias = self._block_causal_bias(frames, block_size, tokens)
            if joint:  # frame-level mask -> token-level: a token sees every patch of the frames its frame sees
                causal_bias = causal_bias.repeat_interleave(num_patches, 0).repeat_interleave(num_patches, 1)
            causal_bias = causal_bias.expand(batch if joint else batch * num_patches, -1, -1)

        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks, strict=True):
            tokens = spatial(
                tokens, encoder_hidden_states=text, encoder_attention_mask=text_bias, timestep=spatial_modulation
            )
            if joint:
                tokens = temporal(tokens.view(batch, frames * num_patches, -1), temporal_modulation, causal_bias)
                tokens = tokens.view(batch * frames, num_patches, -1)
            else:
                tokens = tokens.view(batch, frames, num_patches, -1).transpose(1, 2).flatten(0, 1)  # [B*S, T, D]
                tokens = temporal(tokens, temporal_modulation, causal_bias)
                tokens = tokens.view(batch, num_patches, frames, -1).transpose(1, 2).flatten(0, 1)  # [B*T, S, D]

        shift, scale = self.out_modulation(emb)[:, None].chunk(2, dim=-1)
        patches = self.proj_out(modulate(self.norm_out(tokens), shift, scale))
        if not c.conv_width:
            return self._unpatchify(patches, batch, frames, height, width)
        features = torch.cat([self._unpatchify(patches, batch, frames, height, width).flatten(0, 1), skip], dim=1)
        for block in self.conv_head:
            features = block(features, emb)
        out = self.conv_out(features)
        return out.view(batch, frames, *out.shape[1:])

    def _text_inputs(
        self, text_emb: Tensor | None, text_mask: Tensor | None, batch: int, frames: int
    ) -> tuple[Tensor | None, Tensor | None]:
        # Spatial blocks see one frame per batch row, so text is laid out per frame: [B*T, L, D].
        if not self.config.text_dim:
            return None, None
        if text_emb is None:
            raise ValueError(
                "this denoiser has text cross-attention (text_dim > 0); pass text_emb (encode '' for unconditional)"
            )
        per_frame = text_emb.dim() == 4
        text = text_emb.flatten(0, 1) if per_frame else text_emb.repeat_interleave(frames, dim=0)
        if text_mask is None:
            return text, None
        mask = text_mask.flatten(0, 1) if per_frame else text_mask.repeat_interleave(frames, dim=0)
        bias = (1.0 - mask.to(text.dtype)) * MASKED_TOKEN_BIAS
        return text, bias[:, None, :]  # [B*T, 1, L]

    @staticmethod
    def _block_causal_bias(frames: int, block_size: int, like: Tensor) -> Tensor:
        """Additive `[T, T]` bias (query frame, key frame): -inf where the key's block comes after the query's."""
        if block_size < 1:
            raise ValueError(f"temporal_block_size must be >= 1, got {block_size}")
        block = torch.arange(frames, device=like.device) // block_size
        future = block[None, :] > block[:, None]
        return torch.zeros(frames, frames, dtype=like.dtype, device=like.device).masked_fill(future, float("-inf"))

    def _unpatchify(self, patches: Tensor, batch: int, frames: int, height: int, width: int) -> Tensor:
        p, channels = self.config.patch_size, self.config.conv_width or self.config.latent_channels
        grid = patches.view(batch * frames, height // p, width // p, p, p, channels)
        images = grid.permute(0, 5, 1, 3, 2, 4).reshape(batch * frames, channels, height, width)
        return images.view(batch, frames, channels, height, width)


class AdaLNResidualBlock(nn.Module):
    """MLP residual block modulated by a condition vector; zero-initialised gate, so it starts as the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(cond).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class ConditionedHead(nn.Module, abc.ABC):
    """A diffusion head: predicts for `x_t` at timesteps `t [N]` given AR conditions `z` (`forward(x_t, t, z)`), and
    trains and samples with the shared `DiffusionProcess` (`process`); `sample_shape(z)` is what it draws for `z`."""

    process: DiffusionProcess

    @abc.abstractmethod
    def sample_shape(self, z: Tensor) -> tuple[int, ...]:
        """The shape of the samples drawn for conditions `z`."""

    def loss(
        self, x0: Tensor, z: Tensor, generator: torch.Generator | None = None, weight: Tensor | None = None
    ) -> Tensor:
        """Denoising loss on clean `x0 [N, ...]` at random timesteps (noise from `generator`); `weight` (broadcastable
        to `x0`, or None) weighs each element's error in a weighted mean."""
        t = self.process.sample_timesteps((x0.shape[0],), generator, device=x0.device)
        return self.process.training_loss(lambda x_t, t_: self(x_t, t_, z), x0, t, generator, weight)

    @torch.no_grad()
    def sample(
        self,
        z: Tensor,
        generator: torch.Generator,
        steps: int | None = None,
        z_uncond: Tensor | None = None,
        guidance_scale: float | None = None,
    ) -> Tensor:
        """Sample `sample_shape(z)` for conditions `z`; `z_uncond` enables CFG."""
        uncond_fn = None if z_uncond is None else (lambda x_t, t: self(x_t, t, z_uncond))
        return self.process.sample(
            lambda x_t, t: self(x_t, t, z),
            self.sample_shape(z),
            generator,
            uncond_fn=uncond_fn,
            guidance_scale=guidance_scale,
            num_steps=steps,
            device=z.device,
            dtype=z.dtype,
        )


class DiffusionHead(ConditionedHead):
    """Per-token diffusion head (MAR / NOVA): denoises `x_t [N, token_dim]` given AR vectors `z [N, cond_dim]`."""

    def __init__(
        self,
        token_dim: int,
        cond_dim: int,
        width: int = 256,
        depth: int = 3,
        diffusion: DiffusionConfig | None = None,
    ) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.process = DiffusionProcess(diffusion or DiffusionConfig())
        self.input_proj = nn.Linear(token_dim, width)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNResidualBlock(width) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.proj_out = nn.Linear(width, token_dim)
        for layer in (self.out_modulation[-1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def sample_shape(self, z: Tensor) -> tuple[int, ...]:
        return (z.shape[0], self.token_dim)

    def forward(self, x_t: Tensor, t: Tensor, z: Tensor) -> Tensor:
        """Prediction for `x_t [N, token_dim]` at timesteps `t [N]` given conditions `z [N, cond_dim]`."""
        h = self.input_proj(x_t)
        cond = self.time_embed(self.time_proj(t).to(h.dtype)) + self.cond_embed(z)
        for block in self.blocks:
            h = block(h, cond)
        shift, scale = self.out_modulation(cond).chunk(2, dim=-1)
        return self.proj_out(modulate(self.norm_out(h), shift, scale))


class ConvFrameHead(ConditionedHead):
    """Per-frame diffusion head: denoises a frame latent `x_t [N, c, h, w]` given the AR vectors of its patches
    `z [N, S, cond_dim]` (S = (h/p)(w/p) patches of `patch_size` p, raster order).

    The vectors are laid out as a map at the latent's resolution (each over its p x p patch) and added to the input's
    embedding; `depth` residual conv blocks (diffusers `ResnetBlock2D`) take the timestep plus the vectors' mean as
    their scale-shift embedding. Unlike the per-token head, every output sees its neighbours' noisy values, so one
    shape is drawn across patches. The output convolution is zero-initialised (an untrained head predicts 0).
    """

    def __init__(
        self,
        latent_shape: tuple[int, int, int],
        patch_size: int,
        cond_dim: int,
        width: int = 64,
        depth: int = 4,
        diffusion: DiffusionConfig | None = None,
    ) -> None:
        super().__init__()
        if width % 8:
            raise ConfigError(f"the frame head's width must be a multiple of 8 (its group norms), got {width}")
        self.latent_shape = latent_shape
        self.patch_size = patch_size
        self.process = DiffusionProcess(diffusion or DiffusionConfig())
        channels = latent_shape[0]
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.cond_in = nn.Conv2d(cond_dim, width, 1)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.pooled_cond = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(
            ResnetBlock2D(in_channels=width, out_channels=width, temb_channels=width, groups=8,
                          time_embedding_norm="scale_shift")
            for _ in range(depth)
        )
        self.conv_out = nn.Sequential(nn.GroupNorm(8, width, eps=1e-6), nn.SiLU(),
                                      nn.Conv2d(width, channels, 3, padding=1))
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)

    def sample_shape(self, z: Tensor) -> tuple[int, ...]:
        return (z.shape[0], *self.latent_shape)

    def condition_map(self, z: Tensor) -> Tensor:
        """`[N, S, cond_dim]` -> `[N, cond_dim, h, w]`: each patch's vector over its p x p latent cells."""
        _, height, width = self.latent_shape
        p = self.patch_size
        grid = z.transpose(1, 2).unflatten(2, (height // p, width // p))
        return grid.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)

    def forward(self, x_t: Tensor, t: Tensor, z: Tensor) -> Tensor:
        """Prediction for `x_t [N, c, h, w]` at timesteps `t [N]` given conditions `z [N, S, cond_dim]`."""
        h = self.conv_in(x_t) + self.cond_in(self.condition_map(z).to(x_t.dtype))
        embedding = self.time_embed(self.time_proj(t).to(h.dtype)) + self.pooled_cond(z.mean(dim=1))
        for block in self.blocks:
            h = block(h, embedding)
        return self.conv_out(h)
