"""Throughput of every zoo model on this machine: `python -m benchmarks.bench_models [--models video_ar ...]`.

Per model (its tiny default config, or `--config` a preset name or YAML path): training steps/s at `--batch`,
generation frames/s at `--batch` for each `--frames` length, with the KV cache on and off where the model has one
(config key `use_kv_cache`), and frames/s at each `--steps` sampler step count where it has diffusion parts (every
`DiffusionConfig` in its config gets that count). Weights are random: cost does not depend on their values (an AR
model writes every token either way), so the numbers are for timing only, never a score. Text-conditioned models
are conditioned on a caption, so guidance costs what it costs in the benchmark protocols.

`--lanes N` instead compares, per model and precision, the two ways to spend N cores on training: one process with N
threads against N processes with one thread each, started together (their summed steps/s): which is how to run a
recipe's trainings side by side. With precisions 32 and bf16 it ends with the before/after of the zoo's training:
clips/s of fp32 in one N-thread process against bf16 in N one-thread processes.

`--protocol moving_digits` instead times generation as `zoo bench` does it under that protocol (its batch size,
frame shape, rollout lengths and conditioning, through `generate_samples`) and prints seconds per generated video
at each rollout and what `--videos` videos per rollout (default: the protocol's counts) would cost per model;
`--recipe` builds each model as that recipe does, and `--sampling-precisions 32-true,bf16-mixed` times each model in
both, side by side, with the speed-up over the first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf

from zoo.config import parse_overrides
from zoo.interface import Conditioning, VideoGenerator
from zoo.precision import SAMPLING_PRECISIONS
from zoo.registry import create_model, list_models, model_config
from zoo.training import CPUBF16Mixed

CAPTION = "a 3 moving left"


@dataclass
class Measurement:
    """One timed run: `rate` is training steps/s (`kind` "train") or generated frames/s (`kind` "generate").
    `precision` (training only) is a key of PRECISIONS.

    kv_cache is None for a model without a cache; sampling_steps is None for one without a diffusion part, else the
    step count of every sampler (or of each, "/"-joined, at the config's defaults).
    """

    model: str
    kind: str
    batch: int
    frames: int
    kv_cache: bool | None
    sampling_steps: str | None
    seconds: float
    precision: str = "32"

    @property
    def rate(self) -> float:
        work = 1 if self.kind == "train" else self.batch * self.frames
        return work / self.seconds


def diffusion_step_keys(config: Any, prefix: str = "") -> dict[str, int]:
    """Dotted config keys of every sampler step count in a model config, with their values (nested dataclasses)."""
    keys: dict[str, int] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "num_sampling_steps" and isinstance(value, int):
            keys[prefix + field.name] = value
        elif dataclasses.is_dataclass(value):
            keys.update(diffusion_step_keys(value, f"{prefix}{field.name}."))
    return keys


def recipe_row(recipe_name: str, name: str) -> tuple[str | None, dict[str, Any]]:
    """The config path and model overrides under which recipe `recipe_name` trains model `name` (its protocol's
    frame shape and the recipe's overrides), so a timing is that of the training the recipe runs."""
    from benchmarks.harness import load_protocol, load_recipe
    from benchmarks.harness.runner import model_overrides

    recipe = load_recipe(recipe_name)
    protocol = load_protocol(recipe.protocol, recipe.protocol_overrides)
    return recipe.row_settings(name).config_path, model_overrides(recipe, protocol, name)


def _conditioning(model: VideoGenerator, batch: int) -> Conditioning:
    return Conditioning(text=[CAPTION] * batch) if "text" in model.supported_conditions else Conditioning()


# Training precisions compared side by side, each as the forward context the trainer runs it in: "32" (32-true),
# "bf16" (`precision: bf16-mixed` on CPU, zoo.training.CPUBF16Mixed: attention in float32) and "bf16-sdpa"
# (Lightning's plain bf16-mixed autocast, attention in bfloat16 too: what bf16-mixed trained with before).
PRECISIONS: dict[str, Callable[[], AbstractContextManager]] = {
    "32": contextlib.nullcontext,
    "bf16": lambda: CPUBF16Mixed().forward_context(),
    "bf16-sdpa": lambda: MixedPrecision("bf16-mixed", "cpu").forward_context(),
}


def time_training(model: VideoGenerator, batch: int, steps: int, precision: str = "32") -> float:
    """Seconds per optimisation step (loss, backward, AdamW) on random clips, after one untimed warm-up step,
    in `precision` (a key of PRECISIONS)."""
    model.train()
    optimizer = model.configure_optimizers()["optimizer"]
    clips = _training_clips(model, batch)

    def step() -> None:
        with PRECISIONS[precision]():
            out = model.compute_loss(clips)
        loss = out["loss"] if isinstance(out, dict) else out
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def _training_clips(model: VideoGenerator, batch: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    return {"video": torch.rand(batch, model.clip_length, *model.frame_size, generator=generator),
            "text": [CAPTION] * batch}


def bf16_loss_error(model: VideoGenerator, batch: int, repeats: int = 4) -> float:
    """|loss_bf16 - loss_fp32| / loss_fp32 on the same clips and noise (mean over `repeats` seeds): how far the
    trainer's CPU bf16-mixed moves what is optimised."""
    model.train()
    clips = _training_clips(model, batch)
    errors = []
    for seed in range(repeats):
        losses = []
        for precision in ("32", "bf16"):
            torch.manual_seed(seed)
            with torch.no_grad(), PRECISIONS[precision]():
                out = model.compute_loss(clips)
            losses.append(float(out["loss"] if isinstance(out, dict) else out))
        errors.append(abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12))
    return sum(errors) / len(errors)


def time_generation(model: VideoGenerator, batch: int, frames: int) -> float:
    """Seconds for one `generate(batch, frames)` call."""
    started = time.perf_counter()
    model.generate(batch, frames, _conditioning(model, batch), generator=0)
    return time.perf_counter() - started


def measure_model(
    name: str,
    batch: int,
    frames: Sequence[int],
    steps: Sequence[int],
    train_steps: int,
    config: str | None = None,
    precisions: Sequence[str] = ("32",),
    base_overrides: Mapping[str, Any] | None = None,
) -> Iterator[Measurement]:
    """Measurements of model `name` (its config with `base_overrides` on top): training per precision, generation
    per length (cache on/off), and per sampler step count."""
    base_overrides = base_overrides or {}
    defaults = model_config(name, config_path=config, overrides=base_overrides)
    step_keys = diffusion_step_keys(defaults)
    has_cache = hasattr(defaults, "use_kv_cache")
    default_steps = "/".join(str(value) for value in step_keys.values()) or None

    def build(overrides: Sequence[str] = ()) -> VideoGenerator:
        torch.manual_seed(0)
        return create_model(name, config_path=config,
                            overrides=OmegaConf.merge(OmegaConf.create(dict(base_overrides)), parse_overrides(overrides)))

    model = build()
    for precision in precisions:
        seconds = time_training(model, batch, train_steps, precision)
        yield Measurement(name, "train", batch, model.clip_length, None, None, seconds, precision)
    frames = [length for length in frames if model.can_extend or length <= model.clip_length]
    for num_frames in frames:
        for use_cache in (True, False) if has_cache else (None,):
            if has_cache:
                model.config.use_kv_cache = use_cache
            seconds = time_generation(model, batch, num_frames)
            yield Measurement(name, "generate", batch, num_frames, use_cache, default_steps, seconds)
    for count in steps if step_keys and frames else ():
        stepped = build([f"{key}={count}" for key in step_keys])
        seconds = time_generation(stepped, batch, frames[0])
        yield Measurement(name, "generate", batch, frames[0], True if has_cache else None, str(count), seconds)


def _lane(name: str, config: str | None, overrides: dict[str, Any], batch: int, steps: int, precision: str,
          threads: int, barrier: Any, rates: Any) -> None:
    """One training process of `time_lanes`: build, wait for the others, time, report steps/s."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, config_path=config, overrides=overrides)
    time_training(model, batch, 1, precision)  # warm up before the common start
    barrier.wait()
    rates.put(1.0 / time_training(model, batch, steps, precision))


def time_lanes(name: str, config: str | None, overrides: Mapping[str, Any], batch: int, steps: int, precision: str,
               lanes: int) -> tuple[float, float]:
    """Training steps/s of one process with `lanes` threads, and the summed steps/s of `lanes` one-thread processes
    timed together (spawned: each has its own torch thread pool)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rates: list[float] = []
    for processes, threads in ((1, lanes), (lanes, 1)):
        barrier, queue = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=_lane, args=(name, config, dict(overrides), batch, steps, precision,
                                                        threads, barrier, queue)) for _ in range(processes)]
        for worker in workers:
            worker.start()
        rate = sum(queue.get() for _ in workers)
        for worker in workers:
            worker.join()
        rates.append(rate)
    return rates[0], rates[1]


@dataclass
class ProtocolCost:
    """Generation seconds per video of one model at each of a protocol's rollouts (`{rollout: seconds}`) when it
    samples in `sampling_precision`; `shares_prefixes`: its shorter rollouts' videos come from its longer ones
    (`share_rollout_prefixes`)."""

    model: str
    batch: int
    seconds_per_video: dict[int, float]
    shares_prefixes: bool = False
    sampling_precision: str = "32-true"

    def cost(self, videos: dict[int, int]) -> float:
        """Seconds to generate `videos[rollout]` videos at each rollout (less those a longer rollout makes)."""
        total = 0.0
        for rollout, count in videos.items():
            if rollout in self.seconds_per_video:
                longer = [n for r, n in videos.items() if r > rollout and r in self.seconds_per_video]
                made_longer = min(count, max(longer)) if self.shares_prefixes and longer else 0
                total += self.seconds_per_video[rollout] * (count - made_longer)
        return total


def time_protocol_generation(name: str, protocol_name: str, batches: int = 1, config: str | None = None,
                             overrides: Mapping[str, Any] | None = None, sampling_precision: str | None = None
                             ) -> ProtocolCost:
    """Seconds per video of model `name` generated as `zoo bench` generates under the protocol: `batches` batches
    of its `batch_size` per rollout, its frame shape and conditioning, written to a scratch sample folder; built
    from `config` and `overrides`, sampling in `sampling_precision` (default: as configured)."""
    from benchmarks.harness import generate_samples, load_protocol, load_reference

    protocol = load_protocol(protocol_name)
    videos = batches * protocol.batch_size
    protocol = dataclasses.replace(protocol, num_generated=videos, long_rollout_videos=videos)
    reference = load_reference(protocol)
    torch.manual_seed(0)
    overrides = {**(overrides or {}), "image_size": protocol.resolution, "channels": protocol.channels}
    if sampling_precision is not None:
        overrides["sampling_precision"] = sampling_precision
    model = create_model(name, config_path=config, overrides=overrides).eval()
    per_video = {}
    with tempfile.TemporaryDirectory() as scratch:
        for rollout in protocol.rollouts:
            if not model.can_extend and protocol.num_frames(rollout) > model.clip_length:
                continue
            manifest = generate_samples(model, protocol, reference, Path(scratch) / f"{rollout}x", 0, rollout,
                                        name, "timing")
            per_video[rollout] = manifest.sampling_seconds / videos
    return ProtocolCost(name, protocol.batch_size, per_video,
                        protocol.share_rollout_prefixes and model.prefix_consistent, model.config.sampling_precision)


def _protocol_main(args: argparse.Namespace, names: list[str], sampling_precisions: list[str]) -> list[ProtocolCost]:
    from benchmarks.harness import load_protocol

    protocol = load_protocol(args.protocol)
    counts = ([int(v) for v in args.videos.split(",") if v.strip()] if args.videos
              else [protocol.num_videos(r) for r in protocol.rollouts])
    if len(counts) != len(protocol.rollouts):
        raise SystemExit(f"--videos needs one count per rollout of {protocol.name} ({protocol.rollouts})")
    wanted = dict(zip(protocol.rollouts, counts, strict=True))
    precisions = sampling_precisions or [None]
    print(f"# protocol {protocol.name}: batch {protocol.batch_size}, {protocol.frames} frames per 1x, "
          f"{protocol.condition}-conditioned; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
          f"{_configs_label(args)} configs, random weights (timing only)")
    columns = [f"s/video {r}x" for r in protocol.rollouts] + [f"{n} @{r}x (s)" for r, n in wanted.items()]
    print(f"{'model':<26} {'sampling':<10} " + " ".join(f"{c:>14}" for c in columns) + f" {'total (s)':>10}"
          + (f" {'speed-up':>8}" if len(precisions) > 1 else ""))
    results = []
    for name in names:
        config, overrides = _row_config(args, name)
        first = None
        for precision in precisions:
            cost = time_protocol_generation(name, args.protocol, args.batches, config, overrides, precision)
            results.append(cost)
            first = first or cost
            cells = [cost.seconds_per_video.get(r) for r in protocol.rollouts]
            cells += [cost.cost({r: n}) if r in cost.seconds_per_video else None for r, n in wanted.items()]
            print(f"{name:<26} {cost.sampling_precision:<10} "
                  + " ".join(f"{'-' if c is None else f'{c:.3f}':>14}" for c in cells) + f" {cost.cost(wanted):>10.1f}"
                  + (f" {first.cost(wanted) / cost.cost(wanted):>7.2f}x" if len(precisions) > 1 else ""), flush=True)
    return results


def _row_config(args: argparse.Namespace, name: str) -> tuple[str | None, dict[str, Any]]:
    """The config path and overrides model `name` is timed under: the recipe's (`--recipe`), else `--config`'s."""
    return recipe_row(args.recipe, name) if args.recipe else (args.config, {})


def _configs_label(args: argparse.Namespace) -> str:
    return f"recipe {args.recipe}'s" if args.recipe else args.config or "tiny"


def _lanes_main(args: argparse.Namespace, names: list[str], precisions: list[str]) -> list[tuple[str, str, float, float]]:
    lanes = args.lanes
    print(f"# batch {args.batch}, torch {torch.__version__}, CPU, {args.train_steps} timed steps, "
          f"{_configs_label(args)} configs; training steps/s on {lanes} "
          "cores: one process with all threads vs one-thread processes side by side (summed)")
    print(f"{'model':<26} {'precision':<10} {f'1 x {lanes} threads':>16} {f'{lanes} x 1 thread':>16} {'gain':>6}")
    results = []
    for name in names:
        config, overrides = _row_config(args, name)
        for precision in precisions:
            threaded, side_by_side = time_lanes(name, config, overrides, args.batch, args.train_steps, precision,
                                                lanes)
            results.append((name, precision, threaded, side_by_side))
            print(f"{name:<26} {precision:<10} {threaded:>16.2f} {side_by_side:>16.2f} "
                  f"{side_by_side / threaded:>5.2f}x", flush=True)
    if {"32", "bf16"} <= set(precisions):
        # The zoo issue's before/after: how a model trained before (fp32, one process with every thread) against how
        # the pretrain recipe trains it now (bf16, one-thread processes side by side, as many as cores).
        print(f"# clips/s the {lanes} cores train per model: fp32 in 1 x {lanes} threads (before) vs bf16 in "
              f"{lanes} x 1 thread (the pretrain recipe's way)")
        print(f"{'model':<26} {'before':>10} {'now':>10} {'gain':>6}")
        rates = {(name, precision): (threaded, side_by_side) for name, precision, threaded, side_by_side in results}
        for name in names:
            before, now = rates[name, "32"][0] * args.batch, rates[name, "bf16"][1] * args.batch
            print(f"{name:<26} {before:>10.1f} {now:>10.1f} {now / before:>5.2f}x", flush=True)
    return results


def _cell(value: bool | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def main(argv: Sequence[str] | None = None) -> list[Measurement] | list[ProtocolCost]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(list_models()), help="comma-separated registered model names")
    parser.add_argument("--config", default=None,
                        help="a preset name (zoo/configs/model/presets/) or YAML path, one model")
    parser.add_argument("--recipe", default=None,
                        help="time each model as this recipe trains it (its protocol's frames, its model overrides)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", default="16,64", help="comma-separated generated video lengths")
    parser.add_argument("--steps", default="10,25,50", help="comma-separated sampler step counts (diffusion parts)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--precisions", default="32,bf16-sdpa,bf16",
                        help=f"comma-separated training precisions, side by side: {', '.join(PRECISIONS)}")
    parser.add_argument("--lanes", type=int, default=0,
                        help="compare one training process with N threads against N one-thread processes instead")
    parser.add_argument("--protocol", default=None,
                        help="time generation as `zoo bench` does under this protocol (seconds per video) instead")
    parser.add_argument("--videos", default=None,
                        help="with --protocol: comma-separated videos per rollout to cost (default: the protocol's)")
    parser.add_argument("--batches", type=int, default=1, help="with --protocol: timed batches per rollout")
    parser.add_argument("--sampling-precisions", default="",
                        help="with --protocol: comma-separated sampling precisions timed side by side "
                             f"({', '.join(SAMPLING_PRECISIONS)}; default: each model's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if args.config is not None and len(names) != 1:
        parser.error("--config applies to one model: pass --models NAME with it")
    if args.config is not None and args.recipe is not None:
        parser.error("--config and --recipe both choose the config: pass one")
    precisions = [value.strip() for value in args.precisions.split(",") if value.strip()]
    if unknown := sorted(set(precisions) - set(PRECISIONS)):
        parser.error(f"unknown precision '{unknown[0]}'; use {', '.join(PRECISIONS)}")
    sampling = [value.strip() for value in args.sampling_precisions.split(",") if value.strip()]
    if unknown := sorted(set(sampling) - set(SAMPLING_PRECISIONS)):
        parser.error(f"unknown sampling precision '{unknown[0]}'; use {', '.join(SAMPLING_PRECISIONS)}")
    if args.protocol is not None:
        return _protocol_main(args, names, sampling)
    if args.lanes:
        return _lanes_main(args, names, precisions)
    frames = [int(value) for value in args.frames.split(",") if value.strip()]
    steps = [int(value) for value in args.steps.split(",") if value.strip()]
    print(f"# batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
          f"{_configs_label(args)} configs, random weights (timing only)")
    print(f"{'model':<26} {'measure':<15} {'frames':>6} {'kv_cache':>8} {'steps':>8} {'rate':>9} {'unit':<9} "
          f"{'s':>8}")
    results = []
    for name in names:
        config, overrides = _row_config(args, name)
        for result in measure_model(name, args.batch, frames, steps, args.train_steps, config, precisions, overrides):
            results.append(result)
            unit = "steps/s" if result.kind == "train" else "frames/s"
            measure = f"train/{result.precision}" if result.kind == "train" else result.kind
            print(f"{name:<26} {measure:<15} {result.frames:>6} {_cell(result.kv_cache):>8} "
                  f"{_cell(result.sampling_steps):>8} {result.rate:>9.2f} {unit:<9} {result.seconds:>8.2f}", flush=True)
        if "bf16" in precisions:
            torch.manual_seed(0)
            error = bf16_loss_error(create_model(name, config_path=config, overrides=overrides), args.batch)
            print(f"{name:<26} bf16 loss vs fp32 on the same clips and noise: {error:.2e} relative", flush=True)
    return results


if __name__ == "__main__":
    main()
