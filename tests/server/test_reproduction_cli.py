"""`landscope reproduce`'s API path without Celery: submit through the real API (TestClient
on SQLite), train the runs with the worker's own runner (real SQL sink), then read them back
and judge them exactly as `landscope reproduce --report` does."""

from __future__ import annotations

import pytest

from landscope.cli import reproduce_cmd
from server import reproduction as R
from server.db.session import make_engine
from server.spec import RunSpec
from worker.runner import execute_run

STEPS = 30  # every probe of the quick DLN plan fires at steps 0, 10, 20


@pytest.fixture
def one_thread():
    """10x10 layers: on a shared CPU a second torch thread only waits for the first."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def api(sqlite_client):
    return reproduce_cmd.Api("http://testserver", None, http=sqlite_client)


def test_overrides_reach_every_run_and_fix_varied_keys(api):
    exps = [R.EXPERIMENTS["dln-lp"], R.EXPERIMENTS["vgg-lr"]]
    made = reproduce_cmd.submit(api, "quick", exps, {"steps": 5, "lr": 0.01})
    for exp, detail in zip(exps, made, strict=True):
        got = [RunSpec.model_validate(r["spec"]) for r in detail["runs"]]
        assert got == exp.plans["quick"].specs(steps=5, lr=0.01)
        assert {s.lr for s in got} == {0.01} and detail["name"] == exp.name("quick")
    # vgg-lr varied lr; the override fixed it: its two norms, in each of the plan's seeds.
    assert len(made[1]["runs"]) == 2 * len(R.EXPERIMENTS["vgg-lr"].plans["quick"].seeds) == 6


def test_submitted_runs_trained_by_the_worker_are_judged_from_the_database(
        api, sqlite_backend, tmp_path, capsys, one_thread):
    exp = R.EXPERIMENTS["dln-landscape"]
    [detail] = reproduce_cmd.submit(api, "quick", [exp], {"steps": STEPS})
    engine = make_engine(sqlite_backend.db_url)
    try:
        for run in detail["runs"]:
            assert execute_run(run["id"], settings=sqlite_backend, engine=engine,
                               worker="test@host", device="cpu") == "succeeded"
    finally:
        engine.dispose()
    reproduce_cmd.wait(api, [detail], poll=0.01)  # every run finished: returns at once
    assert "runs finished" in capsys.readouterr().err
    out = tmp_path / "report.md"
    assert reproduce_cmd.report(api, "quick", [exp], out) == 0
    text = capsys.readouterr().out
    for fig in ("9", "10", "11"):
        block = text.split(f"Fig {fig} (DLN)", 1)[1].split("\n\n", 1)[0]
        assert "NO DATA" not in block.splitlines()[0] and "no data" not in block, block
    assert "Fig 3b" not in text  # only the experiments asked for
    assert out.read_text().count("**Fig ") == 3

    # The same runs read back over the API equal what the checks would see in-process.
    runs = reproduce_cmd.fetch_runs(api, exp, api.get(f"/experiments/{detail['id']}"))
    none = next(r for r in runs if r.spec["norm"] == "none")
    assert none.series["landscape/beta"][0] == [0, 10, 20]
    assert len(none.etas) == 3 * 5  # three probed steps, five step sizes
    assert len(none.series["train/loss"][1]) == STEPS


def test_report_without_experiments_says_so(api, capsys):
    assert reproduce_cmd.report(api, "quick", [R.EXPERIMENTS["dln-ics"]], None) == 0
    captured = capsys.readouterr()
    assert "no experiment named 'repro: Fig 3b ICS (DLN) [quick]'" in captured.err
    assert "Fig 3b (DLN) ICS with and without BN: NO DATA" in captured.out


def test_a_failed_analysis_ends_the_wait_and_leaves_its_claims_without_data(
        api, sqlite_backend, monkeypatch, capsys, one_thread):
    """The worker saves an experiment's analysis `failed` when it no longer fits the server's
    limits as the run succeeds (here: the worker's Hessian-vector product limit lowered after
    the experiment was posted). The wait counts it as finished and says so; the run is read
    back without it, so a claim reading it finds no data."""
    from tests.reproduction.test_reproduce_analyses import SPECTRUM, _experiment

    exp = _experiment("t-failing-spectrum", (SPECTRUM,))
    monkeypatch.setitem(R.EXPERIMENTS, exp.key, exp)
    [detail] = reproduce_cmd.submit(api, "quick", [exp], {})
    assert len(detail["analyses"]) == 1
    lowered = sqlite_backend.model_copy(update={"max_lanczos_steps": 1})
    engine = make_engine(sqlite_backend.db_url)
    try:
        (run,) = detail["runs"]
        assert execute_run(run["id"], settings=lowered, engine=engine, worker="test@host",
                           device="cpu") == "succeeded"
    finally:
        engine.dispose()
    assert reproduce_cmd.wait(api, [detail], poll=0.01) == (0, 1)
    assert "runs and analyses finished" in capsys.readouterr().err
    (listed,) = reproduce_cmd.list_analyses(api, detail["id"])
    assert listed["status"] == "failed" and "LANDSCOPE_MAX_LANCZOS_STEPS" in listed["error"]
    (data,) = reproduce_cmd.fetch_runs(api, exp, api.get(f"/experiments/{detail['id']}"))
    assert data.status == "succeeded" and data.series["train/loss"][0]
    assert data.analyses == []
    with pytest.raises(R.MissingData, match="no spectrum analysis"):
        data.analysis("spectrum")
