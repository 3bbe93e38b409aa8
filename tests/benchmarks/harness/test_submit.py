"""`zoo leaderboard submit`: a result with its sample folder is re-scored here (verified) or refused; without it,
it is stored self-reported and marked; an unconditional row in a text protocol is marked and not ranked on prompt
adherence. Uses the toy protocol and pixel-statistics extractors of toy_harness.py (fast, offline)."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from toy_harness import write_folder

from benchmarks.harness import load_protocol, load_reference, score_external
from benchmarks.harness import scoring as scoring_module
from benchmarks.harness.verify import RELATIVE_TOLERANCE, verify_submission
from benchmarks.leaderboard import ResultError, build_leaderboard, load_boards, print_table, submit_result
from zoo_cli import main


@pytest.fixture(autouse=True)
def _fresh_statistics(monkeypatch):
    monkeypatch.setattr(scoring_module, "_REAL_STATES", {})


@pytest.fixture
def submission(toy_env, tmp_path):
    """A sample folder of 16 prompted toy videos (two shards) scored by `zoo score` elsewhere: (result path,
    the folder, the result)."""
    protocol = load_protocol(toy_env)
    reference = load_reference(protocol)
    real = reference.clips(range(16))[:, : protocol.frames].float()
    noise = torch.randint(-20, 21, real.shape, generator=torch.Generator().manual_seed(0)).float()
    samples = tmp_path / "cluster" / "samples"
    write_folder(samples, (real + noise).clamp(0, 255).to(torch.uint8), protocol, prompts=reference.texts)
    path, result = score_external(samples, protocol, tmp_path / "cluster" / "results", tag="cluster")
    return path, samples, result


def _submit(*args: str, results: Path, board: Path) -> int:
    return main(["leaderboard", "submit", *args, "--results-dir", str(results), "--out-dir", str(board)])


def _without_verification(data: dict) -> dict:
    return {key: value for key, value in data.items() if key != "verification"}


def test_a_submission_with_its_sample_folder_is_verified(submission, tmp_path, capsys):
    path, samples, result = submission
    assert set(result["provenance"]["samples_sha256"]) == {"videos_00000.npz", "videos_00001.npz"}
    results, board = tmp_path / "results", tmp_path / "board"
    assert _submit(str(path), "--samples", str(samples), "--device", "cpu", results=results, board=board) == 0
    out = capsys.readouterr().out
    assert "verified: re-scored" in out
    stored_path = results / "toy_digits" / "external.cluster.seed0.json"
    stored = json.loads(stored_path.read_text())
    assert _without_verification(stored) == result  # the submitted numbers, stored as they came
    verification = stored["verification"]
    assert verification["status"] == "verified" and verification["rtol"] == RELATIVE_TOLERANCE
    assert (verification["manifests_checked"], verification["files_checked"]) == (1, 2)
    assert verification["device"] == "cpu" and "rescored" in verification and "submitted" in verification
    assert (stored_path.with_suffix(".gif")).is_file()  # the strip beside the result came along
    markdown = (board / "README.md").read_text()
    row = next(line for line in markdown.splitlines() if "`external.cluster`" in line)
    assert "†" not in row and "self-reported, not re-scored here" not in markdown.split("## toy_digits")[1]
    [csv_row] = csv.DictReader(io.StringIO((board / "leaderboard.csv").read_text()))
    assert csv_row["verification"] == "verified" and csv_row["conditioned_on"] == "text"


def _tamper_video(samples: Path, shard: str = "videos_00001.npz") -> None:
    with np.load(samples / shard) as data:
        videos = data["videos"].copy()
    videos[3] = 255 - videos[3]  # one video of the shard changed
    np.savez_compressed(samples / shard, videos=videos)


def test_a_tampered_folder_is_refused_naming_the_file(submission, tmp_path, capsys):
    path, samples, _ = submission
    results, board = tmp_path / "results", tmp_path / "board"
    _tamper_video(samples)
    assert _submit(str(path), "--samples", str(samples), "--device", "cpu", results=results, board=board) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "videos_00001.npz has sha256" in error and "videos_00000.npz" not in error
    assert not results.exists()  # nothing stored, nothing rendered
    # A changed manifest is named too.
    manifest = json.loads((samples / "manifest.json").read_text())
    (samples / "manifest.json").write_text(json.dumps({**manifest, "fps": 16}))
    with pytest.raises(ResultError, match=r"manifest\.json has sha256 .* the result scored"):
        verify_submission(json.loads(path.read_text()), samples)


def test_without_file_sha256s_a_tampered_video_is_caught_by_the_re_score(submission, tmp_path):
    path, samples, result = submission
    older = copy.deepcopy(result)
    del older["provenance"]["samples_sha256"]  # a result scored before video sha256s were recorded
    _tamper_video(samples)
    with pytest.raises(ResultError) as info:
        verify_submission(older, samples)
    message = str(info.value)
    assert "\n" not in message and "does not reproduce external.cluster seed 0" in message
    assert "fvd_pixels@1x submitted" in message and "relative difference" in message


def test_an_edited_metric_is_refused_naming_the_metric(submission, tmp_path):
    path, samples, result = submission
    edited = copy.deepcopy(result)
    claimed = edited["metrics"]["fvd_pixels@1x"]["value"]
    edited["metrics"]["fvd_pixels@1x"]["value"] = claimed * 0.9  # a better FVD than the videos give
    source = tmp_path / "edited.json"
    source.write_text(json.dumps(edited))
    results = tmp_path / "results"
    with pytest.raises(ResultError) as info:
        verify_submission(json.loads(source.read_text()), samples)
    message = str(info.value)
    assert "\n" not in message and "nothing stored" in message
    assert f"fvd_pixels@1x submitted {claimed * 0.9:.7g}, re-scored {claimed:.7g} (relative difference 1.0e-01)" \
        in message
    assert "flicker" not in message and "prompt_adherence" not in message  # only what differs is listed
    assert not results.exists()
    # A difference inside the tolerance (float reduction order on another machine) is no difference.
    edited["metrics"]["fvd_pixels@1x"]["value"] = claimed * (1 + RELATIVE_TOLERANCE / 10)
    assert verify_submission(edited, samples)["status"] == "verified"
    # A claimed conditioning the manifests do not bear out is refused like a number.
    edited["metrics"]["fvd_pixels@1x"]["value"] = claimed
    edited["model"]["conditioned_on"] = "none"
    with pytest.raises(ResultError, match="model.conditioned_on submitted 'none', re-scored 'text'"):
        verify_submission(edited, samples)


def test_without_samples_a_result_is_stored_self_reported_and_marked(submission, tmp_path):
    path, samples, result = submission
    claimed = copy.deepcopy(result)
    claimed["verification"] = {"status": "verified", "submitted": "2025-01-01T00:00:00+00:00",
                               "rescored": "2025-01-01T00:00:00+00:00", "git_commit": None, "device": "cpu",
                               "rtol": 1.0}
    source = path.with_name("claims_verified.json")
    source.write_text(json.dumps(claimed))
    results, board = tmp_path / "results", tmp_path / "board"
    stored_path = submit_result(source, results)  # what the file claims is not what is stored
    stored = json.loads(stored_path.read_text())
    assert stored["verification"]["status"] == "self-reported" and _without_verification(stored) == result
    files = build_leaderboard(results, board)
    markdown, page = files["markdown"].read_text(), files["html"].read_text()
    row = next(line for line in markdown.splitlines() if "`external.cluster`" in line)
    assert "`external.cluster` †" in row
    assert "† self-reported, not re-scored here: submitted without its sample folder" in markdown
    assert "except rows marked †" in markdown  # the rule, stated once for the page
    assert 'class="mark self-reported"' in page and 'class="note table-note"' in page
    [csv_row] = csv.DictReader(io.StringIO(files["csv"].read_text()))
    assert csv_row["verification"] == "self-reported"
    console = Console(record=True, width=200)
    print_table(results, console)
    assert "external.cluster †" in console.export_text()
    # The same numbers submitted again with their folder are verified: the row loses its mark.
    verification = verify_submission(result, samples)
    assert submit_result(path, results, verification) == stored_path
    assert json.loads(stored_path.read_text())["verification"]["status"] == "verified"
    # ... and a later self-reported copy of them does not take that back.
    submit_result(path, results)
    assert json.loads(stored_path.read_text())["verification"]["status"] == "verified"
    assert "†" not in build_leaderboard(results, board)["markdown"].read_text().split("## toy_digits")[1]


def test_an_unconditional_submission_is_marked_and_not_ranked_on_prompt_adherence(tmp_path, make_result,
                                                                                     write_result):
    root = tmp_path / "results"
    rows = {"alpha": ("text", 10.0, 0.5), "beta": ("text", 12.0, 0.4), "uncond": ("none", 6.0, 0.9)}
    for model, (condition, fvd, adherence) in rows.items():
        result = make_result(model, fvd=fvd, adherence=adherence)
        result["protocol"]["spec"] = {"condition": "text"}  # the protocol is text-conditioned
        result["model"]["conditioned_on"] = condition
        write_result(root, result)
    (board,), _ = load_boards(root)
    uncond = next(row for row in board.rows if row.id == "uncond.toy_micro")
    alpha = next(row for row in board.rows if row.id == "alpha.toy_micro")
    assert board.off_condition(uncond) and not board.off_condition(alpha)
    assert board.rank("prompt_adherence@1x", uncond) is None  # its 0.9 is not ranked against prompted rows
    assert board.rank("prompt_adherence@1x", alpha) == 1 and board.best("prompt_adherence@1x") == 0.5
    assert board.rank("fvd_domain@1x", uncond) == 1  # the videos themselves are ranked: the baseline
    files = build_leaderboard(root, tmp_path / "board")
    markdown, page = files["markdown"].read_text(), files["html"].read_text()
    line = next(line for line in markdown.splitlines() if "`uncond.toy_micro`" in line)
    assert "`uncond.toy_micro` (unconditional)" in line and "**0.9**" not in line and "0.9" in line
    assert "**0.5**" in next(line for line in markdown.splitlines() if "`alpha.toy_micro`" in line)
    assert "(unconditional): conditioned on other than the protocol's `text`" in markdown
    assert "never on the condition's (prompt_adherence@1x)" in markdown
    assert 'class="mark off-condition"' in page and ">unconditional</span>" in page
    by_id = {row["id"]: row for row in csv.DictReader(io.StringIO(files["csv"].read_text()))}
    assert by_id["uncond.toy_micro"]["prompt_adherence@1x_rank"] == "" and by_id["uncond.toy_micro"]["rank"] == "1"
    assert by_id["uncond.toy_micro"]["conditioned_on"] == "none"
    console = Console(record=True, width=200)
    print_table(root, console)
    text = console.export_text()
    assert "uncond.toy_micro (unconditional)" in text and "unconditional): conditioned on other" in text

