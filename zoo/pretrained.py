"""Shipped weights: `create_model("<model>.<dataset>", pretrained=True)`, `list_pretrained()`, model cards.

A pretrained id is the leaderboard row id `<model>.<tag>` with the dataset as tag ("video_diffusion.moving_digits").
Each lives in `zoo/assets/pretrained/` as fp16 safetensors of the trainable weights (frozen parts such as the
autoencoder ship once, as their own checksummed assets, and are rebuilt from the config) and a JSON card: the
config, dataset, training budget (steps, CPU-minutes, FLOPs), EMA, the file's sha256 and the quality figures
measured when it was made. `benchmarks.harness.pretrain` writes them (`zoo pretrain <recipe>`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hvz_registry import did_you_mean
from zoo.config import ConfigError
from zoo.files import sha256_file
from zoo.interface import VideoGenerator

PRETRAINED_DIR = Path(__file__).parent / "assets" / "pretrained"
CARD_VERSION = 1


def pretrained_dir(folder: str | Path | None = None) -> Path:
    """`folder`, else `$ZOO_PRETRAINED_DIR`, else the package's `zoo/assets/pretrained/`."""
    return Path(folder) if folder is not None else Path(os.environ.get("ZOO_PRETRAINED_DIR", PRETRAINED_DIR))


def pretrained_paths(pretrained_id: str, folder: str | Path | None = None) -> tuple[Path, Path]:
    """`(weights.safetensors, card.json)` of a pretrained id."""
    root = pretrained_dir(folder)
    return root / f"{pretrained_id}.safetensors", root / f"{pretrained_id}.json"


def list_pretrained(pattern: str = "*", folder: str | Path | None = None) -> list[str]:
    """Ids of the shipped weights (`<model>.<dataset>`) matching a shell-style pattern, sorted."""
    import fnmatch

    root = pretrained_dir(folder)
    ids = sorted(p.stem for p in root.glob("*.json") if p.with_suffix(".safetensors").is_file()) if root.is_dir() else []
    return [i for i in ids if fnmatch.fnmatch(i, pattern)]


def pretrained_card(pretrained_id: str, folder: str | Path | None = None) -> dict[str, Any]:
    """The model card of a pretrained id; a one-line error listing the shipped ids when there is none."""
    weights, card = pretrained_paths(pretrained_id, folder)
    if not card.is_file() or not weights.is_file():
        known = list_pretrained(folder=folder)
        raise ConfigError(
            f"no pretrained weights '{pretrained_id}'{did_you_mean(pretrained_id, known)}; shipped: "
            f"{', '.join(known) or 'none'} (`zoo pretrain <recipe>` trains them)"
        )
    return json.loads(card.read_text())


def frozen_prefixes(model: torch.nn.Module) -> list[str]:
    """State-dict prefixes of the model's frozen parts (modules marked `frozen`, e.g. the autoencoder)."""
    return [f"{name}." for name, module in model.named_modules() if name and getattr(module, "frozen", False) is True]


def trainable_state(model: VideoGenerator) -> dict[str, torch.Tensor]:
    """The state dict without frozen parts, floating tensors in fp16 (what a shipped file holds)."""
    prefixes = frozen_prefixes(model)
    return {
        key: (value.half() if value.is_floating_point() else value).detach().contiguous().cpu()
        for key, value in model.state_dict().items()
        if not any(key.startswith(p) for p in prefixes)
    }


def save_pretrained(model: VideoGenerator, pretrained_id: str, card: dict[str, Any],
                    folder: str | Path | None = None) -> dict[str, Any]:
    """Write fp16 trainable weights and the card (plus model name, config, sha256); returns the card written."""
    import dataclasses

    from safetensors.torch import save_file

    model_name, _, dataset = pretrained_id.partition(".")
    if model_name != model.model_name or not dataset:
        raise ConfigError(f"pretrained id '{pretrained_id}' must be '{model.model_name}.<dataset>'")
    weights, card_path = pretrained_paths(pretrained_id, folder)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(weights))
    weights.chmod(0o644)  # safetensors writes owner-only; shipped package data is world-readable
    full = {"card_version": CARD_VERSION, "id": pretrained_id, "model_name": model_name, "dataset": dataset,
            **card, "config": dataclasses.asdict(model.config), "dtype": "float16", "sha256": sha256_file(weights),
            "file_bytes": weights.stat().st_size}
    card_path.write_text(json.dumps(full, indent=2) + "\n")
    return full


def update_card(pretrained_id: str, changes: dict[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """Set top-level card fields (None removes one): what was learned about the weights after they shipped (a
    finding, a quality figure measured later). The weights are untouched, and so is what vouches for them (`sha256`,
    `config`, `settings`); returns the card written."""
    fixed = {"sha256", "config", "settings", "id", "model_name", "dataset", "dtype", "file_bytes"} & set(changes)
    if fixed:
        raise ConfigError(f"{sorted(fixed)} describe the weights themselves; retrain with `zoo pretrain` to change them")
    card = pretrained_card(pretrained_id, folder)
    for key, value in changes.items():
        card.pop(key, None)
        if value is not None:
            card[key] = value
    pretrained_paths(pretrained_id, folder)[1].write_text(json.dumps(card, indent=2) + "\n")
    return card


def load_pretrained(pretrained_id: str, folder: str | Path | None = None) -> tuple[VideoGenerator, dict[str, Any]]:
    """Build the card's model, verify the weights' sha256 and load them (fp16 -> fp32); `(model.eval(), card)`."""
    from safetensors.torch import load_file

    from zoo.registry import model_from_hparams

    card = pretrained_card(pretrained_id, folder)
    weights, _ = pretrained_paths(pretrained_id, folder)
    actual = sha256_file(weights)
    if actual != card["sha256"]:
        raise ConfigError(f"{weights} has sha256 {actual}, its card says {card['sha256']}; the file is damaged or "
                          f"stale: restore it (git checkout) or retrain it with `zoo pretrain`")
    model = model_from_hparams(card)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    prefixes = frozen_prefixes(model)
    missing = [k for k in missing if not any(k.startswith(p) for p in prefixes)]
    if missing or unexpected:
        raise ConfigError(f"{weights} does not fit model '{card['model_name']}' (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); retrain it with `zoo pretrain`")
    return model.eval(), card
