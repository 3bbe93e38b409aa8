"""The real-data floor of a protocol's distribution metrics: real clips scored as if a model had made them.

`zoo protocol floor <protocol>` -> `measure_floor`. For each count n and seed, n held-out clips of the protocol's
dataset split (never among the reference clips) stand in for the generated videos and are fed to the protocol's
own distribution metrics (FVD/FID/KVD, their extractors and the cached real-set statistics of the scoring path),
against two real sets:

- `protocol`: the protocol's reference set (`num_real` clips), what every result is scored against;
- `matched`: the first n clips of the split as the real set, so both sides have n clips.

A Fréchet distance is biased upwards by O(d / n) on each side, so the `protocol` column stops falling once n
passes `num_real` (the real set is the limit) while the `matched` column shows what more real clips would buy.
Held-out set of seed k: clips `start + k * max(n) + [0, n)` with `start = max(num_real, max(n))`, so the seeds
are disjoint and a larger n extends a smaller one. Procedural datasets (`<split>_size` in their config) are
lengthened to hold them: clip i is a pure function of (seed, split, i), so clips already in the split stay the same.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.files import atomic_write_json
from benchmarks.harness.protocol import Protocol, metric_key
from benchmarks.harness.provenance import hardware
from benchmarks.harness.reference import ReferenceSet, heldout_clips, lengthened, load_reference
from benchmarks.harness.samples import to_float
from benchmarks.harness.scoring import ExtractorCache, first_line, prepare_metric, reference_window, summary_value
from benchmarks.metrics.base import DISTRIBUTION
from zoo.config import ConfigError

__all__ = ["heldout_clips", "lengthened", "measure_floor", "write_floor", "format_floor"]

DEFAULT_COUNTS = (64, 128, 256, 512, 1024, 2048)
DEFAULT_SEEDS = 3
FLOOR_FORMAT = "zoo-floor/1"
REAL_SETS = ("protocol", "matched")


def _distribution_keys(protocol: Protocol, reference: ReferenceSet, extractors: ExtractorCache
                       ) -> tuple[list[str], dict[str, str]]:
    """The protocol's distribution metric keys (those with real-set statistics), and why others are missing."""
    keys, missing = [], {}
    for spec in protocol.metrics:
        for rollout in spec.rollouts:
            prepared = prepare_metric(spec, protocol, reference, extractors, rollout)
            if prepared.kind == DISTRIBUTION:
                keys.append(metric_key(spec.id, rollout))
            elif prepared.kind == "":
                missing[metric_key(spec.id, rollout)] = prepared.missing_reason or "metric unavailable"
    return keys, missing


def _score(protocol: Protocol, reference: ReferenceSet, extractors: ExtractorCache, key: str, clips: Tensor
           ) -> tuple[float | None, str | None]:
    """One distribution metric of `clips` (uint8, scored as the generated videos) against `reference`."""
    metric_id, rollout = key.rsplit("@", 1)
    rollout = int(rollout.rstrip("x"))
    spec = next(s for s in protocol.metrics if s.id == metric_id)
    prepared = prepare_metric(spec, protocol, reference, extractors, rollout)
    if prepared.metric is None:
        return None, prepared.missing_reason
    try:
        for start in range(0, len(clips), protocol.batch_size):
            window = reference_window(clips[start:start + protocol.batch_size], spec, protocol, rollout)
            prepared.metric.update(to_float(window).to(extractors.device), real=False)
        value = summary_value(prepared.metric.compute())
    except Exception as exc:  # e.g. fewer clips than a kernel metric's subset size: that cell is missing
        return None, first_line(exc)
    return (value, None) if math.isfinite(value) else (None, f"{spec.metric} returned a non-finite value")


def _cell(values: list[float | None], reasons: list[str | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    cell: dict[str, Any] = {"values": values}
    if len(finite) == len(values) and finite:
        mean = sum(finite) / len(finite)
        cell["mean"] = mean
        cell["std"] = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
                       if len(finite) > 1 else None)
    else:
        cell["mean"] = cell["std"] = None
        cell["missing_reason"] = next(r for r in reasons if r) if any(reasons) else "no value"
    return cell


def measure_floor(
    protocol: Protocol,
    counts: Sequence[int] = DEFAULT_COUNTS,
    seeds: int = DEFAULT_SEEDS,
    real_sets: Sequence[str] = REAL_SETS,
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Real-vs-real values of every distribution metric at each count in `counts`, over `seeds` held-out sets.

    Returns the floor record (`FLOOR_FORMAT`): `rows` holds one entry per (n, real set) with `n`, `real_set`,
    `num_real`, `limited_by` (the smaller side: "generated" or "real") and, per metric key, `values` (one per
    seed), `mean` and `std` (None for one seed), or `missing_reason`.
    """
    counts = sorted({int(n) for n in counts})
    if not counts or counts[0] < 2:
        raise ConfigError(f"--n needs counts >= 2, got {counts}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    unknown = sorted(set(real_sets) - set(REAL_SETS))
    if unknown or not real_sets:
        raise ConfigError(f"real sets (--real) are {', '.join(REAL_SETS)} or both, comma-separated; got {list(real_sets)}")
    started = time.perf_counter()
    say = progress or (lambda message: None)
    largest = counts[-1]
    start = max(protocol.num_real, largest if "matched" in real_sets else 0)
    needed = start + seeds * largest
    source = lengthened(protocol, needed, data_root, remedy="pass a smaller --n or fewer --seeds")
    extractors = ExtractorCache(torch.device(device))
    reference = load_reference(protocol, data_root)
    keys, missing = _distribution_keys(protocol, reference, extractors)
    if not keys:
        raise ConfigError(f"protocol '{protocol.name}' has no distribution metric to measure a floor of"
                          + (f" ({'; '.join(f'{k}: {r}' for k, r in missing.items())})" if missing else ""))
    say(f"held-out clips {start}..{needed - 1} of the '{protocol.dataset.split}' split")
    pool = [heldout_clips(source, range(start + k * largest, start + k * largest + largest), data_root)[0]
            for k in range(seeds)]
    rows = []
    for real_set in real_sets:
        for n in counts:
            if real_set == "protocol":
                real = reference
            else:
                matched = dataclasses.replace(source, num_real=n)
                real = load_reference(matched, data_root)
            cells = {}
            for key in keys:
                scored = [_score(protocol, real, extractors, key, clips[:n]) for clips in pool]
                cells[key] = _cell([v for v, _ in scored], [r for _, r in scored])
            for key, reason in missing.items():
                cells[key] = {"values": [None] * seeds, "mean": None, "std": None, "missing_reason": reason}
            num_real = len(real)
            rows.append({"n": n, "real_set": real_set, "num_real": num_real,
                         "limited_by": "real" if num_real < n else "generated", "metrics": cells})
            say(f"n={n} real={real_set} ({num_real} clips): "
                + ", ".join(f"{k} {c['mean']:.4g}" for k, c in cells.items() if c["mean"] is not None))
    return {
        "format": FLOOR_FORMAT,
        "protocol": {"name": protocol.name, "version": protocol.version, "spec_hash": protocol.hash,
                     "result_hash": protocol.result_hash, "num_real": protocol.num_real,
                     "num_generated": protocol.num_generated,
                     "long_rollout_videos": protocol.num_videos(max(protocol.rollouts))},
        "reference_sha256": reference.sha256,
        "dataset": {"name": protocol.dataset.name, "split": protocol.dataset.split, "heldout_start": start,
                    "heldout_clips": needed - start},
        "counts": counts,
        "seeds": list(range(seeds)),
        "real_sets": list(real_sets),
        "metrics": keys + list(missing),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 2),
        "hardware": hardware(torch.device(device)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def floor_path(out_dir: str | Path, protocol_name: str) -> Path:
    """Where a protocol's floor record lives: `<out_dir>/floors/<protocol>.json` (beside the leaderboard)."""
    return Path(out_dir) / "floors" / f"{protocol_name}.json"


def write_floor(record: dict[str, Any], out_dir: str | Path = "leaderboard") -> Path:
    """Write a floor record beside the leaderboard (atomically); returns its path."""
    return atomic_write_json(floor_path(out_dir, record["protocol"]["name"]), record)


def format_floor(record: dict[str, Any]) -> list[str]:
    """The floor as plain-text table lines: n, real set, then `mean ± std` of every metric."""
    keys = record["metrics"]
    width = max(15, *(len(k) for k in keys))
    lines = [f"{'n':>5} {'real':>15} " + " ".join(f"{k:>{width}}" for k in keys)]
    for row in record["rows"]:
        cells = []
        for key in keys:
            cell = row["metrics"][key]
            if cell["mean"] is None:
                text = "missing"
            elif cell["std"] is None:
                text = f"{cell['mean']:.4g}"
            else:
                text = f"{cell['mean']:.4g} ± {cell['std']:.2g}"
            cells.append(f"{text:>{width}}")
        real = f"{row['num_real']}{'*' if row['limited_by'] == 'real' else ''} {row['real_set']}"
        lines.append(f"{row['n']:>5} {real:>15} " + " ".join(cells))
    return lines
