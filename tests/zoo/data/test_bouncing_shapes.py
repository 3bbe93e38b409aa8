from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import default_collate

from zoo.config import ConfigError
from zoo.data import create_dataset
from zoo.data.bouncing_shapes import COLOURS, MOTIONS, SHAPES, shape_mask

SMALL = {"train_size": 64, "val_size": 16, "test_size": 16}
CAPTION = re.compile(
    r"an? (?P<colour>\w+) (?P<shape>\w+) moving (?P<path>[a-z ,]+?)"
    r"(?:, (?P<modifier>speeding up|behind an? (?P<occluder_colour>\w+) (?P<occluder_shape>\w+)))?"
)


@pytest.fixture(scope="module")
def shapes():
    return create_dataset("bouncing_shapes", "train", SMALL)


def colour_pixels(frame: torch.Tensor, colour: str) -> torch.Tensor:
    """Mask `[H, W]` of the pixels of an RGB frame `[3, H, W]` painted in `colour`."""
    return (frame - torch.tensor(COLOURS[colour]).view(3, 1, 1)).abs().amax(dim=0) < 1e-4


def test_item_contract_and_determinism(shapes) -> None:
    item = shapes[5]
    assert tuple(item["video"].shape) == (16, 3, 32, 32) and item["video"].dtype == torch.float32
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    assert (shapes.channels, shapes.num_classes, shapes.class_names) == (3, 3, list(SHAPES))
    again = create_dataset("bouncing_shapes", "train", SMALL)[5]
    assert torch.equal(item["video"], again["video"]) and item["text"] == again["text"]
    assert not torch.equal(shapes[6]["video"], item["video"])
    batch = default_collate([shapes[i] for i in range(12)])  # constant and occluding clips share label shapes
    assert tuple(batch["labels"]["shape"].shape) == (12, 2) and tuple(batch["video"].shape) == (12, 16, 3, 32, 32)


def test_captions_labels_and_pixels_agree(shapes) -> None:
    seen_motions = set()
    for index in range(48):
        item = shapes[index]
        labels = item["labels"]
        match = CAPTION.fullmatch(item["text"])
        assert match, f"caption {item['text']!r} does not follow the grammar"
        motion = MOTIONS[int(labels["motion"])]
        seen_motions.add(motion)
        shape, colour, size = int(labels["shape"][0]), int(labels["colour"][0]), int(labels["size"][0])
        assert match["shape"] == SHAPES[shape] and match["colour"] == list(COLOURS)[colour]
        assert item["label"] == shape
        assert (match["modifier"] == "speeding up") == (motion == "accelerating")
        # The first frame shows exactly the labelled shape, in its colour, at its size (nothing covers it yet).
        first = item["video"][0]
        assert colour_pixels(first, match["colour"]).sum() == shape_mask(SHAPES[shape], size).sum()
        if motion == "occluding":
            assert match["occluder_shape"] == SHAPES[int(labels["shape"][1])]
            assert match["occluder_colour"] == list(COLOURS)[int(labels["colour"][1])] != match["colour"]
            assert int(labels["num_shapes"]) == 2 and int(labels["occluded_frames"]) > 0
            hidden = [
                colour_pixels(frame, match["colour"]).sum() < shape_mask(SHAPES[shape], size).sum() / 2
                for frame in item["video"]
            ]
            assert sum(hidden) == int(labels["occluded_frames"])
        else:
            assert match["occluder_shape"] is None and int(labels["num_shapes"]) == 1
            assert (labels["shape"][1] == -1) and int(labels["occluded_frames"]) == 0
    assert seen_motions == set(MOTIONS)


def shape_centre(video: torch.Tensor) -> torch.Tensor:
    """x, y centre of the non-black pixels of each frame of `[T, 3, H, W]` -> `[T, 2]`."""
    ink = (video.amax(dim=1) > 0).float()
    grid = torch.arange(video.shape[-1], dtype=torch.float32)
    mass = ink.sum(dim=(1, 2))
    return torch.stack([(ink.sum(1) * grid).sum(1) / mass, (ink.sum(2) * grid).sum(1) / mass], dim=1)


@pytest.mark.parametrize("motion", ["accelerating", "constant"])
def test_shapes_travel_as_their_speed_and_acceleration_say(motion: str) -> None:
    frames = 8
    data = create_dataset("bouncing_shapes", "val", SMALL, motions=[motion], num_frames=frames, speed=[0.5, 0.8])
    checked = 0
    for index in range(16):
        labels = data[index]["labels"]
        if int(labels["bounces"]) > 0:
            continue
        velocity, gain = labels["velocity"], float(labels["acceleration"])
        heading = velocity / velocity.norm()
        travelled = float((shape_centre(data[index]["video"])[-1] - shape_centre(data[index]["video"])[0]) @ heading)
        steps = frames - 1
        # step k moves (speed + k * gain) pixels along the heading
        expected = steps * float(velocity.norm()) + gain * steps * (steps - 1) / 2
        assert abs(travelled - expected) < 1.2
        assert (gain > 0.1) == (motion == "accelerating")
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize(
    "bad", [{"motions": ["spinning"]}, {"motions": []}, {"shape_size": [12, 8]}, {"shape_size": [20, 30]}]
)
def test_bad_config_values_are_one_line_errors(bad) -> None:
    with pytest.raises(ConfigError):
        create_dataset("bouncing_shapes", "train", bad)
