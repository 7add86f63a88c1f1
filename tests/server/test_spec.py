"""The run spec: validation with field paths, overrides, experiments as cross products."""

from __future__ import annotations

import pytest

from server.cost import estimate, eval_steps
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


def test_sharpness_costs_a_range_and_admission_charges_its_cap():
    # One gradient pass plus two per Lanczos step; it stops on its tolerance, after 2 steps at
    # the earliest and max_iters at the latest. The floor is the least, admission the most.
    spec = build_spec({"steps": 100, "probes": {"sharpness": {"every": 10, "max_iters": 30}}})
    assert spec.probe_cost()["sharpness"] == pytest.approx((1 + 2 * 2) / 10)
    assert spec.probe_cost("most")["sharpness"] == pytest.approx((1 + 2 * 30) / 10)
    assert estimate(spec).cost_steps == pytest.approx(100 * (1 + 61 / 10) + eval_steps(spec))
    one = build_spec({"probes": {"sharpness": {"every": 1, "max_iters": 1}}})
    assert one.probe_cost() == one.probe_cost("most")  # a cap below 2 is the cap


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


def _unbounded(schema: dict, defs: dict, path: str) -> list[str]:
    """Paths in a JSON schema where a number has no maximum, a string no maxLength (nor an
    enum), an array no maxItems or an object no bound on its keys."""
    if "$ref" in schema:
        return _unbounded(defs[schema["$ref"].rsplit("/", 1)[1]], defs, path)
    out = []
    for alt in schema.get("anyOf", []):
        out += _unbounded(alt, defs, path)
    kind = schema.get("type")
    if kind in ("number", "integer") and not {"maximum", "exclusiveMaximum", "enum"} & set(
            schema):
        out.append(path)
    if kind == "string" and not {"maxLength", "enum", "const"} & set(schema):
        out.append(path)
    if kind == "array":
        if "maxItems" not in schema:
            out.append(path)
        for i, item in enumerate(schema.get("prefixItems", [])):
            out += _unbounded(item, defs, f"{path}.{i}")
        if "items" in schema:
            out += _unbounded(schema["items"], defs, f"{path}[]")
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            out += _unbounded(sub, defs, f"{path}.{name}".lstrip("."))
        if schema.get("additionalProperties", False) not in (False, {}) and \
                "maxProperties" not in schema:
            out.append(f"{path}.*")
    return out


def test_every_number_string_and_list_of_the_spec_is_bounded():
    schema = RunSpec.model_json_schema()
    assert _unbounded(schema, schema.get("$defs", {}), "") == []


def test_every_part_of_a_request_body_is_bounded():
    from server.schemas import ExperimentCreate, RunCreate

    for model in (ExperimentCreate, RunCreate):
        schema = model.model_json_schema()
        assert _unbounded(schema, schema.get("$defs", {}), "") == [], model.__name__


@pytest.mark.parametrize("data,path", [
    ({"lr": 1e308}, "lr"), ({"weight_decay": 1e6}, "weight_decay"),
    ({"norm_eps": 2.0}, "norm_eps"), ({"width": 1e308}, "width"),
    ({"noise": {"scale_high": 1e308}}, "noise.scale_high"),
    ({"noise": {"mean_range": float("nan")}}, "noise.mean_range"),
    ({"probes": {"landscape": {"multipliers": [1e308]}}}, "probes.landscape.multipliers"),
    ({"probes": {"landscape": {"multipliers": [float("nan")]}}},
     "probes.landscape.multipliers"),
    ({"probes": {"activations": {"range": [-1e308, 1e308]}}}, "probes.activations.range"),
    ({"probes": {"activations": {"range": [float("nan"), 1]}}}, "probes.activations.range"),
    ({"probes": {"ics": {"layers": list(range(1, 202))}}}, "probes.ics.layers"),
    ({"probes": {"ics": {"layers": [10**6]}}}, "probes.ics.layers"),
    ({"probes": {"sharpness": {"iters": 501}}}, "probes.sharpness.iters"),
    ({"probes": {"sharpness": {"max_iters": 501}}}, "probes.sharpness.max_iters"),
    ({"probes": {"sharpness": {"tol": 2.0}}}, "probes.sharpness.tol"),
    ({"probes": {"sharpness": {"tol": -1e-3}}}, "probes.sharpness.tol"),
    ({"input_dim": 10**9}, "input_dim"), ({"n_samples": 10**12}, "n_samples"),
    ({"steps": 10**12}, "steps"), ({"probes": {"ics": {"every": 10**12}}}, "probes.ics.every"),
    ({"device": "cuda:" + "0" * 100}, "device"),
])
def test_values_out_of_any_sane_range_are_refused_at_the_field(data, path):
    with pytest.raises(SpecError) as err:
        build_spec(data)
    assert err.value.path == path


def test_sharpness_defaults_run_to_a_tolerance_under_a_cap():
    s = RunSpec().probes.sharpness
    assert (s.max_iters, s.tol) == (100, 1e-3)


def test_old_sharpness_iters_still_validates_and_is_written_back_as_max_iters():
    """Stored runs (and their checkpoints) carry `iters`, the power iteration's fixed count."""
    old = RunSpec().model_dump()
    old["probes"]["sharpness"] = {"every": 5, "iters": 20}
    spec = RunSpec.model_validate(old)
    assert spec.probes.sharpness.max_iters == 20
    assert spec.probes.sharpness.tol == 1e-3
    dumped = spec.model_dump()["probes"]["sharpness"]
    assert dumped == {"every": 5, "max_iters": 20, "tol": 1e-3}
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec
    assert build_spec({"probes": {"sharpness": {"iters": 7}}}).probes.sharpness.max_iters == 7


def test_sharpness_iters_and_max_iters_together_are_refused():
    with pytest.raises(SpecError) as err:
        build_spec({"probes": {"sharpness": {"iters": 7, "max_iters": 9}}})
    assert err.value.path == "probes.sharpness"


def test_overrides_accept_the_old_name_and_replace_the_new_one():
    base = {"probes": {"sharpness": {"every": 3, "max_iters": 9}}}
    out = apply_overrides(base, {"probes.sharpness.iters": 4})
    assert out["probes"]["sharpness"] == {"every": 3, "iters": 4}
    assert build_spec(out).probes.sharpness.max_iters == 4
    back = apply_overrides(out, {"probes.sharpness.max_iters": 6})
    assert back["probes"]["sharpness"] == {"every": 3, "max_iters": 6}
    specs = expand_vary({"probes": {"sharpness": {"every": 2}}},
                        {"probes.sharpness.iters": [3, 5]})
    assert [build_spec(s).probes.sharpness.max_iters for s in specs] == [3, 5]


def test_digits_takes_a_size_option_and_only_that():
    spec = build_spec({"dataset": "digits", "dataset_options": {"size": 32}})
    assert spec.dataset_options == {"size": 32}
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec
    # The default MLP's first layer sees 32 x 32 inputs instead of 8 x 8 (width 128).
    grown = estimate(spec).params - estimate(build_spec({"dataset": "digits"})).params
    assert grown == (32 * 32 - 8 * 8) * 128
    vgg = {"model": "vgg", "width": 0.25, "dataset": "digits"}
    small, big = build_spec(vgg), build_spec({**vgg, "dataset_options": {"size": 32}})
    for est, side in ((estimate(small), 8), (estimate(big), 32)):  # float32 pixels, int64 labels
        assert est.dataset_mb * 2**20 == pytest.approx(1797 * (4 * side * side + 8))


@pytest.mark.parametrize("options,path,words", [
    ({"size": 7}, "dataset_options.size", "from 8 to 64"),
    ({"size": 65}, "dataset_options.size", "from 8 to 64"),
    ({"size": 32.0}, "dataset_options.size", "integer"),
    ({"size": "32"}, "dataset_options.size", "integer"),
    ({"size": True}, "dataset_options.size", "integer"),
    ({"size": None}, "dataset_options.size", "integer"),
    ({"size": 32, "sise": 32}, "dataset_options.sise", "takes: size"),
])
def test_bad_digits_options_are_refused_at_the_option(options, path, words):
    with pytest.raises(SpecError) as err:
        build_spec({"dataset": "digits", "dataset_options": options})
    assert err.value.path == path and words in err.value.message


def test_other_built_in_datasets_still_take_no_options():
    with pytest.raises(SpecError, match="only plug-in datasets take options"):
        build_spec({"dataset": "mnist1d", "dataset_options": {"size": 32}})


def test_a_vgg_without_a_width_is_the_papers_width():
    """width counts units for mlp/dln (128 by default) but multiplies the paper's channels for
    vgg: a vgg spec without one is the paper's network, not 128x wider."""
    vgg = build_spec({"model": "vgg", "dataset": "digits"})
    assert vgg.width == 1.0 and vgg.layer_widths()[0] == 64 and vgg.name_hint().startswith(
        "vgg11x1-")
    assert build_spec({"model": "vgg", "dataset": "digits", "width": None}).width == 1.0
    assert build_spec({"model": "vgg", "dataset": "digits", "width": 0.25}).width == 0.25
    assert build_spec({"model": "mlp"}).width == 128
    with pytest.raises(SpecError, match="width"):
        build_spec({"model": "mlp", "width": None})
    # an experiment varying the model gives each its own default
    widths = [build_spec(d).width for d in expand_vary({"dataset": "digits"},
                                                       {"model": ["mlp", "vgg"]})]
    assert widths == [128, 1.0]
