"""The ingest batch's hand-rolled checks (server/services/ingest.py): what they accept, the
field path of what they refuse, and that nothing a JSON parser can produce makes them raise
anything else (a 500). Then generated batches through the API into a real database."""

from __future__ import annotations

import gzip
import json
import math
import zlib

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.api.app import create_app
from server.services.errors import InvalidRequest
from server.services.ingest import BodyRejected, decode_body, parse_batch


def test_a_full_batch_parses_to_columns_and_rows():
    b = parse_batch({
        "scalars": [{"key": "a", "steps": [0, 1], "values": [1, "NaN"]},
                    {"key": "a", "steps": [2], "values": ["-Infinity"]},
                    {"key": "b", "steps": [], "values": []}],
        "etas": [{"step": 3, "probe": "landscape", "records": [
            {"multiplier": 1, "eta": 0.1, "loss": "Infinity", "grad_dist": 0.0}]}],
        "distributions": [{"step": 0, "layer": 2, "scope": "unit", "unit": 5, "lo": -1,
                           "hi": 1, "counts": [0, 3], "mean": float("nan"), "var": 1}],
        "heartbeat": {"step": 3, "last_loss": None},
    })
    steps, values = b.scalars["a"]
    assert steps == [0, 1, 2]
    assert values[0] == 1.0 and type(values[0]) is float
    assert math.isnan(values[1]) and values[2] == -math.inf
    assert b.points == 3 and b.scalars["b"] == ([], [])
    assert b.etas == [{"probe": "landscape", "step": 3, "multiplier": 1.0, "eta": 0.1,
                       "loss": math.inf, "grad_dist": 0.0}]
    d = b.distributions[0]
    assert (d["unit"], d["underflow"], d["stats"]["mean"], d["stats"]["quantiles"]) == (
        5, 0, "NaN", {})
    assert (b.heartbeat.step, b.heartbeat.last_loss) == (3, None)
    assert parse_batch({}).points == 0


@pytest.mark.parametrize(("body", "loc"), [
    ({"scalars": [{"key": "a", "steps": [0], "values": [None]}]},
     ("body", "scalars", 0, "values", 0)),
    ({"scalars": [{"key": "a", "steps": [0], "values": [10**400]}]},
     ("body", "scalars", 0, "values", 0)),
    ({"scalars": [{"key": "a", "steps": [0], "values": [1], "unit": "s"}]},
     ("body", "scalars", 0, "unit")),
    ({"scalars": [{"key": 5, "steps": [], "values": []}]}, ("body", "scalars", 0, "key")),
    ({"scalars": [{"key": "a\u0000", "steps": [], "values": []}]},
     ("body", "scalars", 0, "key")),
    ({"etas": [{"step": 0, "probe": "p" * 33, "records": []}]}, ("body", "etas", 0, "probe")),
    ({"etas": [{"step": 0, "probe": "p", "records": [{"multiplier": 1}]}]},
     ("body", "etas", 0, "records", 0, "eta")),
    ({"distributions": [{"step": 0, "layer": 1, "scope": "layer", "lo": 1, "hi": 1,
                         "counts": [], "mean": 0, "var": 0}]},
     ("body", "distributions", 0, "hi")),
    ({"distributions": [{"step": 0, "layer": 1, "scope": "layer", "lo": 0, "hi": 1,
                         "counts": [], "mean": 0, "var": 0, "overflow": 2**31}]},
     ("body", "distributions", 0, "overflow")),
    ({"heartbeat": {"step": 1, "loss": 2}}, ("body", "heartbeat", "loss")),
    ({"heartbeat": []}, ("body", "heartbeat")),
    ({"scalars": [{"key": str(i), "steps": [], "values": []} for i in range(10_001)]},
     ("body", "scalars")),
])
def test_refusals_name_their_field(body, loc):
    with pytest.raises(InvalidRequest) as exc:
        parse_batch(body)
    assert exc.value.loc == loc


def test_bodies_are_gunzipped_within_the_cap():
    raw = json.dumps({"scalars": []}).encode()
    assert decode_body(raw, None, 100) == {"scalars": []}
    assert decode_body(gzip.compress(raw), "GZIP", 100) == {"scalars": []}
    with pytest.raises(BodyRejected) as exc:
        decode_body(gzip.compress(b" " * 101), "gzip", 100)
    assert exc.value.status == 413
    with pytest.raises(BodyRejected) as exc:
        decode_body(gzip.compress(raw) + b"trailing", "gzip", 100)
    assert exc.value.status == 400
    with pytest.raises(BodyRejected) as exc:
        decode_body(zlib.compress(raw), "deflate", 100)
    assert exc.value.status == 415
    with pytest.raises(BodyRejected) as exc:
        decode_body(b"[" * 100_000, None, 10**6)  # deeper than the parser's recursion
    assert exc.value.status == 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["scalars", "etas", "distributions", "heartbeat", "key", "steps",
                        "values", "step", "probe", "records", "multiplier", "eta", "loss",
                        "grad_dist", "layer", "scope", "lo", "hi", "counts", "mean", "var"])
near_valid = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=40,
)


@given(near_valid)
@settings(max_examples=400, deadline=None)
def test_anything_json_either_parses_or_is_refused_with_a_location(data):
    try:
        parse_batch(data)
    except InvalidRequest as exc:
        assert exc.loc[0] == "body"


@pytest.fixture(scope="module")
def sdk_app(tmp_path_factory):
    from server.db.migrate import upgrade
    from server.settings import Settings

    tmp = tmp_path_factory.mktemp("ingest")
    url = f"sqlite:///{tmp / 'landscope.db'}"
    upgrade(url)
    s = Settings(_env_file=None, data_dir=tmp, database_url=url,
                 broker_url=f"sqla+sqlite:///{tmp / 'broker.db'}")
    with TestClient(create_app(s)) as client:
        r = client.post("/api/v1/sdk/runs", json={"client_id": "c" * 32, "name": "gen"})
        yield client, r.json()["id"]


finite_or_not = st.floats() | st.sampled_from(["NaN", "Infinity", "-Infinity"])
columns = st.lists(st.fixed_dictionaries({
    "key": st.text(min_size=1, max_size=20),
    "steps": st.lists(st.integers(0, 2**31 - 1), max_size=20, unique=True),
}), max_size=4)


@given(columns=columns, data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_generated_batches_are_stored_or_refused_never_a_500(sdk_app, columns, data):
    client, run_id = sdk_app
    for col in columns:
        col["values"] = data.draw(st.lists(finite_or_not, min_size=len(col["steps"]),
                                           max_size=len(col["steps"])))
    body = json.dumps({"scalars": columns}).encode()  # NaN floats as the bare word
    r = client.post(f"/api/v1/runs/{run_id}/ingest", content=body)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        assert r.json()["points"] == sum(len(c["steps"]) for c in columns)
