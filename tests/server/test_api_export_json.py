"""The JSON export: the run as GET /runs/{id} gives it (its spec and the environment it
trained under) and then every point, streamed, non-finite values as strings."""

from __future__ import annotations

import json
import math

from server.db.metrics import insert_points, series_ids
from server.db.models import encode_value
from server.services.export import iter_json

ENV = {"torch_threads": 1, "deterministic": False, "dtype": "float64", "isa": "AVX2",
       "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6",
                    "landscope": "0.1.0"}}


def store(api_db, run_id: int, series: dict[str, list[tuple[int, float]]]) -> None:
    with api_db.begin() as conn:
        sids = series_ids(conn, run_id, series)
        insert_points(conn, [(sids[k], s, *encode_value(v)) for k, pts in series.items()
                             for s, v in pts])


def test_the_json_export_carries_the_run_its_environment_and_every_point(
    client, api_db, make_run
):
    run_id = make_run(status="succeeded", spec={"dtype": "float64"}, info={"environment": ENV})
    store(api_db, run_id, {"train/loss": [(0, 2.0), (1, math.nan), (2, 1 / 3)],
                           "a/first": [(5, math.inf), (6, -math.inf)]})
    r = client.get(f"/api/v1/runs/{run_id}/export?format=json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"] == \
        f'attachment; filename="landscope-run-{run_id}.json"'
    doc = json.loads(r.text)
    assert doc["run"] == client.get(f"/api/v1/runs/{run_id}").json()
    assert doc["run"]["environment"] == ENV
    assert doc["series"] == {"a/first": [[5, "Infinity"], [6, "-Infinity"]],
                             "train/loss": [[0, 2.0], [1, "NaN"], [2, 1 / 3]]}
    empty = make_run(status="queued")
    doc = client.get(f"/api/v1/runs/{empty}/export?format=json").json()
    assert doc["series"] == {} and doc["run"]["environment"] is None
    assert client.get("/api/v1/runs/999999/export?format=json").status_code == 404


def test_the_json_export_comes_in_bounded_chunks(api_db, make_run):
    run_id = make_run(status="running", step=10)
    store(api_db, run_id, {k: [(s, s * 0.5) for s in range(700)] for k in ("a", "b", "c")})
    chunks = list(iter_json(api_db, run_id, {"id": run_id}, chunk_rows=100))
    assert len(chunks) >= 20 and max(len(c) for c in chunks) < 200 * 20
    doc = json.loads("".join(chunks))
    assert doc["run"] == {"id": run_id}
    assert doc["series"]["b"] == [[s, s * 0.5] for s in range(700)]
