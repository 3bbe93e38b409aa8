"""Training a zoo model with Lightning's Trainer: devices, precision, checkpointing and resume belong to Lightning.

What this module adds: the batch size is the global batch (split over DDP ranks), and a resumed run replays an
uninterrupted one exactly — Lightning restores weights, optimizer and loop progress, `RandomStateCheckpoint` the RNG
states of every rank, and the train loader (`zoo.data.resumable`) its position in the epoch.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, WeightAveraging
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from hvz_registry import unknown_name
from zoo.config import ConfigError, build_config, config_dir, load_yaml, parse_overrides
from zoo.interface import VideoGenerator
from zoo.precision import Float32Attention


@dataclass
class TrainerConfig:
    """What `zoo train` passes to `lightning.Trainer` (any key is overridable as `trainer.<key>=...`).

    batch_size is the GLOBAL batch: each of the devices x num_nodes processes loads batch_size / (devices x num_nodes)
    clips per step, so the same batch_size gives the same optimisation on 1 CPU or 64 GPUs. strategy: "auto", "ddp",
    "fsdp", ... (Lightning's names). max_minutes: a wall-clock budget that also ends training (whichever of it and
    max_steps comes first). max_cpu_minutes: a budget of this process's CPU time (all its threads; data loading
    with num_workers=0 included), so a run's budget does not shrink when other jobs share the machine; equal CPU
    budgets across models compare strategies at equal cost, not equal steps. precision: Lightning's names;
    "bf16-mixed" on a CPU keeps attention in float32 (`CPUBF16Mixed`).
    """

    max_steps: int = 200
    max_minutes: float | None = None
    max_cpu_minutes: float | None = None
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
    """`zoo/configs/trainer/<preset>.yaml` merged with overrides."""
    path = config_dir() / "trainer" / f"{preset}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(unknown_name("trainer preset", preset, presets, f"presets: {', '.join(presets)}"))
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(list(overrides))
    return build_config(TrainerConfig, load_yaml(path), overrides, where=f"trainer preset '{preset}'")


def _rng_state() -> dict[str, Any]:
    """This process's torch / numpy / python (and CUDA) RNG states, as tensors, ints and lists only."""
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


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CPUBF16Mixed(MixedPrecision):
    """Lightning's bf16-mixed on CPU with attention in float32 (`Float32Attention`): what `precision: bf16-mixed`
    trains with on a CPU."""

    def __init__(self) -> None:
        super().__init__("bf16-mixed", "cpu")

    @contextmanager
    def forward_context(self) -> Iterator[None]:
        with super().forward_context(), Float32Attention():
            yield


def precision_plugin(precision: str, accelerator: str) -> dict[str, Any]:
    """The `lightning.Trainer` arguments for `precision` on `accelerator`: CPU bf16-mixed as `CPUBF16Mixed`."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision == "bf16-mixed" and on_cpu:
        return {"plugins": [CPUBF16Mixed()]}
    return {"precision": precision}


class CPUTimeBudget(L.Callback):
    """Stops training once this process has used `minutes` of CPU time in fit (checked after every step);
    `budget_used()` is the share spent so far, which a cosine learning-rate schedule decays over.

    Resuming starts a new count: the budget is per `fit`, like Lightning's `max_time`.
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.started: float | None = None

    def budget_used(self) -> float:
        return 0.0 if self.started is None else (time.process_time() - self.started) / self.seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.process_time()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.budget_used() >= 1.0:
            trainer.should_stop = True


class RandomStateCheckpoint(L.Callback):
    """Seeds every rank at fit start with `seed + rank`, and saves / restores all ranks' RNG states with checkpoints.

    Distinct per-rank seeds keep DDP ranks from drawing the same noise for their shares of a batch; rank 0 draws
    what a single process draws. Lightning restores weights, optimizer and loop progress; with the RNG states (and
    the resumable train loader) a resumed run draws the same noise as an uninterrupted one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rank, self.world_size = 0, 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Runs after the processes are launched and before a checkpoint is restored.
        self.rank, self.world_size = trainer.global_rank, trainer.world_size
        L.seed_everything(self.seed + self.rank, workers=True, verbose=False)

    def state_dict(self) -> dict[str, Any]:
        # Lightning builds checkpoints on every rank (rank 0 writes), so gathering here reaches all ranks.
        local = _rng_state()
        # The trainer's own world, not torch.distributed's: `zoo bench` trains on rank 0 alone inside its group.
        if self.world_size == 1:
            return {"ranks": [local]}
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, local)
        return {"ranks": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict["ranks"]
        # Resuming on a different number of ranks reuses the saved states round robin (the run is no longer exact).
        _set_rng_state(ranks[self.rank % len(ranks)])


class StepProgressBar(RichProgressBar):
    """One bar over the whole run, `step k/max_steps` with the loss.

    Lightning's default bar counts epochs, which a run bounded by max_steps does not have (it showed `Epoch 0/-2`).
    """

    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return "step"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.train_progress_bar_id is None:  # created once: epochs are not reset
            super().on_train_epoch_start(trainer, pl_module)
            self._update(self.train_progress_bar_id, trainer.global_step)  # a resumed run starts where it stopped

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.train_progress_bar_id is None:  # resumed mid-epoch
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the log folder's version number, not a training quantity
        return metrics


def eval_modules_outside_frozen_parts(model: nn.Module) -> list[str]:
    """Names of the modules in eval mode that are not inside a frozen part.

    A frozen part is a module in eval mode whose parameters (at least one) all have requires_grad False: the frozen
    autoencoder, for instance. A parameterless module (dropout) counts as frozen only inside one.
    """
    frozen: list[str] = []
    outside: list[str] = []
    for name, module in model.named_modules():  # parents come before their children
        if module.training or any(name.startswith(f"{part}.") for part in frozen):
            continue
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            frozen.append(name)
        else:
            outside.append(name)
    return outside


class FrozenPartsInEvalMode(L.Callback):
    """Silences Lightning's "Found N module(s) in eval mode" when every such module is inside a frozen part.

    Frozen parts stay in eval mode by design; a trainable module left in eval mode (dropout off, norms not
    updating) still warns.
    """

    def __init__(self) -> None:
        self._silenced: warnings.catch_warnings | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning warns after this hook and before on_train_start (FitLoop.on_run_start).
        if not eval_modules_outside_frozen_parts(pl_module):
            self._silenced = warnings.catch_warnings()
            self._silenced.__enter__()
            warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode", PossibleUserWarning)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._silenced is not None:
            self._silenced.__exit__(None, None, None)
            self._silenced = None


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "try installing [litlogger]" not in record.getMessage()


_LITLOGGER_TIP = _DropLitLoggerTip()


def silence_lightning_notes() -> None:
    """Hide three Lightning messages that ask nothing of a zoo user; call before building a max_steps Trainer.

    The litlogger advert is logged by every Trainer that has no LitLogger, and no setting turns it off. The pytree
    FutureWarning is Lightning's own call to torch (lightning/pytorch/utilities/_pytree.py), not ours. "The number
    of training batches is smaller than the logging interval" does not apply to a run bounded by max_steps: Lightning
    logs every log_every_n_steps global steps across epoch boundaries.
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_module  # holds the logger rank_zero_info uses

    rank_zero_module.log.addFilter(_LITLOGGER_TIP)  # idempotent
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
                            r"lightning\.pytorch\.utilities\._pytree")
    warnings.filterwarnings("ignore", r"The number of training batches \(\d+\) is smaller than the logging interval",
                            PossibleUserWarning, r"lightning\.pytorch\.loops\.fit_loop")


def quiet_fit_callbacks(progress_bar: bool) -> list[L.Callback]:
    """Callbacks for a max_steps fit whose output shows only what is the user's to act on (see above)."""
    return [FrozenPartsInEvalMode(), *([StepProgressBar()] if progress_bar else [])]


def ema_average(decay: float):
    """`AveragedModel` avg_fn of an EMA whose decay warms up as min(decay, (1 + n) / (10 + n)) after n updates
    (as diffusers' EMAModel), so that a run of a few hundred steps does not keep its random start."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        warm = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return averaged + (current - averaged) * (1.0 - warm)

    return average


class SamplingEMA(WeightAveraging):
    """Lightning's weight averaging with a warmed-up EMA (`ema_average`): checkpoints hold the averaged weights,
    which sampling uses, and keep the raw ones for resuming. The final checkpoint is written at the end of training,
    before the averaged weights replace the raw ones in the model (after that, the raw ones are gone)."""

    def __init__(self, decay: float, final_checkpoint: Path) -> None:
        super().__init__(avg_fn=ema_average(decay), use_buffers=True)
        self.final_checkpoint = final_checkpoint

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.final_checkpoint, weights_only=False)
        super().on_train_end(trainer, pl_module)


def _check_data_fits_model(model: VideoGenerator, dataset: Any) -> None:
    channels, size, _ = model.frame_size
    if dataset.channels != channels or dataset.image_size != size:
        raise ConfigError(
            f"dataset frames are {dataset.channels}x{dataset.image_size}x{dataset.image_size} but model "
            f"'{model.model_name}' makes {channels}x{size}x{size}; set model.channels / model.image_size to match"
        )


def world_size(trainer: L.Trainer) -> int:
    """Processes the trainer will run: devices per node x nodes (known before the processes are launched)."""
    return trainer.num_devices * trainer.num_nodes


def per_process_batch_size(global_batch_size: int, processes: int) -> int:
    """The batch each process loads; the global batch must split evenly."""
    if global_batch_size % processes:
        lower = global_batch_size - global_batch_size % processes
        raise ConfigError(
            f"trainer.batch_size={global_batch_size} is the global batch and must split evenly over {processes} "
            f"processes (devices x num_nodes); use {lower or processes} or {lower + processes}"
        )
    return global_batch_size // processes


def check_resumable(checkpoint: Path, model: VideoGenerator) -> int:
    """The global step of a checkpoint `model` can resume from; a one-line `ConfigError` if it cannot.

    Reads the file memory-mapped, so checking a large checkpoint costs little.
    """
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        step = int(ckpt["global_step"])
        found = {str(key): tuple(tensor.shape) for key, tensor in ckpt["state_dict"].items()}
        owner = str(ckpt.get("hyper_parameters", {}).get("model_name", "another model"))
    except Exception as exc:  # a cut or garbled file fails in zipfile, pickle, or as a missing key: all "unusable"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot resume from {checkpoint} ({reason}); delete it to start over, or pass another --out"
        ) from exc
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    if found != expected:
        differing = sorted(set(found) ^ set(expected)) or sorted(k for k in expected if found[k] != expected[k])
        raise ConfigError(
            f"{checkpoint} holds weights of '{owner}' that do not fit '{model.model_name}' as configured "
            f"(first difference: {differing[0]}); pass another --out, or the model overrides that run used"
        )
    return step


def latest_checkpoint(out_dir: Path, model: VideoGenerator) -> tuple[Path, int] | None:
    """The checkpoint of a run folder with the highest step, and that step; None in a fresh folder.

    Candidates: `checkpoints/last.ckpt` and the `hpc_ckpt_*.ckpt` Lightning writes when SLURM signals the end of a
    job. Each is checked with `check_resumable`, so an unusable one is a one-line `ConfigError`.
    """
    candidates = [out_dir / "checkpoints" / "last.ckpt", *sorted(out_dir.glob("hpc_ckpt_*.ckpt"))]
    steps = [(path, check_resumable(path, model)) for path in candidates if path.is_file()]
    return max(steps, key=lambda found: found[1], default=None)


def train_model(
    model: VideoGenerator,
    data: str,
    out_dir: str | Path,
    trainer_cfg: TrainerConfig | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> TrainResult:
    """Fit `model` on dataset `data` with Lightning; resumes from the run folder's latest checkpoint when present.

    Clips are cut to the model's training length; the final checkpoint is `out_dir/checkpoints/last.ckpt`.
    A non-finite loss raises `FloatingPointError` naming the step and the last good checkpoint (which is kept).
    """
    from zoo.data import VideoDataModule

    cfg = trainer_cfg or TrainerConfig()
    out_dir = Path(out_dir)
    silence_lightning_notes()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    checkpoint_dir = out_dir / "checkpoints"
    checkpointing = ModelCheckpoint(
        dirpath=checkpoint_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.checkpoint_every_n_steps
    )
    last = checkpoint_dir / "last.ckpt"
    averaging = [SamplingEMA(model.config.ema_decay, last)] if model.config.ema_decay else []
    budget = [CPUTimeBudget(cfg.max_cpu_minutes)] if cfg.max_cpu_minutes else []
    trainer = L.Trainer(
        max_steps=cfg.max_steps,
        max_time={"seconds": cfg.max_minutes * 60} if cfg.max_minutes else None,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        **precision_plugin(cfg.precision, cfg.accelerator),
        gradient_clip_val=cfg.gradient_clip_val,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.enable_progress_bar,
        deterministic=cfg.deterministic,
        default_root_dir=str(out_dir),
        callbacks=[checkpointing, RandomStateCheckpoint(cfg.seed), *quiet_fit_callbacks(cfg.enable_progress_bar),
                   *budget, *averaging, *callbacks],
        limit_val_batches=0,
        enable_model_summary=False,
        # The train loader shards itself over ranks (zoo.data.resumable), so its order is resumable and matches
        # a single process with the same global batch.
        use_distributed_sampler=False,
        logger=L.pytorch.loggers.CSVLogger(str(out_dir), name="logs"),
    )
    batch_size = per_process_batch_size(cfg.batch_size, world_size(trainer))
    overrides = {"num_frames": model.clip_length, **(data_overrides or {})}
    if getattr(model.config, "stills_per_clip", 0):  # joint image-video training: the model asks for still frames
        overrides["stills_per_clip"] = model.config.stills_per_clip
    datamodule = VideoDataModule(data, batch_size=batch_size, num_workers=cfg.num_workers, overrides=overrides,
                                 seed=cfg.seed)
    datamodule.setup("fit")
    _check_data_fits_model(model, datamodule.train_dataset)
    resume = latest_checkpoint(out_dir, model)
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume[0]) if resume else None, weights_only=True)
    except FloatingPointError as exc:
        good = latest_checkpoint(out_dir, model)
        where = f"{good[0]}, step {good[1]}" if good else "none was written yet"
        raise FloatingPointError(f"{exc} ({where})") from exc
    if not averaging:  # (SamplingEMA wrote it before swapping in the averaged weights)
        trainer.save_checkpoint(last, weights_only=False)  # False: the full training state, so a longer run resumes
    loss = trainer.callback_metrics.get("train/loss")
    return TrainResult(
        checkpoint=last,
        steps=int(trainer.global_step),
        seconds=time.perf_counter() - started,
        final_loss=float(loss) if isinstance(loss, torch.Tensor) else None,
    )
