"""clean-fid's Inception loads from a TorchScript file of the public format; the clean resize is clean-fid's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.features import CleanInceptionFeatures, TorchmetricsInceptionFeatures, load_clean_inception


class Layers(torch.nn.Module):
    """Stands in for the network body of NVIDIA's inception-2015-12-05.pt: normalised images -> [N, 2048, 1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 1)  # [N, 3, 1, 1]
        return pooled.repeat(1, 683, 1, 1)[:, :2048]


class PublicInceptionFormat(torch.nn.Module):
    """The interface clean-fid's InceptionV3W uses: a `layers` submodule and forward(img, return_features)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = Layers()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((img - 128) / 128).flatten(1)


@pytest.fixture
def inception_file(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(PublicInceptionFormat()).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated; the public file needs it
def test_clean_fid_inception_loads_and_normalises_like_clean_fid(inception_file):
    network = load_clean_inception(inception_file)
    images = torch.full((2, 3, 299, 299), 192.0)
    features = network(images)
    assert features.shape == (2, 2048) and network.num_features == 2048
    torch.testing.assert_close(features, torch.full((2, 2048), 0.5))  # (192 - 128) / 128


def test_clean_fid_needs_its_file_name(tmp_path):
    with pytest.raises(ValueError, match="inception-2015-12-05.pt"):
        load_clean_inception(tmp_path / "inception.pt")


def test_clean_resize_equals_clean_fid_reading_the_same_png(tmp_path):
    from cleanfid.utils import ResizeDataset

    frame = torch.randint(0, 256, (3, 37, 23), dtype=torch.uint8)
    Image.fromarray(frame.permute(1, 2, 0).numpy()).save(tmp_path / "frame.png")
    expected = ResizeDataset([str(tmp_path / "frame.png")], mode="clean")[0]
    actual = CleanInceptionFeatures(torch.nn.Identity(), num_features=1).resize(frame[None].float() / 255)[0]
    assert actual.shape == (3, 299, 299)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-3)


def test_grey_frames_are_resized_as_rgb():
    grey = torch.rand(1, 1, 16, 16)
    resized = CleanInceptionFeatures(torch.nn.Identity(), num_features=1).resize(grey)
    assert resized.shape == (1, 3, 299, 299)
    assert torch.equal(resized[:, 0], resized[:, 2])
    assert np.isclose(resized.mean().item(), grey.mean().item() * 255, rtol=0.02)


def test_torchmetrics_variant_says_how_to_get_torch_fidelity(tmp_path):
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if _TORCH_FIDELITY_AVAILABLE:
        pytest.skip("torch-fidelity is installed, so there is no missing-package message to check")
    with pytest.raises(ModuleNotFoundError, match="pip install torch-fidelity"):
        TorchmetricsInceptionFeatures(tmp_path / "weights.pth")
