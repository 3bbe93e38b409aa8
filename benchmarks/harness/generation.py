"""Generation for a protocol: fixed seeds, protocol conditioning, samples written as a sample folder.

In a process group each rank generates every world_size-th batch; a batch's seed and conditioning depend only on its
index, so the folder holds exactly the videos one process would write, and rank 0 writes the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from benchmarks.harness.distributed import barrier, gather_lists, rank_and_world_size
from benchmarks.harness.protocol import Protocol
from benchmarks.harness.provenance import hardware
from benchmarks.harness.reference import ReferenceSet
from benchmarks.harness.samples import SampleManifest, SampleWriter, to_float
from zoo.interface import Conditioning, VideoGenerator


def conditioned_on(model: VideoGenerator, protocol: Protocol) -> str:
    """What the model is conditioned on under this protocol: the protocol's condition if it supports it, else none.

    A text protocol scores an unconditional model too (its prompt adherence is missing); a context protocol does
    not (see `unsupported_reason`).
    """
    return protocol.condition if protocol.condition in model.supported_conditions else "none"


def unsupported_reason(model: VideoGenerator, protocol: Protocol, rollout: int) -> str | None:
    """Why the model cannot produce this protocol's rollout, or None if it can."""
    if protocol.condition == "context" and "context" not in model.supported_conditions:
        return f"{model.model_name} cannot be conditioned on context frames, which this prediction protocol requires"
    frames = protocol.num_frames(rollout)
    if not model.can_extend and frames > model.clip_length:
        return f"{model.model_name} cannot extend beyond its training length ({model.clip_length} < {frames} frames)"
    return None


def batch_seed(seed: int, rollout: int, batch_index: int) -> int:
    """The seed of one generation batch: fixed by (seed, rollout, batch), so any batch can be regenerated alone."""
    return (seed * 1_000_003 + rollout * 10_007 + batch_index) % (2**63 - 1)


def _conditioning(protocol: Protocol, kind: str, reference: ReferenceSet, indices: list[int]) -> Conditioning:
    if kind == "text":
        return Conditioning(text=[reference.texts[i] for i in indices])
    if kind == "context":
        return Conditioning(context=to_float(reference.clips(indices)[:, : protocol.context_frames]))
    return Conditioning()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate_samples(
    model: VideoGenerator,
    protocol: Protocol,
    reference: ReferenceSet,
    folder: str | Path,
    seed: int,
    rollout: int,
    generator_name: str,
    generator_version: str,
    on_batch: Callable[[int], None] | None = None,
) -> SampleManifest:
    """Generate `protocol.num_videos(rollout)` videos of `rollout * frames` frames into a sample folder
    (`generate_rollouts` for one rollout)."""
    return generate_rollouts(model, protocol, reference, {rollout: folder}, seed, generator_name, generator_version,
                             on_batch)[rollout]


def batch_groups(protocol: Protocol, batch_index: int, share_prefixes: bool) -> list[tuple[list[int], list[int]]]:
    """`(rollouts, clips)` per generation call that makes batch `batch_index` (the real clips its videos are
    conditioned on): one call per rollout, or, sharing prefixes, one per set of rollouts whose batch holds the same
    clips (ascending: the longest is generated, the others are its first frames, the shortest gives the seed)."""
    groups: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}
    start = batch_index * protocol.batch_size
    for rollout in sorted(protocol.rollouts):
        clips = protocol.reference_indices(rollout)[start:start + protocol.batch_size]
        if clips:
            groups.setdefault(tuple(clips) if share_prefixes else (rollout,), ([], clips))[0].append(rollout)
    return list(groups.values())


def config_sha256(model: VideoGenerator) -> str:
    """sha256 of the config `model` samples under: with the checkpoint's, what decides a sample folder's videos."""
    return hashlib.sha256(json.dumps(dataclasses.asdict(model.config), sort_keys=True, default=str).encode()).hexdigest()


def generate_rollouts(
    model: VideoGenerator,
    protocol: Protocol,
    reference: ReferenceSet,
    folders: Mapping[int, str | Path],
    seed: int,
    generator_name: str,
    generator_version: str,
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, SampleManifest]:
    """Generate the protocol's videos of each rollout in `folders` (`{rollout: sample folder}`).

    Video i of a rollout is conditioned on real clip `i % num_real`. Under `protocol.share_rollout_prefixes` a
    prefix-consistent model makes a batch once, at the longest rollout that holds it (`batch_groups`), and writes
    its first frames as the shorter rollouts' batch (`prefix_of_rollout` in their manifests; bit for bit what
    generating them would give, as the batch's seed is the shortest rollout's): 512 videos at 1x and 256 at 2x
    then cost 256 at 2x and 256 at 1x. `on_batch(n)` reports this rank's progress in videos. Each manifest's
    `sampling_seconds` times the generate calls made at its own length, summed over ranks.
    """
    rank, world_size = rank_and_world_size()
    kind = conditioned_on(model, protocol)
    share_prefixes = protocol.share_rollout_prefixes and model.prefix_consistent
    writers = {rollout: SampleWriter(folder) for rollout, folder in folders.items()}
    seconds = dict.fromkeys(folders, 0.0)
    for batch_index in range(max(-(-protocol.num_videos(r) // protocol.batch_size) for r in folders)):
        if batch_index % world_size != rank:
            continue
        for group, indices in batch_groups(protocol, batch_index, share_prefixes):
            wanted = [rollout for rollout in group if rollout in folders]
            if not wanted:
                continue
            rollout = wanted[-1]
            this_seed = batch_seed(seed, group[0], batch_index)
            generator = torch.Generator(device=model.device).manual_seed(this_seed)
            _synchronize(model.device)
            started = time.perf_counter()
            videos = model.generate(len(indices), protocol.num_frames(rollout),
                                    cond=_conditioning(protocol, kind, reference, indices), generator=generator)
            _synchronize(model.device)
            seconds[rollout] += time.perf_counter() - started
            writers[rollout].add(videos, seed=this_seed, index=batch_index)
            for shorter in wanted[:-1]:
                writers[shorter].add(videos[:, : protocol.num_frames(shorter)], seed=this_seed, index=batch_index,
                                     prefix_of_rollout=rollout)
            if on_batch is not None:
                on_batch(len(indices) * len(wanted))
    manifests = {}
    for rollout, writer in writers.items():
        indices_all = protocol.reference_indices(rollout)
        writer.files = sorted(gather_lists(writer.files), key=lambda entry: entry["file"])
        manifests[rollout] = SampleManifest(
            protocol=protocol.name, protocol_hash=protocol.hash, generator=generator_name,
            generator_version=generator_version, seed=seed, rollout=rollout, num_frames=protocol.num_frames(rollout),
            context_frames=protocol.context_frames, conditioned_on=kind, fps=protocol.fps,
            prompts=[reference.texts[i] if kind == "text" else None for i in indices_all],
            reference_index=indices_all, files=writer.files, sampling_seconds=sum(gather_lists([seconds[rollout]])),
            batch_size=protocol.batch_size, num_parameters=model.num_parameters, hardware=hardware(model.device),
            generator_config_sha256=config_sha256(model),
        )
        if rank == 0:
            writer.close(manifests[rollout])
    barrier()  # no rank reads a folder before its manifest exists
    return manifests
