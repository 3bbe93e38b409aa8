"""Config validation and the model registry: errors name the key / model and suggest the closest spelling."""

from dataclasses import dataclass

import pytest
import torch

import zoo
from zoo.config import ConfigError, build_config
from zoo.interface import Conditioning, ModelConfig, VideoGenerator
from zoo.registry import MODELS, UnknownModelError, create_model, list_models, load_model, register_model


@dataclass
class ConstantConfig(ModelConfig):
    brightness: float = 0.5
    noise_scale: float = 0.1


@register_model("test_constant", config=ConstantConfig)
class ConstantVideo(VideoGenerator):
    """A one-parameter model: frames are a learned grey level plus seeded noise."""

    strategy = "test"
    supported_conditions = frozenset({"context"})

    def __init__(self, config: ConstantConfig) -> None:
        super().__init__(config)
        self.level = torch.nn.Parameter(torch.tensor(config.brightness))

    def compute_loss(self, batch):
        return ((batch["video"] - self.level) ** 2).mean()

    def generate_inner(self, num_videos, num_frames, cond: Conditioning, generator):
        shape = (num_videos, num_frames, *self.frame_size)
        noise = torch.randn(shape, generator=generator, device=self.device) * self.config.noise_scale
        videos = self.level + noise
        if cond.context is not None:
            videos[:, : cond.context.shape[1]] = cond.context
        return videos


def test_external_model_registers_and_lists():
    assert "test_constant" in list_models()
    assert list_models("test_const*") == ["test_constant"]


def test_create_model_merges_overrides_into_dataclass():
    model = create_model("test_constant", overrides=["brightness=0.25"], clip_length=4)
    assert model.config.brightness == 0.25 and model.clip_length == 4
    assert model.metadata()["strategy"] == "test"
    assert model.num_parameters == 1


def test_unknown_key_names_key_and_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'brightnes'.*did you mean 'brightness'"):
        create_model("test_constant", brightnes=0.3)


def test_wrong_type_is_config_error():
    with pytest.raises(ConfigError, match="clip_length"):
        create_model("test_constant", clip_length="eight")


def test_missing_required_value():
    from omegaconf import MISSING

    @dataclass
    class NeedsRoot:
        root: str = MISSING

    with pytest.raises(ConfigError, match="missing required value.*root"):
        build_config(NeedsRoot, {})


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownModelError, match="did you mean 'test_constant'"):
        create_model("test_constnat")


def test_generate_validates_and_is_seeded():
    model = create_model("test_constant", clip_length=4, image_size=8)
    a = model.generate(2, 4, generator=3)
    b = model.generate(2, 4, generator=3)
    c = model.generate(2, 4, generator=4)
    assert a.shape == (2, 4, 1, 8, 8) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(zoo.ConditioningError, match="does not support conditioning on \\['text'\\]"):
        model.generate(2, 4, cond=Conditioning(text=["a", "b"]))
    with pytest.raises(zoo.ConditioningError, match="context must be"):
        model.generate(2, 4, cond=Conditioning(context=torch.zeros(2, 1, 3, 8, 8)))
    context = torch.full((2, 1, 1, 8, 8), 0.9)
    assert torch.allclose(model.generate(2, 4, cond=Conditioning(context=context))[:, :1], context)


def test_script_lengths_must_sum_to_frames():
    cond = Conditioning(script=[("a 1", 2), ("a 2", 3)])
    assert cond.prompts_per_frame(1, 5) == [["a 1", "a 1", "a 2", "a 2", "a 2"]]
    model = create_model("test_constant")
    type(model).supported_conditions = frozenset({"script"})
    try:
        with pytest.raises(zoo.ConditioningError, match="add up to 5 frames but 4"):
            model.generate(1, 4, cond=cond)
    finally:
        type(model).supported_conditions = frozenset({"context"})


def test_nan_samples_are_refused():
    model = create_model("test_constant")
    with torch.no_grad():
        model.level.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN"):
        model.generate(1, 2)


def test_safetensors_round_trip_and_truncated_checkpoint(tmp_path):
    model = create_model("test_constant", brightness=0.7)
    path = zoo.export_safetensors(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert torch.equal(loaded.generate(1, 3, generator=1), model.generate(1, 3, generator=1))
    truncated = tmp_path / "bad.ckpt"
    truncated.write_bytes(b"PK\x03\x04broken")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        load_model(truncated)


def test_defaults_come_from_the_packaged_yaml_not_the_dataclass():
    import yaml

    from zoo.config import config_dir
    from zoo.models.diffusion_forcing import DiffusionForcingConfig

    shipped = yaml.safe_load((config_dir() / "model" / "diffusion_forcing.yaml").read_text())
    assert shipped["block_size"] != DiffusionForcingConfig().block_size  # else this test would not tell them apart
    assert create_model("diffusion_forcing").config.block_size == shipped["block_size"]
    assert "test_constant" not in {p.stem for p in (config_dir() / "model").glob("*.yaml")}  # a plugin: dataclass


def test_a_builtin_without_its_default_yaml_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """A model of the package whose YAML is missing (a broken install, a new model file without its YAML) is refused,
    never built from its dataclass defaults in silence."""
    import shutil

    import zoo.config
    from zoo_cli import main

    configs = shutil.copytree(zoo.config.config_dir(), tmp_path / "configs")
    (configs / "model" / "diffusion_forcing.yaml").unlink()
    monkeypatch.setattr(zoo.config, "CONFIG_DIR", configs)
    with pytest.raises(ConfigError) as error:
        create_model("diffusion_forcing")
    expected = (f"built-in model 'diffusion_forcing' has no default config: {configs}/model/diffusion_forcing.yaml "
                "is missing (add it, or reinstall the package if it was removed)")
    assert str(error.value) == expected
    assert create_model("video_ar").config.image_size == 32  # the others still load
    assert main(["train", "diffusion_forcing", "--data", "moving_digits"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"zoo: error: {expected}"]

    @dataclass
    class UnconfiguredConfig(ModelConfig):
        width: int = 4

    # Registered from inside the package (as a new zoo/models/ file would be) but with no YAML written for it; in a
    # copy of the registry, so no later test sees it among the zoo's models.
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    cls = type("Unconfigured", (ConstantVideo,), {"__module__": "zoo.models.unconfigured"})
    register_model("test_unconfigured_builtin", config=UnconfiguredConfig)(cls)
    with pytest.raises(ConfigError, match=r"built-in model 'test_unconfigured_builtin' has no default config: .*"
                                          r"test_unconfigured_builtin\.yaml is missing"):
        create_model("test_unconfigured_builtin")
    with pytest.raises(ConfigError, match=r"unknown preset 'video_ar_larg' \(did you mean 'video_ar_large'\?\)"):
        create_model("video_ar", config_path="video_ar_larg")
