"""One rank of the DDP metric test: `python ddp_worker.py RANK WORLD_SIZE RENDEZVOUS_FILE OUTPUT` (gloo, CPU).

A file rendezvous, not a TCP port: a port picked free by the parent can be taken by the time the ranks bind it."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from metric_helpers import sharded_metric_results


def main(rank: int, world_size: int, rendezvous: str, output: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        results = sharded_metric_results(rank, world_size)
        if rank == 0:
            torch.save(results, output)
        # Tear down together: one CI run saw a rank abort ("terminate called without an active exception") when
        # rank 1 destroyed the group while rank 0 was still saving.
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
