"""`zoo protocol floor`: real clips scored as generated videos, against n, on the embedded protocol's own metrics."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.harness import load_protocol, load_reference
from benchmarks.harness import scoring as scoring_module
from benchmarks.harness.floor import FLOOR_FORMAT, format_floor, heldout_clips, lengthened, measure_floor
from zoo_cli import main

# Tiny counts of the shipped protocol: 32 real clips, so 16 and 32 held-out clips sit below and at the real count.
TINY = {"num_real": 32, "batch_size": 16}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring_module, "_REAL_STATES", {})


def test_command_writes_the_floor_and_it_falls_as_n_grows(tmp_path, capsys):
    code = main(["protocol", "floor", "moving_digits", "--n", "16,32", "--seeds", "2", "--out", str(tmp_path),
                 "--device", "cpu", "num_real=32", "batch_size=16"])
    out = capsys.readouterr().out
    assert code == 0, out
    record = json.loads((tmp_path / "floors" / "moving_digits.json").read_text())
    assert record["format"] == FLOOR_FORMAT and record["counts"] == [16, 32] and record["seeds"] == [0, 1]
    assert record["protocol"]["name"] == "moving_digits" and record["protocol"]["num_real"] == 32
    protocol = load_protocol("moving_digits", TINY)
    assert record["protocol"]["spec_hash"] == protocol.hash
    assert record["reference_sha256"] == load_reference(protocol).sha256
    # Every distribution metric of the protocol, and nothing else (warping error, adherence have no floor).
    assert record["metrics"] == ["fvd_domain@1x", "fvd_domain@2x", "fid_domain@1x", "fid_domain@2x",
                                 "kvd_domain@1x", "fid_over_time_domain@2x"]
    # Held-out clips start past both the reference set and the largest matched real set: never a reference clip.
    assert record["dataset"] == {"name": "moving_digits", "split": "test", "heldout_start": 32, "heldout_clips": 64}
    rows = {(row["real_set"], row["n"]): row for row in record["rows"]}
    assert list(rows) == [("protocol", 16), ("protocol", 32), ("matched", 16), ("matched", 32)]
    assert [rows[k]["num_real"] for k in rows] == [32, 32, 16, 32]
    assert all(row["limited_by"] == "generated" for row in record["rows"])
    for key in ("fvd_domain@1x", "fid_domain@1x", "fvd_domain@2x"):
        small, large = rows["protocol", 16]["metrics"][key], rows["protocol", 32]["metrics"][key]
        assert len(small["values"]) == 2 and small["std"] > 0
        assert large["mean"] < small["mean"], key  # the O(d / n) bias shrinks
        assert rows["matched", 16]["metrics"][key]["mean"] > small["mean"], key  # fewer real clips: higher
    # At n = num_real the matched real set is the protocol's own real set: the same numbers, digit for digit.
    assert rows["matched", 32]["metrics"] == rows["protocol", 32]["metrics"]
    # KVD is unbiased: its floor has no O(1 / n) term and straddles 0 instead of falling.
    assert all(isinstance(row["metrics"]["kvd_domain@1x"]["mean"], float) for row in record["rows"])
    # The printed table is the record's.
    fvd = rows["protocol", 16]["metrics"]["fvd_domain@1x"]
    assert f"{fvd['mean']:.4g} ± {fvd['std']:.2g}" in out
    assert format_floor(record)[1].split()[:3] == ["16", "32", "protocol"]
    assert f"wrote {tmp_path / 'floors' / 'moving_digits.json'}" in out


def test_held_out_clips_come_through_the_reference_path_and_a_longer_split_keeps_them():
    protocol = load_protocol("moving_digits", TINY)
    reference = load_reference(protocol)
    clips, texts = heldout_clips(protocol, range(4), with_texts=True)
    # Clip i of the split as the reference set stores it (uint8, the longest rollout) and its 1x caption.
    assert clips.dtype == torch.uint8 and torch.equal(clips, reference.clips(range(4)))
    assert texts == reference.texts[:4]
    longer = lengthened(protocol, 5000)
    assert longer.dataset.overrides["test_size"] == 5000 and lengthened(protocol, 100) is protocol
    assert torch.equal(heldout_clips(longer, range(4))[0], clips)
    assert heldout_clips(longer, [4999])[0].shape == (1, 16, 1, 32, 32)


def test_bad_requests_are_one_line_errors(capsys):
    protocol = load_protocol("moving_digits", TINY)
    with pytest.raises(ValueError, match="counts >= 2"):
        measure_floor(protocol, [1, 16])
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        measure_floor(protocol, [16], seeds=0)
    assert main(["protocol", "floor", "moving_digits", "--n", "16,many"]) == 2
    assert "--n takes comma-separated whole numbers" in capsys.readouterr().err
    assert main(["protocol", "floor", "moving_digits", "--real", "both"]) == 2
    err = capsys.readouterr().err
    assert "--real" in err and len(err.strip().splitlines()) == 1
