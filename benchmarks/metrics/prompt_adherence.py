"""Prompt adherence on datasets with known labels: does a classifier recognise in the video what was prompted?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from benchmarks.metrics.base import GENERATED_ONLY, LABELLED, VideoMetric
from hvz_registry import did_you_mean


def _multi_hot(indices: Tensor, num_classes: int) -> Tensor:
    """Sets of class indices `[B, M]` padded with -1 -> bool `[B, num_classes]`."""
    hot = torch.zeros(indices.shape[0], num_classes + 1, dtype=torch.bool, device=indices.device)
    hot.scatter_(1, torch.where(indices >= 0, indices, num_classes), True)
    return hot[:, :num_classes]


class PromptAdherence(VideoMetric):
    """Fraction of generated videos whose classifier predictions match every prompted label.

    `classifier` maps videos `[B, T, C, H, W]` in [0, 1] to a dict of logits `{label_name: [B, K]}`; its
    `label_names` attribute (or `label_names=`) lists the heads. `update(videos, labels)` takes the prompted labels
    per head as one of
    - `[B]` class indices (-1 = not prompted): right when the argmax matches;
    - `[B, M]` integer sets of class indices padded with -1 (all -1 = not prompted), or `[B, K]` bool/float
      multi-hot: right when the set of classes with logit > 0 is exactly the prompted set.
    Heads missing from `labels` are ignored.
    `compute()` gives `value`, `num_videos` and `accuracy/<label_name>` per head.
    """

    higher_is_better = True
    inputs = LABELLED

    def __init__(self, classifier: nn.Module, label_names: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier.eval().requires_grad_(False)
        names = label_names if label_names is not None else getattr(classifier, "label_names", None)
        if not names:
            raise ValueError("the classifier has no `label_names`; pass label_names= to PromptAdherence")
        self.label_names = tuple(names)
        self.add_state("num_matched", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("num_videos", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("head_correct", torch.zeros(len(self.label_names), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("head_prompted", torch.zeros(len(self.label_names), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, videos: Tensor, labels: Mapping[str, Tensor]) -> None:
        """Add generated videos and the labels they were prompted with."""
        verdicts = self.judge(self.check_videos(videos, "fake"), labels)
        for head, name in enumerate(self.label_names):
            if name in labels:
                self.head_correct[head] += int((verdicts[f"correct/{name}"] & verdicts[f"prompted/{name}"]).sum())
                self.head_prompted[head] += int(verdicts[f"prompted/{name}"].sum())
        self.num_matched += int(verdicts["matched"].sum())
        self.num_videos += verdicts["matched"].shape[0]

    def judge(self, videos: Tensor, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-video verdicts on validated videos, bool `[B]` each: `matched` (every prompted head right), and per
        given head `correct/<name>` and `prompted/<name>`. Changes no state."""
        unknown = [name for name in labels if name not in self.label_names]
        if unknown:
            raise ValueError(
                f"unknown label '{unknown[0]}'{did_you_mean(unknown[0], self.label_names)}; "
                f"the classifier predicts {list(self.label_names)}"
            )
        with torch.no_grad():
            logits = self.classifier(videos)
        matched = torch.ones(videos.shape[0], dtype=torch.bool, device=videos.device)
        verdicts: dict[str, Tensor] = {}
        for name, target in labels.items():
            target = target.to(videos.device)
            if target.shape[0] != videos.shape[0]:
                raise ValueError(f"label '{name}' has {target.shape[0]} entries for {videos.shape[0]} videos")
            if target.ndim == 1:
                prompted = target >= 0
                correct = logits[name].argmax(dim=-1) == target
            else:
                if target.dtype == torch.bool or target.is_floating_point():
                    prompted, wanted = torch.ones_like(matched), target.bool()
                else:
                    prompted, wanted = (target >= 0).any(dim=1), _multi_hot(target, logits[name].shape[-1])
                correct = ((logits[name] > 0) == wanted).all(dim=-1)
            matched &= correct | ~prompted
            verdicts[f"correct/{name}"], verdicts[f"prompted/{name}"] = correct, prompted
        verdicts["matched"] = matched
        return verdicts

    def compute(self) -> dict[str, Tensor]:
        if int(self.num_videos) == 0:
            raise ValueError("PromptAdherence has no videos; call update() first")
        result = {"value": self.num_matched.double() / self.num_videos, "num_videos": self.num_videos.clone()}
        for head, name in enumerate(self.label_names):
            if int(self.head_prompted[head]) > 0:
                result[f"accuracy/{name}"] = self.head_correct[head].double() / self.head_prompted[head]
        return result


class LabelPersistence(VideoMetric):
    """Fraction of videos whose classifier reads the same labels in every window of `window` frames: do the objects
    stay the same objects (no morphing)? Needs no prompt: it compares a video with itself.

    The classifier is read as `PromptAdherence` reads it, on consecutive windows `[i*window, (i+1)*window)` (a video
    needs at least two; frames after the last whole window are ignored): the argmax of a single-label head, the set
    of classes with logit > 0 of a head in `set_labels` (default: the classifier's `config.set_labels`). A video
    persists on a head when every window's read equals the first's. `label_names` (default: the classifier's) picks
    the heads; `compute()` gives `value` (every picked head persists), `num_videos` and `persistence/<label_name>`.
    Use a window the classifier was trained on (its clip length), so each read is in its own distribution.
    """

    higher_is_better = True
    inputs = GENERATED_ONLY

    def __init__(self, classifier: nn.Module, window: int, label_names: Sequence[str] | None = None,
                 set_labels: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.classifier = classifier.eval().requires_grad_(False)
        self.window = window
        names = label_names if label_names is not None else getattr(classifier, "label_names", None)
        if not names:
            raise ValueError("the classifier has no `label_names`; pass label_names= to LabelPersistence")
        self.label_names = tuple(names)
        config = getattr(classifier, "config", None)
        self.set_labels = frozenset(set_labels if set_labels is not None else getattr(config, "set_labels", ()))
        self.add_state("num_persisted", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("num_videos", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("head_persisted", torch.zeros(len(self.label_names), dtype=torch.long), dist_reduce_fx="sum")

    def _reads(self, videos: Tensor) -> dict[str, Tensor]:
        """Per head, the label read of each video `[B, K]` (a set as multi-hot, a class as a one-hot)."""
        with torch.no_grad():
            logits = self.classifier(videos)
        return {name: logits[name] > 0 if name in self.set_labels else
                nn.functional.one_hot(logits[name].argmax(dim=-1), logits[name].shape[-1]).bool()
                for name in self.label_names}

    def update(self, videos: Tensor) -> None:
        """Add generated videos `[B, T, C, H, W]` with T >= 2 * window."""
        videos = self.check_videos(videos, "fake")
        windows = videos.shape[1] // self.window
        if windows < 2:
            raise ValueError(f"LabelPersistence compares windows of {self.window} frames: a video needs at least "
                             f"{2 * self.window} frames, got {videos.shape[1]}")
        first = self._reads(videos[:, : self.window])
        persisted = {name: torch.ones(videos.shape[0], dtype=torch.bool, device=videos.device)
                     for name in self.label_names}
        for index in range(1, windows):
            later = self._reads(videos[:, index * self.window : (index + 1) * self.window])
            for name in self.label_names:
                persisted[name] &= (later[name] == first[name]).all(dim=-1)
        every = torch.stack(list(persisted.values())).all(dim=0)
        for head, name in enumerate(self.label_names):
            self.head_persisted[head] += int(persisted[name].sum())
        self.num_persisted += int(every.sum())
        self.num_videos += videos.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if int(self.num_videos) == 0:
            raise ValueError("LabelPersistence has no videos; call update() first")
        result = {"value": self.num_persisted.double() / self.num_videos, "num_videos": self.num_videos.clone()}
        for head, name in enumerate(self.label_names):
            result[f"persistence/{name}"] = self.head_persisted[head].double() / self.num_videos
        return result
