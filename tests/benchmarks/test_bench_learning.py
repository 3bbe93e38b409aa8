"""The learning-speed benchmark: its readout scores real frames as right and blank ones at chance, and a run reports
each backbone at the asked steps, reproducibly."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_learning import digit_accuracy, main
from benchmarks.features.domain import load_domain_net
from zoo.data import create_dataset


def test_the_readout_reads_real_digits_and_gives_blank_frames_chance():
    frames = create_dataset("moving_digits", "test", overrides={"num_frames": 1, "num_digits": [1]})
    batch = [frames[i] for i in range(64)]
    video = torch.stack([clip["video"][0] for clip in batch])
    digits = torch.tensor([int(clip["labels"]["digits"][0]) for clip in batch])
    classifier = load_domain_net("moving_digits")
    assert digit_accuracy(video, digits, classifier) >= 0.9
    blank = digit_accuracy(torch.zeros_like(video), torch.arange(64) % 10, classifier)
    assert blank <= 0.2  # one reading for every frame: right for one digit in ten


@pytest.mark.parametrize("condition", ["class", "text"])
def test_reports_every_backbone_at_the_asked_steps_and_repeats_exactly(condition, capsys):
    argv = ["--backbones", "dit,unet", "--dit", "32,1,2", "--unet", "16", "--steps", "3", "--every", "2",
            "--batch", "4", "--samples", "10", "--condition", condition]
    first = main(argv)
    assert [(c.backbone, c.step) for c in first] == [("dit", 2), ("dit", 3), ("unet", 2), ("unet", 3)]
    assert all(0.0 <= c.accuracy <= 1.0 and c.parameters > 0 and c.loss > 0 for c in first)
    printed = capsys.readouterr().out
    assert printed.count("\ndit ") == 2 and printed.count("\nunet ") == 2
    again = main(argv)
    assert [(c.loss, c.accuracy) for c in again] == [(c.loss, c.accuracy) for c in first]  # one seed, one result
