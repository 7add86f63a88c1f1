"""SDK runs record the user's process's environment at landscope.init (torch threads,
determinism, dtype, machine, versions): online it is the run's RunOut.environment at once;
offline it is in the folder's run.json and reaches the server with `landscope sync`, as does
a `landscope train` run's."""

from __future__ import annotations

import json

import httpx
import torch

import landscope
from landscope.cli import main
from landscope.sdk.offline import read_run_folder
from landscope.sdk.transport import TransportOptions
from worker.engine.threads import torch_threads

FAST = TransportOptions(interval=0.05, heartbeat_every=0.2, backoff_min=0.05, backoff_max=0.3)


def served_environment(url: str, run_id: int) -> dict:
    r = httpx.get(f"{url}/api/v1/runs/{run_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["environment"]


def test_an_offline_run_keeps_its_environment_for_sync(tmp_path):
    with torch_threads(2):
        run = landscope.init(dir=tmp_path / "off", name="off")
    run.log(0, {"x": 1.0})
    run.finish()
    env = json.loads((tmp_path / "off" / "run.json").read_text())["environment"]
    assert env["torch_threads"] == 2 and env["versions"]["torch"] == torch.__version__
    assert env["dtype"] == "float32" and env["isa"] == torch.backends.cpu.get_cpu_capability()
    assert read_run_folder(tmp_path / "off").create["environment"] == env


def test_online_and_synced_runs_show_their_environment(api, data_dir, capsys):
    # `api` is started and stopped by its fixture (starting it again here leaked the first
    # server process: a second start replaced the handle the fixture stops).
    with torch_threads(2):
        run = landscope.init(server=api.url, name="live", dir=data_dir, transport=FAST)
    run.log(0, {"x": 1.0})
    run.finish()
    env = served_environment(api.url, run.id)
    assert env["torch_threads"] == 2 and env["device"] == "cpu"
    assert env["deterministic"] is torch.are_deterministic_algorithms_enabled()

    off = landscope.init(dir=data_dir / "sync" / "off", name="off")
    off.log(0, {"x": 1.0})
    off.finish()
    assert main(["train", "--set", "model=mlp", "--set", "dataset=digits", "--set",
                 "depth=2", "--set", "width=8", "--set", "steps=2", "--set", "threads=3",
                 "--quiet", "--out", str(data_dir / "sync"),
                 "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    assert main(["sync", str(data_dir / "sync"), "--server", api.url, "--quiet"]) == 0
    ids = [int(line.split(" run ")[1].split(":")[0])
           for line in capsys.readouterr().err.splitlines() if " run " in line]
    envs = [served_environment(api.url, i) for i in ids]
    assert sorted(e["torch_threads"] for e in envs) == [torch.get_num_threads(), 3]
