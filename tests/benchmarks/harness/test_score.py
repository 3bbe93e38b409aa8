"""`zoo score` and `zoo reference build`: sample folders from anywhere, checked, scored on the bench's own path.

Uses the toy protocol and pixel-statistics extractors of toy_harness.py, so nothing needs weights or a network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_harness import micro_overrides, write_folder

from benchmarks.features.weight_cache import sha256_of
from benchmarks.harness import (
    SampleManifest,
    SampleWriter,
    build_reference_statistics,
    check_samples,
    load_protocol,
    load_reference,
    run_recipe,
    score_external,
)
from benchmarks.harness import scoring as scoring_module
from benchmarks.harness.reference import ReferenceSet
from benchmarks.harness.scoring import score_samples, statistics_path
from benchmarks.harness.uncertainty import BootstrapSettings
from benchmarks.leaderboard import build_leaderboard, load_result
from zoo.data import write_video
from zoo_cli import main

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("score_ddp_worker.py")


def _noisy_real(protocol, count: int = 16, seed: int = 0) -> torch.Tensor:
    """The first `count` real 1x clips plus seeded noise, uint8: a plausible 'generated' set with FVD > 0."""
    real = load_reference(protocol).clips(range(count))[:, : protocol.frames].float()
    noise = torch.randint(-20, 21, real.shape, generator=torch.Generator().manual_seed(seed)).float()
    return (real + noise).clamp(0, 255).to(torch.uint8)


def _same_scores(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["curves"] == b["curves"]


def _close(a, b, where: str = "") -> None:
    """Equal, floats to 1e-9 relative: the same videos read in other batches sum their features in another order."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(autouse=True)
def _fresh_statistics(monkeypatch):
    # Each test starts with an empty in-process statistics cache, so "cached" means read from $ZOO_CACHE.
    monkeypatch.setattr(scoring_module, "_REAL_STATES", {})


@pytest.mark.slow
def test_zoo_score_of_a_bench_folder_gives_the_bench_numbers(toy_env, tmp_path, capsys):
    [bench_path] = run_recipe("micro", micro_overrides(tmp_path, toy_env, models="[harness_toy]"))
    bench = load_result(bench_path)
    seed_dir = tmp_path / "runs" / "toy_digits" / bench["id"] / "samples" / "seed0"
    code = main(["score", str(seed_dir), "--protocol", str(toy_env), "--out", str(tmp_path / "scored"),
                 "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    scored_path = tmp_path / "scored" / "toy_digits" / "harness_toy.toy_digits_micro.seed0.json"
    assert f"wrote {scored_path}" in out and re.search(r"fvd_pixels@1x: \d", out)
    scored = load_result(scored_path)
    # The same files through the same scoring code: every number and curve is identical, not just close.
    _same_scores(scored, bench)
    assert scored["metrics"]["fvd_pixels@2x"]["value"] > 0 and scored["curves"]
    assert scored["model"]["source"] == "external" and scored["provenance"]["source"] == "external"
    assert bench["provenance"]["source"] == "zoo"
    manifests = {"rollout1x/manifest.json", "rollout2x/manifest.json"}
    assert set(scored["provenance"]["manifest_sha256"]) == manifests
    assert scored["provenance"]["manifest_sha256"] == bench["provenance"]["manifest_sha256"]
    assert scored["provenance"]["manifest_sha256"]["rollout1x/manifest.json"] == sha256_of(
        seed_dir / "rollout1x" / "manifest.json")
    # The bench's manifest carries what the cost columns need; the zoo checkpoint sha256 is its version.
    assert scored["provenance"]["checkpoint_sha256"] == bench["provenance"]["checkpoint_sha256"]
    assert scored["cost"]["num_parameters"] == bench["cost"]["num_parameters"] == 1
    assert scored["cost"]["sampling_seconds_per_frame"] == pytest.approx(bench["cost"]["sampling_seconds_per_frame"])
    assert (scored_path.with_suffix(".gif")).stat().st_size > 0


def test_video_files_score_like_shards_and_twice_gives_identical_results(toy_env, tmp_path):
    protocol = load_protocol(toy_env)
    texts = load_reference(protocol).texts
    videos = _noisy_real(protocol)
    write_folder(tmp_path / "shards", videos, protocol, prompts=texts)
    # The same videos as a gif, a folder of PNG frames and an mp4 (lossy: it gets a file of its own to compare).
    mixed = tmp_path / "mixed"
    writer = SampleWriter(mixed)
    writer.add(videos[:14], seed=7)
    write_video(mixed / "video_14.gif", videos[14])
    writer.add_file("video_14.gif")
    write_video(mixed / "video_15", videos[15])
    writer.add_file("video_15")
    writer.close(SampleManifest(
        protocol=protocol.name, protocol_hash=protocol.hash, generator="my_model", generator_version="v1", seed=0,
        rollout=1, num_frames=8, context_frames=0, conditioned_on="text", fps=8, prompts=texts,
        reference_index=list(range(16))))
    assert json.loads((mixed / "manifest.json").read_text())["files"][0] == {"file": "videos_00000.npz",
                                                                            "count": 14, "seed": 7}
    shard_path, shard_result = score_external(tmp_path / "shards", protocol, tmp_path / "out")
    first_path, first = score_external(mixed, protocol, tmp_path / "out")
    # Lossless files decode to the very same uint8 videos, so every number matches the shards' (to the rounding of
    # summing 14 + 1 + 1 videos' features instead of 16: exact on an AMD EPYC, 2e-15 relative in FVD on an Intel Xeon).
    _close(first["metrics"], shard_result["metrics"], "metrics")
    _close(first["curves"], shard_result["curves"], "curves")
    assert first["metrics"]["fvd_pixels@1x"]["value"] > 0
    assert first["metrics"]["prompt_adherence_brightness@1x"]["value"] is not None
    assert first["id"] == "my_model.toy_digits_external" and shard_path.name == "external.test.seed0.json"
    # The 2x rollout was not submitted: its metrics are missing with a reason, never 0.
    assert first["metrics"]["fvd_pixels@2x"]["value"] is None
    assert "no 2x rollout" in first["metrics"]["fvd_pixels@2x"]["missing_reason"]
    assert first["provenance"]["manifest_sha256"] == {"manifest.json": sha256_of(mixed / "manifest.json")}
    # Every video file's sha256 too (a frame folder's over its frames), so a changed file can be named later.
    files = first["provenance"]["samples_sha256"]
    assert list(files) == ["videos_00000.npz", "video_14.gif", "video_15"]
    assert files["video_14.gif"] == sha256_of(mixed / "video_14.gif") and len(set(files.values())) == 3
    assert first["cost"]["num_parameters"] is None and first["provenance"]["checkpoint_sha256"] is None
    load_result(first_path)  # valid against the result schema
    _, again = score_external(mixed, protocol, tmp_path / "out")
    _same_scores(again, first)


def test_every_scored_value_carries_its_bootstrap_interval(toy_env, tmp_path, monkeypatch):
    protocol = load_protocol(toy_env)
    write_folder(tmp_path / "s", _noisy_real(protocol), protocol, prompts=load_reference(protocol).texts)
    path, result = score_external(tmp_path / "s", protocol, tmp_path / "out")
    scored = [entry for entry in result["metrics"].values() if entry["value"] is not None]
    assert {entry["variant"] for entry in scored} == {"fvd_pixels", "flicker", "motion_magnitude",
                                                      "prompt_adherence_brightness"}
    for entry in scored:
        bootstrap = entry["bootstrap"]
        assert bootstrap["low"] <= entry["value"] <= bootstrap["high"], entry["variant"]
        assert bootstrap["level"] == 0.95 and bootstrap["draws"] == 1000 == len(bootstrap["values"])
        assert bootstrap["seed"] == 0 and bootstrap["n"] == 16 and bootstrap["method"] == "centred-percentile"
        # Distribution metrics resample the real clips too; the others have none.
        assert bootstrap["n_real"] == (16 if entry["variant"] == "fvd_pixels" else None)
    assert result["metrics"]["fvd_pixels@1x"]["bootstrap"]["lower_bound"] == 0.0
    # The real rows are cached with the real statistics: a new process draws the very same interval.
    stored = torch.load(next((Path(os.environ["ZOO_CACHE"]) / "reference").rglob("real-fvd_pixels-*.pt")),
                        weights_only=True)
    assert stored["evidence"]["groups"]["0"]["rows"].shape == (16, 3)
    monkeypatch.setattr(scoring_module, "_REAL_STATES", {})
    _, again = score_external(tmp_path / "s", protocol, tmp_path / "again")
    _same_scores(again, result)
    # Fewer draws: the first ones are the same resamples (`resample_counts` depends on nothing else).
    few = score_samples(tmp_path / "s", protocol, bootstrap=BootstrapSettings(draws=10))
    assert few["metrics"]["fvd_pixels@1x"]["bootstrap"]["values"] == result["metrics"]["fvd_pixels@1x"][
        "bootstrap"]["values"][:10]
    # The leaderboard shows value ± half-width and writes the interval's ends.
    files = build_leaderboard(tmp_path / "out", tmp_path / "board")
    entry = result["metrics"]["fvd_pixels@1x"]
    half_width = (entry["bootstrap"]["high"] - entry["bootstrap"]["low"]) / 2
    assert f"{entry['value']:.3g} ± {half_width:.2g}" in files["markdown"].read_text()
    row = next(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert float(row["fvd_pixels@1x_low"]) == entry["bootstrap"]["low"] and row["fvd_pixels@1x_rank"] == "1"
    load_result(path)


def _broken_folder(folder: Path, protocol, texts: list[str]) -> None:
    """15 videos (too few): 8 good, 5 with 7 frames, one corrupt mp4, one 16x16 gif; video 3 has no prompt."""
    videos = _noisy_real(protocol)
    writer = SampleWriter(folder)
    writer.add(videos[:8])
    writer.add(videos[8:13, :7])
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(200))
    writer.add_file("broken.mp4")
    write_video(folder / "small.gif", videos[14, :, :, :16, :16])
    writer.add_file("small.gif")
    prompts: list[str | None] = list(texts[:15])
    prompts[3] = None
    writer.close(SampleManifest(
        protocol=protocol.name, protocol_hash=protocol.hash, generator="my_model", generator_version="v1", seed=0,
        rollout=1, num_frames=8, context_frames=0, conditioned_on="text", fps=8, prompts=prompts,
        reference_index=list(range(15))))


def test_a_folder_that_violates_the_protocol_is_refused_listing_every_problem(toy_env, tmp_path, capsys):
    protocol = load_protocol(toy_env)
    folder = tmp_path / "broken"
    _broken_folder(folder, protocol, load_reference(protocol).texts)
    code = main(["score", str(folder), "--protocol", str(toy_env), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("zoo: error: ")
    assert f"{folder} cannot be scored on protocol 'toy_digits' (5 problems):" in err
    for expected in ["15 videos; the protocol scores 16 at 1x (too few)",
                     "videos_00001.npz: 7 frames; a 1x rollout has 8",
                     "cannot read video " + str(folder / "broken.mp4"),
                     "small.gif: 16x16 pixels; the protocol needs 32x32",
                     "1 video(s) have no prompt (videos 3)"]:
        assert expected in err, expected
    assert not (tmp_path / "out").exists()  # nothing scored, nothing written


def test_manifest_schema_and_protocol_problems_are_listed_together(toy_env, tmp_path):
    protocol = load_protocol(toy_env)
    reference = load_reference(protocol)
    write_folder(tmp_path / "s" / "rollout1x", _noisy_real(protocol), protocol)
    write_folder(tmp_path / "s" / "rollout2x", _noisy_real(protocol, 8), protocol, rollout=2)  # 8 frames, not 16
    manifest = tmp_path / "s" / "rollout2x" / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["generator"]
    data["fps"] = 0
    manifest.write_text(json.dumps(data))
    problems = check_samples(tmp_path / "s", protocol, reference)
    assert any("(top level): 'generator' is a required property" in p for p in problems)
    assert any(p.endswith("fps: 0 is less than the minimum of 1") for p in problems)
    assert check_samples(tmp_path / "s" / "rollout1x", protocol, reference) == []
    other = load_protocol(toy_env, ["num_generated=32"])
    problems = check_samples(tmp_path / "s" / "rollout1x", other, load_reference(other))
    assert len(problems) == 2 and "made for protocol 'toy_digits'" in problems[0] and "(too few)" in problems[1]
    assert check_samples(tmp_path / "nothing", protocol, reference)[0].startswith("no manifest.json in")


def test_reference_statistics_are_cached_reused_and_invalidated_by_the_protocol(toy_env, tmp_path, monkeypatch):
    protocol = load_protocol(toy_env)
    first = build_reference_statistics(protocol)
    assert first.reference_built
    distribution = {"fvd_pixels@1x", "fvd_pixels@2x", "fid_over_time_pixels@2x"}
    assert set(first.statistics) == distribution
    assert {p.statistics for p in first.statistics.values()} == {"computed"}
    files = {key: p.statistics_path for key, p in first.statistics.items()}
    mtimes = {key: path.stat().st_mtime_ns for key, path in files.items()}

    # A second run (a new process: the in-memory cache is empty) reads every statistic back, feeding no real clip.
    reads = []
    original = ReferenceSet.batches
    monkeypatch.setattr(ReferenceSet, "batches", lambda self: reads.append(1) or original(self))
    monkeypatch.setattr(scoring_module, "_REAL_STATES", {})
    second = build_reference_statistics(protocol)
    assert not second.reference_built and not reads
    assert {p.statistics for p in second.statistics.values()} == {"cached"}
    assert {key: p.statistics_path for key, p in second.statistics.items()} == files
    assert {key: path.stat().st_mtime_ns for key, path in files.items()} == mtimes

    # A changed protocol is a new cache key: its real set and statistics are computed afresh.
    changed = build_reference_statistics(load_protocol(toy_env, ["num_real=8", "long_rollout_videos=4"]))
    assert changed.reference_built and len(changed.reference) == 8 and reads
    assert {p.statistics for p in changed.statistics.values()} == {"computed"}
    assert not set(p.statistics_path for p in changed.statistics.values()) & set(files.values())
    # Other extractor weights, another key.
    spec = protocol.metrics[0]
    states = ["real_moments", "fake_moments"]
    assert statistics_path(spec, first.reference, "last-1x", "a" * 64, states) != statistics_path(
        spec, first.reference, "last-1x", "b" * 64, states)
    # Another state layout of the metric (running sums before moments), another key.
    assert statistics_path(spec, first.reference, "last-1x", "a" * 64, states) != statistics_path(
        spec, first.reference, "last-1x", "a" * 64, ["real_sum", "real_outer_sum", "real_count"])


def test_zoo_reference_build_prints_what_it_did_and_lists_the_prompts(toy_env, tmp_path, capsys):
    prompts = tmp_path / "prompts.json"
    assert main(["reference", "build", str(toy_env), "--prompts", str(prompts), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "real set: 16 clips" in out and "(built)" in out and "fvd_pixels@1x: computed" in out
    listing = json.loads(prompts.read_text())
    protocol = load_protocol(toy_env)
    assert listing["protocol_hash"] == protocol.hash and len(listing["videos"]["2x"]) == 8
    assert listing["videos"]["1x"][3] == {"reference_index": 3, "prompt": load_reference(protocol).texts[3]}
    monkeypatch_free = main(["reference", "build", str(toy_env), "--device", "cpu"])
    out = capsys.readouterr().out
    assert monkeypatch_free == 0 and "(cached)" in out and "fvd_pixels@1x: cached" in out


@pytest.mark.slow
def test_zoo_score_sharded_over_two_gloo_ranks_equals_one_process(toy_env, tmp_path):
    protocol = load_protocol(toy_env)
    folder = tmp_path / "samples"
    videos = _noisy_real(protocol)
    writer = SampleWriter(folder)
    for batch in videos.split(5):  # 4 files of 5, 5, 5, 1 videos: the ranks get unequal shares
        writer.add(batch)
    writer.close(SampleManifest(
        protocol=protocol.name, protocol_hash=protocol.hash, generator="my_model", generator_version="v1", seed=0,
        rollout=1, num_frames=8, context_frames=0, conditioned_on="text", fps=8,
        prompts=load_reference(protocol).texts, reference_index=list(range(16))))
    _, single = score_external(folder, protocol, tmp_path / "single")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "ZOO_CACHE": os.environ["ZOO_CACHE"]}
    rendezvous, out = tmp_path / "rendezvous", tmp_path / "ddp"
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", str(rendezvous), str(toy_env),
                               str(folder), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(2)]
    logs = [rank.communicate(timeout=300)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(logs)[-3000:]
    [written] = list(out.rglob("*.json"))  # rank 0 writes the one result
    distributed = load_result(written)
    # Each rank decoded only its share of the files (once to check them, once to score them).
    shares = [json.loads((out / f"files_read_rank{rank}.txt").read_text()) for rank in range(2)]
    assert sorted(shares[0]) == ["videos_00000.npz", "videos_00000.npz", "videos_00002.npz", "videos_00002.npz"]
    assert sorted(shares[1]) == ["videos_00001.npz", "videos_00001.npz", "videos_00003.npz", "videos_00003.npz"]
    for key, entry in single["metrics"].items():
        got = distributed["metrics"][key]
        # Real statistics held by rank 0 only, generated ones summed over ranks: the same counts as one process.
        assert (got["num_real"], got["num_fake"]) == (entry["num_real"], entry["num_fake"]), key
        if entry["value"] is None:
            assert got["value"] is None, key
        else:
            assert got["value"] == pytest.approx(entry["value"], rel=1e-9, abs=1e-12), key
            # Rank 0 resamples every rank's per-video evidence, gathered, exactly as one process does.
            mine, theirs = entry["bootstrap"], got["bootstrap"]
            assert set(theirs) == set(mine), key
            for field, value in mine.items():
                assert theirs[field] == (value if isinstance(value, str) or value is None
                                         else pytest.approx(value, rel=1e-5, abs=1e-12)), (key, field)
