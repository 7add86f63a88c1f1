"""Plug-in names and options in the run spec, and what the cost estimate says of them."""

from __future__ import annotations

import math

import pytest

from server.cost import UnknownCost, data_shape, estimate, tally
from server.spec import SpecError, apply_overrides, build_spec, flatten


@pytest.mark.parametrize("name,ok", [
    ("lab.net", True), ("lab", True), ("a.b_c.d9", True), ("os.system", True),
    ("Lab.net", False), ("lab..net", False), (".lab", False), ("lab.", False),
    ("9lab", False), ("lab:net", False), ("lab/net", False), ("lab-net", False),
    ("x" * 101, False),
])
def test_plugin_names_follow_the_pattern(name, ok):
    if ok:
        assert build_spec({"model": name}).plugin_model
        assert build_spec({"dataset": name}).plugin_dataset
    else:
        with pytest.raises(SpecError) as err:
            build_spec({"model": name})
        assert err.value.path == "model"


def test_builtins_stay_builtins_and_take_no_options():
    spec = build_spec({"model": "mlp", "dataset": "digits"})
    assert not spec.plugin_model and not spec.plugin_dataset
    for field in ("model", "dataset"):
        with pytest.raises(SpecError) as err:
            build_spec({f"{field}_options": {"x": 1}})
        assert err.value.path == f"{field}_options"


def test_options_are_values_and_dotted_keys_set_one_option():
    base = {"model": "lab.net", "model_options": {"a": {"b": 1}, "c": 2}}
    # A nested dict replaces the options (free JSON is not a section of the spec) ...
    assert apply_overrides(base, flatten({"model_options": {"z": 0}}))["model_options"] == \
        {"z": 0}
    # ... and a dotted key sets one option, deep or not.
    got = apply_overrides(base, {"model_options.a.d": 3, "model_options.e": 4})
    assert got["model_options"] == {"a": {"b": 1, "d": 3}, "c": 2, "e": 4}
    assert base["model_options"] == {"a": {"b": 1}, "c": 2}  # the base is not changed


def test_spec_facts_a_plugin_leaves_open():
    spec = build_spec({"model": "lab.net", "probes": {"ics": {"every": 1, "layers": [150]}}})
    assert spec.n_weight_layers() is None and spec.layer_widths() == []
    assert spec.name_hint() == "lab.net-none-lr0.1-s0"
    # vgg wants images: a plug-in dataset may be; the worker finds out.
    assert build_spec({"model": "vgg", "dataset": "lab.images"}).plugin_dataset


def test_the_cost_of_a_plugin_run_says_what_is_unknown():
    model = estimate(build_spec({"model": "lab.net", "steps": 100, "eval_every": 0}))
    assert set(model.unknown) == {"params", "activation_elements", "activation_mb",
                                  "memory_mb"}
    assert math.isnan(model.memory_mb) and model.dataset_mb > 0
    assert model.cost_steps == 100 * build_spec({"steps": 100}).probe_cost()["floor"]
    data = estimate(build_spec({"dataset": "lab.data", "steps": 100}))
    assert "dataset_mb" in data.unknown and math.isnan(data.dataset_mb)
    with pytest.raises(UnknownCost):
        data_shape(build_spec({"dataset": "lab.data"}))
    with pytest.raises(UnknownCost):
        tally(build_spec({"model": "lab.net"}))
