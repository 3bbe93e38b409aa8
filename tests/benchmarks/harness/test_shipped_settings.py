"""Shipped results and weights stay valid: what the recipes decide today is what produced them.

A change to recipes, presets or config resolution that changed a shipped row's run settings would make `zoo bench`
redo it (it is no longer "finished"); one that changed the config a pretrained card rebuilds would load weights
into another model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks.harness.recipe import load_recipe
from benchmarks.harness.runner import run_settings_sha256
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
