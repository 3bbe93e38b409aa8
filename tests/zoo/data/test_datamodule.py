from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.config import ConfigError
from zoo.data import VideoDataModule

SMALL = {"train_size": 48, "val_size": 12, "test_size": 12, "num_frames": 4}


def all_batches(loader) -> list[dict]:
    return list(loader)


@pytest.mark.parametrize("dataset", ["moving_digits", "bouncing_shapes"])
def test_splits_are_fixed_disjoint_and_batched(dataset: str) -> None:
    data = VideoDataModule(dataset, batch_size=8, overrides=SMALL, seed=0)
    data.setup("fit")
    assert data.test_dataset is None  # fit builds only what it needs
    data.setup("test")
    assert (len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)) == (48, 12, 12)
    train = all_batches(data.train_dataloader())
    assert len(train) == 6 and all(tuple(b["video"].shape[:2]) == (8, 4) for b in train)
    assert sorted(torch.cat([b["index"] for b in train]).tolist()) == list(range(48))  # an epoch sees every clip once
    videos = {
        split: torch.cat([b["video"] for b in all_batches(getattr(data, f"{split}_dataloader")())])
        for split in ("val", "test")
    }
    train_videos = torch.cat([b["video"] for b in train])
    flat = {name: v.flatten(1) for name, v in {"train": train_videos, **videos}.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert torch.cdist(flat[a], flat[b]).min() > 0, f"{a} and {b} share a clip"
    again = VideoDataModule(dataset, batch_size=8, overrides=SMALL, seed=0)
    assert torch.equal(torch.cat([b["video"] for b in again.val_dataloader()]), videos["val"])  # fixed splits


def test_train_order_depends_on_seed_only() -> None:
    def first_epoch(seed: int) -> list[int]:
        data = VideoDataModule("moving_digits", batch_size=8, overrides=SMALL, seed=seed)
        return torch.cat([b["index"] for b in data.train_dataloader()]).tolist()

    assert first_epoch(0) == first_epoch(0) != first_epoch(1)
    data = VideoDataModule("moving_digits", batch_size=8, overrides=SMALL, seed=0)
    loader = data.train_dataloader()
    epochs = [torch.cat([b["index"] for b in loader]).tolist() for _ in range(2)]
    assert epochs[0] != epochs[1]  # a fresh order each epoch
    val = [b["index"].tolist() for b in data.val_dataloader()]
    assert val == [list(range(8)), list(range(8, 12))]  # evaluation is unshuffled and complete


def test_video_folder_datamodule(video_root: Path) -> None:
    overrides = {"root": str(video_root), "num_frames": 8, "image_size": 8, "val_fraction": 0.3, "test_fraction": 0.3}
    with pytest.warns(UserWarning, match="skipping"):
        data = VideoDataModule("video_folder", batch_size=2, overrides=overrides)
        data.setup()
    paths = {split: {p for p, _ in getattr(data, f"{split}_dataset").clips} for split in ("train", "val", "test")}
    assert not (paths["train"] & paths["val"] or paths["train"] & paths["test"] or paths["val"] & paths["test"])
    assert sum(len(p) for p in paths.values()) == 5
    batches = list(data.val_dataloader()) + list(data.test_dataloader())
    assert sum(len(b["text"]) for b in batches) == len(paths["val"]) + len(paths["test"])


def test_bad_names_fail_when_built() -> None:
    with pytest.raises(KeyError, match="did you mean 'moving_digits'"):
        VideoDataModule("moving_digit")
    with pytest.raises(ConfigError, match="unknown key 'bach_size'"):
        VideoDataModule("moving_digits", overrides=["bach_size=3"])
