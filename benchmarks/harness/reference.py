"""The real reference set of a protocol: clips, captions and labels, hashed and cached once per protocol.

The set is the first `num_real` clips of the protocol's dataset split, as long as the longest rollout (with the
captions and labels of their 1x clips), quantised to uint8 like any video file and stored as shards in the cache (50,000 Kinetics clips do not fit in memory, so
clips are streamed, never all loaded). Its sha256 (video bytes, captions, labels) pins the data: a different local
copy of UCF-101 gives a different hash, and the leaderboard never puts the two in one table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.files import atomic_write_bytes, atomic_write_json
from benchmarks.harness.protocol import Protocol
from benchmarks.harness.samples import to_uint8
from zoo.config import ConfigError


def cache_root() -> Path:
    """`$ZOO_CACHE`, else `~/.cache/hybrid-video-zoo`: reference sets and real-feature statistics live here."""
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "hybrid-video-zoo"))


@dataclass
class ReferenceSet:
    """Real clips `[N, T, C, H, W]` uint8 in shards of `shard_size`, with captions, main labels and label dicts."""

    cache_dir: Path
    num_videos: int
    shard_size: int
    texts: list[str]
    label: Tensor
    labels: dict[str, Tensor]
    sha256: str

    def __len__(self) -> int:
        return self.num_videos

    def _shard(self, index: int) -> Tensor:
        with np.load(self.cache_dir / f"clips_{index:05d}.npz") as stored:
            return torch.from_numpy(stored["videos"])

    def batches(self) -> Iterator[Tensor]:
        """The clips in order, one uint8 shard at a time."""
        for index in range(-(-self.num_videos // self.shard_size)):
            yield self._shard(index)

    def clips(self, indices: Sequence[int]) -> Tensor:
        """The clips at `indices` (uint8), reading only the shards they live in."""
        by_shard: dict[int, Tensor] = {}
        rows = []
        for i in indices:
            shard = int(i) // self.shard_size
            if shard not in by_shard:
                by_shard[shard] = self._shard(shard)
            rows.append(by_shard[shard][int(i) % self.shard_size])
        return torch.stack(rows)


def dataset_overrides(protocol: Protocol, data_root: str | None = None) -> dict[str, Any]:
    """The dataset config the protocol implies: its own `dataset.overrides` plus the shapes it pins.

    Resolution, clip length, channels, stride, clip and resize policy are passed wherever the dataset has the key.
    """
    from zoo.data import dataset_config

    base: dict[str, Any] = dict(protocol.dataset.overrides)
    if data_root is not None:
        base["root"] = str(data_root)
    try:
        config = dataset_config(protocol.dataset.name, base)
    except ConfigError as exc:
        if data_root is None and "root" in str(exc):
            raise ConfigError(
                f"protocol '{protocol.name}' reads real videos from a folder: pass data_root=/path/to/videos"
            ) from exc
        raise
    fields = {f.name for f in dataclasses.fields(config)}
    pinned = {"image_size": protocol.resolution, "num_frames": protocol.reference_frames, "channels": protocol.channels,
              "stride": protocol.stride, "start": protocol.clip_policy, "resize": protocol.resize_policy}
    return {**{k: v for k, v in pinned.items() if k in fields}, **base}


def reference_cache_dir(protocol: Protocol, data_root: str | None = None) -> Path:
    """Cache folder keyed by the protocol hash, the fully resolved dataset config (YAML defaults included, so a
    changed dataset default invalidates it) and, for user data, the data folder it was read from."""
    from zoo.data import dataset_config

    config = dataclasses.asdict(dataset_config(protocol.dataset.name, dataset_overrides(protocol, data_root)))
    source = str(Path(data_root).resolve()) if data_root else ""
    pinned = json.dumps([protocol.hash, config, source], sort_keys=True, default=str)
    return cache_root() / "reference" / f"{protocol.name}-{hashlib.sha256(pinned.encode()).hexdigest()[:16]}"


def _build(protocol: Protocol, data_root: str | None, cache_dir: Path) -> None:
    from torch.utils.data import DataLoader, Subset

    from zoo.data import create_dataset

    dataset = create_dataset(protocol.dataset.name, split=protocol.dataset.split,
                             overrides=dataset_overrides(protocol, data_root))
    shape = (dataset.num_frames, dataset.channels, dataset.image_size)
    if shape != (protocol.reference_frames, protocol.channels, protocol.resolution):
        raise ConfigError(
            f"dataset '{protocol.dataset.name}' yields {shape[0]} frames of {shape[1]}x{shape[2]}x{shape[2]} but "
            f"protocol '{protocol.name}' needs {protocol.reference_frames} frames of "
            f"{protocol.channels}x{protocol.resolution}x{protocol.resolution}; fix the protocol's dataset overrides"
        )
    if len(dataset) < protocol.num_real:
        raise ConfigError(
            f"protocol '{protocol.name}' needs {protocol.num_real} real clips but the '{protocol.dataset.split}' "
            f"split of '{protocol.dataset.name}' has {len(dataset)}"
        )
    # Prompts and labels describe the 1x clip, the length models are prompted for; the videos run to the longest
    # rollout so long-rollout metrics have real clips of the same length.
    prompt_dataset = dataset
    if protocol.reference_frames != protocol.frames:
        overrides = {**dataset_overrides(protocol, data_root), "num_frames": protocol.frames}
        prompt_dataset = create_dataset(protocol.dataset.name, split=protocol.dataset.split, overrides=overrides)
    subset = range(protocol.num_real)
    loaders = [DataLoader(Subset(d, subset), batch_size=protocol.batch_size) for d in (dataset, prompt_dataset)]
    digest = hashlib.sha256()
    texts: list[str] = []
    labels: dict[str, list[np.ndarray]] = {}
    for index, (batch, prompts) in enumerate(zip(*loaders, strict=True)):
        videos = to_uint8(batch["video"]).numpy()
        digest.update(videos.tobytes())
        buffer = io.BytesIO()
        np.savez_compressed(buffer, videos=videos)
        atomic_write_bytes(cache_dir / f"clips_{index:05d}.npz", buffer.getvalue())
        texts.extend(str(t) for t in prompts["text"])
        for key, value in {"label": prompts["label"], **prompts.get("labels", {})}.items():
            labels.setdefault(key, []).append(torch.as_tensor(value).numpy())
    stacked = {key: np.concatenate(parts) for key, parts in labels.items()}
    digest.update(json.dumps(texts).encode())
    for key in sorted(stacked):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(stacked[key]).tobytes())
    buffer = io.BytesIO()
    np.savez(buffer, **stacked)
    atomic_write_bytes(cache_dir / "labels.npz", buffer.getvalue())
    # Written last: a folder without it is an unfinished build and is rebuilt.
    atomic_write_json(cache_dir / "reference.json", {"sha256": digest.hexdigest(), "num_videos": protocol.num_real,
                                                     "shard_size": protocol.batch_size, "texts": texts})


def load_reference(protocol: Protocol, data_root: str | None = None) -> ReferenceSet:
    """The protocol's real set, from the cache or built (and cached) on first use; checks the pinned hash."""
    cache_dir = reference_cache_dir(protocol, data_root)
    if not (cache_dir / "reference.json").is_file():
        _build(protocol, data_root, cache_dir)
    meta = json.loads((cache_dir / "reference.json").read_text())
    with np.load(cache_dir / "labels.npz", allow_pickle=False) as stored:
        labels = {key: torch.from_numpy(stored[key]) for key in stored.files}
    label = labels.pop("label")
    pinned = protocol.dataset.reference_sha256
    if pinned is not None and pinned != meta["sha256"]:
        raise ConfigError(
            f"the real set of protocol '{protocol.name}' hashes to {meta['sha256'][:12]}… but the protocol pins "
            f"{pinned[:12]}…; the data or the dataset code changed: bump the protocol version and re-pin"
        )
    return ReferenceSet(cache_dir, meta["num_videos"], meta["shard_size"], meta["texts"], label, labels,
                        meta["sha256"])


def split_size_key(protocol: Protocol) -> str:
    """The dataset config key that sets the length of the protocol's split (`test_size`)."""
    return f"{protocol.dataset.split}_size"


def lengthened(protocol: Protocol, clips: int, data_root: str | None = None,
               remedy: str = "lower the protocol's sample counts") -> Protocol:
    """The protocol with its split holding at least `clips` clips (itself if it already does).

    Only procedural datasets can be lengthened (their config has `<split>_size`, and a longer split keeps its earlier
    clips); for any other a split that is too short is a one-line error that ends in `remedy`.
    """
    from zoo.data import create_dataset, dataset_config

    overrides = dataset_overrides(protocol, data_root)
    key = split_size_key(protocol)
    fields = {f.name for f in dataclasses.fields(dataset_config(protocol.dataset.name, overrides))}
    if key in fields:
        current = getattr(dataset_config(protocol.dataset.name, overrides), key)
        if current >= clips:
            return protocol
        dataset = dataclasses.replace(protocol.dataset, overrides={**protocol.dataset.overrides, key: clips})
        return dataclasses.replace(protocol, dataset=dataset)
    available = len(create_dataset(protocol.dataset.name, split=protocol.dataset.split, overrides=overrides))
    if available < clips:
        raise ConfigError(
            f"the '{protocol.dataset.split}' split of '{protocol.dataset.name}' has {available} clips but {clips} are "
            f"needed; {remedy}"
        )
    return protocol


def heldout_clips(protocol: Protocol, indices: Sequence[int], data_root: str | None = None,
                  with_texts: bool = False) -> tuple[Tensor, list[str]]:
    """Clips `indices` of the protocol's split as uint8 `[N, reference_frames, C, H, W]` (quantised like every
    video file and the reference set), and with `with_texts` their 1x captions (what a model is prompted with)."""
    from torch.utils.data import DataLoader, Subset

    from zoo.data import create_dataset

    protocol = lengthened(protocol, max(indices, default=-1) + 1, data_root)  # held-out clips lie past the reference
    overrides = dataset_overrides(protocol, data_root)
    dataset = create_dataset(protocol.dataset.name, split=protocol.dataset.split, overrides=overrides)
    if max(indices, default=-1) >= len(dataset):
        raise ConfigError(f"clip {max(indices)} is beyond the {len(dataset)} clips of the "
                          f"'{protocol.dataset.split}' split of '{protocol.dataset.name}'")
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=protocol.batch_size)
    videos = torch.cat([to_uint8(batch["video"]) for batch in loader])
    texts: list[str] = []
    if with_texts:
        prompt_data = create_dataset(protocol.dataset.name, split=protocol.dataset.split,
                                     overrides={**overrides, "num_frames": protocol.frames})
        for batch in DataLoader(Subset(prompt_data, list(indices)), batch_size=protocol.batch_size):
            texts.extend(str(t) for t in batch["text"])
    return videos, texts


def heldout_labels(protocol: Protocol, indices: Sequence[int], data_root: str | None = None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """The main label `[N]` and label dict of clips `indices` of the protocol's split, for their 1x clips (what
    their captions describe), collated as the reference set stores its own."""
    from torch.utils.data import DataLoader, Subset

    from zoo.data import create_dataset

    protocol = lengthened(protocol, max(indices, default=-1) + 1, data_root)  # as the real row's folder was written
    overrides = {**dataset_overrides(protocol, data_root), "num_frames": protocol.frames}
    dataset = create_dataset(protocol.dataset.name, split=protocol.dataset.split, overrides=overrides)
    parts: dict[str, list[Tensor]] = {}
    for batch in DataLoader(Subset(dataset, list(indices)), batch_size=protocol.batch_size):
        for key, value in {"label": batch["label"], **batch.get("labels", {})}.items():
            parts.setdefault(key, []).append(torch.as_tensor(value))
    stacked = {key: torch.cat(values) for key, values in parts.items()}
    return stacked.pop("label"), stacked
