"""`VideoDataModule`: the LightningDataModule over any registered dataset, with its fixed train/val/test splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data.registry import create_dataset, dataset_config


class VideoDataModule(L.LightningDataModule):
    """Batches `{"video": [B, T, C, H, W] in [0, 1], "text": list[str], "label": [B], "labels": {...}, "index": [B]}`.

    The splits are fixed by the dataset; `seed` only orders the shuffled train batches (reproducibly).
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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self._dataset(split)
        # A seeded generator makes the shuffled order a function of `seed` (new order every epoch, same every run).
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) >= self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
