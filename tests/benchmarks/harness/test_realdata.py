"""The real-data row: held-out clips written as a sample folder, checked and scored exactly as a model's videos."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks.harness import SampleManifest, SampleWriter, check_samples, load_protocol, load_reference
from benchmarks.harness import scoring as scoring_module
from benchmarks.harness.external import score_external
from benchmarks.harness.floor import measure_floor
from benchmarks.harness.realdata import write_real_samples
from benchmarks.harness.samples import read_samples
from benchmarks.leaderboard import build_leaderboard, load_boards
from zoo_cli import main

# The shipped protocol at small counts: 64 real clips, 64 held-out clips at 1x and 32 at 2x (at 32 vs 32 the
# floor's own bias, FVD-domain ~250, hides even a frozen video).
TINY = {"num_real": 64, "num_generated": 64, "long_rollout_videos": 32, "batch_size": 32}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring_module, "_REAL_STATES", {})


@pytest.fixture
def protocol():
    return load_protocol("moving_digits", TINY)


def _as_model(folder, videos_by_rollout, protocol, name):
    """Videos written as an ordinary model's folder: prompted with the reference clips' captions."""
    reference = load_reference(protocol)
    for rollout, videos in videos_by_rollout.items():
        writer = SampleWriter(folder / f"rollout{rollout}x")
        writer.add(videos)
        indices = protocol.reference_indices(rollout)
        writer.close(SampleManifest(
            protocol=protocol.name, protocol_hash=protocol.hash, generator=name, generator_version="v1", seed=0,
            rollout=rollout, num_frames=protocol.num_frames(rollout), context_frames=0, conditioned_on="text",
            fps=protocol.fps, prompts=[reference.texts[i] for i in indices], reference_index=indices))
    return folder


@pytest.mark.slow
def test_the_real_row_sits_on_the_floor_and_frozen_or_shuffled_real_clips_score_far_worse(protocol, tmp_path,
                                                                                          capsys):
    results, samples = tmp_path / "results", tmp_path / "real"
    code = main(["protocol", "real", "moving_digits", "--results-dir", str(results), "--samples", str(samples),
                 "--device", "cpu", *(f"{k}={v}" for k, v in TINY.items())])
    out = capsys.readouterr().out
    assert code == 0, out
    path = results / "moving_digits" / "real.heldout.seed0.json"
    assert f"wrote {path}" in out
    real = json.loads(path.read_text())
    assert real["id"] == "real.heldout" and real["model"]["source"] == "real"
    assert real["provenance"]["source"] == "real"
    manifest = json.loads((samples / "rollout1x" / "manifest.json").read_text())
    assert manifest["heldout_index"] == list(range(64, 128))  # after the 64 reference clips: never one of them
    assert json.loads((samples / "rollout2x" / "manifest.json").read_text())["heldout_index"] == list(range(64, 96))
    fvd = real["metrics"]["fvd_domain@1x"]
    assert fvd["num_fake"] == 64 and fvd["num_real"] == 64
    # Within its own interval of the floor measured on other held-out clips at the same counts.
    floor = {row["n"]: row["metrics"] for row in measure_floor(protocol, [32, 64], 3, ["protocol"])["rows"]}
    for key, n in (("fvd_domain@1x", 64), ("fid_domain@1x", 64), ("kvd_domain@1x", 64), ("fvd_domain@2x", 32)):
        entry = real["metrics"][key]
        assert entry["bootstrap"]["low"] <= floor[n][key]["mean"] <= entry["bootstrap"]["high"], key
    # The ceiling of prompt adherence: each clip is judged against its own labels.
    assert real["metrics"]["prompt_adherence_domain@1x"]["value"] >= 0.9

    clips = read_samples(samples / "rollout1x")[0]
    frozen = {1: clips[:, :1].expand_as(clips).contiguous()}  # the first frame held: no motion
    shuffled = {1: clips[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]}  # the same frames
    scored = {}
    for name, videos in (("frozen", frozen), ("shuffled", shuffled)):
        folder = _as_model(tmp_path / name, videos, protocol, name)
        _, scored[name] = score_external(folder, protocol, results)
        assert scored[name]["model"]["source"] == "external"
    def interval(result, key):
        return result["metrics"][key]["bootstrap"]["low"], result["metrics"][key]["bootstrap"]["high"]

    frozen, shuffled = scored["frozen"], scored["shuffled"]
    # FVD: a frozen set at over twice the real row's value; shuffled frames (the same frames, so FID-domain cannot
    # tell) with their whole interval above the real row's.
    assert interval(frozen, "fvd_domain@1x")[0] > 2 * fvd["value"]
    assert interval(shuffled, "fvd_domain@1x")[0] > interval(real, "fvd_domain@1x")[1]
    assert shuffled["metrics"]["fid_domain@1x"]["value"] == pytest.approx(real["metrics"]["fid_domain@1x"]["value"])
    low, high = interval(real, "kvd_domain@1x")  # unbiased: real data's interval holds 0, the broken sets' do not
    assert low < 0 < high and interval(frozen, "kvd_domain@1x")[0] > high and interval(shuffled, "kvd_domain@1x")[0] > high
    assert frozen["metrics"]["motion_magnitude@1x"]["value"] == 0
    assert shuffled["metrics"]["warping_error_dis@1x"]["value"] > 5 * real["metrics"]["warping_error_dis@1x"]["value"]
    for broken in (frozen, shuffled):  # no direction to recognise any more
        assert broken["metrics"]["prompt_adherence_domain@1x"]["value"] <= 0.1
    # The table starts with the real row, unranked, and ranks the models as if it were not there.
    board = load_boards(results)[0][0]
    assert [row.id for row in board.rows][0] == "real.heldout"
    assert board.rank("fvd_domain@1x", board.rows[0]) is None and board.rank("fvd_domain@1x", board.rows[1]) == 1
    markdown = build_leaderboard(results, tmp_path / "board")["markdown"].read_text()
    assert "| - | `real.heldout` |" in markdown


def test_a_real_folder_must_hold_exactly_the_held_out_clips_it_names(protocol, tmp_path):
    [folder, _] = write_real_samples(protocol, tmp_path / "real")
    reference = load_reference(protocol)
    assert check_samples(tmp_path / "real", protocol, reference) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    videos, _ = read_samples(folder)
    writer = SampleWriter(folder)
    writer.add(videos.flip(1))  # the same clips played backwards: no longer the clips it names
    writer.close(SampleManifest(**{**manifest, "files": []}))
    problems = check_samples(tmp_path / "real", protocol, reference)
    assert any("are not the held-out clips heldout_index names" in p for p in problems), problems
    stolen = dataclasses.replace(SampleManifest(**manifest), heldout_index=list(range(64)))
    writer = SampleWriter(folder)
    writer.add(videos)
    writer.close(stolen)
    problems = check_samples(tmp_path / "real", protocol, reference)
    assert any("are reference clips" in p for p in problems), problems


def test_held_out_clips_and_labels_past_a_short_split_are_those_of_the_lengthened_split():
    # moving_digits_eval's split holds exactly its 2048 real clips: the real row's held-out clips lie beyond it, and
    # both they and their labels come from the split lengthened to hold them, whoever asks.
    from benchmarks.harness.reference import heldout_clips, heldout_labels, lengthened

    short = load_protocol("moving_digits", {**TINY, "dataset": {"overrides": {"test_size": 64}}})
    label, labels = heldout_labels(short, [64, 70, 100])
    long_label, long_labels = heldout_labels(lengthened(short, 101), [64, 70, 100])
    assert torch.equal(label, long_label) and labels.keys() == long_labels.keys()
    assert all(torch.equal(labels[key], long_labels[key]) for key in labels)
    first, _ = heldout_labels(short, [3])
    assert torch.equal(first, heldout_labels(lengthened(short, 200), [3])[0])  # lengthening leaves earlier clips
    clips, texts = heldout_clips(short, [64, 100], with_texts=True)
    long_clips, long_texts = heldout_clips(lengthened(short, 101), [64, 100], with_texts=True)
    assert torch.equal(clips, long_clips) and texts == long_texts and clips.shape[0] == 2
