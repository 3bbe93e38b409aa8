"""Per-frame autoencoders: the latent space every model of a dataset shares.

Continuous latents come from diffusers' `AutoencoderKL` (diffusion models), discrete tokens from diffusers' `VQModel`
(token-based AR models). An autoencoder is trained once per dataset as its own stage (`train_autoencoder`), saved as
safetensors with a JSON sidecar (config, reconstruction PSNR, sha256) and loaded frozen by path or by a committed name
such as "moving_digits_kl" (`load_autoencoder`). Frames are `[N, C, H, W]` and videos `[B, T, C, H, W]`, float in [0, 1].
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from diffusers import AutoencoderKL, VQModel
from diffusers.models.downsampling import Downsample2D
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio

from hvz_registry import did_you_mean
from zoo.config import ConfigError, build_config, config_dir, load_yaml, parse_overrides
from zoo.files import sha256_file
from zoo.training import TrainerConfig, quiet_fit_callbacks, silence_lightning_notes

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "autoencoders"
AUTOENCODER_KINDS = ("kl", "vq")


@dataclass
class AutoencoderConfig:
    """Architecture of a frame autoencoder.

    `block_widths` has one entry per resolution level; every level after the first halves the frame size, so the
    latent grid is `image_size / 2 ** (len(block_widths) - 1)`. `circular_padding` makes the convolutions wrap
    around the frame edges (see `_wrap_convolutions`). `scaling_factor` brings latents to about unit variance;
    training measures and sets it.
    """

    kind: str = "kl"
    image_size: int = 32
    channels: int = 1
    latent_channels: int = 4
    block_widths: list[int] = field(default_factory=lambda: [32, 48, 48])
    layers_per_block: int = 1
    norm_groups: int = 16
    mid_attention: bool = False
    circular_padding: bool = False
    codebook_size: int = 512
    scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in AUTOENCODER_KINDS:
            raise ConfigError(f"autoencoder kind '{self.kind}' is unknown; use one of {list(AUTOENCODER_KINDS)}")
        if self.image_size % self.downsample:
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by the downsample factor {self.downsample}; "
                "change block_widths (one level per halving) or image_size"
            )
        bad = [w for w in self.block_widths if w % self.norm_groups]
        if bad:
            raise ConfigError(f"block widths {bad} are not divisible by norm_groups={self.norm_groups}")

    @property
    def downsample(self) -> int:
        """How many pixels one latent cell covers along each side."""
        return 2 ** (len(self.block_widths) - 1)


@dataclass
class AutoencoderTrainingConfig:
    """How an autoencoder is trained: loss weights, optimiser and batch shape."""

    learning_rate: float = 1e-3
    batch_size: int = 16
    frames_per_clip: int = 4
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0
    dead_code_every: int = 50
    scale_batches: int = 8
    val_batches: int = 16
    num_workers: int = 0
    seed: int = 0


@dataclass
class AutoencoderRecipe:
    """One YAML in zoo/configs/autoencoder/: the architecture and how to train it."""

    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    training: AutoencoderTrainingConfig = field(default_factory=AutoencoderTrainingConfig)


def _build_diffusers_model(config: AutoencoderConfig) -> AutoencoderKL | VQModel:
    levels = len(config.block_widths)
    shared = dict(
        in_channels=config.channels,
        out_channels=config.channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_widths),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=config.image_size,
        mid_block_add_attention=config.mid_attention,
    )
    model = AutoencoderKL(**shared) if config.kind == "kl" else VQModel(**shared, num_vq_embeddings=config.codebook_size)
    if config.circular_padding:
        _wrap_convolutions(model)
    return model


def _wrap_convolutions(model: nn.Module) -> None:
    """Pad every convolution circularly, so the network sees the frame as a torus and has no borders.

    With zero padding every cell of an 8x8 latent grid is within reach of a border, so a blank frame becomes a
    different code in nearly every cell; wrapped, the encoder is shift-equivariant and a blank frame is one code.
    """
    for module in model.modules():
        if isinstance(module, Downsample2D) and module.use_conv and module.padding == 0:
            # diffusers pads these asymmetrically with zeros before a stride-2 convolution; use a wrapped one instead.
            conv = module.conv
            module.conv = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding=1, padding_mode="circular"
            )
            module.padding = 1
        elif isinstance(module, nn.Conv2d) and any(p > 0 for p in module.padding):
            module.padding_mode = "circular"


class FrameAutoencoder(nn.Module):
    """A diffusers KL or VQ autoencoder behind one per-frame interface; frames in [0, 1], latents ~unit variance."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _build_diffusers_model(config)
        self.frozen = False

    # ---- facts ---------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of one frame's latent."""
        side = self.config.image_size // self.config.downsample
        return (self.config.latent_channels, side, side)

    @property
    def codebook_size(self) -> int:
        """Number of discrete codes (vq only)."""
        self._require_vq()
        return self.config.codebook_size

    def train(self, mode: bool = True) -> FrameAutoencoder:
        # A frozen autoencoder stays in eval mode when the model that holds it is put into training.
        return super().train(mode and not self.frozen)

    def freeze(self) -> FrameAutoencoder:
        """Stop gradients and keep eval mode from now on."""
        self.requires_grad_(False)
        self.frozen = True
        return self.eval()

    # ---- raw (unscaled) passes used by training ---------------------------------------------------------
    def _pre_latents(self, frames: Tensor) -> Tensor:
        """Encoder output before sampling/quantising: KL posterior moments, or VQ pre-quantisation vectors."""
        # channels_last input puts oneDNN's convolutions on their fast path: ~2.5x on CPU, same values to rounding.
        h = self.model.encoder((frames * 2 - 1).contiguous(memory_format=torch.channels_last))
        h = self.model.quant_conv(h) if self.model.quant_conv is not None else h
        return h.contiguous()

    def _decode_raw(self, latents: Tensor) -> Tensor:
        """Latents (unscaled, already quantised for vq) -> frames in [-1, 1] space, unclamped."""
        if self.kind == "kl":
            return self.model.decode(latents).sample
        return self.model.decode(latents, force_not_quantize=True).sample

    def _quantize(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(quantised latents, codebook+commitment loss, token ids [N, h, w])."""
        quant, loss, (_, _, ids) = self.model.quantize(pre)
        return quant, loss, ids.view(pre.shape[0], *pre.shape[2:])

    # ---- public per-frame API ---------------------------------------------------------------------------
    def encode(self, frames: Tensor) -> Tensor:
        """Frames `[N, C, H, W]` in [0, 1] -> latents `[N, c, h, w]`, deterministic (posterior mean / code vector)."""
        pre = self._pre_latents(frames)
        if self.kind == "kl":
            latents = pre.chunk(2, dim=1)[0]
        else:
            latents = self._quantize(pre)[0]
        return latents * self.config.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Latents `[N, c, h, w]` -> frames `[N, C, H, W]` in [0, 1] (vq latents are snapped to the codebook)."""
        latents = latents / self.config.scaling_factor
        if self.kind == "vq":
            latents = self._quantize(latents)[0]
        return ((self._decode_raw(latents) + 1) / 2).clamp(0, 1)

    def encode_tokens(self, frames: Tensor) -> Tensor:
        """Frames `[N, C, H, W]` in [0, 1] -> code ids `[N, h, w]` (vq only)."""
        self._require_vq()
        return self._quantize(self._pre_latents(frames))[2]

    def decode_tokens(self, tokens: Tensor) -> Tensor:
        """Code ids `[N, h, w]` -> frames `[N, C, H, W]` in [0, 1] (vq only)."""
        self._require_vq()
        n, h, w = tokens.shape
        quant = self.model.quantize.get_codebook_entry(tokens.reshape(-1), (n, h, w, self.config.latent_channels))
        return ((self._decode_raw(quant) + 1) / 2).clamp(0, 1)

    def encode_video(self, video: Tensor) -> Tensor:
        """Video `[B, T, C, H, W]` in [0, 1] -> latents `[B, T, c, h, w]`."""
        return _per_frame(self.encode, video)

    def decode_video(self, latents: Tensor) -> Tensor:
        """Latents `[B, T, c, h, w]` -> video `[B, T, C, H, W]` in [0, 1]."""
        return _per_frame(self.decode, latents)

    def encode_video_tokens(self, video: Tensor) -> Tensor:
        """Video `[B, T, C, H, W]` in [0, 1] -> code ids `[B, T, h, w]` (vq only)."""
        return _per_frame(self.encode_tokens, video)

    def decode_video_tokens(self, tokens: Tensor) -> Tensor:
        """Code ids `[B, T, h, w]` -> video `[B, T, C, H, W]` in [0, 1] (vq only)."""
        return _per_frame(self.decode_tokens, tokens)

    def _require_vq(self) -> None:
        if self.kind != "vq":
            raise ValueError("this is a continuous (kl) autoencoder; token methods need a vq one, e.g. '<data>_vq'")


def _per_frame(fn: Any, video: Tensor) -> Tensor:
    b, t = video.shape[:2]
    out = fn(video.reshape(b * t, *video.shape[2:]))
    return out.reshape(b, t, *out.shape[1:])


# ---- saving and loading -------------------------------------------------------------------------------------
def save_autoencoder(
    ae: FrameAutoencoder,
    path: str | Path,
    psnr: float | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write `<path>.safetensors` (weights in `dtype`) and `<path>.json` (config, psnr, sha256, extra facts)."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in ae.state_dict().items()
    }
    save_file(state, str(path))
    sidecar = {"config": dataclasses.asdict(ae.config), "psnr": psnr, "sha256": sha256_file(path), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def available_autoencoders() -> list[str]:
    """Names of the committed autoencoders in zoo/assets/autoencoders/."""
    return sorted(p.stem for p in ASSET_DIR.glob("*.safetensors"))


def dataset_autoencoders(dataset: str) -> dict[str, str]:
    """{kind: name} of the committed autoencoders trained on `dataset`, by their names `<dataset>_<kind>`."""
    committed = available_autoencoders()
    return {kind: f"{dataset}_{kind}" for kind in AUTOENCODER_KINDS if f"{dataset}_{kind}" in committed}


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors") if path.suffix == ".json" else Path(f"{path}.safetensors")
    if path.is_file():
        return path
    named = ASSET_DIR / f"{name_or_path}.safetensors"
    if named.is_file():
        return named
    names = available_autoencoders()
    raise FileNotFoundError(
        f"no autoencoder '{name_or_path}'{did_you_mean(str(name_or_path), names)}; give a .safetensors path or one "
        f"of {names}, or train one with `zoo train autoencoder --data <dataset> kind=kl`"
    )


def load_autoencoder(name_or_path: str | Path, map_location: str | torch.device = "cpu") -> FrameAutoencoder:
    """A frozen `FrameAutoencoder` (eval, no grads) from a path or a committed name like "moving_digits_kl"."""
    path = _resolve(name_or_path)
    sidecar_path = path.with_suffix(".json")
    if not sidecar_path.is_file():
        raise ConfigError(f"{sidecar_path} is missing; an autoencoder's .safetensors needs its .json sidecar beside it")
    sidecar = json.loads(sidecar_path.read_text())
    expected = sidecar.get("sha256")
    if expected and sha256_file(path) != expected:
        raise ConfigError(f"{path} does not match the sha256 in its sidecar; the file is corrupt, retrain or re-fetch it")
    config = build_config(AutoencoderConfig, sidecar["config"], where=f"autoencoder config in {sidecar_path}")
    ae = FrameAutoencoder(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path), device=str(map_location)).items()}
    ae.load_state_dict(state, strict=True)
    return ae.to(map_location).freeze()


def load_autoencoder_for(
    name_or_path: str | Path, channels: int, image_size: int, kind: str | None = None
) -> FrameAutoencoder:
    """`load_autoencoder`, refusing one that does not code `channels` x `image_size`px frames (or is not of `kind`)."""
    autoencoder = load_autoencoder(name_or_path)
    ae = autoencoder.config
    if kind is not None and ae.kind != kind:
        raise ConfigError(f"autoencoder '{name_or_path}' is a {ae.kind} autoencoder; this model needs a {kind} one")
    if (ae.channels, ae.image_size) != (channels, image_size):
        raise ConfigError(
            f"autoencoder '{name_or_path}' codes {ae.channels}x{ae.image_size}px frames but the model makes "
            f"{channels}x{image_size}px; set channels/image_size or pick another autoencoder"
        )
    return autoencoder


# ---- training -------------------------------------------------------------------------------------------------
def _psnr(mse: Tensor) -> Tensor:
    return -10 * torch.log10(mse.clamp_min(1e-10))


class AutoencoderModule(L.LightningModule):
    """Trains a `FrameAutoencoder` on video clips: reconstruction MSE + KL (kl) or codebook/commitment loss (vq).

    For vq, the codebook starts from encoder outputs and unused codes are re-seeded from the batch every
    `dead_code_every` steps, which keeps a small codebook from collapsing. Logs reconstruction PSNR.
    """

    def __init__(self, config: AutoencoderConfig, training: AutoencoderTrainingConfig) -> None:
        super().__init__()
        self.autoencoder = FrameAutoencoder(config)
        self.training_config = training
        self.save_hyperparameters({"config": dataclasses.asdict(config), "training": dataclasses.asdict(training)})
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        if config.kind == "vq":
            self.register_buffer("code_usage", torch.zeros(config.codebook_size))

    def _frames(self, batch: dict[str, Any]) -> Tensor:
        video = batch["video"]
        return video.reshape(-1, *video.shape[2:])

    def _losses(self, frames: Tensor) -> dict[str, Tensor]:
        ae = self.autoencoder
        pre = ae._pre_latents(frames)
        if ae.kind == "kl":
            mean, logvar = pre.chunk(2, dim=1)
            logvar = logvar.clamp(-30, 20)
            latents = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
            reg = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
            weight = self.training_config.kl_weight
        else:
            if self.global_step % self.training_config.dead_code_every == 0:
                self._reseed_codes(pre)
            latents, reg, ids = ae._quantize(pre)
            weight = self.training_config.codebook_weight
            self.code_usage += torch.bincount(ids.reshape(-1), minlength=self.code_usage.numel()).to(self.code_usage)
        recon = (ae._decode_raw(latents) + 1) / 2
        mse = torch.mean((recon - frames) ** 2)
        return {"loss": mse + weight * reg, "mse": mse, "reg": reg, "psnr": _psnr(mse.detach())}

    @torch.no_grad()
    def _reseed_codes(self, pre: Tensor) -> None:
        # Codes no input chose since the last check (all of them at step 0) are re-seeded k-means++ style: from
        # batch vectors far from every live code. Uniform picks would spend most codes on near-identical background
        # vectors, and many codes for one look make the tokens noisy and hard for an AR model to predict.
        dead = (self.code_usage == 0).nonzero().squeeze(1)
        if dead.numel():
            codebook = self.autoencoder.model.quantize.embedding.weight.data
            vectors = pre.permute(0, 2, 3, 1).reshape(-1, pre.shape[1])
            live = codebook[self.code_usage > 0]
            codebook[dead] = kmeans_plus_plus(vectors, dead.numel(), live)
        self.code_usage.zero_()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self._losses(self._frames(batch))
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name in ("loss", "psnr"))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        frames = self._frames(batch)
        ae = self.autoencoder
        self.val_psnr.update(ae.decode(ae.encode(frames)), frames)
        self.log("val/psnr", self.val_psnr, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.training_config.learning_rate)
        # Cosine decay to zero over the run: the last steps at a small rate add about a dB of PSNR.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def kmeans_plus_plus(vectors: Tensor, count: int, centers: Tensor | None = None) -> Tensor:
    """`count` rows of `vectors` `[N, d]`, each drawn with probability ~ squared distance to the nearest center so far.

    `centers` `[M, d]` are already placed (k-means++ seeding continued from them); with none, the first is uniform.
    """
    if centers is None or centers.numel() == 0:
        nearest = torch.ones(vectors.shape[0], device=vectors.device)
    else:
        nearest = torch.cdist(vectors, centers).amin(dim=1).square()
    chosen = []
    for _ in range(count):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        pick = torch.multinomial(weights, 1).item()
        chosen.append(vectors[pick])
        nearest = torch.minimum(nearest, (vectors - vectors[pick]).square().sum(dim=1))
    return torch.stack(chosen)


@torch.no_grad()
def measure_scaling_factor(ae: FrameAutoencoder, batches: Sequence[Tensor]) -> float:
    """1 / std of the unscaled latents over `batches` of frames `[N, C, H, W]`."""
    previous = ae.config.scaling_factor
    ae.config.scaling_factor = 1.0
    try:
        latents = torch.cat([ae.encode(frames).flatten() for frames in batches])
    finally:
        ae.config.scaling_factor = previous
    return float(1.0 / latents.std().clamp_min(1e-6))


def autoencoder_recipe(
    kind: str | None = None, overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None
) -> tuple[str, AutoencoderRecipe]:
    """(kind, `zoo/configs/autoencoder/<kind>.yaml` merged with overrides).

    Overrides look like `model.latent_channels=8` or `training.batch_size=32`; a top-level `kind=vq` picks the YAML
    when `kind` is not given (default "kl").
    """
    overrides = OmegaConf.create({}) if overrides is None else overrides
    if not isinstance(overrides, (Mapping, DictConfig)):
        overrides = parse_overrides(list(overrides))
    overrides = OmegaConf.create(dict(overrides))
    kind = str(overrides.pop("kind", None) or kind or "kl")
    if kind not in AUTOENCODER_KINDS:
        raise ConfigError(f"autoencoder kind '{kind}' is unknown{did_you_mean(kind, AUTOENCODER_KINDS)}; use kl or vq")
    yaml = load_yaml(config_dir() / "autoencoder" / f"{kind}.yaml")
    return kind, build_config(AutoencoderRecipe, yaml, overrides, where=f"autoencoder recipe '{kind}'")


def train_autoencoder(
    data: str,
    kind: str | None = None,
    max_steps: int | None = None,
    out: str | Path = "runs/autoencoders",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    trainer_cfg: TrainerConfig | None = None,
    data_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a "kl" or "vq" autoencoder on dataset `data`, save it and return {"psnr": dB, "path": str}.

    `out` is a `.safetensors` path or a folder (the file is then `<data>_<kind>.safetensors`). Frame size and
    channels come from the dataset; `trainer_cfg` gives accelerator, precision and (if `max_steps` is None) the
    step count. PSNR is measured on the validation split with the weights at their stored precision.
    """
    from zoo.data import VideoDataModule

    kind, recipe = autoencoder_recipe(kind, overrides)
    train_cfg = recipe.training
    trainer_cfg = trainer_cfg or TrainerConfig(enable_progress_bar=False)
    max_steps = trainer_cfg.max_steps if max_steps is None else max_steps
    L.seed_everything(train_cfg.seed, workers=True, verbose=False)
    silence_lightning_notes()
    datamodule = VideoDataModule(
        data,
        batch_size=train_cfg.batch_size,
        num_workers=train_cfg.num_workers,
        overrides={**(data_overrides or {}), "num_frames": train_cfg.frames_per_clip},
        seed=train_cfg.seed,
    )
    datamodule.setup("fit")
    dataset = datamodule.train_dataset
    model_cfg = dataclasses.replace(recipe.model, kind=kind, channels=dataset.channels, image_size=dataset.image_size)
    module = AutoencoderModule(model_cfg, train_cfg)
    quiet = dict(
        accelerator=trainer_cfg.accelerator,
        devices=1,
        precision=trainer_cfg.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=trainer_cfg.enable_progress_bar,
    )
    callbacks = quiet_fit_callbacks(trainer_cfg.enable_progress_bar)
    L.Trainer(max_steps=max_steps, limit_val_batches=0, callbacks=callbacks, **quiet).fit(module, datamodule=datamodule)

    ae = module.autoencoder.cpu().eval()
    # Round to the stored precision first, so the reported numbers describe the saved file.
    ae.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in ae.state_dict().items()})
    val_batches = itertools.islice(datamodule.val_dataloader(), train_cfg.scale_batches)
    val_frames = [module._frames(batch) for batch in val_batches]
    ae.config.scaling_factor = measure_scaling_factor(ae, val_frames)
    evaluator = L.Trainer(limit_val_batches=train_cfg.val_batches, **quiet)
    psnr = float(evaluator.validate(module, datamodule=datamodule, verbose=False)[0]["val/psnr"])
    facts = {"data": data, "kind": kind, "max_steps": max_steps, "training": dataclasses.asdict(train_cfg)}
    if kind == "vq":
        facts["codes_used"] = _codes_used(ae, val_frames)
    out = Path(out)
    path = out if out.suffix == ".safetensors" else out / f"{data}_{kind}.safetensors"
    path = save_autoencoder(ae, path, psnr=round(psnr, 3), extra=facts)
    return {"psnr": psnr, "path": str(path)}


@torch.no_grad()
def shrink_codebook(ae: FrameAutoencoder, frames: Sequence[Tensor], size: int, iterations: int = 30) -> FrameAutoencoder:
    """A copy of vq autoencoder `ae` whose codebook is `size` k-means centres of its encoder's outputs on `frames`.

    Why: a codebook trained to use every entry spreads one look over many near-identical codes (moving_digits_vq: 512
    codes, unigram entropy 5.8 nats, 4.3 given the same cell a frame earlier), so a token AR model spends its budget
    predicting which duplicate. Encoder and decoder are kept; Lloyd iterations start from the `size` most used codes
    (deterministic), and the scaling factor is re-measured.
    """
    ae._require_vq()
    if not 0 < size <= ae.codebook_size:
        raise ValueError(f"size must be in [1, {ae.codebook_size}], got {size}")
    pre = [ae._pre_latents(batch) for batch in frames]
    vectors = torch.cat([p.permute(0, 2, 3, 1).flatten(0, 2) for p in pre])
    codes = torch.cat([ae._quantize(p)[2].flatten() for p in pre])
    usage = torch.bincount(codes, minlength=ae.codebook_size)
    codebook = ae.model.quantize.embedding.weight
    centres = codebook[usage.argsort(descending=True, stable=True)[:size]].clone()
    for _ in range(iterations):
        nearest = torch.cdist(vectors, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, nearest, vectors)
        counts = torch.bincount(nearest, minlength=size)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    shrunk = FrameAutoencoder(dataclasses.replace(ae.config, codebook_size=size))
    state = {k: v for k, v in ae.state_dict().items() if k != "model.quantize.embedding.weight"}
    shrunk.load_state_dict({**state, "model.quantize.embedding.weight": centres}, strict=True)
    shrunk.config.scaling_factor = measure_scaling_factor(shrunk, frames)
    return shrunk.freeze()


@torch.no_grad()
def write_shrunk_codebook(name: str, size: int, out: str | Path = ASSET_DIR, train_clips: int = 400) -> dict[str, Any]:
    """`shrink_codebook` of committed vq autoencoder `name` on the first `train_clips` training clips of its dataset,
    saved as `<name><size>` in `out` with its PSNR measured as `train_autoencoder` measures it; returns the sidecar."""
    from zoo.data import VideoDataModule, create_dataset

    source_path = _resolve(name)
    source = json.loads(source_path.with_suffix(".json").read_text())
    ae = load_autoencoder(source_path)
    training = build_config(AutoencoderTrainingConfig, source["training"], where=f"training record of {name}")
    clips = create_dataset(source["data"], "train", overrides={"num_frames": training.frames_per_clip})
    frames = [torch.as_tensor(clips[i]["video"]) for i in range(train_clips)]
    shrunk = shrink_codebook(ae, [torch.cat(frames[i : i + 100]) for i in range(0, train_clips, 100)], size)
    datamodule = VideoDataModule(
        source["data"], batch_size=training.batch_size, overrides={"num_frames": training.frames_per_clip}
    )
    datamodule.setup("validate")
    psnr = PeakSignalNoiseRatio(data_range=1.0)
    val_frames = [batch["video"].flatten(0, 1) for batch in itertools.islice(datamodule.val_dataloader(),
                                                                              training.val_batches)]
    for batch in val_frames:
        psnr.update(shrunk.decode(shrunk.encode(batch)), batch)
    facts = {
        "data": source["data"], "kind": "vq", "derived_from": {"name": name, "sha256": source["sha256"]},
        "shrink": {"codebook_size": size, "train_clips": train_clips, "frames_per_clip": training.frames_per_clip},
        "training": source["training"], "codes_used": _codes_used(shrunk, val_frames[: training.scale_batches]),
    }
    out = Path(out)
    path = save_autoencoder(shrunk, out / f"{name}{size}", psnr=round(float(psnr.compute()), 3), extra=facts)
    return json.loads(path.with_suffix(".json").read_text())


@torch.no_grad()
def _codes_used(ae: FrameAutoencoder, batches: Sequence[Tensor]) -> int:
    device = next(ae.parameters()).device
    return int(torch.cat([ae.encode_tokens(frames.to(device)).flatten() for frames in batches]).unique().numel())


__all__ = [
    "AutoencoderConfig",
    "AutoencoderModule",
    "AutoencoderRecipe",
    "AutoencoderTrainingConfig",
    "FrameAutoencoder",
    "available_autoencoders",
    "load_autoencoder",
    "measure_scaling_factor",
    "save_autoencoder",
    "shrink_codebook",
    "train_autoencoder",
    "write_shrunk_codebook",
]
