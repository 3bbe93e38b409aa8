"""The `zoo` command: the composition root. It parses, loads configs and calls; the work lives elsewhere.

User errors print one line and exit 2; set ZOO_DEBUG=1 for the traceback.
Overrides are omegaconf dotlists: `model.<key>=...`, `data.<key>=...`, `trainer.<key>=...`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.config import ConfigError, parse_overrides

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, KeyError, ValueError, FileNotFoundError, FloatingPointError)


def _split_overrides(items: Sequence[str], allowed: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`["model.lr=1", "trainer.max_steps=5"]` -> {"model": {"lr": 1}, "trainer": {"max_steps": 5}}."""
    parsed = parse_overrides(list(items))
    groups: dict[str, dict[str, Any]] = {name: {} for name in allowed}
    for group, values in parsed.items():
        if group not in groups:
            raise ConfigError(
                f"override '{group}...' must start with one of {', '.join(g + '.' for g in allowed)} "
                f"(e.g. trainer.max_steps=100)"
            )
        if not isinstance(values, dict) and not hasattr(values, "items"):
            raise ConfigError(f"override '{group}={values}' needs a key, e.g. {group}.<key>=<value>")
        groups[group] = dict(values)
    return groups


def cmd_list(args: argparse.Namespace) -> None:
    from zoo.data import list_datasets
    from zoo.registry import list_models

    print("models:   " + ", ".join(list_models()))
    print("datasets: " + ", ".join(list_datasets()))
    try:
        from benchmarks.metrics import list_metrics
    except ImportError:  # metrics package without a registry yet
        return
    print("metrics:  " + ", ".join(list_metrics()))


def cmd_train(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from zoo.registry import create_model
    from zoo.training import train_model, trainer_config

    groups = _split_overrides(args.overrides, ("model", "data", "trainer"))
    trainer_cfg = trainer_config(args.trainer, groups["trainer"])
    out_dir = Path(args.out or f"runs/{args.model}-{args.data}")
    if args.model == "autoencoder":
        from zoo.components.autoencoder import train_autoencoder

        report = train_autoencoder(
            data=args.data, out=out_dir, trainer_cfg=trainer_cfg, overrides=groups["model"],
            data_overrides=groups["data"],
        )
        print(f"autoencoder saved to {report['path']} (reconstruction PSNR {report['psnr']:.2f} dB)")
        return
    model = create_model(args.model, config_path=args.config, overrides=groups["model"])
    print(f"training {args.model} ({model.num_parameters / 1e6:.2f} M parameters) on {args.data} -> {out_dir}")
    result = train_model(model, args.data, out_dir, trainer_cfg, data_overrides=groups["data"])
    OmegaConf.save(OmegaConf.create({"model": args.model, "data": args.data, **groups}), out_dir / "command.yaml")
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    print(f"done: {result.steps} steps in {result.seconds:.1f} s, final loss {loss}; checkpoint {result.checkpoint}")


def cmd_sample(args: argparse.Namespace) -> None:
    from zoo.data import save_video_grid
    from zoo.interface import Conditioning
    from zoo.registry import load_model

    model = load_model(args.checkpoint)
    if args.prompt is not None:
        cond = Conditioning(text=[args.prompt] * args.num_videos)
    else:
        cond = None
    started = time.perf_counter()
    videos = model.generate(args.num_videos, args.frames, cond=cond, generator=args.seed)
    seconds = time.perf_counter() - started
    save_video_grid(args.out, videos, fps=args.fps)
    print(f"wrote {args.num_videos} x {args.frames} frames to {args.out} ({seconds:.1f} s)")


def cmd_bench(args: argparse.Namespace) -> None:
    from benchmarks.harness import run_recipe
    from benchmarks.leaderboard import print_table

    started = time.perf_counter()
    results = run_recipe(args.recipe, list(args.overrides), force=args.force)
    print_table(Path("leaderboard/results"))
    print(f"{len(results)} result file(s); total time {time.perf_counter() - started:.1f} s")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from benchmarks.leaderboard import build_leaderboard, submit_result

    if args.action == "submit":
        if args.result is None:
            raise ConfigError("zoo leaderboard submit needs a result JSON path")
        print(f"added {submit_result(args.result, args.results_dir)}")
    written = build_leaderboard(results_dir=args.results_dir, out_dir=args.out_dir)
    for kind, path in written.items():
        print(f"{kind}: {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="hybrid-video-zoo: train, sample and benchmark video models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list models, datasets and metrics")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a model (or the frame autoencoder) with Lightning")
    p.add_argument("model", help="registered model name (`zoo list`), or 'autoencoder'")
    p.add_argument("--data", required=True, help="dataset name, e.g. moving_digits")
    p.add_argument("--out", help="run folder (default runs/<model>-<data>); re-running resumes from its last checkpoint")
    p.add_argument("--config", help="model YAML to use instead of configs/model/<model>.yaml")
    p.add_argument("--trainer", default="default", help="trainer preset in configs/trainer/ (default, gpu, ddp_cpu)")
    p.add_argument("overrides", nargs="*", help="model.<k>=v data.<k>=v trainer.<k>=v")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate videos from a checkpoint into a gif/mp4")
    p.add_argument("checkpoint", help="Lightning .ckpt or .safetensors export")
    p.add_argument("--frames", type=int, required=True, help="frames per video (may exceed the training length)")
    p.add_argument("--out", required=True, help="output .gif or .mp4 (videos tiled side by side)")
    p.add_argument("--prompt", help="text prompt for every video")
    p.add_argument("--num-videos", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=8)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("bench", help="run a benchmark recipe and print the leaderboard")
    p.add_argument("recipe", help="recipe name in recipes/ (quick, micro, ...) or a path")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    p.add_argument("--force", action="store_true", help="redo finished entries")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("leaderboard", help="build the leaderboard, or submit an external result")
    p.add_argument("action", choices=["build", "submit"])
    p.add_argument("result", nargs="?", help="result JSON (submit)")
    p.add_argument("--results-dir", default="leaderboard/results")
    p.add_argument("--out-dir", default="leaderboard")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        if os.environ.get("ZOO_DEBUG"):
            raise
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
