"""Recipes (`recipes/*.yaml`): a protocol + the models + their training budgets, runnable as `zoo bench <recipe>`.

Any key can be overridden from the command line as `key=value` (omegaconf dotlist), e.g.
`zoo bench quick models=[video_ar] trainer.max_steps=20 protocol_overrides.seeds=[0,1]`.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from zoo.config import REPO_ROOT, ConfigError, build_config, did_you_mean, load_yaml, parse_overrides


@dataclass
class Recipe:
    """What `zoo bench` runs.

    models: registered model names or shell patterns (patterns match the zoo's own models, `"*"` = all of them).
    model_configs / model_overrides / model_trainer / checkpoints: per-model config YAML (e.g. a `presets/` file),
        config overrides, trainer overrides, and checkpoints to load instead of training. imports: modules to import first, so models defined outside the zoo register.
    tag: the row-id tag (`<model>.<tag>`), default `<protocol>_<recipe>`. data_root: the folder of a real dataset.
    leaderboard_dir: where the leaderboard is re-rendered after the run (null: not rendered).
    vars: values the rest of the recipe interpolates as `${vars.name}` (`???` = must be given on the command line).
    """

    name: str = ""
    description: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    protocol: str = MISSING
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    tag: str | None = None
    models: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    model_configs: dict[str, str] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    trainer_preset: str = "default"
    trainer: dict[str, Any] = field(default_factory=dict)
    model_trainer: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)
    data_root: str | None = None
    device: str = "auto"
    strip_videos: int = 8
    results_dir: str = "leaderboard/results"
    runs_dir: str = "runs/bench"
    leaderboard_dir: str | None = "leaderboard"

    @property
    def row_tag(self) -> str:
        return self.tag or f"{Path(self.protocol).stem}_{self.name}"


def recipes_dir() -> Path:
    return REPO_ROOT / "recipes"


def list_recipes() -> list[str]:
    """Names of the benchmark recipes in `recipes/` (those that name a protocol; others train e.g. feature nets)."""
    return sorted(path.stem for path in recipes_dir().glob("*.yaml") if "protocol" in load_yaml(path))


def _recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        return path
    candidate = recipes_dir() / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown recipe '{name_or_path}'{did_you_mean(str(name_or_path), list_recipes())}; "
            f"recipes live in {recipes_dir()}, or pass a path to a .yaml file"
        )
    return candidate


def load_recipe(name_or_path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe by name or path with `key=value` overrides; validated (unknown keys are errors)."""
    path = _recipe_path(name_or_path)
    recipe = build_config(Recipe, load_yaml(path), parse_overrides(list(overrides)) if overrides else None,
                          where=f"recipe {path.name}")
    recipe.name = recipe.name or path.stem
    if recipe.strip_videos < 0:
        raise ConfigError(f"recipe {path.name}: strip_videos must be >= 0, got {recipe.strip_videos}")
    for module in recipe.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"recipe {path.name} imports '{module}', which cannot be imported: {exc}") from exc
    return recipe


def resolve_models(recipe: Recipe) -> list[str]:
    """The recipe's model names in order: explicit names as given, patterns expanded over the zoo's own models."""
    from zoo.registry import get_entry, list_models

    registered = list_models()
    zoo_models = [name for name in registered if get_entry(name).cls.__module__.startswith("zoo.models.")]
    names: list[str] = []
    for item in recipe.models:
        if any(ch in item for ch in "*?["):
            matches = fnmatch.filter(zoo_models, item)
            if not matches:
                raise ConfigError(f"recipe '{recipe.name}': pattern '{item}' matches no zoo model")
        elif item in registered:
            matches = [item]
        else:
            raise ConfigError(
                f"recipe '{recipe.name}' names unknown model '{item}'{did_you_mean(item, registered)}; "
                "`zoo list` shows the registered models (add the defining module to `imports`)"
            )
        names.extend(name for name in matches if name not in names)
    names = [name for name in names if not any(fnmatch.fnmatch(name, pattern) for pattern in recipe.exclude)]
    if not names:
        raise ConfigError(f"recipe '{recipe.name}' selects no model; check `models` and `exclude`")
    return names
