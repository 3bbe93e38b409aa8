"""Tiny real video files for the video IO and video_folder tests, written with PyAV by the tests themselves."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from zoo.data import write_video


def ramp_video(num_frames: int, height: int = 24, width: int = 32, channels: int = 3) -> torch.Tensor:
    """`[T, C, H, W]` flat frames whose grey level encodes the frame index: frame t has value (t + 1) * 8 / 255."""
    levels = (torch.arange(num_frames, dtype=torch.float32) + 1) * 8 / 255
    return levels.view(-1, 1, 1, 1).expand(num_frames, channels, height, width).clone()


def frame_levels(video: torch.Tensor) -> list[int]:
    """Recover the frame indices of a (possibly lossy, resized) ramp clip `[T, C, H, W]` in [0, 1]."""
    return [round(float(frame.mean()) * 255 / 8) - 1 for frame in video]


def write_faststart_mp4(path: Path, num_frames: int, size: int = 32) -> Path:
    """An mp4 with its index (moov) first: truncated, it still opens and claims all its frames."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(8))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(num_frames):  # noise: every frame costs bytes, so a cut loses frames
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def truncate(path: Path, fraction: float) -> Path:
    """Cut a file to `fraction` of its bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


GOOD_CLIPS = {
    "ApplyEyeMakeup/v_001.mp4": 24,
    "ApplyEyeMakeup/v_002.avi": 20,
    "ApplyEyeMakeup/v_003.gif": 20,
    "playing_guitar/v_004.webm": 20,
    "playing_guitar/v_005": 20,  # a folder of PNG frames
}
BAD_CLIPS = {
    "ApplyEyeMakeup/truncated.mp4": "corrupt",
    "ApplyEyeMakeup/empty.mp4": "zero bytes",
    "playing_guitar/short.mp4": "too short",
}


class VideoKit:
    """The helpers above, handed to tests as the `kit` fixture (test folders are not importable packages)."""

    ramp_video = staticmethod(ramp_video)
    frame_levels = staticmethod(frame_levels)
    write_faststart_mp4 = staticmethod(write_faststart_mp4)
    truncate = staticmethod(truncate)


@pytest.fixture(scope="session")
def kit() -> type[VideoKit]:
    return VideoKit


@pytest.fixture(scope="session")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`root/<class>/<clip>`: five good ramp clips in every format, plus a truncated, an empty and a short mp4."""
    root = tmp_path_factory.mktemp("videos")
    for relative, num_frames in GOOD_CLIPS.items():
        write_video(root / relative, ramp_video(num_frames))
    write_video(root / "ApplyEyeMakeup/truncated.mp4", ramp_video(24))
    truncate(root / "ApplyEyeMakeup/truncated.mp4", 0.5)
    (root / "ApplyEyeMakeup/empty.mp4").write_bytes(b"")
    write_video(root / "playing_guitar/short.mp4", ramp_video(4))
    (root / "playing_guitar/notes.txt").write_text("not a video")
    return root
