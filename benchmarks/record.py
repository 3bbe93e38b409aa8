"""The result record: one (model, protocol, seed), the file `zoo bench`, `zoo score` and `zoo protocol real` write.

`ResultRecord` is the one place a result is built (`zoo_run`, `external_folder`, `real_folder`), checked against
`benchmarks/schemas/result.schema.json` (`validate`), placed (`path`) and written (`write`, atomically). A metric
the run could not score is `missing_metric(...)`: null with a reason, never 0. A record the harness writes has no
`verification` (it was scored here); `zoo leaderboard submit` sets it to verified (re-scored here from its sample
folder) or self-reported. The leaderboard only reads these files (`load_result`); this module imports neither the harness nor the zoo, so both the harness and the
leaderboard import it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from benchmarks.files import atomic_write_json

if TYPE_CHECKING:  # annotations only: the harness imports this module
    from benchmarks.harness.protocol import MetricSpec, Protocol
    from benchmarks.harness.samples import SampleManifest
    from zoo.interface import VideoGenerator

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "result.schema.json"
SCHEMA_VERSION = 1
UNREPORTED_HARDWARE = {"device": "unknown", "name": "not reported by the generator"}


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
    for key, entry in data["metrics"].items():
        bootstrap = entry.get("bootstrap", {})
        if "values" in bootstrap and len(bootstrap["values"]) != bootstrap["draws"]:
            raise ResultError(f"metrics/{key}/bootstrap has {len(bootstrap['values'])} values for "
                              f"{bootstrap['draws']} draws")
        if "low" in bootstrap and not bootstrap["low"] <= bootstrap["high"]:
            raise ResultError(f"metrics/{key}/bootstrap interval [{bootstrap['low']}, {bootstrap['high']}] is empty")


def load_result(path: str | Path) -> dict[str, Any]:
    """Read and validate one result file; the dict as stored."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"result file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path} is not valid JSON: {exc}") from exc
    validate_result(data)
    return data


def result_path(results_dir: str | Path, protocol: str, row_id: str, seed: int) -> Path:
    """`<results_dir>/<protocol>/<model>.<tag>.seed<k>.json`: where a result lives (its GIF strip beside it)."""
    return Path(results_dir) / protocol / f"{row_id}.seed{seed}.json"


def missing_metric(spec: MetricSpec, rollout: int, reason: str) -> dict[str, Any]:
    """The entry of a metric a run has no value for: null with the reason, never 0."""
    return {"value": None, "metric": spec.metric, "variant": spec.id, "rollout": rollout,
            "higher_is_better": spec.higher_is_better, "num_real": None, "num_fake": 0,
            "extractor": spec.extractor, "missing_reason": reason}


def _protocol_metrics(protocol: Protocol, scored: dict[str, Any], missing: dict[int, str]) -> dict[str, Any]:
    """Every metric key of the protocol, in protocol order: the scored entry, or a missing one whose reason is
    `missing[rollout]`."""
    variants = [(spec, rollout) for spec in protocol.metrics for rollout in spec.rollouts]  # metric_keys' order
    return {key: scored.get(key) or missing_metric(spec, rollout, missing.get(rollout, "not scored"))
            for key, (spec, rollout) in zip(protocol.metric_keys(), variants, strict=True)}


@dataclass
class ResultRecord:
    """One result file's content, field for field (`to_dict` is what is written; see the schema for each block).

    Build one with `zoo_run`, `external_folder` or `real_folder`, or read one with `load` / `from_dict`.
    """

    id: str
    seed: int
    model: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, Any]
    curves: dict[str, Any]
    cost: dict[str, Any]
    provenance: dict[str, Any]
    recipe: str | None = None
    samples: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None  # None: scored by this harness; `zoo leaderboard submit` sets it
    schema_version: int = SCHEMA_VERSION

    # -- reading and writing ------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        """A record from a result dict, validated (`ResultError` otherwise)."""
        validate_result(data)
        return cls(id=data["id"], seed=data["seed"], model=data["model"], protocol=data["protocol"],
                   metrics=data["metrics"], curves=data["curves"], cost=data["cost"], provenance=data["provenance"],
                   recipe=data.get("recipe"), samples=data.get("samples"), verification=data.get("verification"),
                   schema_version=data["schema_version"])

    @classmethod
    def load(cls, path: str | Path) -> ResultRecord:
        """Read and validate one result file."""
        return cls.from_dict(load_result(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON content, keys in the order result files have always had them."""
        data = {"schema_version": self.schema_version, "id": self.id, "recipe": self.recipe, "seed": self.seed,
                "model": self.model, "protocol": self.protocol, "metrics": self.metrics, "curves": self.curves,
                "cost": self.cost, "provenance": self.provenance}
        if self.samples is not None:
            data["samples"] = self.samples
        if self.verification is not None:
            data["verification"] = self.verification
        return data

    def validate(self) -> None:
        """Raise `ResultError` unless the record is valid against the schema and consistent with itself."""
        validate_result(self.to_dict())

    def path(self, results_dir: str | Path) -> Path:
        """Where this record lives under `results_dir` (`result_path`)."""
        return result_path(results_dir, self.protocol["name"], self.id, self.seed)

    def strip_path(self, results_dir: str | Path) -> Path:
        """The GIF sample strip beside the result file."""
        return self.path(results_dir).with_suffix(".gif")

    def write(self, results_dir: str | Path) -> Path:
        """Validate, then write the record atomically to `path(results_dir)`; returns that path."""
        self.validate()
        return atomic_write_json(self.path(results_dir), self.to_dict())

    # -- constructors -------------------------------------------------------------------------------------------

    @classmethod
    def zoo_run(
        cls, *, model: VideoGenerator, name: str, tag: str, variant_of: str, recipe: str, seed: int,
        protocol: Protocol, reference_sha256: str, conditioned_on: str, scores: dict[str, Any],
        unsupported: dict[int, str], train_steps: int | None, train_seconds: float | None,
        sampling_seconds: float | None, frames_made: int, stage_seconds: dict[str, float],
        peak_memory: tuple[float, str], hardware: dict[str, Any], provenance: dict[str, Any],
        settings_sha256: str, strip: str | None, strip_videos: int, finding: str | None = None,
    ) -> ResultRecord:
        """A `zoo bench` row's seed: `scores` from `score_samples` over the rollouts it made, `unsupported` the
        reason for each rollout it could not make, `provenance` the harness's block for this seed, `strip` the
        GIF's file name (None without one) showing `strip_videos` videos of the longest rollout, `finding` the
        recipe's finding for the row (shown under its leaderboard table)."""
        protocol_block = protocol.result_block(reference_sha256)
        memory_mb, memory_kind = peak_memory
        made = [rollout for rollout in protocol.rollouts if rollout not in unsupported]
        return cls(
            id=f"{name}.{tag}", recipe=recipe, seed=seed,
            model={"name": name, "tag": tag, "variant_of": variant_of,
                   "source": "zoo" if type(model).__module__.startswith("zoo.models.") else "external",
                   "strategy": model.strategy, "config": dataclasses.asdict(model.config),
                   "supported_conditions": sorted(model.supported_conditions), "conditioned_on": conditioned_on,
                   "clip_length": model.clip_length, "can_extend": model.can_extend,
                   **({"finding": finding} if finding else {})},
            protocol=protocol_block,
            metrics=_protocol_metrics(protocol, scores["metrics"], unsupported),
            curves=scores["curves"],
            cost={"num_parameters": model.num_parameters, "train_steps": train_steps, "train_seconds": train_seconds,
                  "sampling_seconds_per_frame": sampling_seconds / frames_made
                  if sampling_seconds and frames_made else None,
                  "sampling_batch_size": protocol.batch_size, "peak_memory_mb": round(memory_mb, 1),
                  "peak_memory_kind": memory_kind, "hardware": hardware, "stage_seconds": stage_seconds},
            provenance={**provenance, "source": "zoo", "manifest_sha256": scores["manifest_sha256"],
                        "samples_sha256": scores["samples_sha256"], "run_settings_sha256": settings_sha256},
            samples={"strip": strip, "num_videos": min(strip_videos, protocol.num_videos(max(made))) if strip else 0,
                     "fps": protocol.fps},
        )

    @classmethod
    def external_folder(
        cls, manifests: list[SampleManifest], scores: dict[str, Any], protocol: Protocol, tag: str | None,
        scoring_seconds: float, provenance: dict[str, Any],
    ) -> ResultRecord:
        """A model's sample folder scored by `zoo score` (source `external`): row `<generator>.<tag>`, the tag
        defaulting to the generator's own or `<protocol>_external`."""
        return cls._from_folder("external", manifests, scores, protocol, tag, scoring_seconds, provenance)

    @classmethod
    def real_folder(
        cls, manifests: list[SampleManifest], scores: dict[str, Any], protocol: Protocol, tag: str | None,
        scoring_seconds: float, provenance: dict[str, Any],
    ) -> ResultRecord:
        """Held-out real clips scored as a model (source `real`, row `real.heldout` unless tagged otherwise): the
        row every table starts with."""
        return cls._from_folder("real", manifests, scores, protocol, tag, scoring_seconds, provenance)

    @classmethod
    def _from_folder(
        cls, source: str, manifests: list[SampleManifest], scores: dict[str, Any], protocol: Protocol,
        tag: str | None, scoring_seconds: float, provenance: dict[str, Any],
    ) -> ResultRecord:
        first = manifests[0]  # the manifests of one generator, version and seed (`check_samples` saw to it)
        name, _, own_tag = first.generator.partition(".")
        tag = tag or own_tag or ("heldout" if source == "real" else f"{protocol.name}_external")
        base = next((m for m in manifests if m.rollout == 1), first)
        frames = base.timed_frames
        stage_seconds = {f"sampling_{m.rollout}x": round(m.sampling_seconds, 2) for m in manifests
                         if m.sampling_seconds is not None}
        held = {m.rollout for m in manifests}
        absent = {rollout: f"the sample folder has no {rollout}x rollout" for rollout in protocol.rollouts
                  if rollout not in held}
        return cls(
            id=f"{name}.{tag}", recipe=None, seed=first.seed,
            model={"name": name, "tag": tag, "source": source, "strategy": None, "config": None,
                   "supported_conditions": [] if first.conditioned_on == "none" else [first.conditioned_on],
                   "conditioned_on": first.conditioned_on, "clip_length": None, "can_extend": None},
            protocol=protocol.result_block(scores["reference_sha256"]),
            metrics=_protocol_metrics(protocol, scores["metrics"], absent),
            curves=scores["curves"],
            cost={"num_parameters": first.num_parameters, "train_steps": None, "train_seconds": None,
                  "sampling_seconds_per_frame": base.sampling_seconds / frames if base.sampling_seconds else None,
                  "sampling_batch_size": base.batch_size, "peak_memory_mb": None,
                  "hardware": first.hardware or UNREPORTED_HARDWARE,
                  "stage_seconds": {**stage_seconds, "scoring": round(scoring_seconds, 2)}},
            provenance={**provenance, "source": source, "manifest_sha256": scores["manifest_sha256"],
                        "samples_sha256": scores["samples_sha256"], "generator_version": first.generator_version},
            samples={"strip": None, "num_videos": 0, "fps": first.fps},
        )
