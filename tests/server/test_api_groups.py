"""GET /groups and GET /groups/metrics on both databases: group identity and labels, the
answer's shape and non-finite strings, and bad input as 4xx with the field path.

The grouped numbers themselves are checked against numpy in test_grouped_sql.py."""

from __future__ import annotations

import math

import pytest

from server.db.metrics import insert_series
from server.db.models import Run
from server.services.errors import InvalidRequest
from server.services.groups import group_key, group_runs, labels, parse_ids

SPEC = {"model": "mlp", "norm": "batch", "lr": 0.1, "seed": 0, "probes": {"ics": {"every": 5}}}


def _spec(**changes):
    out = {**SPEC, **changes}
    return out


def _run(run_id: int, *, source="service", spec=None, config=None, name="r") -> Run:
    return Run(id=run_id, name=name, source=source, spec=spec if spec is not None else {},
               config=config, queue="q", total=1)


def test_runs_differing_only_in_seed_share_a_key():
    a, b = _run(1, spec=_spec(seed=0)), _run(2, spec=_spec(seed=7))
    assert group_key(a) == group_key(b)
    assert len(group_key(a)) == 16 and int(group_key(a), 16) >= 0
    assert group_key(_run(3, spec=_spec(lr=0.2))) != group_key(a)
    assert group_key(_run(4, spec=_spec(probes={"ics": {"every": 6}}))) != group_key(a)
    # digits at another size is other data (dataset_options is part of the spec)
    assert group_key(_run(6, spec=_spec(dataset_options={"size": 32}))) != group_key(a)
    # the same spec trained through the SDK is another thing
    assert group_key(_run(5, source="sdk", spec=_spec())) != group_key(a)


def test_sdk_runs_group_by_config_without_seed_or_random_seed():
    cfg = {"lr": 0.1, "norm": "layer", "opt": {"name": "adam", "betas": [0.9, 0.99]}}
    runs = [_run(1, source="sdk", config={**cfg, "seed": 1}),
            _run(2, source="sdk", config={**cfg, "random_seed": 2}),
            _run(3, source="sdk", config={**cfg, "lr": 0.3, "seed": 1}),
            _run(4, source="sdk", config=None),
            _run(5, source="sdk", config={"seed": 9})]
    groups = group_runs(runs)
    assert [g.run_ids for g in groups] == [[1, 2], [3], [4, 5]]
    assert [g.seeds for g in groups] == [[1, 2], [1], [None, 9]]
    # a nested "seed" is part of the config, not the run's seed
    nested = _run(6, source="sdk", config={**cfg, "opt": {**cfg["opt"], "seed": 3}})
    assert group_key(nested) != group_key(runs[0])


def test_groups_keep_the_order_of_first_appearance():
    runs = [_run(1, spec=_spec(norm="none")), _run(2, spec=_spec()),
            _run(3, spec=_spec(norm="none", seed=1)), _run(4, spec=_spec(seed=1))]
    assert [g.run_ids for g in group_runs(runs)] == [[1, 3], [2, 4]]
    assert [g.seeds for g in group_runs(runs)] == [[0, 1], [0, 1]]


def test_labels_name_the_norm_and_what_else_differs_never_the_seed():
    runs = [_run(1, spec=_spec(norm="none", seed=0)), _run(2, spec=_spec(seed=1)),
            _run(3, spec=_spec(lr=0.5, seed=2)),
            _run(4, spec=_spec(lr=0.5, probes={"ics": {"every": 9}}))]
    got = labels(group_runs(runs))
    assert got == ["none · lr=0.1 · probes.ics.every=5", "batch · lr=0.1 · probes.ics.every=5",
                   "batch · lr=0.5 · probes.ics.every=5", "batch · lr=0.5 · probes.ics.every=9"]
    assert all("seed" not in label for label in got)
    # only the norm differs: just the norm; a lone group without a norm: its first run's name
    assert labels(group_runs(runs[:2])) == ["none", "batch"]
    sdk = _run(5, source="sdk", config={"width": 3}, name="my run")
    assert labels(group_runs([sdk])) == ["my run"]
    # keys one group lacks show as "—"
    mixed = labels(group_runs([sdk, _run(6, source="sdk", config={"width": 3, "depth": 2})]))
    assert mixed == ["depth=—", "depth=2"]
    # service and SDK runs side by side: the source first, then the rest
    both = labels(group_runs([runs[0], _run(7, source="sdk", config={"norm": "layer"})]))
    assert both == ["none · source=service · lr=0.1 · model=mlp · probes.ics.every=5",
                    "layer · source=sdk · lr=— · model=— · probes.ics.every=—"]
    many = {f"k{i}": i for i in range(9)}
    cut = labels(group_runs([_run(8, source="sdk", config=many), _run(9, source="sdk")]))
    assert cut[0] == "k0=0 · k1=1 · k2=2 · k3=3 · k4=4 · k5=5 · …"


@pytest.mark.parametrize(("text", "ids"), [("1,2,3", [1, 2, 3]), (" 3 , 1,3,", [3, 1]),
                                           ("2147483647", [2**31 - 1])])
def test_id_lists_parse(text, ids):
    assert parse_ids(text, ("query", "runs"), 10) == ids


@pytest.mark.parametrize("text", ["", ",", "1,x", "0", "-1", "1.5", "2147483648", "١", "1e3",
                                  "99999999999999999999", "1,2,3,4"])
def test_junk_id_lists_are_invalid_at_the_field(text):
    with pytest.raises(InvalidRequest) as err:
        parse_ids(text, ("query", "group", 2), 3)
    assert err.value.loc == ("query", "group", 2)


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def arranged(client, api_db, make_run):
    """An experiment-like set: norms none/batch x seeds 0, 1, 2 (ids in that order), plus an
    SDK run; each run's train/loss over steps it has of its own."""
    ids = [make_run(status="succeeded", spec=_spec(norm=norm, seed=seed))
           for norm in ("none", "batch") for seed in (0, 1, 2)]
    with api_db.begin() as c:
        for i, run_id in enumerate(ids):
            steps = list(range(i, 50 + 10 * i))
            values = [float(run_id) + s / 100 for s in steps]
            if i == 0:
                values[3] = math.nan  # run 0's point at step 3 is NaN
            if i == 1:
                values[2] = math.inf  # run 1's point at step 3 is +inf
            insert_series(c, run_id, {"train/loss": (steps, values),
                                      "train/acc": (steps, [0.5] * len(steps))})
    return ids


def test_groups_of_runs_and_of_an_experiment(client, arranged, make_run):
    ids = arranged
    r = client.get("/api/v1/groups", params={"runs": ",".join(map(str, ids[::-1]))})
    assert r.status_code == 200, r.text
    groups = r.json()["groups"]
    assert [g["run_ids"] for g in groups] == [ids[5:2:-1], ids[2::-1]]
    assert [g["seeds"] for g in groups] == [[2, 1, 0], [2, 1, 0]]
    assert [g["label"] for g in groups] == ["batch", "none"]
    assert all(len(g["key"]) == 16 for g in groups)

    exp = client.post("/api/v1/experiments", json={
        "preset": "quick-mlp", "base": {"steps": 5},
        "vary": {"norm": ["none", "batch"], "seed": [0, 1]}}).json()
    r = client.get("/api/v1/groups", params={"experiment_id": exp["id"]})
    assert r.status_code == 200, r.text
    groups = r.json()["groups"]
    assert [len(g["run_ids"]) for g in groups] == [2, 2]
    assert sorted(g["label"] for g in groups) == ["batch", "none"]
    assert sorted(s for g in groups for s in g["seeds"]) == [0, 0, 1, 1]


@pytest.mark.parametrize(("params", "loc"), [
    ({}, ["query", "runs"]),
    ({"runs": "1", "experiment_id": 1}, ["query", "runs"]),
    ({"runs": "1,two"}, ["query", "runs"]),
    ({"runs": "1\x002"}, ["query", "runs"]),
    ({"runs": ",".join(map(str, range(1, 600)))}, ["query", "runs"]),
    ({"experiment_id": 0}, ["query", "experiment_id"]),
])
def test_bad_group_requests_are_422_at_the_field(client, params, loc):
    r = client.get("/api/v1/groups", params=params)
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]]


def test_unknown_runs_and_experiments_are_404(client, arranged):
    r = client.get("/api/v1/groups", params={"runs": f"{arranged[0]},999"})
    assert r.status_code == 404 and "999" in r.json()["detail"]
    assert client.get("/api/v1/groups", params={"experiment_id": 999}).status_code == 404
    r = client.get("/api/v1/groups/metrics", params={"group": [str(arranged[0]), "998,999"]})
    assert r.status_code == 404 and "998" in r.json()["detail"]


def test_grouped_metrics_raw_form(client, arranged):
    ids = arranged
    r = client.get("/api/v1/groups/metrics", params={
        "group": [",".join(map(str, ids[:3])), ",".join(map(str, ids[3:5]))],
        "keys": "train/loss,nothing/here", "max_points": 1000})
    assert r.status_code == 200, r.text
    g0, g1 = r.json()["groups"]
    assert g0["run_ids"] == ids[:3] and g1["run_ids"] == ids[3:5]
    loss, empty = g0["series"]
    assert (loss["key"], empty["key"]) == ("train/loss", "nothing/here")
    assert empty == {"key": "nothing/here", "steps": [], "center": [], "lo": [], "hi": [],
                     "n": [], "nonfinite": []}
    assert loss["steps"] == list(range(0, 70))  # run 2 reaches step 69
    # step 0: run 0 only; step 2: all three (median: the middle run's value); step 3: run
    # 0's NaN and run 1's +inf leave run 2 alone
    a, b, c = (float(i) for i in ids[:3])
    assert (loss["center"][0], loss["n"][0], loss["nonfinite"][0]) == (a, 1, 0)
    assert (loss["center"][2], loss["n"][2], loss["nonfinite"][2]) == (b + 0.02, 3, 0)
    assert (loss["center"][3], loss["n"][3], loss["nonfinite"][3]) == (c + 0.03, 1, 2)
    assert (loss["lo"][3], loss["hi"][3]) == (c + 0.03, c + 0.03)
    assert loss["lo"][10] == pytest.approx(a + 0.1) and loss["hi"][10] == pytest.approx(c + 0.1)
    # even group (two runs): the median is the mean of both
    g1_loss = g1["series"][0]
    d, e = (float(i) for i in ids[3:5])
    assert g1_loss["steps"][0] == 3  # its runs start at steps 3 and 4
    assert g1_loss["center"][g1_loss["steps"].index(10)] == pytest.approx((d + e) / 2 + 0.1)


def test_grouped_metrics_bucketed_std_and_nonfinite_strings(client, api_db, make_run):
    ids = [make_run(status="succeeded", spec=_spec(seed=s)) for s in range(3)]
    with api_db.begin() as c:
        for i, run_id in enumerate(ids):
            steps = list(range(0, 3000))
            values = [math.inf if s >= 2900 and i else float(i) for s in steps]
            insert_series(c, run_id, {"k": (steps, values)})
    r = client.get("/api/v1/groups/metrics", params={
        "group": ",".join(map(str, ids)), "center": "mean", "band": "std", "max_points": 30})
    assert r.status_code == 200, r.text
    s = r.json()["groups"][0]["series"][0]
    assert 15 <= len(s["steps"]) <= 30 and s["steps"] == sorted(s["steps"])
    assert s["center"][0] == pytest.approx(1.0)
    std = math.sqrt(2 / 3)
    assert s["lo"][0] == pytest.approx(1 - std) and s["hi"][0] == pytest.approx(1 + std)
    assert s["n"][-1] == 1 and s["nonfinite"][-1] == 2
    assert s["center"][-1] == 0.0 and s["lo"][-1] == 0.0
    # a group whose runs are all non-finite in a bucket: null centre, counted
    r = client.get("/api/v1/groups/metrics", params={
        "group": ",".join(map(str, ids[1:])), "since_step": 2950, "max_points": 1000})
    s = r.json()["groups"][0]["series"][0]
    assert set(s["center"]) == {None} and set(s["nonfinite"]) == {2} and set(s["n"]) == {0}


def test_non_finite_centres_travel_as_strings(client, api_db, make_run):
    ids = [make_run(status="succeeded", spec=_spec(seed=s)) for s in range(2)]
    with api_db.begin() as c:
        insert_series(c, ids[0], {"k": ([0], [1.7e308])})
        insert_series(c, ids[1], {"k": ([0], [1.7e308])})
    r = client.get("/api/v1/groups/metrics", params={
        "group": f"{ids[0]},{ids[1]}", "center": "mean", "band": "std"})
    assert r.status_code == 200, r.text
    s = r.json()["groups"][0]["series"][0]
    assert s["center"] == ["Infinity"]  # the mean of two overflows
    assert s["lo"][0] in ("NaN", "Infinity")  # inf - std: std is 0 (exact) or NaN


@pytest.mark.parametrize(("params", "loc"), [
    ({}, ["query", "group"]),
    ({"group": ""}, ["query", "group", 0]),
    ({"group": ["1", "1,zz"]}, ["query", "group", 1]),
    ({"group": ["1"] * 65}, ["query", "group"]),
    ({"group": ",".join(map(str, range(1, 300)))}, ["query", "group", 0]),
    ({"group": "1", "center": "mode"}, ["query", "center"]),
    ({"group": "1", "band": "iqr"}, ["query", "band"]),
    ({"group": "1", "max_points": 0}, ["query", "max_points"]),
    ({"group": "1", "since_step": -1}, ["query", "since_step"]),
    ({"group": "1", "keys": "a\x00b"}, ["query", "keys"]),
])
def test_bad_grouped_requests_are_422_at_the_field(client, arranged, params, loc):
    r = client.get("/api/v1/groups/metrics", params=params)
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]], r.json()


def test_too_many_buckets_is_a_clear_422(client, arranged):
    groups = [str(i) for i in arranged] * 10
    r = client.get("/api/v1/groups/metrics", params={"group": groups, "max_points": 10_000})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["query", "keys"] and "fewer" in err["msg"]


def test_a_group_may_mix_settings_and_a_run_may_be_in_two_groups(client, arranged):
    ids = arranged
    r = client.get("/api/v1/groups/metrics", params={
        "group": [f"{ids[0]},{ids[3]}", f"{ids[0]}"], "keys": "train/acc"})
    assert r.status_code == 200, r.text
    g0, g1 = r.json()["groups"]
    assert g0["series"][0]["n"][5] == 2 and g1["series"][0]["n"][5] == 1
    steps0, steps1 = g0["series"][0]["steps"], g1["series"][0]["steps"]
    assert steps1 == steps0[:len(steps1)]  # one grid for the request
