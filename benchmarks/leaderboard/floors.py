"""The real-data floors shown beside each table: `floors/<protocol>.json` from `zoo protocol floor`.

A floor record (format `zoo-floor/1`, `benchmarks.harness.floor`) holds real-vs-real values of a protocol's
distribution metrics against n. A table shows the floor measured under its own result hash; a floor of another
hash (other weights, counts or scoring code) is named as stale, never shown as this table's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.leaderboard.results import Board

FLOORS_DIR = "floors"


def load_floors(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Floor records in `<out_dir>/floors/`, by protocol name; unreadable files are left out."""
    floors = {}
    for path in sorted((Path(out_dir) / FLOORS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            floors[record["protocol"]["name"]] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return floors


def floor_for(board: Board, floors: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """The floor record of a board's protocol and whether it was measured under the board's result hash."""
    record = floors.get(board.protocol_name)
    if record is None:
        return None, False
    return record, record["protocol"].get("result_hash") == board.protocol_hash


def cell_text(cell: dict[str, Any]) -> str:
    """`mean ± std` over seeds (the mean alone for one seed), or `missing`."""
    if cell.get("mean") is None:
        return "missing"
    if cell.get("std") is None:
        return f"{cell['mean']:.3g}"
    return f"{cell['mean']:.3g} ± {cell['std']:.2g}"


def at_protocol_counts(record: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The floor cell of `key` at the protocol's own counts (its generated count against its real set)."""
    rollout = int(key.rsplit("@", 1)[1].rstrip("x"))
    spec = record["protocol"]
    n = spec["num_generated"] if rollout == 1 else spec.get("long_rollout_videos", spec["num_generated"])
    for row in record["rows"]:
        if row["real_set"] == "protocol" and row["n"] == n and key in row["metrics"]:
            return row["metrics"][key]
    return None


def distinct_floor_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The floor's rows less the `matched` row at n = the protocol's real count: its real set is the protocol's own,
    so it repeats the `protocol` row digit for digit (`zoo protocol floor` keeps it as a check)."""
    num_real = record["protocol"]["num_real"]
    return [row for row in record["rows"] if not (row["real_set"] == "matched" and row["n"] == num_real)]


def summary(record: dict[str, Any], key: str) -> str:
    """One sentence: what real clips score on `key` at the protocol's counts and at the largest n measured."""
    spec = record["protocol"]
    seeds = len(record["seeds"])
    parts = []
    own = at_protocol_counts(record, key)
    rollout = int(key.rsplit("@", 1)[1].rstrip("x"))
    n_own = spec["num_generated"] if rollout == 1 else spec.get("long_rollout_videos", spec["num_generated"])
    if own is not None and own.get("mean") is not None:
        parts.append(f"held-out real clips scored as a model at this protocol's counts ({n_own} generated vs "
                     f"{spec['num_real']} real) give {key} {cell_text(own)}, the value real data itself gets at "
                     "these counts (the floor of that column)")
    largest = max(record["counts"])
    rows = distinct_floor_rows(record)
    for real_set, label in (("protocol", f"{spec['num_real']} real"), ("matched", f"{largest} real")):
        row = next((r for r in rows if r["real_set"] == real_set and r["n"] == largest), None)
        if row is not None and key in row["metrics"] and row["metrics"][key].get("mean") is not None:
            parts.append(f"{largest} vs {label}: {cell_text(row['metrics'][key])}")
    text = "; ".join(parts) + f" (mean ± sd over {seeds} disjoint held-out set{'s' if seeds > 1 else ''})."
    return text[:1].upper() + text[1:]
