from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.data import VideoReadError, read_video, save_video_grid, write_video
from zoo.data.video_io import count_frames, tile_videos


def smooth_video(num_frames: int = 6, height: int = 16, width: int = 24) -> torch.Tensor:
    """Gradients (codec-friendly) in each channel, `[T, 3, H, W]` in [0, 1]."""
    video = torch.empty(num_frames, 3, height, width)
    video[:, 0] = torch.linspace(0, 1, width).view(1, 1, width)
    video[:, 1] = torch.linspace(0, 1, height).view(1, height, 1)
    video[:, 2] = torch.linspace(0.2, 0.8, num_frames).view(num_frames, 1, 1)
    return video


def as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize(
    ("suffix", "tolerance"), [(".mp4", 0.03), (".webm", 0.03), (".avi", 0.03), (".gif", 0.015), ("", 0.003)]
)
def test_roundtrip_keeps_frames_and_pixels(tmp_path: Path, suffix: str, tolerance: float) -> None:
    video = smooth_video()
    path = write_video(tmp_path / f"clip{suffix}", video, fps=8)
    frames = read_video(path)
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (6, 16, 24, 3)
    assert count_frames(path) == 6
    assert (as_float(frames) - video).abs().mean() < tolerance


def test_uint8_input_is_written_as_is(tmp_path: Path) -> None:
    video = (smooth_video() * 255).round().to(torch.uint8)
    frames = read_video(write_video(tmp_path / "frames", video))
    assert torch.equal(frames.permute(0, 3, 1, 2), video)


def test_grey_is_replicated_to_rgb(tmp_path: Path) -> None:
    grey = smooth_video()[:, :1]
    frames = as_float(read_video(write_video(tmp_path / "grey.mp4", grey)))
    assert frames.shape[1] == 3
    for channel in range(3):
        assert (frames[:, channel : channel + 1] - grey).abs().mean() < 0.03


def test_odd_sizes_are_padded_to_even_for_h264(tmp_path: Path, kit) -> None:
    video = kit.ramp_video(4, height=15, width=21)
    frames = read_video(write_video(tmp_path / "odd.mp4", video))
    assert tuple(frames.shape) == (4, 16, 22, 3)
    assert kit.frame_levels(as_float(frames)[:, :, :15, :21]) == [0, 1, 2, 3]


def test_max_frames_stops_decoding(tmp_path: Path, kit) -> None:
    path = write_video(tmp_path / "ramp.mp4", kit.ramp_video(12))
    frames = read_video(path, max_frames=5)
    assert kit.frame_levels(as_float(frames)) == [0, 1, 2, 3, 4]


def test_frames_folder_is_read_in_natural_order(tmp_path: Path, kit) -> None:
    write_video(tmp_path / "frames", kit.ramp_video(12))
    for path in (tmp_path / "frames").iterdir():  # frame_00010.png -> frame_10.png: 10 must follow 9, not 1
        path.rename(path.with_name(f"frame_{int(path.stem.split('_')[1])}.png"))
    assert kit.frame_levels(as_float(read_video(tmp_path / "frames"))) == list(range(12))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("zero-length", "zero bytes"), ("garbage", "corrupt"), ("truncated", "corrupt"), ("missing", "no such file")],
)
def test_unreadable_files_raise_one_line_video_read_error(tmp_path: Path, kit, kind: str, reason: str) -> None:
    path = tmp_path / "bad.mp4"
    if kind == "zero-length":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"not a video at all" * 20)
    elif kind == "truncated":
        kit.truncate(write_video(path, kit.ramp_video(12)), 0.5)
    with pytest.raises(VideoReadError, match=reason) as info:
        read_video(path)
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(path) and "\n" not in str(info.value)


def test_truncated_faststart_mp4_decodes_only_what_is_left(tmp_path: Path, kit) -> None:
    path = kit.truncate(kit.write_faststart_mp4(tmp_path / "cut.mp4", 20), 0.5)
    assert count_frames(path) == 20  # the index survives the cut ...
    assert 0 < len(read_video(path)) < 20  # ... the frames do not


def test_unknown_suffix_and_bad_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot write '.xyz'"):
        write_video(tmp_path / "clip.xyz", smooth_video())
    with pytest.raises(ValueError, match=r"\[T, C, H, W\]"):
        write_video(tmp_path / "clip.mp4", torch.rand(4, 16, 16))


def test_grid_tiles_videos_side_by_side(tmp_path: Path, kit) -> None:
    videos = torch.stack([kit.ramp_video(5, 8, 10) * 0 + value for value in (0.2, 0.6, 1.0)])
    tiled = tile_videos(videos, padding=2)
    assert tuple(tiled.shape) == (5, 3, 8, 3 * 10 + 2 * 2)
    assert torch.allclose(tiled[..., 12:22], torch.full((5, 3, 8, 10), 0.6))
    assert torch.all(tiled[..., 10:12] == 1.0)  # white gaps
    frames = read_video(save_video_grid(tmp_path / "strip.gif", videos, fps=4))
    assert tuple(frames.shape) == (5, 8, 34, 3)
