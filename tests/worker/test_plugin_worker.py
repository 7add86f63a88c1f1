"""A real `landscope worker` with a really installed plug-in, driven through the real API.

The plug-in distribution (tests/support/plugin_package.py) is installed by pip into a directory
that only the worker subprocess has on its PYTHONPATH: the API (this process) cannot import it
and never needs to. The worker reports it in its heartbeat info; the API then accepts a run
naming it, and the worker trains it to the end with its probes, over Redis and PostgreSQL.
Names no worker reports, and module paths, are refused with a 422 and nothing is imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.migrate import upgrade
from server.db.models import WorkerRecord
from server.db.session import make_engine
from server.settings import Settings
from tests.support import plugin_package

pytestmark = pytest.mark.slow

SPEC = {
    "model": "testplug.tiny_net", "model_options": {"hidden": 10},
    "dataset": "testplug.blobs", "dataset_options": {"n": 160, "dim": 4},
    "device": "cpu", "steps": 40, "batch_size": 32, "eval_every": 10, "lr": 0.05,
    "snapshots": {"every": 20},
    "probes": {"landscape": {"every": 10}, "ics": {"every": 10, "layers": [1, 2, 3]},
               "activations": {"every": 10}},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return plugin_package.install(tmp_path_factory.mktemp("plugin"))


def test_a_worker_reports_its_plugin_and_trains_a_run_naming_it(
        site, tmp_path, pg_url, redis_space, service_env, workers, waiter, stored):
    # The API side has no access to the plug-in: it only ever compares names.
    assert str(site) not in sys.path
    assert importlib.util.find_spec(plugin_package.MODULE) is None

    upgrade(pg_url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=pg_url,
                        heartbeat_seconds=0.5, **redis_space.settings())
    env = service_env(data_dir=tmp_path, database_url=pg_url, worker_device="cpu",
                      sink_flush_seconds=0.2, heartbeat_seconds=0.5, **redis_space.settings())
    env["PYTHONPATH"] = str(site)

    from server.api.app import create_app

    engine = make_engine(pg_url)
    try:
        with TestClient(create_app(settings)) as client:
            # Before any worker: refused, and the error says none has it.
            r = client.post("/api/v1/runs", json={"spec": SPEC})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"] == ["body", "spec", "model"]

            worker = workers.start(env, "plug")

            def reported():
                with engine.connect() as c:
                    info = c.scalar(select(WorkerRecord.info)
                                    .where(WorkerRecord.name.like("test-plug%")))
                return info and info.get("plugins")

            plugins = waiter(reported, 120, what="the worker to report its plug-ins")
            label = f"{plugin_package.DIST} {plugin_package.VERSION}"
            assert plugins["models"] == {"testplug.broken": label, "testplug.tiny_net": label}
            assert plugins["datasets"] == {"testplug.blobs": label}
            assert "shadows a built-in" in plugins["problems"][0]
            catalogue = client.get("/api/v1/plugins").json()
            assert list(catalogue["models"]) == ["testplug.broken", "testplug.tiny_net"]

            r = client.post("/api/v1/runs", json={"spec": SPEC})
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]

            # Names the worker does not have, and module paths, are refused; nothing imported.
            for bad in ("testplug.absent", "landscope_testplug.nets", "os.system"):
                r = client.post("/api/v1/runs", json={"spec": {**SPEC, "model": bad}})
                assert r.status_code == 422, (bad, r.text)
                assert r.json()["detail"][0]["loc"] == ["body", "spec", "model"]
                assert "available: testplug.broken, testplug.tiny_net (" in \
                    r.json()["detail"][0]["msg"]
            assert plugin_package.MODULE not in sys.modules

            def ended():
                run = client.get(f"/api/v1/runs/{run_id}").json()
                return run if run["status"] not in ("queued", "running") else None

            run = waiter(ended, 180, interval=0.2, what=f"run {run_id} to end")
            assert run["status"] == "succeeded", run
            assert run["step"] == 40
            assert run["layers"] == 2  # tiny_net: three weight layers, so two norm slots

            # Its analyses are bounded by what the worker recorded of the built network.
            r = client.post("/api/v1/analyses", json={
                "run_id": run_id, "dry_run": True,
                "spec": {"kind": "surface", "x": {"points": 5}, "y": {"points": 5}}})
            assert r.status_code == 200, r.text
            cost = r.json()["cost"]
            hidden, dim = SPEC["model_options"]["hidden"], SPEC["dataset_options"]["dim"]
            assert cost["params"] > hidden * dim and 0 < cost["eval_samples"] <= 160

            # A plug-in that raises fails its run with a message naming it.
            r = client.post("/api/v1/runs", json={"spec": {**SPEC, "model": "testplug.broken"}})
            assert r.status_code == 201, r.text
            broken_id = r.json()["id"]
            failed = waiter(lambda: (lambda b: b if b["status"] == "failed" else None)(
                client.get(f"/api/v1/runs/{broken_id}").json()), 120, interval=0.2,
                what="the broken plug-in's run to fail")
            assert "testplug.broken" in failed["error"] and "on purpose" in failed["error"]
        workers.stop(worker)
    finally:
        engine.dispose()

    got = stored(pg_url, run_id)
    for key in ("train/loss", "test/acc", "landscape/beta", "ics/L3/l2", "act/L2/mean"):
        assert got.counts[key] > 0, key
    assert got.etas > 0 and got.dists > 0
    assert got.run.info["model"]["plugin"]["distribution"] == plugin_package.DIST
    assert got.run.info["data"]["plugin"]["name"] == "testplug.blobs"
