"""Sharded scoring across ranks: which rank scores which files, and how ranks agree before a metric syncs.

Scoring needs no Lightning Trainer: each rank updates torchmetrics states with its share of the files, and
`Metric.compute()` sums the states over ranks (`dist_reduce_fx`). `zoo score` under `torchrun` joins the process
group that torchrun describes in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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


def gather_lists(items: list[str]) -> list[str]:
    """Every rank's list, concatenated in rank order (each rank gets the whole)."""
    if rank_and_world_size()[1] == 1:
        return list(items)
    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]
