"""The `zoo` command: the composition root above `zoo` and `benchmarks`. It parses, loads configs and calls; the
work lives in the two packages, neither of which imports this one (nor `zoo` `benchmarks`: tests/test_import_boundaries.py).

User errors print one line and exit 2; set ZOO_DEBUG=1 for the traceback.
Overrides are omegaconf dotlists: `model.<key>=...`, `data.<key>=...`, `trainer.<key>=...`, anywhere after the command.
Models and datasets defined outside the package are registered by importing their modules first:
`zoo --plugin my_models train my_model ...` or `ZOO_PLUGINS=my_models,path/to/more.py zoo train ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvz_registry import did_you_mean
from zoo.config import ConfigError, parse_overrides
from zoo.plugins import PLUGINS_ENV, import_plugins

if TYPE_CHECKING:
    from zoo.training import TrainerConfig

# What a user can cause: printed as one line (exit 2). Unknown names are KeyErrors, bad videos ValueErrors.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, KeyError, ValueError, FileNotFoundError, FloatingPointError
)
# Subcommands whose trailing key=value arguments are config overrides.
TAKES_OVERRIDES = ("train", "bench", "score", "reference", "protocol")


class _ConsoleHandler(logging.Handler):
    """Lightning's progress notes to stdout, its warnings and errors to stderr (looked up at emit time)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr if record.levelno >= logging.WARNING else sys.stdout)


def _route_lightning_logs() -> None:
    # Lightning prints "GPU available ..." notes on stderr; on a command line stderr is for what went wrong.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
            logger.addHandler(_ConsoleHandler())


def _say(message: str) -> None:
    """Print once per run: DDP launches this command once per process."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(message, flush=True)


def _split_overrides(
    items: Sequence[str], allowed: Sequence[str], known: dict[str, Sequence[str]] | None = None
) -> dict[str, dict[str, Any]]:
    """`["model.lr=1", "trainer.max_steps=5"]` -> {"model": {"lr": 1}, "trainer": {"max_steps": 5}}.

    `known` (group -> its keys) lets an override without a group prefix suggest the group it belongs to.
    """
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    for item in items:  # one at a time, so an error names the item
        try:
            parse_overrides([item])
        except (OmegaConfBaseException, YAMLError) as exc:  # a value that is not valid YAML
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"cannot parse override '{item}' ({reason}); values are YAML, e.g. k=[1,2] or k='a b'"
            ) from exc
    parsed = parse_overrides(list(items))
    groups: dict[str, dict[str, Any]] = {name: {} for name in allowed}
    for group, values in parsed.items():
        if group not in groups:
            owners = [f"{owner}.{group}" for owner, keys in (known or {}).items() if group in keys]
            hint = f"did you mean {' or '.join(owners)}?" if owners else did_you_mean(group, allowed).strip(" ()")
            raise ConfigError(
                f"override '{group}...' must start with one of {', '.join(g + '.' for g in allowed)}"
                + (f" ({hint})" if hint else " (e.g. trainer.max_steps=100)")
            )
        if not hasattr(values, "items"):
            raise ConfigError(f"override '{group}={values}' needs a key, e.g. {group}.<key>=<value>")
        groups[group] = dict(values)
    return groups


def _known_keys(model: str, data: str) -> dict[str, list[str]]:
    """The keys each override group accepts (a dataset whose config has required values contributes none)."""
    from zoo.data import dataset_config
    from zoo.registry import get_entry
    from zoo.training import TrainerConfig

    known = {"trainer": [f.name for f in dataclasses.fields(TrainerConfig)]}
    if model != "autoencoder":
        known["model"] = [f.name for f in dataclasses.fields(get_entry(model).config_cls)]
    try:
        known["data"] = [f.name for f in dataclasses.fields(dataset_config(data))]
    except ConfigError:
        known["data"] = []
    return known


def _check_config(group: str, build: Callable[[], Any]) -> None:
    """Build a config to validate it; a missing value's error says how to set it on the command line."""
    try:
        build()
    except ConfigError as exc:
        if "missing required" not in str(exc):
            raise
        raise ConfigError(f"{exc} (on the command line: {group}.<key>=<value>)") from exc


@dataclass
class TrainRequest:
    """A `zoo train` command line whose names, override keys and value types have all been checked."""

    model: str
    data: str
    trainer: TrainerConfig
    overrides: dict[str, dict[str, Any]]  # "model" / "data" / "trainer" -> {key: value}
    config_path: str | None = None


def train_request(
    model: str, data: str, overrides: Sequence[str], trainer_preset: str = "default", config_path: str | None = None
) -> TrainRequest:
    """Validate a `zoo train` command line before any work: a one-line `ConfigError` (or unknown-name error) if bad."""
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    from zoo.data import dataset_config
    from zoo.registry import model_config
    from zoo.training import trainer_config

    try:
        groups = _split_overrides(overrides, ("model", "data", "trainer"), _known_keys(model, data))
        trainer = trainer_config(trainer_preset, groups["trainer"])
        _check_config("data", lambda: dataset_config(data, groups["data"]))
        if model != "autoencoder":  # the autoencoder's recipe is checked by train_autoencoder
            _check_config("model", lambda: model_config(model, groups["model"], config_path))
    except (OmegaConfBaseException, YAMLError) as exc:
        # zoo.config turns most of these into ConfigError; this catches the rest (e.g. an unparsable value).
        raise ConfigError(f"cannot use the overrides {list(overrides)}: {exc}".splitlines()[0]) from exc
    return TrainRequest(model, data, trainer, groups, config_path)


def cmd_list(args: argparse.Namespace) -> None:
    from zoo.data import list_datasets
    from zoo.pretrained import list_pretrained
    from zoo.registry import list_models

    print("models:     " + ", ".join(list_models()))
    print("pretrained: " + (", ".join(list_pretrained()) or "none"))
    print("datasets:   " + ", ".join(list_datasets()))
    try:
        from benchmarks.metrics import list_metrics
    except ImportError:  # metrics package without a registry yet
        return
    print("metrics:    " + ", ".join(list_metrics()))


def cmd_train(args: argparse.Namespace) -> None:
    import lightning as L
    from omegaconf import OmegaConf

    from zoo.registry import create_model
    from zoo.training import latest_checkpoint, train_model

    _route_lightning_logs()
    if args.model == "domain_net":
        _train_domain_net(args)
        return
    request = train_request(args.model, args.data, args.overrides, args.trainer, args.config)
    groups = request.overrides
    out_dir = Path(args.out or f"runs/{args.model}-{args.data}")
    if args.model == "autoencoder":
        from zoo.components.autoencoder import train_autoencoder

        report = train_autoencoder(
            data=args.data, out=out_dir, trainer_cfg=request.trainer, overrides=groups["model"],
            data_overrides=groups["data"],
        )
        _say(f"autoencoder saved to {report['path']} (reconstruction PSNR {report['psnr']:.2f} dB)")
        return
    L.seed_everything(request.trainer.seed, verbose=False)  # the initial weights depend on the seed only
    model = create_model(args.model, config_path=args.config, overrides=groups["model"])
    resume = latest_checkpoint(out_dir, model)
    resuming = f", resuming from {resume[0]} (step {resume[1]})" if resume else ""
    _say(f"training {args.model} ({model.num_parameters / 1e6:.2f} M parameters) on {args.data} -> {out_dir}{resuming}")
    result = train_model(model, args.data, out_dir, request.trainer, data_overrides=groups["data"])
    OmegaConf.save(OmegaConf.create({"model": args.model, "data": args.data, **groups}), out_dir / "command.yaml")
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    _say(f"done: {result.steps} steps in {result.seconds:.1f} s, final loss {loss}; checkpoint {result.checkpoint}")


def _train_domain_net(args: argparse.Namespace) -> None:
    """`zoo train domain_net --data <dataset>`: the benchmark's domain feature network, trained by its recipe
    (`--config`, default benchmarks/recipes/domain_net_<dataset>.yaml) with overrides of the recipe's keys."""
    from benchmarks.features.train_domain_net import load_domain_net_recipe, train

    if args.trainer != "default":
        raise ConfigError("zoo train domain_net takes no --trainer: its recipe sets steps, batch_size and threads")
    overrides = [*args.overrides, *([f"output_dir={args.out}"] if args.out else [])]
    recipe = load_domain_net_recipe(args.data, overrides, args.config)
    record = train(recipe)
    _say(f"domain_{recipe.dataset} saved to {recipe.output_dir} (held-out accuracy {record['accuracy']}, "
         f"sha256 {record['sha256']})")


def cmd_sample(args: argparse.Namespace) -> None:
    from zoo.data import save_video_grid
    from zoo.interface import Conditioning
    from zoo.registry import create_model, load_model

    path = Path(args.checkpoint)
    # A file is a checkpoint; `<model>.<dataset>` without one is a shipped id (`zoo list`).
    model = load_model(path) if path.suffix in (".ckpt", ".safetensors") or path.exists() else create_model(
        args.checkpoint, pretrained=True)
    frames = model.clip_length if args.frames is None else args.frames
    cond = Conditioning(text=[args.prompt] * args.num_videos) if args.prompt is not None else None
    started = time.perf_counter()
    videos = model.generate(args.num_videos, frames, cond=cond, generator=args.seed)
    seconds = time.perf_counter() - started
    save_video_grid(args.out, videos, fps=args.fps)
    print(f"wrote {args.num_videos} x {frames} frames to {args.out} ({seconds:.1f} s)")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from benchmarks.harness.pretrain import pretrain_recipe
    from zoo.pretrained import pretrained_dir

    _route_lightning_logs()
    cards = pretrain_recipe(args.recipe, list(args.overrides), force=args.force, quality_videos=args.quality_videos,
                            only=args.only)
    print(f"{len(cards)} pretrained weight file(s) in {pretrained_dir()}")


def cmd_bench(args: argparse.Namespace) -> None:
    from benchmarks.harness import run_recipe
    from benchmarks.harness.distributed import rank_and_world_size

    _route_lightning_logs()
    started = time.perf_counter()
    # prints the leaderboard table
    results = run_recipe(args.recipe, list(args.overrides), force=args.force, lanes=args.lanes)
    if rank_and_world_size()[0] == 0:
        print(f"{len(results)} result file(s); total time {time.perf_counter() - started:.1f} s")


def _protocol_and_device(args: argparse.Namespace) -> tuple[Any, Any]:
    """The protocol named on the command line (with key=value overrides) and this rank's device."""
    from benchmarks.harness import load_protocol
    from benchmarks.harness.distributed import init_from_env
    from benchmarks.harness.runner import resolve_device

    protocol = load_protocol(args.protocol, list(args.overrides) or None)
    return protocol, init_from_env(resolve_device(args.device))


def cmd_score(args: argparse.Namespace) -> None:
    from benchmarks.harness import score_external

    protocol, device = _protocol_and_device(args)
    path, result = score_external(args.samples_dir, protocol, args.out, args.tag, args.data_root, device)
    if path is None:  # ranks other than 0 under torchrun
        return
    _print_scores(result)
    print(f"{result['id']} seed {result['seed']} on {protocol.name}: wrote {path}")


def cmd_reference(args: argparse.Namespace) -> None:
    from benchmarks.files import atomic_write_json
    from benchmarks.harness import build_reference_statistics

    protocol, device = _protocol_and_device(args)
    report = build_reference_statistics(protocol, args.data_root, device)
    reference = report.reference
    print(f"protocol {protocol.name} v{protocol.version}, hash {protocol.hash} (sample manifests carry it), "
          f"result hash {protocol.result_hash}")
    print(f"real set: {len(reference)} clips, sha256 {reference.sha256} "
          f"({'built' if report.reference_built else 'cached'}) in {reference.cache_dir}")
    for key, prepared in report.statistics.items():
        print(f"  {key}: {prepared.statistics or f'missing ({prepared.missing_reason})'}")
    if args.prompts:
        videos = {f"{rollout}x": [{"reference_index": index,
                                   "prompt": reference.texts[index] if protocol.condition == "text" else None}
                                  for index in protocol.reference_indices(rollout)]
                  for rollout in protocol.rollouts}
        atomic_write_json(args.prompts, {"protocol": protocol.name, "protocol_hash": protocol.hash,
                                         "context_frames": protocol.context_frames, "videos": videos})
        print(f"conditioning of every video to generate: {args.prompts}")


def _counts(text: str, flag: str) -> list[int]:
    """`"64,128"` -> [64, 128]; anything else is a one-line error naming the flag."""
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated whole numbers, e.g. {flag} 64,128,256; got '{text}'") from None


def _print_scores(result: dict[str, Any]) -> None:
    for key, entry in result["metrics"].items():
        value = f"missing ({entry['missing_reason']})" if entry["value"] is None else f"{entry['value']:.6g}"
        interval = entry.get("bootstrap", {})
        if "low" in interval:
            value += f" ({interval['level']:.0%} interval {interval['low']:.4g} .. {interval['high']:.4g})"
        print(f"  {key}: {value}")


def cmd_protocol(args: argparse.Namespace) -> None:
    from benchmarks.harness.floor import format_floor, measure_floor, write_floor

    protocol, device = _protocol_and_device(args)
    if args.action == "real":
        from benchmarks.harness.realdata import score_real

        path, result = score_real(protocol, args.results_dir, args.samples, args.data_root, device)
        if path is not None:
            _print_scores(result)
            print(f"{result['id']} (held-out real clips, source real) on {protocol.name}: wrote {path}")
        return
    real_sets = [item.strip() for item in args.real.split(",") if item.strip()]
    record = measure_floor(protocol, _counts(args.n, "--n"), args.seeds, real_sets, args.data_root, device,
                           progress=print)
    print(f"real-vs-real floor of {protocol.name} v{protocol.version}: held-out clips of the "
          f"'{protocol.dataset.split}' split scored as the generated videos; mean ± std over "
          f"{len(record['seeds'])} seed(s); real = the real clips scored against (* = fewer than n: the real set "
          "is the limit)")
    for line in format_floor(record):
        print(line)
    print(f"wrote {write_floor(record, args.out)} ({record['seconds']:.0f} s)")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from benchmarks.leaderboard import build_leaderboard, load_result, submit_result

    if args.action == "submit":
        if args.result is None:
            raise ConfigError("zoo leaderboard submit needs a result JSON path")
        verification = None
        if args.samples is not None:  # re-score here: the harness checks, the board only stores what it returns
            from benchmarks.harness.runner import resolve_device
            from benchmarks.harness.verify import verify_submission

            tolerance = {} if args.rtol is None else {"rtol": args.rtol}
            verification = verify_submission(load_result(args.result), args.samples, args.data_root,
                                              resolve_device(args.device), **tolerance)
        elif args.data_root is not None or args.rtol is not None:
            raise ConfigError("--data-root and --rtol are for re-scoring: pass the sample folder with --samples")
        destination = submit_result(args.result, args.results_dir, verification)
        status = (f"verified: re-scored {args.samples} here to every submitted value (rtol {verification['rtol']:g})"
                  if verification else "self-reported: not re-scored here (pass --samples <folder> to verify)")
        print(f"added {destination} ({status})")
    written = build_leaderboard(results_dir=args.results_dir, out_dir=args.out_dir)
    for kind, path in written.items():
        print(f"{kind}: {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="hybrid-video-zoo: train, sample and benchmark video models"
    )
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE",
        help=f"import a module (name or .py path) that registers models or datasets; repeatable (also ${PLUGINS_ENV})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list models, datasets and metrics")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a model, the frame autoencoder or a benchmark domain network with Lightning")
    p.add_argument("model", help="registered model name (`zoo list`), 'autoencoder', or 'domain_net' (the "
                                 "benchmark's feature network of --data; overrides are its recipe's keys)")
    p.add_argument("--data", required=True, help="dataset name, e.g. moving_digits")
    p.add_argument(
        "--out", help="run folder (default runs/<model>-<data>); re-running resumes from its last checkpoint"
    )
    p.add_argument("--config",
                   help="model preset name (zoo/configs/model/presets/) or YAML path, instead of the model's defaults "
                        "(domain_net: the recipe YAML, default benchmarks/recipes/domain_net_<data>.yaml)")
    p.add_argument("--trainer", default="default",
                   help="trainer preset in zoo/configs/trainer/ (default, gpu, ddp_cpu)")
    p.add_argument("overrides", nargs="*", help="model.<k>=v data.<k>=v trainer.<k>=v")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate videos from a checkpoint into a gif/mp4")
    p.add_argument("checkpoint", help="Lightning .ckpt, .safetensors export, or a shipped id such as "
                                      "video_diffusion.moving_digits (`zoo list`)")
    p.add_argument("--frames", type=int, help="frames per video (default: the training length; may exceed it)")
    p.add_argument("--out", required=True, help="output .gif or .mp4 (videos tiled side by side)")
    p.add_argument("--prompt", help="text prompt for every video")
    p.add_argument("--num-videos", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=8)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("bench", help="run a benchmark recipe and print the leaderboard")
    p.add_argument("recipe", help="recipe name in benchmarks/recipes/ (quick, micro, ...) or a path")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    p.add_argument("--force", action="store_true", help="redo finished entries")
    p.add_argument("--lanes", type=int, default=1,
                   help="bench rows in this many processes side by side, sharing the threads (on 2 CPU cores, 2 "
                        "one-thread lanes score the pretrained zoo faster than one process)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("pretrain", help="train a recipe's rows from scratch under its budget and ship them as "
                                        "pretrained weights with model cards (zoo/assets/pretrained/)")
    p.add_argument("recipe", help="recipe name (zoo_moving_digits, ...) or a path")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    p.add_argument("--only", nargs="+", help="rows to (re)train; default every row")
    p.add_argument("--force", action="store_true", help="retrain rows whose card has the same settings")
    p.add_argument("--quality-videos", type=int, default=128, help="videos the card's prompt adherence reads")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("score", help="check a sample folder against a protocol and score it (any model's videos)")
    p.add_argument("samples_dir", help="folder with manifest.json (or rollout sub-folders that each have one)")
    p.add_argument("--protocol", required=True,
                   help="protocol name in benchmarks/protocols/ (moving_digits, ...) or a path")
    p.add_argument("--out", default="leaderboard/results", help="results folder (default leaderboard/results)")
    p.add_argument("--tag", help="row tag of the result id <model>.<tag> (default: the manifest's, else <protocol>_external)")
    p.add_argument("--data-root", help="the real dataset's folder, for protocols on user data")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda; under torchrun each rank scores a shard")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the protocol")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("reference", help="compute (or find cached) a protocol's real-set statistics")
    p.add_argument("action", choices=["build"])
    p.add_argument("protocol", help="protocol name in benchmarks/protocols/ or a path")
    p.add_argument("--data-root", help="the real dataset's folder, for protocols on user data")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--prompts", metavar="JSON", help="also write the prompt / reference clip of every video to generate")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the protocol")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("protocol", help="a protocol's real-data floor: FVD/FID/KVD of real clips against n "
                                        "(floor), or its real row: held-out clips scored as a model (real)")
    p.add_argument("action", choices=["floor", "real"])
    p.add_argument("protocol", help="protocol name in benchmarks/protocols/ or a path")
    p.add_argument("--n", default="64,128,256,512,1024,2048",
                   help="comma-separated counts of held-out clips scored as the generated videos")
    p.add_argument("--seeds", type=int, default=3, help="disjoint held-out sets per count (mean ± std)")
    p.add_argument("--real", default="protocol,matched",
                   help="real sets: 'protocol' (its num_real clips), 'matched' (n real clips), or both")
    p.add_argument("--out", default="leaderboard", help="leaderboard folder; writes <out>/floors/<protocol>.json")
    p.add_argument("--results-dir", default="leaderboard/results", help="real: where the real row's result goes")
    p.add_argument("--samples", help="real: the sample folder to write (default runs/real-<protocol>/samples)")
    p.add_argument("--data-root", help="the real dataset's folder, for protocols on user data")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the protocol")
    p.set_defaults(func=cmd_protocol)

    p = sub.add_parser("leaderboard", help="build the leaderboard, or submit an external result")
    p.add_argument("action", choices=["build", "submit"])
    p.add_argument("result", nargs="?", help="result JSON (submit)")
    p.add_argument("--samples", metavar="FOLDER",
                   help="submit: the sample folder the result scored; checked against its sha256s and re-scored "
                        "here (stored verified), else the result is stored self-reported")
    p.add_argument("--rtol", type=float,
                   help="submit --samples: relative tolerance of the re-scored values (default 1e-6: "
                        "benchmarks.harness.verify.RELATIVE_TOLERANCE; the one used is recorded)")
    p.add_argument("--device", default="auto", help="submit --samples: auto, cpu or cuda for the re-scoring")
    p.add_argument("--data-root", help="submit --samples: the real dataset's folder, for protocols on user data")
    p.add_argument("--results-dir", default="leaderboard/results")
    p.add_argument("--out-dir", default="leaderboard")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; key=value overrides may come anywhere after the subcommand's positionals."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    strays = [item for item in extra if args.command not in TAKES_OVERRIDES or item.startswith("-") or "=" not in item]
    if strays:
        parser.error(f"unrecognized arguments: {' '.join(strays)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import_plugins([*os.environ.get(PLUGINS_ENV, "").split(","), *args.plugin])
        args.func(args)
    except USER_ERRORS as exc:
        if os.environ.get("ZOO_DEBUG"):
            raise
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    return 0

