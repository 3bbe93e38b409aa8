"""The model throughput script: one row per measurement, positive finite rates, cache on/off and step sweeps."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import yaml

from benchmarks.bench_models import diffusion_step_keys, main, recipe_row
from zoo.registry import model_config

# A minute-sized interleaved_latent: it has a KV cache and a diffusion head, so every kind of row appears.
TINY_INTERLEAVED = {
    "clip_length": 3,
    "rollout_keep_frames": 1,
    "text_dim": 16,
    "latent_ar": {
        "transformer": {"dim": 32, "depth": 1, "heads": 2, "max_positions": 256},
        "head_width": 32,
        "head_depth": 1,
        "diffusion": {"num_sampling_steps": 3},
    },
}


def test_finds_every_sampler_step_count_in_a_config():
    assert diffusion_step_keys(model_config("video_ar")) == {}
    assert diffusion_step_keys(model_config("ar_keyframes_diffusion")) == {
        "planner.diffusion.num_sampling_steps": 10,
        "renderer.diffusion.num_sampling_steps": 10,
    }


def test_prints_a_row_per_measurement_with_positive_rates(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_INTERLEAVED))
    results = main([
        "--models", "interleaved_latent", "--config", str(config), "--batch", "2", "--frames", "4",
        "--steps", "1,2", "--train-steps", "1",
    ])
    rows = [(r.kind, r.frames, r.kv_cache, r.sampling_steps) for r in results]
    assert [r.precision for r in results if r.kind == "train"] == ["32", "bf16-sdpa", "bf16"]
    assert rows == [
        ("train", 3, None, None),
        ("train", 3, None, None),
        ("train", 3, None, None),
        ("generate", 4, True, "3"),
        ("generate", 4, False, "3"),
        ("generate", 4, True, "1"),
        ("generate", 4, True, "2"),
    ]
    for result in results:
        assert result.seconds > 0 and math.isfinite(result.rate) and result.rate > 0
        if result.kind == "generate":
            assert math.isclose(result.rate, 2 * 4 / result.seconds)
    output = capsys.readouterr().out
    printed = re.findall(r"^interleaved_latent\s+(train/\S+|generate)\s+(\d+)\s+(\S+)\s+(\S+)\s+([\d.]+)\s", output, re.M)
    assert [(kind, int(frames), cache, steps) for kind, frames, cache, steps, _ in printed] == [
        ("train/32", 3, "-", "-"), ("train/bf16-sdpa", 3, "-", "-"), ("train/bf16", 3, "-", "-"), ("generate", 4, "on", "3"), ("generate", 4, "off", "3"),
        ("generate", 4, "on", "1"), ("generate", 4, "on", "2"),
    ]
    assert all(float(rate) > 0 for *_, rate in printed)
    assert "random weights (timing only)" in output
    # bf16 autocast moves the loss by rounding only (bfloat16 keeps ~3 significant digits).
    error = float(re.search(r"bf16 loss vs fp32 on the same clips and noise: (\S+) relative", output).group(1))
    assert 0 < error < 0.05


def test_recipe_times_each_model_as_the_recipe_trains_it(capsys):
    config, overrides = recipe_row("zoo_moving_digits", "video_diffusion")
    assert config is None and overrides["conv_width"] == 64 and overrides["image_size"] == 32
    assert overrides["diffusion"]["prediction_type"] == "v_prediction"
    built = model_config("video_diffusion", overrides=overrides)
    assert built.conv_width == 64 and built.diffusion.guidance_scale == 4.0
    with pytest.raises(SystemExit):
        main(["--models", "video_diffusion", "--recipe", "zoo_moving_digits", "--config", "video_ar_large"])
    assert "--config and --recipe both choose the config" in capsys.readouterr().err


def test_rejects_an_unknown_precision(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--models", "video_ar", "--precisions", "fp8"])
    assert "unknown precision 'fp8'" in capsys.readouterr().err


def test_protocol_timing_gives_seconds_per_video_at_each_rollout_and_the_cost_of_a_count(tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_INTERLEAVED))
    [cost] = main(["--protocol", "moving_digits", "--models", "interleaved_latent", "--config", str(config),
                   "--videos", "512,256"])
    assert cost.model == "interleaved_latent" and cost.batch == 32 and set(cost.seconds_per_video) == {1, 2}
    assert all(s > 0 and math.isfinite(s) for s in cost.seconds_per_video.values())
    total = 512 * cost.seconds_per_video[1] + 256 * cost.seconds_per_video[2]
    assert math.isclose(cost.cost({1: 512, 2: 256}), total)
    output = capsys.readouterr().out
    assert "512 @1x (s)" in output and "256 @2x (s)" in output
    row = re.search(r"^interleaved_latent\s+32-true\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                    output, re.M)
    assert row is not None and math.isclose(float(row.group(5)), total, abs_tol=0.06)
    # moving_digits does not share rollout prefixes; where a protocol does, the 1x videos a 2x rollout makes are free.
    assert not cost.shares_prefixes
    shared = dataclasses.replace(cost, shares_prefixes=True)
    assert math.isclose(shared.cost({1: 512, 2: 256}), total - 256 * cost.seconds_per_video[1])
    assert math.isclose(shared.cost({1: 128, 2: 256}), 256 * cost.seconds_per_video[2])


def test_protocol_timing_puts_sampling_precisions_side_by_side(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_INTERLEAVED))
    costs = main(["--protocol", "moving_digits", "--models", "interleaved_latent", "--config", str(config),
                  "--sampling-precisions", "32-true,bf16-mixed"])
    assert [cost.sampling_precision for cost in costs] == ["32-true", "bf16-mixed"]
    output = capsys.readouterr().out
    rows = re.findall(r"^interleaved_latent\s+(32-true|bf16-mixed)\s.*\s([\d.]+)\s+([\d.]+)x$", output, re.M)
    assert [precision for precision, _, _ in rows] == ["32-true", "bf16-mixed"]
    wanted = {1: 64, 2: 32}  # moving_digits' counts
    for (_, total, speedup), cost in zip(rows, costs, strict=True):
        assert math.isclose(float(total), cost.cost(wanted), abs_tol=0.06)
        assert math.isclose(float(speedup), costs[0].cost(wanted) / cost.cost(wanted), abs_tol=0.006)
    with pytest.raises(SystemExit):
        main(["--protocol", "moving_digits", "--models", "interleaved_latent", "--sampling-precisions", "bf16"])
    assert "unknown sampling precision 'bf16'" in capsys.readouterr().err


def test_lanes_compares_one_threaded_process_with_one_thread_processes_side_by_side(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_INTERLEAVED))
    results = main(["--models", "interleaved_latent", "--config", str(config), "--batch", "2", "--train-steps", "1",
                    "--precisions", "32,bf16", "--lanes", "2"])
    ((name, precision, threaded, side_by_side), bf16) = results
    assert (name, precision, bf16[:2]) == ("interleaved_latent", "32", ("interleaved_latent", "bf16"))
    assert threaded > 0 and side_by_side > 0 and math.isfinite(threaded + side_by_side)
    output = capsys.readouterr().out
    row = re.search(r"^interleaved_latent\s+32\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$", output, re.M)
    assert row is not None and "1 x 2 threads" in output and "2 x 1 thread" in output
    assert float(row.group(3)) == pytest.approx(side_by_side / threaded, abs=0.01)
    # The before/after: fp32 in one two-thread process against bf16 in two one-thread processes, in clips/s.
    summary = re.search(r"^interleaved_latent\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$", output, re.M)
    assert summary is not None and "fp32 in 1 x 2 threads (before) vs bf16 in 2 x 1 thread" in output
    assert float(summary.group(1)) == pytest.approx(2 * threaded, abs=0.06)
    assert float(summary.group(2)) == pytest.approx(2 * bf16[3], abs=0.06)
