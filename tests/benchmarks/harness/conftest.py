"""Fixtures for the harness and leaderboard tests: valid result records built in code, tiny and offline.

toy_harness.py (toy protocol, generators, extractors) is loaded here once under the name `toy_harness`, so the test
modules (imported with pytest's importlib mode, without their folder on sys.path) can `import toy_harness` and the
toy models register exactly once.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness.scoring import ExtractorCache


def _load_toy_harness():
    if "toy_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("toy_harness", Path(__file__).with_name("toy_harness.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["toy_harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["toy_harness"]


toy_harness = _load_toy_harness()


@pytest.fixture
def toy_env(tmp_path, monkeypatch):
    """A toy protocol file, test extractors, and a private cache folder."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ExtractorCache, "build", staticmethod(lambda name: toy_harness.TEST_EXTRACTORS[name]()))
    protocol_path = tmp_path / "toy_digits.yaml"
    protocol_path.write_text(toy_harness.TOY_PROTOCOL)
    return protocol_path

PROTOCOL_HASH = hashlib.sha256(b"protocol-a").hexdigest()
REFERENCE_SHA = hashlib.sha256(b"reference-a").hexdigest()
CHECKPOINT_SHA = hashlib.sha256(b"checkpoint").hexdigest()


def metric_entry(value: float | None, variant: str = "fvd_domain", rollout: int = 1, higher: bool = False,
                 reason: str | None = None) -> dict[str, Any]:
    entry = {"value": value, "metric": variant.split("_")[0], "variant": variant, "rollout": rollout,
             "higher_is_better": higher, "num_real": 16, "num_fake": 16, "extractor": "domain"}
    if value is None:
        entry["missing_reason"] = reason or "could not be computed"
    return entry


def make_result(model: str = "alpha", tag: str = "toy_micro", seed: int = 0, fvd: float | None = 10.0,
                adherence: float | None = 0.5, speed: float = 0.01, protocol_hash: str = PROTOCOL_HASH,
                reference_sha: str = REFERENCE_SHA, protocol: str = "toy", created: str = "2025-01-01T00:00:00+00:00",
                curve: list[float] | None = None) -> dict[str, Any]:
    """A valid result record; keyword arguments change the numbers that tests compare."""
    result = {
        "schema_version": 1,
        "id": f"{model}.{tag}",
        "recipe": "micro",
        "seed": seed,
        "model": {"name": model, "tag": tag, "source": "external", "strategy": "toy", "config": {"width": 4},
                  "supported_conditions": ["text"], "conditioned_on": "text", "clip_length": 8, "can_extend": True},
        "protocol": {"name": protocol, "version": 1, "hash": protocol_hash, "primary_metric": "fvd_domain@1x",
                     "reference_sha256": reference_sha},
        "metrics": {
            "fvd_domain@1x": metric_entry(fvd),
            "fvd_domain@2x": metric_entry(None if fvd is None else fvd * 2, rollout=2),
            "prompt_adherence@1x": metric_entry(adherence, "prompt_adherence", higher=True),
        },
        "curves": {},
        "cost": {"num_parameters": 1234, "train_steps": 5, "train_seconds": 1.5, "sampling_seconds_per_frame": speed,
                 "sampling_batch_size": 8, "peak_memory_mb": 100.0, "peak_memory_kind": "process_max_rss",
                 "hardware": {"device": "cpu", "name": "test cpu", "torch_threads": 1, "cpu_count": 2}},
        "provenance": {"git_commit": "0" * 40, "git_dirty": False, "packages": {"torch": "2.0"},
                       "protocol_hash": protocol_hash, "checkpoint_sha256": CHECKPOINT_SHA, "seeds": [seed],
                       "training_seed": 0, "command": "zoo bench micro", "created": created},
        "samples": {"strip": None, "num_videos": 0, "fps": 8},
    }
    if curve is not None:
        result["curves"]["fid_over_time@2x"] = {"x": [float(i) for i in range(len(curve))], "y": curve,
                                                "x_label": "frame", "metric": "fid_over_time",
                                                "higher_is_better": False}
    return copy.deepcopy(result)


def write_result(results_dir: Path, result: dict[str, Any], name: str | None = None) -> Path:
    folder = results_dir / result["protocol"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{result['id']}.seed{result['seed']}.json")
    path.write_text(json.dumps(result))
    return path


@pytest.fixture(name="make_result")
def make_result_fixture():
    """`make_result(model=..., seed=..., fvd=...)` -> a valid result dict."""
    return make_result


@pytest.fixture(name="write_result")
def write_result_fixture():
    """`write_result(results_dir, result, name=None)` -> the path written."""
    return write_result


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """Three models on one protocol (two seeds for alpha), one on a changed protocol, one broken file."""
    root = tmp_path / "results"
    write_result(root, make_result("alpha", seed=0, fvd=10.0, curve=[1.0, 2.0, 3.0]))
    write_result(root, make_result("alpha", seed=1, fvd=12.0, curve=[1.5, 2.5, 3.5]))
    write_result(root, make_result("beta", fvd=5.0, adherence=0.2, speed=0.1, curve=[2.0, 2.0, 2.0]))
    write_result(root, make_result("gamma", fvd=None, adherence=0.9, speed=0.001))
    other = hashlib.sha256(b"protocol-b").hexdigest()
    write_result(root, make_result("alpha", fvd=1.0, protocol_hash=other), name="alpha.toy_micro.seed0.v2.json")
    broken = make_result("delta", fvd=3.0)
    del broken["provenance"]
    write_result(root, broken)
    return root
