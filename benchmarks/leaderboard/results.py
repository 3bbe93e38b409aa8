"""Result files: loading (validated by `benchmarks.record`), grouping like with like, and aggregation over seeds.

Results share a table only when protocol name, protocol hash and reference-set hash all agree; a file that fails
the schema (missing provenance included) is excluded and reported, never shown beside valid numbers. Rows keep
their marks: self-reported (`VERIFICATION_RULE`) and off-condition (`Board.off_condition`).

Uncertainty: a row's interval is the bootstrap interval of its value (the mean over seeds) from its per-draw
values averaged over seeds draw by draw (`RANKING_RULE` and `Board.rank` say how rows are compared).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.metrics.bootstrap import centred_interval
from benchmarks.record import ResultError, load_result


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


RANKING_RULE = (
    "Ranks: rows are ordered by each metric; the best row, and every row whose difference from it is not "
    "significant at 95%, share rank 1 and the bold. The difference is tested with a paired bootstrap: both rows' "
    "draws resample the same real clips (and videos of the same prompts), and the difference is significant when "
    "the 95% bootstrap interval of the per-draw differences, centred on the difference of the values, excludes 0. "
    "The best of the remaining rows starts the next group, whose rank is 1 + the number of rows ranked above it, "
    "and so on down the table; rows are "
    "listed by their rank on the primary metric (`#`). Rows without bootstrap draws (results scored before "
    "intervals were recorded) are compared by value alone. A diagnostic with no better direction (·, such as "
    "motion magnitude) is never ranked or bold; a column where every row shares rank 1 has no bold."
    " The `real` row (source `real`: held-out real clips scored exactly as a model's videos) comes first and is "
    "never ranked or bold: it is what real data itself scores at the protocol's counts, the floor of FVD/FID/KVD."
    " A row conditioned on something other than the protocol's condition (an unconditional generator in a "
    "text-conditioned protocol) is marked and stays in the table, ranked on every metric of the videos alone "
    "(FVD/FID/KVD compare the same real set at the same counts: it is the baseline that shows what conditioning "
    "buys), but never on prompt adherence, which measures the condition it did not get."
)

SELF_REPORTED = "self-reported, not re-scored here"
VERIFICATION_RULE = (
    "Every row was scored by this harness (`zoo bench`, `zoo score`, `zoo protocol real`) or, if submitted with "
    "`zoo leaderboard submit --samples`, re-scored here from its sample folder, whose files matched the sha256s the "
    "result records, to every submitted value (within the relative tolerance its `verification` records, 1e-6 by "
    f"default), except rows marked †: {SELF_REPORTED} "
    "(submitted without their samples)."
)
# Metrics that measure how well the videos follow their condition: an off-condition row is not ranked on them.
CONDITION_METRICS = ("prompt_adherence",)


# Two rows' draws pair when these fields of their bootstrap records agree.
_PAIRING_FIELDS = ("scheme", "seed", "draws", "n", "n_real", "level", "method")


@dataclass
class Aggregate:
    """A metric over seeds: mean, std over seeds (ddof=1) or the submitted std, how many seeds, or why missing.

    With bootstrap records on every seed: `draws` (per-draw values averaged over seeds), the `low`/`high` interval
    of the mean at `level`, and `pairing` (what another row's draws must share to be compared with these).
    """

    mean: float | None
    std: float | None
    num_seeds: int
    missing_reason: str | None = None
    low: float | None = None
    high: float | None = None
    level: float | None = None
    draws: list[float] | None = None
    pairing: tuple | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def format(self, digits: int = 3) -> str:
        """`value ± half-width` of the interval (when there is one), then `(sd ...)` over several seeds."""
        if self.mean is None:
            return "missing"
        text = f"{self.mean:.{digits}g}" if abs(self.mean) < 1e4 else f"{self.mean:.0f}"
        if self.half_width is not None:
            text += f" ± {self.half_width:.2g}"
        return f"{text} (sd {self.std:.2g})" if self.std is not None else text


def _pooled_bootstrap(entries: list[dict[str, Any]], mean: float) -> dict[str, Any]:
    """Interval fields of an aggregate: every seed's draws, if they pair, averaged draw by draw."""
    records = [e.get("bootstrap") or {} for e in entries]
    if not records or any("values" not in r for r in records):
        return {}
    pairing = tuple(records[0].get(k) for k in _PAIRING_FIELDS)
    if any(tuple(r.get(k) for k in _PAIRING_FIELDS) != pairing for r in records):
        return {}
    if len(records) == 1:
        draws, (low, high) = list(records[0]["values"]), (records[0]["low"], records[0]["high"])
    else:
        draws = np.mean([r["values"] for r in records], axis=0).tolist()
        low, high = centred_interval(mean, draws, records[0]["level"], records[0].get("lower_bound"))
    return {"low": low, "high": high, "level": records[0]["level"], "draws": draws, "pairing": pairing}


def _aggregate(entries: list[dict[str, Any]]) -> Aggregate:
    valued = [e for e in entries if e.get("value") is not None and math.isfinite(e["value"])]
    values = [e["value"] for e in valued]
    if not values:
        reasons = sorted({e.get("missing_reason", "not reported") for e in entries})
        return Aggregate(None, None, 0, "; ".join(reasons))
    mean = sum(values) / len(values)
    interval = _pooled_bootstrap(valued, mean)
    if len(values) > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return Aggregate(mean, std, len(values), **interval)
    # A single file may already aggregate seeds (an external submission states its own std).
    only = valued[0]
    return Aggregate(mean, only.get("std"), int(only.get("num_seeds", 1)), **interval)


def significantly_different(a: Aggregate, b: Aggregate) -> bool:
    """Paired bootstrap test at the draws' level: the interval of the per-draw differences `a - b`, centred on
    the difference of the values, excludes 0. Rows whose draws do not pair differ when their values differ."""
    if a.draws is None or b.draws is None or a.pairing != b.pairing:
        return a.mean != b.mean
    differences = np.asarray(a.draws) - np.asarray(b.draws)
    low, high = centred_interval(a.mean - b.mean, differences, a.level)
    return low > 0 or high < 0


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

    @property
    def verification(self) -> str:
        """The least-checked seed's: `self-reported` (submitted without its samples, not re-scored here), `verified`
        (submitted and re-scored here from its samples) or `scored here` (no `verification`: this harness wrote it)."""
        statuses = {(r.data.get("verification") or {}).get("status") for r in self.results}
        for status in ("self-reported", "verified"):
            if status in statuses:
                return status
        return "scored here"

    @property
    def finding(self) -> str | None:
        """The newest seed's finding (the recipe's word on a row that misses its targets), if it has one."""
        newest = max(self.results, key=lambda r: r.data["provenance"]["created"])
        return newest.data["model"].get("finding")

    @property
    def self_reported(self) -> bool:
        """Some seed was submitted without its samples: its numbers are the submitter's (marked †)."""
        return self.verification == "self-reported"

    @property
    def conditioned_on(self) -> str:
        """What the row's videos were conditioned on (`none`, `text`, `context`; seeds that differ: joined by +)."""
        return "+".join(sorted({r.data["model"].get("conditioned_on") or "none" for r in self.results}))

    @property
    def is_real(self) -> bool:
        """Held-out real clips scored as a model (source `real`): shown first, never ranked."""
        return self.first["model"].get("source") == "real"

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
    condition: str | None = None  # the protocol's condition (from the results' stored spec; None without one)
    condition_keys: frozenset[str] = frozenset()  # metric keys that measure adherence to the condition
    _rank_cache: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def title(self) -> str:
        return f"{self.protocol_name} v{self.protocol_version} (protocol {self.protocol_hash[:10]})"

    @property
    def evidence(self) -> tuple[int, int]:
        """(most seeds of a model row, generated videos behind its primary metric per seed): how much a table's
        ranks rest on; the leaderboard lists the best-founded tables first."""
        models = [row for row in self.rows if not row.is_real] or self.rows
        return (max(len(row.seeds) for row in models),
                max(result.data["metrics"].get(self.primary_metric, {}).get("num_fake") or 0
                    for row in models for result in row.results))

    def off_condition(self, row: Row) -> bool:
        """The row was conditioned on something other than the protocol's condition (e.g. unconditional rows in a
        text-conditioned protocol): marked, and not ranked on `condition_keys`."""
        return self.condition is not None and row.conditioned_on != self.condition

    def condition_mark(self, row: Row) -> str | None:
        """`unconditional` (or `conditioned on <x>`) for an off-condition row; None otherwise."""
        if not self.off_condition(row):
            return None
        return "unconditional" if row.conditioned_on == "none" else f"conditioned on {row.conditioned_on}"

    def ranked_rows(self, key: str) -> list[Row]:
        """The rows ranked in a column: not the real row, and not off-condition rows in a condition metric."""
        return [row for row in self.rows if not row.is_real
                and not (key in self.condition_keys and self.off_condition(row))]

    def rank(self, key: str, row: Row) -> int | None:
        """The row's rank in a metric column under `RANKING_RULE`; None when it misses the metric, the column
        is a diagnostic, or the row is not ranked there (`ranked_rows`)."""
        return self._ranks(key).get(row.id)

    def bold(self, key: str, row: Row) -> bool:
        """Rank 1 in a column that singles out some rows (not every ranked row shares rank 1)."""
        ranks = self._ranks(key)
        return ranks.get(row.id) == 1 and (len(ranks) == 1 or set(ranks.values()) != {1})

    def _ranks(self, key: str) -> dict[str, int]:
        if key not in self._rank_cache:
            self._rank_cache[key] = rank_rows(self.ranked_rows(key), key, self.higher_is_better[key])
        return self._rank_cache[key]

    def best(self, key: str) -> float | None:
        """The best mean in a metric column; None when every row misses it, the column has no direction, or every
        row ties (a column of equal values has no best row to mark)."""
        values = [row.metrics[key].mean for row in self.ranked_rows(key) if row.metrics[key].mean is not None]
        if not values or self.higher_is_better[key] is None or (len(values) > 1 and len(set(values)) == 1):
            return None
        return max(values) if self.higher_is_better[key] else min(values)


def rank_rows(rows: list[Row], key: str, higher_is_better: bool | None) -> dict[str, int]:
    """Ranks by `RANKING_RULE`: the best remaining row leads a group of every remaining row not significantly
    different from it; the group's rank is 1 + the rows ranked before it. Rows missing the metric get none."""
    if higher_is_better is None:
        return {}
    remaining = sorted((row for row in rows if row.metrics[key].mean is not None),
                       key=lambda row: (-row.metrics[key].mean if higher_is_better else row.metrics[key].mean, row.id))
    ranks: dict[str, int] = {}
    while remaining:
        leader = remaining[0].metrics[key]
        group = [row for row in remaining if row is remaining[0]
                 or not significantly_different(row.metrics[key], leader)]
        rank = len(ranks) + 1
        ranks.update((row.id, rank) for row in group)
        remaining = [row for row in remaining if row.id not in ranks]
    return ranks


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
    """Group valid results into boards (like with like) with rows sorted best-first on the primary metric, the
    boards best-founded first (`Board.evidence`)."""
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
        condition_keys: set[str] = set()
        for member in members:
            for key, entry in member.data["metrics"].items():
                if key not in directions:
                    keys.append(key)
                    directions[key] = entry["higher_is_better"]
                if entry.get("metric") in CONDITION_METRICS or key.startswith(CONDITION_METRICS):
                    condition_keys.add(key)
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
        # The spec is part of the protocol hash, so every member that stores one stores the same condition.
        condition = next((m.data["protocol"]["spec"].get("condition") for m in members
                          if "spec" in m.data["protocol"]), None)
        board = Board(name, first["protocol"]["version"], protocol_hash, reference, primary, keys, directions,
                      curve_keys, rows, condition, frozenset(condition_keys))
        # By primary rank, then value: a group of tied rows stays together even if a wide one ranks with the best.
        ranked = {row.id: board.rank(primary, row) for row in rows}
        # The real row first, then by rank (stable: value order within a rank).
        rows.sort(key=lambda row: (not row.is_real, ranked[row.id] is None, ranked[row.id] or 0))
        boards.append(board)
    # Best-founded tables first (most seeds, then most videos per seed): the evidence-grade protocol leads.
    boards.sort(key=lambda board: tuple(-count for count in board.evidence))
    return boards
