"""The weight cache: cache location, checksums, downloads, and fast one-line failures when offline."""

from __future__ import annotations

import hashlib
import re
import socket
import time

import pytest

from benchmarks.features import weight_cache
from benchmarks.features.weight_cache import (
    ChecksumMismatchError,
    WeightFile,
    WeightsUnavailableError,
    fetch,
    register_weight_file,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return tmp_path / "cache"


def served_file(tmp_path, name: str, content: bytes, sha256: str | None = "auto", urls=None) -> WeightFile:
    source = tmp_path / f"source-{name}"
    source.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest() if sha256 == "auto" else sha256
    return register_weight_file(
        WeightFile(name=name, filename=f"{name}.bin", urls=urls or (source.as_uri(),), sha256=digest,
                   description="test file")
    )


def test_known_files_are_well_formed():
    for name in weight_cache.list_weight_files():
        entry = weight_cache.get_weight_file(name)
        if entry.bundled is None:
            assert entry.urls and all(url.startswith("https://") for url in entry.urls), name
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name
    assert weight_cache.get_weight_file("alexnet-owt").sha256.startswith("7be5be79")  # torchvision's name carries it
    assert weight_cache.get_weight_file("pt_inception-2015-12-05").sha256.startswith("6726825d")


def test_cache_dir_follows_zoo_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "mine"))
    assert weight_cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("ZOO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weight_cache.cache_dir() == tmp_path / "xdg" / "hybrid-video-zoo"


def test_download_verifies_and_caches(cache, tmp_path, capsys):
    entry = served_file(tmp_path, "test-download", b"weights" * 1000)
    path = fetch(entry.name)
    assert path == cache / "test-download.bin" and path.read_bytes() == b"weights" * 1000
    assert fetch(entry.name) == path  # cached: no second download
    assert not list(cache.glob("*.part"))


def test_a_download_with_the_wrong_checksum_is_discarded(cache, tmp_path):
    entry = served_file(tmp_path, "test-bad-download", b"tampered", sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="0000"):
        fetch(entry.name)
    assert not (cache / "test-bad-download.bin").exists()


def test_a_corrupt_cached_file_is_refused(cache, tmp_path):
    entry = served_file(tmp_path, "test-corrupt", b"good")
    cache.mkdir(parents=True)
    (cache / "test-corrupt.bin").write_bytes(b"truncated")
    with pytest.raises(ChecksumMismatchError, match="delete it"):
        fetch(entry.name)


def test_unverifiable_files_are_used_with_a_warning(cache, tmp_path):
    entry = served_file(tmp_path, "test-unverified", b"abc", sha256=None)
    with pytest.warns(UserWarning, match=hashlib.sha256(b"abc").hexdigest()):
        fetch(entry.name)


def assert_fast_one_line_failure(name: str, started: float, error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    entry = weight_cache.get_weight_file(name)
    assert "\n" not in message
    assert entry.filename in message and str(weight_cache.local_path(name)) in message
    assert (entry.sha256 or "unrecorded") in message
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["i3d_torchscript", "i3d_pretrained_400", "inception-2015-12-05"])
def test_offline_fails_within_seconds_naming_file_checksum_and_place(cache, monkeypatch, name):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        fetch(name)
    assert_fast_one_line_failure(name, started, error)
    assert "ZOO_OFFLINE" in str(error.value)


def test_no_network_fails_within_seconds(cache, tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entry = served_file(tmp_path, "test-unreachable", b"x", urls=(f"http://127.0.0.1:{port}/weights.bin",))
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        fetch(entry.name)
    assert_fast_one_line_failure(entry.name, started, error)


def test_extractors_never_fall_back_to_random_weights(cache, monkeypatch):
    from benchmarks.features import create_extractor

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    for name in ("i3d_torchscript", "i3d_inception_state_dict", "inception_clean", "lpips_alex"):
        with pytest.raises(WeightsUnavailableError):
            create_extractor(name)


def test_unknown_names_get_a_hint():
    with pytest.raises(KeyError, match="did you mean 'i3d_torchscript'"):
        weight_cache.get_weight_file("i3d_torchscrip")


def test_recorded_sha256_reads_no_file_unless_none_is_recorded(cache, tmp_path, monkeypatch):
    """Result keys pin weights by the recorded checksum (what every load verifies); an unverified file is hashed
    once per version if present, and is None while absent."""
    hashed = []
    real_sha256_of = weight_cache.sha256_of
    monkeypatch.setattr(weight_cache, "sha256_of", lambda path: hashed.append(path) or real_sha256_of(path))
    assert weight_cache.recorded_sha256("i3d_torchscript") == weight_cache.get_weight_file("i3d_torchscript").sha256
    entry = served_file(tmp_path, "test-unverified-key", b"unverified", sha256=None)
    assert weight_cache.recorded_sha256(entry.name) is None and not hashed  # not here: no key part, nothing read
    (cache / entry.filename).parent.mkdir(parents=True)
    (cache / entry.filename).write_bytes(b"unverified")
    assert weight_cache.recorded_sha256(entry.name) == hashlib.sha256(b"unverified").hexdigest()
    assert weight_cache.recorded_sha256(entry.name) == hashlib.sha256(b"unverified").hexdigest() and len(hashed) == 1
    (cache / entry.filename).write_bytes(b"another file")  # a new version is hashed anew
    assert weight_cache.recorded_sha256(entry.name) == hashlib.sha256(b"another file").hexdigest()
