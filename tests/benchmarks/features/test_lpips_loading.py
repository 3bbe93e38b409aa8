"""LPIPS loads its packaged heads (checksum-verified) and an AlexNet trunk file in torchvision's format."""

from __future__ import annotations

import pytest
import torch

from benchmarks.features import load_lpips_alex
from benchmarks.features.perceptual import alexnet_trunk_state, lpips_heads_file
from benchmarks.features.weight_cache import sha256_of

# torchvision AlexNet's convolutional layers: features.<index> -> weight shape (the classifier is ignored).
ALEXNET_CONVS = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}


@pytest.fixture
def alexnet_file(tmp_path):
    """A file in torchvision's AlexNet format: random conv weights, plus a (shrunk) classifier entry to ignore."""
    generator = torch.Generator().manual_seed(3)
    state = {}
    for index, shape in ALEXNET_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(shape, generator=generator) * 0.05
        state[f"features.{index}.bias"] = torch.randn(shape[0], generator=generator) * 0.05
    state["classifier.1.weight"] = torch.zeros(4, 4)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    return path


def test_trunk_keys_map_into_lpips_slices():
    trunk = alexnet_trunk_state({"features.0.weight": torch.zeros(1), "features.10.bias": torch.ones(1),
                                 "classifier.1.weight": torch.zeros(1)})
    assert set(trunk) == {"net.slice1.0.weight", "net.slice5.10.bias"}


def test_lpips_uses_the_trunk_from_the_file_and_the_packaged_heads(alexnet_file):
    model = load_lpips_alex(alexnet_file)
    saved = torch.load(alexnet_file, weights_only=True)
    torch.testing.assert_close(getattr(model.net.slice2, "3").weight, saved["features.3.weight"], rtol=0, atol=0)
    assert sha256_of(lpips_heads_file().bundled) == lpips_heads_file().sha256
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    distances = model(images, images.flip(0)).flatten()
    assert model(images, images).abs().max().item() < 1e-6
    assert (distances > 0).all()


def test_a_file_of_another_network_is_refused(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not a torchvision AlexNet"):
        load_lpips_alex(tmp_path / "partial.pth")
