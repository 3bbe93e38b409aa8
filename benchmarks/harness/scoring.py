"""Scoring a sample folder against a protocol: `score_samples(samples_dir, protocol) -> dict`.

Separate from generation, so videos from any model (written in the sample-folder layout) are scored on exactly
the same path (`zoo bench` and `zoo score` both end here). Metrics are `benchmarks.metrics` torchmetrics objects
built from the protocol's metric specs; the real-set statistics of each distribution metric are computed once and
cached under a hash of (protocol, resolved dataset config, real-set sha256, metric spec, extractor weights sha256)
(`zoo reference build`). In a process group each rank scores every world_size-th file and `compute()` sums the
states over ranks. A metric that cannot be computed is recorded as missing with its reason, never as 0.

Every value carries a 95% bootstrap interval over the generated videos (and real clips), drawn from the per-video
evidence that `uncertainty.EvidenceTap` records while the metrics update (`uncertainty.py` says how); the real
set's evidence is cached with its statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from benchmarks.features.weight_cache import sha256_of
from benchmarks.harness.distributed import all_ranks_agree, gather_lists, rank_and_world_size, rank_zero_first
from benchmarks.harness.protocol import MetricSpec, Protocol, metric_key
from benchmarks.harness.reference import ReferenceSet, heldout_labels, load_reference, reference_cache_dir
from benchmarks.harness.samples import (
    MANIFEST,
    SampleManifest,
    SamplesError,
    read_manifest,
    read_sample_file,
    sample_file_sha256,
    to_float,
)
from benchmarks.harness.uncertainty import (
    BootstrapSettings,
    EvidenceTap,
    bootstrap_entry,
    consolidate,
    missing_bootstrap,
)
from benchmarks.metrics.base import DISTRIBUTION, INPUTS, LABELLED, PAIRED


@dataclass
class PreparedMetric:
    """A metric ready for generated videos; `statistics` says whether its real-set statistics were `computed` or
    `cached` (None for metrics without any), `statistics_path` where they live. `tap` records the per-video
    evidence of the bootstrap; `real_evidence` / `fake_evidence` hold it once consolidated."""

    spec: MetricSpec
    metric: Metric | None
    kind: str
    missing_reason: str | None = None
    extractor_sha256: str | None = None
    statistics: str | None = None
    statistics_path: Path | None = None
    tap: EvidenceTap | None = None
    real_evidence: dict[str, Any] | None = None
    fake_evidence: dict[str, Any] | None = None


def metric_kind(metric: Metric) -> str:
    """What a metric's `update` consumes, as the metric declares it (`inputs`, see `benchmarks.metrics.base`)."""
    kind = getattr(metric, "inputs", None)
    if kind not in INPUTS:
        raise ValueError(f"metric {type(metric).__name__} declares no `inputs` (one of {', '.join(INPUTS)}); set it "
                         "as a class attribute so the harness knows how to feed it")
    return kind


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's weights: every state-dict tensor's name, dtype, shape and bytes, in name order.

    Independent of the file format the weights came in, so a protocol can pin it for any extractor.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class ExtractorCache:
    """Feature extractors built once per scoring session, shared by the metrics that name them, and their
    weights' sha256 (checked against the protocol's pin)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._built: dict[str, tuple[torch.nn.Module, str]] = {}

    @staticmethod
    def build(name: str) -> torch.nn.Module:
        from benchmarks.features import create_extractor

        return create_extractor(name)

    def get(self, spec: MetricSpec) -> tuple[torch.nn.Module, str]:
        """The extractor of `spec` and its weights' sha256; refuses weights other than the pinned ones."""
        name = spec.extractor
        if name not in self._built:
            module = self.build(name)
            self._built[name] = (module.to(self.device).eval(), weights_sha256(module))
        extractor, sha256 = self._built[name]
        if spec.extractor_sha256 is not None and sha256 != spec.extractor_sha256:
            raise ValueError(
                f"extractor '{name}' weights have sha256 {sha256[:12]}… but the protocol pins "
                f"{spec.extractor_sha256[:12]}…; use the pinned weights or a new protocol version"
            )
        return extractor, sha256


# Part of the statistics cache key: v2 files hold {"state", "evidence"} (the real rows the bootstrap resamples),
# v1 files held the state alone and are never read as v2.
STATISTICS_FORMAT = 2


def statistics_path(spec: MetricSpec, reference: ReferenceSet, window: str, extractor_sha256: str | None,
                    state_names: list[str]) -> Path:
    """Where the real-set statistics of one metric variant live: keyed by the metric, its extractor and kwargs (not
    the rollouts it is used at), the extractor's weights, the real clips' sha256, the window of them it sees, the
    metric's state names and the file format (a cache written in another layout is rebuilt, not misread)."""
    pinned = {k: v for k, v in asdict(spec).items() if k not in ("rollouts", "clip", "higher_is_better")}
    key = json.dumps([pinned, extractor_sha256, reference.sha256, window, sorted(state_names), STATISTICS_FORMAT],
                     sort_keys=True)
    return reference.cache_dir / f"real-{spec.id}-{window}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _state_snapshot(metric: Metric) -> dict[str, Any]:
    def detach(value: Any) -> Any:
        return [v.detach().cpu().clone() for v in value] if isinstance(value, list) else value.detach().cpu().clone()

    return {name: detach(getattr(metric, name)) for name in metric._defaults}


def _restore_state(metric: Metric, state: dict[str, Any]) -> None:
    # Copies: the metric updates its states in place, and the cached snapshot must stay the real-only state.
    device = metric.device
    for name, value in state.items():
        copy = [v.to(device, copy=True) for v in value] if isinstance(value, list) else value.to(device, copy=True)
        setattr(metric, name, copy)


_REAL_STATES: dict[Path, dict[str, Any]] = {}


def _load_real_state(metric: Metric, tap: EvidenceTap | None, spec: MetricSpec, protocol: Protocol,
                     reference: ReferenceSet, rollout: int, extractor_sha256: str | None
                     ) -> tuple[Path, str, dict[str, Any] | None]:
    """Feed the real set once per cache key; later runs restore the cached statistics. Returns (path, status, the
    real set's per-video evidence for the bootstrap)."""
    window = "1x" if spec.clip == "first" else f"{spec.clip}-{rollout}x"
    path = statistics_path(spec, reference, window, extractor_sha256, list(metric._defaults))
    stored, status = _REAL_STATES.get(path), "cached"
    if stored is None and path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
    if stored is None:
        status = "computed"
        start = 0
        for batch in reference.batches():
            with tap.feeding("real", range(start, start + len(batch))) if tap else nullcontext():
                metric.update(to_float(reference_window(batch, spec, protocol, rollout)).to(metric.device), real=True)
            start += len(batch)
        evidence = consolidate(tap.family, tap.records["real"]) if tap else None
        if tap:
            tap.records["real"].clear()
        stored = {"state": _state_snapshot(metric), "evidence": evidence}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(stored, tmp)
        tmp.replace(path)
    else:
        _restore_state(metric, stored["state"])
    _REAL_STATES[path] = stored
    return path, status, stored["evidence"]


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (what a missing metric records)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def prepare_metric(
    spec: MetricSpec, protocol: Protocol, reference: ReferenceSet, extractors: ExtractorCache, rollout: int,
    holds_real: bool = True,
) -> PreparedMetric:
    """Build one metric (with real statistics loaded for distribution metrics), or say why it cannot be.

    `holds_real=False` (ranks other than 0) leaves the real statistics out: they are summed over ranks, so exactly
    one rank may hold them.
    """
    from benchmarks.metrics import create_metric

    try:
        kwargs, sha256 = dict(spec.kwargs), None
        if spec.extractor is not None:
            kwargs[spec.extractor_arg], sha256 = extractors.get(spec)
        metric = create_metric(spec.metric, **kwargs).to(extractors.device)
        prepared = PreparedMetric(spec, metric, metric_kind(metric), extractor_sha256=sha256,
                                  tap=EvidenceTap.attach(metric))
        if prepared.kind == DISTRIBUTION and holds_real:
            prepared.statistics_path, prepared.statistics, prepared.real_evidence = _load_real_state(
                metric, prepared.tap, spec, protocol, reference, rollout, sha256)
        return prepared
    except Exception as exc:  # missing weights, a broken extractor: the run goes on, the metric shows as missing
        warnings.warn(f"metric '{spec.id}' of protocol '{protocol.name}' is missing: {first_line(exc)}", stacklevel=2)
        return PreparedMetric(spec, None, "", first_line(exc))


def clip_window(videos: Tensor, spec: MetricSpec, frames: int) -> Tensor:
    """The part of a rollout a metric sees: the first/last `frames` frames, or all of them."""
    if spec.clip == "all" or videos.shape[1] <= frames:
        return videos
    return videos[:, :frames] if spec.clip == "first" else videos[:, -frames:]


def reference_window(real: Tensor, spec: MetricSpec, protocol: Protocol, rollout: int) -> Tensor:
    """Real clips cut like the generated ones: the rollout's length, then the metric's window."""
    return clip_window(real[:, : protocol.num_frames(rollout)], spec, protocol.frames)


def _labels_for(metric: Metric, reference: ReferenceSet, indices: list[int]) -> dict[str, Tensor]:
    """The prompted labels of videos `indices`, restricted to the heads the metric's classifier has.

    Set-valued dataset labels (class indices padded with -1, e.g. the digits of a two-digit clip) become the
    multi-hot targets of a multi-label head, whose class count the classifier declares in `config.heads`.
    """
    index = torch.as_tensor(indices, dtype=torch.long)
    heads = set(getattr(metric, "label_names", ()))
    classes = dict(getattr(getattr(getattr(metric, "classifier", None), "config", None), "heads", {}) or {})
    available = {"label": reference.label, **reference.labels}
    labels = {}
    for name, values in available.items():
        if name not in heads:
            continue
        values = values[index]
        if values.ndim == 2 and not values.is_floating_point() and name in classes:
            hot = torch.zeros(values.shape[0], classes[name] + 1)
            hot.scatter_(1, torch.where(values >= 0, values, classes[name]).long(), 1.0)
            values = hot[:, : classes[name]]
        labels[name] = values
    if not labels:
        raise ValueError(f"the classifier predicts {sorted(heads)} but the dataset labels are {sorted(available)}")
    return labels


def _number(value: Tensor | float | int) -> float | int:
    if isinstance(value, Tensor):
        value = value.item()
    return int(value) if isinstance(value, int) else float(value)


def _entry(prepared: PreparedMetric, rollout: int, num_fake: int, num_real: int | None) -> dict[str, Any]:
    spec = prepared.spec
    return {"value": None, "metric": spec.metric, "variant": spec.id, "rollout": rollout,
            "higher_is_better": spec.higher_is_better, "num_real": num_real, "num_fake": num_fake,
            "extractor": spec.extractor, "extractor_sha256": prepared.extractor_sha256}


def _bootstrap(prepared: PreparedMetric, value: float, manifest: SampleManifest, reference: ReferenceSet,
               settings: BootstrapSettings) -> dict[str, Any]:
    """The entry's `bootstrap` field: the interval and draws, or why there are none (the value stands either way)."""
    if prepared.tap is None or prepared.fake_evidence is None:
        return missing_bootstrap(f"{type(prepared.metric).__name__} exposes no per-video evidence to resample")
    try:
        num_real = len(reference) if prepared.kind == DISTRIBUTION else None
        return bootstrap_entry(prepared.tap.family, prepared.metric, value, prepared.fake_evidence,
                               prepared.real_evidence,
                               manifest.reference_index, num_real, settings, prepared.metric.device)
    except Exception as exc:  # an interval that cannot be drawn leaves the value without one, never wrong
        return missing_bootstrap(first_line(exc))


def summary_value(output: dict[str, Any] | Tensor | float) -> float:
    """The scalar a metric's output is recorded as: its value, or for a curve the mean of its finite points (nan
    when there are none)."""
    value = output["value"] if isinstance(output, dict) else output
    value = torch.as_tensor(value).double().flatten().cpu()
    if value.numel() == 1:
        return float(value.item())
    finite = [float(v) for v in value if math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def _finish(
    prepared: PreparedMetric, manifest: SampleManifest, protocol: Protocol, reference: ReferenceSet,
    settings: BootstrapSettings | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Compute one metric into a result entry (and a curve when the metric returns one); with `settings`, the
    entry gets its bootstrap interval."""
    num_real = len(reference) if prepared.kind == DISTRIBUTION else None
    entry = _entry(prepared, manifest.rollout, manifest.num_videos, num_real)
    if prepared.metric is None:
        entry["missing_reason"] = prepared.missing_reason or "metric unavailable"
        return entry, None
    try:
        with warnings.catch_warnings():
            # A rank with no file of a short rollout has no update of its own; the sync brings the others'.
            warnings.filterwarnings("ignore", message=".*called before the ``update`` method")
            output = prepared.metric.compute()
    except Exception as exc:
        entry["missing_reason"] = first_line(exc)
        return entry, None
    output = output if isinstance(output, dict) else {"value": output}
    value = torch.as_tensor(output["value"]).double().flatten().cpu()
    details = {k: _number(v) for k, v in output.items()
               if k != "value" and k not in ("num_real", "num_fake") and torch.as_tensor(v).numel() == 1}
    for count in ("num_real", "num_fake"):
        if count in output and torch.as_tensor(output[count]).numel() == 1:
            entry[count] = int(torch.as_tensor(output[count]).item())
    curve = None
    scalar = summary_value(value)
    if value.numel() > 1:
        frames = manifest.num_frames if prepared.spec.clip == "all" else protocol.frames
        width = frames / value.numel()
        curve = {"x": [round((i + 0.5) * width - 0.5, 3) for i in range(value.numel())],
                 "y": [float(v) if math.isfinite(float(v)) else None for v in value],
                 "x_label": "frame", "metric": prepared.spec.metric,
                 "higher_is_better": prepared.spec.higher_is_better}
        details["summary"] = "mean over the curve"
    if math.isfinite(scalar):
        entry["value"] = scalar
        if settings is not None:
            entry["bootstrap"] = _bootstrap(prepared, scalar, manifest, reference, settings)
    else:
        entry["missing_reason"] = f"{prepared.spec.metric} returned a non-finite value"
    if details:
        entry["details"] = details
    return entry, curve


def _prompted_labels(manifest: SampleManifest, protocol: Protocol, reference: ReferenceSet,
                     data_root: str | None) -> tuple[ReferenceSet, list[int]]:
    """Where the prompted labels of a folder's videos come from, and each video's index there: the reference
    clips they were conditioned on, or for held-out real clips (`heldout_index`) the clips themselves, whose own
    captions were their prompts."""
    if manifest.heldout_index is None:
        return reference, manifest.reference_index
    label, labels = heldout_labels(protocol, manifest.heldout_index, data_root)
    return dataclasses.replace(reference, label=label, labels=labels), list(range(len(manifest.heldout_index)))


def _score_folder(
    folder: Path, protocol: Protocol, reference: ReferenceSet, extractors: ExtractorCache,
    settings: BootstrapSettings, data_root: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = read_manifest(folder)
    if manifest.protocol_hash != protocol.hash:
        raise SamplesError(
            f"{folder} was generated for protocol {manifest.protocol} ({manifest.protocol_hash[:10]}…), not "
            f"{protocol.name} ({protocol.hash[:10]}…); regenerate it or score it with its own protocol"
        )
    rank, world_size = rank_and_world_size()
    rollout = manifest.rollout
    specs = [spec for spec in protocol.metrics if rollout in spec.rollouts]
    prepared = [prepare_metric(spec, protocol, reference, extractors, rollout, holds_real=rank == 0) for spec in specs]
    for item in prepared:
        if item.kind == LABELLED and manifest.conditioned_on != "text":
            item.metric, item.missing_reason = None, "the generator was not prompted (no text conditioning)"
    active = [item for item in prepared if item.metric is not None]
    label_source, label_index = (_prompted_labels(manifest, protocol, reference, data_root)
                                 if any(item.kind == LABELLED for item in active) else (reference, []))
    start = 0
    for index, entry in enumerate(manifest.files):
        count = int(entry["count"])
        indices = manifest.reference_index[start:start + count]
        prompted = label_index[start:start + count]
        positions = range(start, start + count)
        start += count
        if index % world_size != rank:
            continue
        videos = to_float(read_sample_file(folder / entry["file"], count, protocol.channels)).to(extractors.device)
        for item in active:
            window = clip_window(videos, item.spec, protocol.frames)
            try:
                with item.tap.feeding("fake", positions) if item.tap else nullcontext():
                    if item.kind == DISTRIBUTION:
                        item.metric.update(window, real=False)
                    elif item.kind == LABELLED:
                        item.metric.update(window, _labels_for(item.metric, label_source, prompted))
                    elif item.kind == PAIRED:
                        paired = reference_window(reference.clips(indices), item.spec, protocol, rollout)
                        item.metric.update(window, to_float(paired).to(extractors.device))
                    else:
                        item.metric.update(window)
            except Exception as exc:
                item.metric, item.missing_reason = None, first_line(exc)
        active = [item for item in active if item.metric is not None]
    agreed = all_ranks_agree([item.metric is not None for item in prepared], extractors.device)
    for item, ok in zip(prepared, agreed, strict=True):
        if not ok and item.metric is not None:
            item.metric, item.missing_reason = None, "failed on another rank (its warning says why)"
    for item in prepared:  # every rank, in the same order: the generated evidence of all ranks, to rank 0's bootstrap
        if item.metric is not None and item.tap is not None:
            item.fake_evidence = consolidate(item.tap.family, gather_lists(item.tap.records["fake"]))
            item.tap.records["fake"].clear()
    metrics, curves = {}, {}
    for item in prepared:
        entry, curve = _finish(item, manifest, protocol, reference, settings if rank == 0 else None)
        key = metric_key(item.spec.id, manifest.rollout)
        metrics[key] = entry
        if curve is not None:
            curves[key] = curve
    return metrics, curves


def sample_folders(samples_dir: str | Path) -> list[Path]:
    """The sample folders under `samples_dir`: itself if it has a manifest, else its sub-folders that do."""
    samples_dir = Path(samples_dir)
    if (samples_dir / MANIFEST).is_file():
        return [samples_dir]
    folders = sorted(p.parent for p in samples_dir.glob(f"*/{MANIFEST}"))
    if not folders:
        raise SamplesError(f"no {MANIFEST} in {samples_dir} or its sub-folders; it holds no finished samples")
    return folders


def score_samples(
    samples_dir: str | Path,
    protocol: Protocol,
    reference: ReferenceSet | None = None,
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    bootstrap: BootstrapSettings | None = None,
) -> dict[str, Any]:
    """Score a sample folder (one rollout, or a folder of rollout sub-folders) against `protocol`.

    Returns `{"metrics": {key: entry}, "curves": {key: curve}, "reference_sha256": str, "manifest_sha256":
    {manifest path relative to samples_dir: sha256}, "samples_sha256": {video file path relative to samples_dir:
    sha256}}` in the result-file format (the sha256s let `zoo leaderboard submit --samples` name a changed file);
    metrics the folders do not cover
    (e.g. a rollout the generator could not make) are simply absent. Every rank of a process group must call it.
    Entries carry bootstrap intervals drawn with `bootstrap` (default: the protocol's `bootstrap_draws`), on rank 0.
    """
    reference = reference or rank_zero_first(lambda: load_reference(protocol, data_root))
    extractors = ExtractorCache(torch.device(device))
    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    manifests: dict[str, str] = {}
    files: dict[str, str] = {}
    for folder in sample_folders(samples_dir):
        folder_metrics, folder_curves = _score_folder(folder, protocol, reference, extractors,
                                                      bootstrap or BootstrapSettings(draws=protocol.bootstrap_draws),
                                                      data_root)
        metrics.update(folder_metrics)
        curves.update(folder_curves)
        manifests[(folder / MANIFEST).relative_to(Path(samples_dir)).as_posix()] = sha256_of(folder / MANIFEST)
        for entry in read_manifest(folder).files:
            files[(folder / entry["file"]).relative_to(Path(samples_dir)).as_posix()] = sample_file_sha256(
                folder / entry["file"])
    ordered = {key: metrics[key] for key in protocol.metric_keys() if key in metrics}
    return {"metrics": ordered, "curves": curves, "reference_sha256": reference.sha256, "manifest_sha256": manifests,
            "samples_sha256": files}


@dataclass
class ReferenceStatistics:
    """What `zoo reference build` did: the real set (and whether it was built now) and, per distribution metric
    result key, `computed` / `cached` statistics or the reason they are missing."""

    reference: ReferenceSet
    reference_built: bool
    statistics: dict[str, PreparedMetric]


def build_reference_statistics(
    protocol: Protocol, data_root: str | None = None, device: str | torch.device = "cpu"
) -> ReferenceStatistics:
    """Compute, or find in the cache, the real set and the real-set statistics of every distribution metric.

    A second call (any process, any machine sharing `$ZOO_CACHE`) recomputes nothing; a changed protocol, dataset
    config or extractor weights gives a new cache key, so stale statistics are never used.
    """
    built = not (reference_cache_dir(protocol, data_root) / "reference.json").is_file()
    reference = load_reference(protocol, data_root)
    extractors = ExtractorCache(torch.device(device))
    statistics = {}
    for spec in protocol.metrics:
        for rollout in spec.rollouts:
            prepared = prepare_metric(spec, protocol, reference, extractors, rollout)
            if prepared.kind in (DISTRIBUTION, ""):  # "": could not be built; report why
                statistics[metric_key(spec.id, rollout)] = prepared
    return ReferenceStatistics(reference, built, statistics)
