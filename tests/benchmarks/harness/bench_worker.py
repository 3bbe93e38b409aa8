"""One `zoo bench` process of the concurrency test: `python bench_worker.py PROTOCOL TMP_DIR`.

Runs the micro recipe on the toy protocol and models, with the toy extractors, every output under TMP_DIR. Training
is slowed by a second so that two processes started together are surely at work on the same folder at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from toy_harness import TEST_EXTRACTORS, micro_overrides

from benchmarks.harness import runner
from benchmarks.harness.scoring import ExtractorCache


def main(protocol_path: str, tmp_dir: str) -> None:
    ExtractorCache.build = staticmethod(lambda name: TEST_EXTRACTORS[name]())
    prepare = runner.prepare_model

    def slow_prepare(*args, **kwargs):
        time.sleep(1.0)
        return prepare(*args, **kwargs)

    runner.prepare_model = slow_prepare
    runner.run_recipe("micro", micro_overrides(Path(tmp_dir), Path(protocol_path)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
