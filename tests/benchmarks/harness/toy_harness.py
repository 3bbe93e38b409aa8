"""Toy pieces for the harness tests and their DDP worker: a toy protocol, two toy generators registered from outside
the zoo, tiny pixel-statistics extractors (exact and fast), and a sample-folder writer.

tests/benchmarks/harness/conftest.py loads this module once as `toy_harness` (the models register once); the DDP
worker script imports it from its folder.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.harness import SampleWriter
from benchmarks.harness.samples import SampleManifest
from benchmarks.harness.scoring import ExtractorCache
from zoo.interface import ModelConfig, VideoGenerator
from zoo.registry import register_model

TOY_PROTOCOL = """
name: toy_digits
version: 1
description: moving digits at 8 frames, scored with pixel statistics (tests only)
dataset: {name: moving_digits, split: test}
resolution: 32
channels: 1
frames: 8
condition: text
rollouts: [1, 2]
num_real: 16
num_generated: 16
long_rollout_videos: 8
batch_size: 8
seeds: [0]
primary_metric: fvd_pixels@1x
metrics:
  - {id: fvd_pixels, metric: fvd, extractor: pixel_clip_stats, kwargs: {clip_frames: 8}, rollouts: [1, 2]}
  - {id: fid_over_time_pixels, metric: fid_over_time, extractor: pixel_frame_stats, kwargs: {num_buckets: 2},
     rollouts: [2], clip: all}
  - {id: flicker, metric: flicker, rollouts: [1, 2], clip: all}
  - {id: motion_magnitude, metric: motion_magnitude, rollouts: [1], higher_is_better: null}
  - {id: prompt_adherence_brightness, metric: prompt_adherence, extractor: brightness_digit_classifier,
     extractor_arg: classifier, rollouts: [1], higher_is_better: true}
"""


# ---- toy generators: defined outside the zoo, registered like any model -----------------------------------------
@dataclass
class ToyConfig(ModelConfig):
    noise: float = 0.1
    hold_mb: int = 0  # memory each generate call holds for a moment (the per-row peak memory test)


def _digit(prompt: str) -> int:
    found = re.search(r"\d", prompt)
    return int(found.group()) if found else 0


@register_model("harness_toy", config=ToyConfig)
class ToyGenerator(VideoGenerator):
    """Frames of brightness (digit + 1) / 11 for the prompted digit, plus seeded noise."""

    strategy = "toy"
    supported_conditions = frozenset({"text"})
    can_extend = True

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.level = nn.Parameter(torch.zeros(()))

    def compute_loss(self, batch):
        return (batch["video"].mean() - self.level) ** 2

    def generate_inner(self, num_videos, num_frames, cond, generator):
        if cond.text is not None:
            digits = torch.tensor([_digit(prompt) for prompt in cond.text], device=self.device)
        else:
            digits = torch.randint(0, 10, (num_videos,), generator=generator, device=self.device)
        base = ((digits.float() + 1) / 11).view(-1, 1, 1, 1, 1) + self.level.detach() * 0
        noise = torch.rand(num_videos, num_frames, *self.frame_size, generator=generator, device=self.device)
        if self.config.hold_mb:
            held = torch.ones(self.config.hold_mb * 2**18)  # float32: hold_mb MiB, every page touched
            time.sleep(0.05)  # long enough for a sampling measurement to see it too
            del held
        return (base + self.config.noise * (noise - 0.5)).clamp(0, 1)


@register_model("harness_toy_short", config=ToyConfig)
class ShortToyGenerator(ToyGenerator):
    """Unconditional and unable to extend: its 2x metrics and prompt adherence must show as missing."""

    supported_conditions = frozenset()
    can_extend = False


@register_model("harness_toy_prefix", config=ToyConfig)
class PrefixToyGenerator(ToyGenerator):
    """Draws its noise frame by frame, so a longer video starts as a shorter one (prefix-consistent); counts its
    generate calls."""

    prefix_consistent = True
    calls = 0

    def generate_inner(self, num_videos, num_frames, cond, generator):
        type(self).calls += 1
        digits = torch.tensor([_digit(prompt) for prompt in cond.text], device=self.device)
        base = ((digits.float() + 1) / 11).view(-1, 1, 1, 1)
        frames = [base + self.config.noise * (torch.rand(num_videos, *self.frame_size, generator=generator) - 0.5)
                  for _ in range(num_frames)]
        return torch.stack(frames, dim=1).clamp(0, 1)


# ---- tiny extractors: pixel statistics, exact and fast -----------------------------------------------------------
class PixelClipStats(nn.Module):
    num_features = 3

    def forward(self, videos):  # [B, T, C, H, W] -> mean, std, mean |frame difference|
        flat = videos.flatten(1)
        motion = (videos[:, 1:] - videos[:, :-1]).abs().flatten(1).mean(1)
        return torch.stack([flat.mean(1), flat.std(1), motion], dim=1)


class PixelFrameStats(nn.Module):
    num_features = 2

    def forward(self, frames):  # [N, C, H, W] -> mean, std
        flat = frames.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], dim=1)


class BrightnessDigitClassifier(nn.Module):
    """Reads the digit back from the brightness the toy generator encodes it in."""

    label_names = ("label",)

    def forward(self, videos):
        level = videos.mean(dim=(1, 2, 3, 4)) * 11 - 1
        return {"label": -(level[:, None] - torch.arange(10, device=videos.device)).abs()}


TEST_EXTRACTORS = {"pixel_clip_stats": PixelClipStats, "pixel_frame_stats": PixelFrameStats,
                   "brightness_digit_classifier": BrightnessDigitClassifier}


def use_test_extractors() -> None:
    """`run_recipe`'s lane setup in the tests (each spawned lane imports this module, so the toy models register
    there too): the test extractors instead of the real ones, as the `toy_env` fixture does in-process."""
    ExtractorCache.build = staticmethod(lambda name: TEST_EXTRACTORS[name]())


def fail_the_short_row() -> None:
    """A lane setup under which the lane that takes `harness_toy_short` fails (the failed-lane test)."""
    from benchmarks.harness import runner

    use_test_extractors()
    prepare = runner.prepare_model

    def prepare_or_fail(name, *args, **kwargs):
        if name == "harness_toy_short":
            raise RuntimeError("this lane fails on purpose")
        return prepare(name, *args, **kwargs)

    runner.prepare_model = prepare_or_fail


def write_folder(folder: Path, videos: torch.Tensor, protocol, rollout: int = 1, prompts=None) -> None:
    """Write uint8 videos `[N, T, C, H, W]` as a sample folder of `protocol` (video i conditioned on real clip i)."""
    writer = SampleWriter(folder)
    for batch in videos.split(8):
        writer.add(batch)
    count = videos.shape[0]
    writer.close(SampleManifest(
        protocol=protocol.name, protocol_hash=protocol.hash, generator="external.test", generator_version="v0",
        seed=0, rollout=rollout, num_frames=videos.shape[1], context_frames=0,
        conditioned_on="text" if prompts else "none", fps=8, prompts=prompts or [None] * count,
        reference_index=list(range(count))))


def micro_overrides(tmp_path: Path, protocol_path: Path, models: str = "[harness_toy,harness_toy_short]") -> list[str]:
    """`micro` recipe overrides: the toy protocol and models, 2 training steps, every output under `tmp_path`."""
    return [f"protocol={protocol_path}", "protocol_overrides={}", f"models={models}", "trainer.max_steps=2",
            f"runs_dir={tmp_path / 'runs'}", f"results_dir={tmp_path / 'results'}",
            f"leaderboard_dir={tmp_path / 'board'}", "device=cpu"]
