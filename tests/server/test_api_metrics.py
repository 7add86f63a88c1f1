"""A run's measurements over HTTP: raw and downsampled series (checked against numpy), the
non-finite JSON form, probe records, histograms and the streamed CSV export."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from server.db.metrics import (
    insert_distributions,
    insert_points,
    insert_probe_records,
    series_ids,
)
from server.db.models import encode_value
from server.services.export import iter_csv


def store(api_db, run_id: int, series: dict[str, list[tuple[int, float]]]) -> None:
    """Write points the way the worker's sink does."""
    with api_db.begin() as conn:
        sids = series_ids(conn, run_id, series)
        rows = [(sids[k], s, *encode_value(v)) for k, pts in series.items() for s, v in pts]
        insert_points(conn, rows)


def unstring(v):
    return float(v) if isinstance(v, str) else v  # "NaN" / "Infinity" / "-Infinity"


@pytest.fixture
def run_id(make_run) -> int:
    return make_run(status="running", step=10)


def test_raw_series_keep_non_finite_values_as_strings(client, api_db, run_id):
    values = [2.5, math.nan, math.inf, -math.inf, 1e-300, -0.0, 1.0]
    store(api_db, run_id, {"train/loss": list(enumerate(values)), "test/acc": [(0, 0.1)]})
    r = client.get(f"/api/v1/runs/{run_id}/metrics?keys=train/loss")
    assert r.status_code == 200, r.text
    assert '"NaN","Infinity","-Infinity"' in r.text  # the documented wire form
    [s] = r.json()["series"].values()
    assert s["key"] == "train/loss" and s["downsampled"] is False and s["min"] is None
    assert s["steps"] == list(range(7))
    assert s["values"] == [2.5, "NaN", "Infinity", "-Infinity", 1e-300, -0.0, 1.0]
    got = [unstring(v) for v in s["values"]]
    np.testing.assert_array_equal(got, values)  # NaN equals NaN here


def test_keys_exact_globs_missing_and_all(client, api_db, run_id):
    store(api_db, run_id, {
        k: [(0, 1.0)] for k in ("train/loss", "landscape/loss_min", "landscape/beta", "ics/L1/l2")
    })
    keys = client.get(f"/api/v1/runs/{run_id}/keys").json()
    assert keys == {"run_id": run_id, "keys": sorted(
        ["train/loss", "landscape/loss_min", "landscape/beta", "ics/L1/l2"])}

    def got(query: str) -> dict:
        r = client.get(f"/api/v1/runs/{run_id}/metrics", params=query and {"keys": query})
        assert r.status_code == 200, r.text
        return r.json()["series"]

    assert list(got("landscape/*")) == ["landscape/beta", "landscape/loss_min"]
    assert list(got("train/loss, ics/*/l2")) == ["train/loss", "ics/L1/l2"]
    missing = got("test/acc")["test/acc"]  # not recorded yet: empty, not an error
    assert (missing["steps"], missing["values"]) == ([], [])
    assert got("nothing/*") == {}
    assert list(got("")) == keys["keys"]


def test_since_and_until_step_bound_the_raw_series(client, api_db, run_id):
    store(api_db, run_id, {"train/loss": [(s, s / 10) for s in range(0, 50, 2)]})
    s = client.get(
        f"/api/v1/runs/{run_id}/metrics?keys=train/loss&since_step=9&until_step=20"
    ).json()["series"]["train/loss"]
    assert s["steps"] == [10, 12, 14, 16, 18, 20]
    assert s["values"] == [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    assert client.get(f"/api/v1/runs/{run_id}/metrics?since_step=-1").status_code == 422


def brute_force_buckets(steps, values, counts):
    """Mean, min, max and non-finite count of each bucket, in numpy. Buckets are consecutive
    runs of points in step order, of the sizes the server reports."""
    out = []
    edges = np.cumsum([0, *counts])
    assert edges[-1] == len(steps)  # every point in exactly one bucket
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        v = values[a:b]
        fin = v[np.isfinite(v)]
        out.append((
            (steps[a] + steps[b - 1]) / 2,
            fin.mean() if fin.size else None,
            fin.min() if fin.size else None,
            fin.max() if fin.size else None,
            int((~np.isfinite(v)).sum()),
        ))
    return out


@pytest.mark.parametrize("since,until,max_points", [(None, None, 50), (1234, 17_777, 37)])
def test_downsampled_buckets_match_numpy(client, api_db, run_id, since, until, max_points):
    rng = np.random.default_rng(0)
    steps = np.arange(0, 40_000, 2)  # sparse steps: buckets are in steps, not in points
    values = rng.normal(size=steps.size) * 10
    values[rng.choice(steps.size, 300, replace=False)] = np.nan
    values[[5, 700]] = [np.inf, -np.inf]
    values[(steps >= 8000) & (steps < 11_000)] = np.nan  # whole buckets without a finite value
    store(api_db, run_id, {"train/loss": list(zip(steps.tolist(), values.tolist(), strict=True))})

    params = {"keys": "train/loss", "max_points": max_points}
    keep = np.ones(steps.size, bool)
    if since is not None:
        params |= {"since_step": since, "until_step": until}
        keep = (steps >= since) & (steps <= until)
    r = client.get(f"/api/v1/runs/{run_id}/metrics", params=params)
    assert r.status_code == 200, r.text
    s = r.json()["series"]["train/loss"]
    assert s["downsampled"] is True
    assert 0.5 * max_points < len(s["steps"]) <= max_points
    want = brute_force_buckets(steps[keep], values[keep], s["counts"])
    assert any(w[1] is None for w in want)  # the all-NaN stretch is covered
    for i, (step, mean, lo, hi, bad) in enumerate(want):
        assert s["steps"][i] == pytest.approx(step)
        assert s["nonfinite"][i] == bad
        for got, exp in ((s["values"][i], mean), (s["min"][i], lo), (s["max"][i], hi)):
            assert (got is None) == (exp is None)
            if exp is not None:
                assert got == pytest.approx(exp, rel=1e-9, abs=1e-12)


def test_probe_records_per_eta_with_non_finite_losses(client, api_db, run_id):
    rows = [
        {"run_id": run_id, "probe": "landscape", "step": step, "multiplier": m, "eta": m * 0.1,
         "loss": math.nan if (step, m) == (20, 4.0) else step + m, "grad_dist": m}
        for step in (0, 10, 20) for m in (0.5, 1.0, 4.0)
    ]
    with api_db.begin() as conn:
        insert_probe_records(conn, rows)
    r = client.get(f"/api/v1/runs/{run_id}/probes?since_step=10")
    assert r.status_code == 200, r.text
    recs = r.json()["records"]
    assert [(x["step"], x["multiplier"]) for x in recs] == [
        (10, 0.5), (10, 1.0), (10, 4.0), (20, 0.5), (20, 1.0), (20, 4.0)
    ]
    assert recs[0] == {"probe": "landscape", "step": 10, "multiplier": 0.5, "eta": 0.05,
                       "loss": 10.5, "grad_dist": 0.5}
    assert recs[-1]["loss"] == "NaN"
    assert client.get(f"/api/v1/runs/{run_id}/probes?probe=other").json()["records"] == []


def test_distributions_filter_by_layer_and_step(client, api_db, run_id):
    def hist(layer, scope, step):
        return {"run_id": run_id, "layer": layer, "scope": scope, "step": step,
                "unit": 3 if scope == "unit" else None, "lo": -6.0, "hi": 6.0,
                "counts": [layer, step, 1], "underflow": 0, "overflow": 1, "nonfinite": 2,
                "stats": {"mean": 0.5, "var": "Infinity", "quantiles": {"q50": "NaN"}}}

    with api_db.begin() as conn:
        insert_distributions(conn, [
            hist(layer, scope, step)
            for layer in (1, 2) for scope in ("layer", "unit") for step in (0, 10)
        ])
    r = client.get(f"/api/v1/runs/{run_id}/distributions?layer=2&since_step=10")
    assert r.status_code == 200, r.text
    recs = r.json()["records"]
    assert [(x["layer"], x["scope"], x["step"], x["unit"]) for x in recs] == [
        (2, "layer", 10, None), (2, "unit", 10, 3)
    ]
    want = hist(2, "layer", 10)
    del want["run_id"]
    assert recs[0] == want
    r = client.get(f"/api/v1/runs/{run_id}/distributions?scope=unit")
    assert len(r.json()["records"]) == 4
    assert client.get(f"/api/v1/runs/{run_id}/distributions?scope=x").status_code == 422


def test_export_streams_every_point_as_csv(client, api_db, make_run):
    run_id = make_run(status="succeeded", name='evil"\r\nX-Injected: 1')
    store(api_db, run_id, {
        "train/loss": [(0, 2.0), (1, math.nan), (2, 1 / 3)],
        "a/first": [(5, math.inf), (6, -math.inf)],
    })
    r = client.get(f"/api/v1/runs/{run_id}/export?format=csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="landscope-run-{run_id}.csv"'
    assert "x-injected" not in r.headers
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [
        ["run_id", "key", "step", "value"],
        [str(run_id), "a/first", "5", "inf"],
        [str(run_id), "a/first", "6", "-inf"],
        [str(run_id), "train/loss", "0", "2.0"],
        [str(run_id), "train/loss", "1", "nan"],
        [str(run_id), "train/loss", "2", repr(1 / 3)],
    ]
    assert float(rows[-1][3]) == 1 / 3  # full precision
    assert client.get(f"/api/v1/runs/{run_id}/export?format=xlsx").status_code == 422


def test_export_comes_in_bounded_chunks(client, api_db, run_id):
    store(api_db, run_id, {k: [(s, s * 0.5) for s in range(700)] for k in ("a", "b", "c")})
    chunks = list(iter_csv(api_db, run_id, chunk_rows=100))
    assert len(chunks) >= 20
    assert max(c.count("\n") for c in chunks) < 200
    whole = client.get(f"/api/v1/runs/{run_id}/export").text
    assert "".join(chunks) == whole
    assert whole.count("\n") == 1 + 3 * 700


@pytest.mark.parametrize("path", ["keys", "metrics", "probes", "distributions", "export"])
def test_measurements_of_an_unknown_run_are_404(client, path):
    r = client.get(f"/api/v1/runs/4242/{path}")
    assert r.status_code == 404 and r.json() == {"detail": "run 4242 not found"}


def test_probe_records_thinned_to_every_kth_step_keep_the_non_finite(client, api_db, run_id):
    bad = {(30, 1.0): ("loss", math.inf), (50, 4.0): ("grad_dist", math.nan),
           (70, 0.5): ("grad_dist", -math.inf)}
    rows = []
    for step in range(0, 100, 10):
        for m in (0.5, 1.0, 4.0):
            row = {"run_id": run_id, "probe": "landscape", "step": step, "multiplier": m,
                   "eta": m * 0.1, "loss": 1.0, "grad_dist": 2.0}
            if (step, m) in bad:
                field, value = bad[(step, m)]
                row[field] = value
            rows.append(row)
    with api_db.begin() as conn:
        insert_probe_records(conn, rows)
    r = client.get(f"/api/v1/runs/{run_id}/probes", params={"every": 40})
    assert r.status_code == 200, r.text
    got = [(x["step"], x["multiplier"]) for x in r.json()["records"]]
    want = sorted({(s, m) for s in (0, 40, 80) for m in (0.5, 1.0, 4.0)} | set(bad))
    assert got == want  # brute force: multiples of 40, and the three non-finite records
    by_key = {(x["step"], x["multiplier"]): x for x in r.json()["records"]}
    assert by_key[(30, 1.0)]["loss"] == "Infinity"
    assert by_key[(50, 4.0)]["grad_dist"] == "NaN"
    assert by_key[(70, 0.5)]["grad_dist"] == "-Infinity"
    every_1 = client.get(f"/api/v1/runs/{run_id}/probes", params={"every": 1}).json()
    assert len(every_1["records"]) == len(rows)
    assert client.get(f"/api/v1/runs/{run_id}/probes", params={"every": 0}).status_code == 422


@pytest.mark.parametrize("since,until,max_points", [
    (900, None, 1_000_000), (0, None, 2000), (950, 980, 100), (None, None, None),
])
def test_a_poll_reads_every_key_at_once_with_the_per_key_answer(client, api_db, make_run,
                                                                since, until, max_points):
    """The one-statement read of a live poll equals read_series key by key (the brute force)."""
    from server.db.metrics import read_series, run_keys

    rid = make_run(status="running", step=1000, total=1000)
    rng = np.random.default_rng(3)
    special = [math.nan, math.inf, -math.inf]
    series = {k: [(s, special[s % 3] if s % 97 == 0 else float(rng.normal()))
                  for s in range(0, 1001, every)]
              for k, every in (("train/loss", 1), ("landscape/beta", 10), ("test/acc", 100))}
    store(api_db, rid, series)
    params = {k: v for k, v in (("since_step", since), ("until_step", until),
                                ("max_points", max_points)) if v is not None}
    got = client.get(f"/api/v1/runs/{rid}/metrics", params={**params, "keys": "*,nope"})
    assert got.status_code == 200, got.text
    out = got.json()["series"]
    assert out["nope"] == {"key": "nope", "downsampled": False, "steps": [], "values": [],
                           "min": None, "max": None, "counts": None, "nonfinite": None}
    with api_db.connect() as conn:
        for key, sid in run_keys(conn, rid).items():
            want = read_series(conn, sid, key, since_step=since, until_step=until,
                               max_points=max_points)
            assert out[key]["downsampled"] is False
            assert out[key]["steps"] == want.steps
            np.testing.assert_array_equal([unstring(v) for v in out[key]["values"]],
                                          want.values)


def test_a_since_read_spanning_more_than_max_points_still_downsamples(client, api_db, make_run):
    """The batched read decides per series from the points themselves, not the run's total."""
    rid = make_run(status="running", step=10, total=10)
    store(api_db, rid, {"train/loss": [(s, float(s)) for s in range(5000)]})
    s = client.get(f"/api/v1/runs/{rid}/metrics",
                   params={"keys": "train/loss", "since_step": 0, "max_points": 100}).json()
    assert s["series"]["train/loss"]["downsampled"] is True
    assert len(s["series"]["train/loss"]["steps"]) <= 100


@pytest.mark.parametrize("since, until, max_points", [
    (None, None, 300), (None, None, 50), (1000, None, 300), (500, 30_000, 200), (None, 9000, 7),
])
def test_a_first_read_downsamples_every_key_at_once_with_the_per_key_answer(
        client, api_db, make_run, since, until, max_points):
    """The one-statement downsampled read (a page's first poll) equals read_series key by key:
    spans that read raw points, one rollup level and the next, edges of partial buckets, keys
    too short to downsample, and non-finite points among them."""
    from server.db.metrics import read_series, run_keys

    rid = make_run(status="running", step=40_000, total=40_000)
    rng = np.random.default_rng(5)
    special = [math.nan, math.inf, -math.inf]
    shapes = (("train/loss", 1, 40_000), ("landscape/beta", 20, 40_000),
              ("test/acc", 100, 20_000), ("ics/L1/l2", 7, 3_001), ("act/L1/mean", 1, 120))
    store(api_db, rid, {k: [(s, special[s % 3] if s % 89 == 0 else float(rng.normal()))
                            for s in range(3, n, every)] for k, every, n in shapes})
    params = {k: v for k, v in (("since_step", since), ("until_step", until),
                                ("max_points", max_points)) if v is not None}
    out = client.get(f"/api/v1/runs/{rid}/metrics", params=params).json()["series"]
    downsampled = 0
    with api_db.connect() as conn:
        for key, sid in run_keys(conn, rid).items():
            want = read_series(conn, sid, key, since_step=since, until_step=until,
                               max_points=max_points)
            got = out[key]
            downsampled += got["downsampled"]
            assert got["downsampled"] == want.buckets, key
            assert got["steps"] == pytest.approx(want.steps), key
            np.testing.assert_allclose([np.nan if v is None else unstring(v)
                                        for v in got["values"]],
                                       [np.nan if v is None else v for v in want.values],
                                       rtol=1e-6)
            if want.buckets:
                assert got["min"] == pytest.approx(want.lo)
                assert got["max"] == pytest.approx(want.hi)
                assert got["counts"] == want.counts and got["nonfinite"] == want.nonfinite
    assert downsampled >= 3
