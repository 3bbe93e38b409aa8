from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils.data import Dataset

from zoo.config import ConfigError
from zoo.data import DatasetConfig, create_dataset, dataset_config, list_datasets, register_dataset, registry


def test_builtin_datasets_are_listed() -> None:
    assert {"moving_digits", "bouncing_shapes", "video_folder"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_is_a_key_error_with_a_suggestion() -> None:
    with pytest.raises(KeyError) as info:
        create_dataset("bouncing_shape")
    assert str(info.value).startswith("unknown dataset 'bouncing_shape' (did you mean 'bouncing_shapes'?)")


def test_yaml_defaults_then_overrides_then_keywords() -> None:
    assert dataset_config("moving_digits").val_size == 256  # from zoo/configs/data/moving_digits.yaml
    config = dataset_config("moving_digits", ["val_size=7", "num_digits=[1]"])
    assert (config.val_size, config.num_digits) == (7, [1])
    dataset = create_dataset("moving_digits", "val", {"val_size": 7}, val_size=5, num_frames=3)
    assert len(dataset) == 5 and dataset.num_frames == 3 and dataset.config.val_size == 5


def test_bad_key_split_and_override_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unknown key 'num_frame' .*did you mean 'num_frames'"):
        create_dataset("moving_digits", num_frame=4)
    with pytest.raises(ConfigError, match="unknown split 'valid' \\(did you mean 'val'\\?\\)"):
        create_dataset("moving_digits", "valid")
    with pytest.raises(ConfigError, match="must look like key=value"):
        create_dataset("moving_digits", overrides=["num_frames"])


def test_register_a_new_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.DATASETS, "_entries", dict(registry.DATASETS._entries))  # leave no test dataset behind

    @dataclass
    class ConstantConfig(DatasetConfig):
        value: float = 0.5

    @register_dataset("test_constant", ConstantConfig)
    class Constant(Dataset):
        def __init__(self, config: ConstantConfig, split: str = "train") -> None:
            self.config, self.split = config, split

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> dict:
            return {"video": torch.full((self.config.num_frames, 1, 4, 4), self.config.value)}

    assert "test_constant" in list_datasets()
    assert create_dataset("test_constant", "test", value=0.25)[0]["video"].max() == 0.25
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("test_constant", ConstantConfig)(type("Other", (Dataset,), {}))
    with pytest.raises(TypeError, match="must extend"):
        register_dataset("test_bad", dict)(Constant)
