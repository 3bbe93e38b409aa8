"""Frame autoencoders: per-frame API, token API, locality options, save/load, training, and the committed weights."""

from __future__ import annotations

import json

import pytest
import torch

from zoo.components.autoencoder import (
    ASSET_DIR,
    AutoencoderConfig,
    AutoencoderModule,
    AutoencoderTrainingConfig,
    FrameAutoencoder,
    autoencoder_recipe,
    available_autoencoders,
    kmeans_plus_plus,
    load_autoencoder,
    save_autoencoder,
    shrink_codebook,
    train_autoencoder,
    write_shrunk_codebook,
)
from zoo.config import ConfigError
from zoo.training import TrainerConfig

# Two levels of 8 channels: 32x32 frames -> 16x16 latents, fast enough for many small tests.
TINY = {"block_widths": [8, 8], "norm_groups": 4, "latent_channels": 2, "codebook_size": 16}
COMMITTED = ["moving_digits_kl", "moving_digits_vq", "bouncing_shapes_kl", "bouncing_shapes_vq"]
SHRUNK = "moving_digits_vq32"  # moving_digits_vq with its codebook shrunk to 32 entries (video_ar's tokens)


def tiny(kind: str, **overrides) -> FrameAutoencoder:
    return FrameAutoencoder(AutoencoderConfig(kind=kind, **{**TINY, **overrides})).eval()


def ae_path(name: str):
    return ASSET_DIR / f"{name}.safetensors"


def squares(num: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Frames `[num, C, 32, 32]`: one bright random square each on black, like the embedded datasets."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.zeros(num, channels, 32, 32)
    for i in range(num):
        y, x = torch.randint(0, 24, (2,), generator=g).tolist()
        frames[i, :, y : y + 8, x : x + 8] = 1.0
    return frames


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_per_frame_and_video_shapes(kind):
    ae = tiny(kind)
    assert ae.latent_shape == (2, 16, 16) and ae.config.downsample == 2
    frames = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        latents = ae.encode(frames)
        decoded = ae.decode(latents)
        video = torch.rand(2, 3, 1, 32, 32)
        video_latents = ae.encode_video(video)
    assert latents.shape == (3, 2, 16, 16)
    assert decoded.shape == frames.shape and decoded.min() >= 0 and decoded.max() <= 1
    assert video_latents.shape == (2, 3, 2, 16, 16)
    torch.testing.assert_close(video_latents[1], ae.encode(video[1]))  # frames are coded independently
    assert ae.decode_video(video_latents).shape == video.shape
    torch.testing.assert_close(ae.encode(frames), latents, atol=0, rtol=0)  # deterministic: posterior mean / code


def test_scaling_factor_scales_latents():
    ae = tiny("kl")
    frames = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        unit = ae.encode(frames)
        reference = ae.decode(unit)
        ae.config.scaling_factor = 2.5
        torch.testing.assert_close(ae.encode(frames), unit * 2.5)
        torch.testing.assert_close(ae.decode(unit * 2.5), reference, atol=1e-5, rtol=0)


def test_vq_tokens_round_trip_through_the_codebook():
    ae = tiny("vq")
    frames = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        tokens = ae.encode_tokens(frames)
        assert tokens.shape == (4, 16, 16) and tokens.dtype == torch.long
        assert 0 <= tokens.min() and tokens.max() < ae.codebook_size == 16
        torch.testing.assert_close(ae.decode_tokens(tokens), ae.decode(ae.encode(frames)), atol=1e-6, rtol=0)
        video_tokens = ae.encode_video_tokens(frames.view(2, 2, 1, 32, 32))
        assert torch.equal(video_tokens.flatten(0, 1), tokens)
        assert ae.decode_video_tokens(video_tokens).shape == (2, 2, 1, 32, 32)


def test_kl_autoencoder_has_no_tokens():
    ae = tiny("kl")
    with pytest.raises(ValueError, match="need a vq one"):
        ae.encode_tokens(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="need a vq one"):
        _ = ae.codebook_size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "vae"}, "kind 'vae' is unknown"),
        ({"image_size": 31}, "not divisible by the downsample factor"),
        ({"block_widths": [8, 10]}, "not divisible by norm_groups"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        AutoencoderConfig(**{**TINY, **overrides})


def test_circular_padding_codes_blank_frames_alike_and_is_shift_equivariant():
    wrapped, bordered = tiny("vq", circular_padding=True), tiny("vq")
    with torch.no_grad():
        assert wrapped.encode_tokens(torch.zeros(1, 1, 32, 32)).unique().numel() == 1
        assert bordered._pre_latents(torch.zeros(1, 1, 32, 32)).std(dim=(2, 3)).max() > 1e-3
        frames = torch.rand(1, 1, 32, 32)
        # Shifting the frame by 2 pixels shifts the 16x16 latent grid by one cell, exactly.
        shifted = wrapped._pre_latents(torch.roll(frames, (2, 4), (2, 3)))
        torch.testing.assert_close(shifted, torch.roll(wrapped._pre_latents(frames), (1, 2), (2, 3)), atol=1e-5, rtol=0)


def test_kmeans_plus_plus_spreads_codes_over_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # A dominant cluster (like a blank background) and two rare ones.
    points = torch.cat([centers[0] + 0.01 * torch.randn(900, 2, generator=g),
                        centers[1] + 0.01 * torch.randn(50, 2, generator=g),
                        centers[2] + 0.01 * torch.randn(50, 2, generator=g)])
    torch.manual_seed(0)
    picks = kmeans_plus_plus(points, 3)
    nearest = torch.cdist(picks, centers).argmin(dim=1)
    assert sorted(nearest.tolist()) == [0, 1, 2]
    continued = kmeans_plus_plus(points, 2, centers=centers[:1])
    assert set(torch.cdist(continued, centers).argmin(dim=1).tolist()) == {1, 2}


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_training_losses_fall(kind):
    torch.manual_seed(0)
    module = AutoencoderModule(AutoencoderConfig(kind=kind, **TINY), AutoencoderTrainingConfig())
    frames = squares(8)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = module._losses(frames)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["mse"].item())
    assert losses[-1] < 0.5 * losses[0]
    assert {"loss", "mse", "reg", "psnr"} <= set(out)


def test_vq_codebook_starts_from_encoder_vectors():
    module = AutoencoderModule(AutoencoderConfig(kind="vq", **TINY), AutoencoderTrainingConfig())
    frames = squares(4)
    module._losses(frames)  # step 0: every code is unused, so all are seeded from this batch
    vectors = module.autoencoder._pre_latents(frames).permute(0, 2, 3, 1).reshape(-1, 2)
    codebook = module.autoencoder.model.quantize.embedding.weight
    distances = torch.cdist(codebook, vectors, compute_mode="donot_use_mm_for_euclid_dist")
    assert distances.amin(dim=1).max() < 1e-6
    assert module.code_usage.sum() == frames.shape[0] * 16 * 16


def test_save_and_load_round_trip(tmp_path):
    ae = tiny("vq", circular_padding=True)
    path = save_autoencoder(ae, tmp_path / "ae", psnr=21.5, extra={"data": "squares"})
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert path.suffix == ".safetensors" and sidecar["psnr"] == 21.5 and sidecar["data"] == "squares"
    assert sidecar["config"]["circular_padding"] is True and len(sidecar["sha256"]) == 64
    loaded = load_autoencoder(tmp_path / "ae")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert not loaded.training, "a frozen autoencoder stays in eval mode"
    # Weights are stored in fp16: the loaded model equals the original with its weights rounded.
    ae.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in ae.state_dict().items()})
    frames = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_tokens(frames), ae.encode_tokens(frames))
        torch.testing.assert_close(loaded.decode(loaded.encode(frames)), ae.decode(ae.encode(frames)))


def test_load_refuses_corrupt_and_unknown_files(tmp_path):
    path = save_autoencoder(tiny("kl"), tmp_path / "ae.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256"):
        load_autoencoder(path)
    with pytest.raises(FileNotFoundError, match="did you mean 'moving_digits_kl'"):
        load_autoencoder("moving_digit_kl")
    path.with_suffix(".json").unlink()
    with pytest.raises(ConfigError, match="sidecar"):
        load_autoencoder(path)


def test_recipe_overrides_and_errors():
    kind, recipe = autoencoder_recipe(None, ["kind=vq", "model.codebook_size=64", "training.batch_size=2"])
    assert kind == "vq" and recipe.model.codebook_size == 64 and recipe.training.batch_size == 2
    with pytest.raises(ConfigError, match="unknown key"):
        autoencoder_recipe("kl", {"model": {"latent_chanels": 8}})
    with pytest.raises(ConfigError, match="did you mean 'vq'"):
        autoencoder_recipe("vqq")


def test_train_autoencoder_writes_a_loadable_file_with_its_psnr(tmp_path):
    overrides = ["model.block_widths=[8,8]", "model.norm_groups=4", "model.codebook_size=16",
                 "training.batch_size=2", "training.frames_per_clip=2", "training.val_batches=1",
                 "training.scale_batches=1"]
    report = train_autoencoder("moving_digits", "vq", 2, tmp_path, overrides,
                               trainer_cfg=TrainerConfig(accelerator="cpu", enable_progress_bar=False))
    sidecar = json.loads((tmp_path / "moving_digits_vq.json").read_text())
    assert report["path"] == str(tmp_path / "moving_digits_vq.safetensors")
    assert sidecar["psnr"] == round(report["psnr"], 3) and 0 < report["psnr"] < 60
    assert sidecar["data"] == "moving_digits" and sidecar["max_steps"] == 2 and 1 <= sidecar["codes_used"] <= 16
    ae = load_autoencoder(report["path"])
    assert ae.config.channels == 1 and ae.latent_shape == (4, 16, 16)


@pytest.fixture(scope="module")
def val_clips():
    from zoo.data import create_dataset

    return {
        name: torch.stack([create_dataset(name, "val")[i]["video"] for i in range(4)])
        for name in ("moving_digits", "bouncing_shapes")
    }


def test_committed_autoencoders_are_present_and_small():
    assert set(COMMITTED) <= set(available_autoencoders())
    for name in COMMITTED:
        ae = load_autoencoder(name)
        assert ae.latent_shape == (4, 8, 8)
        assert ae.config.image_size == 32 and ae.config.channels == (1 if name.startswith("moving") else 3)
        path = ae_path(name)
        assert path.stat().st_size < 1.5e6


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_autoencoders_reconstruct_well(name, val_clips):
    data = name.rsplit("_", 1)[0]
    ae = load_autoencoder(name)
    video = val_clips[data][:, :8]
    with torch.no_grad():
        latents = ae.encode_video(video)
        recon = ae.decode_video(latents)
    psnr = -10 * torch.log10(((recon - video) ** 2).mean())
    sidecar = json.loads(ae_path(name).with_suffix(".json").read_text())
    assert psnr > 22.0, f"{name}: reconstruction PSNR {psnr:.1f} dB"
    assert abs(psnr - sidecar["psnr"]) < 4.0, "the sidecar's PSNR should describe the file"
    assert 0.5 < latents.std() < 2.0, "latents are scaled to about unit variance"


def _unigram_entropy(tokens: torch.Tensor) -> float:
    p = torch.bincount(tokens.flatten()).float()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def test_shrink_codebook_keeps_the_coder_and_lowers_token_entropy(val_clips):
    source = load_autoencoder("moving_digits_vq")
    frames = val_clips["moving_digits"].flatten(0, 1)  # 64 frames
    with torch.no_grad():
        shrunk = shrink_codebook(source, [frames[:32], frames[32:]], 16)
        again = shrink_codebook(source, [frames[:32], frames[32:]], 16)
        tokens, source_tokens = shrunk.encode_tokens(frames), source.encode_tokens(frames)
        recon = shrunk.decode_tokens(tokens)
    assert shrunk.codebook_size == 16 and shrunk.frozen and int(tokens.max()) < 16
    torch.testing.assert_close(again.model.quantize.embedding.weight, shrunk.model.quantize.embedding.weight)
    kept = {k: v for k, v in shrunk.state_dict().items() if k != "model.quantize.embedding.weight"}
    for key, value in kept.items():
        torch.testing.assert_close(value, source.state_dict()[key], atol=0, rtol=0)
    # A token AR model predicts 16 codes at ~2 nats instead of hundreds of near-duplicates at ~5.
    assert _unigram_entropy(tokens) < _unigram_entropy(source_tokens) - 2.0
    psnr = -10 * torch.log10(((recon - frames) ** 2).mean())
    assert psnr > 20.0, f"shrunk round trip {psnr:.1f} dB"
    with pytest.raises(ValueError, match="size must be in"):
        shrink_codebook(source, [frames], 0)
    with pytest.raises(ValueError, match="kl"):
        shrink_codebook(load_autoencoder("moving_digits_kl"), [frames], 8)


def test_committed_shrunk_codebook_is_reproducible_and_its_tokens_read_right(tmp_path):
    """The committed file is what `write_shrunk_codebook` makes from the committed source, and its round trip of real
    test clips is read by the domain network about as well as the clips themselves (0.97 digits, 0.99 direction)."""
    from benchmarks.features.domain import load_domain_net
    from benchmarks.metrics.prompt_adherence import PromptAdherence
    from zoo.data import create_dataset

    committed = json.loads(ae_path(SHRUNK).with_suffix(".json").read_text())
    source = json.loads(ae_path("moving_digits_vq").with_suffix(".json").read_text())
    assert committed["derived_from"] == {"name": "moving_digits_vq", "sha256": source["sha256"]}
    remade = write_shrunk_codebook("moving_digits_vq", committed["shrink"]["codebook_size"], out=tmp_path)
    ours, theirs = load_autoencoder(SHRUNK), load_autoencoder(tmp_path / f"{SHRUNK}.safetensors")
    torch.testing.assert_close(theirs.model.quantize.embedding.weight, ours.model.quantize.embedding.weight,
                               atol=2e-3, rtol=0)
    assert abs(remade["psnr"] - committed["psnr"]) < 0.05

    clips = create_dataset("moving_digits", "test", overrides={"num_frames": 8})
    items = [clips[i] for i in range(128)]
    video = torch.stack([item["video"] for item in items])
    metric = PromptAdherence(load_domain_net("moving_digits"))
    with torch.no_grad():
        metric.update(ours.decode_video_tokens(ours.encode_video_tokens(video)),
                      {name: torch.stack([torch.as_tensor(item["labels"][name]) for item in items])
                       for name in metric.label_names})
    read = metric.compute()
    assert read["accuracy/digits"] >= 0.9 and read["accuracy/direction"] >= 0.9, read
