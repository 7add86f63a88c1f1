"""Limits on cost, not shape, through the API: every spec the hardening review found accepted
at a cost far over any limit's intent is a 422 at the field that drives it, and nothing is
stored; every preset and every reproduction plan still fits the default limits; the limits
are readable at GET /limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from server.cost import estimate
from server.presets import PRESETS
from server.reproduction import SCALES, experiments_for
from server.services.specs import limit_violations
from server.settings import Settings

MLP_200x4096 = {"model": "mlp", "depth": 200, "width": 4096}
HUGE_SHARPNESS = {"steps": 200_000, "probes": {"sharpness": {"every": 1, "iters": 500}}}


@pytest.fixture
def big_body_client(sqlite_backend: Settings) -> Iterator[TestClient]:
    """A server that lets large bodies through (LANDSCOPE_MAX_BODY_BYTES), so the schema's
    own bounds are what refuses them."""
    from server.api.app import create_app

    settings = sqlite_backend.model_copy(update={"max_body_bytes": 64 * 2**20})
    with TestClient(create_app(settings)) as c:
        yield c


def assert_422_at(client: TestClient, path: str, body: dict, loc: list, *needles: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == loc
    for needle in needles:
        assert needle in err["msg"], err["msg"]
    assert client.get("/api/v1/experiments").json()["total"] == 0
    assert client.get("/api/v1/runs").json()["total"] == 0


@pytest.mark.parametrize("body,loc", [
    ({"base": {"probes": {"ics": {"every": 1, "layers": list(range(1, 1_000_001))}}}},
     ["body", "base", "probes", "ics", "layers"]),
    ({"base": {"probes.ics.layers": [1] * 1_000_000}}, ["body", "base", "probes", "ics",
                                                         "layers"]),
    ({"vary": {"probes.ics.layers": [[1] * 1_000_000]}}, ["body", "vary", "probes.ics.layers",
                                                          0]),
])
def test_a_million_ics_layers_are_refused_at_the_list(big_body_client, body, loc):
    assert_422_at(big_body_client, "/api/v1/experiments", body, loc, "at most 256 entries")


def test_a_long_ics_layer_list_within_the_nesting_bounds_is_refused_by_the_spec(sqlite_client):
    body = {"spec": {"probes": {"ics": {"every": 1, "layers": list(range(1, 202))}}}}
    assert_422_at(sqlite_client, "/api/v1/runs", body,
                  ["body", "spec", "probes", "ics", "layers"], "at most 200 items")


@pytest.mark.parametrize("path,body,loc", [
    ("/api/v1/experiments", {"base": MLP_200x4096}, ["body", "base", "width"]),
    ("/api/v1/experiments", {"base": {"width": 4096}, "vary": {"depth": [4, 200]}},
     ["body", "base", "width"]),
    ("/api/v1/runs", {"spec": MLP_200x4096}, ["body", "spec", "width"]),
    ("/api/v1/runs", {"preset": "quick-mlp", "overrides": {"depth": 200, "width": 4096}},
     ["body", "overrides", "width"]),
])
def test_a_deep_wide_mlp_is_refused_by_its_parameter_count(sqlite_client, path, body, loc):
    """200 x 4096 passes the widest-layer limit (4096) but has 3.3 billion parameters."""
    assert_422_at(sqlite_client, path, body, loc, "3,322,908,682 parameters",
                  "200,000,000", "LANDSCOPE_MAX_PARAMS")


def test_the_parameter_limit_points_at_what_the_request_set(sqlite_backend):
    from server.api.app import create_app

    settings = sqlite_backend.model_copy(update={"max_params": 1_000_000})
    with TestClient(create_app(settings)) as c:  # the default width 128: depth drives it
        assert_422_at(c, "/api/v1/experiments", {"vary": {"depth": [4, 100]}},
                      ["body", "vary", "depth"], "LANDSCOPE_MAX_PARAMS")


@pytest.mark.parametrize("field,value", [("input_dim", 10**9), ("n_samples", 10**12)])
def test_gaussian_sizes_beyond_any_machine_are_refused(sqlite_client, field, value):
    spec = {"model": "dln", "dataset": "gaussian_linear", "loss": "sum_squares", field: value}
    assert_422_at(sqlite_client, "/api/v1/runs", {"spec": spec}, ["body", "spec", field],
                  "less than or equal")


def test_a_dataset_over_the_memory_limit_is_refused_at_its_size(sqlite_client):
    spec = {"model": "dln", "dataset": "gaussian_linear", "loss": "sum_squares",
            "n_samples": 10_000_000, "input_dim": 100}  # within the spec's bounds: 15 GiB
    assert_422_at(sqlite_client, "/api/v1/runs", {"spec": spec}, ["body", "spec", "n_samples"],
                  "MiB of dataset", "LANDSCOPE_MAX_DATASET_MB")


@pytest.mark.parametrize("probes,loc", [
    ({"landscape": {"every": 1, "multipliers": [1e308]}},
     ["body", "base", "probes", "landscape", "multipliers"]),
    ({"activations": {"every": 1, "range": [-1e308, 1e308]}},
     ["body", "base", "probes", "activations", "range"]),
])
def test_huge_probe_floats_are_refused(sqlite_client, probes, loc):
    assert_422_at(sqlite_client, "/api/v1/experiments", {"base": {"probes": probes}}, loc)


@pytest.mark.parametrize("body,loc", [
    ({"base": HUGE_SHARPNESS}, ["body", "base", "probes", "sharpness", "every"]),
    ({"base": {"steps": 200_000, "probes.sharpness.iters": 500},
      "vary": {"probes.sharpness.every": [1]}}, ["body", "vary", "probes.sharpness.every"]),
])
def test_a_sharpness_probe_a_thousand_times_training_is_refused(sqlite_client, body, loc):
    assert_422_at(sqlite_client, "/api/v1/experiments", body, loc, "200,405,211 training-step",
                  "LANDSCOPE_MAX_COST_STEPS")


def test_training_memory_over_the_limit_is_refused_at_the_batch(sqlite_client):
    # The paper's VGG-16 with batches of 8192 (within LANDSCOPE_MAX_BATCH): ~80 GiB.
    assert_422_at(sqlite_client, "/api/v1/experiments",
                  {"preset": "paper-vgg16", "base": {"batch_size": 8192}},
                  ["body", "base", "batch_size"], "MiB of training memory",
                  "LANDSCOPE_MAX_MEMORY_MB")


@pytest.mark.parametrize("body,loc,needle", [
    ({"base": {f"k{i}": 1 for i in range(65)}}, ["body", "base"], "at most 64 items"),
    ({"vary": {f"k{i}": [1] for i in range(17)}}, ["body", "vary"], "at most 16 items"),
    ({"preset": "p" * 65}, ["body", "preset"], "at most 64 characters"),
    ({"base": {"norm": "x" * 201}}, ["body", "base", "norm"], "at most 200 characters"),
    ({"base": {"probes": {"ics": {"layers": [[[[[[[[[[1]]]]]]]]]]}}}},
     ["body", "base", "probes", "ics", "layers", 0, 0, 0, 0, 0, 0], "deeper than 8"),
    ({"base": {"probes": {"k" * 201: 1}}}, ["body", "base", "probes"], "keys of at most 200"),
])
def test_request_shapes_are_bounded(sqlite_client, body, loc, needle):
    assert_422_at(sqlite_client, "/api/v1/experiments", body, loc, needle)


def test_a_spec_key_longer_than_any_field_is_refused(sqlite_client):
    r = sqlite_client.post("/api/v1/runs", json={"spec": {"k" * 101: 1}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:2] == ["body", "spec"]


def defaults() -> Settings:
    return Settings(_env_file=None)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_fits_the_default_limits(name):
    for spec in PRESETS[name].specs():
        assert list(limit_violations(spec, defaults())) == []


@pytest.mark.parametrize("scale", SCALES)
def test_every_reproduction_plan_fits_the_default_limits(scale):
    for experiment in experiments_for(scale):
        for spec in experiment.plans[scale].specs():
            assert list(limit_violations(spec, defaults())) == [], experiment.key


def test_the_paper_vgg16_estimate_is_the_known_model():
    c = estimate(PRESETS["paper-vgg16"].specs()[0])  # no norm
    assert c.params == 14_719_818  # VGG-16 convs + Linear(512, 10)
    assert 700 < c.dataset_mb < 710  # 60,000 float32 images of 3x32x32, with labels


def test_limits_are_readable_and_protected_like_other_reads(sqlite_backend):
    from server.api.app import create_app

    settings = sqlite_backend.model_copy(update={"max_params": 12345})
    with TestClient(create_app(settings)) as c:
        limits = c.get("/api/v1/limits").json()
    assert limits["max_params"] == 12345
    assert limits == {k: getattr(settings, k) for k in limits}
    assert {"max_steps", "max_width", "max_batch", "max_memory_mb", "max_dataset_mb",
            "max_cost_steps", "max_queued_runs", "max_runs_per_experiment"} <= set(limits)
    guarded = sqlite_backend.model_copy(
        update={"api_token": SecretStr("s3cret"), "protect_reads": True})
    with TestClient(create_app(guarded)) as c:
        assert c.get("/api/v1/limits").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert c.get("/api/v1/limits", headers=auth).status_code == 200
