"""Prompt adherence counts videos whose predicted labels all match the prompt."""

from __future__ import annotations

import pytest
import torch

from benchmarks.metrics import PromptAdherence


def coloured_videos() -> torch.Tensor:
    """Four videos: bright red, dark red, bright green, dark blue."""
    videos = torch.zeros(4, 3, 3, 4, 4)
    videos[0, :, 0], videos[0, :, 1:] = 1.0, 0.6
    videos[1, :, 0] = 0.3
    videos[2, :, 1], videos[2, :, [0, 2]] = 1.0, 0.6
    videos[3, :, 2] = 0.3
    return videos


def test_fraction_of_videos_matching_every_prompted_label(helpers):
    metric = PromptAdherence(helpers.TinyClassifier())
    # Prompts: bright red (ok), bright red (dark: wrong), bright green (ok), "any brightness" blue (ok).
    metric.update(coloured_videos(), {"brightness": torch.tensor([1, 1, 1, -1]), "channel": torch.tensor([0, 0, 1, 2])})
    result = metric.compute()
    assert result["value"].item() == pytest.approx(3 / 4)
    assert result["accuracy/brightness"].item() == pytest.approx(2 / 3)
    assert result["accuracy/channel"].item() == 1.0
    assert result["num_videos"].item() == 4


def test_multi_hot_labels_need_the_exact_set(helpers):
    metric = PromptAdherence(helpers.TinyClassifier())
    # TinyClassifier's "channel" logits are channel means: > 0 wherever the channel is lit.
    metric.update(coloured_videos(), {"channel": torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 1]]).bool()})
    assert metric.compute()["value"].item() == 1.0
    metric.update(coloured_videos()[:1], {"channel": torch.tensor([[1.0, 0.0, 0.0]])})  # green and blue are lit too
    assert metric.compute()["value"].item() == pytest.approx(4 / 5)


def test_unknown_label_names_get_a_hint(helpers):
    metric = PromptAdherence(helpers.TinyClassifier())
    with pytest.raises(ValueError, match="did you mean 'channel'"):
        metric.update(coloured_videos(), {"chanel": torch.zeros(4, dtype=torch.long)})


def test_sets_of_class_indices_padded_with_minus_one(helpers):
    metric = PromptAdherence(helpers.TinyClassifier())
    # Lit channels: {0, 1, 2}, {0}, {0, 1, 2}, {2}; the last prompt is empty (not prompted).
    sets = torch.tensor([[0, 1], [0, -1], [2, 1], [-1, -1]])
    metric.update(coloured_videos(), {"channel": sets})
    result = metric.compute()
    # Video 1 matches, video 3 is unprompted, videos 0 and 2 show a third colour.
    assert result["value"].item() == pytest.approx(2 / 4)
    assert result["accuracy/channel"].item() == pytest.approx(1 / 3)
