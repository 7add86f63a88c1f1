"""The run spec: validation with field paths, overrides, experiments as cross products."""

from __future__ import annotations

import pytest

from server.spec import RunSpec, SpecError, apply_overrides, build_spec, expand_vary, parse_value


def test_defaults_are_valid_and_round_trip_through_json():
    spec = RunSpec()
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    "data,path",
    [
        ({"lr": 0}, "lr"),
        ({"probes": {"landscape": {"multipliers": [1.0, -2.0]}}}, "probes.landscape.multipliers"),
        ({"probes": {"ics": {"layers": [0]}}}, "probes.ics.layers"),
        ({"device": "tpu"}, "device"),
        ({"noise": {"scale_low": 2.0, "scale_high": 1.0}}, "noise"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_errors_name_the_field_path(data, path):
    with pytest.raises(SpecError) as exc:
        build_spec(data)
    assert exc.value.path == path


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"model": "dln", "loss": "cross_entropy"}, "sum_squares"),
        ({"norm": "group", "width": 10, "norm_groups": 4}, "must divide every layer width"),
        ({"probes": {"ics": {"every": 1, "layers": [9]}}, "depth": 4}, "exceed the model's 4"),
        ({"model": "mlp", "width": 12.5}, "whole number"),
    ],
)
def test_cross_field_rules(data, needle):
    with pytest.raises(SpecError, match=needle):
        build_spec(data)


@pytest.mark.parametrize("word", ["none", "full", "null"])
def test_full_batch_words(word):
    assert build_spec({"batch_size": word}).batch_size is None


def test_probe_cost_is_the_protocol_floor():
    spec = build_spec({"probes": {"landscape": {"every": 16, "multipliers": [0.5, 1, 2, 4]},
                                  "ics": {"every": 16, "layers": [1, 2]},
                                  "activations": {"every": 1}}})
    assert spec.probe_cost() == {"landscape": 0.25, "ics": 0.125, "sharpness": 0.0,
                                 "floor": 1 + 6 / 16}
    assert RunSpec(probes={"grad_norm": {"every": 0}}).probe_cost()["floor"] == 1.0


def test_vgg_layer_counts_and_widths():
    vgg16 = RunSpec(model="vgg", vgg_config=16, dataset="cifar10", width=0.25)
    assert vgg16.n_weight_layers() == 14
    assert vgg16.layer_widths()[:3] == [16, 16, 32]
    assert RunSpec(model="vgg", dataset="digits").n_weight_layers() == 9


def test_overrides_set_dotted_keys_and_reject_unknown_ones():
    out = apply_overrides({"probes": {"ics": {"every": 1}}}, {"probes.ics.layers": [2, 3]})
    assert out == {"probes": {"ics": {"every": 1, "layers": [2, 3]}}}
    with pytest.raises(SpecError, match="lr is a value, not a section"):
        apply_overrides({}, {"lr.x": 1})


def test_expand_vary_is_the_cross_product_sharing_everything_else():
    runs = expand_vary({"seed": 5}, {"norm": ["none", "batch"], "lr": [0.1, 0.5]})
    assert [(r["norm"], r["lr"]) for r in runs] == [
        ("none", 0.1), ("none", 0.5), ("batch", 0.1), ("batch", 0.5)]
    assert all(r["seed"] == 5 for r in runs)
    with pytest.raises(SpecError, match="vary.norm"):
        expand_vary({}, {"norm": []})


@pytest.mark.parametrize(
    "text,value",
    [("0.1", 0.1), ("true", True), ("null", None), ("[1, 2]", [1, 2]), ("3,6", [3, 6]),
     ("batch", "batch"), ("none,batch", ["none", "batch"])],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize("key", ["width", "lr", "momentum"])
def test_non_finite_numbers_are_refused_with_the_field(key):
    with pytest.raises(SpecError) as err:
        build_spec({key: float("inf")})
    assert err.value.path == key
