"""One rank of the sharded `zoo score` test: `python score_ddp_worker.py RANK WORLD RENDEZVOUS PROTOCOL SAMPLES OUT`.

gloo on CPU with a file rendezvous (a TCP port picked by the parent can be taken before the ranks bind it); the toy
extractors replace the real ones as in the in-process tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist
from toy_harness import TEST_EXTRACTORS

from benchmarks.harness import external, load_protocol, score_external, scoring
from benchmarks.harness.scoring import ExtractorCache


def main(rank: int, world_size: int, rendezvous: str, protocol_path: str, samples_dir: str, out_dir: str) -> None:
    ExtractorCache.build = staticmethod(lambda name: TEST_EXTRACTORS[name]())
    read = []  # the files this rank decodes, when checking and when scoring

    def recording(path, *args, original=scoring.read_sample_file):
        read.append(Path(path).name)
        return original(path, *args)

    scoring.read_sample_file = external.read_sample_file = recording
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        score_external(samples_dir, load_protocol(protocol_path), out_dir)
    finally:
        dist.destroy_process_group()
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # rank 1 may finish before rank 0 writes the result
    (Path(out_dir) / f"files_read_rank{rank}.txt").write_text(json.dumps(read))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:7])
