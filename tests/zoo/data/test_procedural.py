from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.config import ConfigError
from zoo.data import create_dataset
from zoo.data.procedural import (
    CLEAR_STEPS,
    COMPASS,
    bounce,
    clear_start,
    compass_velocity,
    direction_word,
    path_phrase,
    with_article,
)


def reference_bounce(position, velocity, extent, num_frames, acceleration):
    """Frame-by-frame reflection, the obvious way: the closed form must agree with it."""
    position, velocity = np.array(position, float), np.array(velocity, float)
    initial_speed = np.linalg.norm(velocity)
    positions, signs, bounces = [], [], 0
    for t in range(num_frames):
        positions.append(position.copy())
        signs.append(np.sign(velocity).astype(int))
        if t == num_frames - 1:
            break
        step_speed = min(initial_speed + acceleration * t, max(extent, initial_speed))
        position = position + velocity * step_speed / initial_speed
        for axis in range(2):
            if position[axis] < 0:
                position[axis], velocity[axis], bounces = -position[axis], -velocity[axis], bounces + 1
            elif position[axis] > extent:
                position[axis], velocity[axis], bounces = 2 * extent - position[axis], -velocity[axis], bounces + 1
    return np.array(positions), np.array(signs), bounces


@pytest.mark.parametrize("acceleration", [0.0, 0.3])
def test_closed_form_bounce_matches_frame_by_frame_reflection(acceleration: float) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        extent = rng.uniform(5, 30)
        start = rng.uniform(0.01, 0.99, size=2) * extent
        velocity = compass_velocity(int(rng.integers(8)), rng.uniform(0.5, 0.9 * extent))  # no double bounce per step
        path = bounce(start[None], velocity[None], np.array([extent]), 16, np.array([acceleration]))
        positions, signs, bounces = reference_bounce(start, velocity, extent, 16, acceleration)
        np.testing.assert_allclose(path.positions[:, 0], positions, atol=1e-9)
        np.testing.assert_array_equal(path.signs[:, 0], signs)
        assert path.bounces[0] == bounces
        assert (path.positions >= 0).all() and (path.positions <= extent + 1e-9).all()


def test_a_single_frame_has_no_motion_to_bounce() -> None:
    path = bounce(np.array([[3.0, 4.0]]), np.array([[-2.0, 0.0]]), np.array([10.0]), 1)
    assert path.positions.shape == (1, 1, 2) and path.bounces.tolist() == [0]
    assert path_phrase(path.signs[:, 0]) == "moving left"


def test_clear_start_keeps_the_first_steps_off_the_walls_where_there_is_room() -> None:
    rng = np.random.default_rng(0)
    unit = rng.uniform(0, 1, size=(1000, 2))
    lead = rng.uniform(-4, 4, size=(1000, 2))
    start = clear_start(unit, lead / CLEAR_STEPS, np.full(1000, 18.0))  # moves `lead` in CLEAR_STEPS
    assert (start + lead >= 0).all() and (start + lead <= 18).all() and (start >= 0).all() and (start <= 18).all()
    # Uniform over the allowed interval [max(-lead, 0), 18 - max(lead, 0)], in the order of the draws.
    low, high = np.maximum(-lead, 0), 18 - np.maximum(lead, 0)
    np.testing.assert_allclose(start, low + unit * (high - low))
    np.testing.assert_allclose(
        clear_start(np.array([[0.0, 1.0]]), np.array([[2.0, -3.0]]) / CLEAR_STEPS, np.array([10.0])), [[0, 10]]
    )
    # A box too small for the lead still gives a start inside it.
    cramped = clear_start(np.array([[0.5, 0.5]]), np.array([[12.0, -12.0]]) / CLEAR_STEPS, np.array([10.0]))
    assert ((cramped >= 0) & (cramped <= 10)).all()


@pytest.mark.parametrize("dataset", ["moving_digits", "bouncing_shapes"])
def test_the_labelled_direction_is_what_the_first_frames_show(dataset: str) -> None:
    """No object bounces before it has moved a whole pixel along each axis of its labelled direction, so a clip's
    caption and direction label never name a start the frames contradict."""
    clips = create_dataset(dataset, "test", {"test_size": 200}, num_frames=8)
    checked = 0
    for index in range(len(clips)):
        labels = clips[index]["labels"]
        directions = labels["direction"].reshape(-1).numpy()
        count = int((directions >= 0).sum())
        size = clips.digit_size if dataset == "moving_digits" else int(labels["size"][0])
        acceleration = float(labels.get("acceleration", 0.0))
        path = bounce(
            labels["position"].reshape(-1, 2)[:count].double().numpy(),
            labels["velocity"].reshape(-1, 2)[:count].double().numpy(),
            np.full(count, clips.image_size - size),
            CLEAR_STEPS + 1,
            np.full(count, acceleration),
        )
        pixels = np.rint(path.positions)
        for n in range(count):
            assert tuple(np.sign(pixels[CLEAR_STEPS, n] - pixels[0, n])) == COMPASS[directions[n]], (index, n)
            checked += 1
    assert checked >= 200


def test_path_phrase_names_each_direction_change_once() -> None:
    signs = np.array([[-1, 0], [-1, 0], [1, 0], [1, 0], [1, -1], [1, -1], [0, 1]])
    assert path_phrase(signs) == "moving left, then right, then up right, then down"


def test_words() -> None:
    assert [direction_word(*s) for s in [(1, 0), (-1, -1), (0, 1), (1, 1)]] == [
        "right",
        "up left",
        "down",
        "down right",
    ]
    assert (
        with_article("3") == "a 3"
        and with_article("8") == "an 8"
        and with_article("yellow square") == "a yellow square"
    )
    np.testing.assert_allclose(np.linalg.norm(compass_velocity(3, 2.5)), 2.5)


@pytest.mark.parametrize("dataset", ["moving_digits", "bouncing_shapes"])
def test_stills_are_first_frames_of_further_clips_and_leave_the_clip_as_it_was(dataset: str) -> None:
    plain = create_dataset(dataset, "train", overrides={"num_frames": 4})
    with_stills = create_dataset(dataset, "train", overrides={"num_frames": 4, "stills_per_clip": 3})
    item, again = with_stills[7], with_stills[7]
    assert torch.equal(item["video"], plain[7]["video"]) and item["text"] == plain[7]["text"]
    assert item["stills"].shape == (3, *plain[7]["video"].shape[1:])
    assert len(item["still_text"]) == 3 and all(isinstance(text, str) and text for text in item["still_text"])
    assert torch.equal(item["stills"], again["stills"]), "deterministic by (seed, split, index)"
    assert not torch.equal(item["stills"][0], item["video"][0]), "other clips, not this one"
    assert "stills" not in plain[7]
    with pytest.raises(ConfigError, match="stills_per_clip"):
        create_dataset(dataset, "train", overrides={"stills_per_clip": -1})
