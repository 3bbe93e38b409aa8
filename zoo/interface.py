"""The one contract every zoo model implements: `VideoGenerator` and its `Conditioning`.

Videos are `[B, T, C, H, W]` float tensors in [0, 1] at every public boundary.
The base class owns argument validation, seeding and output checks (template method);
a model implements only `generate_inner` and `compute_loss`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from zoo.config import ConfigError
from zoo.precision import SAMPLING_PRECISIONS, sampling_context

CONDITION_KINDS = ("text", "context", "script", "end_context")
# "constant" after warm-up, or "cosine": decay to 0 at the end of the run (max_steps or a compute budget).
LR_SCHEDULES = ("constant", "cosine")


class ConditioningError(ValueError):
    """A condition the model cannot honour, or one whose shape does not fit the request."""


@dataclass
class Conditioning:
    """What a caller may condition generation on.

    text: one prompt per video.
    context: observed first frames `[B, T0, C, H, W]` in [0, 1]; they are the first T0 frames of the output.
    script: multi-scene prompts as (prompt, num_frames) segments, the same script for every video;
        the segment lengths must add up to the requested number of frames.
    end_context: frames `[B, T1, C, H, W]` the video must end on (interpolation between clips).
    """

    text: list[str] | None = None
    context: Tensor | None = None
    script: list[tuple[str, int]] | None = None
    end_context: Tensor | None = None

    def kinds(self) -> set[str]:
        """Names of the conditions that are set."""
        return {name for name in CONDITION_KINDS if getattr(self, name) is not None}

    def prompts_per_frame(self, num_videos: int, num_frames: int) -> list[list[str]] | None:
        """The prompt active at every frame, `[B][T]`: from the script, else the per-video text, else None."""
        if self.script is not None:
            per_frame = [prompt for prompt, length in self.script for _ in range(length)]
            return [list(per_frame) for _ in range(num_videos)]
        if self.text is not None:
            return [[prompt] * num_frames for prompt in self.text]
        return None


AUTOENCODER_KIND = "autoencoder_kind"  # dataclass field metadata: the kind ("kl" / "vq") of autoencoder a field names


def autoencoder_field(kind: str, default: str | None = None) -> Any:
    """A config field naming a frozen autoencoder of `kind` ("kl" or "vq"); default: moving_digits' (`<dataset>_<kind>`).

    Declaring the kind lets a benchmark give the model the autoencoder of that kind trained on its dataset (e.g.
    bouncing_shapes_kl for RGB frames) without a per-model override.
    """
    return dataclasses.field(default=default or f"moving_digits_{kind}", metadata={AUTOENCODER_KIND: kind})


def autoencoder_kinds(config_cls: type) -> dict[str, str]:
    """{field name: autoencoder kind} of the fields a config dataclass declares with `autoencoder_field`."""
    return {f.name: f.metadata[AUTOENCODER_KIND] for f in dataclasses.fields(config_cls) if AUTOENCODER_KIND in f.metadata}


@dataclass
class ModelConfig:
    """Fields every model config has; a model's own dataclass extends it (unknown keys are errors).

    lr_warmup_steps / lr_schedule: linear warm-up, then "constant" or "cosine" to 0 at the end of the run: the
    trainer's max_steps, or the share of a compute budget spent (`trainer.max_cpu_minutes`), whichever is further
    along. So a cosine run resumed with a larger max_steps is not the prefix of one trained that long from the start,
    and a budgeted run's decay follows the CPU time it used (its steps are not known in advance).
    ema_decay: exponential moving average of the weights that sampling uses (0 = none); its decay warms up as
    min(ema_decay, (1 + n) / (10 + n)) after n updates, so short runs average only their last steps.
    sampling_precision: what `generate` runs in, named as Lightning names precisions: "32-true" (float32) or
    "bf16-mixed" (bfloat16 autocast, on CPU with attention in float32, as bf16-mixed training runs; the output is
    float32 either way). On AVX512-BF16 it samples the denoisers 1.3-1.75x faster (README "Throughput").
    """

    image_size: int = 32
    channels: int = 1
    clip_length: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0
    lr_schedule: str = "constant"
    ema_decay: float = 0.0
    sampling_precision: str = "32-true"

    def check_shared_fields(self) -> None:
        """One-line errors for the fields every model config has (called by `VideoGenerator`, so a model config's own
        `__post_init__` need not remember to call this one)."""
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1) (0 = no EMA), got {self.ema_decay}")
        if self.lr_warmup_steps < 0:
            raise ConfigError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.sampling_precision not in SAMPLING_PRECISIONS:
            raise ConfigError(f"sampling_precision must be one of {list(SAMPLING_PRECISIONS)}, "
                              f"got '{self.sampling_precision}'")


def lr_factor(step: int, warmup: int, schedule: str, total: int | None,
              budget_used: Callable[[], float] | None = None) -> float:
    """Multiplier of the base learning rate at optimiser step `step`: linear warm-up over `warmup` steps, then 1
    ("constant") or a cosine to 0 ("cosine") over the run's progress: the further along of step `step` of `total`
    after warm-up, and `budget_used()`, the share of a compute budget spent (constant when neither is known)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = []
    if total is not None and total > warmup:
        progress.append((step - warmup) / (total - warmup))
    if budget_used is not None:
        progress.append(budget_used())
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(progress)))) if progress else 1.0


def optimised_loss(out: Tensor | dict[str, Tensor]) -> Tensor:
    """The loss a training step optimises from what `compute_loss` returns: the scalar, or a dict's "loss" entry."""
    return out["loss"] if isinstance(out, dict) else out


def training_flops(model: L.LightningModule, loss_fn: Callable[[], Tensor | dict[str, Tensor]]) -> float:
    """FLOPs of `loss_fn()`'s forward and of the backward of the loss it returns (`optimised_loss`), counted by
    torch's FLOP counter in training mode; gradients are cleared afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        optimised_loss(loss_fn()).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return float(counter.get_total_flops())


class VideoGenerator(L.LightningModule, abc.ABC):
    """Abstract LightningModule for a video generator.

    Subclasses set `strategy`, `supported_conditions`, `can_extend`, and implement `compute_loss`
    (a scalar training loss on a datamodule batch) and `generate_inner` (sampling).
    `prefix_consistent` declares that a longer rollout starts as a shorter one: with the same seed and conditions,
    the first n frames of `generate(..., m > n frames)` equal `generate(..., n frames)` bit for bit (true of models
    that make frames, or windows, in time order and draw no noise for later ones first); a benchmark then takes the
    short rollouts' videos from the long ones instead of generating them again.
    """

    strategy: ClassVar[str] = "abstract"
    supported_conditions: ClassVar[frozenset[str]] = frozenset()
    can_extend: ClassVar[bool] = True
    prefix_consistent: ClassVar[bool] = False
    model_name: str = "unregistered"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.check_shared_fields()
        self.config = config
        # Stored as a plain dict so Lightning checkpoints reload without unpickling dataclasses.
        self.save_hyperparameters({"model_name": self.model_name, "config": dataclasses.asdict(config)})

    # ---- metadata every benchmark needs -------------------------------------------------------------
    @property
    def clip_length(self) -> int:
        return self.config.clip_length

    @property
    def frame_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of generated frames."""
        return (self.config.channels, self.config.image_size, self.config.image_size)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def metadata(self) -> dict[str, Any]:
        """Facts a benchmark records beside the numbers."""
        return {
            "model": self.model_name,
            "strategy": self.strategy,
            "num_parameters": self.num_parameters,
            "clip_length": self.clip_length,
            "frame_size": list(self.frame_size),
            "supported_conditions": sorted(self.supported_conditions),
            "can_extend": self.can_extend,
        }

    # ---- training ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def compute_loss(self, batch: dict[str, Any]) -> Tensor | dict[str, Tensor]:
        """Training loss on a batch `{"video": [B,T,C,H,W] in [0,1], "text": list[str], ...}`.

        Return a scalar, or a dict whose "loss" entry is optimised and whose other entries are logged.
        """

    def training_flops_per_step(self, batch: dict[str, Any]) -> float:
        """FLOPs of a training step's forward and backward on `batch` (torch's FLOP counter; the optimizer's
        elementwise update is not counted). A model whose steps differ in cost overrides this with their mean."""
        return training_flops(self, lambda: self.compute_loss(batch))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.compute_loss(batch)
        losses = out if isinstance(out, dict) else {"loss": out}
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at global step {self.global_step}; "
                "lower the learning rate or resume from the last good checkpoint"
            )
        batch_size = batch["video"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = optimised_loss(self.compute_loss(batch))
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (foreach: batched over parameters) with linear warm-up, then constant or cosine decay per step.

        Not `fused`: Lightning's mixed-precision plugins refuse to clip the gradients of a fused optimizer."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay, foreach=True)
        attached = self._trainer is not None
        total = self.trainer.max_steps if attached and self.trainer.max_steps > 0 else None
        # A budget callback (zoo.training.CPUTimeBudget) tells the share of its budget spent.
        budgets = [callback.budget_used for callback in self.trainer.callbacks if hasattr(callback, "budget_used")
                   ] if attached else []
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(lr_factor, warmup=self.config.lr_warmup_steps,
                                         schedule=self.config.lr_schedule, total=total,
                                         budget_used=budgets[0] if budgets else None))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- generation ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        """Sample `[num_videos, num_frames, C, H, W]`; arguments are already validated."""

    @torch.no_grad()
    def generate(
        self,
        num_videos: int,
        num_frames: int,
        cond: Conditioning | None = None,
        generator: torch.Generator | int | None = None,
    ) -> Tensor:
        """Generate videos `[num_videos, num_frames, C, H, W]`, float in [0, 1].

        `generator` may be a torch.Generator or an int seed; the same seed gives the same videos.
        """
        cond = cond if cond is not None else Conditioning()
        self._validate_request(num_videos, num_frames, cond)
        generator = self._as_generator(generator)
        was_training = self.training
        self.eval()
        try:
            cond = self._conditioning_on_device(cond)
            with sampling_context(self.config.sampling_precision, self.device):
                videos = self.generate_inner(num_videos, num_frames, cond, generator)
        finally:
            self.train(was_training)
        expected = (num_videos, num_frames, *self.frame_size)
        if tuple(videos.shape) != expected:
            raise RuntimeError(f"{self.model_name} produced shape {tuple(videos.shape)}, expected {expected}")
        if not torch.isfinite(videos).all():
            raise FloatingPointError(f"{self.model_name} produced NaN/Inf samples; the checkpoint may be diverged")
        return videos.float().clamp(0.0, 1.0)

    def _as_generator(self, generator: torch.Generator | int | None) -> torch.Generator:
        if isinstance(generator, torch.Generator):
            return generator
        seeded = torch.Generator(device=self.device)
        seeded.manual_seed(0 if generator is None else int(generator))
        return seeded

    def _conditioning_on_device(self, cond: Conditioning) -> Conditioning:
        def to_device(frames: Tensor | None) -> Tensor | None:
            return None if frames is None else frames.to(self.device, torch.float32)

        return dataclasses.replace(cond, context=to_device(cond.context), end_context=to_device(cond.end_context))

    def _validate_request(self, num_videos: int, num_frames: int, cond: Conditioning) -> None:
        if num_videos < 1 or num_frames < 1:
            raise ConditioningError(f"num_videos and num_frames must be >= 1, got {num_videos} and {num_frames}")
        if not self.can_extend and num_frames > self.clip_length:
            raise ConditioningError(
                f"{self.model_name} cannot extend beyond its training length {self.clip_length}; "
                f"ask for at most {self.clip_length} frames"
            )
        unsupported = cond.kinds() - set(self.supported_conditions)
        if unsupported:
            raise ConditioningError(
                f"{self.model_name} does not support conditioning on {sorted(unsupported)}; "
                f"it supports {sorted(self.supported_conditions) or 'none'}"
            )
        if cond.text is not None and len(cond.text) != num_videos:
            raise ConditioningError(f"got {len(cond.text)} prompts for {num_videos} videos; pass one per video")
        if cond.script is not None:
            if cond.text is not None:
                raise ConditioningError("pass either text or script, not both")
            total = sum(length for _, length in cond.script)
            if total != num_frames or any(length < 1 for _, length in cond.script):
                raise ConditioningError(
                    f"script segments add up to {total} frames but {num_frames} were requested; "
                    "make the segment lengths (each >= 1) sum to num_frames"
                )
        for name in ("context", "end_context"):
            frames = getattr(cond, name)
            if frames is None:
                continue
            if frames.ndim != 5 or tuple(frames.shape[2:]) != self.frame_size or frames.shape[0] != num_videos:
                raise ConditioningError(
                    f"{name} must be [{num_videos}, T, {', '.join(map(str, self.frame_size))}], "
                    f"got {list(frames.shape)}"
                )
            if frames.dtype == torch.uint8 or (frames.min() < 0 or frames.max() > 1):
                raise ConditioningError(f"{name} must be float in [0, 1]; divide uint8 frames by 255")
        used = sum(f.shape[1] for f in (cond.context, cond.end_context) if f is not None)
        if used >= num_frames and used > 0:
            raise ConditioningError(
                f"context frames ({used}) leave nothing to generate in {num_frames} frames; ask for more frames"
            )
