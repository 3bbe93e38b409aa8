"""`zoo leaderboard submit <result.json> --samples <folder>`: re-score a submitted result's sample folder here.

A submission is verified when (1) the folder holds exactly the files the result scored (the sha256 of every
manifest and, where the result records them, of every video file), (2) the folder scores here, through
`score_folder` (the path `zoo score` takes) under the protocol the result names, to every value the result claims
within `RELATIVE_TOLERANCE`, and (3) the identity it claims (row id, seed, what it was conditioned on, reference
set) is what the folder's manifests say. Anything else is refused with one line naming the file or the metrics.
The leaderboard stores what this returns (`verification`); it never imports this module (zoo_cli composes them).
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import torch

from benchmarks.features.weight_cache import sha256_of
from benchmarks.harness.external import score_folder
from benchmarks.harness.protocol import load_protocol, protocol_from_dict
from benchmarks.harness.provenance import git_state
from benchmarks.harness.samples import MANIFEST, SamplesError, sample_file_sha256
from benchmarks.harness.scoring import sample_folders
from benchmarks.record import ResultError

# The re-score reads the same uint8 videos (sha256-checked), the same real set (reference sha256), extractor
# weights and scoring code (both in the result hash, checked equal), so it repeats the submitter's arithmetic:
# bit for bit on the same hardware class and thread count, and within ~1e-9 relative across DDP shardings
# (tests/benchmarks/harness/test_harness.py). 1e-6 relative leaves room for float32 reduction order (other BLAS
# kernels or thread counts) while any edit of a claimed value past its sixth significant digit is caught. A
# submission scored on another device class (GPU vs CPU features) may need a looser `--rtol`, which is recorded.
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE = 1e-12  # for values at 0 (a metric of identical frames), where no relative tolerance helps


def _short(sha: str) -> str:
    return f"{sha[:12]}…"


def submitted_protocol(result: dict[str, Any]):
    """The protocol a result was scored under: its stored spec (or the named protocol without one), refused
    unless this checkout gives it the result's result hash (the same spec, scoring code and extractor weights)."""
    block = result["protocol"]
    protocol = protocol_from_dict(block["spec"]) if "spec" in block else load_protocol(block["name"])
    if protocol.result_hash != block["hash"]:
        raise ResultError(
            f"{result['id']} was scored under result hash {_short(block['hash'])} but protocol '{block['name']}' "
            f"scores under {_short(protocol.result_hash)} here (another spec, scoring version or extractor weights); "
            "it cannot be re-scored to the same numbers"
        )
    return protocol


def check_sample_hashes(result: dict[str, Any], samples_dir: str | Path) -> tuple[int, int]:
    """Raise `ResultError` naming every file of `samples_dir` that is not the one the result scored (missing,
    changed or unscored manifests; missing or changed video files where the result records their sha256).
    Returns how many manifests and video files matched."""
    samples_dir = Path(samples_dir)
    recorded = result["provenance"].get("manifest_sha256")
    if not recorded:
        raise ResultError(f"{result['id']} records no manifest sha256 (provenance.manifest_sha256): it names no "
                          "sample folder to check; submit it without --samples")
    try:
        present = {(folder / MANIFEST).relative_to(samples_dir).as_posix() for folder in sample_folders(samples_dir)}
    except SamplesError as exc:
        raise ResultError(str(exc).splitlines()[0]) from None
    # Named relative to the folder, which the message names once.
    problems = [f"{name} is missing" for name in sorted(set(recorded) - present)]
    problems += [f"{name} was not scored by the result" for name in sorted(present - set(recorded))]
    for name, sha in sorted(recorded.items()):
        if name in present and (actual := sha256_of(samples_dir / name)) != sha:
            problems.append(f"{name} has sha256 {_short(actual)}, the result scored {_short(sha)}")
    # Matching manifests list the very files the result scored, so the recorded file sha256s cover them all.
    files = result["provenance"].get("samples_sha256") or {}
    for name, sha in sorted(files.items()):
        path = samples_dir / name
        if not path.exists():
            problems.append(f"{name} is missing")
        elif (actual := sample_file_sha256(path)) != sha:
            problems.append(f"{name} has sha256 {_short(actual)}, the result scored {_short(sha)}")
    if problems:
        raise ResultError(f"{samples_dir} is not the sample folder {result['id']} seed {result['seed']} scored "
                          "(refused, nothing stored): " + "; ".join(problems))
    return len(recorded), len(files)


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rtol, abs_tol=ABSOLUTE_TOLERANCE)


def _difference(name: str, submitted: Any, rescored: Any) -> str:
    if isinstance(submitted, (int, float)) and isinstance(rescored, (int, float)) and rescored != 0:
        return (f"{name} submitted {submitted:.7g}, re-scored {rescored:.7g} "
                f"(relative difference {abs(submitted - rescored) / abs(rescored):.1e})")
    return f"{name} submitted {submitted!r}, re-scored {rescored!r}"


def compare_results(submitted: dict[str, Any], rescored: dict[str, Any], rtol: float = RELATIVE_TOLERANCE) -> list[str]:
    """Every claim of `submitted` that the re-scored result does not bear out, one phrase each: identity (id, seed,
    conditioning, protocol and reference set), each metric value within `rtol`, each curve point."""
    differences = []
    for name, get in (("id", lambda r: r["id"]), ("seed", lambda r: r["seed"]),
                      ("model.conditioned_on", lambda r: r["model"].get("conditioned_on")),
                      ("protocol.hash", lambda r: r["protocol"]["hash"]),
                      ("protocol.reference_sha256", lambda r: r["protocol"]["reference_sha256"])):
        if get(submitted) != get(rescored):
            differences.append(_difference(name, get(submitted), get(rescored)))
    for key in [*rescored["metrics"], *(k for k in submitted["metrics"] if k not in rescored["metrics"])]:
        claimed = submitted["metrics"].get(key, {}).get("value")
        value = rescored["metrics"].get(key, {}).get("value")
        if not _close(claimed, value, rtol):
            differences.append(_difference(key, claimed, value))
    for key in [*rescored["curves"], *(k for k in submitted["curves"] if k not in rescored["curves"])]:
        claimed = submitted["curves"].get(key, {}).get("y", [])
        values = rescored["curves"].get(key, {}).get("y", [])
        if len(claimed) != len(values):
            differences.append(f"curve {key} submitted {len(claimed)} points, re-scored {len(values)}")
            continue
        wrong = [i for i, (a, b) in enumerate(zip(claimed, values, strict=True)) if not _close(a, b, rtol)]
        if wrong:
            differences.append(_difference(f"curve {key}[{wrong[0]}]", claimed[wrong[0]], values[wrong[0]])
                               + (f" and {len(wrong) - 1} more point(s)" if len(wrong) > 1 else ""))
    return differences


def verify_submission(
    result: dict[str, Any], samples_dir: str | Path, data_root: str | None = None,
    device: str | torch.device = "cpu", rtol: float = RELATIVE_TOLERANCE,
) -> dict[str, Any]:
    """Check that `samples_dir` is the folder `result` scored and re-score it here; the `verification` block of a
    verified result (`submit_result` adds when it was stored). Raises `ResultError` (one line naming the files or the values that differ, and by how much)
    or `SamplesRejected` (the folder does not fit the protocol)."""
    protocol = submitted_protocol(result)
    manifests, files = check_sample_hashes(result, samples_dir)
    record, _ = score_folder(samples_dir, protocol, result["model"]["tag"], data_root, device)
    differences = compare_results(result, record.to_dict(), rtol)
    if differences:
        raise ResultError(f"re-scoring {samples_dir} here does not reproduce {result['id']} seed {result['seed']} "
                          f"(rtol {rtol:g}); refused, nothing stored: " + "; ".join(differences))
    commit, dirty = git_state()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"status": "verified", "rescored": now, "git_commit": commit, "git_dirty": dirty,
            "device": str(device), "rtol": rtol, "manifests_checked": manifests, "files_checked": files}
