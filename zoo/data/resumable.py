"""A train loader whose position is part of the checkpoint, so a restarted run continues with the same batches.

The order is DistributedSampler's (a permutation seeded by `seed + epoch`, dealt round-robin over the ranks), cut to
whole global batches. Batch j of every rank together is therefore batch j of a single process whose batch is the
global batch: 1 process with batch 8 and 2 processes with batch 4 train on the same samples, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ShardedShuffleSampler(Sampler[int]):
    """One rank's indices of the shuffled epoch `epoch`, from sample `start` of its share on.

    The epoch's permutation is `torch.randperm(num_samples)` seeded by `seed + epoch`; the last partial global batch
    is dropped when at least one full global batch exists (else the samples wrap round to fill every rank).
    """

    def __init__(self, num_samples: int, global_batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(f"global batch {global_batch_size} must be a positive multiple of world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def _epoch_length(self) -> int:
        """Samples used per epoch over all ranks."""
        if self.num_samples >= self.global_batch_size:
            return self.num_samples - self.num_samples % self.global_batch_size
        return math.ceil(self.num_samples / self.world_size) * self.world_size

    def __len__(self) -> int:
        return self._epoch_length() // self.world_size

    def epoch_order(self) -> list[int]:
        """All ranks' samples of the current epoch in global order (rank r takes every world_size-th from r)."""
        if self.num_samples == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        length = self._epoch_length()
        return (order * math.ceil(length / self.num_samples))[:length]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.rank :: self.world_size][self.start :])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `ShardedShuffleSampler` with `state_dict()` / `load_state_dict()` of its position.

    Lightning stores the state of loaders that have these methods in every checkpoint and restores it on resume.
    Iterating again continues the current epoch where it stopped; once an epoch is delivered in full the next
    iteration starts the next epoch (a fresh permutation).
    """

    def __init__(self, dataset: Dataset, sampler: ShardedShuffleSampler, batch_size: int, **kwargs: Any) -> None:
        if sampler.global_batch_size != batch_size * sampler.world_size:
            raise ValueError(
                f"per-process batch {batch_size} x world size {sampler.world_size} must equal the sampler's "
                f"global batch {sampler.global_batch_size}"
            )
        # A private generator keeps the global torch RNG untouched when an iterator draws its worker seed.
        generator = torch.Generator().manual_seed(sampler.seed)
        super().__init__(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=False, generator=generator, **kwargs
        )
        self.epoch = 0
        self.batches_delivered = 0

    def __iter__(self) -> Iterator[Any]:
        # A generator: the position is read when the first batch is requested, after any load_state_dict.
        if self.batches_delivered >= len(self):
            self.epoch, self.batches_delivered = self.epoch + 1, 0
        self.sampler.epoch = self.epoch
        self.sampler.start = self.batches_delivered * self.batch_size
        for batch in super().__iter__():
            self.batches_delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its samples all ranks together have consumed."""
        return {"epoch": self.epoch, "samples_consumed": self.batches_delivered * self.sampler.global_batch_size}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue from a saved position (the same global batch gives the same batches on any number of ranks)."""
        self.epoch = int(state_dict["epoch"])
        self.batches_delivered = int(state_dict["samples_consumed"]) // self.sampler.global_batch_size
