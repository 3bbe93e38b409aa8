"""Recipes (`benchmarks/recipes/*.yaml`): a protocol + the models + their training budgets, run by `zoo bench <recipe>`.

Any key can be overridden from the command line as `key=value` (omegaconf dotlist), e.g.
`zoo bench quick models=[video_ar] trainer.max_steps=20 protocol_overrides.seeds=[0,1]`.
"""

from __future__ import annotations

import fnmatch
import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from hvz_registry import did_you_mean
from zoo.config import ConfigError, build_config, load_yaml, named_yaml, parse_overrides


@dataclass
class Variant:
    """A named row that runs registered `model` with config `overrides` on top of what the recipe sets for that model,
    so one recipe can hold a model several times (a sweep): `variants: {df_block1: {model: diffusion_forcing,
    overrides: {block_size: 1}}}`, then `models: [df_block1, ...]`."""

    model: str = MISSING
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class RowSettings:
    """Everything a recipe decides for one row: the registered model, its config YAML, config overrides, trainer
    overrides, and a checkpoint to load instead of training."""

    model: str
    config_path: str | None
    overrides: dict[str, Any]
    trainer: dict[str, Any]
    checkpoint: str | None


@dataclass
class Recipe:
    """What `zoo bench` runs.

    models: row names: registered models, `variants`, or shell patterns over the zoo's own models and the variants.
    model_preset: every model's preset of this size, by convention `zoo/configs/model/presets/<model>_<size>.yaml`
        (`large`: the GPU sizes); a model without one is an error unless `model_preset_fallback` lets it run at its
        default size (with a warning).
    model_configs / model_overrides / model_trainer / checkpoints: per-model (or per-variant) config YAML (a preset
        name in `zoo/configs/model/presets/`, or a path; wins over `model_preset`), config overrides, trainer
        overrides, and checkpoints to load instead of training. model_overrides and model_trainer also take
        shell-pattern keys (`"*"`), applied first.
    autoencoders: the frozen autoencoder of each kind (`kl`, `vq`: a committed name or a .safetensors path) that every
        model gets for the fields it declares with `zoo.interface.autoencoder_field`; a kind not given is the
        committed `<dataset>_<kind>` of the protocol's dataset. Only fields whose YAML names another autoencoder are
        overridden, and `model_overrides` still win.
    pretrained: rows load the shipped weights `<model>.<tag>` (`zoo.list_pretrained()`) instead of training; the
        recipe's trainer settings are the budget `zoo pretrain <recipe>` trains them under.
    variants: named rows running a registered model with extra overrides (see `Variant`).
    imports: modules to import first, so models defined outside the zoo register.
    tag: the row-id tag (`<model>.<tag>`), used as is. By default the recipe's name where it already names its
        protocol (every word of the protocol's name is one of its words: `horizon_bouncing_shapes` on
        `bouncing_shapes_horizon`), else `<protocol>_<recipe>` (`moving_digits_quick`). data_root: the folder of a
        real dataset.
    leaderboard_dir: where the leaderboard is re-rendered after the run (null: not rendered).
    findings: per row, what training and tuning it under this recipe established where it misses the recipe's
        targets (what was tried, what it read): written into its model card (`finding`) and every result scored from
        it, and shown under its leaderboard table, so the row keeps its place with its explanation beside it.
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
    model_preset: str | None = None
    model_preset_fallback: bool = False
    model_configs: dict[str, str] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    autoencoders: dict[str, str] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    trainer_preset: str = "default"
    trainer: dict[str, Any] = field(default_factory=dict)
    model_trainer: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    pretrained: bool = False
    findings: dict[str, str] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)
    data_root: str | None = None
    device: str = "auto"
    strip_videos: int = 8
    results_dir: str = "leaderboard/results"
    runs_dir: str = "runs/bench"
    leaderboard_dir: str | None = "leaderboard"

    @property
    def row_tag(self) -> str:
        """The `<tag>` of this recipe's row ids: `tag`, else the recipe's name, prefixed with the protocol's name
        unless it already names it (so no row id says its protocol twice)."""
        if self.tag:
            return self.tag
        protocol = Path(self.protocol).stem
        if set(protocol.split("_")) <= set(self.name.split("_")):
            return self.name
        return f"{protocol}_{self.name}"

    def pretrained_id(self, row: str) -> str:
        """The shipped weights of a row (`pretrained: true`): `<row>.<tag>`, the id its leaderboard rows carry."""
        return f"{row}.{self.row_tag}"

    def row_settings(self, row: str) -> RowSettings:
        """A row's settings; a variant's are its model's, then the variant's own entries, then its `overrides`."""
        model = self.variants[row].model if row in self.variants else row
        named = [model, row] if row != model else [model]
        # Pattern keys (`"*"`) apply to every row they match, before its own entries: a new model needs no recipe edit.
        patterns = sorted({key for table in (self.model_overrides, self.model_trainer) for key in table
                           if _is_pattern(key) and any(fnmatch.fnmatch(name, key) for name in named)})
        keys = [*patterns, *named]
        overrides = OmegaConf.merge(*[self.model_overrides.get(key) or {} for key in keys],
                                    self.variants[row].overrides if row in self.variants else {})
        config_path = self.model_configs.get(row) or self.model_configs.get(model) or self.preset_of(model)
        bound = self.bound_autoencoders(model, config_path, set(overrides))
        return RowSettings(
            model=model,
            config_path=config_path,
            overrides=OmegaConf.to_container(OmegaConf.merge(bound, overrides), resolve=True),
            trainer={**self.trainer, **{k: v for key in keys for k, v in (self.model_trainer.get(key) or {}).items()}},
            checkpoint=self.checkpoints.get(row),
        )

    def bound_autoencoders(self, model: str, config_path: str | None, explicit: set[str]) -> dict[str, str]:
        """Overrides giving `model` this recipe's autoencoder of each kind it declares (`autoencoders`, else the
        protocol dataset's committed ones), for the fields the recipe does not set itself (`explicit`)."""
        from zoo.interface import autoencoder_kinds
        from zoo.registry import bound_autoencoders, get_entry

        kinds = {key: kind for key, kind in autoencoder_kinds(get_entry(model).config_cls).items()
                 if key not in explicit}
        if not kinds:
            return {}
        from benchmarks.harness.protocol import load_protocol
        from zoo.components.autoencoder import dataset_autoencoders

        dataset = load_protocol(self.protocol, self.protocol_overrides).dataset.name
        available = {**dataset_autoencoders(dataset), **self.autoencoders}
        for key, kind in kinds.items():
            if kind not in available:
                raise ConfigError(f"recipe '{self.name}': model '{model}' needs a {kind} autoencoder ({key}) and "
                                  f"dataset '{dataset}' ships none; set autoencoders.{kind}=<name or .safetensors path>")
        bound = bound_autoencoders(model, available, config_path)
        return {key: name for key, name in bound.items() if key in kinds}

    def preset_of(self, model: str) -> str | None:
        """`<model>_<model_preset>` when the recipe sizes every model by convention and that preset ships; None for
        no `model_preset`, or (with `model_preset_fallback`) a model without that preset."""
        if self.model_preset is None:
            return None
        from zoo.registry import MODELS

        preset = f"{model}_{self.model_preset}"
        if preset in MODELS.list_presets():
            return preset
        if self.model_preset_fallback:
            return None
        raise ConfigError(f"recipe '{self.name}' runs every model at its '{self.model_preset}' preset, but model "
                          f"'{model}' has none: add {MODELS.presets_dir() / (preset + '.yaml')}, name its config in "
                          f"model_configs.{model}, or set model_preset_fallback: true to run it at its default size")


# Package data beside the code, so an editable install and a wheel find the same recipes.
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def recipes_dir() -> Path:
    return RECIPES_DIR


def list_recipes() -> list[str]:
    """Names of the benchmark recipes in `benchmarks/recipes/` (those that name a protocol; others train e.g. feature
    nets)."""
    return sorted(path.stem for path in recipes_dir().glob("*.yaml") if "protocol" in load_yaml(path))


def _recipe_path(name_or_path: str | Path) -> Path:
    return named_yaml(name_or_path, recipes_dir(), "recipe", list_recipes)


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


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def resolve_models(recipe: Recipe) -> list[str]:
    """The recipe's row names in order: explicit names as given, patterns expanded over the zoo's own models and the
    recipe's variants."""
    from zoo.registry import get_entry, list_models

    registered = list_models()
    for name, variant in recipe.variants.items():
        if name in registered or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"recipe '{recipe.name}': variant name '{name}' must be new and use only letters, "
                              "digits, '_' and '-'")
        if variant.model not in registered:
            raise ConfigError(f"recipe '{recipe.name}': variant '{name}' runs unknown model '{variant.model}'"
                              f"{did_you_mean(variant.model, registered)}")
    zoo_models = [name for name in registered if get_entry(name).cls.__module__.startswith("zoo.models.")]
    selectable = [*zoo_models, *recipe.variants]
    names: list[str] = []
    for item in recipe.models:
        if _is_pattern(item):
            matches = fnmatch.filter(selectable, item)
            if not matches:
                raise ConfigError(f"recipe '{recipe.name}': pattern '{item}' matches no zoo model or variant")
        elif item in registered or item in recipe.variants:
            matches = [item]
        else:
            raise ConfigError(
                f"recipe '{recipe.name}' names unknown model '{item}'"
                f"{did_you_mean(item, [*registered, *recipe.variants])}; "
                "`zoo list` shows the registered models (add the defining module to `imports`, or define a variant)"
            )
        names.extend(name for name in matches if name not in names)
    names = [name for name in names if not any(fnmatch.fnmatch(name, pattern) for pattern in recipe.exclude)]
    if not names:
        raise ConfigError(f"recipe '{recipe.name}' selects no model; check `models` and `exclude`")
    # Against every row the recipe can have, not the selected ones: `models=[one]` must not orphan the others' findings.
    stray = sorted(set(recipe.findings) - set(registered) - set(recipe.variants))
    if stray:
        raise ConfigError(f"recipe '{recipe.name}' has findings for {stray}, which name no model or variant; fix the "
                          "names or drop them")
    for name in names:  # before any row trains: a row the recipe cannot configure is an error now, not hours later
        settings = recipe.row_settings(name)
        if recipe.model_preset is not None and settings.config_path is None:
            warnings.warn(f"recipe '{recipe.name}': model '{settings.model}' has no '{recipe.model_preset}' preset; "
                          "it runs at its default size (model_preset_fallback)", stacklevel=2)
    return names
