"""The single door to the zoo: `register_model`, `create_model`, `list_models`, `load_model`.

A model file registers itself with a decorator; its defaults live in `zoo/configs/model/<name>.yaml`
and are merged with overrides against the model's config dataclass.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from hvz_registry import UnknownNameError
from zoo.config import ConfigError, ConfigRegistry, RegistryEntry, as_overrides, build_config
from zoo.interface import ModelConfig, VideoGenerator, autoencoder_kinds


class UnknownModelError(UnknownNameError):
    """A model name that is not registered."""


MODELS = ConfigRegistry("model", "model", VideoGenerator, ModelConfig, UnknownModelError,
                        "`zoo list` shows the registered models")
_BUILTINS_IMPORTED = False


def register_model(name: str, config: type[ModelConfig]) -> Callable[[type[VideoGenerator]], type[VideoGenerator]]:
    """Class decorator: `@register_model("my_model", config=MyConfig)` on a `VideoGenerator` subclass."""

    def decorator(cls: type[VideoGenerator]) -> type[VideoGenerator]:
        MODELS.register_class(name, cls, config)
        cls.model_name = name
        return cls

    return decorator


def _import_builtin_models() -> None:
    # Importing zoo.models' modules runs their decorators; adding a model file needs no central list.
    global _BUILTINS_IMPORTED
    if _BUILTINS_IMPORTED:
        return
    _BUILTINS_IMPORTED = True
    import zoo.models as models_pkg

    for module in pkgutil.iter_modules(models_pkg.__path__):
        importlib.import_module(f"zoo.models.{module.name}")


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    _import_builtin_models()
    return MODELS.names(pattern)


def get_entry(name: str) -> RegistryEntry:
    _import_builtin_models()
    return MODELS.get(name)


def model_config(
    name: str,
    overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None,
    config_path: str | Path | None = None,
) -> ModelConfig:
    """The validated config of model `name`: dataclass defaults < YAML < overrides. The YAML is `config_path` (a path,
    or a preset name in `zoo/configs/model/presets/`), else the model's default `zoo/configs/model/<name>.yaml`."""
    _import_builtin_models()
    return MODELS.config(name, overrides, config_path)


def bound_autoencoders(name: str, autoencoders: Mapping[str, str],
                       config_path: str | Path | None = None) -> dict[str, str]:
    """The overrides that give model `name` the autoencoder of each kind in `autoencoders` ({"kl": ..., "vq": ...}):
    one per field it declares with `autoencoder_field`, left out where its YAML (or `config_path`) already names that
    one, so a binding that changes nothing adds no setting. Kinds missing from `autoencoders` are not bound."""
    kinds = autoencoder_kinds(get_entry(name).config_cls)
    if not kinds:
        return {}
    config = model_config(name, config_path=config_path)
    return {field: autoencoders[kind] for field, kind in kinds.items()
            if kind in autoencoders and getattr(config, field) != autoencoders[kind]}


def create_model(
    name: str,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> VideoGenerator:
    """Build a registered model from its YAML defaults (or `config_path`: a YAML path or a preset name), `overrides`
    (dict or dotlist) and keyword overrides; or, with `pretrained=True`, the shipped weights of the id
    `<model>.<dataset>` (`zoo.list_pretrained()`), in eval mode, with the config they were trained with."""
    if pretrained:
        if config_path is not None or overrides or kwargs:
            raise ConfigError("pretrained weights fix their config; load them first, then change sampling settings")
        from zoo.pretrained import load_pretrained

        return load_pretrained(name)[0]
    if "." in name:
        raise ConfigError(f"'{name}' is a pretrained id; pass pretrained=True (model names have no '.')")
    merged: dict[str, Any] = dict(as_overrides(overrides) or {})
    merged.update(kwargs)
    config = model_config(name, merged or None, config_path)
    return get_entry(name).cls(config)


def model_from_hparams(hparams: Mapping[str, Any]) -> VideoGenerator:
    """Rebuild a model from the hyperparameters a checkpoint stores (`model_name` + `config`)."""
    if "model_name" not in hparams or "config" not in hparams:
        raise ConfigError("checkpoint has no zoo hyperparameters (model_name, config); was it written by `zoo train`?")
    entry = get_entry(str(hparams["model_name"]))
    config = build_config(entry.config_cls, dict(hparams["config"]), where=f"checkpoint config of '{entry.name}'")
    return entry.cls(config)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> VideoGenerator:
    """Load a model from a Lightning `.ckpt` or a `.safetensors` export (config in a sidecar JSON).

    Never unpickles arbitrary objects: checkpoints load with `weights_only=True`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise ConfigError(f"{sidecar} is missing; a .safetensors export needs its config JSON beside it")
        model = model_from_hparams(json.loads(sidecar.read_text()))
        state = load_file(str(path), device=str(map_location))
    else:
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise ConfigError(f"cannot read checkpoint {path} (truncated or not a torch checkpoint): {exc}") from exc
        model = model_from_hparams(ckpt.get("hyper_parameters", {}))
        state = ckpt["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit model '{model.model_name}': {first}") from exc
    return model.eval()


def export_safetensors(model: VideoGenerator, path: str | Path) -> Path:
    """Write weights as safetensors plus a `.json` sidecar with the model name and config."""
    import dataclasses

    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    sidecar = {"model_name": model.model_name, "config": dataclasses.asdict(model.config)}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return path
