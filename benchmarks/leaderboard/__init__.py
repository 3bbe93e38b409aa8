"""The leaderboard: read result files, group like with like, render README/CSV/HTML, accept submissions.

It only reads results: `benchmarks.record` validates and places them (its reading API is re-exported here),
`benchmarks.files` writes the rendered board.

`zoo leaderboard build` -> `build_leaderboard`, `zoo leaderboard submit <result.json>` -> `submit_result` (which
stores a result self-reported, or verified with the block that zoo_cli got from re-scoring its sample folder through
`benchmarks.harness.verify`: the board never imports the harness); `zoo bench` ends with `print_table`.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from filelock import FileLock
from rich.console import Console

from benchmarks.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from benchmarks.leaderboard.html import render_html
from benchmarks.leaderboard.render import print_boards, render_csv, render_markdown
from benchmarks.leaderboard.results import Board, Excluded, LoadedResult, group_results, load_results
from benchmarks.record import ResultError, load_result, result_path, result_schema, validate_result

__all__ = [
    "Board",
    "Excluded",
    "LoadedResult",
    "ResultError",
    "build_leaderboard",
    "group_results",
    "load_boards",
    "load_result",
    "load_results",
    "print_table",
    "result_schema",
    "submit_result",
    "validate_result",
]


def load_boards(results_dir: str | Path = "leaderboard/results") -> tuple[list[Board], list[Excluded]]:
    """Valid results grouped into boards, plus the files left out and why."""
    results, excluded = load_results(results_dir)
    boards = group_results(results, excluded)
    return boards, excluded


def build_leaderboard(results_dir: str | Path = "leaderboard/results", out_dir: str | Path = "leaderboard") -> dict[
    str, Path
]:
    """Render `README.md`, `leaderboard.csv` and `index.html` into `out_dir`; returns their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Read and write under one lock: two processes rendering at once could otherwise leave the one that read the
    # results folder first (and so misses the other's row) as the last to write.
    with FileLock(out_dir / ".render.lock"):
        boards, excluded = load_boards(results_dir)
        return {
            "markdown": atomic_write_text(out_dir / "README.md", render_markdown(boards, excluded, out_dir)),
            "csv": atomic_write_text(out_dir / "leaderboard.csv", render_csv(boards)),
            "html": atomic_write_text(out_dir / "index.html", render_html(boards, excluded, out_dir)),
        }


# A result file without `verification` was scored by this harness; of two stored copies of the same numbers, the
# better-checked one is kept.
_TRUST = {"self-reported": 0, "verified": 1, None: 2}


def _status(data: dict[str, Any]) -> str | None:
    return (data.get("verification") or {}).get("status")


def submit_result(path: str | Path, results_dir: str | Path = "leaderboard/results",
                  verification: dict[str, Any] | None = None) -> Path:
    """Validate an external result and copy it (and its sample strip, if beside it) into `results_dir`, marked
    with `verification`: the block `verify_submission` returned after re-scoring its sample folder here, or (None)
    `self-reported`. Whatever `verification` the submitted file carries is replaced: it is decided here.

    Refuses an invalid file, and a file that would overwrite a different result for the same (id, seed); the same
    numbers again keep the better-checked copy (so a self-reported row is upgraded by a verified submission).
    """
    path = Path(path)
    data = load_result(path)  # as stored: a submission is copied, not rebuilt (but for its verification)
    claimed = {key: value for key, value in data.items() if key != "verification"}
    submitted = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    stamped = {**claimed, "verification": {**(verification or {"status": "self-reported"}), "submitted": submitted}}
    validate_result(stamped)
    destination = result_path(results_dir, data["protocol"]["name"], data["id"], data["seed"])
    if destination.is_file():
        stored = json.loads(destination.read_text())
        if {key: value for key, value in stored.items() if key != "verification"} != claimed:
            raise ResultError(
                f"{destination} already holds a different result for {data['id']} seed {data['seed']}; "
                "give the model a new tag or delete the old file first"
            )
        if _TRUST[_status(stored)] >= _TRUST[_status(stamped)]:
            return destination  # the same numbers, already stored at least as well checked
    strip = data.get("samples", {}).get("strip")
    if strip:
        if Path(strip).name != strip:
            raise ResultError(f"samples.strip must be a file name beside the result, got '{strip}'")
        source_strip = path.parent / strip
        if not source_strip.is_file():
            raise ResultError(f"the result names sample strip {strip} but {source_strip} does not exist")
        if source_strip.resolve() != (destination.parent / strip).resolve():
            atomic_write_bytes(destination.parent / strip, source_strip.read_bytes())
    atomic_write_json(destination, stamped)
    return destination


def print_table(results_dir: str | Path = "leaderboard/results", console: Console | None = None,
                first_protocol: str | None = None) -> None:
    """Print the compact leaderboard tables (rich), `first_protocol`'s first."""
    boards, excluded = load_boards(results_dir)
    print_boards(boards, excluded, console, first_protocol)
