"""Fixtures for the metric tests. The helpers live in metric_helpers.py, a plain module that the DDP worker
script imports too; with pytest's importlib import mode it is loaded here by path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

HELPERS_PATH = Path(__file__).with_name("metric_helpers.py")


def _load_helpers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_metric_test_helpers", HELPERS_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HELPERS = _load_helpers()


@pytest.fixture
def helpers() -> ModuleType:
    """metric_helpers: tiny extractors/classifier/LPIPS, `random_videos`, `build_metric`."""
    return _HELPERS


@pytest.fixture
def video_extractor():
    return _HELPERS.TinyVideoExtractor()


@pytest.fixture
def frame_extractor():
    return _HELPERS.TinyFrameExtractor()
