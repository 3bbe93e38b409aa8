"""Train a domain feature network on an embedded dataset and commit its weights with their held-out accuracy.

    zoo train domain_net --data moving_digits [key=value ...]   # recipe benchmarks/recipes/domain_net_moving_digits.yaml

Runs on CPU in 5-15 minutes (Lightning Trainer). Writes `benchmarks/features/weights/domain_<dataset>.safetensors`
and `.json` (config, sha256, per-label accuracy on held-out clips of the test split, which shares no digit image
with the training split). This script is the one place in `benchmarks.features` that uses `zoo.data`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.features.domain import (
    DomainNetConfig,
    DomainVideoNet,
    head_correct,
    head_losses,
    head_targets,
    save_domain_net,
)
from benchmarks.features.weight_cache import DOMAIN_WEIGHTS_DIR

# The recipes are package data beside the benchmark recipes (`benchmarks/recipes/domain_net_<dataset>.yaml`).
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass
class DomainNetRecipe:
    """What `benchmarks/recipes/domain_net_*.yaml` may set. `data` overrides the dataset's config (it must match what
    the benchmark scores, e.g. image_size and num_frames); `network` overrides `DomainNetConfig` fields (e.g. width)."""

    dataset: str = "moving_digits"
    data: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    eval_split: str = "test"
    eval_clips: int = 1024
    seed: int = 0
    threads: int = 2
    output_dir: str = str(DOMAIN_WEIGHTS_DIR)


class DomainNetModule(L.LightningModule):
    """Trains `DomainVideoNet` on the sum of its per-label losses, AdamW with a one-cycle schedule."""

    def __init__(self, config: DomainNetConfig, learning_rate: float, weight_decay: float, steps: int) -> None:
        super().__init__()
        self.network = DomainVideoNet(config)
        self.learning_rate, self.weight_decay, self.steps = learning_rate, weight_decay, steps

    def training_step(self, batch: dict[str, Any], batch_index: int) -> torch.Tensor:
        config = self.network.config
        losses = head_losses(config, self.network(batch["video"]), head_targets(config, batch["labels"]))
        loss = sum(losses.values())
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.learning_rate, total_steps=self.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def evaluate(
    network: DomainVideoNet, dataset: str, split: str = "test", num_clips: int = 1024, data: dict | None = None
) -> dict[str, float]:
    """Accuracy per label (exact set for set labels) and of all labels at once (`all`) on `num_clips` clips."""
    from zoo.data import create_dataset

    clips = create_dataset(dataset, split, overrides=data or {})
    loader = DataLoader(Subset(clips, range(min(num_clips, len(clips)))), batch_size=128)
    network = network.eval()
    correct: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        targets = head_targets(network.config, batch["labels"])
        for name, right in head_correct(network.config, network(batch["video"]), targets).items():
            correct.setdefault(name, []).append(right)
    accuracy = {name: torch.cat(values).float().mean().item() for name, values in correct.items()}
    accuracy["all"] = torch.stack([torch.cat(v) for v in correct.values()]).all(dim=0).float().mean().item()
    return accuracy


def network_config(recipe: DomainNetRecipe) -> DomainNetConfig:
    """The dataset's default network config with the recipe's `network` overrides."""
    from zoo.config import build_config

    return build_config(
        DomainNetConfig,
        asdict(DomainNetConfig.for_dataset(recipe.dataset)),
        recipe.network,
        where="the recipe's network",
    )


def train(recipe: DomainNetRecipe) -> dict:
    """Train, evaluate on held-out clips, save weights + record; returns the record."""
    from zoo.data import create_dataset
    from zoo.training import quiet_fit_callbacks, silence_lightning_notes

    torch.set_num_threads(recipe.threads)
    silence_lightning_notes()
    L.seed_everything(recipe.seed, workers=True)
    config = network_config(recipe)
    module = DomainNetModule(config, recipe.learning_rate, recipe.weight_decay, recipe.steps)
    clips = create_dataset(recipe.dataset, "train", overrides=recipe.data)
    loader = DataLoader(clips, batch_size=recipe.batch_size, shuffle=True, num_workers=0)
    trainer = L.Trainer(
        max_steps=recipe.steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=quiet_fit_callbacks(progress_bar=True),
    )
    started = time.perf_counter()
    trainer.fit(module, loader)
    train_seconds = time.perf_counter() - started
    accuracy = evaluate(module.network, recipe.dataset, recipe.eval_split, recipe.eval_clips, recipe.data)
    record = {
        "accuracy": accuracy,
        "evaluation": {"split": recipe.eval_split, "clips": recipe.eval_clips, "seed": clips.config.seed},
        "data": dict(recipe.data),
        "training": {
            "steps": recipe.steps,
            "batch_size": recipe.batch_size,
            "learning_rate": recipe.learning_rate,
            "seconds": round(train_seconds, 1),
            "threads": recipe.threads,
            "torch": torch.__version__,
        },
    }
    return save_domain_net(module.network, recipe.dataset, record, Path(recipe.output_dir))


def load_domain_net_recipe(
    dataset: str, overrides: Sequence[str] = (), path: str | Path | None = None
) -> DomainNetRecipe:
    """The recipe that trains dataset's domain network (`benchmarks/recipes/domain_net_<dataset>.yaml`, or `path`)
    with `key=value` overrides of its keys; a `ConfigError` if it trains another dataset's."""
    from zoo.config import ConfigError, build_config, load_yaml, parse_overrides

    path = Path(path) if path is not None else RECIPES_DIR / f"domain_net_{dataset}.yaml"
    if not path.is_file():
        known = sorted(other.stem.removeprefix("domain_net_") for other in RECIPES_DIR.glob("domain_net_*.yaml"))
        raise FileNotFoundError(f"no domain-network recipe {path}; datasets that have one: {', '.join(known)}")
    recipe = build_config(DomainNetRecipe, load_yaml(path), parse_overrides(list(overrides)) if overrides else None,
                          where=f"recipe {path.name}")
    if recipe.dataset != dataset:
        raise ConfigError(f"recipe {path.name} trains the domain network of '{recipe.dataset}', not '{dataset}'")
    return recipe
