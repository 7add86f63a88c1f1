"""The dashboard's API client: non-finite strings back to floats, errors with their detail,
the bearer token, links for the browser; against a mock transport and the real API."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from webapp.client import ApiClient, ApiError, Histogram, Series


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
