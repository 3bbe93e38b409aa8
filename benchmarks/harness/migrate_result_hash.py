"""One-off migration: key results written before result hashes existed by their result hash (SCORING_VERSION 1).

Until this change a result's `protocol.hash` was the spec hash alone; now it is `Protocol.result_hash` (spec hash,
scoring version, extractor weights). Re-keying an old result claims it was scored with today's committed weights
and scoring code, so a file is re-keyed only with evidence of both, and left as it is otherwise (a later
`zoo bench` then redoes it):

- its recorded spec hashes to its recorded hash (the record is what was hashed);
- every metric computed with an extractor recorded that extractor's weights sha256 (`extractor_sha256`, taken from
  the loaded module when it was scored), and it equals the sha256 of the same extractor built now from the committed,
  checksum-verified files;
- the scoring code (benchmarks/metrics, benchmarks/features code, scoring, samples, reference) is the same at the
  result's commit as at `SCORED_CODE`, the commit whose scoring code SCORING_VERSION 1 names. A result made in a
  dirty tree is only as good as what was committed next; for the shipped results that was results and retrained
  weights, which the extractor check covers.

Re-keyed files record `provenance.rekeyed` (the old hash and this module). Idempotent: keyed files are skipped.

    python -m benchmarks.harness.migrate_result_hash leaderboard/results   # --dry-run to only report
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.files import atomic_write_json
from benchmarks.harness.protocol import SCORING_VERSION, protocol_from_dict, result_hash
from benchmarks.harness.scoring import weights_sha256
from benchmarks.record import validate_result
from zoo.config import REPO_ROOT

MIGRATION = "python -m benchmarks.harness.migrate_result_hash"
SCORED_CODE = "1d4da3809aae7f02bf35bcdb1a150891b7efd024"
SCORING_PATHS = ("benchmarks/metrics", "benchmarks/features", ":(exclude)benchmarks/features/weights",
                 "benchmarks/harness/scoring.py", "benchmarks/harness/samples.py", "benchmarks/harness/reference.py")
_EXTRACTOR_SHA256: dict[str, str] = {}


def _current_extractor_sha256(name: str) -> str:
    if name not in _EXTRACTOR_SHA256:
        from benchmarks.features import create_extractor

        _EXTRACTOR_SHA256[name] = weights_sha256(create_extractor(name))
    return _EXTRACTOR_SHA256[name]


def _same_scoring_code(commit: str | None) -> bool:
    if commit is None:
        return False
    done = subprocess.run(["git", "diff", "--quiet", commit, SCORED_CODE, "--", *SCORING_PATHS], cwd=REPO_ROOT,
                          capture_output=True)
    return done.returncode == 0


def rekey(data: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the re-keyed record, why) or (None, why not)."""
    block = data["protocol"]
    if "spec_hash" in block:
        return None, "already keyed by its result hash"
    if "spec" not in block:
        return None, "records no spec"
    protocol = protocol_from_dict(block["spec"])
    if protocol.hash != block["hash"]:
        return None, "its spec does not hash to its recorded hash"
    for key, entry in data["metrics"].items():
        if entry.get("extractor") is None or entry.get("value") is None:
            continue
        recorded = entry.get("extractor_sha256")
        if recorded is None:
            return None, f"{key} records no extractor_sha256"
        if recorded != _current_extractor_sha256(entry["extractor"]):
            return None, f"{key} was scored with other '{entry['extractor']}' weights than the committed ones"
    if not _same_scoring_code(data["provenance"].get("git_commit")):
        return None, f"the scoring code at its commit differs from {SCORED_CODE[:10]} (or the commit is unknown)"
    weights = protocol.weights_sha256()
    new_hash = result_hash(protocol.hash, SCORING_VERSION, weights)
    rekeyed = {**data, "protocol": {
        "name": block["name"], "version": block["version"], "hash": new_hash, "spec_hash": protocol.hash,
        "scoring_version": SCORING_VERSION, "weights_sha256": weights, "primary_metric": block["primary_metric"],
        "reference_sha256": block["reference_sha256"], "spec": block["spec"]}}
    rekeyed["provenance"] = {**data["provenance"], "protocol_hash": new_hash,
                             "rekeyed": {"from_protocol_hash": block["hash"], "by": MIGRATION}}
    validate_result(rekeyed)
    return rekeyed, f"{block['hash'][:10]} -> {new_hash[:10]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    for path in sorted(args.results_dir.rglob("*.json")):
        rekeyed, why = rekey(json.loads(path.read_text()))
        print(f"{'rekeyed' if rekeyed else 'left'}  {path}: {why}")
        if rekeyed is not None and not args.dry_run:
            atomic_write_json(path, rekeyed)


if __name__ == "__main__":
    main()
