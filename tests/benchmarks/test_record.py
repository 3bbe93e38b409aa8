"""The one result record: shipped results read back unchanged, the missing-metric entry, the record's own path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.files import atomic_write_json
from benchmarks.harness.protocol import MetricSpec
from benchmarks.harness.runner import is_finished
from benchmarks.record import ResultError, ResultRecord, missing_metric, result_path

RESULTS = Path(__file__).resolve().parents[2] / "leaderboard" / "results"
SHIPPED = sorted(RESULTS.rglob("*.json"))


def test_there_are_shipped_results():
    assert len(SHIPPED) >= 10


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.relative_to(RESULTS).as_posix())
def test_every_shipped_result_round_trips_through_the_record(path, tmp_path):
    data = json.loads(path.read_text())
    record = ResultRecord.load(path)
    assert record.to_dict() == data
    assert list(record.to_dict()) == list(data)  # key order too: a re-run diffs only where numbers moved
    # Where the record says it lives is where it was found, and `zoo bench` reads it as finished under the
    # result hash and run settings it records (whether those are still today's is the recipes' business).
    assert record.path(RESULTS) == path
    recorded = SimpleNamespace(result_hash=data["protocol"]["hash"])
    assert is_finished(path, recorded, data["provenance"].get("run_settings_sha256"))
    # Written back, the file holds the same content (older files spread number arrays over lines; bytes may differ).
    assert ResultRecord.load(atomic_write_json(tmp_path / "again.json", record.to_dict())) == record


def _shipped_result() -> dict:
    return json.loads((RESULTS / "moving_digits" / "real.heldout.seed0.json").read_text())


def _spec() -> MetricSpec:
    return MetricSpec(id="fvd_pixels", metric="fvd", extractor="pixel_clip_stats", rollouts=[1, 2],
                      higher_is_better=False)


def test_a_missing_metric_is_null_with_its_reason_never_zero():
    entry = missing_metric(_spec(), 2, "model cannot extend")
    assert entry["value"] is None and entry["missing_reason"] == "model cannot extend"
    assert (entry["variant"], entry["rollout"], entry["num_fake"]) == ("fvd_pixels", 2, 0)
    result = _shipped_result()
    result["metrics"]["fvd_pixels@2x"] = entry
    ResultRecord.from_dict(result).validate()  # valid against the result schema
    del entry["missing_reason"]
    with pytest.raises(ResultError, match="missing_reason"):
        ResultRecord.from_dict(result)


def test_the_record_places_and_writes_itself(tmp_path):
    result = _shipped_result()
    result["seed"], result["provenance"]["seeds"] = 3, [3]
    record = ResultRecord.from_dict(result)
    assert record.path(tmp_path) == result_path(tmp_path, "moving_digits", "real.heldout", 3)
    assert record.path(tmp_path) == tmp_path / "moving_digits" / "real.heldout.seed3.json"
    assert record.strip_path(tmp_path) == tmp_path / "moving_digits" / "real.heldout.seed3.gif"
    written = record.write(tmp_path)
    assert written == record.path(tmp_path) and ResultRecord.load(written) == record


def test_an_invalid_record_is_never_written(tmp_path):
    broken = copy.deepcopy(ResultRecord.from_dict(_shipped_result()))
    broken.id = "real.other_tag"  # no longer <model.name>.<model.tag>
    with pytest.raises(ResultError, match="must be '<model.name>.<model.tag>'"):
        broken.write(tmp_path)
    assert not broken.path(tmp_path).exists()
