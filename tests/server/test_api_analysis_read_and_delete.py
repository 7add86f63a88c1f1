"""GET /analyses/{id}: detail with its grids laid out row-major (non-finite values as strings,
no accuracy or test grids for a regression), CSV, directions files; then cancel, delete, and
deleting a run, which removes its analyses' points, values, snapshots and files.

Runs, snapshots, points and values are inserted directly, as a worker would have left them:
these tests are about the API's side, on SQLite + the embedded broker and PostgreSQL + Redis.
"""

from __future__ import annotations

import csv
import io
import math

from sqlalchemy import Engine, func, select

from server.db.models import AnalysisPoint, AnalysisValue, Snapshot
from server.db.session import make_sessionmaker
from server.services.analyses import directions_path
from tests.server.analysis_runs import (
    API,
    arrange_fixture,  # noqa: F401 - the arrange fixture
    count,
    run_spec,
)


def _store(api_db: Engine, analysis_id: int, points: list[tuple], values: dict) -> None:
    with make_sessionmaker(api_db).begin() as s:
        s.add_all(AnalysisPoint(analysis_id=analysis_id, step=step, idx=idx, loss=loss, acc=acc,
                                test_loss=tl, test_acc=ta)
                  for step, idx, loss, acc, tl, ta in points)
        s.add_all(AnalysisValue(analysis_id=analysis_id, step=step, name=name, value=v)
                  for (step, name), v in values.items())


def test_detail_lays_points_out_row_major_with_non_finite_as_strings(client, api_db, arrange):
    run_id = arrange()
    spec = {"kind": "surface", "steps": [10, 40], "x": {"lo": 0, "hi": 2, "points": 3},
            "y": {"lo": -1, "hi": 1, "points": 2}, "test_set": True}
    (a,) = client.post(API, json={"run_id": run_id, "spec": spec}).json()["analyses"]
    spectrum = {"top_eigenvalues": [3.5, 1.0], "trace": "NaN"}
    _store(api_db, a["id"], [
        (40, 0, 1.5, 0.25, 2.0, 0.5), (40, 2, math.nan, 0.5, math.inf, 0.0),
        (40, 4, -math.inf, 1.0, 0.5, 1.0), (40, 5, 0.125, 0.75, math.nan, 0.25),
        (10, 3, 9.0, 0.0, 8.0, 0.0),
    ], {(40, "spectrum"): spectrum, (40, "directions"): {"kinds": ["random", "random"]}})
    d = client.get(f"{API}/{a['id']}").json()
    s40 = d["steps"]["40"]
    assert s40["x"] == [0.0, 1.0, 2.0] and s40["y"] == [-1.0, 1.0]
    assert s40["loss"] == [[1.5, None, "NaN"], [None, "-Infinity", 0.125]]
    assert s40["acc"] == [[0.25, None, 0.5], [None, 1.0, 0.75]]
    assert s40["test_loss"] == [[2.0, None, "Infinity"], [None, 0.5, "NaN"]]
    assert s40["test_acc"] == [[0.5, None, 0.0], [None, 1.0, 0.25]]
    assert s40["values"] == {"spectrum": spectrum, "directions": {"kinds": ["random", "random"]}}
    assert d["steps"]["10"]["loss"] == [[None, None, None], [9.0, None, None]]
    assert d["steps"]["10"]["values"] == {}

    r = client.get(f"{API}/{a['id']}/csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["step"], row["idx"], row["ix"], row["iy"]) for row in rows] == [
        ("10", "3", "0", "1"), ("40", "0", "0", "0"), ("40", "2", "2", "0"),
        ("40", "4", "1", "1"), ("40", "5", "2", "1")]
    assert [row["loss"] for row in rows] == ["9.0", "1.5", "nan", "-inf", "0.125"]
    assert [row["test_loss"] for row in rows] == ["8.0", "2.0", "inf", "0.5", "nan"]
    assert rows[2]["x"] == "2.0" and rows[2]["y"] == "-1.0" and rows[3]["y"] == "1.0"


def test_a_regression_slice_has_no_accuracy_and_no_test_grids(client, api_db, arrange):
    run_id = arrange(spec=run_spec(model="dln", dataset="gaussian_linear", loss="sum_squares",
                                   n_samples=64, batch_size=None))
    (a,) = client.post(API, json={"run_id": run_id, "spec": {"kind": "slice",
                                                             "x": {"points": 3}}}
                       ).json()["analyses"]
    _store(api_db, a["id"], [(40, 1, 0.5, None, None, None)], {})
    s = client.get(f"{API}/{a['id']}").json()["steps"]["40"]
    assert s["loss"] == [[None, 0.5, None]] and s["y"] is None
    assert s["acc"] is None and s["test_loss"] is None and s["test_acc"] is None
    rows = list(csv.DictReader(io.StringIO(client.get(f"{API}/{a['id']}/csv").text)))
    assert [(r["loss"], r["acc"], r["y"], r["test_loss"]) for r in rows] == [("0.5", "", "", "")]


def test_cancel_then_delete_removes_points_values_and_files(client, api_db, arrange, backend):
    run_id = arrange()
    (a,) = client.post(API, json={"run_id": run_id, "spec": {"kind": "slice",
                                                             "steps": [0, 40]}}
                       ).json()["analyses"]
    _store(api_db, a["id"], [(40, 1, 0.5, 0.5, None, None)], {(40, "endpoints"): [1, 2]})
    files = [directions_path(backend, a["id"], step) for step in (0, 40)]
    for i, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * 10)

    r = client.get(f"{API}/{a['id']}/directions", params={"step": 40})
    assert r.status_code == 200 and r.content == b"\x01" * 10
    r = client.get(f"{API}/{a['id']}/directions")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "step"]
    assert client.get(f"{API}/{a['id']}/directions", params={"step": 10}).status_code == 404

    r = client.delete(f"{API}/{a['id']}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    r = client.post(f"{API}/{a['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    r = client.post(f"{API}/{a['id']}/cancel")
    assert r.status_code == 409 and "already finished (cancelled)" in r.json()["detail"]

    assert client.delete(f"{API}/{a['id']}").status_code == 204
    assert client.get(f"{API}/{a['id']}").status_code == 404
    assert client.delete(f"{API}/{a['id']}").status_code == 404
    assert client.post(f"{API}/{a['id']}/cancel").status_code == 404
    assert count(api_db, AnalysisPoint) == 0 and count(api_db, AnalysisValue) == 0
    assert not files[0].parent.exists()
    assert client.get(f"{API}/2147483648").status_code == 422


def test_deleting_a_run_deletes_its_analyses_snapshots_and_files(client, api_db, arrange,
                                                                 backend):
    from server.services.analyses import snapshot_dir

    run_id, kept = arrange(), arrange()
    made = [client.post(API, json={"run_id": r, "spec": {"kind": "slice"}}).json()["analyses"][0]
            for r in (run_id, kept)]
    _store(api_db, made[0]["id"], [(40, 0, 1.0, None, None, None)], {(40, "meta"): {}})
    dirs = [directions_path(backend, a["id"], 40).parent for a in made]
    snaps = [snapshot_dir(backend, r) for r in (run_id, kept)]
    for d in [*dirs, *snaps]:
        d.mkdir(parents=True)
        (d / "f.pt").write_bytes(b"x")
    for a in made:
        assert client.post(f"{API}/{a['id']}/cancel").status_code == 200
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 204
    assert client.get(f"{API}/{made[0]['id']}").status_code == 404
    assert [a["id"] for a in client.get(API).json()["items"]] == [made[1]["id"]]
    assert count(api_db, AnalysisPoint) == count(api_db, AnalysisValue) == 0
    with api_db.connect() as c:
        assert c.scalar(select(func.count()).select_from(Snapshot)
                        .where(Snapshot.run_id == run_id)) == 0
    assert (not dirs[0].exists(), not snaps[0].exists()) == (True, True)
    assert dirs[1].exists() and snaps[1].exists()
