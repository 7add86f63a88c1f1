"""The new-experiment form as data: a preset fills it, it becomes the API's body, the local
check runs the server's spec code, the cost is the spec's probe_cost, and a 422 `loc` finds
its field."""

from __future__ import annotations

import pytest

from server.presets import PRESETS
from server.spec import RunSpec
from webapp import formspec
from webapp.formspec import FORM, cost, field_for_loc, local_check, parse, values_from_preset


def preset_json(name: str) -> dict:
    p = PRESETS[name]
    return {"name": p.name, "figures": p.figures, "description": p.description,
            "base": p.base, "vary": p.vary, "runs": 2}


def test_a_preset_fills_every_field_and_round_trips_to_its_own_specs():
    preset = preset_json("quick-mlp")
    values = values_from_preset(preset)
    assert values["norms"] == ["none", "batch"] and values["lrs"] == "0.5"
    assert values["steps"] == 800 and values["stride"] == 20 and values["ics_layers"] == "3, 5"
    assert values["multipliers"] == "0.5, 1, 2, 4" and values["batch"] == "128"
    parsed = parse(values)
    assert parsed.errors == {}
    specs, errors = local_check(parsed.body, preset)
    assert errors == {}
    # Unchanged, the form launches exactly the preset's runs.
    assert [s.model_dump() for s in specs] == [s.model_dump() for s in PRESETS["quick-mlp"]
                                               .specs()]


def test_full_batch_and_several_learning_rates():
    values = values_from_preset(preset_json("quick-dln"))
    assert values["batch"] == "full" and values["model"] == "dln"
    values.update(lrs="1e-6, 1e-7", name=" dln sweep ")
    body = parse(values).body
    assert body["vary"] == {"norm": ["none", "batch"], "lr": [1e-6, 1e-7]}
    assert "lr" not in body["base"] and body["base"]["batch_size"] is None
    assert body["base"]["loss"] == "sum_squares" and body["name"] == "dln sweep"
    assert body["preset"] == "quick-dln"
    assert body["base"]["probes.ics.every"] == body["base"]["probes.landscape.every"] == 10
    specs, errors = local_check(body, preset_json("quick-dln"))
    assert not errors and len(specs) == 4


def test_unreadable_fields_are_errors_at_the_field():
    values = values_from_preset(None)
    values.update(lrs="fast", batch="many", multipliers="1, two", norms=[], steps=None)
    errors = parse(values).errors
    assert set(errors) == {"lrs", "batch", "multipliers", "norms", "steps"}


@pytest.mark.parametrize("change,field", [
    ({"ics_layers": "9"}, "ics_layers"),  # beyond the model's 6 weight layers
    ({"model": "vgg", "dataset": "mnist1d"}, "dataset"),  # VGG needs images
    ({"norms": ["group"], "width": 130}, "norms"),  # its 8 groups must divide the width
])
def test_the_local_check_points_at_the_field(change, field):
    values = {**values_from_preset(preset_json("quick-mlp")), **change}
    parsed = parse(values)
    assert parsed.errors == {}
    _, errors = local_check(parsed.body, preset_json("quick-mlp"))
    assert list(errors) == [field], errors


LIMITS = {"max_steps": 200_000, "max_batch": 8192}


@pytest.mark.parametrize("field,typed,message", [
    # What the browser sends as typed (text), and the constraint the field states: "required"
    # only for an empty field.
    ("steps", "-5", "a whole number ≥ 1"),
    ("steps", "2.5", "a whole number ≥ 1"),
    ("steps", "0", "a whole number ≥ 1"),
    ("steps", "many", "a whole number ≥ 1"),
    ("steps", "", "required"),
    ("steps", "  ", "required"),
    ("steps", None, "required"),
    # this server's limit, not the spec's 1,000,000,000
    ("steps", "1e12", "at most 200,000 steps on this server (LANDSCOPE_MAX_STEPS)"),
    ("steps", "500000", "at most 200,000 steps on this server (LANDSCOPE_MAX_STEPS)"),
    ("depth", "0", "a whole number ≥ 1"),
    ("depth", "500", "at most 200"),
    ("width", "0", "a number > 0"),
    ("width", "-3", "a number > 0"),
    ("width", "inf", "a number > 0"),
    ("stride", "-1", "a whole number ≥ 0 (0 = off)"),
    ("stride", "", "required (0 = off)"),
    ("sharpness", "1.5", "a whole number ≥ 0 (0 = off)"),
    ("eval_every", "-2", "a whole number ≥ 0 (0 = off)"),
    ("batch", "0", "a whole number ≥ 1, or 'full' for full-batch gradient descent"),
    ("batch", "", "required"),
    ("batch", "10000", "at most 8,192 per batch on this server (LANDSCOPE_MAX_BATCH)"),
    ("seed", "-3", "one or more whole numbers ≥ 0, comma-separated"),
    ("seed", "0.5", "one or more whole numbers ≥ 0, comma-separated"),
    ("seed", "", "one or more whole numbers ≥ 0, comma-separated"),
    ("seed", "1, 2, 1", "each seed once"),
])
def test_each_field_says_what_it_takes(field, typed, message):
    values = {**values_from_preset(preset_json("quick-mlp")), field: typed}
    assert parse(values, LIMITS).errors == {field: message}


@pytest.mark.parametrize("field,typed,value", [
    ("steps", "300", 300), ("steps", " 1e3 ", 1000), ("steps", 800.0, 800),
    ("width", "0.25", 0.25), ("depth", "+3", 3), ("batch", "FULL", None),
    ("eval_every", "0", 0),
])
def test_typed_numbers_are_read(field, typed, value):
    values = {**values_from_preset(preset_json("quick-mlp")), field: typed}
    parsed = parse(values, LIMITS)
    assert parsed.errors == {}
    key = {"batch": "batch_size"}.get(field, field)
    assert parsed.body["base"][key] == value and type(parsed.body["base"][key]) is type(value)


def test_without_the_servers_limits_the_spec_bounds_the_field():
    values = {**values_from_preset(preset_json("quick-mlp")), "steps": "1e12"}
    assert parse(values).errors == {"steps": "at most 1,000,000,000"}
    assert parse({**values, "steps": "500000"}).errors == {}


def test_several_seeds_are_one_run_each_of_every_normalisation():
    preset = preset_json("quick-mlp")
    values = {**values_from_preset(preset), "seed": "0, 1, 2"}
    assert values_from_preset(preset)["seed"] == "0"
    body = parse(values, LIMITS, preset).body
    assert body["vary"] == {"norm": ["none", "batch"], "seed": [0, 1, 2]}
    assert "seed" not in body["base"]
    specs, errors = local_check(body, preset)
    assert not errors and sorted((s.norm, s.seed) for s in specs) == [
        (n, s) for n in ("batch", "none") for s in (0, 1, 2)]
    c = cost(specs)
    assert c["runs"] == 6 and c["steps"] == 6 * 800
    # One seed, as before: the base's, the preset's vary untouched.
    body = parse({**values, "seed": "7"}, LIMITS, preset).body
    assert body["base"]["seed"] == 7 and "seed" not in body["vary"]


def test_one_value_replaces_a_list_the_preset_varies():
    # paper-dln-ics varies the LR: one LR typed over it is one LR, not the preset's two.
    preset = preset_json("paper-dln-ics")
    values = {**values_from_preset(preset), "lrs": "1e-6"}
    body = parse(values, LIMITS, preset).body
    assert body["vary"]["lr"] == [1e-6]
    specs, _ = local_check(body, preset)
    assert len(specs) == 2
    # A preset that varies the seed shows its seeds, and one typed seed replaces them.
    seeded = {**preset, "vary": {**preset["vary"], "seed": [0, 1]}}
    assert values_from_preset(seeded)["seed"] == "0, 1"
    body = parse({**values_from_preset(seeded), "seed": "4"}, LIMITS, seeded).body
    assert body["vary"]["seed"] == [4]
    assert {s.seed for s in local_check(body, seeded)[0]} == {4}


@pytest.mark.parametrize("loc,field", [
    (["body", "base", "steps"], "steps"),
    (["body", "base", "probes", "landscape", "every"], "stride"),
    (["body", "base", "probes.ics.layers", 0], "ics_layers"),
    (["body", "base", "probes", "landscape", "multipliers", 2], "multipliers"),
    (["body", "vary", "lr"], "lrs"),
    (["body", "vary", "norm"], "norms"),
    (["body", "vary"], "norms"),
    (["body", "base", "batch_size"], "batch"),
    (["body", "name"], "name"),
    (["body", "preset"], "preset"),
    (["body", "base", "n_samples"], FORM),
    (["query", "x"], FORM),
])
def test_422_locations_map_to_form_fields(loc, field):
    assert field_for_loc(tuple(loc)) == field


def test_a_spec_wide_error_is_placed_by_the_key_it_names():
    msg = "probes.ics.layers [9] exceed the model's 6 weight layers"
    assert field_for_loc(("body", "base"), msg) == "ics_layers"
    assert field_for_loc(("body", "base"), "something else entirely") == FORM


def test_cost_is_the_specs_probe_cost():
    specs = PRESETS["quick-mlp"].specs()
    c = cost(specs)
    assert c["runs"] == 2 and c["steps"] == 1600
    assert c["floor"] == pytest.approx(specs[0].probe_cost()["floor"])
    assert c["passes"]["landscape"] == pytest.approx(4 / 20)
    # from 1 + 2 x 2 Lanczos steps (the least) to 1 + 2 x max_iters (100): a range
    assert c["detail"]["sharpness"] == (5, 100, 201)
    assert cost([]) == {}
    # The defaults probe nothing that costs a pass: plain training's speed.
    assert cost([RunSpec()])["floor"] == 1.0


def test_cost_carries_the_servers_estimates_marked_against_its_limits():
    from server.cost import estimate

    specs = PRESETS["paper-vgg16"].specs()  # none and batch: BN adds norm parameters
    limits = {"max_params": 14_720_000, "max_memory_mb": 16384, "max_dataset_mb": 100}
    rows = {e["key"]: e for e in cost(specs, limits)["estimates"]}
    assert list(rows) == ["params", "activation_mb", "memory_mb", "dataset_mb", "cost_steps"]
    # The largest run's value: each run is checked on its own.
    assert rows["params"]["value"] == max(estimate(s).params for s in specs) == 14_728_266
    assert rows["params"]["over"] and rows["params"]["limit"] == 14_720_000
    assert not rows["memory_mb"]["over"] and rows["dataset_mb"]["over"]
    assert rows["activation_mb"]["limit"] is None and not rows["activation_mb"]["over"]
    # No limits known (the API unreachable): values, nothing marked.
    assert not any(e["over"] for e in cost(specs)["estimates"])
    assert cost(specs)["cost_steps_total"] == pytest.approx(
        sum(estimate(s).cost_steps for s in specs))


def test_every_field_maps_to_spec_keys():
    assert set(formspec.FIELD_KEYS) | {"name", "preset"} == set(formspec.FIELDS)


def test_numerics_optimiser_and_snapshots_reach_the_spec():
    preset = preset_json("quick-mlp")
    values = {**values_from_preset(preset), "dtype": "float64", "deterministic": [formspec.ON],
              "threads": " 2 ", "snapshot_every": "100", "momentum": "0.9",
              "weight_decay": "5e-4"}
    parsed = parse(values, LIMITS, preset)
    assert parsed.errors == {}
    base = parsed.body["base"]
    assert (base["dtype"], base["deterministic"], base["bf16"], base["threads"]) == (
        "float64", True, False, 2)
    assert base["snapshots.every"] == 100 and base["momentum"] == 0.9
    specs, errors = local_check(parsed.body, preset)
    assert not errors and {s.dtype for s in specs} == {"float64"}
    assert all(s.deterministic and s.threads == 2 and s.snapshots.every == 100
               and s.weight_decay == 5e-4 for s in specs)
    # Empty threads: the worker's own setting, as the spec's null says.
    assert parse({**values, "threads": ""}, LIMITS, preset).body["base"]["threads"] is None


def test_a_preset_fills_its_numerics_and_optimiser():
    dln = values_from_preset(preset_json("quick-dln"))
    assert dln["dtype"] == "float64" and dln["bf16"] == [] and dln["deterministic"] == []
    resnet = values_from_preset(preset_json("paper-resnet56-skip"))
    assert (resnet["optimizer"], resnet["momentum"], resnet["weight_decay"]) == (
        "sgd", 0.9, 5e-4)
    assert resnet["threads"] == "" and resnet["snapshot_every"] == 0


def test_adam_sends_no_momentum_even_where_the_preset_set_one():
    preset = preset_json("paper-resnet56-skip")  # SGD with momentum 0.9
    values = {**values_from_preset(preset), "optimizer": "adam", "momentum": "nonsense"}
    parsed = parse(values, LIMITS, preset)
    assert parsed.errors == {}  # the hidden field is not read
    specs, errors = local_check(parsed.body, preset)
    assert not errors and all(s.optimizer == "adam" and s.momentum == 0 for s in specs)


@pytest.mark.parametrize("field,typed,message", [
    ("momentum", "1", "less than 1"),
    ("momentum", "-0.1", "a number ≥ 0"),
    ("weight_decay", "x", "a number ≥ 0"),
    ("snapshot_every", "-1", "a whole number ≥ 0 (0 = the first and last step only)"),
    ("threads", "0", "a whole number ≥ 1, or empty for the worker's default"),
    ("threads", "1.5", "a whole number ≥ 1, or empty for the worker's default"),
    ("threads", "5000", "at most 1,024, or empty for the worker's default"),
])
def test_numerics_fields_say_what_they_take(field, typed, message):
    values = {**values_from_preset(preset_json("quick-mlp")), field: typed}
    assert parse(values, LIMITS).errors == {field: message}


@pytest.mark.parametrize("change,field,message", [
    ({"bf16": [formspec.ON], "dtype": "float64"}, "dtype",  # autocast is a float32 thing
     "bf16 autocast applies to float32 runs only; set dtype=float32"),
    ({"bf16": [formspec.ON], "device": "cpu"}, "bf16",  # and a CUDA one
     "bf16 autocast runs on CUDA only: this run is set to the CPU"),
])
def test_bf16_conflicts_point_at_their_field(change, field, message):
    preset = preset_json("quick-mlp")
    parsed = parse({**values_from_preset(preset), **change}, LIMITS, preset)
    assert parsed.errors == {}
    # in the spec's words, without pydantic's "Value error, "
    assert local_check(parsed.body, preset)[1] == {field: message}
