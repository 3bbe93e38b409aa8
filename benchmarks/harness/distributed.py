"""Sharded generation and scoring across ranks: who does what, and how ranks agree before a metric syncs.

Evaluation needs no Lightning Trainer: each rank generates its share of the batches and updates torchmetrics states
with its share of the files, and `Metric.compute()` sums the states over ranks (`dist_reduce_fx`). `zoo bench` and
`zoo score` under `torchrun` join the process group that torchrun describes in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (`WORLD_SIZE` > 1): gloo on CPU, NCCL on CUDA, where each rank
    takes GPU `LOCAL_RANK`. Returns this rank's device (`device` itself outside torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # A day: under `zoo bench` the other ranks wait while rank 0 trains a recipe row.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=24))
    return device


def rank_zero_first(build: Callable[[], T]) -> T:
    """Run `build` on rank 0, then on the other ranks (which then find what rank 0 cached instead of racing it)."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return build()
    result = build() if rank == 0 else None
    dist.barrier()
    return result if rank == 0 else build()


def all_ranks_agree(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """Each flag AND-ed over ranks: a metric that failed on one rank is dropped on all, so no rank waits alone
    in a sync that the others skip."""
    if rank_and_world_size()[1] == 1 or not flags:
        return list(flags)
    tensor = torch.tensor([int(flag) for flag in flags], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return [bool(value) for value in tensor.tolist()]


def gather_lists(items: list[T]) -> list[T]:
    """Every rank's list (of picklable items), concatenated in rank order (each rank gets the whole)."""
    if rank_and_world_size()[1] == 1:
        return list(items)
    gathered: list[list[T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]


def from_rank_zero(value: T) -> T:
    """Rank 0's `value` on every rank: decisions that read shared files (is a result finished? is a row locked?)
    are taken once, so no rank goes a different way from the others."""
    if rank_and_world_size()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()
