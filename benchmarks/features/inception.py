"""Inception-v3 frame features for FID.

- `CleanInceptionFeatures`: clean-fid's "clean" mode: each frame, as float32 in [0, 255], resized to 299x299 by
  clean-fid's own resizer (PIL bicubic per channel, no quantisation), then the backbone. With clean-fid's
  `InceptionV3W` on NVIDIA's `inception-2015-12-05.pt` this is clean-fid's FID network; any backbone taking
  `[N, 3, 299, 299]` in [0, 255] fits, which is how tests compare with clean-fid's `compute_fid`.
- `TorchmetricsInceptionFeatures` (variant): torchmetrics' FID backbone (torch-fidelity's Inception port,
  bilinear antialiased resize inside), fed uint8 frames as torchmetrics' FID is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from cleanfid.resize import build_resizer
from torch import Tensor, nn

CLEAN_FID_FILENAME = "inception-2015-12-05.pt"


def load_clean_inception(path: str | Path) -> nn.Module:
    """clean-fid's `InceptionV3W` on the TorchScript file at `path` (which clean-fid requires to be named
    `inception-2015-12-05.pt`): `[N, 3, 299, 299]` in [0, 255] -> `[N, 2048]`.
    """
    from cleanfid.inception_torchscript import InceptionV3W

    path = Path(path)
    if path.name != CLEAN_FID_FILENAME:
        raise ValueError(f"clean-fid loads its Inception only from a file named {CLEAN_FID_FILENAME}, got {path.name}")
    network = InceptionV3W(str(path.parent), download=False, resize_inside=False).eval()
    network.num_features = 2048
    return network


class CleanInceptionFeatures(nn.Module):
    """Frames `[N, C, H, W]` in [0, 1] -> backbone features after clean-fid's "clean" resize to 299x299."""

    def __init__(self, backbone: nn.Module, num_features: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.num_features = int(num_features if num_features is not None else backbone.num_features)
        self._resize = build_resizer("clean")

    def resize(self, frames: Tensor) -> Tensor:
        """`[N, C, H, W]` in [0, 1] -> `[N, 3, 299, 299]` float32 in [0, 255], exactly as clean-fid prepares files."""
        images = (frames.detach().float().cpu() * 255.0).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
        resized = np.stack([self._resize(np.ascontiguousarray(image)) for image in images])
        return torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous().to(frames.device)

    def forward(self, frames: Tensor) -> Tensor:
        return self.backbone(self.resize(frames))


class TorchmetricsInceptionFeatures(nn.Module):
    """Frames `[N, C, H, W]` in [0, 1] -> torchmetrics' FID Inception features (2048-d); needs torch-fidelity."""

    num_features = 2048

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.backbone = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path)
            )
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "the 'inception_torchmetrics' extractor needs torch-fidelity: pip install torch-fidelity"
            ) from exc

    def forward(self, frames: Tensor) -> Tensor:
        # torchmetrics' FID quantises [0, 1] input to uint8 the same way before its network.
        return self.backbone((frames.expand(-1, 3, -1, -1) * 255).byte())
