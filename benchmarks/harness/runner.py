"""`zoo bench <recipe>`: train (or load) each model, generate with fixed seeds, score, record cost, write results.

One result file per (model, protocol, seed): a `ResultRecord.zoo_run` written to its `path`,
`<results_dir>/<protocol>/<model>.<tag>.seed<k>.json`, beside a GIF sample strip. Re-running skips entries whose
result exists for the same result hash (protocol, extractor weights, scoring version) and run settings; `force`
redoes them (training included). Training, checkpoints and sample folders live under
`<runs_dir>/<protocol>/<row id>/`.

Under torchrun (or in any process group) rank 0 trains each row while the others wait, then every rank loads the
weights, generates its share of the batches and scores its share of the files; rank 0 writes results and the
leaderboard. The numbers equal a single process's (a test runs 2 gloo ranks against 1).

`lanes` > 1 runs rows side by side instead: that many spawned processes, each with its share of the threads, take the
next row from one queue (a row is done by one lane only). On CPU, small models use one thread poorly and two worse:
two one-thread lanes sample the pretrained zoo faster than one two-thread process (README "Throughput"), and a
one-thread lane reproduces the one-thread shipped rows bit for bit. Lanes take the rows longest first, by the stage
seconds an earlier result of the row recorded (rows without one first), so no lane is left with a long row at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.features.weight_cache import sha256_of
from benchmarks.files import atomic_write_json
from benchmarks.harness.distributed import (
    barrier,
    from_rank_zero,
    init_from_env,
    rank_and_world_size,
    rank_zero_first,
)
from benchmarks.harness.generation import conditioned_on, config_sha256, generate_rollouts, unsupported_reason
from benchmarks.harness.protocol import Protocol, load_protocol
from benchmarks.harness.provenance import GitState, PeakMemory, git_state, hardware, provenance
from benchmarks.harness.recipe import Recipe, load_recipe, resolve_models
from benchmarks.harness.reference import ReferenceSet, dataset_overrides, load_reference
from benchmarks.harness.samples import SamplesError, read_manifest, write_strip
from benchmarks.harness.scoring import score_samples
from benchmarks.leaderboard import build_leaderboard, print_table
from benchmarks.leaderboard.render import log_console
from benchmarks.record import ResultError, ResultRecord, result_path
from zoo.config import ConfigError
from zoo.interface import VideoGenerator


@dataclass
class Trained:
    """A model ready to sample, with what its training cost and the checksum of its weights."""

    model: VideoGenerator
    checkpoint_sha256: str
    steps: int | None
    seconds: float | None
    training_seed: int | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was requested but no CUDA GPU is visible; use device=cpu")
    return torch.device(name)


def model_overrides(recipe: Recipe, protocol: Protocol, name: str) -> dict[str, Any]:
    # The protocol pins the frame shape; the training clip length stays the model's own (a recipe may set it),
    # since what a model trains on is part of the method being compared. Results record it.
    pinned = {"image_size": protocol.resolution, "channels": protocol.channels}
    return {**pinned, **recipe.row_settings(name).overrides}


def training_data_overrides(recipe: Recipe, protocol: Protocol) -> dict[str, Any]:
    """The protocol's dataset settings for training; the clip length stays the model's own (see above)."""
    return {k: v for k, v in dataset_overrides(protocol, recipe.data_root).items() if k != "num_frames"}


def _check_frames(model: VideoGenerator, protocol: Protocol, source: str) -> None:
    if model.frame_size != (protocol.channels, protocol.resolution, protocol.resolution):
        raise ConfigError(
            f"{source} makes {'x'.join(map(str, model.frame_size))} frames but protocol '{protocol.name}' scores "
            f"{protocol.channels}x{protocol.resolution}x{protocol.resolution}"
        )


def prepare_model(name: str, recipe: Recipe, protocol: Protocol, run_dir: Path, device: torch.device) -> Trained:
    """Load the recipe's checkpoint for row `name`, or train it (resuming, or reusing a finished run in `run_dir`)."""
    from zoo.registry import create_model, load_model
    from zoo.training import train_model, trainer_config

    settings = recipe.row_settings(name)
    if recipe.pretrained:
        from zoo.pretrained import load_pretrained

        model, card = load_pretrained(recipe.pretrained_id(name))
        _check_frames(model, protocol, f"pretrained weights {recipe.pretrained_id(name)}")
        return Trained(model.to(device).eval(), card["sha256"], card["steps"], card["train_seconds"],
                       card["settings"]["trainer"]["seed"])
    if settings.checkpoint is not None:
        path = Path(settings.checkpoint)
        model = load_model(path)
        _check_frames(model, protocol, f"checkpoint {path}")
        return Trained(model.to(device).eval(), sha256_of(path), None, None, None)
    trainer_cfg = trainer_config(recipe.trainer_preset, settings.trainer)
    checkpoint, summary_path = run_dir / "checkpoints" / "last.ckpt", run_dir / "train.json"
    if summary_path.is_file() and checkpoint.is_file():
        summary = json.loads(summary_path.read_text())
        same_budget = summary.get("trainer") == dataclasses.asdict(trainer_cfg)
        if same_budget and summary.get("sha256") == sha256_of(checkpoint):
            model = load_model(checkpoint)
            _check_frames(model, protocol, f"checkpoint {checkpoint}")
            return Trained(model.to(device).eval(), summary["sha256"], summary["steps"], summary["seconds"],
                           trainer_cfg.seed)
    # The initial weights depend on the training seed only (as under `zoo train`), not on what this process ran
    # before: without this a row's init depended on which rows trained earlier in the same `zoo bench` run.
    L.seed_everything(trainer_cfg.seed, verbose=False)
    model = create_model(settings.model, config_path=settings.config_path,  # a preset name or a YAML path
                         overrides=model_overrides(recipe, protocol, name))
    _check_frames(model, protocol, f"model '{name}'")
    result = train_model(model, protocol.dataset.name, run_dir, trainer_cfg, training_data_overrides(recipe, protocol))
    sha256 = sha256_of(result.checkpoint)
    atomic_write_json(summary_path, {"trainer": dataclasses.asdict(trainer_cfg), "sha256": sha256,
                                     "steps": result.steps, "seconds": result.seconds})
    return Trained(model.to(device).eval(), sha256, result.steps, result.seconds, trainer_cfg.seed)


def run_settings_sha256(name: str, recipe: Recipe) -> str:
    """sha256 of what the recipe decides for one model: trainer budget, config file, overrides, checkpoint.

    A result made under other settings (say, more training steps) is not a finished entry of this recipe.
    """
    from zoo.training import trainer_config

    row = recipe.row_settings(name)
    trainer = dataclasses.asdict(trainer_config(recipe.trainer_preset, row.trainer))
    for key in ("max_minutes", "max_cpu_minutes"):  # added after results shipped: unset, they leave their hash as it was
        if trainer[key] is None:
            del trainer[key]
    settings = {"trainer": trainer,
                "config": row.config_path, "overrides": row.overrides, "checkpoint": row.checkpoint,
                "data_root": recipe.data_root}
    if recipe.pretrained:  # new shipped weights make the old results unfinished
        from zoo.pretrained import pretrained_card

        settings["pretrained_sha256"] = pretrained_card(recipe.pretrained_id(name))["sha256"]
    if row.model != name:  # a variant: which model it runs is a setting too
        settings["model"] = row.model
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def is_finished(path: Path, protocol: Protocol, settings_sha256: str) -> bool:
    """A result file that validates and was produced under this exact protocol, extractor weights and scoring
    version (its result hash) and these run settings."""
    try:
        record = ResultRecord.load(path)
    except ResultError:
        return False
    return (record.protocol["hash"] == protocol.result_hash
            and record.provenance.get("run_settings_sha256") == settings_sha256)


def _sample_folder_ready(folder: Path, protocol: Protocol, version: str, model: VideoGenerator) -> bool:
    """Whether `folder` holds this protocol's videos of these weights (`version`) sampled under `model`'s config."""
    try:
        manifest = read_manifest(folder)
    except SamplesError:
        return False
    return (manifest.protocol_hash == protocol.hash and manifest.generator_version == version
            and manifest.generator_config_sha256 == config_sha256(model))


def run_seed(
    trained: Trained, name: str, row_id: str, recipe: Recipe, protocol: Protocol, reference: ReferenceSet,
    seed: int, run_dir: Path, results_dir: Path, device: torch.device, progress: Progress, settings_sha256: str,
    memory: PeakMemory, git: GitState,
) -> Path:
    """Generate every rollout for one seed, score them, and write the result file (atomically); returns its path.

    `memory` measures this seed alone (entered by the caller); `git` is the state the run decided at its start.
    """
    model = trained.model
    seed_dir = run_dir / "samples" / f"seed{seed}"
    made, unsupported, seconds, frames_made = [], {}, None, 0
    stage_seconds: dict[str, float] = {}
    folders = {}
    for rollout in protocol.rollouts:
        reason = unsupported_reason(model, protocol, rollout)
        if reason is not None:
            unsupported[rollout] = reason
        else:
            folders[rollout] = seed_dir / f"rollout{rollout}x"
    missing = {rollout: folder for rollout, folder in folders.items()
               if not from_rank_zero(_sample_folder_ready(folder, protocol, trained.checkpoint_sha256, model))}
    if missing:
        rollouts = ", ".join(f"{rollout}x" for rollout in missing)
        task = progress.add_task(f"{row_id} seed {seed}: sampling {rollouts}",
                                 total=sum(protocol.num_videos(rollout) for rollout in missing))
        generate_rollouts(model, protocol, reference, missing, seed, row_id, trained.checkpoint_sha256,
                          on_batch=lambda n: progress.advance(task, n))
        progress.remove_task(task)
    for rollout, folder in folders.items():
        made.append(rollout)
        manifest = read_manifest(folder)
        stage_seconds[f"sampling_{rollout}x"] = round(manifest.sampling_seconds or 0.0, 2)
        if rollout == 1:
            seconds, frames_made = manifest.sampling_seconds, manifest.timed_frames
    scores = {"metrics": {}, "curves": {}, "manifest_sha256": {}, "samples_sha256": {}}
    if made:
        task = progress.add_task(f"{row_id} seed {seed}: scoring", total=None)
        started = time.perf_counter()
        scores = score_samples(seed_dir, protocol, reference, device=device)
        stage_seconds["scoring"] = round(time.perf_counter() - started, 2)
        progress.remove_task(task)
    out_path = result_path(results_dir, protocol.name, row_id, seed)
    if rank_and_world_size()[0] != 0:
        return out_path  # rank 0 writes the result
    strip = write_strip(seed_dir / f"rollout{max(made)}x", out_path.with_suffix(".gif"), recipe.strip_videos,
                        protocol.fps) if made else None
    record = ResultRecord.zoo_run(
        model=model, name=name, tag=recipe.row_tag, variant_of=recipe.row_settings(name).model, recipe=recipe.name,
        seed=seed, protocol=protocol, reference_sha256=reference.sha256,
        conditioned_on=conditioned_on(model, protocol), scores=scores, unsupported=unsupported,
        train_steps=trained.steps, train_seconds=trained.seconds, sampling_seconds=seconds, frames_made=frames_made,
        stage_seconds=stage_seconds, peak_memory=memory.read(), hardware=hardware(device),
        provenance=provenance(protocol.result_hash, trained.checkpoint_sha256, seed, trained.training_seed, git=git),
        settings_sha256=settings_sha256, strip=strip, strip_videos=recipe.strip_videos,
        finding=recipe.findings.get(name))
    return record.write(results_dir)


@dataclass(frozen=True)
class _Row:
    """One leaderboard row of a recipe: its place in the run (for messages), model name and result file per seed."""

    index: int
    total: int
    name: str
    targets: dict[int, Path]


def _row_lock(recipe: Recipe, protocol: Protocol, name: str) -> FileLock:
    """The lock one `zoo bench` process holds while it trains and scores a row (so two never do the same row)."""
    folder = Path(recipe.runs_dir) / protocol.name
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{name}.{recipe.row_tag}.lock")


def _acquired_now(lock: FileLock) -> bool:
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True


def _bench_row(row: _Row, recipe: Recipe, protocol: Protocol, reference: ReferenceSet, device: torch.device,
               force: bool, console: Console, git: GitState, lane: int | None = None) -> None:
    """Train (or load) the row's model and write a result per unfinished seed; finished seeds are skipped."""
    row_id = f"{row.name}.{recipe.row_tag}"
    where = f"[{row.index}/{row.total}]" if lane is None else f"[{row.index}/{row.total} lane {lane}]"
    settings = run_settings_sha256(row.name, recipe)
    pending = from_rank_zero(
        [seed for seed, path in row.targets.items() if force or not is_finished(path, protocol, settings)])
    if not pending:
        console.print(f"{where} {row_id}: finished results exist, skipped (--force redoes)")
        return
    run_dir = Path(recipe.runs_dir) / protocol.name / row_id
    if force and run_dir.exists() and rank_and_world_size()[0] == 0:
        shutil.rmtree(run_dir)
    barrier()
    console.print(f"{where} {row_id}: training / loading")
    started = time.perf_counter()
    trained = rank_zero_first(lambda: prepare_model(row.name, recipe, protocol, run_dir, device))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Lanes share the terminal: live bars of several processes would overwrite each other.
    with Progress(*columns, console=console, transient=True, disable=lane is not None) as progress:
        for seed in pending:
            with PeakMemory(device) as memory:  # this seed's peak, not the process's since it started
                run_seed(trained, row.name, row_id, recipe, protocol, reference, seed, run_dir,
                         Path(recipe.results_dir), device, progress, settings, memory, git)
    console.print(f"{where} {row_id}: done in {time.perf_counter() - started:.0f}s")


def _bench_rows(rows: Iterable[_Row], recipe: Recipe, protocol: Protocol, reference: ReferenceSet,
                device: torch.device, force: bool, console: Console, git: GitState, lane: int | None = None) -> None:
    """Bench `rows` in order, leaving rows another `zoo bench` process holds for last (then waiting for it)."""
    rank = rank_and_world_size()[0]
    busy: list[_Row] = []
    for row in rows:
        # Another `zoo bench` on the same runs folder may be on this row: do the others first, then wait for it.
        # Rank 0 holds the lock for its group and tells the other ranks whether they are on this row now.
        lock = _row_lock(recipe, protocol, row.name) if rank == 0 else None
        if not from_rank_zero(lock is None or _acquired_now(lock)):
            console.print(f"[{row.index}/{row.total}] {row.name}.{recipe.row_tag}: another process is on it; later")
            busy.append(row)
            continue
        try:
            _bench_row(row, recipe, protocol, reference, device, force, console, git, lane)
        finally:
            if lock is not None:
                lock.release()
    for row in busy:
        # Blocks until the other process is done, then skips its results.
        with _row_lock(recipe, protocol, row.name) if rank == 0 else nullcontext():
            _bench_row(row, recipe, protocol, reference, device, False, console, git, lane)


def _recorded_seconds(row: _Row) -> float:
    """The smallest stage-seconds total an existing result of the row records (any seed, any protocol version: the
    least contended run), or infinity when there is none: what the row will roughly cost, for ordering lanes."""
    target = next(iter(row.targets.values()))
    row_id = target.name.rsplit(".seed", 1)[0]
    totals = []
    for result in target.parent.glob(f"{row_id}.seed*.json"):
        try:
            stages = json.loads(result.read_text())["cost"]["stage_seconds"]
            totals.append(sum(float(seconds) for seconds in stages.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # no estimate from an unreadable result; benching the row reports what is wrong with it
    return min(totals, default=math.inf)


def longest_first(rows: list[_Row]) -> list[_Row]:
    """Rows by their recorded cost, dearest (and unrecorded) first: greedy list scheduling over lanes then ends
    within one row's time of the best split."""
    return sorted(rows, key=_recorded_seconds, reverse=True)


def _queued(queue: Any) -> Iterator[_Row]:
    """The rows of a lanes queue until its stop mark (None)."""
    while (row := queue.get()) is not None:
        yield row


def _lane_main(lane: int, recipe: str | Path, overrides: list[str], force: bool, git: GitState, queue: Any,
               threads: int, setup: Callable[[], None] | None) -> None:
    """One lane of `run_recipe(lanes=...)`, in a spawned process: bench rows from `queue` with `threads` threads."""
    if setup is not None:
        setup()
    torch.set_num_threads(threads)
    loaded = load_recipe(recipe, overrides)
    protocol = load_protocol(loaded.protocol, loaded.protocol_overrides)
    reference = load_reference(protocol, loaded.data_root)  # the parent built the cache
    _bench_rows(_queued(queue), loaded, protocol, reference, resolve_device(loaded.device), force, log_console(),
                git, lane)


def _run_lanes(rows: list[_Row], lanes: int, recipe: str | Path, overrides: list[str], force: bool, git: GitState,
               setup: Callable[[], None] | None, console: Console) -> None:
    """Bench `rows` in `lanes` spawned processes that share this one's threads; raises if a lane failed (the rows the
    others finished keep their results)."""
    threads = max(1, torch.get_num_threads() // lanes)
    context = multiprocessing.get_context("spawn")  # fork would copy this process's OpenMP pool (not fork-safe)
    queue = context.Queue()
    for row in longest_first(rows):
        queue.put(row)
    for _ in range(lanes):
        queue.put(None)
    console.print(f"{lanes} lanes of {threads} thread(s) each")
    processes = [context.Process(target=_lane_main, args=(lane, recipe, list(overrides), force, git, queue, threads,
                                                          setup), name=f"zoo-bench-lane{lane}")
                 for lane in range(1, lanes + 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [f"lane {lane} (exit code {p.exitcode})" for lane, p in enumerate(processes, 1) if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed (its error is above); the finished rows are kept: rerun the "
                           "same command to do the rest")


def run_recipe(
    recipe: str | Path, overrides: list[str] | tuple[str, ...] = (), force: bool = False,
    console: Console | None = None, lanes: int = 1, lane_setup: Callable[[], None] | None = None,
) -> list[Path]:
    """Run a recipe (a name in `benchmarks/recipes/` or a path) end to end; returns the result files (skipped ones
    too).

    Prints progress, then the leaderboard table and the wall time; renders the leaderboard when the recipe says so.
    `lanes` > 1 benches rows in that many processes side by side (module docstring); `lane_setup`, a picklable
    function, runs first in each of them (as a `multiprocessing.Pool` initializer: register models defined outside
    the zoo there).
    """
    started = time.perf_counter()
    git = git_state()  # before this run writes anything: its own results would make every later row "dirty"
    loaded = load_recipe(recipe, overrides)
    protocol = load_protocol(loaded.protocol, loaded.protocol_overrides)
    device = init_from_env(resolve_device(loaded.device))
    rank, world_size = rank_and_world_size()
    if lanes < 1 or (lanes > 1 and world_size > 1):
        raise ConfigError(f"lanes must be >= 1, and 1 under torchrun (each rank is already a lane); got {lanes}")
    console = (console or log_console()) if rank == 0 else Console(quiet=True)
    names = resolve_models(loaded)
    results_root = Path(loaded.results_dir)
    console.print(f"[bold]zoo bench {loaded.name}[/bold]: protocol {protocol.name} v{protocol.version} "
                  f"({protocol.result_hash[:10]}), {len(names)} model(s), seeds {protocol.seeds}, device {device}")
    reference = rank_zero_first(lambda: load_reference(protocol, loaded.data_root))
    rows = [_Row(index, len(names), name,
                 {seed: result_path(results_root, protocol.name, f"{name}.{loaded.row_tag}", seed)
                  for seed in protocol.seeds})
            for index, name in enumerate(names, start=1)]
    if lanes > 1:
        _run_lanes(rows, lanes, recipe, list(overrides), force, git, lane_setup, console)
    else:
        _bench_rows(rows, loaded, protocol, reference, device, force, console, git)
    if rank != 0:
        return [path for row in rows for path in row.targets.values()]
    print_table(results_root, console, first_protocol=protocol.name)
    if loaded.leaderboard_dir:
        written = build_leaderboard(results_root, loaded.leaderboard_dir)
        console.print("full tables: " + ", ".join(str(written[kind]) for kind in ("html", "csv") if kind in written))
    console.print(f"zoo bench {loaded.name} took {time.perf_counter() - started:.1f}s")
    return [path for row in rows for path in row.targets.values()]
