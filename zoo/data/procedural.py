"""What the embedded, generated-on-the-fly datasets share: per-item seeding, bouncing motion and its words.

A clip is a pure function of (seed, split, index): item `i` of a split is the same on every machine and worker,
and no two splits share a random stream.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.config import ConfigError
from zoo.data.registry import SPLITS, DatasetConfig

# Compass directions in image coordinates (y grows downwards), as unit steps (dx, dy) and their words.
COMPASS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))
DIRECTION_WORDS = ("right", "down right", "down", "down left", "left", "up left", "up", "up right")
# Speeds and sizes in configs are pixels on this canvas; other canvases scale them.
REFERENCE_SIZE = 32
# Objects start this many steps clear of the walls they head for. At the default speeds (>= 0.7 px/frame per moving
# axis) two steps move an object at least one whole pixel, so the direction a clip is labelled and captioned with is
# the one its first frames show; a bounce before that would make the start look like the opposite direction.
CLEAR_STEPS = 2


@dataclass
class ProceduralConfig(DatasetConfig):
    """Split sizes (virtual: clips are generated when indexed) and speed range in pixels/frame on a 32 px canvas.

    stills_per_clip: each item also carries the first frames of that many further clips of its own random stream
    (`stills` `[K, C, H, W]`, captions `still_text`), for joint image-video training (Ho et al. 2022): a model that
    asks for them (its config's `stills_per_clip`, passed on by `zoo.training.train_model`) learns what objects look
    like from K times more of them per step than its video clips show.
    """

    train_size: int = 100_000
    val_size: int = 256
    test_size: int = 1024
    speed: list[float] = field(default_factory=lambda: [1.0, 2.0])
    stills_per_clip: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if min(self.train_size, self.val_size, self.test_size) < 0:
            raise ConfigError("train_size, val_size and test_size must be >= 0")
        check_range("speed", self.speed, minimum=0.01)  # a still object has no caption
        if self.stills_per_clip < 0:
            raise ConfigError(f"stills_per_clip must be >= 0, got {self.stills_per_clip}")


def check_range(name: str, values: list[float] | list[int], minimum: float) -> None:
    """A `[low, high]` config value: two numbers, low <= high, both >= minimum."""
    if len(values) != 2 or values[0] > values[1] or values[0] < minimum:
        raise ConfigError(f"{name} must be [low, high] with {minimum} <= low <= high, got {list(values)}")


@dataclass
class Trajectory:
    """Top-left positions `[T, N, 2]` (x, y) of N objects, the direction each leaves frame t with `[T, N, 2]`
    (signs of dx, dy), and how many times each bounced off a wall `[N]`."""

    positions: np.ndarray
    signs: np.ndarray
    bounces: np.ndarray


def bounce(
    position: np.ndarray,
    velocity: np.ndarray,
    extent: np.ndarray,
    num_frames: int,
    acceleration: np.ndarray | None = None,
) -> Trajectory:
    """Move N objects from `position` [N, 2] with `velocity` [N, 2] (pixels/frame) inside [0, extent[n]] per axis,

    reflecting off the walls; `acceleration` [N] adds that much speed per frame along the motion.
    """
    # Closed form, no per-frame loop: walk the unfolded straight line, then fold it into the box
    # (a triangle wave); every wall crossing of the unfolded line is one bounce.
    extent = np.maximum(np.asarray(extent, np.float64), 1e-9)[:, None]  # [N, 1]
    unfolded = position[None] + velocity[None] * _travelled(velocity, extent, num_frames, acceleration)  # [T, N, 2]
    phase = np.mod(unfolded, 2 * extent)
    positions = extent - np.abs(phase - extent)
    signs = (np.sign(velocity)[None] * np.where(phase < extent, 1, -1)).astype(np.int64)
    crossings = np.abs(np.floor(unfolded[-1] / extent) - np.floor(unfolded[0] / extent))
    return Trajectory(positions, signs, crossings.sum(axis=1).astype(np.int64))


def _travelled(
    velocity: np.ndarray, extent: np.ndarray, num_frames: int, acceleration: np.ndarray | None
) -> np.ndarray:
    """How far each of N objects has moved by each frame, in multiples of its initial velocity: `[T, N, 1]`."""
    speed = np.linalg.norm(velocity, axis=1)[:, None]  # [N, 1]
    steps = np.arange(num_frames - 1)[:, None, None]  # [T-1, 1, 1]
    gain = 0.0 if acceleration is None else np.asarray(acceleration, np.float64)[:, None]
    # Faster than the free space would make the object jump; acceleration stops at that speed.
    step_speed = np.minimum(speed + gain * steps, np.maximum(extent, speed))
    factor = step_speed / np.maximum(speed, 1e-9)  # [T-1, N, 1]
    return np.concatenate([np.zeros((1, *speed.shape)), np.cumsum(factor, axis=0)])


def clear_start(
    unit: np.ndarray, velocity: np.ndarray, extent: np.ndarray, acceleration: np.ndarray | None = None
) -> np.ndarray:
    """Start positions `[N, 2]` in [0, extent[n]] from uniform draws `unit` `[N, 2]` in [0, 1) for objects that
    `bounce` will move with `velocity` `[N, 2]` and `acceleration` `[N]`, placed so that their first CLEAR_STEPS
    steps meet no wall, wherever the box leaves room."""
    extent = np.asarray(extent, np.float64).reshape(-1, 1)
    lead = velocity * _travelled(velocity, extent, CLEAR_STEPS + 1, acceleration)[CLEAR_STEPS]  # [N, 2] pixels
    low = np.minimum(np.maximum(-lead, 0.0), extent)
    high = np.maximum(extent - np.maximum(lead, 0.0), low)
    return low + unit * (high - low)


def compass_velocity(direction: int, speed: float) -> np.ndarray:
    """Velocity (dx, dy) of `speed` pixels/frame towards compass `direction` (index into DIRECTION_WORDS)."""
    step = np.asarray(COMPASS[direction], np.float64)
    return speed * step / np.linalg.norm(step)


def direction_word(sign_x: int, sign_y: int) -> str:
    """'left', 'up right', ... for the signs (dx, dy) of a non-zero velocity."""
    return DIRECTION_WORDS[COMPASS.index((int(sign_x), int(sign_y)))]


def path_phrase(signs: np.ndarray) -> str:
    """'moving left, then right' from the per-frame direction signs `[T, 2]` of one object: one word per
    direction it took, so a clip with no bounce has exactly one."""
    words: list[str] = []
    for sign_x, sign_y in signs:
        word = direction_word(sign_x, sign_y)
        if not words or words[-1] != word:
            words.append(word)
    return "moving " + ", then ".join(words)


def with_article(noun_phrase: str) -> str:
    """'a 3', 'an 8', 'a red circle'."""
    return ("an " if noun_phrase[0] in "8aeiou" else "a ") + noun_phrase


@dataclass
class Clip:
    """One generated clip before tensor conversion: video `[T, C, H, W]` float32 in [0, 1]."""

    video: np.ndarray
    text: str
    label: int
    labels: dict[str, Any]


class ProceduralVideoDataset(Dataset, abc.ABC):
    """Base of the embedded datasets: item i of a split is `make_clip(rng)` with rng seeded by (seed, split, i)."""

    channels: int
    class_names: list[str]

    def __init__(self, config: ProceduralConfig, split: str = "train") -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        self.config = config
        self.split = split
        self.num_frames = config.num_frames
        self.image_size = config.image_size
        self.scale = config.image_size / REFERENCE_SIZE
        self._length = {"train": config.train_size, "val": config.val_size, "test": config.test_size}[split]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.split} split of {len(self)} clips")
        rng = np.random.default_rng([self.config.seed, SPLITS.index(self.split), index])
        clip = self.make_clip(rng)
        item = {
            "video": torch.from_numpy(np.ascontiguousarray(clip.video, dtype=np.float32)),
            "text": clip.text,
            "label": torch.tensor(clip.label, dtype=torch.long),
            "labels": {name: torch.as_tensor(value) for name, value in clip.labels.items()},
            "index": index,
        }
        if self.config.stills_per_clip:
            # Drawn after the clip from the same stream: the clip itself is the one a run without stills gets.
            others = [self.make_clip(rng) for _ in range(self.config.stills_per_clip)]
            item["stills"] = torch.from_numpy(np.stack([other.video[0] for other in others]).astype(np.float32))
            item["still_text"] = [other.text for other in others]
        return item

    @abc.abstractmethod
    def make_clip(self, rng: np.random.Generator) -> Clip:
        """Generate one clip from its own random stream."""
