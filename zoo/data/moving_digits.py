"""moving_digits: the Moving-MNIST protocol on scikit-learn's bundled 8x8 digits — nothing to download.

One or two digit sprites (upscaled, contrast-stretched 8x8 images) bounce inside a square canvas in one of eight
compass directions, starting clear of the wall they head for, so the first frames show that direction. Every clip
carries its ground truth (digit classes, initial positions and velocities, bounces) and a caption generated from
it: "a 3 moving left, then right and a 7 moving down".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from zoo.config import ConfigError
from zoo.data.procedural import (
    COMPASS,
    Clip,
    ProceduralConfig,
    ProceduralVideoDataset,
    bounce,
    clear_start,
    compass_velocity,
    path_phrase,
    with_article,
)
from zoo.data.registry import SPLITS, register_dataset

MAX_DIGITS = 2
# Share of each digit class's images that each split draws from; the images never cross splits.
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass
class MovingDigitsConfig(ProceduralConfig):
    """num_digits: the digit counts to draw from (1 and/or 2). digit_size: sprite side in pixels,
    default 7/16 of the canvas (14 px on 32). speed: pixels/frame on a 32 px canvas (scaled with image_size)."""

    num_digits: list[int] = field(default_factory=lambda: [1, 2])
    digit_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.num_digits or not set(self.num_digits) <= set(range(1, MAX_DIGITS + 1)):
            raise ConfigError(f"num_digits must list counts from 1 to {MAX_DIGITS}, got {list(self.num_digits)}")
        if self.digit_size is not None and not 4 <= self.digit_size <= self.image_size:
            raise ConfigError(f"digit_size must be between 4 and image_size ({self.image_size}), got {self.digit_size}")


@functools.lru_cache(maxsize=1)
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=8)
def digit_sprites(split: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sprites `[N, size, size]` in [0, 1], classes `[N]` and sklearn image indices `[N]` that `split` draws from.

    Each class's images are split 80/10/10 by a fixed permutation, so the splits share no digit image.
    """
    images, targets = _digit_images()
    order = np.random.default_rng(12345).permutation(len(images))
    chosen = []
    for digit in range(10):
        members = order[targets[order] == digit]
        bounds = np.cumsum([0] + [round(SPLIT_FRACTIONS[s] * len(members)) for s in SPLITS])
        bounds[-1] = len(members)
        at = SPLITS.index(split)
        chosen.append(members[bounds[at] : bounds[at + 1]])
    index = np.sort(np.concatenate(chosen))
    upscaled = F.interpolate(
        torch.from_numpy(images[index])[:, None], size=(size, size), mode="bilinear", align_corners=False
    )
    # Bilinear upscaling of 8x8 blurs the strokes; a contrast stretch makes them crisp again.
    sprites = ((upscaled[:, 0] - 0.2) / 0.6).clamp(0, 1).numpy()
    return sprites, targets[index], index


def digit_phrase(digit: int, signs: np.ndarray) -> str:
    """'a 3 moving left, then right' for one digit and its per-frame direction signs `[T, 2]`."""
    return f"{with_article(str(digit))} {path_phrase(signs)}"


@register_dataset("moving_digits", MovingDigitsConfig)
class MovingDigits(ProceduralVideoDataset):
    """Grey `[T, 1, H, W]` clips of 1-2 bouncing sklearn digits; `label` is the first digit's class."""

    channels = 1
    class_names = [str(digit) for digit in range(10)]

    def __init__(self, config: MovingDigitsConfig, split: str = "train") -> None:
        super().__init__(config, split)
        self.digit_size = config.digit_size or round(config.image_size * 7 / 16)
        self.sprites, self.sprite_classes, self.image_index = digit_sprites(split, self.digit_size)

    def make_clip(self, rng: np.random.Generator) -> Clip:
        cfg, size, frames = self.config, self.digit_size, self.num_frames
        count = int(rng.choice(cfg.num_digits))
        which = rng.integers(len(self.sprites), size=count)
        extent = np.full(count, self.image_size - size)
        unit_start = rng.uniform(0, 1, size=(count, 2))
        directions = rng.integers(len(COMPASS), size=count)
        speeds = rng.uniform(*cfg.speed, size=count) * self.scale
        velocity = np.stack([compass_velocity(d, s) for d, s in zip(directions, speeds, strict=True)])
        start = clear_start(unit_start, velocity, extent)
        path = bounce(start, velocity, extent, frames)

        canvas = np.zeros((frames, self.image_size, self.image_size), np.float32)
        corner = np.rint(path.positions).astype(np.int64)  # [T, N, 2] integer top-left (x, y): crisp sprites
        frame_index = np.arange(frames)[:, None, None]
        offsets = np.arange(size)
        for n in range(count):
            rows = (corner[:, n, 1, None] + offsets)[:, :, None]  # [T, size, 1]
            cols = (corner[:, n, 0, None] + offsets)[:, None, :]  # [T, 1, size]
            # Overlapping digits keep the brighter pixel, as in Moving MNIST.
            canvas[frame_index, rows, cols] = np.maximum(canvas[frame_index, rows, cols], self.sprites[which[n]])

        classes = self.sprite_classes[which]
        text = " and ".join(digit_phrase(int(classes[n]), path.signs[:, n]) for n in range(count))
        pad = MAX_DIGITS - count
        labels = {
            "digits": np.pad(classes, (0, pad), constant_values=-1),
            "image_index": np.pad(self.image_index[which], (0, pad), constant_values=-1),  # in sklearn's digits
            "num_digits": np.int64(count),
            "position": np.pad(start, ((0, pad), (0, 0))).astype(np.float32),
            "velocity": np.pad(velocity, ((0, pad), (0, 0))).astype(np.float32),
            "direction": np.pad(directions, (0, pad), constant_values=-1),
            "bounces": np.pad(path.bounces, (0, pad), constant_values=-1),
        }
        return Clip(canvas[:, None], text, int(classes[0]), labels)
