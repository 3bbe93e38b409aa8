"""Domain feature networks for the embedded datasets (`moving_digits`, `bouncing_shapes`).

No downloadable network knows these toy domains, so, as the field does with LeNet features for MNIST FID, we train
our own small video classifier on each dataset's labels (`zoo train domain_net --data <dataset>`: the recipe
`benchmarks/recipes/domain_net_<dataset>.yaml` run by `benchmarks/features/train_domain_net.py`) and commit its weights as safetensors beside a JSON record of its
config, sha256 and held-out accuracy (`benchmarks/features/weights/domain_<dataset>.{safetensors,json}`).

One network gives three things:
- frame features (`FID-domain`): each frame through a small 2D CNN; its 8x8-pooled map (where things are) and
  a global max of a deeper map (what is there) projected to 128-d;
- video features (`FVD-domain`): temporal convolutions over the frame features; the first step, the mean and the
  max over time concatenated (384-d), so where a clip starts, how it moves and what it shows all count;
- class predictions (prompt adherence): one head per label, named as the dataset's `labels` entries so that
  `PromptAdherence(classifier).update(videos, {name: batch["labels"][name] ...})` works directly. Set-valued labels
  (padded with -1, e.g. the digits of a two-digit clip) are multi-label heads; the others single-label heads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.features.weight_cache import DOMAIN_WEIGHTS_DIR, WeightFile, fetch, register_weight_file

# label name -> number of classes; and which of those labels are sets (multi-label heads).
DOMAIN_HEADS: dict[str, dict[str, int]] = {
    "moving_digits": {"digits": 10, "num_digits": 3, "direction": 8},
    "bouncing_shapes": {"shape": 3, "colour": 6, "motion": 3, "direction": 8},
}
DOMAIN_SET_LABELS: dict[str, tuple[str, ...]] = {
    "moving_digits": ("digits", "direction"),
    "bouncing_shapes": ("shape", "colour"),
}
# The labels that say what the objects are, not how they move: a video keeps them from start to end (a digit that
# bounces changes direction, never digit), which `LabelPersistence` checks.
DOMAIN_IDENTITY_LABELS: dict[str, tuple[str, ...]] = {
    "moving_digits": ("digits", "num_digits"),
    "bouncing_shapes": ("shape", "colour"),
}
DOMAIN_CHANNELS = {"moving_digits": 1, "bouncing_shapes": 3}


@dataclass
class DomainNetConfig:
    """Architecture of a domain network: input channels, heads {label: classes}, which heads are sets, widths.

    frame_differences: the frame encoder also sees each frame's difference from the previous one (zero for the
    first frame and for lone frames), so motion is seen where it happens. content_layers: depth of the "what" branch.
    """

    in_channels: int
    heads: dict[str, int]
    set_labels: list[str] = field(default_factory=list)
    width: int = 32
    frame_dim: int = 128
    video_dim: int = 128
    frame_differences: bool = False
    content_layers: int = 1

    @classmethod
    def for_dataset(cls, dataset: str) -> DomainNetConfig:
        if dataset not in DOMAIN_HEADS:
            raise ValueError(f"no domain network for dataset '{dataset}'; known: {', '.join(sorted(DOMAIN_HEADS))}")
        return cls(DOMAIN_CHANNELS[dataset], dict(DOMAIN_HEADS[dataset]), list(DOMAIN_SET_LABELS[dataset]))


class DomainVideoNet(nn.Module):
    """Small video classifier: per-frame 2D CNN -> temporal 1D convolutions -> one linear head per label.

    Input `[B, T, C, H, W]` in [0, 1] (any T >= 1, H and W >= 8); output `{label: logits [B, classes]}`.
    """

    def __init__(self, config: DomainNetConfig) -> None:
        super().__init__()
        self.config = config
        self.label_names = tuple(config.heads)
        width = config.width
        # GroupNorm (not BatchNorm): a video's features must not depend on the other videos in its batch.
        stem_channels = config.in_channels * (2 if config.frame_differences else 1)
        self.stem = nn.Sequential(
            nn.Conv2d(stem_channels, width // 2, 4, stride=2, padding=1),
            nn.GroupNorm(8, width // 2),
            nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.GroupNorm(8, width),
            nn.GELU(),
        )
        # The first content layer halves the map; the others (stride 1) widen what one feature sees of a digit.
        self.content = nn.Sequential(
            *(
                module
                for layer in range(config.content_layers)
                for module in (
                    nn.Conv2d(width if layer == 0 else 2 * width, 2 * width, 3, stride=1 if layer else 2, padding=1),
                    nn.GroupNorm(8, 2 * width),
                    nn.GELU(),
                )
            )
        )
        # Where things are (the stem's map pooled to 8x8, which motion needs) and what is anywhere (a global max of
        # the deeper map, which identity needs), projected together.
        self.frame_projection = nn.Linear(width * 64 + 2 * width, config.frame_dim)
        self.temporal = nn.Sequential(
            nn.Conv1d(config.frame_dim, config.video_dim, 3, padding=1),
            nn.GroupNorm(8, config.video_dim),
            nn.GELU(),
            nn.Conv1d(config.video_dim, config.video_dim, 3, padding=1),
            nn.GroupNorm(8, config.video_dim),
            nn.GELU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(3 * config.video_dim, n) for name, n in config.heads.items()})

    def _check(self, x: Tensor, dims: int) -> None:
        if x.ndim != dims or x.shape[-3] != self.config.in_channels:
            layout = "[B, T, C, H, W]" if dims == 5 else "[N, C, H, W]"
            raise ValueError(
                f"this domain network takes {layout} with C={self.config.in_channels}, got {tuple(x.shape)}"
            )

    def frame_features(self, frames: Tensor) -> Tensor:
        """Frames `[N, C, H, W]` in [0, 1] -> `[N, frame_dim]` (as the first frame of a clip, if the network
        takes frame differences)."""
        self._check(frames, 4)
        return self._encode_frames(frames, torch.zeros_like(frames))

    def _encode_frames(self, frames: Tensor, differences: Tensor) -> Tensor:
        inputs = torch.cat([frames * 2 - 1, differences], dim=1) if self.config.frame_differences else frames * 2 - 1
        maps = self.stem(inputs)
        where = F.adaptive_avg_pool2d(maps, 8).flatten(1)
        what = self.content(maps).amax(dim=(2, 3))
        return self.frame_projection(torch.cat([where, what], dim=1))

    def video_features(self, videos: Tensor) -> Tensor:
        """Videos `[B, T, C, H, W]` in [0, 1] -> `[B, 3 * video_dim]`: the first step (how the clip starts), and the
        mean and max over time (a digit seen clearly in any frame, e.g. once two digits stop overlapping)."""
        self._check(videos, 5)
        batch, frames = videos.shape[:2]
        differences = torch.cat([torch.zeros_like(videos[:, :1]), videos.diff(dim=1)], dim=1)
        per_frame = self._encode_frames(videos.flatten(0, 1), differences.flatten(0, 1)).view(batch, frames, -1)
        hidden = self.temporal(per_frame.transpose(1, 2))  # [B, video_dim, T]
        return torch.cat([hidden[:, :, 0], hidden.mean(dim=2), hidden.amax(dim=2)], dim=1)

    def forward(self, videos: Tensor) -> dict[str, Tensor]:
        features = self.video_features(videos)
        return {name: head(features) for name, head in self.heads.items()}


def multi_hot(indices: Tensor, num_classes: int) -> Tensor:
    """Sets of class indices `[B, M]` padded with -1 -> multi-hot `[B, num_classes]` floats."""
    valid = indices >= 0
    hot = torch.zeros(indices.shape[0], num_classes + 1, device=indices.device)
    hot.scatter_(1, torch.where(valid, indices, num_classes), 1.0)
    return hot[:, :num_classes]


def head_targets(config: DomainNetConfig, labels: dict[str, Tensor]) -> dict[str, Tensor]:
    """Training/evaluation targets from a batch's dataset labels: multi-hot for set labels, class index otherwise."""
    return {
        name: multi_hot(labels[name], classes) if name in config.set_labels else labels[name].long()
        for name, classes in config.heads.items()
    }


def head_losses(config: DomainNetConfig, logits: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cross-entropy for single-label heads; for set heads binary cross-entropy summed over classes (a mean would
    make each rare positive class weigh 1/K and let the head settle on predicting nothing)."""
    return {
        name: F.binary_cross_entropy_with_logits(logits[name], targets[name], reduction="sum") / len(targets[name])
        if name in config.set_labels
        else F.cross_entropy(logits[name], targets[name])
        for name in config.heads
    }


def head_correct(config: DomainNetConfig, logits: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per video and head: is the prediction right (the exact set for set heads)? `{name: bool [B]}`."""
    return {
        name: ((logits[name] > 0) == targets[name].bool()).all(dim=1)
        if name in config.set_labels
        else logits[name].argmax(dim=1) == targets[name]
        for name in config.heads
    }


def weights_paths(dataset: str, folder: Path | None = None) -> tuple[Path, Path]:
    """The committed `(safetensors, json record)` of dataset's domain network (in `DOMAIN_WEIGHTS_DIR` by default)."""
    folder = DOMAIN_WEIGHTS_DIR if folder is None else folder
    return folder / f"domain_{dataset}.safetensors", folder / f"domain_{dataset}.json"


def domain_weights_sha256(dataset: str, folder: Path | None = None) -> str | None:
    """The sha256 recorded beside dataset's domain network (the one its loading verifies), read without hashing the
    weights; None when the network has not been trained."""
    record_path = weights_paths(dataset, folder)[1]
    if not record_path.is_file():
        return None
    return json.loads(record_path.read_text())["sha256"]


def save_domain_net(network: DomainVideoNet, dataset: str, record: dict, folder: Path | None = None) -> dict:
    """Write the weights (safetensors) and a JSON record with config, sha256 and whatever `record` adds."""
    from safetensors.torch import save_file

    from benchmarks.features.weight_cache import sha256_of

    weights, record_path = weights_paths(dataset, folder)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}, str(weights))
    full_record = {"dataset": dataset, "config": asdict(network.config), "sha256": sha256_of(weights), **record}
    record_path.write_text(json.dumps(full_record, indent=2) + "\n")
    return full_record


def domain_weight_file(dataset: str, folder: Path | None = None) -> WeightFile:
    """The committed weights of dataset's domain network as a checksummed, registered weight file."""
    weights, record_path = weights_paths(dataset, folder)
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{record_path} is missing; train the network with `zoo train domain_net --data {dataset}` "
            f"(recipe benchmarks/recipes/domain_net_{dataset}.yaml)"
        )
    record = json.loads(record_path.read_text())
    return register_weight_file(
        WeightFile(
            name=f"domain_{dataset}",
            filename=weights.name,
            urls=(),
            sha256=record["sha256"],
            bundled=weights,
            description=f"domain feature network for {dataset} (held-out accuracy {record.get('accuracy')})",
        )
    )


def load_domain_net(dataset: str, folder: Path | None = None) -> DomainVideoNet:
    """The trained domain network of `dataset`, checksum-verified, in eval mode."""
    from safetensors.torch import load_file

    weight_file = domain_weight_file(dataset, folder)
    record = json.loads(weights_paths(dataset, folder)[1].read_text())
    network = DomainVideoNet(DomainNetConfig(**record["config"]))
    network.load_state_dict(load_file(str(fetch(weight_file.name))), strict=True)
    return network.eval().requires_grad_(False)


class DomainVideoFeatures(nn.Module):
    """FVD-domain extractor: videos `[B, T, C, H, W]` in [0, 1] -> `[B, d]`."""

    def __init__(self, network: DomainVideoNet) -> None:
        super().__init__()
        self.network = network
        self.num_features = 3 * network.config.video_dim

    def forward(self, videos: Tensor) -> Tensor:
        return self.network.video_features(videos)


class DomainFrameFeatures(nn.Module):
    """FID-domain extractor: frames `[N, C, H, W]` in [0, 1] -> `[N, d]`."""

    def __init__(self, network: DomainVideoNet) -> None:
        super().__init__()
        self.network = network
        self.num_features = network.config.frame_dim

    def forward(self, frames: Tensor) -> Tensor:
        return self.network.frame_features(frames)
