"""Benchmark protocols: versioned YAML under `benchmarks/protocols/` that pins everything that changes a number.

A protocol's hash is the sha256 of its canonical JSON (prose fields left out); sample folders carry it. Results
carry its result hash, which adds the sha256 of every extractor's weights and the scoring code's version, so two
results are comparable exactly when their result hashes (and reference-set hashes) agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from benchmarks.features import extractor_weights
from benchmarks.harness.uncertainty import BootstrapSettings
from benchmarks.metrics.registry import MODULE_ARGUMENTS, UnknownMetricError, extractor_names
from hvz_registry import did_you_mean
from zoo.config import ConfigError, build_config, load_yaml, named_yaml, parse_overrides

CONDITIONS = ("none", "text", "context")
CLIP_WINDOWS = ("first", "last", "all")
# Left out of the hash: prose, and the seed list (each result is one seed and records it, so a 3-seed run and a
# 1-seed run of the same protocol share a table and aggregate to mean ± std).
# Bootstrap draws set how precisely an interval is estimated, not what a value means.
_UNHASHED_FIELDS = ("description", "published", "seeds", "bootstrap_draws")
# The version of the scoring maths (benchmarks.harness.scoring and benchmarks.metrics): bump it in any change that
# gives other numbers for the same videos, real set and weights. It enters every result hash, so results scored
# before the change are neither finished nor shown beside newer ones.
SCORING_VERSION = 1


@dataclass
class DatasetSpec:
    """The real set: a `zoo.data` dataset, its split, and the dataset-config keys that shape it.

    `reference_sha256` pins the sha256 of the real clips (uint8 bytes); a different local copy is an error.
    """

    name: str = MISSING
    split: str = "test"
    overrides: dict[str, Any] = field(default_factory=dict)
    reference_sha256: str | None = None


@dataclass
class MetricSpec:
    """One metric variant: a `benchmarks.metrics` name, its feature extractor and where in a rollout it looks.

    `extractor` (a `benchmarks.features` name) is passed as the metric's `extractor_arg` argument (`classifier`
    for prompt adherence); `extractor_sha256` pins its weights.

    `id` is the variant name results carry (`fvd_domain`); the result key adds the rollout (`fvd_domain@2x`).
    `clip` picks the `frames`-long window of a longer rollout that a fixed-length metric sees ("all" = every frame);
    the real clips are cut the same way. `higher_is_better: null` marks a diagnostic with no better direction.
    """

    id: str = MISSING
    metric: str = MISSING
    extractor: str | None = None
    extractor_arg: str = "extractor"
    extractor_sha256: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    rollouts: list[int] = field(default_factory=lambda: [1])
    clip: str = "last"
    higher_is_better: bool | None = False


@dataclass
class Protocol:
    """What a benchmark number means: data, shapes, sample counts, seeds and metric variants.

    `frames` is the scored clip length including `context_frames` (what "1x" means); a rollout of m generates
    `m * frames`, and the real clips are as long as the longest rollout. A model trains on clips of its own
    `clip_length` (recorded in results) and extends beyond it if it can.
    Generated video i is conditioned on real clip `i % num_real` (its caption for `condition: text`, its first
    `context_frames` frames for `condition: context`), so `num_generated = k * num_real` gives k samples per context.
    Rollouts longer than 1x generate `long_rollout_videos` videos (default `num_generated`): they cost m times more.
    `share_rollout_prefixes`: a prefix-consistent model's shorter rollouts take the videos they share with a longer
    one (same real clips, same batch) from its first frames instead of generating them again (`generate_rollouts`),
    so the 1x set costs only the videos beyond the longer rollouts' count.
    `bootstrap_draws`: resamples behind every interval and paired rank (recorded in each entry; not hashed).
    """

    name: str = MISSING
    version: int = 1
    description: str = ""
    published: str = ""
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    resolution: int = MISSING
    channels: int = MISSING
    frames: int = MISSING
    fps: int = 8
    stride: int = 1
    clip_policy: str = "first"
    resize_policy: str = "none"
    context_frames: int = 0
    condition: str = "none"
    rollouts: list[int] = field(default_factory=lambda: [1])
    num_real: int = MISSING
    num_generated: int = MISSING
    long_rollout_videos: int | None = None
    share_rollout_prefixes: bool = False
    batch_size: int = 32
    seeds: list[int] = field(default_factory=lambda: [0])
    bootstrap_draws: int = BootstrapSettings.draws
    primary_metric: str = MISSING
    metrics: list[MetricSpec] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of every field that changes a single run's numbers: the spec's own hash,
        which sample manifests and the real-set cache carry (results are keyed by `result_hash`)."""
        pinned = {k: v for k, v in self.to_dict().items() if k not in _UNHASHED_FIELDS}
        if not self.share_rollout_prefixes:  # added after results were published: hashed only when set
            del pinned["share_rollout_prefixes"]
        canonical = json.dumps(pinned, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def weights_sha256(self) -> dict[str, str | None]:
        """{weight file: sha256} of every file the metrics' extractors load (defaults included), as recorded beside
        the files (what loading verifies): no file is read or hashed here."""
        weights: dict[str, str | None] = {}
        for spec in self.metrics:
            for name in _extractor_names(spec):
                weights.update(extractor_weights(name))
        return dict(sorted(weights.items()))

    @property
    def result_hash(self) -> str:
        """What results are keyed by (finished or not, which table): the spec hash, `SCORING_VERSION` and the sha256
        of every extractor's weights, so a retrained domain network needs no manual `version` bump."""
        return result_hash(self.hash, SCORING_VERSION, self.weights_sha256())

    def result_block(self, reference_sha256: str) -> dict[str, Any]:
        """The `protocol` block of a result record: the result hash, what it is made of, and the spec."""
        weights = self.weights_sha256()
        return {"name": self.name, "version": self.version, "hash": result_hash(self.hash, SCORING_VERSION, weights),
                "spec_hash": self.hash, "scoring_version": SCORING_VERSION, "weights_sha256": weights,
                "primary_metric": self.primary_metric, "reference_sha256": reference_sha256, "spec": self.to_dict()}

    def metric_keys(self) -> list[str]:
        """Every result key this protocol produces, e.g. `fvd_domain@1x`, in protocol order."""
        return [metric_key(spec.id, rollout) for spec in self.metrics for rollout in spec.rollouts]

    def num_frames(self, rollout: int) -> int:
        return self.frames * rollout

    def num_videos(self, rollout: int) -> int:
        """Videos generated per seed at a rollout multiplier."""
        if rollout == 1 or self.long_rollout_videos is None:
            return self.num_generated
        return self.long_rollout_videos

    def reference_indices(self, rollout: int) -> list[int]:
        """The real clip each generated video of a rollout is conditioned on (its prompt or context frames)."""
        return [i % self.num_real for i in range(self.num_videos(rollout))]

    @property
    def reference_frames(self) -> int:
        """Length of the real clips: the longest rollout, so long-rollout metrics have real clips to match."""
        return self.frames * max(self.rollouts)


def result_hash(spec_hash: str, scoring_version: int, weights_sha256: Mapping[str, str | None]) -> str:
    """sha256 of a protocol's spec hash, the scoring version and its extractors' weights (a result's `hash`)."""
    pinned = {"spec": spec_hash, "scoring_version": scoring_version, "weights": dict(sorted(weights_sha256.items()))}
    return hashlib.sha256(json.dumps(pinned, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _extractor_names(spec: MetricSpec) -> set[str]:
    """The extractors a metric variant loads: its own, and the defaults of the metric's other module arguments."""
    given = {**spec.kwargs, **({spec.extractor_arg: spec.extractor} if spec.extractor is not None else {})}
    try:
        return set(extractor_names(spec.metric, **given).values())
    except UnknownMetricError:  # scoring reports the metric as missing; the extractors it names still count
        return {given[argument] for argument in MODULE_ARGUMENTS if isinstance(given.get(argument), str)}


def metric_key(metric_id: str, rollout: int) -> str:
    """The result key of a metric variant at a rollout multiplier."""
    return f"{metric_id}@{rollout}x"


# Package data beside the code, so an editable install and a wheel find the same protocols.
PROTOCOLS_DIR = Path(__file__).resolve().parents[1] / "protocols"


def protocols_dir() -> Path:
    return PROTOCOLS_DIR


def list_protocols() -> list[str]:
    """Names of the protocols shipped under `benchmarks/protocols/`."""
    return sorted(path.stem for path in protocols_dir().glob("*.yaml"))


def _protocol_path(name_or_path: str | Path) -> Path:
    return named_yaml(name_or_path, protocols_dir(), "protocol", list_protocols)


def _protocol_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """A protocol file's mapping; `base: <protocol>` makes it the named protocol's with this file's keys on top
    (mappings merged, lists replaced), so a variant states only what differs."""
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = _protocol_path(base)
    if base_path in (*seen, path):
        raise ConfigError(f"protocol {path.name}: base '{base}' refers back to itself; remove the cycle")
    return OmegaConf.merge(_protocol_yaml(base_path, (*seen, path)), data)


def _validate(protocol: Protocol, where: str) -> None:
    def fail(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    if protocol.condition not in CONDITIONS:
        fail(f"condition must be one of {list(CONDITIONS)}, got '{protocol.condition}'")
    if (protocol.condition == "context") != (protocol.context_frames > 0):
        fail("condition 'context' and context_frames > 0 go together; set both or neither")
    if protocol.context_frames >= protocol.frames:
        fail(f"context_frames ({protocol.context_frames}) must be fewer than frames ({protocol.frames})")
    if min(protocol.num_real, protocol.num_generated, protocol.batch_size, protocol.frames) < 1:
        fail("num_real, num_generated, batch_size and frames must all be >= 1")
    if protocol.long_rollout_videos is not None and protocol.long_rollout_videos < 2:
        fail(f"long_rollout_videos must be >= 2 (or null for num_generated), got {protocol.long_rollout_videos}")
    if protocol.bootstrap_draws < 100:
        fail(f"bootstrap_draws must be >= 100 for a 95% interval, got {protocol.bootstrap_draws}")
    if not protocol.seeds:
        fail("seeds must list at least one seed")
    if not protocol.rollouts or min(protocol.rollouts) < 1 or 1 not in protocol.rollouts:
        fail(f"rollouts must be multipliers >= 1 that include 1, got {protocol.rollouts}")
    ids = [spec.id for spec in protocol.metrics]
    if len(set(ids)) != len(ids):
        fail(f"metric ids must be unique, got {ids}")
    for spec in protocol.metrics:
        if spec.clip not in CLIP_WINDOWS:
            fail(f"metric '{spec.id}' clip must be one of {list(CLIP_WINDOWS)}, got '{spec.clip}'")
        unknown = sorted(set(spec.rollouts) - set(protocol.rollouts))
        if unknown:
            fail(f"metric '{spec.id}' asks for rollouts {unknown} that the protocol does not generate")
    keys = protocol.metric_keys()
    if protocol.primary_metric not in keys:
        fail(f"primary_metric '{protocol.primary_metric}' is not produced{did_you_mean(protocol.primary_metric, keys)}")
    primary_id = protocol.primary_metric.rsplit("@", 1)[0]
    if next(spec for spec in protocol.metrics if spec.id == primary_id).higher_is_better is None:
        fail(f"primary_metric '{protocol.primary_metric}' is a diagnostic (higher_is_better: null); rank by a score")


def load_protocol(
    name_or_path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None
) -> Protocol:
    """A protocol by name (`benchmarks/protocols/<name>.yaml`) or path, with optional overrides; validated."""
    path = _protocol_path(name_or_path)
    if overrides is not None and not isinstance(overrides, (Mapping, DictConfig)):
        overrides = parse_overrides(list(overrides))
    where = f"protocol {path.name}"
    protocol = build_config(Protocol, _protocol_yaml(path), overrides, where=where)
    _validate(protocol, where)
    return protocol


def protocol_from_dict(data: Mapping[str, Any]) -> Protocol:
    """Rebuild a protocol from its `to_dict()` form (as stored in a result or sample manifest)."""
    protocol = build_config(Protocol, dict(data), where="stored protocol")
    _validate(protocol, "stored protocol")
    return protocol
