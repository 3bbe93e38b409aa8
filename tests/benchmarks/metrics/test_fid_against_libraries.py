"""FID equals clean-fid's own `compute_fid` and torchmetrics' FID given the same extractor and frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.features import CleanInceptionFeatures
from benchmarks.metrics import FrechetInceptionDistance, KernelInceptionDistance


def uint8_videos(helpers, seed: int, shift: float):
    return (helpers.random_videos(4, frames=6, size=24, seed=seed, shift=shift) * 255).round().to(torch.uint8)


def write_frames(videos: torch.Tensor, folder) -> None:
    folder.mkdir()
    for index, frame in enumerate(videos.flatten(0, 1)):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")


@pytest.fixture
def frames_and_metric(helpers):
    real, fake = uint8_videos(helpers, seed=11, shift=0.0), uint8_videos(helpers, seed=12, shift=0.15)
    backbone = helpers.TinyInceptionBackbone()
    return real, fake, backbone


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # clean-fid calls scipy's sqrtm(disp=False)
def test_fid_equals_clean_fid_compute_fid(frames_and_metric, tmp_path):
    from cleanfid import fid as clean_fid

    real, fake, backbone = frames_and_metric
    write_frames(real, tmp_path / "real")
    write_frames(fake, tmp_path / "fake")
    expected = clean_fid.compute_fid(
        str(tmp_path / "fake"),
        str(tmp_path / "real"),
        mode="clean",
        custom_feat_extractor=backbone,
        device=torch.device("cpu"),
        num_workers=0,
        batch_size=16,
        verbose=False,
        use_dataparallel=False,
    )
    metric = FrechetInceptionDistance(CleanInceptionFeatures(backbone))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    result = metric.compute()
    assert result["value"].item() == pytest.approx(expected, rel=1e-4)
    assert result["num_real"].item() == result["num_fake"].item() == 24


def test_fid_equals_torchmetrics_fid(frames_and_metric):
    from torchmetrics.image.fid import FrechetInceptionDistance as TorchmetricsFID

    real, fake, backbone = frames_and_metric
    extractor = CleanInceptionFeatures(backbone)
    reference = TorchmetricsFID(feature=extractor, normalize=True)
    reference.update(real.flatten(0, 1).float() / 255, real=True)
    reference.update(fake.flatten(0, 1).float() / 255, real=False)
    metric = FrechetInceptionDistance(extractor)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert metric.compute()["value"].item() == pytest.approx(reference.compute().item(), rel=1e-4)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_clean_fid_and_torchmetrics_on_full_subsets(frames_and_metric, helpers):
    # With subsets as large as both sets, every subset is a permutation and all estimators agree exactly.
    from cleanfid.fid import kernel_distance as clean_kernel_distance
    from torchmetrics.image.kid import KernelInceptionDistance as TorchmetricsKID

    real, fake, _ = frames_and_metric
    extractor = helpers.TinyFrameExtractor(num_features=16)
    metric = KernelInceptionDistance(extractor, num_subsets=3, subset_size=24)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    value = metric.compute()["value"].item()

    real_frames, fake_frames = (v.flatten(0, 1).float() / 255 for v in (real, fake))
    real_features, fake_features = (extractor(f).double().numpy() for f in (real_frames, fake_frames))
    np.random.seed(0)
    assert value == pytest.approx(clean_kernel_distance(real_features, fake_features, num_subsets=2), rel=1e-6)

    reference = TorchmetricsKID(feature=extractor, subsets=2, subset_size=24, normalize=True)
    reference.update(real_frames, real=True)
    reference.update(fake_frames, real=False)
    assert value == pytest.approx(reference.compute()[0].item(), rel=1e-4)
