"""Weight-free optical flow (OpenCV DIS and Farneback), backward warping and the forward-backward occlusion test.

Flow convention: `flow = estimate(a, b)` maps a pixel x of frame a to x + flow[x] in frame b, so
`warp(b, flow) ≈ a` wherever x is visible in both frames.
"""

from __future__ import annotations

import cv2
import numpy as np
from torch import Tensor

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def video_to_numpy(video: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A `[T, C, H, W]` float video in [0, 1] as (`[T, H, W, C]` float32 frames, `[T, H, W]` uint8 grey frames)."""
    frames = np.ascontiguousarray(video.detach().cpu().permute(0, 2, 3, 1).numpy(), dtype=np.float32)
    as_uint8 = np.rint(frames * 255.0).astype(np.uint8)
    if frames.shape[-1] == 3:
        grey = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in as_uint8])
    else:
        grey = as_uint8[..., 0]
    return frames, np.ascontiguousarray(grey)


class DISFlow:
    """OpenCV's Dense Inverse Search flow (Kroeger et al. 2016) on uint8 grey frames; `preset` trades speed."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset '{preset}'; choose one of {sorted(DIS_PRESETS)}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Flow `[H, W, 2]` (x, y) from `first` to `second`."""
        return self._dis.calc(first, second, None)


def farneback_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Farneback flow `[H, W, 2]` with TecoGAN's tOF parameters (0.5, 3, 15, 3, 5, 1.2, 0)."""
    return cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _sample_coordinates(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward-warp `image` (`[H, W]` or `[H, W, C]` float32) by `flow`: out[x] = image[x + flow[x]] (bilinear).

    Returns the warped image and a boolean mask of the pixels whose source lies inside the image.
    """
    map_x, map_y = _sample_coordinates(flow)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if warped.ndim < image.ndim:
        warped = warped[..., None]
    height, width = flow.shape[:2]
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, inside


def consistent_flow_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels passing Ruder et al.'s (2016) forward-backward test (True = not occluded).

    With w the forward flow and ŵ(x) = backward(x + w(x)), x is occluded when
    |w + ŵ|² > 0.01 (|w|² + |ŵ|²) + 0.5.
    """
    backward_at_target, inside = warp(backward, forward)
    round_trip = np.sum((forward + backward_at_target) ** 2, axis=-1)
    magnitudes = np.sum(forward**2, axis=-1) + np.sum(backward_at_target**2, axis=-1)
    return (round_trip <= 0.01 * magnitudes + 0.5) & inside
