"""`zoo score <samples_dir> --protocol <name>`: score videos made anywhere, on the path `zoo bench` scores on.

A sample folder (videos + `manifest.json`, see `samples.py`) is first checked against the protocol, and refused
with every problem listed at once (a researcher fixing a folder should not rerun once per mistake). Then
`score_samples` scores it, exactly as `zoo bench` scores its own folders, and the result file records provenance
`external` and the sha256 of each manifest it scored.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.distributed import gather_lists, rank_and_world_size, rank_zero_first
from benchmarks.harness.protocol import Protocol
from benchmarks.harness.provenance import provenance
from benchmarks.harness.reference import ReferenceSet, heldout_clips, load_reference
from benchmarks.harness.samples import (
    MANIFEST,
    SampleManifest,
    SamplesError,
    manifest_problems,
    read_manifest,
    read_sample_file,
    write_strip,
)
from benchmarks.harness.scoring import sample_folders, score_samples
from benchmarks.record import ResultRecord


class SamplesRejected(SamplesError):
    """A sample folder that does not fit its protocol; the message lists every problem, one per line."""

    def __init__(self, samples_dir: str | Path, protocol: Protocol, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{samples_dir} cannot be scored on protocol '{protocol.name}' "
                         f"({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{listing}")


def _few(indices: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"{shown}, …" if len(indices) > limit else shown


def _manifest_problems(folder: Path) -> list[str]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"{path} is not valid JSON: {str(exc).splitlines()[0]}"]
    return [f"{path}: {problem}" for problem in manifest_problems(data)]


def _conditioning_problems(where: str, manifest: SampleManifest, protocol: Protocol, reference: ReferenceSet,
                           expected_videos: int) -> list[str]:
    problems = []
    allowed = {protocol.condition} if protocol.condition == "context" else {"none", protocol.condition}
    if manifest.conditioned_on not in allowed:
        problems.append(f"{where}: conditioned on '{manifest.conditioned_on}'; protocol '{protocol.name}' "
                        f"allows {sorted(allowed)}")
    if manifest.context_frames != protocol.context_frames:
        problems.append(f"{where}: {manifest.context_frames} context frames; the protocol gives "
                        f"{protocol.context_frames}")
    outside = sorted({i for i in manifest.reference_index if i >= protocol.num_real})
    if outside:
        problems.append(f"{where}: reference_index {_few(outside)} outside the protocol's {protocol.num_real} "
                        "real clips")
    elif manifest.num_videos == expected_videos and (
            Counter(manifest.reference_index) != Counter(protocol.reference_indices(manifest.rollout))):
        problems.append(f"{where}: reference_index does not cover the protocol's real clips (video i is "
                        f"conditioned on clip i % {protocol.num_real}; `zoo reference build --prompts` lists them)")
    if manifest.conditioned_on == "text":
        missing = [i for i, prompt in enumerate(manifest.prompts) if not prompt]
        if missing:
            problems.append(f"{where}: {len(missing)} video(s) have no prompt (videos {_few(missing)})")
        if manifest.heldout_index is not None:  # real clips prompted with their own captions: _heldout_problems
            return problems
        wrong = [i for i, (prompt, index) in enumerate(zip(manifest.prompts, manifest.reference_index, strict=True))
                 if prompt and index < len(reference.texts) and prompt != reference.texts[index]]
        if wrong:
            problems.append(f"{where}: {len(wrong)} prompt(s) differ from the caption of their reference clip "
                            f"(videos {_few(wrong)})")
    return problems


def _heldout_problems(where: str, folder: Path, manifest: SampleManifest, protocol: Protocol,
                      data_root: str | None) -> list[str]:
    """A real-data folder (`heldout_index`) holds exactly the held-out clips it names, none of them a reference
    clip, each prompted with its own caption: what makes its row `real` and not a model's."""
    indices = manifest.heldout_index
    if len(indices) != manifest.num_videos:
        return [f"{where}: heldout_index has {len(indices)} entries for {manifest.num_videos} videos"]
    inside = sorted({i for i in indices if i < protocol.num_real})
    if inside:
        return [f"{where}: heldout_index {_few(inside)} are reference clips (held-out clips start at "
                f"{protocol.num_real})"]
    clips, texts = heldout_clips(protocol, indices, data_root, with_texts=protocol.condition == "text")
    problems = []
    if manifest.conditioned_on == "text":
        wrong = [i for i, (prompt, text) in enumerate(zip(manifest.prompts, texts, strict=True)) if prompt != text]
        if wrong:
            problems.append(f"{where}: {len(wrong)} prompt(s) differ from their held-out clip's own caption "
                            f"(videos {_few(wrong)})")
    videos = torch.cat([read_sample_file(folder / e["file"], int(e["count"]), protocol.channels)
                        for e in manifest.files])
    if videos.shape[1:] != clips[:, : manifest.num_frames].shape[1:] or not torch.equal(
            videos, clips[:, : manifest.num_frames]):
        problems.append(f"{where}: the videos are not the held-out clips heldout_index names (a real-data folder "
                        "holds the clips themselves; a model's videos go without heldout_index)")
    return problems


def _file_problems(folder: Path, manifest: SampleManifest, protocol: Protocol, frames: int) -> list[str]:
    """Decode this rank's share of the files and check their shapes."""
    rank, world_size = rank_and_world_size()
    problems = []
    size = protocol.resolution
    for index, entry in enumerate(manifest.files):
        if index % world_size != rank:
            continue
        path = folder / entry["file"]
        if not path.exists():
            problems.append(f"{path}: listed in the manifest but missing")
            continue
        try:
            videos = read_sample_file(path, int(entry["count"]), protocol.channels)
        except SamplesError as exc:
            problems.append(str(exc))
            continue
        _, num_frames, channels, height, width = videos.shape
        if num_frames != frames:
            problems.append(f"{path}: {num_frames} frames; a {manifest.rollout}x rollout has {frames}")
        if (height, width) != (size, size):
            problems.append(f"{path}: {height}x{width} pixels; the protocol needs {size}x{size}")
        if channels != protocol.channels:
            problems.append(f"{path}: {channels} channels; the protocol needs {protocol.channels}")
    return problems


def check_samples(samples_dir: str | Path, protocol: Protocol, reference: ReferenceSet,
                  data_root: str | None = None) -> list[str]:
    """Every way a sample folder (or folder of rollout sub-folders) misses the protocol; empty when it fits.

    Checks the manifests (schema, protocol hash, one generator and seed), the rollouts (the primary metric's is
    there), video counts, frame counts, resolution and channels of every file (decoding it: corrupt files are found
    here, not mid-scoring), context frames, and that the prompts and reference clips are the protocol's. Under a
    process group each rank decodes its share of the files and every rank returns the whole list.
    """
    samples_dir = Path(samples_dir)
    try:
        folders = sample_folders(samples_dir)
    except SamplesError as exc:
        return [str(exc)]
    problems: list[str] = []
    manifests: list[SampleManifest] = []
    file_problems: list[str] = []
    for folder in folders:
        found = _manifest_problems(folder)
        if found:
            problems.extend(found)
            continue
        manifest = read_manifest(folder)
        manifests.append(manifest)
        where = str(folder / MANIFEST)
        if manifest.protocol_hash != protocol.hash:
            problems.append(f"{where}: made for protocol '{manifest.protocol}' ({manifest.protocol_hash[:10]}…), "
                            f"not '{protocol.name}' ({protocol.hash[:10]}…); overrides change the hash")
        if manifest.rollout not in protocol.rollouts:
            problems.append(f"{where}: rollout {manifest.rollout}x is not one of the protocol's {protocol.rollouts}")
            continue
        frames, expected = protocol.num_frames(manifest.rollout), protocol.num_videos(manifest.rollout)
        if manifest.num_frames != frames:
            problems.append(f"{where}: num_frames is {manifest.num_frames}; a {manifest.rollout}x rollout has {frames}")
        if manifest.num_videos != expected:
            problems.append(f"{where}: {manifest.num_videos} videos; the protocol scores {expected} at "
                            f"{manifest.rollout}x" + (" (too few)" if manifest.num_videos < expected else ""))
        problems.extend(_conditioning_problems(where, manifest, protocol, reference, expected))
        found_in_files = _file_problems(folder, manifest, protocol, frames)
        file_problems.extend(found_in_files)
        if manifest.heldout_index is not None and not found_in_files and manifest.num_frames == frames:
            problems.extend(_heldout_problems(where, folder, manifest, protocol, data_root))
    problems.extend(gather_lists(file_problems))
    if manifests:
        identities = sorted({(m.generator, m.generator_version, m.seed) for m in manifests})
        if len(identities) > 1:
            problems.append(f"the folders mix generators, versions or seeds {identities}; score one at a time")
        rollouts = [m.rollout for m in manifests]
        repeated = sorted({r for r in rollouts if rollouts.count(r) > 1})
        if repeated:
            problems.append(f"rollouts {repeated} appear in more than one folder")
        primary_rollout = int(protocol.primary_metric.rsplit("@", 1)[1].rstrip("x"))
        if primary_rollout not in rollouts:
            problems.append(f"no {primary_rollout}x rollout: the primary metric {protocol.primary_metric} needs "
                            f"{protocol.num_videos(primary_rollout)} videos of {protocol.num_frames(primary_rollout)} "
                            "frames")
    return problems


def _checkpoint_of(version: str) -> str | None:
    """The generator version when it is a sha256 (`zoo bench` folders carry their checkpoint's); else None."""
    return version if len(version) == 64 and all(c in "0123456789abcdef" for c in version) else None


def score_folder(
    samples_dir: str | Path, protocol: Protocol, tag: str | None = None, data_root: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[ResultRecord, list[tuple[SampleManifest, Path]]]:
    """Check a sample folder against `protocol` and score it with the cached real statistics, writing nothing.

    Returns the result record and the (manifest, folder) of each rollout, shortest first. Raises `SamplesRejected`.
    `score_external` writes what this returns; `verify_submission` compares it with a submitted result.
    """
    samples_dir = Path(samples_dir)
    try:
        sample_folders(samples_dir)  # a folder without samples is refused before the real set is built
    except SamplesError as exc:
        raise SamplesRejected(samples_dir, protocol, [str(exc)]) from exc
    reference = rank_zero_first(lambda: load_reference(protocol, data_root))
    problems = check_samples(samples_dir, protocol, reference, data_root)
    if problems:
        raise SamplesRejected(samples_dir, protocol, problems)
    started = time.perf_counter()
    scores = score_samples(samples_dir, protocol, reference, data_root=data_root, device=device)
    folders = sorted(((read_manifest(folder), folder) for folder in sample_folders(samples_dir)),
                     key=lambda pair: pair[0].rollout)
    seconds = time.perf_counter() - started
    manifests = [manifest for manifest, _ in folders]
    first = manifests[0]
    environment = provenance(protocol.result_hash, _checkpoint_of(first.generator_version), first.seed, None)
    # Held-out real clips (checked to be exactly those clips by `check_samples`): the row every table starts with.
    constructor = ResultRecord.real_folder if first.heldout_index is not None else ResultRecord.external_folder
    record = constructor(manifests, scores, protocol, tag, seconds, environment)
    record.validate()
    return record, folders


def score_external(
    samples_dir: str | Path, protocol: Protocol, out_dir: str | Path = "leaderboard/results", tag: str | None = None,
    data_root: str | None = None, device: str | torch.device = "cpu", strip_videos: int = 8,
) -> tuple[Path | None, dict[str, Any]]:
    """Check a sample folder against `protocol`, score it with the cached real statistics, write the result.

    The result goes to `<out_dir>/<protocol>/<model>.<tag>.seed<k>.json` beside a GIF strip; returns its path
    (None on ranks other than 0, which score but do not write) and the result. Raises `SamplesRejected`.
    """
    record, folders = score_folder(samples_dir, protocol, tag, data_root, device)
    if rank_and_world_size()[0] != 0:
        return None, record.to_dict()
    longest, folder = folders[-1]
    count = min(strip_videos, longest.num_videos)
    strip = write_strip(folder, record.strip_path(out_dir), count, protocol.fps, protocol.channels)
    if strip:
        record.samples = {"strip": strip, "num_videos": count, "fps": protocol.fps}
    return record.write(out_dir), record.to_dict()
