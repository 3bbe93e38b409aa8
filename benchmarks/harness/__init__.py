"""The benchmark harness: protocols, recipes, generation to sample folders, scoring, result records.

The only place that joins the zoo and the metrics. `zoo bench <recipe>` -> `run_recipe`; `zoo score <folder>` ->
`score_external`, which scores any model's sample folder through the same `score_samples` path;
`zoo leaderboard submit <result> --samples <folder>` -> `verify_submission` (the folder re-scored on that path);
`zoo reference build <protocol>` -> `build_reference_statistics`.
"""

from benchmarks.harness.external import SamplesRejected, check_samples, score_external
from benchmarks.harness.generation import generate_rollouts, generate_samples
from benchmarks.harness.protocol import MetricSpec, Protocol, list_protocols, load_protocol, metric_key
from benchmarks.harness.recipe import Recipe, list_recipes, load_recipe, resolve_models
from benchmarks.harness.reference import ReferenceSet, load_reference
from benchmarks.harness.runner import run_recipe
from benchmarks.harness.samples import SampleManifest, SamplesError, SampleWriter, read_manifest, read_samples
from benchmarks.harness.scoring import ReferenceStatistics, build_reference_statistics, score_samples
from benchmarks.harness.verify import verify_submission

__all__ = [
    "MetricSpec",
    "Protocol",
    "Recipe",
    "ReferenceSet",
    "ReferenceStatistics",
    "SampleManifest",
    "SampleWriter",
    "SamplesError",
    "SamplesRejected",
    "build_reference_statistics",
    "check_samples",
    "generate_rollouts",
    "generate_samples",
    "list_protocols",
    "list_recipes",
    "load_protocol",
    "load_recipe",
    "load_reference",
    "metric_key",
    "read_manifest",
    "read_samples",
    "resolve_models",
    "run_recipe",
    "score_external",
    "score_samples",
    "verify_submission",
]
