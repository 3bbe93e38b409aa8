"""The door to the datasets: `register_dataset`, `create_dataset`, `list_datasets`, `dataset_config`.

A dataset file registers its class with a decorator; its defaults live in `zoo/configs/data/<name>.yaml`
and are merged with overrides against the dataset's config dataclass (an unknown key is an error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import Dataset

from hvz_registry import UnknownNameError, unknown_name
from zoo.config import ConfigError, ConfigRegistry, as_overrides

SPLITS = ("train", "val", "test")


class UnknownDatasetError(UnknownNameError):
    """A dataset name that is not registered."""


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


DATASETS = ConfigRegistry("dataset", "data", Dataset, DatasetConfig, UnknownDatasetError,
                          "`zoo list` shows the registered datasets")


def register_dataset(name: str, config_cls: type[DatasetConfig]) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator: `@register_dataset("my_data", MyConfig)` on a Dataset built as `cls(config, split)`."""

    def decorator(cls: type[Dataset]) -> type[Dataset]:
        DATASETS.register_class(name, cls, config_cls)
        cls.dataset_name = name
        return cls

    return decorator


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return DATASETS.names()


def dataset_config(name: str, overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None) -> DatasetConfig:
    """The validated config of dataset `name`: dataclass defaults < `zoo/configs/data/<name>.yaml` < overrides."""
    return DATASETS.config(name, overrides)


def create_dataset(
    name: str,
    split: str = "train",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build split `split` ("train", "val" or "test") of dataset `name` from its YAML, `overrides` and keywords."""
    if split not in SPLITS:
        raise ConfigError(unknown_name("split", split, SPLITS, f"use one of {', '.join(SPLITS)}"))
    entry = DATASETS.get(name)
    merged: dict[str, Any] = dict(as_overrides(overrides) or {})
    merged.update(kwargs)
    return entry.cls(dataset_config(name, merged or None), split)
