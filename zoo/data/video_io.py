"""Reading and writing video files with PyAV (torchvision has no video IO any more) and Pillow.

`read_video` returns uint8 `[T, H, W, C]` (RGB) as decoders give it; `write_video` takes the zoo's `[T, C, H, W]`
float in [0, 1] (or uint8). Everything a broken file can do is one `VideoReadError`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from torch import Tensor

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# (codec, pixel format) per container; h264 and vp9 need yuv420p, hence even frame sizes.
_ENCODERS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


class VideoReadError(ValueError):
    """A video that cannot be read: missing, zero-length, corrupt or without video frames."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason.splitlines()[0] if reason else "unreadable"
        super().__init__(f"cannot read video {self.path}: {self.reason}")


def _natural_key(path: Path) -> list[int | str]:
    # frame_2.png sorts before frame_10.png
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frames folder, in natural name order (frame_2 before frame_10)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=_natural_key)


def _describe(exc: Exception) -> str:
    # FFmpeg errors repeat the file name in str(exc); their strerror is the useful part.
    return f"corrupt or unsupported file ({getattr(exc, 'strerror', None) or exc})"


def _read_frames_folder(folder: Path, max_frames: int | None) -> np.ndarray:
    files = frame_files(folder)[:max_frames]
    if not files:
        raise VideoReadError(folder, f"folder has no frames ({', '.join(FRAME_SUFFIXES)})")
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as exc:
            raise VideoReadError(folder, f"frame {file.name} is unreadable: {exc}") from exc
    if len({frame.shape for frame in frames}) > 1:
        raise VideoReadError(folder, "frames have different sizes")
    return np.stack(frames)


def _read_container(path: Path, max_frames: int | None) -> np.ndarray:
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (zero bytes)")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(path, "file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        # A file truncated mid-stream fails part way: its frames are not to be trusted either.
        raise VideoReadError(path, _describe(exc)) from exc
    if not frames:
        raise VideoReadError(path, "no decodable video frames")
    return np.stack(frames)


def read_video(path: str | Path, max_frames: int | None = None) -> Tensor:
    """Decode a video file (mp4/avi/webm/mkv/gif) or a folder of png/jpg frames to uint8 `[T, H, W, 3]` RGB.

    Decoding stops after `max_frames` frames when given. Raises `VideoReadError` for anything unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise VideoReadError(path, "no such file or folder")
    array = _read_frames_folder(path, max_frames) if path.is_dir() else _read_container(path, max_frames)
    return torch.from_numpy(np.ascontiguousarray(array))


def count_frames(path: str | Path) -> int:
    """Number of frames in a video or frames folder, from container metadata where it has it (cheap).

    Falls back to decoding when the container does not record a count (webm, some gifs).
    Raises `VideoReadError` for files that cannot be opened.
    """
    path = Path(path)
    if path.is_dir():
        return len(frame_files(path))
    if not path.is_file():
        raise VideoReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (zero bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(path, "file has no video stream")
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            count = sum(1 for _ in container.demux(stream) if _.size > 0)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoReadError(path, _describe(exc)) from exc
    if count == 0:
        raise VideoReadError(path, "no video frames")
    return count


def _to_uint8_frames(video: Tensor) -> np.ndarray:
    """`[T, C, H, W]` float in [0, 1] or uint8, C in {1, 3} -> uint8 `[T, H, W, 3]`."""
    if video.ndim != 4 or video.shape[1] not in (1, 3):
        raise ValueError(f"video must be [T, C, H, W] with C = 1 or 3, got shape {list(video.shape)}")
    if video.dtype != torch.uint8:
        video = (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    if video.shape[1] == 1:
        video = video.expand(-1, 3, -1, -1)  # files are RGB; grey is replicated
    return np.ascontiguousarray(video.permute(0, 2, 3, 1).cpu().numpy())


def _pad_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _write_container(path: Path, frames: np.ndarray, fps: int) -> None:
    codec, pix_fmt = _ENCODERS[path.suffix.lower()]
    frames = _pad_even(frames)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "17"}  # near-lossless: samples are judged from these files
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "20", "b:v": "0"}
        else:
            stream.bit_rate = 8_000_000
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def _write_gif(path: Path, frames: np.ndarray, fps: int) -> None:
    # Pillow's GIF writer merges identical frames (a still video would read back shorter), so Pillow only picks
    # each frame's palette and PyAV writes every frame.
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("gif", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "pal8"
        for array in frames:
            indexed = Image.fromarray(array).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            rgb = np.asarray(indexed.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
            argb = np.zeros((256, 4), np.uint8)  # PyAV wants a full 256-entry ARGB palette
            argb[:, 0] = 255
            argb[: len(rgb), 1:] = rgb
            frame = av.VideoFrame.from_ndarray((np.asarray(indexed), argb), format="pal8")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_video(path: str | Path, video: Tensor, fps: int = 8) -> Path:
    """Write `[T, C, H, W]` (float in [0, 1] or uint8; C = 1 or 3) to .mp4/.mkv/.mov (h264), .avi, .webm, .gif,

    or, for a path without a suffix, a folder of numbered PNG frames. Grey videos are stored as RGB; h264/vp9
    files get odd sizes padded to even. Returns the path written.
    """
    path = Path(path)
    frames = _to_uint8_frames(video)
    suffix = path.suffix.lower()
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if suffix and suffix != ".gif" and suffix not in _ENCODERS:
        raise ValueError(f"cannot write '{suffix}' videos; use .mp4, .webm, .avi, .mkv, .mov, .gif or a folder")
    if not suffix:
        path.mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(frames):
            Image.fromarray(array).save(path / f"frame_{i:05d}.png")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        _write_gif(path, frames, fps)
    else:
        _write_container(path, frames, fps)
    return path


def tile_videos(videos: Tensor, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """`[B, T, C, H, W]` -> one `[T, C, H, B*W + (B-1)*padding]` video, the B videos side by side."""
    if videos.ndim != 5:
        raise ValueError(f"videos must be [B, T, C, H, W], got shape {list(videos.shape)}")
    videos = videos.detach().float().cpu()
    if padding > 0 and videos.shape[0] > 1:
        gap = torch.full((*videos.shape[1:4], padding), pad_value)
        pieces = [piece for video in videos for piece in (video, gap)][:-1]
    else:
        pieces = list(videos)
    return torch.cat(pieces, dim=-1)


def save_video_grid(path: str | Path, videos: Tensor, fps: int = 8) -> Path:
    """Tile `[B, T, C, H, W]` videos (float in [0, 1]) side by side into one .gif/.mp4 (a sample strip)."""
    return write_video(path, tile_videos(videos), fps=fps)
