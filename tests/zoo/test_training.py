"""Training reliability: resumable data order, exact resume (in process and after SIGKILL), global batch under DDP."""

from __future__ import annotations

import csv
import math
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from zoo.config import ConfigError
from zoo.data.resumable import ResumableDataLoader, ShardedShuffleSampler
from zoo.interface import lr_factor
from zoo.plugins import import_plugins
from zoo.registry import create_model
from zoo.training import (
    CPUBF16Mixed,
    StepProgressBar,
    TrainerConfig,
    eval_modules_outside_frozen_parts,
    latest_checkpoint,
    per_process_batch_size,
    precision_plugin,
    train_model,
)

plugin = sys.modules[import_plugins([str(Path(__file__).with_name("plugin_models.py"))])[0]]

# 24 clips in batches of 4: an epoch is 6 steps, so the runs below resume mid-epoch and cross epoch boundaries.
TINY_DATA = {"train_size": 24}


def epoch_batches(loader: ResumableDataLoader) -> list[list[int]]:
    return [batch.tolist() for batch in loader]


def index_loader(num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> ResumableDataLoader:
    """A loader over the dataset [0, num_samples): its batches are the sample indices."""
    sampler = ShardedShuffleSampler(num_samples, batch_size * world_size, seed=3, rank=rank, world_size=world_size)
    return ResumableDataLoader(list(range(num_samples)), sampler, batch_size)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_together_load_the_single_process_batches(world_size: int) -> None:
    single = index_loader(22, 8)
    ranks = [index_loader(22, 8 // world_size, rank, world_size) for rank in range(world_size)]
    for _ in range(2):  # two epochs, each a fresh permutation
        expected = epoch_batches(single)
        shards = [epoch_batches(loader) for loader in ranks]
        assert len(expected) == 2  # 22 clips: the partial third global batch is dropped
        for step, batch in enumerate(expected):
            assert sorted(sum((shard[step] for shard in shards), [])) == sorted(batch)
    assert epoch_batches(index_loader(22, 8)) != epoch_batches(single)  # epoch 2 differs from epoch 0


def test_loader_resumes_mid_epoch_on_any_number_of_ranks() -> None:
    uninterrupted = index_loader(24, 4)
    batches = epoch_batches(uninterrupted) + epoch_batches(uninterrupted)
    interrupted = index_loader(24, 4)
    seen = epoch_batches(interrupted)
    epoch_1 = iter(interrupted)
    seen += [next(epoch_1).tolist() for _ in range(2)]  # stops in epoch 1, after 2 batches
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "samples_consumed": 8}
    resumed = index_loader(24, 4)
    resumed.load_state_dict(state)
    assert seen + epoch_batches(resumed) == batches
    # The same global batch on two ranks continues with the same samples.
    halves = [index_loader(24, 2, rank, 2) for rank in range(2)]
    for loader in halves:
        loader.load_state_dict(state)
    shards = [epoch_batches(loader) for loader in halves]
    assert [sorted(a + b) for a, b in zip(*shards, strict=True)] == [sorted(batch) for batch in batches[8:]]


def test_iterating_leaves_the_global_rng_alone() -> None:
    before = torch.get_rng_state()
    epoch_batches(index_loader(10, 4))
    assert torch.equal(torch.get_rng_state(), before)  # model noise must not depend on when loaders start


def test_global_batch_must_split_evenly() -> None:
    assert per_process_batch_size(16, 4) == 4
    with pytest.raises(ConfigError, match=r"batch_size=10 is the global batch .* 4 processes .* use 8 or 12"):
        per_process_batch_size(10, 4)


def test_resume_picks_the_latest_checkpoint_including_slurm_ones(tmp_path: Path) -> None:
    model = create_model("tiny_denoiser")
    assert latest_checkpoint(tmp_path, model) is None
    (tmp_path / "checkpoints").mkdir()
    for path, step in [("checkpoints/last.ckpt", 20), ("hpc_ckpt_1.ckpt", 10), ("hpc_ckpt_2.ckpt", 30)]:
        torch.save({"state_dict": model.state_dict(), "global_step": step}, tmp_path / path)
    assert latest_checkpoint(tmp_path, model) == (tmp_path / "hpc_ckpt_2.ckpt", 30)  # written when SLURM signalled
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"cut")
    with pytest.raises(ConfigError, match=r"cannot resume from .*hpc_ckpt_2\.ckpt .*delete it to start over"):
        latest_checkpoint(tmp_path, model)


def train(out: Path, max_steps: int, **trainer: object) -> dict[str, torch.Tensor]:
    """Train tiny_denoiser (noisy, so RNG state matters) as `zoo train` does; the final weights."""
    L.seed_everything(0, verbose=False)
    model = create_model("tiny_denoiser")
    config = TrainerConfig(max_steps=max_steps, batch_size=4, checkpoint_every_n_steps=5, enable_progress_bar=False,
                           **trainer)
    train_model(model, "moving_digits", out, config, data_overrides=TINY_DATA)
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    reference = train(tmp_path / "reference", 10)
    train(tmp_path / "resumed", 4)  # stops mid-epoch
    checkpoint = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "samples_consumed": 16}]
    resumed = train(tmp_path / "resumed", 10)  # the same call again continues to step 10, across an epoch end
    initial = create_model("tiny_denoiser").state_dict()
    assert any(not torch.allclose(reference[name], initial[name], atol=1e-3) for name in reference)  # it trained
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


class BarRecorder(L.Callback):
    """Records the step bar's (total, completed, description) after every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[float | None, float, str]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        bar = trainer.progress_bar_callback
        assert isinstance(bar, StepProgressBar)
        task = bar.progress.tasks[bar.train_progress_bar_id]
        self.seen.append((task.total, task.completed, task.description))


def test_progress_bar_counts_steps_of_max_steps_across_epochs_and_resume(tmp_path: Path) -> None:
    def run(max_steps: int) -> list[tuple[float | None, float, str]]:
        recorder = BarRecorder()
        config = TrainerConfig(max_steps=max_steps, batch_size=4, checkpoint_every_n_steps=5)
        train_model(create_model("tiny_denoiser"), "moving_digits", tmp_path, config, data_overrides=TINY_DATA,
                    callbacks=[recorder])
        return recorder.seen

    # 6 steps per epoch: the bar runs on through the epoch boundary instead of restarting.
    assert run(8) == [(8, step, "step") for step in range(1, 9)]
    assert run(10) == [(10, 9, "step"), (10, 10, "step")]  # a resumed run continues from its step


def eval_mode_warnings(model: torch.nn.Module, out: Path) -> list[str]:
    """Lightning's eval-mode warnings while train_model fits `model` for one step."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_model(model, "moving_digits", out, TrainerConfig(max_steps=1, batch_size=4, enable_progress_bar=False),
                    data_overrides=TINY_DATA)
    return [str(w.message) for w in caught if w.category is PossibleUserWarning and "in eval mode" in str(w.message)]


def test_frozen_parts_in_eval_mode_do_not_warn_trainable_ones_do(tmp_path: Path) -> None:
    frozen = create_model("tiny_denoiser")
    frozen.net[0].requires_grad_(False).eval()
    assert eval_modules_outside_frozen_parts(frozen) == []
    assert eval_mode_warnings(frozen, tmp_path / "frozen") == []
    trainable = create_model("tiny_denoiser")
    trainable.net[0].eval()  # trains, but with eval-mode behaviour: the user should hear of it
    assert eval_modules_outside_frozen_parts(trainable) == ["net.0"]
    assert eval_mode_warnings(trainable, tmp_path / "trainable") == [
        "Found 1 module(s) in eval mode at the start of training. This may lead to unexpected behavior during "
        "training. If this is intentional, you can ignore this warning."
    ]


def test_a_parameterless_module_in_eval_mode_is_frozen_only_inside_a_frozen_part() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(),
                                torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()))
    model[1].eval()
    model[2].requires_grad_(False).eval()
    assert eval_modules_outside_frozen_parts(model) == ["1"]


def logged_losses(run: Path) -> dict[int, float]:
    """train/loss per step from every CSV log of a run (a restart logs into a new version folder)."""
    losses = {}
    for path in sorted(run.glob("logs/version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


@pytest.mark.slow
def test_sigkilled_run_restarted_with_same_command_equals_uninterrupted_run(tmp_path: Path) -> None:
    """`zoo train` SIGKILLed mid-epoch, between checkpoints, then re-run verbatim: same weights, same losses."""
    command = ["train", "tiny_denoiser", "--data", "moving_digits", "--out", "run", "trainer.max_steps=16",
               "trainer.batch_size=4", "trainer.checkpoint_every_n_steps=5", "trainer.log_every_n_steps=1",
               "trainer.enable_progress_bar=false", "data.train_size=24"]
    (tmp_path / "reference").mkdir()
    (tmp_path / "crashed").mkdir()
    with ThreadPoolExecutor(1) as pool:  # the uninterrupted run beside the one that gets killed
        reference_run = pool.submit(plugin.run_zoo, command, cwd=tmp_path / "reference")
        killed = plugin.run_zoo(command, cwd=tmp_path / "crashed", env={plugin.KILL_AT_STEP_ENV: "13"})
        reference = reference_run.result()
    assert reference.returncode == 0, reference.stderr
    assert killed.returncode == -9  # SIGKILL at the start of step 13: the last checkpoint is step 10 (epoch 1)
    last = tmp_path / "crashed/run/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 10
    restarted = plugin.run_zoo(command, cwd=tmp_path / "crashed")
    assert restarted.returncode == 0, restarted.stderr
    assert f"resuming from {Path('run/checkpoints/last.ckpt')} (step 10)" in restarted.stdout
    assert "done: 16 steps" in restarted.stdout
    expected = torch.load(tmp_path / "reference/run/checkpoints/last.ckpt", weights_only=True)
    got = torch.load(last, weights_only=True)
    for name, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], value), name
    reference_losses = logged_losses(tmp_path / "reference/run")
    resumed_losses = logged_losses(tmp_path / "crashed/run")
    assert sorted(reference_losses) == list(range(16))
    assert resumed_losses == reference_losses


@pytest.mark.slow
def test_two_process_ddp_on_cpu_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """2 gloo processes x batch 4 == 1 process x batch 8: same samples per step, gradients averaged.

    The loss is deterministic (noise_scale=0), so the runs differ only by float summation order; the tolerance is
    100x below the gap to a run with a different batch, which shows it still tells batches apart.
    """
    steps = ["trainer.max_steps=8", "trainer.checkpoint_every_n_steps=4", "trainer.enable_progress_bar=false",
             "trainer.accelerator=cpu", "data.train_size=24", "model.noise_scale=0"]
    ddp = plugin.run_zoo(["train", "tiny_denoiser", "--data", "moving_digits", "--out", "ddp", "trainer.batch_size=8",
                          "trainer.strategy=ddp", "trainer.devices=2", *steps], cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("done: 8 steps") == 1  # rank 0 reports, once
    checkpoint = torch.load(tmp_path / "ddp/checkpoints/last.ckpt", weights_only=True)
    rank_states = checkpoint["callbacks"]["RandomStateCheckpoint"]["ranks"]
    assert len(rank_states) == 2 and not torch.equal(rank_states[0]["torch"], rank_states[1]["torch"])

    def single_process(batch_size: int) -> dict[str, torch.Tensor]:
        L.seed_everything(0, verbose=False)
        model = create_model("tiny_denoiser", noise_scale=0.0)
        config = TrainerConfig(max_steps=8, batch_size=batch_size, checkpoint_every_n_steps=4,
                               enable_progress_bar=False, accelerator="cpu")
        train_model(model, "moving_digits", tmp_path / f"single_{batch_size}", config, data_overrides=TINY_DATA)
        return model.state_dict()

    same_batch, other_batch = single_process(8), single_process(4)
    for name, value in checkpoint["state_dict"].items():
        assert torch.allclose(value, same_batch[name], atol=1e-5, rtol=0), name
    gap = max((other_batch[name] - same_batch[name]).abs().max().item() for name in same_batch)
    assert gap > 1e-3


def test_learning_rate_warms_up_then_decays_by_cosine_to_zero_at_max_steps() -> None:
    factors = [lr_factor(step, warmup=4, schedule="cosine", total=12) for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[8] == pytest.approx(0.5) and factors[12] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert [lr_factor(step, 2, "constant", 12) for step in (0, 1, 5, 11)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(50, 0, "cosine", None) == 1.0  # run length unknown (no trainer): constant


def test_cosine_follows_the_share_of_a_compute_budget_spent_when_it_is_further_along_than_the_steps() -> None:
    assert lr_factor(3, 2, "cosine", None, budget_used=lambda: 0.5) == pytest.approx(0.5)
    assert lr_factor(3, 2, "cosine", 1_000_000, budget_used=lambda: 0.5) == pytest.approx(0.5)
    assert lr_factor(10, 0, "cosine", 20, budget_used=lambda: 0.1) == pytest.approx(0.5)  # the steps lead
    assert lr_factor(3, 2, "cosine", None, budget_used=lambda: 1.3) == 0.0  # past the budget: stays at 0
    assert lr_factor(1, 2, "cosine", None, budget_used=lambda: 0.9) == 1.0  # still warming up
    assert lr_factor(3, 2, "constant", None, budget_used=lambda: 0.9) == 1.0
    with pytest.raises(ConfigError, match=r"lr_schedule must be one of \['constant', 'cosine'\], got 'linear'"):
        create_model("tiny_denoiser", overrides=["lr_schedule=linear"])
    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0, 1\)"):
        create_model("tiny_denoiser", overrides=["ema_decay=1.5"])


class RawWeights(L.Callback):
    """The raw (not averaged) weights after every optimiser step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({name: p.detach().clone() for name, p in pl_module.named_parameters()})


EMA_MODEL = ["ema_decay=0.5", "lr_warmup_steps=2", "lr_schedule=cosine"]


def test_ema_checkpoint_holds_the_warmed_up_average_and_keeps_raw_weights_for_resuming(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = create_model("tiny_denoiser", overrides=EMA_MODEL)
    raw = RawWeights()
    config = TrainerConfig(max_steps=6, batch_size=4, checkpoint_every_n_steps=5, enable_progress_bar=False)
    train_model(model, "moving_digits", tmp_path, config, data_overrides=TINY_DATA, callbacks=[raw])
    expected = dict(raw.steps[0])  # the first update copies; then decay min(0.5, (1 + n) / (10 + n))
    for updates, weights in enumerate(raw.steps[1:], start=1):
        keep = min(0.5, (1 + updates) / (10 + updates))
        expected = {name: expected[name] * keep + weights[name] * (1 - keep) for name in expected}
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    for name, value in expected.items():
        torch.testing.assert_close(checkpoint["state_dict"][name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-5, atol=1e-6)  # what sampling uses
        assert torch.equal(checkpoint["current_model_state"][name], raw.steps[-1][name])
    assert checkpoint["lr_schedulers"][0]["_last_lr"] == [0.0]  # cosine reached 0 at max_steps


def test_ema_run_stopped_and_resumed_equals_uninterrupted_run(tmp_path: Path) -> None:
    # Constant after warm-up: a cosine run's schedule depends on its max_steps, so a shorter run is no prefix.
    def run(out: Path, max_steps: int) -> dict[str, torch.Tensor]:
        L.seed_everything(0, verbose=False)
        model = create_model("tiny_denoiser", overrides=["ema_decay=0.5", "lr_warmup_steps=2"])
        config = TrainerConfig(max_steps=max_steps, batch_size=4, checkpoint_every_n_steps=5,
                               enable_progress_bar=False)
        train_model(model, "moving_digits", out, config, data_overrides=TINY_DATA)
        return torch.load(out / "checkpoints/last.ckpt", weights_only=True)

    reference = run(tmp_path / "reference", 8)
    run(tmp_path / "resumed", 3)
    resumed = run(tmp_path / "resumed", 8)
    for key in ("state_dict", "current_model_state"):
        for name, value in reference[key].items():
            assert torch.equal(resumed[key][name], value), (key, name)


def test_bf16_mixed_training_clips_gradients_and_learns(tmp_path: Path) -> None:
    # The GPU preset trains bf16-mixed with gradient clipping; Lightning refuses that for a fused optimizer.
    L.seed_everything(0, verbose=False)
    model = create_model("tiny_denoiser", overrides=["ema_decay=0.5"])
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    config = TrainerConfig(max_steps=3, batch_size=4, precision="bf16-mixed", gradient_clip_val=1.0,
                           enable_progress_bar=False)
    plugins = []

    class PrecisionPlugin(L.Callback):
        def on_train_start(self, trainer, *args) -> None:
            plugins.append(trainer.precision_plugin)

    result = train_model(model, "moving_digits", tmp_path, config, data_overrides=TINY_DATA,
                         callbacks=[PrecisionPlugin()])
    assert result.steps == 3
    assert any(not torch.equal(model.state_dict()[name], value) for name, value in initial.items())
    assert isinstance(plugins[0], CPUBF16Mixed)  # on CPU: attention in float32


def test_cpu_bf16_mixed_runs_attention_in_float32_and_the_rest_in_bfloat16() -> None:
    from torch.nn import functional as F

    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 8, generator=generator).bfloat16() for _ in range(3))
    mask = torch.rand(5, 5, generator=generator) > 0.3
    mask[:, 0] = True  # every query sees a key
    in_float32 = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask)
    layer = torch.nn.Linear(8, 8)
    with CPUBF16Mixed().forward_context():
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        assert layer(query.float()).dtype == torch.bfloat16  # autocast is on
        # Float32 inputs (e.g. after a float32 rotary embedding) would be cast to bfloat16 by autocast: caught too.
        from_float32 = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask)
    assert out.dtype == torch.bfloat16 and torch.equal(out, in_float32.bfloat16())
    assert torch.equal(from_float32, in_float32.bfloat16())
    # Autocast alone computes attention in bfloat16: the plugin's float32 attention is what the result equals.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    assert (plain.float() - in_float32).abs().max() > (out.float() - in_float32).abs().max()
    # Outside bfloat16 autocast, float32 attention is left alone.
    assert torch.equal(F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask),
                       in_float32)
    plugins = precision_plugin("bf16-mixed", "cpu")["plugins"]
    assert len(plugins) == 1 and isinstance(plugins[0], CPUBF16Mixed)
    assert precision_plugin("bf16-mixed", "gpu") == {"precision": "bf16-mixed"}
    assert precision_plugin("32-true", "cpu") == {"precision": "32-true"}


def test_cpu_time_budget_stops_training_once_the_process_has_used_it(tmp_path: Path) -> None:
    import time

    class StepCPUTimes(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_start(self, *args) -> None:
            self.start = time.process_time()

        def on_train_batch_end(self, *args) -> None:
            self.times.append(time.process_time() - self.start)

    recorder = StepCPUTimes()
    budget_seconds = 1.5
    config = TrainerConfig(max_steps=10_000, max_cpu_minutes=budget_seconds / 60, batch_size=4,
                           checkpoint_every_n_steps=10_000, enable_progress_bar=False)
    result = train_model(create_model("tiny_denoiser"), "moving_digits", tmp_path, config, data_overrides=TINY_DATA,
                         callbacks=[recorder])
    assert 1 < result.steps < 10_000 and result.steps == len(recorder.times)
    # It stops at the first step that reaches the budget, not before and not later.
    assert recorder.times[-2] < budget_seconds <= recorder.times[-1] + 0.05


def test_cosine_decays_to_zero_over_a_cpu_budget_whose_steps_are_not_known_in_advance(tmp_path: Path) -> None:
    import time

    class LearningRates(L.Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[float, float]] = []  # (share of the budget spent, rate the next step uses)

        def on_train_start(self, *args) -> None:
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, *args) -> None:
            spent = (time.process_time() - self.start) / budget_seconds
            self.seen.append((spent, trainer.optimizers[0].param_groups[0]["lr"]))

    budget_seconds = 2.0
    recorder = LearningRates()
    model = create_model("tiny_denoiser", overrides=["lr_schedule=cosine", "lr_warmup_steps=2"])
    config = TrainerConfig(max_steps=10_000_000, max_cpu_minutes=budget_seconds / 60, batch_size=4,
                           checkpoint_every_n_steps=10_000_000, enable_progress_bar=False)
    result = train_model(model, "moving_digits", tmp_path, config, data_overrides=TINY_DATA, callbacks=[recorder])
    assert result.steps > 10
    base = model.config.learning_rate
    rates = [rate / base for _, rate in recorder.seen[1:]]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))  # after warm-up it only falls
    assert rates[-1] < 0.01  # ~0 at the budget's end, though max_steps is nowhere near
    # Midway the rate is the cosine of the share of the budget spent (measured a moment apart, hence the slack).
    spent, rate = recorder.seen[len(recorder.seen) // 2]
    assert rate / base == pytest.approx(0.5 * (1 + math.cos(math.pi * spent)), abs=0.05)
