"""Sample folders: how generation and scoring talk (DiT / StyleGAN-V style).

A folder holds uint8 video shards (`videos_00000.npz`, key `videos`, `[N, T, C, H, W]`) or single video files
(mp4/gif/webm or frame folders, read with `zoo.data.read_video`) plus `manifest.json`, written last, so a folder
without a manifest is unfinished. The manifest's JSON schema is `benchmarks/schemas/samples.schema.json`. A model
outside the zoo is scored by writing exactly this layout (`zoo score`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import torch
from torch import Tensor

from benchmarks.features.weight_cache import sha256_of
from benchmarks.files import atomic_write_bytes, atomic_write_json

MANIFEST = "manifest.json"
FORMAT = "zoo-samples/1"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "samples.schema.json"


class SamplesError(ValueError):
    """A sample folder that cannot be scored as it is."""


@dataclass
class SampleManifest:
    """What a sample folder holds and how it was made.

    `reference_index[i]` is the real clip video i was conditioned on (its prompt or context frames);
    `prompts[i]` is the prompt it got, or None when the generator was not text-conditioned. A `files` entry is
    `{"file", "count", "seed"}` (seed optional: what that file's videos were generated with).
    `sampling_seconds` is the wall time of generation at `batch_size` videos per call (None if not measured) of the
    files made at this length: not of those with `prefix_of_rollout` (the first frames of that rollout's videos,
    generated and timed there; `timed_frames` counts the frames it covers);
    `num_parameters` and `hardware` (`{"device", "name"}`) describe the generator's cost when known.
    `generator_config_sha256` identifies the config a zoo model sampled under (`config_sha256`): the same weights
    sampled at another guidance scale or precision make other videos.
    `heldout_index[i]` (real-data folders only, generator `real`) is the clip of the protocol's split that video i
    is: held-out real clips scored as a model, each prompted with its own caption.
    """

    protocol: str
    protocol_hash: str
    generator: str
    generator_version: str
    seed: int
    rollout: int
    num_frames: int
    context_frames: int
    conditioned_on: str
    fps: int
    prompts: list[str | None]
    reference_index: list[int]
    files: list[dict[str, Any]] = field(default_factory=list)
    sampling_seconds: float | None = None
    batch_size: int | None = None
    num_parameters: int | None = None
    hardware: dict[str, Any] | None = None
    heldout_index: list[int] | None = None
    generator_config_sha256: str | None = None
    format: str = FORMAT

    @property
    def num_videos(self) -> int:
        return sum(int(entry["count"]) for entry in self.files)

    @property
    def timed_frames(self) -> int:
        """The frames `sampling_seconds` covers: those of the files generated at this rollout's length."""
        return self.num_frames * sum(int(entry["count"]) for entry in self.files if "prefix_of_rollout" not in entry)


def to_uint8(videos: Tensor) -> Tensor:
    """`[B, T, C, H, W]` float in [0, 1] -> uint8 (round to nearest), as any saved video would be."""
    return (videos.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def to_float(videos: Tensor) -> Tensor:
    """uint8 `[B, T, C, H, W]` -> float in [0, 1]."""
    return videos.float() / 255.0


class SampleWriter:
    """Append uint8 shards (or register video files) in a folder; `close(manifest)` writes the manifest last."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)
        self.files: list[dict[str, Any]] = []

    def add(self, videos: Tensor, seed: int | None = None, index: int | None = None,
            prefix_of_rollout: int | None = None) -> None:
        """Add a batch `[B, T, C, H, W]` (float in [0, 1] or uint8) generated with `seed` as shard `index`
        (default: the next one; ranks that share a folder name their shards by batch index); `prefix_of_rollout`:
        the videos are the first frames of that rollout's, generated there (and timed there)."""
        frames = videos if videos.dtype == torch.uint8 else to_uint8(videos)
        name = f"videos_{len(self.files) if index is None else index:05d}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, videos=frames.numpy())
        atomic_write_bytes(self.folder / name, buffer.getvalue())
        self.add_file(name, int(frames.shape[0]), seed)
        if prefix_of_rollout is not None:
            self.files[-1]["prefix_of_rollout"] = prefix_of_rollout

    def add_file(self, name: str, count: int = 1, seed: int | None = None) -> None:
        """Register a file already in the folder: a video file or frame folder (count 1), or an .npz shard."""
        if not (self.folder / name).exists():
            raise SamplesError(f"{self.folder / name} does not exist; write the video before adding it")
        self.files.append({"file": name, "count": count} if seed is None else {"file": name, "count": count,
                                                                               "seed": seed})

    def close(self, manifest: SampleManifest) -> Path:
        manifest.files = list(self.files)
        if manifest.num_videos != len(manifest.prompts) or manifest.num_videos != len(manifest.reference_index):
            raise SamplesError("manifest prompts/reference_index must have one entry per video")
        data = asdict(manifest)
        problems = manifest_problems(data)
        if problems:
            raise SamplesError(f"invalid sample manifest: {'; '.join(problems)}")
        return atomic_write_json(self.folder / MANIFEST, data)


@functools.lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON schema of `manifest.json` (`benchmarks/schemas/samples.schema.json`)."""
    return json.loads(SCHEMA_PATH.read_text())


def manifest_problems(data: Any) -> list[str]:
    """Every way `data` fails the manifest schema, one line each (empty when it is valid)."""
    validator = jsonschema.Draft202012Validator(manifest_schema())
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        problems.append(f"{where}: {error.message}")
    if not problems and not (len(data["prompts"]) == len(data["reference_index"])
                             == sum(entry["count"] for entry in data["files"])):
        problems.append(f"prompts ({len(data['prompts'])}) and reference_index ({len(data['reference_index'])}) "
                        f"need one entry per video ({sum(entry['count'] for entry in data['files'])} in files)")
    return problems


def read_manifest(folder: str | Path) -> SampleManifest:
    """The manifest of a finished sample folder; `SamplesError` lists every schema problem."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SamplesError(f"{folder} has no {MANIFEST}: generation did not finish, or it is not a sample folder")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SamplesError(f"{path} is not valid JSON: {exc}".splitlines()[0]) from exc
    problems = manifest_problems(data)
    if problems:
        raise SamplesError(f"{path} is not a valid sample manifest: {'; '.join(problems)}")
    return SampleManifest(**data)


def sample_file_sha256(path: Path) -> str:
    """sha256 of one listed sample file; of a folder of frames, over its files' relative names and sha256s in name
    order (so a renamed, added or changed frame changes it)."""
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_of(item)}\n".encode())
    return digest.hexdigest()


def read_sample_file(path: Path, count: int, channels: int | None = None) -> Tensor:
    """The uint8 `[count, T, C, H, W]` videos of one listed file; `SamplesError` if it is unreadable.

    Video files decode to RGB; for a `channels=1` protocol they are turned grey (channel mean), which is exact for
    the grey-replicated RGB that `zoo.data.write_video` writes.
    """
    if path.suffix == ".npz":
        try:
            with np.load(path) as shard:
                videos = torch.from_numpy(shard["videos"])
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise SamplesError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else 'corrupt'}") from exc
    else:
        from zoo.data import read_video  # [T, H, W, C] uint8

        try:
            videos = read_video(path).permute(0, 3, 1, 2).unsqueeze(0)
        except ValueError as exc:  # zoo.data.VideoReadError: missing, empty, corrupt
            raise SamplesError(str(exc)) from exc
        if channels == 1:
            videos = videos.float().mean(dim=2, keepdim=True).round().to(torch.uint8)
    if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[0] != count:
        raise SamplesError(f"{path} must hold {count} uint8 videos [N, T, C, H, W], got {tuple(videos.shape)}")
    return videos


def iter_sample_batches(
    folder: str | Path, manifest: SampleManifest | None = None, channels: int | None = None
) -> Iterator[Tensor]:
    """Yield the folder's videos as uint8 `[n, T, C, H, W]` batches, in manifest order."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    for entry in manifest.files:
        path = folder / entry["file"]
        if not path.exists():
            raise SamplesError(f"{path} is listed in the manifest but missing")
        yield read_sample_file(path, int(entry["count"]), channels)


def read_samples(folder: str | Path) -> tuple[Tensor, SampleManifest]:
    """All videos of a sample folder as one uint8 `[N, T, C, H, W]` tensor, and its manifest."""
    manifest = read_manifest(folder)
    videos = torch.cat(list(iter_sample_batches(folder, manifest)))
    if videos.shape[1] != manifest.num_frames:
        raise SamplesError(f"{folder} videos have {videos.shape[1]} frames, the manifest says {manifest.num_frames}")
    return videos, manifest


def write_strip(folder: str | Path, path: Path, count: int, fps: int, channels: int | None = None) -> str | None:
    """A GIF of the first `count` videos of a sample folder, side by side; returns its file name."""
    if count == 0:
        return None
    from zoo.data import save_video_grid

    batches, have = [], 0
    for batch in iter_sample_batches(folder, channels=channels):
        batches.append(batch[: count - have])
        have += batches[-1].shape[0]
        if have >= count:
            break
    save_video_grid(path, to_float(torch.cat(batches)), fps=fps)
    return path.name
