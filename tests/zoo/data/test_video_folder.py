from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from zoo.config import ConfigError
from zoo.data import create_dataset, write_video
from zoo.data.video_folder import humanise, split_of

ALL_TRAIN = {"val_fraction": 0.0, "test_fraction": 0.0}


def folder(root: Path, **overrides):
    """The video_folder dataset on `root`, every clip in train unless overridden; warnings are collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = create_dataset(
            "video_folder", overrides.pop("split", "train"), {"root": str(root), **ALL_TRAIN}, **overrides
        )
    return dataset, [str(w.message) for w in caught]


def test_good_clips_load_and_bad_ones_are_skipped_by_name(video_root: Path) -> None:
    dataset, messages = folder(video_root, num_frames=8, image_size=16)
    assert sorted(p.relative_to(video_root).as_posix() for p, _ in dataset.clips) == [
        "ApplyEyeMakeup/v_001.mp4",
        "ApplyEyeMakeup/v_002.avi",
        "ApplyEyeMakeup/v_003.gif",
        "playing_guitar/v_004.webm",
        "playing_guitar/v_005",
    ]
    assert len(dataset) == 5 and dataset.class_names == ["ApplyEyeMakeup", "playing_guitar"]
    reasons = {Path(path).name: reason for path, reason in dataset.skipped.items()}
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "short.mp4"}
    assert "corrupt" in reasons["truncated.mp4"] and "zero bytes" in reasons["empty.mp4"]
    assert reasons["short.mp4"] == "too short: 4 frames, a clip needs 8"
    for name in reasons:  # one warning per skipped file, naming it
        assert sum(name in message for message in messages) == 1


def test_items_follow_the_clip_policy_and_carry_class_labels(video_root: Path, kit) -> None:
    dataset, _ = folder(video_root, num_frames=6, stride=3, image_size=16)
    items = [dataset[i] for i in range(len(dataset))]
    for item in items:
        assert tuple(item["video"].shape) == (6, 3, 16, 16) and item["video"].dtype == torch.float32
        assert kit.frame_levels(item["video"]) == [0, 3, 6, 9, 12, 15]  # first frame, then every third
        assert int(item["labels"]["start_frame"]) == 0
    by_class = {item["text"]: int(item["label"]) for item in items}
    assert by_class == {"apply eye makeup": 0, "playing guitar": 1}
    assert [int(item["labels"]["total_frames"]) for item in items] == [24, 20, 20, 20, 20]
    batch = default_collate(items)
    assert tuple(batch["video"].shape) == (5, 6, 3, 16, 16) and batch["label"].tolist() == [0, 0, 0, 1, 1]


def test_center_and_random_starts(video_root: Path, kit) -> None:
    centred, _ = folder(video_root, num_frames=4, start="center", image_size=8)
    first = centred[0]  # v_001.mp4: 24 frames, 4 taken -> start (24 - 4) // 2 = 10
    assert int(first["labels"]["start_frame"]) == 10 and kit.frame_levels(first["video"]) == [10, 11, 12, 13]
    val, _ = folder(video_root, num_frames=4, start="random", image_size=8, split="val", val_fraction=0.99)
    starts = [int(val[i]["labels"]["start_frame"]) for i in range(len(val))]
    assert starts == [int(val[i]["labels"]["start_frame"]) for i in range(len(val))]  # evaluation clips stay fixed
    assert all(kit.frame_levels(val[i]["video"])[0] == s for i, s in enumerate(starts))
    train, _ = folder(video_root, num_frames=4, start="random", image_size=8)
    torch.manual_seed(0)
    draws = {int(train[0]["labels"]["start_frame"]) for _ in range(12)}
    assert len(draws) > 1 and max(draws) <= 20  # training crops vary, within the clip


def test_resize_policies_and_grey(tmp_path: Path) -> None:
    frame = torch.zeros(3, 40, 80)
    frame[0, :, :20], frame[1, :, 20:60], frame[2, :, 60:] = 1, 1, 1  # red | green | blue, the middle half green
    write_video(tmp_path / "stripes" / "wide.mp4", frame.expand(4, 3, 40, 80))
    cropped = folder(tmp_path, num_frames=4, image_size=32)[0][0]["video"]
    assert cropped.shape[-2:] == (32, 32)
    assert (cropped[:, 1, :, 3:-3] > 0.8).all() and (cropped[:, [0, 2], :, 3:-3] < 0.2).all()  # only the green middle
    stretched = folder(tmp_path, num_frames=4, image_size=32, resize="stretch")[0][0]["video"]
    assert stretched[:, 0, :, :4].mean() > 0.8 and stretched[:, 2, :, -4:].mean() > 0.8  # all three stripes kept
    grey = folder(tmp_path, num_frames=4, image_size=32, channels=1)[0][0]
    assert tuple(grey["video"].shape) == (4, 1, 32, 32)
    assert torch.allclose(grey["video"][:, 0, :, 12:20].mean(), torch.tensor(0.587), atol=0.05)  # luma of green
    assert grey["text"] == "stripes"


def test_clip_broken_mid_file_is_skipped_when_read_not_raised(tmp_path: Path, kit) -> None:
    write_video(tmp_path / "a" / "good.mp4", kit.ramp_video(10))
    kit.truncate(kit.write_faststart_mp4(tmp_path / "a" / "cut.mp4", 30), 0.15)  # opens fine, frames missing
    dataset, messages = folder(tmp_path, num_frames=8, image_size=8)
    assert len(dataset) == 2 and not dataset.skipped  # the cut file's index claims 30 frames
    cut = [i for i, (path, _) in enumerate(dataset.clips) if path.name == "cut.mp4"][0]
    with pytest.warns(UserWarning, match=r"skipping .*cut.mp4: (too short|corrupt)"):
        item = dataset[cut]
    assert kit.frame_levels(item["video"]) == list(range(8))  # the next good clip instead
    assert list(dataset.skipped) == [str(tmp_path / "a" / "cut.mp4")]


def test_splits_are_a_fixed_hash_of_the_path(tmp_path: Path) -> None:
    names = [f"class_{c}/clip_{i}.gif" for c in range(2) for i in range(20)]
    splits = {name: split_of(name, 0.2, 0.2) for name in names}
    assert splits == {name: split_of(name, 0.2, 0.2) for name in names}
    assert set(splits.values()) == {"train", "val", "test"}
    for name in names:
        write_video(tmp_path / name, torch.rand(2, 3, 8, 8))
    parts = {
        split: {
            p.relative_to(tmp_path).as_posix()
            for p, _ in folder(tmp_path, split=split, num_frames=2, image_size=8, val_fraction=0.2, test_fraction=0.2)[
                0
            ].clips
        }
        for split in ("train", "val", "test")
    }
    assert sum(len(p) for p in parts.values()) == 40 and set().union(*parts.values()) == set(names)
    assert all(parts[split] == {n for n, s in splits.items() if s == split} for split in parts)


def test_missing_root_and_empty_folder_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required value"):
        create_dataset("video_folder")
    with pytest.raises(ConfigError, match="is not a folder"):
        create_dataset("video_folder", root=str(tmp_path / "nowhere"))
    (tmp_path / "class_a").mkdir()
    (tmp_path / "class_a" / "readme.txt").write_text("no videos here")
    with pytest.raises(ConfigError, match=r"no videos found in .* \(looked for \.mp4, \.avi") as info:
        create_dataset("video_folder", root=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="start must be one of"):
        create_dataset("video_folder", root=str(tmp_path), start="middle")


def test_humanise() -> None:
    assert humanise("ApplyEyeMakeup") == "apply eye makeup"
    assert humanise("playing_guitar") == "playing guitar"
    assert humanise("YoYo-tricks") == "yo yo tricks"
