"""I3D (Carreira & Zisserman 2017, Kinetics-400) for FVD, from either public weight format.

- `i3d_torchscript.pt` (StyleGAN-V's TorchScript port of the tf.hub model that the original FVD code uses), called
  as `model(x, rescale=False, resize=False, return_features=True)` -> 400-d logits before the softmax.
- `i3d_pretrained_400.pt`: a state dict of `InceptionI3d` as in piergiaj/pytorch-i3d, used by VideoGPT, TATS and
  cd-fvd. `InceptionI3d` below has the same module names, so such a file loads with strict key matching. As in
  those projects, BatchNorm uses eps=1e-5 and the logits are averaged over the remaining time steps.

Canonical FVD protocol (`I3DFeatures`): 16-frame clips, each frame resized bilinearly to 224x224 (squash, no crop,
`align_corners=False`), grey repeated to RGB, values scaled to [-1, 1], layout `[B, C, T, H, W]`; features are the
400-d logits (or, as a variant, the 1024-d average-pooled features of the state-dict model).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (in_channels, [b0, b1a, b1b, b2a, b2b, b3b] out channels) of the nine Inception blocks, in order.
_INCEPTION_BLOCKS: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


def _pad_same(x: Tensor, kernel: list[int], stride: list[int]) -> Tensor:
    # TensorFlow "SAME" padding, split front/back as TF does (the extra pixel goes at the back).
    pads: list[int] = []
    for dim in (2, 1, 0):  # F.pad wants the last dimension first: W, H, T
        size = x.shape[2 + dim]
        if size % stride[dim] == 0:
            total = max(kernel[dim] - stride[dim], 0)
        else:
            total = max(kernel[dim] - size % stride[dim], 0)
        pads.extend([total // 2, total - total // 2])
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, optional BatchNorm and ReLU (`conv3d`, `bn` as in pytorch-i3d)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        activation: bool = True,
        bias: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = list(kernel), list(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.01) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """3D max pooling with TF "SAME" zero padding (inputs are post-ReLU, so zero padding equals -inf padding)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = list(kernel), list(stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four-branch Inception block: 1x1 | 1x1→3x3 | 1x1→3x3 | maxpool→1x1, concatenated on channels."""

    def __init__(self, in_channels: int, out: tuple[int, ...], bn_eps: float) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0], bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, out[1], bn_eps=bn_eps)
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, out[3], bn_eps=bn_eps)
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5], bn_eps=bn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D with pytorch-i3d's module names, so `i3d_pretrained_400.pt` loads with strict keys.

    Input `[B, 3, T, H, W]` in [-1, 1]; `forward` gives time-averaged logits `[B, num_classes]`,
    `pool_features` the 1024-d average-pooled features. Needs T >= 9 and H, W >= 193 (224 in the protocol).
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = (InceptionBlock(c, out, bn_eps) for _, c, out in _INCEPTION_BLOCKS[0:2])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f = (
            InceptionBlock(c, out, bn_eps) for _, c, out in _INCEPTION_BLOCKS[2:7]
        )
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = (InceptionBlock(c, out, bn_eps) for _, c, out in _INCEPTION_BLOCKS[7:9])
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(1024, num_classes, batch_norm=False, activation=False, bias=True)

    def mixed_5c(self, x: Tensor) -> Tensor:
        """The last convolutional feature map, `[B, 1024, T/8, H/32, W/32]`."""
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        return self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))

    def pool_features(self, x: Tensor) -> Tensor:
        """1024-d average-pooled features, averaged over the remaining time steps: `[B, 1024]`."""
        return self.avg_pool(self.mixed_5c(x)).mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.logits(self.dropout(self.avg_pool(self.mixed_5c(x))))
        return logits.mean(dim=(2, 3, 4))


def load_i3d_state_dict(path: str | Path, num_classes: int = 400) -> InceptionI3d:
    """`InceptionI3d` with the weights of a pytorch-i3d-format state dict (e.g. `i3d_pretrained_400.pt`), strict keys.

    Files written before PyTorch 0.4 lack BatchNorm's `num_batches_tracked` buffers; those (unused at inference)
    are the only keys allowed to be missing.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict (got {type(state).__name__}); expected i3d_pretrained_400.pt")
    model = InceptionI3d(num_classes=num_classes)
    expected = model.state_dict()
    state = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not an InceptionI3d state dict: {str(exc).splitlines()[0]}") from exc
    return model.eval()


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's `i3d_torchscript.pt`, called on preprocessed clips: 400-d logits before the softmax."""

    num_features = 400

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        with warnings.catch_warnings():  # TorchScript is deprecated in recent PyTorch, but it is this file's format
            warnings.simplefilter("ignore", FutureWarning)
            self.detector = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.detector(x, rescale=False, resize=False, return_features=True)


class StateDictI3D(nn.Module):
    """`InceptionI3d` as a feature network: `output="logits"` (400-d) or `"pool"` (1024-d)."""

    def __init__(self, model: InceptionI3d, output: str = "logits") -> None:
        super().__init__()
        if output not in ("logits", "pool"):
            raise ValueError(f"output must be 'logits' or 'pool', got '{output}'")
        self.model, self.output = model.eval(), output
        self.num_features = model.num_features if output == "logits" else 1024

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) if self.output == "logits" else self.model.pool_features(x)


class I3DFeatures(nn.Module):
    """Videos `[B, T, C, H, W]` in [0, 1] -> I3D features `[B, d]` under the canonical FVD preprocessing.

    `value_range=(-0.5, 0.5)` reproduces VideoGPT/TATS, whose preprocessing subtracts 0.5 without scaling.
    """

    def __init__(
        self, network: nn.Module, resolution: int = 224, value_range: tuple[float, float] = (-1.0, 1.0)
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.num_features = int(network.num_features)
        self.resolution, self.value_range = resolution, value_range

    def preprocess(self, videos: Tensor) -> Tensor:
        """`[B, T, C, H, W]` in [0, 1] -> `[B, 3, T, R, R]` in `value_range`."""
        batch, frames, channels = videos.shape[:3]
        frames_2d = videos.reshape(batch * frames, channels, *videos.shape[3:])
        size = (self.resolution, self.resolution)
        resized = F.interpolate(frames_2d, size=size, mode="bilinear", align_corners=False)
        resized = resized.expand(-1, 3, -1, -1).reshape(batch, frames, 3, self.resolution, self.resolution)
        low, high = self.value_range
        return (resized * (high - low) + low).transpose(1, 2).contiguous()

    def forward(self, videos: Tensor) -> Tensor:
        return self.network(self.preprocess(videos))
