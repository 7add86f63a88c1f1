"""The SDK without a server: the wire format, the spool, offline runs and reading them back,
run.log's checks, `import landscope` staying light."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import landscope
from landscope.sdk.offline import read_run_folder
from landscope.sdk.spool import Spool
from landscope.sdk.sync import find_targets
from landscope.sdk.wire import Batch, decode, json_float, scalars_of
from worker.engine.sink import Distribution, EtaRecord

ROOT = Path(__file__).resolve().parents[2]
INF = float("inf")


def dist(layer: int = 1) -> Distribution:
    return Distribution(layer=layer, scope="layer", unit=None, lo=-4.0, hi=4.0,
                        counts=[1, 2, 3], underflow=0, overflow=1, nonfinite=2,
                        mean=math.nan, var=1.5, quantiles={"q50": -INF, "q99": 2.0})


def columns(body: dict) -> dict[str, list]:
    """key -> [(step, value)] over every block of a body (a key may come in several, one per
    set of keys logged together; the server merges them), non-finite values as JSON words."""
    return {k: sorted((s, json_float(v)) for s, v in pts)
            for k, pts in scalars_of(body).items()}


WANT = {"train/loss": [(0, 2.5), (1, "Infinity"), (2, 1.0)], "x": [(0, "NaN"), (1, "-Infinity")],
        "n": [(1, 3)], "t": [(2, 0.25)]}


@pytest.mark.parametrize("max_columns", [5000, 1])  # 1: the one-column-per-key fallback
def test_batch_encodes_the_contract_wire_format_with_non_finite_words(monkeypatch, max_columns):
    monkeypatch.setattr("landscope.sdk.wire.MAX_COLUMNS", max_columns)
    b = Batch()
    b.add_scalars(0, {"train/loss": 2.5, "x": math.nan})
    b.add_scalars(1, {"train/loss": INF, "x": -INF, "n": 3})
    b.add_scalars(2, {"train/loss": 1.0, "t": torch.tensor(0.25)})
    b.add_etas(1, "landscape", [EtaRecord(0.5, 0.05, math.nan, 0.1)])
    b.add_dists(1, [dist()])
    body = decode(b.encode())
    assert columns(body) == WANT
    assert "scalars" not in body  # binary blocks only
    if max_columns == 1:
        assert sorted(k for b in body["blocks"] for k in b["keys"]) == sorted(WANT)
    assert body["etas"] == [{"step": 1, "probe": "landscape", "records": [
        {"multiplier": 0.5, "eta": 0.05, "loss": "NaN", "grad_dist": 0.1}]}]
    (d,) = body["distributions"]
    assert d["step"] == 1 and d["mean"] == "NaN" and d["quantiles"] == {"q50": "-Infinity",
                                                                         "q99": 2.0}
    assert b.points == 7 + 1 + 1 and b.last_step == 2 and b.last_loss == 1.0


def test_spool_keeps_order_across_reopen_and_sets_refused_bodies_aside(tmp_path):
    s = Spool(tmp_path / "sp")
    paths = [s.put(f"body{i}".encode(), points=i + 1) for i in range(12)]
    assert s.batches() == paths and s.pending_points() == sum(range(1, 13))
    s.ack(paths[0])
    again = Spool(tmp_path / "sp")  # a new process: numbering goes on after the last one
    newest = again.put(b"late", 7)
    assert again.batches()[-1] == newest and Spool.seq_of(newest) == 13
    again.reject(paths[1], "422: body.scalars.0.values.3: bad")
    assert paths[1] not in again.batches()
    assert "bad" in (tmp_path / "sp" / "rejected" / (paths[1].name + ".reason.txt")).read_text()
    assert not again.remove_if_done()


def test_offline_run_writes_a_folder_that_reads_back_as_the_same_batches(tmp_path):
    run = landscope.init(dir=tmp_path / "r", experiment="e", name="n",
                         config={"lr": 0.1, "bad": math.nan, "path": tmp_path}, total=3)
    assert run.id is None and len(run.client_id) == 32 and run.dir == tmp_path / "r"
    run.log(0, {"train/loss": torch.tensor(2.0, requires_grad=True) * 1.0, "acc": 0.5})
    run.log(1, {"train/loss": math.nan, "acc": INF})
    run.eta_records(1, "landscape", [EtaRecord(0.5, 0.05, 1.0, -INF), EtaRecord(1, .1, 2, 3)])
    run.distributions(2, [dist(1), dist(2)])
    run.finish("failed", error="boom")
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "boom" and rec["step"] == 1
    assert rec["config"]["bad"] == "NaN" and rec["config"]["path"] == str(tmp_path)

    folder = read_run_folder(tmp_path / "r")
    assert folder.create["client_id"] == run.client_id and folder.create["total"] == 3
    assert folder.end == {"status": "failed", "error": "boom", "step": 1}
    assert folder.points() == 4 + 2 + 2 + 2  # time/wall_s at 0 and 1 (total 3: every step)
    (b,) = list(folder.batches())
    body = decode(b.encode())
    cols = columns(body)
    wall = cols.pop("time/wall_s")
    assert [s for s, _ in wall] == [0, 1] and 0 <= wall[0][1] <= wall[1][1]
    assert cols == {"train/loss": [(0, 2.0), (1, "NaN")],
                    "acc": [(0, 0.5), (1, "Infinity")]}
    assert len(body["etas"]) == 1 and len(body["etas"][0]["records"]) == 2  # grouped again
    assert [d["layer"] for d in body["distributions"]] == [1, 2]
    assert [len(list(read_run_folder(tmp_path / "r").batches(max_points=3)))] == [4]
    assert [t.kind for t in find_targets(tmp_path)] == ["folder"]  # found one level below


def test_offline_dir_is_never_reused_and_finished_runs_refuse_points(tmp_path):
    run = landscope.init(dir=tmp_path, name="a")
    run.finish()
    with pytest.raises(RuntimeError, match="has finished"):
        run.log(0, {"x": 1.0})
    run.finish("failed")  # a second finish changes nothing
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "succeeded"
    with pytest.raises(FileExistsError, match="already holds a run"):
        landscope.init(dir=tmp_path)


def test_context_manager_fails_the_run_on_an_exception(tmp_path):
    with pytest.raises(ZeroDivisionError), landscope.init(dir=tmp_path) as run:
        run.log(0, {"x": 1.0})
        1 / 0  # noqa: B018
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["status"] == "failed" and "ZeroDivisionError" in rec["error"]


@pytest.mark.parametrize("values,needle", [
    ({"x": "1.0"}, "'x' must be a number or a one-element tensor, got str"),
    ({"x": torch.ones(3)}, "'x' is a tensor of shape (3,)"),
    ({1: 1.0}, "metric names must be non-empty strings"),
    ({"": 1.0}, "metric names must be non-empty strings"),
    ({"a" * 201: 1.0}, "of at most 200 characters"),
    ({"a\x00b": 1.0}, "without NUL"),
    ({"\ud800": 1.0}, "is not valid text"),
])
def test_log_rejects_bad_values_on_the_training_thread(tmp_path, values, needle):
    run = landscope.init(dir=tmp_path)
    with pytest.raises(TypeError) as err:
        run.log(0, values)
    assert needle in str(err.value)
    with pytest.raises(ValueError, match="step must be >= 0"):
        run.log(-1, {"x": 1.0})
    with pytest.raises(ValueError, match="<= 2147483647"):
        run.log(2**31, {"x": 1.0})
    with pytest.raises(TypeError, match="step must be an integer"):
        run.log(1.5, {"x": 1.0})
    run.finish()


def test_init_needs_a_server_or_a_dir_and_checks_the_url():
    with pytest.raises(ValueError, match="needs server=URL .* or dir=PATH"):
        landscope.init()
    with pytest.raises(ValueError, match="http:// or https:// URL"):
        landscope.init(server="localhost:8000")
    with pytest.raises(ValueError, match="total must be"):
        landscope.init(server="http://127.0.0.1:1", total=-1)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        landscope.init(server="http://127.0.0.1:1", batch_size=0)
    with pytest.raises(ValueError, match="train_size must be a positive int"):
        landscope.init(dir="unused", train_size=2.5)
    with pytest.raises(ValueError, match="name must be at most 200 characters"):
        landscope.init(dir="unused", name="n" * 201)
    with pytest.raises(ValueError, match="experiment must be a non-empty string"):
        landscope.init(dir="unused", experiment=" ")


def test_import_landscope_and_the_sync_command_stay_torch_free():
    code = ("import sys, landscope; from landscope.cli import _parser; _parser(); "
            "landscope.init; landscope.Run; from landscope.sdk import sync; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(landscope.__all__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['Client', 'LandscopeError', 'Probes', 'Run', 'analyse', 'init']"


@pytest.mark.parametrize("tail,status", [("", "succeeded"), ("raise KeyError('lost')", "failed")])
def test_a_script_that_never_finishes_its_run_ends_it_at_exit(tmp_path, tail, status):
    code = ("import landscope\n"
            f"run = landscope.init(dir={str(tmp_path)!r})\n"
            "run.log(3, {'x': 1.0})\n"
            "del run  # dropped, unfinished: still ended at exit\n" + tail)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == (0 if status == "succeeded" else 1), done.stderr
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["status"] == status and rec["step"] == 3
    assert (rec["error"] is None) == (status == "succeeded")
    assert status == "succeeded" or "KeyError('lost')" in rec["error"]


def wall_of(folder) -> dict[int, float]:
    rows = (folder / "scalars.csv").read_text().splitlines()[1:]
    return {int(r.split(",")[0]): float(r.split(",")[2]) for r in rows if ",time/wall_s," in r}


def test_the_run_records_its_wall_time_sparsely_at_flushes_and_at_the_end(tmp_path):
    run = landscope.init(dir=tmp_path / "a", total=1000)  # a point every 10 steps
    for step in range(500):
        run.log(step, {"loss": 1.0})
    run.flush()  # a point at the newest step, 499, already had one (the end of a period)
    for step in range(500, 995):
        run.log(step, {"loss": 1.0})
    run.flush()  # a point at 994
    run.finish()  # ... and nothing more: 994 is the last step and has one
    wall = wall_of(tmp_path / "a")
    assert sorted(wall) == [0, *range(9, 994, 10), 994]
    assert [wall[s] for s in sorted(wall)] == sorted(wall.values()) and wall[0] >= 0

    run = landscope.init(dir=tmp_path / "b")  # no total: about 1 % of the steps so far
    for step in range(0, 20_000, 2):
        run.log(step, {"loss": 1.0})
    run.finish()
    wall = wall_of(tmp_path / "b")
    assert max(wall) == 19_998 and len(wall) < 450  # 100 + 100 ln(20): of 10,000 logged
    assert [wall[s] for s in sorted(wall)] == sorted(wall.values())


def test_batch_and_train_size_travel_with_an_offline_run_to_sync(tmp_path):
    run = landscope.init(dir=tmp_path / "r", batch_size=32, train_size=1000)
    run.finish()
    assert json.loads((tmp_path / "r" / "run.json").read_text())["batch_size"] == 32
    folder = read_run_folder(tmp_path / "r")
    assert (folder.create["batch_size"], folder.create["train_size"]) == (32, 1000)
    plain = landscope.init(dir=tmp_path / "p")
    plain.finish()
    assert "batch_size" not in read_run_folder(tmp_path / "p").create  # nothing said
