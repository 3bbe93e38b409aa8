"""I3D loads from both public formats (files written here with random weights) and preprocesses canonically."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.features import I3DFeatures, InceptionI3d, StateDictI3D, TorchScriptI3D, load_i3d_state_dict

# pytorch-i3d's units as (name, in_channels, out_channels, kernel), written out independently of our module.
_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def pytorch_i3d_units():
    units = [("Conv3d_1a_7x7", 3, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
    for name, (cin, (b0, b1a, b1b, b2a, b2b, b3b)) in _BLOCKS.items():
        units += [(f"{name}.b0", cin, b0, 1), (f"{name}.b1a", cin, b1a, 1), (f"{name}.b1b", b1a, b1b, 3),
                  (f"{name}.b2a", cin, b2a, 1), (f"{name}.b2b", b2a, b2b, 3), (f"{name}.b3b", cin, b3b, 1)]
    return units


def public_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the keys and shapes of `i3d_pretrained_400.pt`."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout, k in pytorch_i3d_units():
        state[f"{name}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=generator) * (cin * k**3) ** -0.5
        state[f"{name}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=generator)
        state[f"{name}.bn.bias"] = 0.1 * torch.randn(cout, generator=generator)
        state[f"{name}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=generator)
        state[f"{name}.bn.running_var"] = 1 + torch.rand(cout, generator=generator)
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=generator) * 1024**-0.5
    state["logits.conv3d.bias"] = torch.randn(400, generator=generator)
    return state


@pytest.fixture(scope="module")
def public_file(tmp_path_factory):
    """`i3d_pretrained_400.pt` as written by PyTorch >= 0.4 (with BatchNorm's num_batches_tracked)."""
    state = public_state_dict()
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(state, path)
    return path, state


def test_our_module_has_exactly_the_public_keys_and_shapes(public_file):
    ours = {key: tuple(value.shape) for key, value in InceptionI3d().state_dict().items()}
    public = {key: tuple(value.shape) for key, value in public_file[1].items()}
    assert ours == public
    assert len(public) == 344


def test_state_dict_file_loads_with_strict_keys(public_file):
    path, state = public_file
    model = load_i3d_state_dict(path)
    loaded = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert not model.training


def test_files_from_before_num_batches_tracked_load(public_file, tmp_path):
    _, state = public_file
    old = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pt")
    torch.testing.assert_close(load_i3d_state_dict(tmp_path / "old.pt").logits.conv3d.bias, old["logits.conv3d.bias"])


def test_state_dict_with_foreign_keys_is_refused(public_file, tmp_path):
    torch.save({**public_file[1], "fc.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an InceptionI3d state dict"):
        load_i3d_state_dict(tmp_path / "bad.pt")


class StyleGANVSignature(torch.nn.Module):
    """The interface of StyleGAN-V's i3d_torchscript.pt around our network (for a TorchScript file of the format)."""

    def __init__(self, network: InceptionI3d) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 127.5 - 1
        logits = self.network(x)
        return logits if return_features else torch.softmax(logits, dim=1)


class ProbeDetector(torch.nn.Module):
    """Reports what it was called with: [min, max, C, T, H, W, rescale, resize, return_features, 0...]."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        values = [float(x.min()), float(x.max()), float(x.shape[1]), float(x.shape[2]), float(x.shape[3]),
                  float(x.shape[4]), float(rescale), float(resize), float(return_features)]
        stats = torch.tensor(values)
        return torch.cat([stats, torch.zeros(391)]).expand(x.shape[0], 400)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated; the file format needs it
def test_torchscript_file_is_called_with_the_canonical_protocol(tmp_path):
    torch.jit.script(ProbeDetector()).save(str(tmp_path / "i3d_torchscript.pt"))
    extractor = I3DFeatures(TorchScriptI3D(tmp_path / "i3d_torchscript.pt"))
    videos = torch.rand(2, 16, 1, 32, 32)
    videos[0, 0, 0, 0, 0], videos[1, 0, 0, 0, 0] = 0.0, 1.0
    stats = extractor(videos)[0, :9].tolist()
    assert stats == pytest.approx([-1.0, 1.0, 3, 16, 224, 224, 0, 0, 1])
    assert extractor.num_features == 400


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_and_state_dict_formats_agree_on_the_real_architecture(public_file, tmp_path):
    network = load_i3d_state_dict(public_file[0])
    torch.jit.script(StyleGANVSignature(network)).save(str(tmp_path / "i3d_torchscript.pt"))
    videos = torch.rand(1, 10, 3, 64, 48)  # I3D needs >= 9 frames; fewer than 16 keeps this test quicker
    with torch.no_grad():
        from_script = I3DFeatures(TorchScriptI3D(tmp_path / "i3d_torchscript.pt"))(videos)
        from_state = I3DFeatures(StateDictI3D(network))(videos)
        pooled = I3DFeatures(StateDictI3D(network, output="pool"))(videos)
    assert from_script.shape == (1, 400) and pooled.shape == (1, 1024)
    torch.testing.assert_close(from_script, from_state, rtol=1e-4, atol=1e-4)


def test_preprocessing_matches_cd_fvd_on_uint8_videos():
    # cd-fvd's preprocess_i3d: uint8 frames -> bilinear 224x224 (align_corners=False) -> 2x/255 - 1, [B, C, T, H, W].
    videos = torch.randint(0, 256, (2, 16, 3, 40, 30), dtype=torch.uint8)
    frames = videos.flatten(0, 1).float()
    expected = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    expected = (2 * expected.view(2, 16, 3, 224, 224) / 255 - 1).transpose(1, 2)
    actual = I3DFeatures(StateDictI3D(InceptionI3d())).preprocess(videos.float() / 255)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_videogpt_value_range_is_available():
    videos = torch.tensor([0.0, 1.0]).view(1, 1, 1, 1, 2).expand(1, 2, 1, 2, 2)
    processed = I3DFeatures(StateDictI3D(InceptionI3d()), resolution=2, value_range=(-0.5, 0.5)).preprocess(videos)
    assert processed.min().item() == -0.5 and processed.max().item() == 0.5
