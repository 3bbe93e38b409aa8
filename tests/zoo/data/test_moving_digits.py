from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from zoo.config import ConfigError
from zoo.data import create_dataset
from zoo.data.moving_digits import digit_sprites
from zoo.data.procedural import COMPASS, DIRECTION_WORDS

SMALL = {"train_size": 64, "val_size": 16, "test_size": 16}


@pytest.fixture(scope="module")
def digits():
    return create_dataset("moving_digits", "train", SMALL)


def test_item_contract(digits) -> None:
    item = digits[3]
    assert set(item) == {"video", "text", "label", "labels", "index"}
    assert item["video"].dtype == torch.float32 and tuple(item["video"].shape) == (16, 1, 32, 32)
    assert 0 <= item["video"].min() and item["video"].max() <= 1 and item["video"].max() > 0.9
    assert item["label"].dtype == torch.long and item["label"].ndim == 0 and item["index"] == 3
    assert (digits.num_frames, digits.channels, digits.image_size, digits.num_classes) == (16, 1, 32, 10)
    assert digits.class_names == [str(d) for d in range(10)] and len(digits) == 64
    batch = default_collate([digits[i] for i in range(8)])  # fixed label shapes, whatever the digit count
    assert tuple(batch["video"].shape) == (8, 16, 1, 32, 32) and len(batch["text"]) == 8
    assert tuple(batch["labels"]["digits"].shape) == (8, 2) and tuple(batch["labels"]["velocity"].shape) == (8, 2, 2)


def test_same_seed_and_index_give_the_same_clip_anywhere(digits) -> None:
    again = create_dataset("moving_digits", "train", SMALL)
    for index in (0, 7, 63):
        a, b = digits[index], again[index]
        assert torch.equal(a["video"], b["video"]) and a["text"] == b["text"]
        assert all(torch.equal(a["labels"][k], b["labels"][k]) for k in a["labels"])
    assert torch.equal(digits[-1]["video"], digits[63]["video"])


def test_different_index_split_or_seed_gives_a_different_clip(digits) -> None:
    videos = torch.stack([digits[i]["video"] for i in range(16)])
    assert all(not torch.equal(videos[i], videos[j]) for i in range(16) for j in range(i))
    other_seed = create_dataset("moving_digits", "train", {**SMALL, "seed": 1})
    val = create_dataset("moving_digits", "val", SMALL)
    assert not torch.equal(other_seed[0]["video"], digits[0]["video"])
    assert not torch.equal(val[0]["video"], digits[0]["video"])


def test_splits_draw_from_disjoint_digit_images() -> None:
    pools = {split: set(digit_sprites(split, 14)[2].tolist()) for split in ("train", "val", "test")}
    assert not (pools["train"] & pools["val"] or pools["train"] & pools["test"] or pools["val"] & pools["test"])
    assert sum(len(p) for p in pools.values()) == 1797  # every sklearn digit image is used once
    for split in ("val", "test"):  # every class appears in every split
        assert set(digit_sprites(split, 14)[1].tolist()) == set(range(10))
    for split, pool in pools.items():
        dataset = create_dataset("moving_digits", split, SMALL)
        used = {int(i) for k in range(16) for i in dataset[k]["labels"]["image_index"] if i >= 0}
        assert used <= pool


def test_sprite_is_the_sklearn_digit_upscaled() -> None:
    from sklearn.datasets import load_digits

    sprites, classes, index = digit_sprites("val", 16)
    original = load_digits().images[index[0]] / 16
    downscaled = sprites[0].reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert classes[0] == load_digits().target[index[0]]
    assert np.corrcoef(downscaled.ravel(), original.ravel())[0, 1] > 0.9


def parse_caption(text: str) -> list[tuple[str, list[str]]]:
    """'a 3 moving left, then up and an 8 moving down' -> [('3', ['left', 'up']), ('8', ['down'])]."""
    parts = []
    for phrase in text.split(" and "):
        match = re.fullmatch(r"an? (\d) moving (.+)", phrase)
        assert match, f"caption part {phrase!r} does not follow the grammar"
        parts.append((match.group(1), match.group(2).split(", then ")))
    return parts


def test_captions_match_labels(digits) -> None:
    for index in range(40):
        item = digits[index]
        labels, parsed = item["labels"], parse_caption(item["text"])
        count = int(labels["num_digits"])
        assert len(parsed) == count and item["label"] == labels["digits"][0]
        for n, (digit, directions) in enumerate(parsed):
            assert digit == str(int(labels["digits"][n]))
            assert directions[0] == DIRECTION_WORDS[int(labels["direction"][n])]
            velocity_signs = tuple(int(v) for v in np.sign(labels["velocity"][n].numpy()))
            assert COMPASS[int(labels["direction"][n])] == velocity_signs
            assert all(word in DIRECTION_WORDS for word in directions)
            assert len(directions) - 1 <= int(labels["bounces"][n])  # every change of direction is a bounce
            assert (int(labels["bounces"][n]) == 0) == (len(directions) == 1)
        assert (labels["digits"][count:] == -1).all() and (labels["bounces"][count:] == -1).all()


def ink_centre(frames: torch.Tensor) -> torch.Tensor:
    """Centre of mass (x, y) of each grey frame `[T, H, W]` -> `[T, 2]`."""
    grid = torch.arange(frames.shape[-1], dtype=torch.float32)
    mass = frames.sum(dim=(1, 2))
    return torch.stack([(frames.sum(dim=1) * grid).sum(1) / mass, (frames.sum(dim=2) * grid).sum(1) / mass], dim=1)


def test_the_drawn_digit_moves_as_its_labels_say() -> None:
    single = create_dataset("moving_digits", "val", SMALL, num_digits=[1], num_frames=6)
    checked = 0
    for index in range(16):
        item = single[index]
        if int(item["labels"]["bounces"][0]) > 0:
            continue
        centre = ink_centre(item["video"][:, 0])
        assert torch.allclose(centre[-1] - centre[0], item["labels"]["velocity"][0] * 5, atol=1.5)
        checked += 1
    assert checked >= 8


def test_sixty_four_pixel_canvas_scales_digits_and_speed() -> None:
    big = create_dataset("moving_digits", "test", SMALL, image_size=64, num_frames=8, num_digits=[2])
    item = big[0]
    assert tuple(item["video"].shape) == (8, 1, 64, 64) and big.digit_size == 28
    assert int(item["labels"]["num_digits"]) == 2 and " and " in item["text"]
    speed = item["labels"]["velocity"].norm(dim=1)
    assert ((speed >= 2.0) & (speed <= 4.0)).all()  # [1, 2] px/frame on 32 px, doubled


@pytest.mark.parametrize(
    "bad", [{"num_digits": [3]}, {"num_digits": []}, {"speed": [2.0, 1.0]}, {"digit_size": 40}, {"seed": -1}]
)
def test_bad_config_values_are_one_line_errors(bad) -> None:
    with pytest.raises(ConfigError):
        create_dataset("moving_digits", "train", bad)
