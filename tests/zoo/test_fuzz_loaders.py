"""Fuzzing what users feed the zoo: override lists, YAML files, video files and checkpoints.

Whatever the input, the loaders raise only their documented one-line errors (which `zoo` prints as one line).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.config import ConfigError
from zoo.data import UnknownDatasetError, VideoReadError, create_dataset, read_video, write_video
from zoo.data.video_io import VIDEO_SUFFIXES, count_frames
from zoo.plugins import import_plugins
from zoo.registry import UnknownModelError, create_model, load_model
from zoo.training import check_resumable
from zoo_cli import train_request

import_plugins([str(Path(__file__).with_name("plugin_models.py"))])  # registers tiny_denoiser

DOCUMENTED = (ConfigError, UnknownModelError, UnknownDatasetError, VideoReadError)
# Derandomized: the same examples every run, so CI is stable; no example database is written.
FUZZ = settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

KEYS = ["model.hidden", "model.dim", "model.diffusion.num_sampling_steps", "model.diffusion", "model.clip_length",
        "data.root", "data.num_frames", "data.image_size", "data.speed", "data.extensions", "trainer.max_steps",
        "trainer.devices", "trainer.batch_size", "trainer.precision", "trainer", "model", "max_steps", "x.y.z"]
VALUES = ["1", "-3", "0", "2.5", "1e400", "nan", "abc", "", "[1,", "[1, 2]", "{a: 1}", "${oops}", "???", "null",
          "true", "'quoted'", "[[]]", "{}", "=", "a=b", "\u00e9\u00e8"]
override = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(VALUES) | st.text(max_size=8)),
    st.text(max_size=12),
)
yaml_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
yaml_text = st.one_of(
    st.text(max_size=60),
    st.dictionaries(st.sampled_from(["hidden", "dim", "diffusion", "clip_length", "max_steps", "root", "junk"]),
                    yaml_value, max_size=4).map(yaml.safe_dump),
)


@FUZZ
@given(
    model=st.sampled_from(["tiny_denoiser", "video_diffusion", "autoencoder", "no_such_model"]),
    data=st.sampled_from(["moving_digits", "bouncing_shapes", "video_folder", "no_such_data"]),
    overrides=st.lists(override, max_size=4),
)
def test_train_command_lines(model: str, data: str, overrides: list[str]) -> None:
    try:
        train_request(model, data, overrides)
    except DOCUMENTED:
        pass


@FUZZ
@given(text=yaml_text, model=st.sampled_from(["tiny_denoiser", "video_diffusion"]))
def test_model_yaml_files(text: str, model: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.yaml"
        path.write_text(text)
        try:
            train_request(model, "moving_digits", [], config_path=str(path))
        except DOCUMENTED:
            pass


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Bytes of a real checkpoint and of short real videos, for the fuzzer to cut and garble."""
    folder = tmp_path_factory.mktemp("real")
    model = create_model("tiny_denoiser")
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "global_step": 3}, buffer)
    files = {".ckpt": buffer.getvalue()}
    video = torch.linspace(0, 1, 4 * 3 * 16 * 16).view(4, 3, 16, 16)
    for suffix in (".gif", ".mp4"):
        files[suffix] = write_video(folder / f"clip{suffix}", video).read_bytes()
    return files


def garble(data: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    """`data` cut to a fraction of its length, with bytes overwritten at fractional positions."""
    garbled = bytearray(data[: max(1, int(len(data) * cut))])
    for position, value in flips:
        garbled[int(position * (len(garbled) - 1))] = value
    return bytes(garbled)


file_bytes = st.one_of(
    st.binary(max_size=300).map(lambda raw: (None, raw)),
    st.tuples(
        st.sampled_from([".ckpt", ".gif", ".mp4"]),
        st.floats(0.0, 1.0),
        st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
    ).map(lambda spec: (spec[0], spec[1:])),
)


def materialise(spec: tuple[str | None, object], real_files: dict[str, bytes]) -> bytes:
    source, payload = spec
    if source is None:
        return payload  # type: ignore[return-value]
    cut, flips = payload  # type: ignore[misc]
    return garble(real_files[source], cut, flips)


@FUZZ
@given(spec=file_bytes, suffix=st.sampled_from(VIDEO_SUFFIXES))
def test_video_files(spec: tuple[str | None, object], suffix: str, real_files: dict[str, bytes]) -> None:
    data = materialise(spec, real_files)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped clips warn by design
        clip = Path(folder) / "class_a" / f"clip{suffix}"
        clip.parent.mkdir()
        clip.write_bytes(data)
        for read in (read_video, count_frames):
            try:
                read(clip)
            except VideoReadError:
                pass
        overrides = {"root": folder, "num_frames": 2, "image_size": 8, "val_fraction": 0.0, "test_fraction": 0.0}
        try:
            dataset = create_dataset("video_folder", "train", overrides)
            for index in range(len(dataset)):
                assert dataset[index]["video"].shape == (2, 3, 8, 8)
        except DOCUMENTED:
            pass


@FUZZ
@given(spec=file_bytes)
def test_checkpoint_files(spec: tuple[str | None, object], real_files: dict[str, bytes]) -> None:
    data = materialise(spec, real_files)
    model = create_model("tiny_denoiser")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.ckpt"
        path.write_bytes(data)
        for load in (load_model, lambda checkpoint: check_resumable(checkpoint, model)):
            try:
                load(path)
            except ConfigError:
                pass
