"""`zoo pretrain <recipe>`: train every row of a recipe under its budget and ship it as `<model>.<tag>` weights.

Each row trains from scratch (`zoo.training.train_model`, the recipe's trainer settings: an equal `max_minutes`
budget per model compares strategies at equal cost), then its sampling weights (EMA when the config has it) are
written as fp16 safetensors with a model card (`zoo.pretrained.save_pretrained`): the budget it got (steps, CPU
minutes, training FLOPs measured on one step), and its prompt adherence on `quality_videos` text-conditioned test
clips read by the dataset's domain network. A row whose card was made under the same settings is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from benchmarks.harness.protocol import load_protocol
from benchmarks.harness.recipe import Recipe, load_recipe, resolve_models
from benchmarks.harness.runner import model_overrides, training_data_overrides
from zoo.interface import Conditioning, VideoGenerator

QUALITY_SEED = 0


def pretrain_settings(recipe: Recipe, row: str) -> dict[str, Any]:
    """What decides a row's weights (a card made under other settings is retrained)."""
    from zoo.training import trainer_config

    settings = recipe.row_settings(row)
    return {"trainer": dataclasses.asdict(trainer_config(recipe.trainer_preset, settings.trainer)),
            "config_path": settings.config_path, "overrides": settings.overrides, "model": settings.model}


def _prompted_videos(model: VideoGenerator, dataset: str, num_videos: int, seed: int, data: dict[str, Any] | None,
                     batch_size: int, num_frames: int) -> Iterator[tuple[Tensor, dict[str, Any]]]:
    """`(videos, batch)`: `num_frames`-frame videos prompted with the first `num_videos` test clips' captions, from one
    generator seeded `seed` (what every card figure reads, so they all see the same prompts and draws)."""
    from zoo.data import create_dataset

    clips = create_dataset(dataset, "test", overrides={**(data or {}), "num_frames": model.clip_length})
    generator = torch.Generator().manual_seed(seed)
    for batch in DataLoader(Subset(clips, range(num_videos)), batch_size=batch_size):
        yield model.generate(len(batch["text"]), num_frames, Conditioning(text=list(batch["text"])),
                             generator=generator), batch


def _card_figures(result: dict[str, Tensor], per_head: str, seed: int) -> dict[str, Any]:
    """A metric's `compute()` as a card records it: `all`, `num_videos`, `seed` and each `<per_head>/<label>`."""
    return {"all": round(float(result["value"]), 4), "num_videos": int(result["num_videos"]), "seed": seed,
            **{key.split("/", 1)[1]: round(float(value), 4) for key, value in result.items()
               if key.startswith(f"{per_head}/")}}


@torch.no_grad()
def prompt_adherence(model: VideoGenerator, dataset: str, num_videos: int = 128, seed: int = QUALITY_SEED,
                     data: dict[str, Any] | None = None, batch_size: int = 32) -> dict[str, float]:
    """Accuracy per label and of all labels at once of `num_videos` videos prompted with the first test clips'
    captions, read by the dataset's domain network (what the leaderboard's prompt adherence measures)."""
    from benchmarks.features.domain import load_domain_net
    from benchmarks.metrics.prompt_adherence import PromptAdherence

    metric = PromptAdherence(load_domain_net(dataset))
    for videos, batch in _prompted_videos(model, dataset, num_videos, seed, data, batch_size, model.clip_length):
        metric.update(videos, {name: batch["labels"][name] for name in metric.label_names})
    return _card_figures(metric.compute(), "accuracy", seed)


@torch.no_grad()
def label_persistence(model: VideoGenerator, dataset: str, num_videos: int = 128, seed: int = QUALITY_SEED,
                      data: dict[str, Any] | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Do the objects stay the same objects? `num_videos` videos of twice the clip length, prompted as
    `prompt_adherence` prompts them, read by the dataset's domain network in each clip-length window: the share whose
    identity labels (`DOMAIN_IDENTITY_LABELS`: digits, not their direction) read alike in both."""
    from benchmarks.features.domain import DOMAIN_IDENTITY_LABELS, load_domain_net
    from benchmarks.metrics.prompt_adherence import LabelPersistence

    metric = LabelPersistence(load_domain_net(dataset), window=model.clip_length,
                              label_names=DOMAIN_IDENTITY_LABELS[dataset])
    frames = 2 * model.clip_length
    for videos, _ in _prompted_videos(model, dataset, num_videos, seed, data, batch_size, frames):
        metric.update(videos)
    return {**_card_figures(metric.compute(), "persistence", seed), "frames": frames}


def pretrain_row(recipe: Recipe, row: str, quality_videos: int, folder: Path | None = None) -> dict[str, Any]:
    """Train one row from scratch under the recipe's budget, measure it, ship it; returns the card."""
    import lightning as L

    from zoo.data import VideoDataModule
    from zoo.pretrained import save_pretrained
    from zoo.registry import create_model
    from zoo.training import train_model, trainer_config

    protocol = load_protocol(recipe.protocol, recipe.protocol_overrides)
    settings = recipe.row_settings(row)
    trainer = trainer_config(recipe.trainer_preset, settings.trainer)
    data = training_data_overrides(recipe, protocol)
    L.seed_everything(trainer.seed, verbose=False)  # the init depends on the training seed only, as under `zoo bench`
    model = create_model(settings.model, config_path=settings.config_path,
                         overrides=model_overrides(recipe, protocol, row))
    # Resolved before training: a protocol or recipe file edited during a 30-minute run must not fail its card.
    settings_record = pretrain_settings(recipe, row)
    run_dir = Path(recipe.runs_dir) / "pretrain" / recipe.pretrained_id(row)
    shutil.rmtree(run_dir, ignore_errors=True)  # from scratch: never resume a run made under other settings
    cpu_started = time.process_time()
    result = train_model(model, protocol.dataset.name, run_dir, trainer, data)
    cpu_minutes = (time.process_time() - cpu_started) / 60
    # FLOPs per step do not depend on the weights: counted once after training, on a batch of the training data.
    probe = VideoDataModule(protocol.dataset.name, batch_size=trainer.batch_size,
                            overrides={**data, "num_frames": model.clip_length}, seed=trainer.seed)
    probe.setup("fit")
    flops_per_step = round(model.training_flops_per_step(next(iter(probe.train_dataloader()))))
    card = {
        "recipe": recipe.name, "settings": settings_record, "protocol": protocol.name,
        "steps": result.steps, "batch_size": trainer.batch_size, "clips_seen": result.steps * trainer.batch_size,
        "train_seconds": round(result.seconds, 1), "cpu_minutes": round(cpu_minutes, 1),
        "threads": torch.get_num_threads(), "flops_per_step": flops_per_step, "flops": flops_per_step * result.steps,
        "final_loss": result.final_loss, "ema_decay": model.config.ema_decay,
        "quality": prompt_adherence(model.eval(), protocol.dataset.name, quality_videos, data=data),
        "persistence": label_persistence(model, protocol.dataset.name, quality_videos, data=data),
    }
    if row in recipe.findings:
        card["finding"] = recipe.findings[row]
    return save_pretrained(model, recipe.pretrained_id(row), card, folder)


def pretrain_recipe(name: str, overrides: list[str] | tuple[str, ...] = (), force: bool = False,
                    quality_videos: int = 128, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Pretrain every row of recipe `name` (or those in `only`), skipping rows whose card has the same settings."""
    from zoo.config import ConfigError
    from zoo.pretrained import list_pretrained, load_pretrained, pretrained_card, update_card

    recipe = load_recipe(name, overrides)
    rows = resolve_models(recipe)
    if only:
        unknown = sorted(set(only) - set(rows))
        if unknown:
            raise ConfigError(f"recipe '{recipe.name}' has no rows {unknown}; its rows: {', '.join(rows)}")
        rows = [row for row in rows if row in only]
    cards = []
    for row in rows:
        shipped_id = recipe.pretrained_id(row)
        if not force and shipped_id in list_pretrained():
            card = pretrained_card(shipped_id)
            if card.get("settings") == json.loads(json.dumps(pretrain_settings(recipe, row))):
                # The weights stand; what the card says about them may be newer than they are.
                finding = recipe.findings.get(row)
                changes = {} if card.get("finding") == finding else {"finding": finding}
                if "persistence" not in card:  # cards written before it was measured
                    model, _ = load_pretrained(shipped_id)
                    data = training_data_overrides(recipe, load_protocol(recipe.protocol, recipe.protocol_overrides))
                    changes["persistence"] = label_persistence(model, card["dataset"], quality_videos, data=data)
                if changes:
                    card = update_card(shipped_id, changes)
                    print(f"{shipped_id}: finished (same settings), its card's {' and '.join(changes)} updated")
                    cards.append(card)
                    continue
                print(f"{shipped_id}: finished (same settings), skipped")
                cards.append(card)
                continue
        print(f"{shipped_id}: training ({recipe.row_settings(row).trainer})", flush=True)
        card = pretrain_row(recipe, row, quality_videos)
        quality = card["quality"]
        print(f"{shipped_id}: {card['steps']} steps, {card['cpu_minutes']} CPU-min, {card['flops']:.3g} FLOPs; "
              f"prompt adherence {quality['all']:.3f} ({', '.join(f'{k} {v:.2f}' for k, v in quality.items() if k not in ('all', 'num_videos', 'seed'))})",
              flush=True)
        cards.append(card)
    return cards
