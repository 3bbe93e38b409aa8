"""Shipped results and weights stay valid: what the recipes decide today is what produced them.

A change to recipes, presets or config resolution that changed a shipped row's run settings would make `zoo bench`
redo it (it is no longer "finished"); one that changed the config a pretrained card rebuilds would load weights
into another model.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from benchmarks.harness.pretrain import pretrain_recipe
from benchmarks.harness.recipe import load_recipe, resolve_models
from benchmarks.harness.runner import run_settings_sha256
from zoo.config import ConfigError
from zoo.files import sha256_file
from zoo.pretrained import PRETRAINED_DIR
from zoo.registry import model_config

RESULTS = Path(__file__).resolve().parents[3] / "leaderboard" / "results"
SHIPPED = sorted(path for path in RESULTS.glob("*/*.json") if json.loads(path.read_text()).get("recipe"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_shipped_results_are_finished_under_their_recipe(path):
    result = json.loads(path.read_text())
    row = result["id"].split(".")[0]
    assert run_settings_sha256(row, load_recipe(result["recipe"])) == result["provenance"]["run_settings_sha256"]


@pytest.mark.parametrize("card", sorted(PRETRAINED_DIR.glob("*.json")), ids=lambda path: path.stem)
def test_pretrained_cards_rebuild_the_config_they_were_trained_with(card, config_subset):
    card = json.loads(card.read_text())
    settings = card["settings"]
    pinned = {"image_size": card["config"]["image_size"], "channels": card["config"]["channels"]}
    config = dataclasses.asdict(model_config(settings["model"], {**pinned, **settings["overrides"]},
                                             settings["config_path"]))
    # Keys added to a config since the card was written take their defaults; every key the card has is the same.
    assert config_subset(config, card["config"]) == card["config"]


@pytest.mark.parametrize("card", sorted(PRETRAINED_DIR.glob("*.json")), ids=lambda path: path.stem)
def test_pretrained_cards_carry_their_recipes_finding(card):
    card = json.loads(card.read_text())
    assert card.get("finding") == load_recipe(card["recipe"]).findings.get(card["model_name"])


def test_pretrain_adds_a_finished_cards_new_finding_and_missing_persistence_and_keeps_its_weights(tmp_path,
                                                                                                  monkeypatch):
    for suffix in (".json", ".safetensors"):
        shutil.copy(PRETRAINED_DIR / f"video_ar.moving_digits{suffix}", tmp_path)
    monkeypatch.setenv("ZOO_PRETRAINED_DIR", str(tmp_path))
    shipped = json.loads((PRETRAINED_DIR / "video_ar.moving_digits.json").read_text())
    shipped.pop("persistence", None)  # a card written before persistence was measured
    (tmp_path / "video_ar.moving_digits.json").write_text(json.dumps(shipped))
    (card,) = pretrain_recipe("zoo_moving_digits", ["findings.video_ar=tried guidance 3"], only=["video_ar"],
                              quality_videos=4)
    persistence = card.pop("persistence")
    assert card == {**shipped, "finding": "tried guidance 3"}  # nothing retrained: same weights, same figures
    assert persistence["num_videos"] == 4 and persistence["frames"] == 16
    assert set(persistence) == {"all", "num_videos", "seed", "frames", "digits", "num_digits"}
    card["persistence"] = persistence
    assert json.loads((tmp_path / "video_ar.moving_digits.json").read_text()) == card
    assert sha256_file(tmp_path / "video_ar.moving_digits.safetensors") == shipped["sha256"]
    with pytest.raises(ConfigError, match=r"findings for \['video_arr'\], which name no model or variant"):
        resolve_models(load_recipe("zoo_moving_digits", ["findings.video_arr=x"]))
    assert resolve_models(load_recipe("zoo_moving_digits", ["models=[video_diffusion]"])) == ["video_diffusion"]
