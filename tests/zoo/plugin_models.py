"""A model registered from outside the package, and `run_zoo`, which runs the `zoo` command with it loaded.

Subprocesses load it with `zoo --plugin tests/zoo/plugin_models.py ...` (or `ZOO_PLUGINS=...`), as a user would load
their own model. `ZOO_TEST_KILL_AT_STEP=k` makes the process SIGKILL itself at the start of step k: a crash at a known
point, mid-run, with no chance to clean up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.interface import Conditioning, ModelConfig, VideoGenerator
from zoo.registry import register_model

KILL_AT_STEP_ENV = "ZOO_TEST_KILL_AT_STEP"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TinyDenoiserConfig(ModelConfig):
    """hidden: channels between the two convolutions. noise_scale: training noise; 0 makes the loss deterministic."""

    clip_length: int = 4
    hidden: int = 4
    noise_scale: float = 0.2


@register_model("tiny_denoiser", config=TinyDenoiserConfig)
class TinyDenoiser(VideoGenerator):
    """Two 3x3 convolutions that denoise single frames; sampling denoises uniform noise twice."""

    strategy = "test"
    supported_conditions = frozenset()

    def __init__(self, config: TinyDenoiserConfig) -> None:
        super().__init__(config)
        self.net = nn.Sequential(
            nn.Conv2d(config.channels, config.hidden, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(config.hidden, config.channels, 3, padding=1),
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if os.environ.get(KILL_AT_STEP_ENV) == str(self.global_step):
            os.kill(os.getpid(), signal.SIGKILL)

    def compute_loss(self, batch: dict[str, Any]) -> Tensor:
        frames = batch["video"].flatten(0, 1)
        noisy = frames + self.config.noise_scale * torch.randn_like(frames)
        return F.mse_loss(self.net(noisy), frames)

    def generate_inner(
        self, num_videos: int, num_frames: int, cond: Conditioning, generator: torch.Generator
    ) -> Tensor:
        frames = torch.rand((num_videos * num_frames, *self.frame_size), generator=generator, device=self.device)
        for _ in range(2):
            frames = self.net(frames).clamp(0, 1)
        return frames.view(num_videos, num_frames, *self.frame_size)


def run_zoo(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python -m zoo_cli --plugin <this file> *args` in a fresh process, as a user would."""
    command = [sys.executable, "-m", "zoo_cli", "--plugin", str(Path(__file__).resolve()), *args]
    merged = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(command, cwd=cwd, env=merged, capture_output=True, text=True, timeout=timeout)
