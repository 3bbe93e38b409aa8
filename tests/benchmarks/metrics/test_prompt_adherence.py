"""Prompt adherence counts videos whose predicted labels all match the prompt."""

from __future__ import annotations

import pytest
import torch

from benchmarks.metrics import LabelPersistence, PromptAdherence


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


def test_label_persistence_counts_videos_read_alike_in_every_window(helpers):
    still = coloured_videos()  # 3 frames each
    changed = still.clone()
    changed[1] = still[2]  # dark red turns bright green
    changed[3, :, 2], changed[3, :, :2] = 1.0, 0.6  # dark blue turns bright blue: same strongest channel
    metric = LabelPersistence(helpers.TinyClassifier(), window=3)
    metric.update(torch.cat([still, still, changed], dim=1))  # 9 frames: three windows, the third changed
    result = metric.compute()
    assert result["value"].item() == pytest.approx(2 / 4) and result["num_videos"].item() == 4
    assert result["persistence/brightness"].item() == pytest.approx(2 / 4)
    assert result["persistence/channel"].item() == pytest.approx(3 / 4)
    # Read as a set (every lit channel), bright blue lights all three channels where dark blue lit one: a change.
    as_set = LabelPersistence(helpers.TinyClassifier(), window=3, label_names=["channel"], set_labels=["channel"])
    as_set.update(torch.cat([still, changed], dim=1))
    assert as_set.compute()["value"].item() == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="needs at least 6 frames, got 5"):
        LabelPersistence(helpers.TinyClassifier(), window=3).update(torch.cat([still, still[:, :2]], dim=1))


def test_real_moving_digits_persist_and_spliced_digits_do_not():
    """With the shipped domain network: real 16-frame clips keep their digits from the first 8 frames to the last
    8; a clip whose last 8 frames come from a clip with other digits is caught."""
    from benchmarks.features.domain import load_domain_net
    from zoo.data import create_dataset

    clips = create_dataset("moving_digits", "test", overrides={"num_frames": 16})
    batch = [clips[index] for index in range(64)]
    videos = torch.stack([item["video"] for item in batch])
    digits = [tuple(sorted(int(d) for d in item["labels"]["digits"] if d >= 0)) for item in batch]
    metric = LabelPersistence(load_domain_net("moving_digits"), window=8, label_names=["digits"])
    metric.update(videos)
    assert metric.compute()["value"].item() >= 0.9
    partner = [next(j for j in range(64) if digits[j] != digits[i] and len(digits[j]) == len(digits[i]))
               for i in range(64)]
    spliced = torch.cat([videos[:, :8], videos[partner, 8:]], dim=1)
    metric.reset()
    metric.update(spliced)
    assert metric.compute()["value"].item() <= 0.1
