"""One rank of the sharded `zoo bench` test: `python bench_ddp_worker.py RANK WORLD RENDEZVOUS PROTOCOL TMP_DIR`.

Runs the micro recipe on the toy protocol and models in a gloo process group (file rendezvous), every output under
TMP_DIR, and records how many videos this rank generated in TMP_DIR/generated_rank<RANK>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist
import toy_harness
from toy_harness import TEST_EXTRACTORS, micro_overrides

from benchmarks.harness import run_recipe
from benchmarks.harness.scoring import ExtractorCache


def main(rank: int, world_size: int, rendezvous: str, protocol_path: str, tmp_dir: str) -> None:
    ExtractorCache.build = staticmethod(lambda name: TEST_EXTRACTORS[name]())
    generated = []

    def recording(self, num_videos, *args, original=toy_harness.ToyGenerator.generate_inner, **kwargs):
        generated.append(num_videos)
        return original(self, num_videos, *args, **kwargs)

    toy_harness.ToyGenerator.generate_inner = recording
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        run_recipe("micro", micro_overrides(Path(tmp_dir), Path(protocol_path)))
    finally:
        dist.destroy_process_group()
    (Path(tmp_dir) / f"generated_rank{rank}.json").write_text(json.dumps(generated))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
