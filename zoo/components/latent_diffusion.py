"""The text-conditioned latent video diffusion stack that `video_diffusion` and `diffusion_forcing` share.

A frozen per-frame autoencoder, a text encoder, a factorized space-time transformer denoiser (`LatentVideoDenoiser`,
text by cross-attention and AdaLN) and a diffusion process; the models differ in how they noise and sample frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from zoo.components.autoencoder import load_autoencoder_for
from zoo.components.denoiser import LatentVideoDenoiser
from zoo.components.sampling import DiffusionConfig, DiffusionProcess
from zoo.components.text import TextEncoder, build_text_encoder, drop_prompts, encode_prompts_per_frame
from zoo.config import ConfigError
from zoo.interface import ModelConfig, autoencoder_field


@dataclass
class LatentDiffusionConfig(ModelConfig):
    """Latent space, text encoder, denoiser size, text dropout (for classifier-free guidance) and diffusion process.

    time_attention: the denoiser's "factorized" or "joint" space-time attention (`DenoiserConfig`).
    conv_width, conv_depth: the denoiser's convolutional stem and head (`DenoiserConfig`; width 0 = none).
    extension_context: frames of the previous window that condition the next one when extending past clip_length.
    stills_per_clip: still frames of other clips trained beside each clip as one-frame videos (joint image-video
    training, as in Video Diffusion Models, Ho et al. 2022): what objects look like is learned from many more of
    them per step than the clips show; 0 = off. `zoo.training.train_model` asks the data for them.
    """

    autoencoder: str = autoencoder_field("kl")
    text_encoder: str = "learned"
    text_dim: int = 64
    dim: int = 96
    depth: int = 2
    num_heads: int = 4
    patch_size: int = 2
    mlp_ratio: float = 4.0
    time_attention: str = "factorized"
    conv_width: int = 0
    conv_depth: int = 1
    text_dropout: float = 0.1
    extension_context: int = 4
    stills_per_clip: int = 0
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.extension_context < self.clip_length:
            raise ConfigError(
                f"extension_context ({self.extension_context}) must be in [1, clip_length - 1 = {self.clip_length - 1}]"
            )


def build_latent_diffusion(
    config: LatentDiffusionConfig, known_frames: bool
) -> tuple[nn.Module, nn.Module, LatentVideoDenoiser, DiffusionProcess]:
    """(autoencoder, text encoder, denoiser, diffusion process) of a config; `known_frames` adds the denoiser's
    known-frame input channels (masked context conditioning)."""
    autoencoder = load_autoencoder_for(config.autoencoder, config.channels, config.image_size)
    text_encoder = build_text_encoder(config.text_encoder, config.text_dim)
    denoiser = LatentVideoDenoiser.text_conditioned(
        autoencoder.latent_shape, config.text_dim, patch_size=config.patch_size, dim=config.dim, depth=config.depth,
        num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, known_frames=known_frames,
        time_attention=config.time_attention, conv_width=config.conv_width, conv_depth=config.conv_depth,
    )
    return autoencoder, text_encoder, denoiser, DiffusionProcess(config.diffusion)


def still_videos(
    batch: dict, autoencoder: nn.Module, text_encoder: TextEncoder, text_dropout: float
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]] | None:
    """A batch's still frames as one-frame latent videos `[B*K, 1, c, h, w]` and their encoded captions (dropped to
    "" with `text_dropout`, as clips' are), or None when the batch has none. `batch["still_text"]` is K lists of B
    captions (the default collation of each item's K captions)."""
    if "stills" not in batch:
        return None
    stills = batch["stills"]
    with torch.no_grad():
        latents = autoencoder.encode_video(stills.flatten(0, 1)[:, None])
    captions = [batch["still_text"][k][b] for b in range(stills.shape[0]) for k in range(stills.shape[1])]
    prompts = drop_prompts(captions, text_dropout, None)
    return latents, encode_prompts_per_frame(text_encoder, [[prompt] for prompt in prompts])
