"""The new-experiment page's callbacks against the real API: what each field says as it is
typed (the spec's bounds, this server's limits, those only the server checks from its dry
run), several seeds as one experiment, and the preset labels."""

from __future__ import annotations

import pytest

from tests.webapp.layout_walk import find as _find
from tests.webapp.layout_walk import text as _text
from webapp.app import create_dash
from webapp.formspec import FIELDS
from webapp.pages import new_experiment


def _app(api):
    return create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)


def _form(cbs, presets, preset="quick-mlp", **changes):
    filled = cbs["fill"](preset, presets)[:-1]
    values = dict(zip(new_experiment.INPUT_FIELDS, filled, strict=True))
    return {**values, "preset": preset, **changes}


def _check(cbs, form, presets, limits):
    """The check callback as Dash calls it: (cost panel, errors by field, launch message)."""
    panel, *errors, result = cbs["check"](*[form[f] for f in FIELDS], presets, limits)
    return panel, dict(zip([*FIELDS, "form"], errors, strict=True)), result




@pytest.mark.parametrize("field,typed,message", [
    ("steps", "-5", "a whole number ≥ 1"),
    ("steps", "2.5", "a whole number ≥ 1"),
    ("seed", "-3", "one or more whole numbers ≥ 0, comma-separated"),
    ("depth", "0", "a whole number ≥ 1"),
    ("steps", "", "required"),
    ("steps", "1e12", "at most 200,000 steps on this server (LANDSCOPE_MAX_STEPS)"),
    ("steps", "500000", "at most 200,000 steps on this server (LANDSCOPE_MAX_STEPS)"),
])
def test_a_field_says_what_it_takes_as_it_is_typed(api, field, typed, message):
    cbs = _app(api).landscope_callbacks["new_experiment"]
    presets, *_, limits = cbs["load"](1)
    _, errors, _ = _check(cbs, _form(cbs, presets, **{field: typed}), presets, limits)
    assert {f: e for f, e in errors.items() if e} == {field: message}


def test_a_limit_only_the_server_checks_reaches_its_field_before_launch(api_with_limits):
    limited = api_with_limits(max_width=1000, max_params=100_000)
    cbs = _app(limited).landscope_callbacks["new_experiment"]
    presets, *_, limits = cbs["load"](1)
    panel, errors, _ = _check(cbs, _form(cbs, presets, width="100000"), presets, limits)
    assert "this server allows 1000 (LANDSCOPE_MAX_WIDTH)" in errors["width"]
    assert "cannot cost this experiment" in _text(_find(panel, "new-server-cost"))
    # under the width limit, over the parameters': at the field that drives them
    _, errors, _ = _check(cbs, _form(cbs, presets, width="200"), presets, limits)
    assert "LANDSCOPE_MAX_PARAMS" in errors["width"]
    _, errors, _ = _check(cbs, _form(cbs, presets, width="64"), presets, limits)
    assert not any(errors.values())


def test_several_seeds_are_costed_and_launched_as_one_experiment(api):
    cbs = _app(api).landscope_callbacks["new_experiment"]
    presets, *_, limits = cbs["load"](1)
    form = _form(cbs, presets, seed="0, 1, 2", steps="40")
    assert _form(cbs, presets)["seed"] == "0"  # the preset's one seed
    panel, errors, _ = _check(cbs, form, presets, limits)
    assert not any(errors.values())
    assert "6 runs" in _text(panel)  # 2 normalisations x 3 seeds, locally
    assert "all 6 runs" in _text(_find(panel, "new-cost-total"))  # and by the server
    preset = next(p for p in presets if p["name"] == "quick-mlp")
    href, errors, _ = new_experiment.submit(api.client, form, None, limits=limits,
                                            preset=preset)
    assert not errors
    exp = api.client.experiment(int(href.rsplit("/", 1)[1]))
    assert sorted((r["spec"]["norm"], r["spec"]["seed"]) for r in exp["runs"]) == [
        (n, s) for n in ("batch", "none") for s in (0, 1, 2)]
    # One seed launches as it always did.
    href, errors, _ = new_experiment.submit(api.client, _form(cbs, presets, seed="5",
                                                              steps="40"), None)
    exp = api.client.experiment(int(href.rsplit("/", 1)[1]))
    assert not errors and {r["spec"]["seed"] for r in exp["runs"]} == {5}


def test_preset_labels_say_fig_once(api):
    cbs = _app(api).landscope_callbacks["new_experiment"]
    labels = {o["value"]: o["label"] for o in cbs["load"](1)[1]}
    assert labels["paper-vgg16"] == "paper-vgg16 — Fig 1, 3a, 4"
    assert labels["paper-resnet56-skip"] == "paper-resnet56-skip — Li et al. 2018, Fig 5"
    assert labels["quick-mlp"] == "quick-mlp"
    assert not any("Fig Li" in label for label in labels.values())


def test_changing_the_model_turns_the_other_models_default_width_into_its_own(api):
    """128 units of an MLP read as 128x VGG's channels (a 422 at width, or minutes of building
    in the CLI): picking VGG turns the MLP default into 1, and back; a typed width stays."""
    from dash import no_update

    cbs = _app(api).landscope_callbacks["new_experiment"]
    assert cbs["width_for_model"]("vgg", "128") == 1
    assert cbs["width_for_model"]("mlp", "1") == 128
    assert cbs["width_for_model"]("dln", 1) == 128
    for model, width in (("vgg", "0.5"), ("vgg", "64"), ("mlp", "256"), ("mlp", "abc"),
                         ("resnet", "128"), ("vgg", None)):
        assert cbs["width_for_model"](model, width) is no_update, (model, width)
    # the width a switch gives is one the form and the server accept
    presets, *_, limits = cbs["load"](1)
    form = _form(cbs, presets, model="vgg", dataset="digits", width="1")
    _panel, errors, _result = _check(cbs, form, presets, limits)
    assert errors["width"] == "" and errors["form"] == "", errors
