"""Binary scalar blocks (server/services/ingest_blocks.py): what the SDK's Batch encodes is
read back exactly (NaN and infinities as data, old JSON columns beside), and hostile blocks
are refused with their field path, never a 500."""

from __future__ import annotations

import base64
import gzip
import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from landscope.sdk.wire import Batch, block
from server.api.app import create_app
from server.services.errors import InvalidRequest
from server.services.ingest import parse_batch
from server.services.ingest_blocks import MAX_POINTS

INF = math.inf


def good(**change) -> dict:
    b = block(("a", "b"), np.array([0, 5, 9]), np.array([[1.0, INF], [math.nan, -INF],
                                                         [2.5, 1e308]]))
    b.update(change)
    return b


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_block_reads_back_as_columns_with_non_finite_values_kept():
    out = parse_batch({"blocks": [good()]}).scalars
    assert out["a"][0].tolist() == [0, 5, 9] and out["b"][0].tolist() == [0, 5, 9]
    a, b = out["a"][1].tolist(), out["b"][1].tolist()
    assert a[0] == 1.0 and math.isnan(a[1]) and a[2] == 2.5
    assert b == [INF, -INF, 1e308]


def test_blocks_and_json_columns_of_one_key_merge_and_dtypes_widen():
    f4 = good(keys=["a"], n=2, step_dtype="<i8", steps=b64(np.array([7, 8], "<i8").tobytes()),
              value_dtype="<f4", values=b64(np.array([0.5, -1.0], "<f4").tobytes()))
    batch = parse_batch({"scalars": [{"key": "a", "steps": [1], "values": ["NaN"]}],
                         "blocks": [good(), f4]})
    steps, values = batch.scalars["a"]
    assert steps.tolist() == [1, 0, 5, 9, 7, 8]
    assert values.dtype == np.float64 and values.tolist()[-2:] == [0.5, -1.0]
    assert batch.points == 6 + 3


def test_what_the_sdk_encodes_is_what_the_server_reads():
    b = Batch()
    for step in range(300):
        b.add_scalars(step, {"train/loss": 1.0 / (step + 1), "x": math.nan if step % 7 else INF,
                             "big": 10**400 if step == 3 else step})
    b.add_scalars(300, {"other": -0.0})
    body = json.loads(gzip.decompress(b.encode()))
    cols = parse_batch(body).scalars
    assert cols["train/loss"][1].tolist() == [1.0 / (s + 1) for s in range(300)]
    assert cols["big"][1][3] == INF and cols["big"][1][4] == 4.0
    assert math.isnan(cols["x"][1][1]) and cols["x"][1][0] == INF
    assert cols["other"][0].tolist() == [300] and math.copysign(1, cols["other"][1][0]) < 0


@pytest.mark.parametrize(("change", "loc"), [
    ({"v": 2}, ("v",)),
    ({"v": True}, ("v",)),
    ({"keys": []}, ("keys",)),
    ({"keys": ["a", ""]}, ("keys", 1)),
    ({"keys": ["a", "a"]}, ("keys", 1)),
    ({"keys": ["a", "b\x00"]}, ("keys", 1)),
    ({"n": -1}, ("n",)),
    ({"n": 2**40}, ("n",)),  # a huge count: refused before anything is decoded
    ({"n": MAX_POINTS}, ("n",)),  # x 2 keys: past the points a batch may carry
    ({"n": 4}, ("steps",)),  # more rows than the data holds
    ({"n": "3"}, ("n",)),
    ({"step_dtype": "<u4"}, ("step_dtype",)),  # a dtype tag the server does not read
    ({"step_dtype": ">i4"}, ("step_dtype",)),
    ({"value_dtype": "<i8"}, ("value_dtype",)),
    ({"value_dtype": "object"}, ("value_dtype",)),
    ({"steps": 5}, ("steps",)),
    ({"steps": "AAAA"}, ("steps",)),  # wrong length
    ({"steps": good()["steps"][:-4]}, ("steps",)),  # truncated base64
    ({"steps": "!" * 16}, ("steps",)),  # not base64 at all
    ({"steps": "AAAAAAAAAAAAAAA="}, ("steps",)),  # the padding lies about the length
    ({"steps": "é" * 16}, ("steps",)),
    ({"values": good()["values"][:-8]}, ("values",)),
    ({"values": good()["values"] + "AAAA"}, ("values",)),
    ({"steps": b64(np.array([0, -1, 2], "<i4").tobytes())}, ("steps", 1)),
    ({"step_dtype": "<i8", "steps": b64(np.array([0, 1, 2**31], "<i8").tobytes())},
     ("steps", 2)),
    ({"extra": 1}, ("extra",)),
])
def test_hostile_blocks_are_refused_at_their_field(change, loc):
    with pytest.raises(InvalidRequest) as exc:
        parse_batch({"blocks": [good(), good(**change)]})
    assert exc.value.loc == ("body", "blocks", 1, *loc)


def test_missing_fields_and_non_objects_and_too_many_keys():
    b = good()
    del b["values"]
    for blocks, loc in [([b], (0, "values")), ([[]], (0,)), ("x", ())]:
        with pytest.raises(InvalidRequest) as exc:
            parse_batch({"blocks": blocks})
        assert exc.value.loc == ("body", "blocks", *loc)
    wide = block(tuple(f"k{i}" for i in range(6000)), np.array([0]), np.zeros((1, 6000)))
    with pytest.raises(InvalidRequest) as exc:
        parse_batch({"blocks": [wide, wide]})
    assert exc.value.loc == ("body", "blocks", 1, "keys")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from server.db.migrate import upgrade
    from server.settings import Settings

    tmp = tmp_path_factory.mktemp("blocks")
    url = f"sqlite:///{tmp / 'landscope.db'}"
    upgrade(url)
    s = Settings(_env_file=None, data_dir=tmp, database_url=url,
                 broker_url=f"sqla+sqlite:///{tmp / 'broker.db'}")
    with TestClient(create_app(s)) as c:
        r = c.post("/api/v1/sdk/runs", json={"client_id": "b" * 32, "name": "blocks"})
        yield c, r.json()["id"]


def test_through_the_api_stored_once_and_hostile_bodies_are_4xx(client):
    c, run_id = client
    b = Batch()
    for step in range(50):
        b.add_scalars(step, {"l": float(step), "n": math.nan})
    body = b.encode()
    for _ in range(2):  # sent twice: stored once
        r = c.post(f"/api/v1/runs/{run_id}/ingest", content=body,
                   headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        assert r.json()["points"] == 100
    series = c.get(f"/api/v1/runs/{run_id}/metrics", params={"keys": "l,n"}).json()["series"]
    assert series["l"]["steps"] == list(range(50)) and series["l"]["values"][7] == 7.0
    assert series["n"]["values"] == ["NaN"] * 50
    for change in ({"n": 2**62}, {"steps": "A"}, {"value_dtype": "<c16"}, {"keys": [None]}):
        r = c.post(f"/api/v1/runs/{run_id}/ingest", json={"blocks": [good(**change)]})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][:3] == ["body", "blocks", 0]
