"""Keys that catch stale numbers (extractor weights and the scoring version in the result hash) and honest cost and
provenance per row (each row's own peak memory; the git state decided once, before the run writes anything)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import torch
from toy_harness import micro_overrides

from benchmarks.features import domain as domain_module
from benchmarks.features.domain import load_domain_net, save_domain_net
from benchmarks.features.weight_cache import DOMAIN_WEIGHTS_DIR, get_weight_file
from benchmarks.harness import load_protocol, run_recipe
from benchmarks.harness import protocol as protocol_module
from benchmarks.harness import provenance as provenance_module
from benchmarks.harness.protocol import MetricSpec, result_hash
from benchmarks.harness.provenance import PeakMemory
from benchmarks.harness.runner import is_finished
from benchmarks.leaderboard import load_boards, load_result

SETTINGS = "5" * 64


# ---- the result hash -----------------------------------------------------------------------------------------------
def test_a_retrained_domain_network_makes_existing_results_unfinished_and_puts_them_in_another_table(
        tmp_path, monkeypatch, make_result, write_result):
    protocol = load_protocol("moving_digits")
    spec_hash, before, committed = protocol.hash, protocol.result_hash, protocol.weights_sha256()
    results = tmp_path / "results"

    def result(model: str, key: str):
        data = make_result(model, protocol="moving_digits", protocol_hash=key)
        data["provenance"]["run_settings_sha256"] = SETTINGS
        return data

    old = write_result(results, result("alpha", before))
    assert is_finished(old, protocol, SETTINGS)

    # Retrain the network (other weights), saved with its record into a copy of the committed weights folder.
    network = load_domain_net("moving_digits")
    with torch.no_grad():
        next(network.parameters()).add_(0.01)
    weights = tmp_path / "weights"
    shutil.copytree(DOMAIN_WEIGHTS_DIR, weights)
    record = save_domain_net(network, "moving_digits", {"accuracy": None}, weights)
    monkeypatch.setattr(domain_module, "DOMAIN_WEIGHTS_DIR", weights)

    retrained = load_protocol("moving_digits")
    assert retrained.weights_sha256() == {"domain_moving_digits": record["sha256"]} != committed
    assert retrained.version == protocol.version  # no manual version bump needed ...
    assert retrained.result_hash != before  # ... the key changes by itself
    assert retrained.hash == spec_hash  # the same videos are asked for: sample folders are re-scored, not remade
    assert not is_finished(old, retrained, SETTINGS)
    write_result(results, result("beta", retrained.result_hash))
    boards, excluded = load_boards(results)
    assert not excluded
    assert sorted((board.protocol_hash, [row.id for row in board.rows]) for board in boards) == sorted(
        [(before, ["alpha.toy_micro"]), (retrained.result_hash, ["beta.toy_micro"])])


def test_the_scoring_version_enters_the_result_hash_and_not_the_spec_hash(monkeypatch):
    protocol = load_protocol("moving_digits")
    before = (protocol.hash, protocol.result_hash)
    monkeypatch.setattr(protocol_module, "SCORING_VERSION", protocol_module.SCORING_VERSION + 1)
    assert protocol.hash == before[0] and protocol.result_hash != before[1]


def test_i3d_inception_and_lpips_enter_by_their_recorded_checksums_defaults_included(tmp_path, monkeypatch):
    """Offline and without the files: the checksums recorded in benchmarks/features/weight_cache.py key the results."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("benchmarks.features.weight_cache.sha256_of", lambda path: pytest.fail(f"hashed {path}"))
    sha = {name: get_weight_file(name).sha256 for name in ("i3d_torchscript", "inception-2015-12-05", "alexnet-owt")}
    assert load_protocol("bair_64").weights_sha256() == {"i3d_torchscript": sha["i3d_torchscript"]}
    assert load_protocol("ucf101_16x64").weights_sha256() == {
        "i3d_torchscript": sha["i3d_torchscript"], "inception-2015-12-05": sha["inception-2015-12-05"]}
    protocol = load_protocol("bair_64")
    protocol.metrics[0].extractor = None  # FVD's default extractor (I3D) is what loads then
    protocol.metrics.append(MetricSpec(id="tlp", metric="tlp", clip="all"))  # LPIPS: AlexNet trunk + v0.1 heads
    weights = protocol.weights_sha256()
    assert weights["i3d_torchscript"] == sha["i3d_torchscript"] and weights["alexnet-owt"] == sha["alexnet-owt"]
    assert set(weights) == {"i3d_torchscript", "alexnet-owt", "lpips_alex_v0.1"}
    assert protocol.result_hash == result_hash(protocol.hash, protocol_module.SCORING_VERSION, weights)


# ---- each row's peak memory, and the git state from before the run -----------------------------------------------
@pytest.mark.parametrize("exact", [True, False], ids=["high_water_mark", "sampled"])
def test_a_blocks_peak_memory_is_its_own_not_the_processes(exact, monkeypatch):
    if not exact:
        monkeypatch.setattr(provenance_module, "_reset_rss_high_water_mark", lambda: False)
    with PeakMemory("cpu") as hungry:
        held = torch.ones(300 * 2**18)  # 300 MiB, every page touched
        time.sleep(0.05)
        del held
    with PeakMemory("cpu") as light:
        time.sleep(0.02)
    (hungry_mb, kind), (light_mb, _) = hungry.read(), light.read()
    if kind == "process_max_rss":
        pytest.skip("neither the kernel's high-water mark nor the RSS can be read here")
    assert kind == ("process_peak_rss" if exact else "process_peak_rss_sampled")
    assert hungry_mb - light_mb > 200, (hungry_mb, light_mb)


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_each_row_records_its_own_peak_memory_and_the_git_state_from_before_the_run(toy_env, tmp_path, monkeypatch):
    """Two rows in one run: the first holds 400 MiB while sampling and overwrites a tracked result file (as
    `zoo bench --force` does with the shipped results); the second neither inherits that peak nor reads dirty."""
    repo, rows = tmp_path / "repo", ("toy_hungry", "toy_light")
    results = repo / "results" / "toy_digits"
    results.mkdir(parents=True)
    for row in rows:
        (results / f"{row}.toy_digits_micro.seed0.json").write_text("{}\n")  # tracked, not a valid result
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "shipped results")
    monkeypatch.setattr(provenance_module, "REPO_ROOT", repo)
    overrides = [item for item in micro_overrides(tmp_path, toy_env, models="[toy_hungry,toy_light]")
                 if not item.startswith("results_dir=")]
    overrides += [f"results_dir={repo / 'results'}", "variants.toy_hungry.model=harness_toy",
                  "variants.toy_hungry.overrides.hold_mb=400", "variants.toy_light.model=harness_toy"]
    hungry, light = (load_result(path) for path in run_recipe("micro", overrides))
    assert _git(repo, "status", "--porcelain", "--untracked-files=no")  # the run did dirty the tree ...
    for result in (hungry, light):  # ... after git_dirty was decided
        assert result["provenance"]["git_dirty"] is False
        assert result["provenance"]["git_commit"] == _git(repo, "rev-parse", "HEAD")
    kind = hungry["cost"]["peak_memory_kind"]
    assert kind in ("process_peak_rss", "process_peak_rss_sampled") and light["cost"]["peak_memory_kind"] == kind
    assert hungry["cost"]["peak_memory_mb"] - light["cost"]["peak_memory_mb"] > 250, (hungry["cost"], light["cost"])
    # The record carries the result hash and what it is made of (the toy extractors declare no weight files).
    block = load_protocol(toy_env).result_block(hungry["protocol"]["reference_sha256"])
    assert hungry["protocol"] == block
    assert block["hash"] == result_hash(block["spec_hash"], block["scoring_version"], block["weights_sha256"])


def test_the_one_off_migration_rekeys_only_results_scored_with_the_committed_weights(monkeypatch, make_result):
    from benchmarks.harness import migrate_result_hash as migration

    protocol = load_protocol("moving_digits")
    old = make_result(protocol="moving_digits", protocol_hash=protocol.hash)  # keyed the old way: the spec hash
    old["protocol"].update(version=protocol.version, spec=protocol.to_dict())
    for other in old["metrics"].values():
        other["extractor"] = None
    entry = old["metrics"]["fvd_domain@1x"]
    entry["extractor"] = "domain_moving_digits"
    entry["extractor_sha256"] = migration._current_extractor_sha256("domain_moving_digits")
    monkeypatch.setattr(migration, "_same_scoring_code", lambda commit: True)
    rekeyed, why = migration.rekey(old)
    assert rekeyed is not None, why
    assert rekeyed["protocol"] == protocol.result_block(old["protocol"]["reference_sha256"])
    assert rekeyed["provenance"]["protocol_hash"] == protocol.result_hash
    assert rekeyed["provenance"]["rekeyed"]["from_protocol_hash"] == protocol.hash
    assert migration.rekey(rekeyed) == (None, "already keyed by its result hash")
    entry["extractor_sha256"] = "0" * 64  # scored with other weights: no evidence, left as it is
    assert migration.rekey(old)[0] is None
    entry["extractor_sha256"] = migration._current_extractor_sha256("domain_moving_digits")
    monkeypatch.setattr(migration, "_same_scoring_code", lambda commit: False)
    assert "scoring code" in migration.rekey(old)[1]
