"""Model presets (`zoo/configs/model/presets/<model>_<size>.yaml`): differences from the model's default YAML.

Every registered model builds with its default YAML and with every preset of its own; a preset holds only keys that
differ from the default; the shipped presets resolve to exactly the configs their former full copies gave.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from zoo.config import ConfigError
from zoo.registry import MODELS, get_entry, list_models, model_config

# The resolved configs of the six `_large` presets when they were full copies of their model's YAML (commit 2507ad7).
FULL_COPIES = json.loads((Path(__file__).parent / "presets_as_full_copies.json").read_text())


def preset_model(preset: str) -> str | None:
    """The registered model a preset belongs to: the longest model name it starts with, then '_'."""
    owners = [name for name in list_models() if preset.startswith(f"{name}_")]
    return max(owners, key=len) if owners else None


BUILTIN = [name for name in list_models() if get_entry(name).builtin]
PAIRS = [(name, None) for name in BUILTIN] + [(preset_model(p), p) for p in MODELS.list_presets()]


@pytest.mark.parametrize(("model", "preset"), PAIRS, ids=lambda value: str(value))
def test_every_model_config_builds_with_every_preset(model, preset):
    assert model is not None, f"preset '{preset}' belongs to no registered model (name it <model>_<size>.yaml)"
    config = model_config(model, config_path=preset)
    assert isinstance(config, get_entry(model).config_cls)


@pytest.mark.parametrize("preset", MODELS.list_presets())
def test_a_preset_holds_only_what_differs_from_the_default(preset):
    model = preset_model(preset)
    base = yaml.safe_load(MODELS.default_yaml(model).read_text())
    diff = yaml.safe_load((MODELS.presets_dir() / f"{preset}.yaml").read_text())

    def same(a, b, prefix=""):
        for key, value in a.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict):
                yield from same(value, b[key], f"{prefix}{key}.")
            elif key in b and b[key] == value:
                yield prefix + key

    assert not list(same(diff, base)), "keys that repeat the default YAML; delete them from the preset"


@pytest.mark.parametrize("preset", sorted(FULL_COPIES))
def test_shipped_presets_resolve_to_what_their_full_copies_gave(preset, config_subset):
    model = preset.removesuffix("_large")
    config = model_config(model, config_path=preset)
    resolved, default = dataclasses.asdict(config), dataclasses.asdict(type(config)())
    # Every key of the former full copy resolves as it did; keys added to a config since then hold their defaults.
    assert config_subset(resolved, FULL_COPIES[preset]) == FULL_COPIES[preset]
    assert _added(resolved, FULL_COPIES[preset]) == _added(default, FULL_COPIES[preset])


def _added(config, like, prefix=""):
    """{dotted key: value} of the keys of `config` that `like` lacks, at every depth."""
    found = {}
    for key, value in config.items():
        if key not in like:
            found[prefix + key] = value
        elif isinstance(value, dict) and isinstance(like[key], dict):
            found.update(_added(value, like[key], f"{prefix}{key}."))
    return found


def test_a_preset_merges_mappings_over_the_default(tmp_path):
    base = model_config("diffusion_forcing")
    preset = tmp_path / "df_small_change.yaml"
    preset.write_text("schedule: {name: pyramid}\ndiffusion: {num_sampling_steps: 3}\n")
    config = model_config("diffusion_forcing", config_path=preset)
    assert config.schedule.name == "pyramid" and config.schedule.chunk_size == base.schedule.chunk_size
    assert config.diffusion.num_sampling_steps == 3 and config.diffusion.beta_end == base.diffusion.beta_end
    assert config.dim == base.dim  # every key the preset leaves out is the default YAML's
    preset.write_text("dim: 3x\n")
    with pytest.raises(ConfigError, match="bad value for 'dim'"):
        model_config("diffusion_forcing", config_path=preset)


@pytest.mark.parametrize(("model", "preset"), PAIRS, ids=lambda value: str(value))
def test_every_autoencoder_field_declares_its_kind(model, preset):
    """A field naming an autoencoder is declared with `autoencoder_field(kind)`, so a benchmark on another dataset
    binds that dataset's autoencoder of the kind to it (a plain `str` field would keep moving_digits')."""
    from zoo.components.autoencoder import available_autoencoders, load_autoencoder
    from zoo.interface import autoencoder_kinds

    config = model_config(model, config_path=preset)
    kinds = autoencoder_kinds(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, str) and value in available_autoencoders():
            assert field.name in kinds, f"declare {field.name} with autoencoder_field('kl' or 'vq')"
            assert load_autoencoder(value).kind == kinds[field.name]
