"""The SDK against a real `landscope api` process, on SQLite and on PostgreSQL: points arrive
(NaN and inf kept), a server killed mid-run loses nothing and stores nothing twice, a server
away at the end leaves a spool that `landscope sync` drains, offline runs upload idempotently,
and a wrong URL or token says so."""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

import landscope
from landscope.cli import main
from landscope.sdk.api import AuthError, ServerUnreachable
from landscope.sdk.transport import TransportOptions
from tests.sdk.conftest import (
    ApiProcess,
    count,
    free_port,
    run_row,
    same,
    stored_points,
)
from worker.engine.file_sink import FileSink
from worker.engine.sink import Distribution, EtaRecord

ROOT = Path(__file__).resolve().parents[2]
FAST = TransportOptions(interval=0.05, heartbeat_every=0.2, backoff_min=0.05, backoff_max=0.3)
KEYS = ("train/loss", "train/acc", "lr")


def value(key: str, step: int) -> float:
    """A value per (key, step) with non-finite ones among them, to check every point."""
    if key == "train/loss" and step % 97 == 5:
        return math.nan
    if key == "train/acc" and step % 89 == 7:
        return math.inf if step % 2 else -math.inf
    return step + KEYS.index(key) / 10


def log_steps(run, steps) -> None:
    for s in steps:
        run.log(s, {k: value(k, s) for k in KEYS})


def expected(steps) -> dict:
    return {(k, s): value(k, s) for s in steps for k in KEYS}


def assert_points(db_url: str, run_id: int, steps) -> dict[int, float]:
    """Every logged point once, and the run's own time/wall_s points (returned): sparse,
    monotone, and one at the last step (finish or flush puts it there)."""
    got, want = stored_points(db_url, run_id), expected(steps)
    wall = {s: got.pop((k, s)) for k, s in list(got) if k == "time/wall_s"}
    assert got.keys() == want.keys(), (len(got), len(want))
    bad = [kv for kv in want if not same(got[kv], want[kv])]
    assert not bad, bad[:5]
    assert max(wall) == max(steps) and set(wall) <= set(steps)
    assert [wall[s] for s in sorted(wall)] == sorted(wall.values())
    return wall


def wait_for(predicate, what: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def dist(layer: int) -> Distribution:
    return Distribution(layer=layer, scope="layer", unit=None, lo=-4.0, hi=4.0, counts=[1, 2],
                        underflow=0, overflow=0, nonfinite=1, mean=math.nan, var=1.0,
                        quantiles={"q50": 0.5})


def test_an_online_run_appears_with_every_point_and_its_end(api, data_dir):
    run = landscope.init(server=api.url, experiment="sweep", name="bn", config={"lr": 0.1},
                         total=300, dir=data_dir / "run", transport=FAST, batch_size=32,
                         train_size=9600)
    assert isinstance(run.id, int) and run.online
    got = httpx.get(f"{api.url}/api/v1/runs/{run.id}").json()["x_axis"]
    assert got == {"batch_size": 32, "train_size": 9600}
    assert run_row(api.db_url, run.id)["status"] == "running"
    log_steps(run, range(300))
    run.eta_records(10, "landscape", [EtaRecord(0.5, 0.05, 2.0, math.nan),
                                      EtaRecord(1.0, 0.1, math.inf, 0.2)])
    run.distributions(10, [dist(1), dist(2)])
    assert run.flush(60)
    # The heartbeat names the last step trained (299): the run has 300 steps done.
    wait_for(lambda: run_row(api.db_url, run.id)["step"] == 300, "the heartbeat's step")
    run.finish()
    row = run_row(api.db_url, run.id)
    assert row["status"] == "succeeded" and row["source"] == "sdk" and row["total"] == 300
    assert row["client_id"] == run.client_id and row["name"] == "bn"
    wall = assert_points(api.db_url, run.id, range(300))
    assert sorted(wall) == [0, *range(2, 300, 3)]  # total 300: a point every 3 steps
    assert count(api.db_url, "probe_records", run.id) == 2
    assert count(api.db_url, "distributions", run.id) == 2
    assert not run.spool_dir.exists()  # all acknowledged: nothing left behind


def test_a_server_killed_mid_run_loses_nothing_and_stores_nothing_twice(api, data_dir):
    run = landscope.init(server=api.url, name="outage", dir=data_dir, transport=FAST)
    t = run._transport
    log_steps(run, range(0, 200))
    api.kill()  # mid-run, maybe mid-request: a batch may be stored but never acknowledged
    log_steps(run, range(200, 300))
    wait_for(lambda: t._down_since is not None and len(t.spool.batches()) >= 1,
             "the transport to find the server gone")
    log_steps(run, range(300, 400))
    wait_for(lambda: len(t.spool.batches()) >= 2, "batches to pile up in the spool")
    api.start()  # same port, same database
    log_steps(run, range(400, 600))
    run.finish(timeout=60)
    assert run_row(api.db_url, run.id)["status"] == "succeeded"
    assert_points(api.db_url, run.id, range(600))  # each (key, step) once: counted in there
    assert not run.spool_dir.exists()


def test_a_server_away_at_the_end_leaves_a_spool_that_sync_drains(api, data_dir, capsys):
    run = landscope.init(server=api.url, name="late", dir=data_dir, transport=FAST)
    log_steps(run, range(100))
    assert run.flush(60)
    api.stop()
    log_steps(run, range(100, 250))
    run.finish("failed", error="diverged", timeout=1)
    err = capsys.readouterr().err
    assert "not on the server yet" in err and f"landscope sync {run.spool_dir}" in err
    assert (run.spool_dir / "finish.json").exists() and run.spool_dir.parent == data_dir / "spool"

    api.start()
    assert main(["sync", str(data_dir), "--quiet"]) == 0  # finds dir/spool/<client_id>
    sent = capsys.readouterr().err
    row = run_row(api.db_url, run.id)
    assert row["status"] == "failed" and row["error"] == "diverged" and row["step"] == 250
    wall = assert_points(api.db_url, run.id, range(250))
    late = sum(1 for s in wall if s >= 100)  # the clock's points of the spooled steps
    assert f"run {run.id}: {450 + late} records sent; failed" in sent
    assert not run.spool_dir.exists()


def test_an_offline_run_and_a_train_folder_sync_once_however_often(api, data_dir, capsys):
    run = landscope.init(dir=data_dir / "offline" / "r1", experiment="off", name="r1",
                         config={"depth": 20}, total=150, train_size=600)
    log_steps(run, range(150))
    run.eta_records(3, "landscape", [EtaRecord(0.5, 0.05, 1.0, 0.1)])
    run.distributions(3, [dist(1)])
    torch.manual_seed(0)  # an in-process analysis of an offline run: uploaded by sync too
    landscope.analyse(torch.nn.Linear(4, 3), torch.nn.functional.cross_entropy,
                      (torch.randn(16, 4), torch.randint(0, 3, (16,))), kind="slice", run=run,
                      step=149, x={"points": 3}, directions={"kind": "random", "seed": 1})
    run.finish()
    # A `landscope train --out` folder: FileSink's files and the run.json train writes.
    train = data_dir / "offline" / "vgg-bn"
    sink = FileSink(train)
    sink.scalars(0, {"train/loss": 2.0, "test/acc": math.nan})
    sink.close()
    (train / "run.json").write_text(json.dumps({"spec": {"steps": 1, "model": "vgg"},
                                                "status": "diverged", "diverged_at": 0,
                                                "next_step": 1, "info": {"x_axis": {
                                                    "batch_size": 16, "train_size": 64}}}))

    for _ in range(2):  # the second sync changes nothing
        assert main(["sync", str(data_dir / "offline"), "--server", api.url, "--quiet"]) == 0
        ids = [int(line.split(" run ")[1].split(":")[0])
               for line in capsys.readouterr().err.splitlines() if " run " in line]
        assert len(ids) == 2
        r1, tr = ids
        assert_points(api.db_url, r1, range(150))
        assert count(api.db_url, "probe_records", r1) == 1
        assert count(api.db_url, "distributions", r1) == 1
        assert count(api.db_url, "analyses", r1) == 1
        row = run_row(api.db_url, r1)
        assert row["status"] == "succeeded" and row["client_id"] == run.client_id
        assert len(stored_points(api.db_url, tr)) == 2
        assert run_row(api.db_url, tr)["status"] == "failed"
    assert ids == [r1, tr]
    x_axis = {i: httpx.get(f"{api.url}/api/v1/runs/{i}").json()["x_axis"] for i in ids}
    assert x_axis == {r1: {"batch_size": None, "train_size": 600},
                      tr: {"batch_size": 16, "train_size": 64}}


def test_wrong_url_and_wrong_token_fail_clearly(db_url, data_dir, capsys):
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=r"cannot reach .* pass dir=PATH"):
        landscope.init(server=nobody, name="x")
    server = ApiProcess(db_url, data_dir, token="s3cret")
    server.start()
    try:
        with pytest.raises(AuthError, match="refused the token \\(401\\)"):
            landscope.init(server=server.url, token="wrong", name="x")
        run = landscope.init(server=server.url, token="s3cret", name="ok", dir=data_dir / "d")
        run.log(0, {"x": 1.0})
        run.finish()
        assert run_row(db_url, run.id)["status"] == "succeeded"
        off = landscope.init(dir=data_dir / "off", name="off")
        off.log(0, {"x": 1.0})
        off.finish()
        assert main(["sync", str(data_dir / "off"), "--server", server.url, "--token", "bad",
                     "--quiet"]) == 1
        assert "refused the token" in capsys.readouterr().err
        assert main(["sync", str(data_dir / "nothing-here"), "--quiet"]) == 2
    finally:
        server.stop()


CHILD = """
import sys
import landscope
from tests.sdk.test_transport_live import FAST, log_steps

run = landscope.init(server=sys.argv[1], name="killed", dir=sys.argv[2], transport=FAST)
print(run.id, run.spool_dir, flush=True)
log_steps(run, range(100))
assert run.flush(60)  # acknowledged
print("sent", flush=True)
sys.stdin.readline()  # the test stops the server meanwhile
log_steps(run, range(100, 300))
assert run.flush()  # durable in the spool, not sent
print("spooled", flush=True)
sys.stdin.readline()  # SIGKILLed here
"""


def test_a_killed_training_process_leaves_a_spool_that_sync_sends(api, data_dir):
    child = subprocess.Popen([sys.executable, "-c", CHILD, api.url, str(data_dir)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        run_id, spool = child.stdout.readline().split()
        assert child.stdout.readline().strip() == "sent"
        api.stop()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "spooled"
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # no atexit, no finish: a crash
        child.wait(30)
    api.start()
    assert main(["sync", spool, "--quiet"]) == 0
    assert_points(api.db_url, int(run_id), range(300))
    assert run_row(api.db_url, int(run_id))["status"] in ("running", "crashed")  # never ended


def test_a_batch_the_server_refuses_is_set_aside_and_the_rest_still_land(api, data_dir, capsys):
    run = landscope.init(server=api.url, name="refused", dir=data_dir, transport=FAST)
    log_steps(run, range(50))
    assert run.flush(60)
    bad = run._transport.spool.put(gzip.compress(b'{"scalars": [{"key": "x", "steps": [1]}]}'),
                                   points=1)
    log_steps(run, range(50, 100))
    run.finish(timeout=60)
    assert "the server refused a batch" in capsys.readouterr().err
    assert_points(api.db_url, run.id, range(100))
    reason = (run.spool_dir / "rejected" / (bad.name + ".reason.txt")).read_text()
    assert "422" in reason and "body.scalars.0" in reason  # the field path, for a human
    assert run_row(api.db_url, run.id)["status"] == "succeeded"


def test_a_cancel_from_the_dashboard_reaches_the_loop(api, data_dir):
    run = landscope.init(server=api.url, name="cancel-me", dir=data_dir, transport=FAST)
    log_steps(run, range(10))
    assert httpx.post(f"{api.url}/api/v1/runs/{run.id}/cancel").status_code == 202
    wait_for(lambda: run.cancel_requested, "the heartbeat's answer to say cancel")
    run.finish("cancelled")
    assert run_row(api.db_url, run.id)["status"] == "cancelled"
    assert_points(api.db_url, run.id, range(10))
