"""The real-data row of every table: held-out real clips written as a sample folder and scored like a model.

`zoo protocol real <protocol>` -> `score_real`. The folder holds, per rollout, `num_videos(rollout)` clips of the
protocol's split right after the reference set (clips `num_real ..`, never a reference clip), each cut to the
rollout's length and prompted with its own caption; the manifest's `heldout_index` names them, and `zoo score`
checks that the files are exactly those clips. Scoring is `score_external`'s, so the row is the floor of every
distribution metric at the protocol's own counts and the ceiling of prompt adherence (judged against each clip's
own labels), recorded as a result with source `real`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.external import score_external
from benchmarks.harness.protocol import Protocol
from benchmarks.harness.reference import heldout_clips, load_reference
from benchmarks.harness.samples import SampleManifest, SampleWriter
from zoo.config import ConfigError

REAL_GENERATOR = "real"


def heldout_indices(protocol: Protocol, rollout: int) -> list[int]:
    """The held-out clips of a rollout's real-data folder: the `num_videos(rollout)` clips after the reference set."""
    return list(range(protocol.num_real, protocol.num_real + protocol.num_videos(rollout)))


def write_real_samples(protocol: Protocol, samples_dir: str | Path, data_root: str | None = None) -> list[Path]:
    """Write the held-out clips of every rollout as sample folders `<samples_dir>/rollout<m>x`; returns them."""
    if protocol.condition == "context":
        raise ConfigError(f"protocol '{protocol.name}' conditions on context frames of the reference clips, which a "
                          "held-out clip does not start with; a real row needs a text- or un-conditioned protocol")
    reference = load_reference(protocol, data_root)
    folders = []
    for rollout in protocol.rollouts:
        indices = heldout_indices(protocol, rollout)
        clips, texts = heldout_clips(protocol, indices, data_root, with_texts=protocol.condition == "text")
        clips = clips[:, : protocol.num_frames(rollout)]
        folder = Path(samples_dir) / f"rollout{rollout}x"
        writer = SampleWriter(folder)
        for index, start in enumerate(range(0, len(clips), protocol.batch_size)):
            writer.add(clips[start:start + protocol.batch_size], index=index)
        writer.close(SampleManifest(
            protocol=protocol.name, protocol_hash=protocol.hash, generator=REAL_GENERATOR,
            generator_version=f"heldout-{protocol.dataset.split}-{reference.sha256[:12]}", seed=0, rollout=rollout,
            num_frames=protocol.num_frames(rollout), context_frames=protocol.context_frames,
            conditioned_on=protocol.condition, fps=protocol.fps,
            prompts=list(texts) if protocol.condition == "text" else [None] * len(indices),
            reference_index=protocol.reference_indices(rollout), heldout_index=indices,
            batch_size=protocol.batch_size))
        folders.append(folder)
    return folders


def score_real(
    protocol: Protocol, out_dir: str | Path = "leaderboard/results", samples_dir: str | Path | None = None,
    data_root: str | None = None, device: str | torch.device = "cpu",
) -> tuple[Path | None, dict[str, Any]]:
    """Write the real-data folders (default `runs/real-<protocol>/samples`) and score them as `zoo score` does;
    returns the result path and the result (`real.heldout`, source `real`)."""
    samples_dir = Path(samples_dir or Path("runs") / f"real-{protocol.name}" / "samples")
    write_real_samples(protocol, samples_dir, data_root)
    return score_external(samples_dir, protocol, out_dir, None, data_root, device)
