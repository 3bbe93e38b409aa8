"""`VideoDataModule`: the LightningDataModule over any registered dataset, with its fixed train/val/test splits.

The train loader is resumable (its position is saved in checkpoints) and shards itself over DDP ranks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from zoo.data.registry import create_dataset, dataset_config
from zoo.data.resumable import ResumableDataLoader, ShardedShuffleSampler


class VideoDataModule(L.LightningDataModule):
    """Batches `{"video": [B, T, C, H, W] in [0, 1], "text": list[str], "label": [B], "labels": {...}, "index": [B]}`.

    The splits are fixed by the dataset; `seed` only orders the shuffled train batches (reproducibly).
    `batch_size` is per process: under DDP every rank loads its share of each global batch of batch_size x ranks.
    """

    def __init__(
        self,
        dataset: str,
        batch_size: int = 16,
        num_workers: int = 0,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset_name = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.overrides = overrides
        self.seed = seed
        self.config = dataset_config(dataset, overrides)  # fails early on a bad name or key
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build the splits a stage needs ("fit" -> train + val, "validate" -> val, "test" -> test; None -> all)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            self._dataset(split)

    def _dataset(self, split: str) -> Dataset:
        dataset = getattr(self, f"{split}_dataset")
        if dataset is None:
            dataset = create_dataset(self.dataset_name, split, self.overrides)
            setattr(self, f"{split}_dataset", dataset)
        return dataset

    def _loader_options(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled train batches: a new order every epoch, the same every run, resumable mid-epoch."""
        dataset = self._dataset("train")
        rank, world_size = self._rank_and_world_size()
        sampler = ShardedShuffleSampler(len(dataset), self.batch_size * world_size, self.seed, rank, world_size)
        return ResumableDataLoader(dataset, sampler, self.batch_size, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("val"), batch_size=self.batch_size, **self._loader_options())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("test"), batch_size=self.batch_size, **self._loader_options())
