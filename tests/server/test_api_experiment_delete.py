"""DELETE /experiments/{id}: refused while a run is queued or running (nothing deleted), else
the experiment goes with every run, their metrics, snapshot rows and files; other experiments
keep theirs; an Idempotency-Key retry of the deleted experiment's POST is a 409, not a 500.
On SQLite + the embedded broker and PostgreSQL + Redis."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, update

from server.db.metrics import insert_points, series_ids
from server.db.models import Experiment, Point, Run, Series, Snapshot
from server.db.session import make_sessionmaker
from server.services.analyses import snapshot_dir

API = "/api/v1/experiments"
BODY = {"base": {"model": "mlp", "depth": 2, "width": 8, "dataset": "mnist1d", "steps": 10,
                 "device": "cpu"}, "vary": {"norm": ["none", "batch"]}}


def _experiment(client, api_db, status: str, **headers: str) -> tuple[int, list[int]]:
    """An experiment of two runs, left in `status` as a worker would have, each with metrics,
    a snapshot row and a snapshot folder on disk."""
    r = client.post(API, json=BODY, headers=headers)
    assert r.status_code == 201, r.text
    exp = r.json()
    run_ids = [run["id"] for run in exp["runs"]]
    with make_sessionmaker(api_db).begin() as s:
        s.execute(update(Run).where(Run.id.in_(run_ids)).values(status=status))
        s.add_all(Snapshot(run_id=i, step=10, path=f"/snap/{i}/10.pt", bytes=1)
                  for i in run_ids)
    with api_db.begin() as conn:
        for run_id in run_ids:
            sid = series_ids(conn, run_id, ["train/loss"])["train/loss"]
            insert_points(conn, [(sid, s, float(s), 0) for s in range(10)])
    return exp["id"], run_ids


def _count(api_db, model, *where) -> int:
    with api_db.connect() as c:
        return c.scalar(select(func.count()).select_from(model).where(*where))


def test_delete_refuses_while_a_run_is_active_and_deletes_nothing(client, api_db, backend):
    for status in ("queued", "running"):
        exp_id, run_ids = _experiment(client, api_db, status)
        r = client.delete(f"{API}/{exp_id}")
        assert r.status_code == 409
        assert "cancel them first" in r.json()["detail"]
        assert all(str(i) in r.json()["detail"] for i in run_ids)
        assert client.get(f"{API}/{exp_id}").status_code == 200
        assert _count(api_db, Run, Run.id.in_(run_ids)) == 2


def test_delete_removes_the_experiment_its_runs_metrics_and_files(client, api_db, backend):
    keep_id, keep_runs = _experiment(client, api_db, "succeeded")
    exp_id, run_ids = _experiment(client, api_db, "succeeded")
    folders = [snapshot_dir(backend, i) for i in run_ids + keep_runs]
    for folder in folders:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "10.pt").write_bytes(b"x")

    assert client.delete(f"{API}/{exp_id}").status_code == 204

    assert client.get(f"{API}/{exp_id}").status_code == 404
    for run_id in run_ids:
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 404
    assert _count(api_db, Run, Run.id.in_(run_ids)) == 0
    assert _count(api_db, Snapshot, Snapshot.run_id.in_(run_ids)) == 0
    assert _count(api_db, Series, Series.run_id.in_(run_ids)) == 0
    assert _count(api_db, Point) == 20  # only the kept experiment's points
    assert [Path(f).exists() for f in folders] == [False, False, True, True]
    # The other experiment is whole.
    assert [r["id"] for r in client.get(f"{API}/{keep_id}").json()["runs"]] == keep_runs
    assert _count(api_db, Experiment) == 1
    assert client.delete(f"{API}/{exp_id}").status_code == 404


def test_a_retry_of_the_deleted_experiments_post_is_a_409(client, api_db, backend):
    key = {"Idempotency-Key": "delete-then-retry"}
    exp_id, _ = _experiment(client, api_db, "succeeded", **key)
    assert client.delete(f"{API}/{exp_id}").status_code == 204
    r = client.post(API, json=BODY, headers=key)
    assert r.status_code == 409 and "has since been deleted" in r.json()["detail"]
