"""Sample folders: how generation and scoring talk (DiT / StyleGAN-V style).

A folder holds uint8 video shards (`videos_00000.npz`, key `videos`, `[N, T, C, H, W]`) or single video files
(mp4/gif/webm or frame folders, read with `zoo.data.read_video`) plus `manifest.json`, written last, so a folder
without a manifest is unfinished. A model outside the zoo is scored by writing exactly this layout.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.leaderboard.files import atomic_write_bytes, atomic_write_json

MANIFEST = "manifest.json"
FORMAT = "zoo-samples/1"


class SamplesError(ValueError):
    """A sample folder that cannot be scored as it is."""


@dataclass
class SampleManifest:
    """What a sample folder holds and how it was made.

    `reference_index[i]` is the real clip video i was conditioned on (its prompt or context frames);
    `prompts[i]` is the prompt it got, or None when the generator was not text-conditioned.
    `sampling_seconds` is the wall time of generation at `batch_size` videos per call (None if not measured).
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
    format: str = FORMAT

    @property
    def num_videos(self) -> int:
        return sum(int(entry["count"]) for entry in self.files)


def to_uint8(videos: Tensor) -> Tensor:
    """`[B, T, C, H, W]` float in [0, 1] -> uint8 (round to nearest), as any saved video would be."""
    return (videos.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def to_float(videos: Tensor) -> Tensor:
    """uint8 `[B, T, C, H, W]` -> float in [0, 1]."""
    return videos.float() / 255.0


class SampleWriter:
    """Append uint8 shards to a folder; `close(manifest)` writes the manifest last, atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)
        self.files: list[dict[str, Any]] = []

    def add(self, videos: Tensor) -> None:
        """Add a batch `[B, T, C, H, W]` (float in [0, 1] or uint8)."""
        frames = videos if videos.dtype == torch.uint8 else to_uint8(videos)
        name = f"videos_{len(self.files):05d}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, videos=frames.numpy())
        atomic_write_bytes(self.folder / name, buffer.getvalue())
        self.files.append({"file": name, "count": int(frames.shape[0])})

    def close(self, manifest: SampleManifest) -> Path:
        manifest.files = list(self.files)
        if manifest.num_videos != len(manifest.prompts) or manifest.num_videos != len(manifest.reference_index):
            raise SamplesError("manifest prompts/reference_index must have one entry per video")
        return atomic_write_json(self.folder / MANIFEST, asdict(manifest))


def read_manifest(folder: str | Path) -> SampleManifest:
    """The manifest of a finished sample folder."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SamplesError(f"{folder} has no {MANIFEST}: generation did not finish, or it is not a sample folder")
    try:
        data = json.loads(path.read_text())
        return SampleManifest(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise SamplesError(f"{path} is not a valid sample manifest: {exc}".splitlines()[0]) from exc


def _read_file(path: Path, count: int) -> Tensor:
    if path.suffix == ".npz":
        with np.load(path) as shard:
            videos = torch.from_numpy(shard["videos"])
    else:
        from zoo.data import read_video  # [T, H, W, C] uint8

        videos = read_video(path).permute(0, 3, 1, 2).unsqueeze(0)
    if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[0] != count:
        raise SamplesError(f"{path} must hold {count} uint8 videos [N, T, C, H, W], got {tuple(videos.shape)}")
    return videos


def iter_sample_batches(folder: str | Path, manifest: SampleManifest | None = None) -> Iterator[Tensor]:
    """Yield the folder's videos as uint8 `[n, T, C, H, W]` batches, in manifest order."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    for entry in manifest.files:
        path = folder / entry["file"]
        if not path.exists():
            raise SamplesError(f"{path} is listed in the manifest but missing")
        yield _read_file(path, int(entry["count"]))


def read_samples(folder: str | Path) -> tuple[Tensor, SampleManifest]:
    """All videos of a sample folder as one uint8 `[N, T, C, H, W]` tensor, and its manifest."""
    manifest = read_manifest(folder)
    videos = torch.cat(list(iter_sample_batches(folder, manifest)))
    if videos.shape[1] != manifest.num_frames:
        raise SamplesError(f"{folder} videos have {videos.shape[1]} frames, the manifest says {manifest.num_frames}")
    return videos, manifest
