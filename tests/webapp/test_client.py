"""The dashboard's API client: non-finite strings back to floats, errors with their detail,
the bearer token, links for the browser; against a mock transport and the real API."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from webapp.client import ApiClient, ApiError, Group, GroupSeries, Histogram, Series


def mock_client(handler, **kw) -> ApiClient:
    return ApiClient("http://api.test/api/v1", http=httpx.Client(
        transport=httpx.MockTransport(handler)), **kw)


def test_series_turns_nonfinite_strings_and_null_buckets_into_floats():
    raw = Series.from_json({"key": "train/loss", "downsampled": False, "steps": [0, 1, 2, 3],
                            "values": [1.5, "NaN", "Infinity", "-Infinity"]})
    assert raw.values[0] == 1.5 and math.isnan(raw.values[1])
    assert raw.values[2:] == [math.inf, -math.inf] and not raw.buckets and len(raw) == 4
    buckets = Series.from_json({"key": "k", "downsampled": True, "steps": [5.5, 20.0],
                                "values": [2.0, None], "min": [1.0, None], "max": [3.0, None],
                                "counts": [10, 4], "nonfinite": [0, 4]})
    assert buckets.buckets and math.isnan(buckets.values[1])
    assert buckets.lo == [1.0, None] and buckets.nonfinite == [0, 4]


def test_histogram_total_counts_every_value():
    h = Histogram.from_json({"layer": 2, "scope": "unit", "step": 30, "unit": 7, "lo": -1.0,
                             "hi": 1.0, "counts": [1, 2, 3], "underflow": 4, "overflow": 5,
                             "nonfinite": 6, "stats": {"mean": "NaN", "var": 0.5,
                                                       "quantiles": {"q50": "-Infinity"}}})
    assert h.total == 21 and math.isnan(h.mean) and h.quantiles["q50"] == -math.inf


def test_requests_carry_params_and_the_token_and_errors_keep_their_detail():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            detail = [{"loc": ["body", "base", "steps"], "msg": "at most 10 steps",
                       "type": "server_limit"}]
            return httpx.Response(422, json={"detail": detail})
        return httpx.Response(200, json={"run_id": 3, "series": {}})

    client = mock_client(handler, token="default-token")
    assert client.metrics(3, "train/*", since_step=5, max_points=10) == {}
    q = seen[0].url.params
    assert q["keys"] == "train/*" and q["since_step"] == "5" and "until_step" not in q
    assert seen[0].headers["authorization"] == "Bearer default-token"
    with pytest.raises(ApiError) as err:
        client.create_experiment({"base": {"steps": 11}}, token="mine")
    assert seen[1].headers["authorization"] == "Bearer mine"
    assert json.loads(seen[1].content) == {"base": {"steps": 11}}
    assert err.value.status == 422
    assert err.value.field_errors() == [(("body", "base", "steps"), "at most 10 steps")]
    assert "base.steps: at most 10 steps" in err.value.message


def test_an_unreachable_api_is_an_api_error_not_a_crash():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ApiError) as err:
        mock_client(handler).runs()
    assert err.value.status == 0 and "cannot be reached" in err.value.message


def test_links_are_same_origin_paths_unless_the_api_lives_elsewhere():
    local = ApiClient("http://127.0.0.1:8000/api/v1")
    assert local.export_url(4) == "/api/v1/runs/4/export?format=csv"
    assert local.docs_url() == "/docs"
    remote = ApiClient("http://gpu:8000/api/v1", public_url="http://gpu:8000/api/v1")
    assert remote.export_url(4) == "http://gpu:8000/api/v1/runs/4/export?format=csv"
    assert remote.docs_url() == "http://gpu:8000/docs"


def test_against_the_real_api(api):
    """Shapes the real server sends, read back: a run list, a 404, a 422 for a bad spec."""
    exp = api.client.create_experiment({"preset": "quick-mlp", "base": {"steps": 40}})
    ids = [r["id"] for r in exp["runs"]]
    assert len(ids) == 2 and {r["spec"]["norm"] for r in exp["runs"]} == {"none", "batch"}
    assert {r["id"] for r in api.client.runs()} == set(ids)
    assert api.client.run(ids[0])["status"] == "queued"
    assert api.client.metrics(ids[0], "train/loss")["train/loss"].steps == []
    with pytest.raises(ApiError) as err:
        api.client.run(999)
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        api.client.create_experiment({"base": {"steps": 0}})
    assert err.value.field_errors()[0][0] == ("body", "base", "steps")


def test_grouped_requests_carry_every_group_and_decode_non_finite_strings():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/groups"):
            return httpx.Response(200, json={"groups": [
                {"key": "ab" * 8, "label": "batch", "run_ids": [3, 4], "seeds": [0, None]}]})
        series = {"key": "train/loss", "steps": [0, 1.5], "center": ["NaN", 1.0],
                  "lo": [None, "-Infinity"], "hi": [None, "Infinity"], "n": [0, 2],
                  "nonfinite": [1, 0]}
        return httpx.Response(200, json={"groups": [{"run_ids": [3, 4], "series": [series]},
                                                    {"run_ids": [5], "series": []}]})

    client = mock_client(handler)
    assert client.groups(runs=[3, 4]) == [Group("ab" * 8, "batch", [3, 4], [0, None])]
    assert seen[0].url.params["runs"] == "3,4" and "experiment_id" not in seen[0].url.params
    client.groups(experiment_id=7)
    assert seen[1].url.params["experiment_id"] == "7" and "runs" not in seen[1].url.params
    got = client.grouped_metrics([[3, 4], [5]], "train/*", band="std", until_step=9)
    q = seen[2].url.params
    assert q.get_list("group") == ["3,4", "5"] and q["keys"] == "train/*"
    assert (q["center"], q["band"], q["max_points"], q["until_step"]) == ("median", "std",
                                                                         "300", "9")
    assert "since_step" not in q
    assert len(got) == 2 and got[1] == {}
    s = got[0]["train/loss"]
    assert isinstance(s, GroupSeries) and s.steps == [0.0, 1.5] and len(s) == 2
    assert math.isnan(s.center[0]) and s.center[1] == 1.0
    assert s.lo == [None, -math.inf] and s.hi == [None, math.inf]
    assert (s.n, s.nonfinite) == ([0, 2], [1, 0])


def test_groups_against_the_real_api(api):
    from server.db.metrics import insert_series
    from server.db.models import Run
    from server.db.session import make_sessionmaker

    ids = []
    with make_sessionmaker(api.engine).begin() as session:
        for norm in ("none", "batch"):
            for seed in (0, 1):
                run = Run(name=f"{norm}-{seed}", spec={"norm": norm, "lr": 0.1, "seed": seed},
                          queue="q", total=10, status="succeeded")
                session.add(run)
                session.flush()
                ids.append(run.id)
    with api.engine.begin() as c:
        for i, run_id in enumerate(ids):
            insert_series(c, run_id, {"train/loss": (list(range(10)),
                                                     [float(i)] * 9 + [math.nan])})
    groups = api.client.groups(runs=ids)
    assert [(g.label, g.run_ids, g.seeds) for g in groups] == [
        ("none", ids[:2], [0, 1]), ("batch", ids[2:], [0, 1])]
    got = api.client.grouped_metrics([g.run_ids for g in groups], "train/*", center="mean")
    assert [list(g) for g in got] == [["train/loss"], ["train/loss"]]
    none, batch = got[0]["train/loss"], got[1]["train/loss"]
    assert none.steps == [float(s) for s in range(10)]
    assert none.center[:9] == [0.5] * 9 and batch.center[:9] == [2.5] * 9
    assert (none.lo[0], none.hi[0], none.n[0]) == (0.0, 1.0, 2)
    assert none.center[9] is None and none.nonfinite[9] == 2 and none.n[9] == 0
    with pytest.raises(ApiError) as err:
        api.client.grouped_metrics([[ids[0], 999]], "train/loss")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        api.client.groups(runs=[])
    assert err.value.field_errors()[0][0] == ("query", "runs")
