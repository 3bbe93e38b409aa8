"""The one lookup primitive: registering, refusing duplicates, listing in order, and one-line unknown-name errors."""

from __future__ import annotations

import pytest

from hvz_registry import DuplicateNameError, Registry, UnknownNameError, did_you_mean, unknown_name


def test_register_returns_the_thing_and_works_as_a_decorator():
    shapes: Registry[type] = Registry("shape")

    @shapes.register("square")
    class Square:
        pass

    circle = shapes.register("circle", object())
    assert shapes.get("square") is Square and shapes.get("circle") is circle
    assert "square" in shapes and "triangle" not in shapes and len(shapes) == 2


def test_names_are_listed_sorted_whatever_the_registration_order():
    registry: Registry[int] = Registry("number")
    for value, name in enumerate(["zeta", "alpha", "mu", "alpha_2"]):
        registry.register(name, value)
    assert registry.names() == ["alpha", "alpha_2", "mu", "zeta"] == list(registry)
    assert registry.names("alpha*") == ["alpha", "alpha_2"]


def test_a_duplicate_name_is_a_one_line_error_naming_the_holder():
    registry: Registry[type] = Registry("model")
    registry.register("toy", int)
    with pytest.raises(DuplicateNameError) as error:
        registry.register("toy", float)
    assert str(error.value) == "model 'toy' is already registered by int; give this one another name"
    assert isinstance(error.value, ValueError) and registry.get("toy") is int


def test_registering_the_same_thing_again_is_harmless_and_same_decides_what_is_the_same():
    registry: Registry[tuple[str, int]] = Registry("file", same=lambda old, new: old[0] == new[0])
    registry.register("weights", ("a.pt", 1))
    registry.register("weights", ("a.pt", 2))  # e.g. a module imported twice: the newer object replaces the older
    assert registry.get("weights") == ("a.pt", 2)
    with pytest.raises(DuplicateNameError, match="file 'weights' is already registered to something else"):
        registry.register("weights", ("b.pt", 1))


def test_an_unknown_name_is_a_one_line_error_with_a_suggestion_and_the_choices():
    metrics: Registry[int] = Registry("metric")
    for name in ("fvd", "warping_error", "flicker"):
        metrics.register(name, 0)
    with pytest.raises(UnknownNameError) as error:
        metrics.get("warping_eror")
    message = str(error.value)
    assert message == ("unknown metric 'warping_eror' (did you mean 'warping_error'?); "
                       "known metrics: flicker, fvd, warping_error")
    assert "\n" not in message and isinstance(error.value, KeyError)
    with pytest.raises(UnknownNameError, match=r"^unknown metric 'zzz'; known metrics"):
        metrics.get("zzz")  # nothing close: no suggestion


def test_a_registry_may_raise_its_own_error_with_its_own_hint():
    class UnknownModelError(UnknownNameError):
        pass

    models: Registry[int] = Registry("model", error=UnknownModelError, hint="`zoo list` shows the registered models")
    models.register("tiny_denoiser", 1)
    with pytest.raises(UnknownModelError) as error:
        models.get("tiny_denoisr")
    assert str(error.value) == ("unknown model 'tiny_denoisr' (did you mean 'tiny_denoiser'?); "
                                "`zoo list` shows the registered models")
    empty: Registry[int] = Registry("thing", error=ValueError)
    with pytest.raises(ValueError, match="unknown thing 'x'; known things: none"):
        empty.get("x")


def test_the_message_helpers_are_what_every_registry_uses():
    assert did_you_mean("moving_digit", ["moving_digits", "bouncing_shapes"]) == " (did you mean 'moving_digits'?)"
    assert did_you_mean("xyz", ["moving_digits"]) == ""
    assert unknown_name("split", "valid", ("train", "val", "test"), "use one of train, val, test") == (
        "unknown split 'valid' (did you mean 'val'?); use one of train, val, test")
