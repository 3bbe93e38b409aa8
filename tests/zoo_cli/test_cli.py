"""The `zoo` command: help, overrides, plugins, one-line errors for bad input, NaN stop, train/sample round trip."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from zoo.data import read_video
from zoo.plugins import import_plugins
from zoo_cli import main, parse_args

PLUGIN = str(Path(__file__).parents[1] / "zoo" / "plugin_models.py")
plugin = sys.modules[import_plugins([PLUGIN])[0]]

TINY_TRAIN = ["trainer.batch_size=2", "trainer.enable_progress_bar=false", "data.train_size=8"]


def zoo(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    """Run `zoo --plugin plugin_models.py *args` in process: (exit code, stdout, stderr lines)."""
    code = main(["--plugin", PLUGIN, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def assert_one_line_error(code: int, err: list[str], pattern: str) -> None:
    assert code == 2
    assert len(err) == 1 and err[0].startswith("zoo: error: "), err
    assert re.search(pattern, err[0]), err[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step tiny_denoiser run folder, trained through `zoo_cli.main`."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["--plugin", PLUGIN, "train", "tiny_denoiser", "--data", "moving_digits", "--out", str(out),
                 "trainer.max_steps=2", *TINY_TRAIN])
    assert code == 0
    return out


@pytest.mark.parametrize("command", ["list", "train", "sample", "bench", "leaderboard"])
def test_help_of_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: zoo {command}")


def test_overrides_may_come_anywhere_after_the_command() -> None:
    args = parse_args(["train", "m", "model.a=1", "--data", "d", "trainer.b=2", "--out", "o", "data.c=3"])
    assert (args.model, args.data, args.out) == ("m", "d", "o")
    assert args.overrides == ["model.a=1", "trainer.b=2", "data.c=3"]
    for stray in (["train", "m", "--data", "d", "--bogus"], ["sample", "c.ckpt", "--frames", "2", "--out", "x", "a=1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(stray)
        assert exit_info.value.code == 2


def test_plugins_register_models_from_outside_the_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = zoo(["list"], capsys)
    assert code == 0 and "tiny_denoiser" in out.splitlines()[0]
    monkeypatch.setenv("ZOO_PLUGINS", f"{PLUGIN},json")  # module paths and importable names, comma-separated
    assert main(["list"]) == 0 and "tiny_denoiser" in capsys.readouterr().out
    code, _, err = zoo(["--plugin", "no_such_module_xyz", "list"], capsys)
    assert_one_line_error(code, err, r"cannot import plugin 'no_such_module_xyz'.*--plugin / ZOO_PLUGINS")


TRAIN = ["train", "tiny_denoiser", "--data", "moving_digits"]
BAD_TRAIN_INPUT = {
    "unknown model": (["train", "tiny_denoisr", "--data", "moving_digits"],
                      r"unknown model 'tiny_denoisr' \(did you mean 'tiny_denoiser'\?\); `zoo list`"),
    "unknown dataset": (["train", "tiny_denoiser", "--data", "moving_digit"],
                        r"unknown dataset 'moving_digit' \(did you mean 'moving_digits'\?\)"),
    "mistyped model key": ([*TRAIN, "model.hiden=8"], r"unknown key 'hiden' .*did you mean 'hidden'"),
    "mistyped trainer key": ([*TRAIN, "trainer.max_step=8"], r"unknown key 'max_step' .*did you mean 'max_steps'"),
    "mistyped data key": ([*TRAIN, "data.train_sise=8"], r"unknown key 'train_sise' .*did you mean 'train_size'"),
    "key without group": ([*TRAIN, "max_steps=8"], r"must start with one of model\., data\., trainer\. "
                                                   r"\(did you mean trainer\.max_steps\?\)"),
    "unknown group": ([*TRAIN, "modle.hidden=8"], r"must start with one of .*\(did you mean 'model'\?\)"),
    "wrong type": ([*TRAIN, "trainer.max_steps=many"], r"bad value for 'max_steps'.*'many'"),
    "wrong model type": ([*TRAIN, "model.hidden=wide"], r"bad value for 'hidden'"),
    "malformed override": ([*TRAIN, "trainer.max_steps=[1,"], r"cannot parse override 'trainer.max_steps=\[1,' "
                                                              r"\(.*\); values are YAML"),
    "missing root": (["train", "tiny_denoiser", "--data", "video_folder"],
                     r"missing required value\(s\) \['root'\].*data\.<key>=<value>"),
    "uneven global batch": ([*TRAIN, "trainer.batch_size=3", "trainer.accelerator=cpu", "trainer.strategy=ddp",
                             "trainer.devices=2"], r"batch_size=3 is the global batch .* 2 processes .* use 2 or 4"),
    "unknown trainer preset": ([*TRAIN, "--trainer", "gpus"],
                               r"unknown trainer preset 'gpus' \(did you mean 'gpu'\?\); presets: ddp_cpu, default"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN_INPUT))
def test_bad_train_input_is_one_line_before_any_work(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, pattern = BAD_TRAIN_INPUT[case]
    code, _, err = zoo([*argv, "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "run/checkpoints").exists()


def test_folder_without_videos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "videos/some_class").mkdir(parents=True)
    (tmp_path / "videos/some_class/notes.txt").write_text("not a video")
    argv = ["train", "tiny_denoiser", "--data", "video_folder", "--out", str(tmp_path / "run")]
    code, _, err = zoo([*argv, f"data.root={tmp_path / 'videos'}"], capsys)
    assert_one_line_error(code, err, r"no videos found in .*videos \(looked for \.mp4")


def test_train_refuses_to_resume_from_an_unusable_checkpoint(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "other_shapes"
    (foreign / "checkpoints").mkdir(parents=True)
    original = (trained_run / "checkpoints/last.ckpt").read_bytes()
    (foreign / "checkpoints/last.ckpt").write_bytes(original)
    code, _, err = zoo([*TRAIN, "--out", str(foreign), "model.hidden=8", *TINY_TRAIN], capsys)
    assert_one_line_error(code, err, r"holds weights of 'tiny_denoiser' that do not fit 'tiny_denoiser' .*"
                                     r"first difference: net\.0\.bias.*pass another --out")
    truncated = tmp_path / "truncated"
    (truncated / "checkpoints").mkdir(parents=True)
    (truncated / "checkpoints/last.ckpt").write_bytes(original[: len(original) // 2])
    code, _, err = zoo([*TRAIN, "--out", str(truncated), *TINY_TRAIN], capsys)
    assert_one_line_error(code, err, r"cannot resume from .*last\.ckpt .*delete it to start over")
    # Nothing computed is lost: both files are left exactly as they were.
    assert (foreign / "checkpoints/last.ckpt").read_bytes() == original
    assert (truncated / "checkpoints/last.ckpt").read_bytes() == original[: len(original) // 2]


def test_sample_refuses_bad_checkpoints(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = trained_run / "checkpoints/last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:1000])
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["hyper_parameters"]["config"]["hidden"] = 8  # claims a wider model than its weights
    other_shapes = tmp_path / "other_shapes.ckpt"
    torch.save(checkpoint, other_shapes)
    out = str(tmp_path / "x.gif")
    for path, pattern in [(tmp_path / "missing.ckpt", r"checkpoint not found: .*missing\.ckpt"),
                          (truncated, r"cannot read checkpoint .*truncated\.ckpt \(truncated or not a torch"),
                          (other_shapes, r"checkpoint .*other_shapes\.ckpt does not fit model 'tiny_denoiser'")]:
        code, _, err = zoo(["sample", str(path), "--frames", "2", "--out", out], capsys)
        assert_one_line_error(code, err, pattern)
    code, _, err = zoo(["sample", str(good), "--frames", "0", "--out", out], capsys)
    assert_one_line_error(code, err, r"num_videos and num_frames must be >= 1")
    assert not Path(out).exists()


def test_non_finite_loss_stops_with_step_and_kept_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Adam moves every weight by ~learning_rate per step: with 1e20 the step-1 outputs overflow float32.
    code, _, err = zoo([*TRAIN, "--out", str(tmp_path / "run"), "model.learning_rate=1e20", "trainer.max_steps=10",
                        "trainer.checkpoint_every_n_steps=1", *TINY_TRAIN], capsys)
    last = tmp_path / "run/checkpoints/last.ckpt"
    pattern = rf"non-finite training loss (inf|nan) at global step 1; .*\({re.escape(str(last))}, step 1\)"
    assert_one_line_error(code, err, pattern)
    assert torch.load(last, weights_only=True)["global_step"] == 1


@pytest.mark.slow
def test_train_then_sample_a_real_model_in_subprocesses(tmp_path: Path) -> None:
    """`zoo train video_diffusion` for 2 tiny steps, then `zoo sample` 10 frames (> its 8-frame clips) to a gif."""
    train = plugin.run_zoo(["train", "video_diffusion", "--data", "moving_digits", "--out", "run", "model.dim=32",
                            "model.depth=1", "model.diffusion.num_sampling_steps=2", "trainer.max_steps=2",
                            *TINY_TRAIN], cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert "training video_diffusion" in train.stdout and "done: 2 steps" in train.stdout
    # Nothing for the user to act on: the frozen autoencoder's eval mode, Lightning's own deprecations and its
    # litlogger advert stay out of the output.
    assert train.stderr == ""
    assert "litlogger" not in train.stdout
    sample = plugin.run_zoo(["sample", "run/checkpoints/last.ckpt", "--frames", "10", "--num-videos", "2",
                             "--prompt", "a 3 moving left", "--out", "samples.gif"], cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert "wrote 2 x 10 frames to samples.gif" in sample.stdout
    frames = read_video(tmp_path / "samples.gif")
    assert tuple(frames.shape) == (10, 32, 2 * 32 + 2, 3)  # two 32x32 videos side by side, 2 px apart


@pytest.mark.parametrize("command", ["score", "reference"])
def test_help_of_the_scoring_subcommands(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: zoo {command}")


def test_score_refuses_unknown_protocols_and_folders_without_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = zoo(["score", str(tmp_path), "--protocol", "moving_digit"], capsys)
    assert_one_line_error(code, err, r"unknown protocol 'moving_digit' \(did you mean 'moving_digits'\?\)")
    code, _, err = zoo(["score", str(tmp_path), "--protocol", "moving_digits", "num_real=16"], capsys)
    assert code == 2 and err[0] == f"zoo: error: {tmp_path} cannot be scored on protocol 'moving_digits' (1 problem):"
    assert err[1].startswith(f"  - no manifest.json in {tmp_path}")
    code, _, err = zoo(["reference", "build", "moving_digits", "num_reel=16"], capsys)
    assert_one_line_error(code, err, r"unknown key 'num_reel'.*did you mean 'num_real'")


def test_bench_prints_the_leaderboard_table_once(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks.harness

    def run_recipe(recipe, overrides, force=False, lanes=1):  # run_recipe ends by printing the table
        print(f"LEADERBOARD TABLE ({lanes} lanes)")
        return [Path("a.json")]

    monkeypatch.setattr(benchmarks.harness, "run_recipe", run_recipe)
    code, out, _ = zoo(["bench", "micro"], capsys)
    assert code == 0 and out.count("LEADERBOARD TABLE (1 lanes)") == 1 and "1 result file(s)" in out
    assert "LEADERBOARD TABLE (2 lanes)" in zoo(["bench", "micro", "--lanes", "2"], capsys)[1]


def test_train_domain_net_runs_its_recipe_with_overrides_of_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`zoo train domain_net --data <dataset>` trains the benchmark's feature network from its recipe, beside
    `zoo train autoencoder`; overrides are the recipe's keys."""
    code, out, err = zoo(["train", "domain_net", "--data", "moving_digits", "--out", str(tmp_path), "steps=2",
                          "batch_size=4", "eval_clips=8", "data.train_size=8", "network.width=16"], capsys)
    assert code == 0, err
    assert (tmp_path / "domain_moving_digits.safetensors").is_file() and (tmp_path / "domain_moving_digits.json").is_file()
    assert f"domain_moving_digits saved to {tmp_path}" in out
    code, _, err = zoo(["train", "domain_net", "--data", "moving_digits", "stepz=2"], capsys)
    assert_one_line_error(code, err, r"unknown key 'stepz'.*did you mean 'steps'")
    code, _, err = zoo(["train", "domain_net", "--data", "video_folder"], capsys)
    assert_one_line_error(code, err, r"no domain-network recipe .*domain_net_video_folder.yaml; datasets that have "
                                     r"one: bouncing_shapes, moving_digits")
