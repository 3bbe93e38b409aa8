"""Shipped weights: save/load round trip, checksums, cards, the `name.tag` id, and every shipped file generates."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.config import ConfigError
from zoo.pretrained import (
    load_pretrained,
    pretrained_card,
    pretrained_paths,
    save_pretrained,
    trainable_state,
    update_card,
)


@pytest.fixture()
def saved(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_PRETRAINED_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = zoo.create_model("video_diffusion", dim=32, depth=1, num_heads=2)
    with torch.no_grad():  # non-zero output layer, so a wrong load would change the samples
        model.denoiser.proj_out.weight.normal_(std=0.1)
    card = save_pretrained(model, "video_diffusion.moving_digits", {"steps": 7, "quality": {"digits": 0.5}})
    return model, card, tmp_path


def test_round_trip_is_the_fp16_model_and_the_card_records_what_it_holds(saved):
    model, card, folder = saved
    weights, card_path = pretrained_paths("video_diffusion.moving_digits", folder)
    assert json.loads(card_path.read_text()) == card
    assert card["steps"] == 7 and card["dataset"] == "moving_digits" and card["dtype"] == "float16"
    assert card["config"]["dim"] == 32
    # Frozen parts (the committed autoencoder) are not shipped again; everything trainable is, in fp16.
    state = trainable_state(model)
    assert not any(key.startswith("autoencoder.") for key in state)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    loaded = zoo.create_model("video_diffusion.moving_digits", pretrained=True)
    assert not loaded.training
    for key, value in model.state_dict().items():
        expected = value.half().float() if value.is_floating_point() and not key.startswith("autoencoder.") else value
        torch.testing.assert_close(loaded.state_dict()[key], expected, rtol=0, atol=0)
    assert zoo.list_pretrained() == ["video_diffusion.moving_digits"]
    assert zoo.list_pretrained("interleaved*") == []


def test_a_cards_later_fields_are_set_and_removed_without_touching_the_weights(saved):
    _, card, folder = saved
    weights, card_path = pretrained_paths("video_diffusion.moving_digits", folder)
    before = weights.read_bytes()
    written = update_card("video_diffusion.moving_digits", {"finding": "misses the direction target"})
    assert json.loads(card_path.read_text()) == written == {**card, "finding": "misses the direction target"}
    assert update_card("video_diffusion.moving_digits", {"finding": None}) == card
    assert weights.read_bytes() == before
    load_pretrained("video_diffusion.moving_digits")  # the card still vouches for the weights
    with pytest.raises(ConfigError, match=r"\['sha256'\] describe the weights themselves; retrain"):
        update_card("video_diffusion.moving_digits", {"sha256": "0" * 64})


def test_a_changed_weight_file_is_refused_by_checksum(saved):
    _, _, folder = saved
    weights, _ = pretrained_paths("video_diffusion.moving_digits", folder)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256 .* its card says"):
        load_pretrained("video_diffusion.moving_digits")


def test_unknown_ids_and_misuse_give_one_line_errors(saved):
    with pytest.raises(ConfigError, match=r"no pretrained weights 'video_diffusion\.moving_digit'.*did you mean"):
        zoo.create_model("video_diffusion.moving_digit", pretrained=True)
    with pytest.raises(ConfigError, match="pass pretrained=True"):
        zoo.create_model("video_diffusion.moving_digits")
    with pytest.raises(ConfigError, match="fix their config"):
        zoo.create_model("video_diffusion.moving_digits", pretrained=True, dim=64)
    model = zoo.create_model("video_ar")
    with pytest.raises(ConfigError, match="must be 'video_ar.<dataset>'"):
        save_pretrained(model, "video_diffusion.moving_digits", {})


SHIPPED = zoo.list_pretrained()


@pytest.mark.parametrize("pretrained_id", SHIPPED)
def test_every_shipped_weight_file_matches_its_card_and_generates(pretrained_id):
    model, card = load_pretrained(pretrained_id)  # verifies the sha256
    for field in ("steps", "cpu_minutes", "flops", "ema_decay", "quality", "recipe", "batch_size"):
        assert field in card, f"card of {pretrained_id} lacks {field}"
    assert card["quality"]["num_videos"] >= 128
    videos = model.generate(2, model.clip_length, zoo.Conditioning(text=["a 3 moving left", "a 7 moving up"]),
                            generator=0)
    assert videos.shape == (2, model.clip_length, *model.frame_size)
    assert videos.std() > 0.05, "a trained model draws something, not a flat frame"


LEARNED = [i for i in SHIPPED if pretrained_card(i)["quality"].get("digits", 0) >= 0.2]  # nothing to regress otherwise


@pytest.mark.slow
@pytest.mark.parametrize("pretrained_id", LEARNED)
def test_shipped_weights_still_reach_their_cards_prompt_adherence(pretrained_id):
    """The card's figures were measured on the fp32 weights before the fp16 export, with the card's seed: the shipped
    file must read the same within sampling error (3 binomial standard errors), and far above an unlearned model."""
    from benchmarks.harness.pretrain import prompt_adherence

    model, card = load_pretrained(pretrained_id)
    quality = card["quality"]
    measured = prompt_adherence(model, card["dataset"], quality["num_videos"], seed=quality["seed"])
    for label in ("digits", "direction", "all"):
        p = quality[label]
        tolerance = 3 * (max(p * (1 - p), 0.05) / quality["num_videos"]) ** 0.5
        assert abs(measured[label] - p) <= tolerance, f"{label}: {measured[label]} vs the card's {p}"


PERSISTENT = [i for i in SHIPPED if pretrained_card(i).get("persistence", {}).get("all", 0) >= 0.3]


@pytest.mark.slow
@pytest.mark.parametrize("pretrained_id", PERSISTENT)
def test_shipped_weights_still_keep_their_digits_as_their_card_says(pretrained_id):
    """The card's persistence read 128 videos of twice the clip length in batches of 32 from the card's seed; the
    first batch is the same 32 videos, so the shipped file must read within 3 binomial standard errors of 32."""
    from benchmarks.harness.pretrain import label_persistence

    model, card = load_pretrained(pretrained_id)
    expected = card["persistence"]
    measured = label_persistence(model, card["dataset"], 32, seed=expected["seed"])
    tolerance = 3 * (max(expected["all"] * (1 - expected["all"]), 0.05) / 32) ** 0.5
    assert abs(measured["all"] - expected["all"]) <= tolerance, f"{measured['all']} vs the card's {expected['all']}"
