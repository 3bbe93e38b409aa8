"""The door to the datasets: `register_dataset`, `create_dataset`, `list_datasets`, `dataset_config`.

A dataset file registers its class with a decorator; its defaults live in `configs/data/<name>.yaml`
and are merged with overrides against the dataset's config dataclass (an unknown key is an error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import Dataset

from zoo.config import ConfigError, build_config, config_dir, did_you_mean, load_yaml, parse_overrides

SPLITS = ("train", "val", "test")


class UnknownDatasetError(KeyError):
    """A dataset name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; a user wants it plain
        return str(self.args[0])


@dataclass
class DatasetConfig:
    """Fields every dataset config has; a dataset's own dataclass extends it.

    num_frames: frames per clip. image_size: square frame side in pixels. seed: fixes the content of every split.
    """

    num_frames: int = 16
    image_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.image_size < 1:
            raise ConfigError(f"num_frames and image_size must be >= 1, got {self.num_frames} and {self.image_size}")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    cls: type[Dataset]
    config_cls: type[DatasetConfig]

    @property
    def default_yaml(self) -> Path:
        return config_dir() / "data" / f"{self.name}.yaml"


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, config_cls: type[DatasetConfig]) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator: `@register_dataset("my_data", MyConfig)` on a Dataset built as `cls(config, split)`."""

    def decorator(cls: type[Dataset]) -> type[Dataset]:
        if not issubclass(config_cls, DatasetConfig):
            raise TypeError(f"config {config_cls.__name__} of dataset {name} must extend zoo.data.DatasetConfig")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"dataset name '{name}' is already registered by {existing.cls.__qualname__}")
        cls.dataset_name = name
        _REGISTRY[name] = DatasetEntry(name, cls, config_cls)
        return cls

    return decorator


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        raise UnknownDatasetError(
            f"unknown dataset '{name}'{did_you_mean(name, _REGISTRY)}; known: {', '.join(list_datasets())}"
        )
    return _REGISTRY[name]


def _as_mapping(overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None) -> Mapping[str, Any] | None:
    if overrides is None or isinstance(overrides, (Mapping, DictConfig)):
        return overrides
    return parse_overrides(list(overrides))


def dataset_config(name: str, overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None) -> DatasetConfig:
    """The validated config of dataset `name`: dataclass defaults < `configs/data/<name>.yaml` < overrides."""
    entry = _entry(name)
    yaml = load_yaml(entry.default_yaml) if entry.default_yaml.is_file() else None
    return build_config(entry.config_cls, yaml, _as_mapping(overrides), where=f"config of dataset '{name}'")


def create_dataset(
    name: str,
    split: str = "train",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build split `split` ("train", "val" or "test") of dataset `name` from its YAML, `overrides` and keywords."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}; use one of {', '.join(SPLITS)}")
    entry = _entry(name)
    merged: dict[str, Any] = dict(_as_mapping(overrides) or {})
    merged.update(kwargs)
    return entry.cls(dataset_config(name, merged or None), split)
