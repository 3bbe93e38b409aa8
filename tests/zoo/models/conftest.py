"""Shared by the model tests: the held-out-loss learning check that every diffusion-trained model passes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from zoo.registry import create_model
from zoo.training import TrainerConfig, train_model


def held_out_loss_before_and_after(name: str, out_dir: Path, steps: int = 80) -> tuple[float, float]:
    """Model `name`'s loss on 32 val clips of moving_digits before and after `steps` training steps (batch 16).

    The loss draws noise, timesteps and context lengths: they are fixed, so both evaluations compare like with like.
    """
    from zoo.data import create_dataset

    torch.manual_seed(0)
    model = create_model(name)
    dataset = create_dataset("moving_digits", split="val", num_frames=model.clip_length)
    items = [dataset[i] for i in range(32)]
    held_out = {"video": torch.stack([it["video"] for it in items]), "text": [it["text"] for it in items]}

    def held_out_loss() -> float:
        with torch.random.fork_rng():
            torch.manual_seed(123)
            with torch.no_grad():
                return model.compute_loss(held_out).item()

    before = held_out_loss()
    train_model(model, "moving_digits", out_dir,
                TrainerConfig(max_steps=steps, batch_size=16, enable_progress_bar=False, log_every_n_steps=20))
    model.eval()
    return before, held_out_loss()


@pytest.fixture(name="held_out_loss_before_and_after")
def held_out_loss_before_and_after_fixture() -> Callable[..., tuple[float, float]]:
    """`held_out_loss_before_and_after(model_name, out_dir, steps=80) -> (before, after)`."""
    return held_out_loss_before_and_after


def wake_zero_init(module: torch.nn.Module) -> None:
    """Give zero-initialised linear and convolution layers small random weights: zero output layers make an untrained
    network ignore its conditions (AR vectors, keyframes); random ones make them matter, which the conditioning tests
    need."""
    generator = torch.Generator().manual_seed(1)
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d) and not layer.weight.any():
            layer.weight.data.normal_(0.0, 0.05, generator=generator)


@pytest.fixture(name="wake_zero_init", scope="session")
def wake_zero_init_fixture() -> Callable[[torch.nn.Module], None]:
    """`wake_zero_init(module)`: see the function."""
    return wake_zero_init
