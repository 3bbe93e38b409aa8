"""Under DDP (2 gloo processes on CPU) every metric gives the single-process result on the same data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(helpers, tmp_path):
    output, rendezvous = tmp_path / "ddp_results.pt", tmp_path / "rendezvous"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", str(rendezvous), str(output)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    logs = [rank.communicate(timeout=300)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(logs)[-3000:]

    distributed = torch.load(output, weights_only=True)
    single = helpers.sharded_metric_results(rank=0, world_size=1)
    assert set(distributed) == set(single)
    for name, expected in single.items():
        assert set(distributed[name]) == set(expected), name
        for key, value in expected.items():
            torch.testing.assert_close(distributed[name][key], value, rtol=1e-9, atol=1e-12, msg=f"{name}/{key}")
