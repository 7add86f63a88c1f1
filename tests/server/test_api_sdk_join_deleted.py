"""An SDK run that joins an experiment while that experiment is being deleted (PostgreSQL, where
the delete holds the experiment's row and the run's foreign-key check waits for it): a join by
id gets a 422 naming experiment_id, a join by name starts the experiment anew; never a 5xx."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.db.session import make_engine, make_sessionmaker
from server.services import experiments, sdk_runs

from .test_api_sdk_runs import new_run


def _delete_after_read(monkeypatch, backend, exp_id: int) -> list[int]:
    """Make the next create read its experiment, then see it deleted (committed by another
    session) before its own write: the race, made deterministic."""
    read = sdk_runs._experiment_id
    done: list[int] = []

    def racing(session, req):
        eid = read(session, req)
        if not done:
            engine = make_engine(backend.db_url)
            try:
                with make_sessionmaker(engine)() as other:
                    done.extend(experiments.delete_experiment(other, exp_id)[0])
                    other.commit()
            finally:
                engine.dispose()
        return eid

    monkeypatch.setattr(sdk_runs, "_experiment_id", racing)
    return done


@pytest.fixture
def pg_backend(backend):
    if backend.db_url.startswith("sqlite"):
        # SQLite serialises writers: the create holds the database, so no delete can slip in.
        pytest.skip("the race needs concurrent writers (PostgreSQL)")
    return backend


@pytest.mark.parametrize("join", ["id", "name"])
def test_joining_an_experiment_deleted_meanwhile_is_a_4xx_or_a_fresh_experiment(
        pg_backend, monkeypatch, join):
    with TestClient(create_app(pg_backend)) as client:
        first = new_run(client, "a" * 32, experiment="sweep")
        assert client.post(f"/api/v1/runs/{first['id']}/finish",
                           json={"status": "succeeded"}).status_code == 200
        exp_id = first["experiment_id"]
        deleted = _delete_after_read(monkeypatch, pg_backend, exp_id)
        body = {"client_id": "b" * 32, "name": "late",
                **({"experiment_id": exp_id} if join == "id" else {"experiment": "sweep"})}
        r = client.post("/api/v1/sdk/runs", json=body)
        assert deleted == [first["id"]]  # the delete did happen in between
        assert client.get(f"/api/v1/experiments/{exp_id}").status_code == 404
        if join == "id":
            assert r.status_code == 422, r.text
            (err,) = r.json()["detail"]
            assert err["loc"] == ["body", "experiment_id"] and "not found" in err["msg"]
            assert client.get("/api/v1/runs").json()["total"] == 0  # nothing half-made
        else:
            assert r.status_code == 201, r.text
            run = r.json()
            assert run["experiment_id"] not in (None, exp_id)
            exp = client.get(f"/api/v1/experiments/{run['experiment_id']}").json()
            assert (exp["name"], exp["source"], [x["id"] for x in exp["runs"]]) == \
                ("sweep", "sdk", [run["id"]])


def test_a_client_id_race_lost_at_the_write_returns_the_winner(backend, monkeypatch):
    """Both checks before the write missed the other init's run (as if it committed in
    between): the unique client_id stops the insert inside a savepoint, and the winner's run
    comes back (200), on both databases."""
    with TestClient(create_app(backend)) as client:
        winner = new_run(client, "c" * 32, experiment="sweep")
        real = sdk_runs.find_by_client_id
        calls = [0]

        def blind_twice(session, client_id):
            calls[0] += 1
            return None if calls[0] <= 2 else real(session, client_id)

        monkeypatch.setattr(sdk_runs, "find_by_client_id", blind_twice)
        r = client.post("/api/v1/sdk/runs", json={"client_id": "c" * 32, "name": "loser",
                                                  "experiment": "sweep"})
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["name"]) == (winner["id"], "mine")
        assert calls[0] == 3
        assert client.get("/api/v1/runs").json()["total"] == 1
