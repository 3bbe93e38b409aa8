"""Generation for a protocol: fixed seeds, protocol conditioning, samples written as a sample folder.

In a process group each rank generates every world_size-th batch; a batch's seed and conditioning depend only on its
index, so the folder holds exactly the videos one process would write, and rank 0 writes the manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    """Generate `protocol.num_videos(rollout)` videos of `rollout * frames` frames into a sample folder.

    Video i is conditioned on real clip `i % num_real`; `on_batch(n)` reports this rank's progress. Returns the
    manifest (on every rank), whose `sampling_seconds` times the generate calls alone, summed over ranks.
    """
    rank, world_size = rank_and_world_size()
    kind = conditioned_on(model, protocol)
    num_frames = protocol.num_frames(rollout)
    writer = SampleWriter(folder)
    num_videos = protocol.num_videos(rollout)
    indices_all = protocol.reference_indices(rollout)
    prompts: list[str | None] = [reference.texts[i] if kind == "text" else None for i in indices_all]
    seconds = 0.0
    for batch_index, start in enumerate(range(0, num_videos, protocol.batch_size)):
        if batch_index % world_size != rank:
            continue
        indices = indices_all[start:start + protocol.batch_size]
        cond = _conditioning(protocol, kind, reference, indices)
        this_seed = batch_seed(seed, rollout, batch_index)
        generator = torch.Generator(device=model.device).manual_seed(this_seed)
        _synchronize(model.device)
        started = time.perf_counter()
        videos = model.generate(len(indices), num_frames, cond=cond, generator=generator)
        _synchronize(model.device)
        seconds += time.perf_counter() - started
        writer.add(videos, seed=this_seed, index=batch_index)
        if on_batch is not None:
            on_batch(len(indices))
    writer.files = sorted(gather_lists(writer.files), key=lambda entry: entry["file"])
    manifest = SampleManifest(
        protocol=protocol.name, protocol_hash=protocol.hash, generator=generator_name,
        generator_version=generator_version, seed=seed, rollout=rollout, num_frames=num_frames,
        context_frames=protocol.context_frames, conditioned_on=kind, fps=protocol.fps, prompts=prompts,
        reference_index=indices_all, files=writer.files, sampling_seconds=sum(gather_lists([seconds])),
        batch_size=protocol.batch_size, num_parameters=model.num_parameters, hardware=hardware(model.device),
    )
    if rank == 0:
        writer.close(manifest)
    barrier()  # no rank reads the folder before its manifest exists
    return manifest
