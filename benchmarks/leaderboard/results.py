"""Result files: schema validation, loading, grouping like with like, and aggregation over seeds.

Results share a table only when protocol name, protocol hash and reference-set hash all agree; a file that fails
the schema (missing provenance included) is excluded and reported, never shown beside valid numbers.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "result.schema.json"


class ResultError(ValueError):
    """A result file that cannot be put on the leaderboard as it is."""


@functools.lru_cache(maxsize=1)
def result_schema() -> dict[str, Any]:
    """The JSON schema every result file satisfies (`benchmarks/schemas/result.schema.json`)."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_result(data: Any) -> None:
    """Raise `ResultError` (one line: where and what) unless `data` is a valid, self-consistent result."""
    validator = jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        error = errors[0]
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ResultError(f"result fails the schema at {where}: {error.message}")
    model, protocol = data["model"], data["protocol"]
    if data["id"] != f"{model['name']}.{model['tag']}":
        raise ResultError(f"id '{data['id']}' must be '<model.name>.<model.tag>' = '{model['name']}.{model['tag']}'")
    if data["provenance"]["protocol_hash"] != protocol["hash"]:
        raise ResultError("provenance.protocol_hash differs from protocol.hash; the result mixes two protocols")
    if data["seed"] not in data["provenance"]["seeds"]:
        raise ResultError(f"seed {data['seed']} is not among provenance.seeds {data['provenance']['seeds']}")
    if protocol["primary_metric"] not in data["metrics"]:
        raise ResultError(f"primary metric '{protocol['primary_metric']}' is not among the result's metrics")


def load_result(path: str | Path) -> dict[str, Any]:
    """Read and validate one result file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"result file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path} is not valid JSON: {exc}") from exc
    validate_result(data)
    return data


def result_filename(data: dict[str, Any]) -> str:
    """`<protocol>/<id>.seed<k>.json`: where a result lives under a results folder."""
    return f"{data['protocol']['name']}/{data['id']}.seed{data['seed']}.json"


@dataclass
class LoadedResult:
    path: Path
    data: dict[str, Any]

    @property
    def strip(self) -> Path | None:
        """The sample strip file, if the result names one that exists."""
        name = self.data.get("samples", {}).get("strip")
        strip = self.path.parent / name if name else None
        return strip if strip is not None and strip.is_file() else None


@dataclass
class Excluded:
    path: Path
    reason: str


def load_results(results_dir: str | Path) -> tuple[list[LoadedResult], list[Excluded]]:
    """Every `*.json` under `results_dir`: the valid ones, and the excluded ones with the reason."""
    loaded, excluded = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            loaded.append(LoadedResult(path, load_result(path)))
        except ResultError as exc:
            excluded.append(Excluded(path, str(exc)))
    return loaded, excluded


@dataclass
class Aggregate:
    """A metric over seeds: mean, std over seeds (ddof=1) or the submitted std, how many seeds, or why missing."""

    mean: float | None
    std: float | None
    num_seeds: int
    missing_reason: str | None = None

    def format(self, digits: int = 3) -> str:
        if self.mean is None:
            return "missing"
        text = f"{self.mean:.{digits}g}" if abs(self.mean) < 1e4 else f"{self.mean:.0f}"
        return f"{text} ± {self.std:.2g}" if self.std is not None else text


def _aggregate(entries: list[dict[str, Any]]) -> Aggregate:
    values = [e["value"] for e in entries if e.get("value") is not None and math.isfinite(e["value"])]
    if not values:
        reasons = sorted({e.get("missing_reason", "not reported") for e in entries})
        return Aggregate(None, None, 0, "; ".join(reasons))
    mean = sum(values) / len(values)
    if len(values) > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return Aggregate(mean, std, len(values))
    # A single file may already aggregate seeds (an external submission states its own std).
    only = next(e for e in entries if e.get("value") is not None)
    return Aggregate(mean, only.get("std"), int(only.get("num_seeds", 1)))


@dataclass
class Row:
    """One leaderboard row: a model id on one protocol, aggregated over its seeds."""

    id: str
    results: list[LoadedResult]
    metrics: dict[str, Aggregate] = field(default_factory=dict)

    @property
    def first(self) -> dict[str, Any]:
        return self.results[0].data

    @property
    def seeds(self) -> list[int]:
        return sorted(r.data["seed"] for r in self.results)

    def cost(self, key: str) -> float | None:
        """Mean of a numeric cost field over seeds (None when no seed reports it)."""
        values = [r.data["cost"][key] for r in self.results if r.data["cost"].get(key) is not None]
        return sum(values) / len(values) if values else None

    @property
    def hardware(self) -> str:
        hardware = self.first["cost"]["hardware"]
        return f"{hardware['device']}: {hardware['name']}"

    def curve(self, key: str) -> tuple[list[float], list[float | None]] | None:
        """A quality-over-time curve averaged over seeds (points missing in every seed stay None)."""
        curves = [r.data["curves"][key] for r in self.results if key in r.data["curves"]]
        if not curves:
            return None
        x = curves[0]["x"]
        y: list[float | None] = []
        for i in range(len(x)):
            values = [c["y"][i] for c in curves if i < len(c["y"]) and c["y"][i] is not None]
            y.append(sum(values) / len(values) if values else None)
        return x, y

    @property
    def strips(self) -> list[Path]:
        return [r.strip for r in self.results if r.strip is not None]


@dataclass
class Board:
    """One table: results whose protocol name, protocol hash and reference-set hash agree."""

    protocol_name: str
    protocol_version: int
    protocol_hash: str
    reference_sha256: str
    primary_metric: str
    metric_keys: list[str]
    higher_is_better: dict[str, bool | None]
    curve_keys: list[str]
    rows: list[Row]

    @property
    def title(self) -> str:
        return f"{self.protocol_name} v{self.protocol_version} (protocol {self.protocol_hash[:10]})"

    def best(self, key: str) -> float | None:
        """The best mean in a metric column; None when every row misses it, the column has no direction, or every
        row ties (a column of equal values has no best row to mark)."""
        values = [row.metrics[key].mean for row in self.rows if row.metrics[key].mean is not None]
        if not values or self.higher_is_better[key] is None or (len(values) > 1 and len(set(values)) == 1):
            return None
        return max(values) if self.higher_is_better[key] else min(values)


def _dedupe(results: list[LoadedResult], excluded: list[Excluded]) -> list[LoadedResult]:
    # Two files for the same (id, seed) in one group: the later run wins, the other is reported.
    latest: dict[tuple[str, int], LoadedResult] = {}
    for result in sorted(results, key=lambda r: r.data["provenance"]["created"]):
        key = (result.data["id"], result.data["seed"])
        if key in latest:
            excluded.append(Excluded(latest[key].path, f"superseded by the later run {result.path.name}"))
        latest[key] = result
    return list(latest.values())


def _sort_key(row: Row, primary: str, higher_is_better: bool | None) -> tuple[int, float, str]:
    value = row.metrics[primary].mean
    if value is None:
        return (1, 0.0, row.id)
    return (0, -value if higher_is_better else value, row.id)


def group_results(
    results: list[LoadedResult], excluded: list[Excluded] | None = None
) -> list[Board]:
    """Group valid results into boards (like with like) with rows sorted best-first on the primary metric."""
    excluded = excluded if excluded is not None else []
    groups: dict[tuple[str, str, str], list[LoadedResult]] = defaultdict(list)
    for result in results:
        protocol = result.data["protocol"]
        groups[(protocol["name"], protocol["hash"], protocol["reference_sha256"])].append(result)
    boards = []
    for (name, protocol_hash, reference), members in sorted(groups.items()):
        members = _dedupe(members, excluded)
        first = members[0].data
        keys: list[str] = []
        directions: dict[str, bool | None] = {}
        curve_keys: list[str] = []
        for member in members:
            for key, entry in member.data["metrics"].items():
                if key not in directions:
                    keys.append(key)
                    directions[key] = entry["higher_is_better"]
            curve_keys.extend(k for k in member.data["curves"] if k not in curve_keys)
        primary = first["protocol"]["primary_metric"]
        keys.sort(key=lambda k: k != primary)  # stable: primary first, then protocol order
        by_id: dict[str, list[LoadedResult]] = defaultdict(list)
        for member in members:
            by_id[member.data["id"]].append(member)
        rows = []
        for row_id, row_results in by_id.items():
            row_results.sort(key=lambda r: r.data["seed"])
            row = Row(row_id, row_results)
            for key in keys:
                entries = [r.data["metrics"][key] for r in row_results if key in r.data["metrics"]]
                row.metrics[key] = _aggregate(entries) if entries else Aggregate(None, None, 0, "not reported")
            rows.append(row)
        rows.sort(key=lambda row: _sort_key(row, primary, directions[primary]))
        boards.append(
            Board(name, first["protocol"]["version"], protocol_hash, reference, primary, keys, directions,
                  curve_keys, rows)
        )
    return boards
