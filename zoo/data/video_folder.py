"""video_folder: clips from a user's own videos, laid out UCF-101 style as `root/<class>/<clip>.<ext>`.

A clip may be a video file (mp4/avi/webm/mkv/mov via PyAV, gif) or a folder of png/jpg frames. Classes are the sorted
sub-folder names; the caption is the class name in words ("ApplyEyeMakeup" -> "apply eye makeup"). A file lands in
train/val/test by a hash of its relative path, so splits never change when files are added. Unreadable or too-short
clips are skipped with a warning naming them, and counted in `dataset.skipped`; they never stop a long run.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch.utils.data import Dataset

from zoo.config import ConfigError
from zoo.data.registry import DatasetConfig, register_dataset
from zoo.data.video_io import FRAME_SUFFIXES, VIDEO_SUFFIXES, VideoReadError, count_frames, read_video

STARTS = ("first", "center", "random")
RESIZES = ("center_crop", "stretch")
# Luma weights (ITU-R BT.601) for channels=1.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class VideoFolderConfig(DatasetConfig):
    """root: the folder of class folders. Clip policy: `num_frames` frames `stride` apart, from the `start`
    ("first", "center" or "random" — random draws from torch's seeded RNG). Resize policy: `resize` "center_crop"
    (shorter side to image_size, then centre crop) or "stretch". `channels` 1 converts to grey.
    val_fraction/test_fraction: shares of clips hashed into val/test."""

    root: str = MISSING
    image_size: int = 64
    channels: int = 3
    stride: int = 1
    start: str = "first"
    resize: str = "center_crop"
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_SUFFIXES))
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start not in STARTS:
            raise ConfigError(f"start must be one of {', '.join(STARTS)}, got '{self.start}'")
        if self.resize not in RESIZES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZES)}, got '{self.resize}'")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.stride < 1:
            raise ConfigError(f"stride must be >= 1, got {self.stride}")
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ConfigError("val_fraction and test_fraction must be >= 0 and leave some clips for train (sum < 1)")
        self.extensions = [ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in self.extensions]


def humanise(class_name: str) -> str:
    """'ApplyEyeMakeup' / 'playing_guitar' -> 'apply eye makeup' / 'playing guitar'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", class_name).replace("_", " ").replace("-", " ")
    return " ".join(words.lower().split())


def split_of(relative_path: str, val_fraction: float, test_fraction: float) -> str:
    """ "train", "val" or "test" for a clip, from a hash of its path relative to the root (stable across runs)."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < test_fraction:
        return "test"
    return "val" if position < test_fraction + val_fraction else "train"


def _is_frames_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())


def find_clips(root: Path, extensions: list[str]) -> list[Path]:
    """Clips under `root/<class>/` (or directly in root): files with a listed extension and folders of frames."""
    clips = []
    for entry in sorted(root.rglob("*")):
        depth = len(entry.relative_to(root).parts)
        if depth > 2:
            continue
        if entry.is_file() and entry.suffix.lower() in extensions:
            clips.append(entry)
        elif depth == 2 and _is_frames_folder(entry):
            clips.append(entry)
    return clips


@register_dataset("video_folder", VideoFolderConfig)
class VideoFolder(Dataset):
    """Clips `[T, C, H, W]` in [0, 1] from `root/<class>/<clip>`; `label` is the index of the class folder name.

    labels: `start_frame` (first frame taken) and `total_frames` (frames in the source), so the policy is recorded.
    """

    def __init__(self, config: VideoFolderConfig, split: str = "train") -> None:
        self.config = config
        self.split = split
        self.num_frames = config.num_frames
        self.image_size = config.image_size
        self.channels = config.channels
        self.root = Path(config.root).expanduser()
        if not self.root.is_dir():
            raise ConfigError(f"video_folder root {self.root} is not a folder; set data.root=<folder of class folders>")
        all_clips = find_clips(self.root, config.extensions)
        if not all_clips:
            raise ConfigError(
                f"no videos found in {self.root} (looked for {', '.join(config.extensions)} files and frame folders "
                "in <root>/<class>/)"
            )
        self.class_names = sorted({self._class_of(clip) for clip in all_clips})
        self.skipped: dict[str, str] = {}
        self.clips: list[tuple[Path, int]] = []  # (path, frame count)
        for clip in all_clips:
            if split_of(clip.relative_to(self.root).as_posix(), config.val_fraction, config.test_fraction) != split:
                continue
            try:
                total = count_frames(clip)
            except VideoReadError as exc:
                self._skip(clip, exc.reason)
                continue
            if total < self.span:
                self._skip(clip, f"too short: {total} frames, a clip needs {self.span}")
                continue
            self.clips.append((clip, total))

    @property
    def span(self) -> int:
        """Source frames one clip covers: num_frames taken stride apart."""
        return (self.num_frames - 1) * self.config.stride + 1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.clips)

    def _class_of(self, clip: Path) -> str:
        parts = clip.relative_to(self.root).parts
        return parts[0] if len(parts) > 1 else self.root.name

    def _skip(self, clip: Path, reason: str) -> None:
        self.skipped[str(clip)] = reason
        warnings.warn(f"video_folder: skipping {clip}: {reason}", stacklevel=3)

    def _start_frame(self, total: int, index: int) -> int:
        room = total - self.span
        if self.config.start == "first":
            return 0
        if self.config.start == "center":
            return room // 2
        if self.split != "train":  # evaluation clips stay fixed
            return int(np.random.default_rng([self.config.seed, index]).integers(room + 1))
        return int(torch.randint(room + 1, ()).item())

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.split} split of {len(self)} clips")
        # A clip that fails only when decoded (corrupt mid-file) is skipped for the next one, never raised.
        for attempt in range(len(self)):
            at = (index + attempt) % len(self)
            path, total = self.clips[at]
            if str(path) in self.skipped:  # found broken earlier in this process
                continue
            start = self._start_frame(total, at)
            try:
                frames = read_video(path, max_frames=start + self.span)
            except VideoReadError as exc:
                self._skip(path, exc.reason)
                continue
            if len(frames) < start + self.span:
                self._skip(path, f"too short: decoded {len(frames)} frames, needed {start + self.span}")
                continue
            return self._item(frames[start : start + self.span : self.config.stride], path, start, total, at)
        raise VideoReadError(self.root, f"none of the {len(self)} {self.split} clips could be decoded")

    def _item(self, frames: torch.Tensor, path: Path, start: int, total: int, index: int) -> dict[str, Any]:
        video = self._resize(frames.permute(0, 3, 1, 2).float() / 255)
        if self.channels == 1:
            video = (video * torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        class_name = self._class_of(path)
        label = self.class_names.index(class_name)
        return {
            "video": video.clamp(0, 1).contiguous(),
            "text": humanise(class_name),
            "label": torch.tensor(label, dtype=torch.long),
            "labels": {
                "class": torch.tensor(label, dtype=torch.long),
                "start_frame": torch.tensor(start, dtype=torch.long),
                "total_frames": torch.tensor(total, dtype=torch.long),
            },
            "index": index,
        }

    def _resize(self, video: torch.Tensor) -> torch.Tensor:
        """`[T, 3, h, w]` -> `[T, 3, S, S]` by the configured resize policy."""
        size = self.image_size
        height, width = video.shape[-2:]
        if self.config.resize == "stretch":
            return F.interpolate(video, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        if (new_h, new_w) != (height, width):
            video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return video[:, :, top : top + size, left : left + size]
