"""Suite-wide settings: offline, deterministic, sized for a 2-core CPU machine."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ZOO_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see zoo/__init__.py; set before torch loads

import pytest  # noqa: E402
import torch  # noqa: E402

# At most 2 threads per process, and under pytest-xdist the cores shared among the workers.
workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def config_subset(config, like):
    """`config` (a nested dict) cut down to the keys of `like`, at every depth: a config written before keys were
    added to it compares equal to today's resolution of it when every key it has is the same."""
    if not isinstance(like, dict):
        return config
    return {key: config_subset(config[key], value) for key, value in like.items() if key in config}


@pytest.fixture(name="config_subset", scope="session")
def config_subset_fixture():
    """`config_subset(config, like)`: see the function."""
    return config_subset
