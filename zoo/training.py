"""Training a zoo model with Lightning's Trainer: devices, precision, checkpointing and resume belong to Lightning."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from zoo.config import ConfigError, build_config, config_dir, load_yaml, parse_overrides
from zoo.interface import VideoGenerator


@dataclass
class TrainerConfig:
    """What `zoo train` passes to `lightning.Trainer` (any key is overridable as `trainer.<key>=...`)."""

    max_steps: int = 200
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float = 1.0
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 50
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class TrainResult:
    """Where the weights went and what training cost."""

    checkpoint: Path
    steps: int
    seconds: float
    final_loss: float | None


def trainer_config(
    preset: str = "default", overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> TrainerConfig:
    """`configs/trainer/<preset>.yaml` merged with overrides."""
    path = config_dir() / "trainer" / f"{preset}.yaml"
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(list(overrides))
    return build_config(TrainerConfig, load_yaml(path), overrides, where=f"trainer preset '{preset}'")


class RandomStateCheckpoint(L.Callback):
    """Saves and restores the torch / numpy / python RNG states with each checkpoint.

    Lightning restores weights, optimizer and loop progress; with the RNG states (and a resumable data order) a
    resumed run draws the same noise as an uninterrupted one.
    """

    def state_dict(self) -> dict[str, Any]:
        bit_generator = np.random.get_state()
        python_state = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(bit_generator[1].astype(np.int64)), "pos": bit_generator[2],
                      "has_gauss": bit_generator[3], "cached_gaussian": bit_generator[4]},
            # Plain ints and lists only: checkpoints load with weights_only=True.
            "python": [python_state[0], list(python_state[1]), python_state[2]],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        numpy_state = state_dict["numpy"]
        np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                             numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _check_data_fits_model(model: VideoGenerator, dataset: Any) -> None:
    channels, size, _ = model.frame_size
    if dataset.channels != channels or dataset.image_size != size:
        raise ConfigError(
            f"dataset frames are {dataset.channels}x{dataset.image_size}x{dataset.image_size} but model "
            f"'{model.model_name}' makes {channels}x{size}x{size}; set model.channels / model.image_size to match"
        )


def train_model(
    model: VideoGenerator,
    data: str,
    out_dir: str | Path,
    trainer_cfg: TrainerConfig | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> TrainResult:
    """Fit `model` on dataset `data` with Lightning; resumes from `out_dir/checkpoints/last.ckpt` when present.

    Clips are cut to the model's training length; the final checkpoint is `out_dir/checkpoints/last.ckpt`.
    """
    from zoo.data import VideoDataModule

    cfg = trainer_cfg or TrainerConfig()
    out_dir = Path(out_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    overrides = {"num_frames": model.clip_length, **(data_overrides or {})}
    datamodule = VideoDataModule(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers, overrides=overrides,
                                 seed=cfg.seed)
    datamodule.setup("fit")
    _check_data_fits_model(model, datamodule.train_dataset)
    checkpoint_dir = out_dir / "checkpoints"
    checkpointing = ModelCheckpoint(
        dirpath=checkpoint_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.checkpoint_every_n_steps
    )
    trainer = L.Trainer(
        max_steps=cfg.max_steps,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        gradient_clip_val=cfg.gradient_clip_val,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.enable_progress_bar,
        deterministic=cfg.deterministic,
        default_root_dir=str(out_dir),
        callbacks=[checkpointing, RandomStateCheckpoint(), *callbacks],
        limit_val_batches=0,
        enable_model_summary=False,
        logger=L.pytorch.loggers.CSVLogger(str(out_dir), name="logs"),
    )
    last = checkpoint_dir / "last.ckpt"
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    except FloatingPointError as exc:
        good = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was written yet"
        raise FloatingPointError(f"{exc} ({good})") from exc
    trainer.save_checkpoint(last)
    loss = trainer.callback_metrics.get("train/loss")
    return TrainResult(
        checkpoint=last,
        steps=int(trainer.global_step),
        seconds=time.perf_counter() - started,
        final_loss=float(loss) if isinstance(loss, torch.Tensor) else None,
    )
