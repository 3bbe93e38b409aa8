"""The harness: protocols and recipes, sample folders and scoring, resume/skip, and an end-to-end micro bench.

Two toy generators (toy_harness.py) are registered outside the zoo package, to show that any `VideoGenerator` runs
through the harness. Feature extractors are tiny pixel-statistics modules so scoring is fast and exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_harness import (
    TEST_EXTRACTORS,
    TOY_PROTOCOL,
    PixelClipStats,
    fail_the_short_row,
    micro_overrides,
    use_test_extractors,
    write_folder,
)

from benchmarks.harness import (
    SamplesError,
    generate_rollouts,
    list_protocols,
    list_recipes,
    load_protocol,
    load_recipe,
    load_reference,
    read_manifest,
    read_samples,
    resolve_models,
    run_recipe,
    score_samples,
)
from benchmarks.harness import runner as runner_module
from benchmarks.harness.generation import config_sha256
from benchmarks.harness.reference import dataset_overrides
from benchmarks.harness.runner import run_settings_sha256
from benchmarks.harness.scoring import ExtractorCache, weights_sha256
from benchmarks.leaderboard import load_boards, load_result
from zoo.config import ConfigError
from zoo.registry import MODELS, create_model, list_models


# ---- protocols and recipes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_protocols())
def test_shipped_protocols_validate(name):
    protocol = load_protocol(name)
    assert protocol.name == name and len(protocol.hash) == 64
    assert protocol.primary_metric in protocol.metric_keys()


GPU_VALUES = ["vars.kl_autoencoder=/ckpt/kl.safetensors",
              "vars.vq_autoencoder=/ckpt/vq.safetensors"]


@pytest.mark.parametrize("name", list_recipes())
def test_shipped_recipes_validate(name):
    if name.startswith("gpu_"):
        with pytest.raises(ConfigError, match=r"missing required value.*'vars.kl_autoencoder'"):
            load_recipe(name)
        recipe = load_recipe(name, GPU_VALUES)
        protocol = load_protocol(recipe.protocol)
        with pytest.raises(ConfigError, match="reads real videos from a folder: pass data_root="):
            dataset_overrides(protocol, None)
        assert recipe.row_settings("video_diffusion").overrides["autoencoder"] == "/ckpt/kl.safetensors"
        assert recipe.row_settings("diffusion_clips_ar_extend").overrides["vq_autoencoder"] == "/ckpt/vq.safetensors"
    else:
        recipe = load_recipe(name)
    protocol = load_protocol(recipe.protocol, recipe.protocol_overrides)
    assert recipe.name == name and protocol.num_generated >= 1
    assert set(recipe.model_configs) <= set(list_models())
    for row in resolve_models(recipe):  # every row's config resolves; preset names are in the package's presets
        settings = recipe.row_settings(row)
        if settings.config_path is not None:
            assert MODELS.config_yaml(settings.model, settings.config_path).is_file(), settings.config_path
        preset = f"{settings.model}_{recipe.model_preset}"
        if recipe.model_preset and preset in MODELS.list_presets():  # a model that has the size runs at it
            assert settings.config_path == preset


def test_model_preset_sizes_every_model_by_convention(tmp_path):
    recipe = load_recipe("micro", ["model_preset=large"])
    assert [recipe.row_settings(row).config_path for row in resolve_models(recipe)] == \
        ["video_diffusion_large", "video_ar_large"]
    custom = tmp_path / "video_ar_custom.yaml"
    custom.write_text("top_k: 5\n")
    explicit = load_recipe("micro", ["model_preset=large", f"model_configs.video_ar={custom}"])
    assert explicit.row_settings("video_ar").config_path == str(custom)  # model_configs wins
    with pytest.raises(ConfigError, match=r"model 'video_diffusion' has none: add .*video_diffusion_huge.yaml"):
        resolve_models(load_recipe("micro", ["model_preset=huge"]))
    fallback = load_recipe("micro", ["model_preset=huge", "model_preset_fallback=true"])
    with pytest.warns(UserWarning, match="has no 'huge' preset; it runs at its default size"):
        resolve_models(fallback)
    assert fallback.row_settings("video_ar").config_path is None


def test_protocol_base_is_the_named_protocol_with_the_variants_keys_on_top(tmp_path):
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: moving_digits\nname: variant\nnum_generated: 128\ndataset: {overrides: {test_size: 2048}}\n")
    loaded = load_protocol(variant)
    expected = load_protocol("moving_digits", ["name=variant", "num_generated=128", "dataset.overrides.test_size=2048"])
    assert loaded.to_dict() == expected.to_dict() and loaded.hash == expected.hash
    assert loaded.dataset.name == "moving_digits" and loaded.metrics == expected.metrics  # lists come from the base
    evaluation = load_protocol("moving_digits_eval")  # the shipped variant: evidence-grade counts, same metrics
    assert (evaluation.num_real, evaluation.num_generated, evaluation.long_rollout_videos) == (2048, 512, 256)
    assert evaluation.share_rollout_prefixes
    assert evaluation.metrics == load_protocol("moving_digits").metrics and len(evaluation.seeds) >= 3
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\nname: loop\n")
    with pytest.raises(ConfigError, match="refers back to itself"):
        load_protocol(loop)


def test_protocol_hash_pins_numbers_not_prose(toy_env):
    base = load_protocol(toy_env)
    assert load_protocol(toy_env).hash == base.hash
    assert load_protocol(toy_env, ["description=reworded"]).hash == base.hash
    assert load_protocol(toy_env, ["num_generated=32"]).hash != base.hash
    assert load_protocol(toy_env, ["frames=16"]).hash != base.hash
    assert load_protocol(toy_env, ["seeds=[0,1,2]"]).hash == base.hash  # each result records its own seed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_genrated=3"], "unknown key 'num_genrated'.*did you mean 'num_generated'"),
        (["primary_metric=fvd_pixels@4x"], "primary_metric 'fvd_pixels@4x' is not produced"),
        (["primary_metric=motion_magnitude@1x"], "is a diagnostic"),
        (["rollouts=[2]"], "rollouts must be multipliers >= 1 that include 1"),
        (["condition=context"], "condition 'context' and context_frames > 0 go together"),
    ],
)
def test_bad_protocols_fail_with_one_line(toy_env, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_protocol(toy_env, overrides)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'moving_digits'"):
        load_protocol("moving_digit")
    with pytest.raises(ConfigError, match="did you mean 'micro'"):
        load_recipe("mikro")
    with pytest.raises(ConfigError, match="unknown model 'harness_tyo'.*did you mean 'harness_toy'"):
        resolve_models(load_recipe("micro", ["models=[harness_tyo]"]))


def test_recipe_patterns_expand_over_zoo_models_only():
    recipe = load_recipe("micro", ["models=['*', harness_toy]", "exclude=[video_diffusion]"])
    names = resolve_models(recipe)
    assert "harness_toy" in names and "harness_toy_short" not in names and "video_diffusion" not in names


# ---- sample folders and scoring ----------------------------------------------------------------------------------
def test_score_samples_scores_an_external_folder(toy_env, tmp_path):
    protocol = load_protocol(toy_env)
    reference = load_reference(protocol)
    real = torch.cat(list(reference.batches()))
    assert real.shape == (16, 16, 1, 32, 32) and real.dtype == torch.uint8  # real clips as long as 2x rollouts
    assert torch.equal(reference.clips([9, 2]), real[[9, 2]])
    assert load_reference(protocol).sha256 == reference.sha256  # from the cache: the same set
    real_1x = real[:, :8]
    write_folder(tmp_path / "real", real_1x, protocol, prompts=reference.texts)
    videos, manifest = read_samples(tmp_path / "real")
    assert torch.equal(videos, real_1x) and manifest.num_videos == 16
    same = score_samples(tmp_path / "real", protocol)
    # The real clips scored as if generated: the Fréchet distance to themselves is zero.
    assert same["metrics"]["fvd_pixels@1x"]["value"] == pytest.approx(0.0, abs=1e-8)
    assert same["metrics"]["fvd_pixels@1x"]["num_real"] == 16 and same["reference_sha256"] == reference.sha256
    assert same["metrics"]["fvd_pixels@1x"]["bootstrap"]["draws"] == protocol.bootstrap_draws == 1000
    # The protocol's draw count sets every interval's draws (and is not part of what a value means: same hash).
    fewer = load_protocol(toy_env, ["bootstrap_draws=120"])
    assert fewer.result_hash == protocol.result_hash
    bootstrap = score_samples(tmp_path / "real", fewer)["metrics"]["fvd_pixels@1x"]["bootstrap"]
    assert bootstrap["draws"] == 120 and len(bootstrap["values"]) == 120
    with pytest.raises(ConfigError, match="bootstrap_draws must be >= 100"):
        load_protocol(toy_env, ["bootstrap_draws=10"])
    assert set(same["metrics"]) == {"fvd_pixels@1x", "flicker@1x", "motion_magnitude@1x",
                                    "prompt_adherence_brightness@1x"}
    shuffled = real_1x[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    write_folder(tmp_path / "shuffled", shuffled, protocol)
    worse = score_samples(tmp_path / "shuffled", protocol)
    assert worse["metrics"]["fvd_pixels@1x"]["value"] > 1e-4
    assert worse["metrics"]["flicker@1x"]["value"] > same["metrics"]["flicker@1x"]["value"]
    # Never 0 for what cannot be computed: not prompted -> prompt adherence is missing, with the reason.
    adherence = worse["metrics"]["prompt_adherence_brightness@1x"]
    assert adherence["value"] is None and "not prompted" in adherence["missing_reason"]


def test_shared_rollout_prefixes_make_the_same_videos_with_fewer_generate_calls(toy_env, tmp_path):
    from toy_harness import PrefixToyGenerator

    counts = ["num_generated=24", "long_rollout_videos=12"]  # batches of 8: 1x 8+8+8, 2x 8+4
    separate = load_protocol(toy_env, counts)
    shared = load_protocol(toy_env, [*counts, "share_rollout_prefixes=true"])
    # Off by default and then not hashed: published protocols keep their hash (and their results stay finished).
    assert load_protocol(toy_env, [*counts, "share_rollout_prefixes=false"]).hash == separate.hash != shared.hash
    reference = load_reference(separate)
    model = create_model("harness_toy_prefix").eval()

    def generate(protocol, folder):
        PrefixToyGenerator.calls = 0
        manifests = generate_rollouts(model, protocol, reference, {1: folder / "1x", 2: folder / "2x"}, 0, "toy",
                                      "v1")
        return manifests, PrefixToyGenerator.calls, {r: read_samples(folder / f"{r}x")[0] for r in (1, 2)}

    plain_manifests, plain_calls, plain = generate(separate, tmp_path / "separate")
    manifests, calls, videos = generate(shared, tmp_path / "shared")
    # Batch 0 (clips 0-7 at both lengths) is made once, at 2x; the 2x batch of clips 8-11 is not the 1x one's.
    assert (plain_calls, calls) == (5, 4)
    assert torch.equal(videos[1], plain[1]), "the 1x videos must be what generating them alone gives"
    assert torch.equal(videos[2][:8, :8], videos[1][:8]) and torch.equal(videos[2][8:], plain[2][8:])
    assert not torch.equal(videos[2][:8], plain[2][:8])  # seeded as the 1x batch it extends
    files = read_manifest(tmp_path / "shared" / "1x").files
    assert [entry.get("prefix_of_rollout") for entry in files] == [2, None, None]
    shared_2x_seed = read_manifest(tmp_path / "shared" / "2x").files[0]["seed"]
    assert files[0]["seed"] == shared_2x_seed == plain_manifests[1].files[0]["seed"]
    # Seconds per frame are measured on the videos generated at that length only.
    assert manifests[1].timed_frames == 16 * 8 and plain_manifests[1].timed_frames == 24 * 8
    assert score_samples(tmp_path / "shared", shared)["metrics"]["fvd_pixels@2x"]["num_fake"] == 12
    # A model that does not declare it generates every rollout on its own, under either protocol.
    toy = create_model("harness_toy").eval()
    for protocol, folder in ((separate, tmp_path / "toy_separate"), (shared, tmp_path / "toy_shared")):
        generate_rollouts(toy, protocol, reference, {1: folder / "1x", 2: folder / "2x"}, 0, "toy", "v1")
    for rollout in (1, 2):
        assert torch.equal(read_samples(tmp_path / "toy_shared" / f"{rollout}x")[0],
                           read_samples(tmp_path / "toy_separate" / f"{rollout}x")[0])


def test_a_sample_folder_is_reused_only_for_the_same_weights_and_sampling_config(toy_env, tmp_path):
    """`zoo bench` keeps a finished sample folder; sampling the same checkpoint under another config (guidance,
    precision) must make the videos again, not score the old ones under the new settings."""
    from benchmarks.harness.runner import _sample_folder_ready

    protocol = load_protocol(toy_env, ["num_generated=8", "long_rollout_videos=8"])
    model = create_model("harness_toy").eval()
    generate_rollouts(model, protocol, load_reference(protocol), {1: tmp_path / "1x"}, 0, "toy", "sha-a")
    assert read_manifest(tmp_path / "1x").generator_config_sha256 == config_sha256(model)
    assert _sample_folder_ready(tmp_path / "1x", protocol, "sha-a", model)
    assert not _sample_folder_ready(tmp_path / "1x", protocol, "sha-b", model)
    assert not _sample_folder_ready(tmp_path / "1x", load_protocol(toy_env), "sha-a", model)
    model.config.sampling_precision = "bf16-mixed"
    assert not _sample_folder_ready(tmp_path / "1x", protocol, "sha-a", model)


def test_a_pinned_reference_hash_guards_the_data(toy_env):
    protocol = load_protocol(toy_env)
    sha = load_reference(protocol).sha256
    assert load_reference(load_protocol(toy_env, [f"dataset.reference_sha256={sha}"])).sha256 == sha
    with pytest.raises(ConfigError, match="bump the protocol version and re-pin"):
        load_reference(load_protocol(toy_env, ["dataset.reference_sha256=" + "0" * 64]))


def test_score_samples_refuses_other_protocols_and_unfinished_folders(toy_env, tmp_path):
    protocol = load_protocol(toy_env)
    other = load_protocol(toy_env, ["num_generated=8"])
    write_folder(tmp_path / "s", torch.zeros(16, 8, 1, 32, 32, dtype=torch.uint8), protocol)
    with pytest.raises(SamplesError, match="was generated for protocol toy_digits"):
        score_samples(tmp_path / "s", other)
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(SamplesError, match="no manifest.json"):
        score_samples(tmp_path / "unfinished", protocol)


def test_a_failing_metric_is_missing_not_zero(toy_env, tmp_path, monkeypatch):
    def broken(name):
        if name == "pixel_clip_stats":
            raise FileNotFoundError("weights for pixel_clip_stats are not in the cache")
        return TEST_EXTRACTORS[name]()

    monkeypatch.setattr(ExtractorCache, "build", staticmethod(broken))
    protocol = load_protocol(toy_env)
    write_folder(tmp_path / "s", load_reference(protocol).clips(range(16))[:, :8], protocol)
    with pytest.warns(UserWarning, match="metric 'fvd_pixels'"):
        scores = score_samples(tmp_path / "s", protocol)
    entry = scores["metrics"]["fvd_pixels@1x"]
    assert entry["value"] is None and "weights for pixel_clip_stats" in entry["missing_reason"]


def test_extractor_weights_are_hashed_and_a_pin_is_enforced(toy_env, tmp_path):
    protocol = load_protocol(toy_env)
    write_folder(tmp_path / "s", load_reference(protocol).clips(range(16))[:, :8], protocol)
    entry = score_samples(tmp_path / "s", protocol)["metrics"]["fvd_pixels@1x"]
    assert entry["extractor_sha256"] == weights_sha256(PixelClipStats())
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(TOY_PROTOCOL.replace("extractor: pixel_clip_stats,",
                                           "extractor: pixel_clip_stats, extractor_sha256: '" + "0" * 64 + "',"))
    other = load_protocol(pinned)
    write_folder(tmp_path / "p", load_reference(other).clips(range(16))[:, :8], other)
    with pytest.warns(UserWarning, match="but the protocol pins"):
        entry = score_samples(tmp_path / "p", other)["metrics"]["fvd_pixels@1x"]
    assert entry["value"] is None and "but the protocol pins 000000000000" in entry["missing_reason"]


# ---- end to end: the micro recipe --------------------------------------------------------------------------------
@pytest.mark.slow
def test_micro_bench_end_to_end_resume_force_and_reproducibility(toy_env, tmp_path, monkeypatch, capsys):
    overrides = micro_overrides(tmp_path, toy_env)
    paths = run_recipe("micro", overrides)
    results = tmp_path / "results" / "toy_digits"
    assert paths == [results / "harness_toy.toy_digits_micro.seed0.json",
                     results / "harness_toy_short.toy_digits_micro.seed0.json"]
    toy, short = (load_result(p) for p in paths)
    # Prompted with the real captions, the toy encodes the right digit: adherence is exactly 1.
    assert toy["metrics"]["prompt_adherence_brightness@1x"]["value"] == 1.0
    assert toy["metrics"]["fvd_pixels@2x"]["value"] > 0 and "fid_over_time_pixels@2x" in toy["curves"]
    assert len(toy["curves"]["fid_over_time_pixels@2x"]["y"]) == 2
    assert toy["metrics"]["fvd_pixels@1x"]["num_fake"] == 16 and toy["metrics"]["fvd_pixels@2x"]["num_fake"] == 8
    assert toy["cost"]["train_steps"] == 2 and toy["cost"]["sampling_seconds_per_frame"] > 0
    assert toy["model"]["source"] == "external" and toy["provenance"]["checkpoint_sha256"]
    # The short model cannot extend and is not prompted: those numbers are missing with reasons, never 0.
    assert short["metrics"]["fvd_pixels@2x"]["value"] is None
    assert "cannot extend" in short["metrics"]["fvd_pixels@2x"]["missing_reason"]
    assert short["metrics"]["prompt_adherence_brightness@1x"]["value"] is None
    assert short["metrics"]["fvd_pixels@1x"]["value"] > 0
    assert (results / "harness_toy.toy_digits_micro.seed0.gif").stat().st_size > 0
    board = (tmp_path / "board" / "README.md").read_text()
    assert "`harness_toy.toy_digits_micro`" in board and "took" in capsys.readouterr().out

    # Re-running skips finished entries: nothing is trained, generated or rewritten.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished entry was redone")

    before = {p: p.read_bytes() for p in paths}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "prepare_model", refuse)
        assert run_recipe("micro", overrides) == paths
    assert {p: p.read_bytes() for p in paths} == before

    # Other run settings (a bigger training budget) make the entry unfinished: it is redone.
    assert run_settings_sha256("harness_toy", load_recipe("micro", overrides)) != run_settings_sha256(
        "harness_toy", load_recipe("micro", [*overrides, "trainer.max_steps=3"]))

    # A lost result is redone from the finished training run (no retraining) and gives the same numbers.
    paths[0].unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("zoo.training.train_model", refuse)
        run_recipe("micro", overrides)
    assert load_result(paths[0])["metrics"] == toy["metrics"]

    # --force retrains and regenerates from scratch; the same seed reproduces every metric within 1e-4 relative.
    run_recipe("micro", overrides, force=True)
    redone = load_result(paths[0])
    assert redone["provenance"]["created"] >= toy["provenance"]["created"]
    for key, entry in toy["metrics"].items():
        if entry["value"] is None:
            assert redone["metrics"][key]["value"] is None
        else:
            assert redone["metrics"][key]["value"] == pytest.approx(entry["value"], rel=1e-4, abs=1e-9), key
    boards, excluded = load_boards(tmp_path / "results")
    assert len(boards) == 1 and not excluded and len(boards[0].rows) == 2
    primary = [row.metrics["fvd_pixels@1x"].mean for row in boards[0].rows]
    assert primary == sorted(primary)
    assert json.loads(paths[1].read_text())["protocol"]["hash"] == load_protocol(toy_env).result_hash


@pytest.mark.slow
def test_bench_sharded_over_two_gloo_ranks_equals_one_process(toy_env, tmp_path):
    """Each rank generates every other batch and scores every other file; rank 0 trains and writes the results."""
    single = [load_result(path) for path in run_recipe("micro", micro_overrides(tmp_path / "single", toy_env))]
    worker, ddp = Path(__file__).with_name("bench_ddp_worker.py"), tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worker.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(worker), str(rank), "2", str(tmp_path / "rendezvous"),
                               str(toy_env), str(ddp)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(2)]
    logs = [rank.communicate(timeout=600)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(logs)[-3000:]
    # 16 videos per row at 1x in two batches of 8 (one per rank); the 8 videos at 2x (harness_toy only) are one
    # batch, so rank 1 has none there and still joins the manifest and the metric sync.
    generated = [json.loads((ddp / f"generated_rank{rank}.json").read_text()) for rank in range(2)]
    assert (generated[0], generated[1]) == ([8, 8, 8], [8, 8])
    for expected in single:
        got = load_result(ddp / "results" / "toy_digits" / f"{expected['id']}.seed0.json")
        assert got["provenance"]["manifest_sha256"].keys() == expected["provenance"]["manifest_sha256"].keys()
        for key, entry in expected["metrics"].items():
            assert (got["metrics"][key]["num_real"], got["metrics"][key]["num_fake"]) == \
                (entry["num_real"], entry["num_fake"]), key
            if entry["value"] is None:
                assert got["metrics"][key]["value"] is None, key
            else:
                assert got["metrics"][key]["value"] == pytest.approx(entry["value"], rel=1e-9, abs=1e-12), key
        assert got["curves"].keys() == expected["curves"].keys()
        for key, curve in expected["curves"].items():
            assert got["curves"][key]["y"] == pytest.approx(curve["y"], rel=1e-9, abs=1e-12), key
        for rollout in ("rollout1x", "rollout2x"):
            folder = Path("toy_digits") / expected["id"] / "samples" / "seed0" / rollout
            if not (tmp_path / "single" / "runs" / folder).exists():
                continue
            one, two = (read_samples(root / "runs" / folder) for root in (tmp_path / "single", ddp))
            assert torch.equal(one[0], two[0]), f"{expected['id']} {rollout}: the videos differ"
            assert [entry["file"] for entry in one[1].files] == [entry["file"] for entry in two[1].files]
    assert (ddp / "board" / "README.md").is_file()


@pytest.mark.slow
def test_two_concurrent_bench_processes_lose_nothing_and_never_train_a_row_twice(toy_env, tmp_path):
    worker = Path(__file__).with_name("bench_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worker.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, str(worker), str(toy_env), str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [process.communicate(timeout=600)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), "\n".join(logs)[-3000:]
    # Every row was trained by exactly one of the two processes; the other skipped it or waited for it.
    trained = [line for log in logs for line in log.splitlines() if "training / loading" in line]
    assert len(trained) == 2, "\n".join(logs)
    results = tmp_path / "results" / "toy_digits"
    rows = ["harness_toy.toy_digits_micro", "harness_toy_short.toy_digits_micro"]
    for row in rows:
        assert load_result(results / f"{row}.seed0.json")["metrics"]["fvd_pixels@1x"]["value"] > 0
    assert not list(results.glob(".*.tmp")), "a temp file was left behind"
    board = (tmp_path / "board" / "README.md").read_text()
    assert all(f"`{row}`" in board for row in rows)  # whichever process rendered last saw both rows


@pytest.mark.slow
def test_bench_in_two_lanes_does_each_row_once_and_equals_one_process(toy_env, tmp_path, monkeypatch, capfd):
    """`lanes=2`: two spawned one-thread processes take rows from one queue; every row is trained once (with
    --force too, which must not make a lane redo a row the other just finished) and scores as in one process."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the lanes unpickle toy_harness.use_test_extractors
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    single = {load_result(path)["id"]: load_result(path)
              for path in run_recipe("micro", micro_overrides(tmp_path / "single", toy_env))}
    capfd.readouterr()
    overrides = micro_overrides(tmp_path / "lanes", toy_env)
    for force in (False, True):
        paths = run_recipe("micro", overrides, force=force, lanes=2, lane_setup=use_test_extractors)
        log = capfd.readouterr().out
        trained = [line for line in log.splitlines() if "training / loading" in line]
        assert len(trained) == 2 and all(" lane " in line for line in trained), log
        assert "2 lanes of 1 thread(s) each" in log and "`harness_toy.toy_digits_micro`" in (
            tmp_path / "lanes" / "board" / "README.md").read_text()
        for path in paths:
            got = load_result(path)
            assert got["cost"]["hardware"]["torch_threads"] == 1
            for key, entry in single[got["id"]]["metrics"].items():
                expected = None if entry["value"] is None else pytest.approx(entry["value"], rel=1e-4, abs=1e-9)
                assert got["metrics"][key]["value"] == expected, key


@pytest.mark.slow
def test_a_failed_lane_is_an_error_and_keeps_the_other_lanes_rows(toy_env, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    overrides = micro_overrides(tmp_path, toy_env)
    with pytest.raises(ConfigError, match="lanes must be >= 1"):
        run_recipe("micro", overrides, lanes=0)
    with pytest.raises(RuntimeError, match=r"lane \d \(exit code 1\) failed .* rerun the same command"):
        run_recipe("micro", overrides, lanes=2, lane_setup=fail_the_short_row)
    results = tmp_path / "results" / "toy_digits"
    assert load_result(results / "harness_toy.toy_digits_micro.seed0.json")["metrics"]["fvd_pixels@1x"]["value"] > 0
    assert not (results / "harness_toy_short.toy_digits_micro.seed0.json").exists()


def test_a_rows_initial_weights_depend_on_its_training_seed_only(toy_env, tmp_path, monkeypatch):
    """Whatever ran before in the process (other rows), a row starts from the same weights, as under `zoo train`."""
    import zoo.training

    class Stop(Exception):
        pass

    initial = []

    def record_and_stop(model, *args, **kwargs):
        initial.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        raise Stop

    monkeypatch.setattr(zoo.training, "train_model", record_and_stop)
    recipe = load_recipe("micro", micro_overrides(tmp_path, toy_env, models="[video_diffusion]"))
    protocol = load_protocol(toy_env)
    for consumed in (0, 7):
        torch.rand(consumed)  # another row's training would move the global RNG like this
        with pytest.raises(Stop):
            runner_module.prepare_model("video_diffusion", recipe, protocol, tmp_path / f"run{consumed}",
                                        torch.device("cpu"))
    assert torch.equal(initial[0], initial[1])


def test_recipe_variants_run_one_model_as_several_rows(toy_env, tmp_path):
    variants = ["variants.toy_clean.model=harness_toy", "variants.toy_clean.overrides.noise=0.0",
                "variants.toy_noisy.model=harness_toy", "variants.toy_noisy.overrides.noise=0.4"]
    overrides = [*micro_overrides(tmp_path, toy_env, models="[toy_clean,toy_noisy]"), *variants]
    recipe = load_recipe("micro", overrides)
    assert recipe.row_settings("toy_noisy").model == "harness_toy"
    assert run_settings_sha256("toy_clean", recipe) != run_settings_sha256("toy_noisy", recipe)
    clean, noisy = (load_result(path) for path in run_recipe("micro", overrides))
    assert (clean["id"], noisy["id"]) == ("toy_clean.toy_digits_micro", "toy_noisy.toy_digits_micro")
    assert clean["model"]["variant_of"] == noisy["model"]["variant_of"] == "harness_toy"
    assert (clean["model"]["config"]["noise"], noisy["model"]["config"]["noise"]) == (0.0, 0.4)
    assert clean["metrics"]["flicker@1x"]["value"] < noisy["metrics"]["flicker@1x"]["value"]
    with pytest.raises(ConfigError, match="variant 'toy_bad' runs unknown model 'harness_tyo'"):
        resolve_models(load_recipe("micro", [*overrides, "variants.toy_bad.model=harness_tyo"]))


@pytest.mark.parametrize("name", [name for name in list_recipes() if not name.startswith("gpu_")])
def test_every_row_of_the_cpu_recipes_builds_for_its_protocol(name):
    """Each row's model, built with the recipe's settings, makes the protocol's frames (e.g. RGB autoencoders for
    bouncing_shapes): a recipe fails here, not an hour into `zoo bench`."""
    recipe = load_recipe(name)
    protocol = load_protocol(recipe.protocol, recipe.protocol_overrides)
    for row in resolve_models(recipe):
        settings = recipe.row_settings(row)
        model = create_model(settings.model, config_path=settings.config_path,
                             overrides=runner_module.model_overrides(recipe, protocol, row))
        runner_module._check_frames(model, protocol, f"{name}: {row}")


def test_pattern_keys_apply_to_every_matching_row_before_its_own_entries():
    recipe = load_recipe("micro", ['model_overrides={"*": {"ema_decay": 0.9, "dim": 8}, "video_ar": {"dim": 16}}',
                                   'model_trainer={"video_*": {"max_steps": 3}}'])
    assert recipe.row_settings("video_diffusion").overrides == {"ema_decay": 0.9, "dim": 8}
    assert recipe.row_settings("video_ar").overrides == {"ema_decay": 0.9, "dim": 16}  # its own entry wins
    assert recipe.row_settings("video_ar").trainer["max_steps"] == 3
    assert recipe.pretrained_id("video_ar") == "video_ar.moving_digits_micro"


def test_a_row_tag_names_the_protocol_once():
    """A recipe's own `tag` is used as is; else a recipe named after its protocol is its own tag, and any other is
    prefixed with the protocol's name."""
    assert load_recipe("quick").row_tag == "moving_digits_quick"
    assert load_recipe("horizon_bouncing_shapes").row_tag == "horizon_bouncing_shapes"  # on bouncing_shapes_horizon
    assert load_recipe("horizon_moving_digits").row_tag == "horizon_moving_digits"
    assert load_recipe("moving_digits_full").row_tag == "moving_digits_full"
    assert load_recipe("block_size_sweep").row_tag == "moving_digits_sweep"  # its own tag
    assert load_recipe("micro", ["protocol=bouncing_shapes"]).row_tag == "bouncing_shapes_micro"
    assert load_recipe("micro", ["tag=mine"]).pretrained_id("video_ar") == "video_ar.mine"


def test_autoencoders_are_bound_by_kind_from_the_protocols_dataset():
    """RGB bouncing_shapes gives every model its KL/VQ autoencoder by the kind the model declares; moving_digits
    (the defaults) adds no override, so its run settings are what they were."""
    rgb = load_recipe("horizon_bouncing_shapes")
    assert rgb.row_settings("video_ar").overrides == {"autoencoder": "bouncing_shapes_vq"}
    assert rgb.row_settings("video_diffusion").overrides == {"autoencoder": "bouncing_shapes_kl"}
    assert rgb.row_settings("diffusion_clips_ar_extend").overrides == {"kl_autoencoder": "bouncing_shapes_kl",
                                                                       "vq_autoencoder": "bouncing_shapes_vq"}
    assert load_recipe("quick").row_settings("video_ar").overrides == {}
    mine = load_recipe("horizon_bouncing_shapes", ["autoencoders.kl=/ckpt/kl.safetensors",
                                                   "model_overrides.video_diffusion.autoencoder=mine_kl"])
    assert mine.row_settings("interleaved_latent").overrides == {"autoencoder": "/ckpt/kl.safetensors"}
    assert mine.row_settings("video_diffusion").overrides == {"autoencoder": "mine_kl"}  # the recipe's own wins
    assert mine.row_settings("video_ar").overrides == {"autoencoder": "bouncing_shapes_vq"}
    with pytest.raises(ConfigError, match=r"'video_ar' needs a vq autoencoder \(autoencoder\) and dataset "
                                          r"'video_folder' ships none; set autoencoders.vq="):
        load_recipe("micro", ["protocol=bair_64"]).row_settings("video_ar")


def test_lanes_take_the_dearest_rows_first_by_their_recorded_stage_seconds(tmp_path):
    """A row's cost is the least stage-seconds total its existing results record (any seed); rows with no result
    (or an unreadable one) have no estimate and go first, then the dearest."""
    folder = tmp_path / "results" / "proto"
    folder.mkdir(parents=True)
    recorded = {"cheap.t": [[10.0, 5.0]], "dear.t": [[300.0, 20.0], [900.0, 1.0]], "middle.t": [[100.0]]}
    for row_id, seeds in recorded.items():
        for seed, stages in enumerate(seeds):
            cost = {"stage_seconds": {f"stage{i}": seconds for i, seconds in enumerate(stages)}}
            (folder / f"{row_id}.seed{seed + 5}.json").write_text(json.dumps({"cost": cost}))
    (folder / "broken.t.seed0.json").write_text("{not json")
    rows = [runner_module._Row(index, 5, name, {0: folder / f"{name}.t.seed0.json"})
            for index, name in enumerate(["cheap", "middle", "unscored", "dear", "broken"], start=1)]
    assert runner_module._recorded_seconds(rows[3]) == 320.0  # the least contended of its two seeds
    assert [row.name for row in runner_module.longest_first(rows)] == ["unscored", "broken", "dear", "middle", "cheap"]
