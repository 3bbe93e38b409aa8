"""bouncing_shapes: coloured squares, circles and triangles on black, so colour and occlusion are exercised.

Three motion types (every shape starts clear of the wall it heads for, so the first frames show its labelled
direction): "constant" (a shape bounces at constant speed), "accelerating" (it speeds up every frame) and
"occluding" (it passes behind a larger, still shape of another colour). Captions come from the labels:
"a red square moving right, then left", "... , speeding up", "... , behind a blue circle".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from zoo.config import ConfigError
from zoo.data.procedural import (
    COMPASS,
    REFERENCE_SIZE,
    Clip,
    ProceduralConfig,
    ProceduralVideoDataset,
    bounce,
    check_range,
    clear_start,
    compass_velocity,
    path_phrase,
    with_article,
)
from zoo.data.registry import register_dataset

SHAPES = ("square", "circle", "triangle")
COLOURS = {
    "red": (0.95, 0.15, 0.15),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (0.95, 0.9, 0.15),
    "magenta": (0.9, 0.2, 0.9),
    "cyan": (0.15, 0.9, 0.9),
}
MOTIONS = ("constant", "accelerating", "occluding")
MAX_SHAPES = 2
# A moving shape counts as occluded in a frame when less than this share of it is visible.
OCCLUDED_BELOW = 0.5


@dataclass
class BouncingShapesConfig(ProceduralConfig):
    """motions: which motion types to draw from. shape_size: [min, max] side in pixels and acceleration:
    [min, max] speed gain per frame, both on a 32 px canvas (scaled with image_size)."""

    motions: list[str] = field(default_factory=lambda: list(MOTIONS))
    shape_size: list[int] = field(default_factory=lambda: [8, 12])
    acceleration: list[float] = field(default_factory=lambda: [0.15, 0.35])

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.motions) - set(MOTIONS))
        if unknown or not self.motions:
            raise ConfigError(f"motions must be a non-empty subset of {list(MOTIONS)}, got {list(self.motions)}")
        check_range("shape_size", self.shape_size, minimum=3)
        check_range("acceleration", self.acceleration, minimum=0.0)
        if round(self.shape_size[1] * self.image_size / REFERENCE_SIZE) + 2 > self.image_size:
            raise ConfigError(
                f"shape_size {list(self.shape_size)} leaves no room to move on a {self.image_size} canvas"
            )
        size, _, occluder_left = occluding_layout(self.image_size, self.shape_size)
        if "occluding" in self.motions and occluder_left - size < 1:
            raise ConfigError(
                f"shape_size {list(self.shape_size)} is too large for occluding clips on a {self.image_size} canvas; "
                "lower shape_size[0] or drop 'occluding' from motions"
            )


def occluding_layout(image_size: int, shape_size: list[int]) -> tuple[int, int, int]:
    """(moving shape size, occluder size, occluder left column) for "occluding" clips: the smallest shape passes
    behind a slightly larger one standing in the middle of the canvas."""
    scale = image_size / REFERENCE_SIZE
    size = round(shape_size[0] * scale)
    occluder_size = size + round(2 * scale)
    return size, occluder_size, (image_size - occluder_size) // 2


@functools.lru_cache(maxsize=64)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean `[size, size]` mask of a square, circle or (upward) triangle."""
    rows, cols = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        return (rows - centre) ** 2 + (cols - centre) ** 2 <= (size / 2) ** 2
    if shape == "triangle":
        return np.abs(cols - centre) <= (rows + 1) / 2
    raise ValueError(f"unknown shape '{shape}'; choose from {', '.join(SHAPES)}")


@register_dataset("bouncing_shapes", BouncingShapesConfig)
class BouncingShapes(ProceduralVideoDataset):
    """RGB `[T, 3, H, W]` clips of a moving coloured shape; `label` is its shape class (square, circle, triangle)."""

    channels = 3
    class_names = list(SHAPES)
    colour_names = list(COLOURS)

    def make_clip(self, rng: np.random.Generator) -> Clip:
        cfg, frames, canvas_size = self.config, self.num_frames, self.image_size
        motion = str(rng.choice(cfg.motions))
        low, high = (round(s * self.scale) for s in cfg.shape_size)
        shapes = rng.choice(len(SHAPES), size=MAX_SHAPES)
        colours = rng.choice(len(COLOURS), size=MAX_SHAPES, replace=False)  # an occluder never shares the colour
        if motion == "occluding":
            size, start, direction, speed = self._crossing(rng)
        else:
            size = int(rng.integers(low, high + 1))
            unit_start = rng.uniform(0, 1, size=2)
            direction = int(rng.integers(len(COMPASS)))
            speed = rng.uniform(*cfg.speed) * self.scale
        acceleration = rng.uniform(*cfg.acceleration) * self.scale if motion == "accelerating" else 0.0
        velocity = compass_velocity(direction, speed)
        if motion != "occluding":
            start = clear_start(unit_start[None], velocity[None], np.array([canvas_size - size]), [acceleration])[0]
        path = bounce(start[None], velocity[None], np.array([canvas_size - size]), frames, np.array([acceleration]))

        video = np.zeros((frames, canvas_size, canvas_size, 3), np.float32)
        owner = np.zeros((frames, canvas_size, canvas_size), np.int8)  # which shape each pixel shows
        self._paint(video, owner, 1, SHAPES[shapes[0]], size, np.rint(path.positions[:, 0]).astype(int), colours[0])
        text = f"{self._name(shapes[0], colours[0])} {path_phrase(path.signs[:, 0])}"
        num_shapes, occluded_frames, occluder_size = 1, 0, -1
        if motion == "occluding":
            num_shapes, (_, occluder_size, occluder_left) = 2, occluding_layout(canvas_size, cfg.shape_size)
            top = np.clip(round(start[1] + (size - occluder_size) / 2), 0, canvas_size - occluder_size)
            corners = np.broadcast_to(np.array([occluder_left, top]), (frames, 2))
            self._paint(video, owner, 2, SHAPES[shapes[1]], occluder_size, corners, colours[1])
            visible = (owner == 1).sum(axis=(1, 2))
            occluded_frames = int((visible < OCCLUDED_BELOW * shape_mask(SHAPES[shapes[0]], size).sum()).sum())
            text += f", behind {self._name(shapes[1], colours[1])}"
        elif motion == "accelerating":
            text += ", speeding up"

        labels = {
            "shape": np.where(np.arange(MAX_SHAPES) < num_shapes, shapes, -1),
            "colour": np.where(np.arange(MAX_SHAPES) < num_shapes, colours, -1),
            "size": np.array([size, occluder_size], np.int64),
            "motion": np.int64(MOTIONS.index(motion)),
            "num_shapes": np.int64(num_shapes),
            "position": start.astype(np.float32),
            "velocity": velocity.astype(np.float32),
            "direction": np.int64(direction),
            "acceleration": np.float32(acceleration),
            "bounces": np.int64(path.bounces[0]),
            "occluded_frames": np.int64(occluded_frames),
        }
        return Clip(video.transpose(0, 3, 1, 2), text, int(shapes[0]), labels)

    def _crossing(self, rng: np.random.Generator) -> tuple[int, np.ndarray, int, float]:
        """Size, start, compass direction and speed of a shape that crosses behind the occluder, starting clear
        of it on the left or right and heading horizontally across the whole canvas within the clip."""
        size, _, occluder_left = occluding_layout(self.image_size, self.config.shape_size)
        extent = self.image_size - size
        # Off the wall (a start on it would count as a bounce) and clear of the occluder.
        offset = rng.uniform(0.5, occluder_left - size)
        heading_right = bool(rng.integers(2))
        start = np.array([offset if heading_right else extent - offset, rng.uniform(0.3, 0.7) * extent])
        direction = COMPASS.index((1, 0) if heading_right else (-1, 0))
        return size, start, direction, rng.uniform(0.7, 1.1) * extent / max(self.num_frames - 1, 1)

    def _name(self, shape: int, colour: int) -> str:
        return with_article(f"{self.colour_names[colour]} {SHAPES[shape]}")

    def _paint(
        self, video: np.ndarray, owner: np.ndarray, tag: int, shape: str, size: int, corners: np.ndarray, colour: int
    ) -> None:
        """Draw `shape` at integer top-left `corners` [T, 2] (x, y) over what is there, in every frame at once."""
        mask = shape_mask(shape, size)
        frame_index = np.arange(len(corners))[:, None, None]
        rows = (corners[:, 1, None] + np.arange(size))[:, :, None]
        cols = (corners[:, 0, None] + np.arange(size))[:, None, :]
        video[frame_index, rows, cols] = np.where(
            mask[None, :, :, None],
            np.asarray(COLOURS[self.colour_names[colour]], np.float32),
            video[frame_index, rows, cols],
        )
        owner[frame_index, rows, cols] = np.where(mask[None], tag, owner[frame_index, rows, cols])
