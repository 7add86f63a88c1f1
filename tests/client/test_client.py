"""landscope.Client against a real uvicorn server over PostgreSQL and Redis: runs, metrics
(paged raw, downsampled, non-finite kept), probe records, histograms, analyses as numpy grids,
errors with field paths, tokens, and pandas as an optional extra."""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine

from landscope.client import Client, LandscopeError, paging
from server.db.migrate import upgrade
from server.db.session import make_engine
from server.settings import Settings
from tests.client import arrange
from tests.conftest import REDIS_URL, RedisSpace
from tests.support.live_api import live_api


@dataclass
class World:
    url: str
    engine: Engine
    sweep: tuple[int, int]  # two experiments named "sweep"
    runs: dict[str, int]
    analysis: int


@pytest.fixture(scope="module")
def world(pg_url: str, tmp_path_factory) -> Iterator[World]:
    upgrade(pg_url)
    space = RedisSpace(REDIS_URL, f"landscope-test-client-{uuid.uuid4().hex[:12]}:")
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("client"),
                        database_url=pg_url, **space.settings())
    engine = make_engine(pg_url)
    try:
        with live_api(settings, dashboard=False) as api:
            old, new = arrange.experiment(engine, "sweep"), arrange.experiment(engine, "sweep")
            other = arrange.experiment(engine, "other")
            runs = {"dense": arrange.run(engine, experiment_id=new, name="dense-bn", norm="batch"),
                    "plain": arrange.run(engine, experiment_id=new, name="plain", norm="none",
                                         status="failed"),
                    "old": arrange.run(engine, experiment_id=old, name="old"),
                    "sparse": arrange.run(engine, experiment_id=other, name="sparse")}
            arrange.measurements(engine, runs["dense"])
            arrange.measurements(engine, runs["plain"], steps=50)
            arrange.sparse(engine, runs["sparse"])
            aid = arrange.surface(engine, api.url, runs["dense"])
            yield World(api.url, engine, (old, new), runs, aid)
    finally:
        engine.dispose()
        space.clear()


@pytest.fixture
def client(world: World) -> Iterator[Client]:
    with Client(world.url) as c:
        yield c


@pytest.fixture
def counted(client: Client, monkeypatch) -> list[dict]:
    """The params of every GET the client makes."""
    calls: list[dict] = []
    get = client._http.get

    def spy(path, params=None):
        calls.append({"path": path, **(params or {})})
        return get(path, params)

    monkeypatch.setattr(client._http, "get", spy)
    return calls


# -- runs and experiments ---------------------------------------------------------------------

def test_runs_by_experiment_name_cover_every_experiment_of_that_name(world, client):
    df = client.runs(experiment="sweep")
    assert sorted(df.id) == sorted([world.runs["dense"], world.runs["plain"], world.runs["old"]])
    assert list(df.columns[:3]) == ["id", "name", "experiment_id"]
    dense = df.set_index("id").loc[world.runs["dense"]]
    assert dense["spec.norm"] == "batch" and dense["spec.lr"] == 0.25
    assert "spec.probes.landscape.every" in df.columns  # nested sections spread out
    assert str(df["created_at"].dtype).startswith("datetime64")
    assert sorted(client.runs(experiment=world.sweep[1]).id) == sorted(
        [world.runs["dense"], world.runs["plain"]])
    assert list(client.runs(experiment="sweep", status="failed").id) == [world.runs["plain"]]
    with pytest.raises(LandscopeError) as e:
        client.runs(experiment="no such sweep")
    assert e.value.status == 404 and "no such sweep" in str(e.value)


def test_list_pages_are_read_whole_and_once(world, client, counted, monkeypatch):
    monkeypatch.setattr(paging, "LIST_PAGE", 1)
    runs = client.runs(raw=True)
    ids = [r["id"] for r in runs]
    assert len(set(ids)) == len(ids) and set(world.runs.values()) <= set(ids)
    assert len([c for c in counted if c["path"] == "/runs"]) == len(ids)  # one run a page
    assert isinstance(runs[0], dict) and "spec" in runs[0]


def test_experiments_count_their_runs(world, client):
    df = client.experiments().set_index("id")
    assert df.loc[world.sweep[1], "runs"] == 2
    assert df.loc[world.sweep[1], "runs_failed"] == 1
    assert df.loc[world.sweep[1], "runs_succeeded"] == 1
    assert client.experiment(world.sweep[0])["runs"][0]["id"] == world.runs["old"]


def test_sdk_runs_spread_their_config_and_keep_sent_nan(world, client):
    """A run made through the server's SDK routes (what landscope.init does), not the SDK."""
    api = f"{world.url}/api/v1"
    made = httpx.post(f"{api}/sdk/runs", json={
        "client_id": uuid.uuid4().hex, "experiment": "sdk-sweep", "name": "own",
        "config": {"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9}}, "total": 3})
    assert made.status_code == 201, made.text
    rid = made.json()["id"]
    httpx.post(f"{api}/runs/{rid}/ingest", json={"scalars": [
        {"key": "train/loss", "steps": [0, 1, 2], "values": [1.0, "NaN", "-Infinity"]}]}
    ).raise_for_status()
    (row,) = client.runs(experiment="sdk-sweep").to_dict("records")
    assert row["source"] == "sdk" and row["status"] == "running"
    assert row["config.lr"] == 0.1 and row["config.opt.momentum"] == 0.9
    assert client.runs(experiment="sdk-sweep", flat=False).iloc[0]["config"]["opt"] == {
        "name": "sgd", "momentum": 0.9}
    values = client.metrics(rid).value.tolist()
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == -math.inf


# -- metrics ----------------------------------------------------------------------------------

def test_raw_metrics_are_every_point_with_non_finite_values_kept(world, client, counted,
                                                                monkeypatch):
    monkeypatch.setattr(paging, "PAGE_STEPS", 256)  # 3000 steps: the server downsamples
    df = client.metrics(world.runs["dense"], keys="train/loss")
    assert list(df.columns) == ["run_id", "key", "step", "value"]
    assert list(df.step) == list(range(3000))  # in order, none twice
    for step, v in zip(df.step, df.value, strict=True):
        want = arrange.loss(step)
        assert (math.isnan(v) and math.isnan(want)) or v == want
    assert df.value.iloc[8] == math.inf and df.value.iloc[9] == -math.inf
    assert len(counted) > 10  # it did have to page
    assert all(c["max_points"] == 256 for c in counted)


def test_a_narrow_range_is_one_request(world, client, counted):
    df = client.metrics(world.runs["dense"], keys=["train/loss", "test/acc"], since_step=100,
                        until_step=300)
    assert len(counted) == 1
    assert sorted(df.loc[df.key == "test/acc", "step"]) == [100, 200, 300]
    assert len(df[df.key == "train/loss"]) == 201


def test_sparse_wide_series_page_in_few_requests(world, client, counted, monkeypatch):
    monkeypatch.setattr(paging, "PAGE_STEPS", 1000)  # 10 million steps wide, 3 points
    df = client.metrics(world.runs["sparse"])
    assert list(df.step) == [0, 5_000_000, 10_000_000]
    assert list(df.value) == [0.0, 5e6, 1e7]
    assert len(counted) < 40, len(counted)  # narrowed to the buckets, not 10,000 windows


def test_keys_that_look_like_globs_or_hold_commas_are_read_exactly(world, client,
                                                                  monkeypatch):
    monkeypatch.setattr(paging, "PAGE_STEPS", 4)  # both are paged, by key name
    df = client.metrics(world.runs["dense"], keys=["weird[a]*?", "a,b"], raw=True)
    weird = [r["value"] for r in df if r["key"] == "weird[a]*?"]
    assert weird == [float(s) for s in range(10)]
    assert [r["value"] for r in df if r["key"] == "a,b"] == [-float(s) for s in range(5)]


def test_downsampled_metrics_carry_the_envelope(world, client):
    df = client.metrics(world.runs["dense"], keys="train/*,test/acc", max_points=100)
    assert {"min", "max", "count", "nonfinite", "downsampled"} <= set(df.columns)
    loss = df[df.key == "train/loss"]
    assert loss.downsampled.all() and 50 <= len(loss) <= 100
    assert loss["count"].sum() == 3000 and loss["nonfinite"].sum() == 3
    assert (loss["min"] <= loss["value"]).all() and (loss["value"] <= loss["max"]).all()
    acc = df[df.key == "test/acc"]  # 30 points over 2901 steps: buckets too
    assert acc["count"].sum() == 30


def test_many_runs_in_one_frame(world, client):
    ids = client.runs(experiment=world.sweep[1]).id  # a DataFrame column will do
    df = client.metrics(ids, keys="train/loss", until_step=49)
    assert df.groupby("run_id").size().to_dict() == {world.runs["dense"]: 50,
                                                      world.runs["plain"]: 50}
    wide = df.pivot(index="step", columns="run_id", values="value")
    assert wide.shape == (50, 2) and np.isinf(wide.loc[8]).all()


# -- probe records and histograms -------------------------------------------------------------

def test_probe_records_page_across_steps(world, client, monkeypatch):
    monkeypatch.setattr(paging, "PROBE_PAGE", 6)  # 4 records a step: pages end mid-step
    df = client.probe_records(world.runs["dense"])
    assert len(df) == 40 and not df.duplicated(["step", "multiplier"]).any()
    assert list(df.columns) == ["run_id", "probe", "step", "multiplier", "eta", "loss",
                                "grad_dist"]
    bad = df[df.loss.isna()]
    assert list(zip(bad.step, bad.multiplier, strict=True)) == [(30, 4.0)]
    thinned = client.probe_records(world.runs["dense"], every=20)
    assert sorted(set(thinned.step)) == [0, 20, 30, 40, 60, 80]  # 30: its NaN is kept


def test_distributions_as_rows_with_stats_columns(world, client, monkeypatch):
    monkeypatch.setattr(paging, "HIST_PAGE", 3)
    df = client.distributions(world.runs["dense"])
    assert len(df) == 40
    one = client.distributions(world.runs["dense"], layer=2, scope="unit", raw=True)
    assert [r["step"] for r in one] == list(range(0, 100, 10))
    at20 = df[(df.step == 20) & (df.layer == 1) & (df.scope == "layer")].iloc[0]
    assert at20["var"] == math.inf and at20["nonfinite"] == 1 and math.isnan(at20["q99"])
    assert list(at20["counts"]) == [20, 1, 2, 1] and at20["q50"] == pytest.approx(2.0)


# -- analyses ---------------------------------------------------------------------------------

def test_an_analysis_as_grids_and_a_tidy_frame(world, client):
    listed = client.analyses(run_id=world.runs["dense"])
    assert list(listed.id) == [world.analysis]
    assert listed.iloc[0]["kind"] == "surface" and listed.iloc[0]["steps"] == [40]
    a = client.analysis(world.analysis)
    s = a.at()  # the last (here only) step
    assert s.step == 40 and a.status == "succeeded"
    assert np.array_equal(s.x, [-1.0, 0.0, 1.0]) and np.array_equal(s.y, [0.0, 1.0])
    assert s.loss.shape == (2, 3)
    assert s.loss[0, 0] == 1.5 and np.isnan(s.loss[0, 1]) and s.loss[0, 2] == math.inf
    assert s.measured.tolist() == [[True, True, True], [True, False, True]]
    assert np.isnan(s.loss[1, 1])  # missing: NaN in the grid, False in `measured`
    assert s.acc[1, 2] == 0.75 and s.test_loss is None
    assert s.values["spectrum"]["top_eigenvalues"] == [3.5, 1.0]
    assert math.isnan(s.values["spectrum"]["trace"])
    assert s.environments == [{"torch_threads": 2, "deterministic": True}]
    assert list(s.values) == ["spectrum"]  # the record is not among the results
    df = a.frame()
    assert len(df) == 5 and (df.step == 40).all()
    row = df[(df.ix == 2) & (df.iy == 1)].iloc[0]
    assert (row.x, row.y, row.loss, row.acc) == (1.0, 1.0, 3.0, 0.75)
    assert math.isnan(df[(df.ix == 1) & (df.iy == 0)].iloc[0].loss)
    with pytest.raises(LookupError, match=r"steps \[40\]"):
        a.at(10)


def test_wait_returns_a_finished_run_and_times_out_on_a_live_one(world, client):
    assert client.wait(world.runs["plain"])["status"] == "failed"
    assert client.wait_analysis(world.analysis).status == "succeeded"
    live = arrange.run(world.engine, name="live", status="running")
    with pytest.raises(TimeoutError, match=f"run {live} still running"):
        client.wait(live, timeout=0, poll=0)


# -- seed groups ------------------------------------------------------------------------------

def test_groups_and_their_grouped_metrics_as_frames(world, client):
    dense, plain, old = world.runs["dense"], world.runs["plain"], world.runs["old"]
    df = client.groups([dense, plain, old])
    assert list(df.columns) == ["group", "key", "label", "run_ids", "seeds"]
    assert list(df.run_ids) == [[dense], [plain, old]]  # plain and old differ in nothing
    assert list(df.label) == ["batch", "none"] and list(df.seeds) == [[0], [0, 0]]
    by_name = client.groups(experiment="sweep")  # both experiments of that name
    assert sorted(sorted(ids) for ids in by_name.run_ids) == [[dense], sorted([plain, old])]
    assert [g["run_ids"] for g in client.groups(experiment=world.sweep[1], raw=True)] in (
        [[dense], [plain]], [[plain], [dense]])

    m = client.grouped_metrics(df, "train/loss", max_points=100)
    assert list(m.columns) == ["group", "key", "step", "center", "lo", "hi", "n", "nonfinite"]
    assert set(m.key) == {"train/loss"} and set(m.group) == {0, 1}
    one = m[m.group == 0]  # dense alone: the band is its bucket mean, 3000 steps in <= 100
    assert 50 <= len(one) <= 100 and (one.center == one.lo).all() and (one.n == 1).all()
    # plain's 50 steps (old has none) fall in the first buckets of the request's grid:
    # width 30 over [0, 2999]; steps 7, 8 and 9 are NaN, +inf and -inf
    two = m[m.group == 1]
    finite = [arrange.loss(s) for s in range(30) if s not in arrange.BAD]
    assert list(two.step) == [14.5, 39.5] and list(two.n) == [1, 1]
    assert two.center.iloc[0] == pytest.approx(np.mean(finite))
    assert list(two.nonfinite) == [0, 0]

    raw = client.grouped_metrics([[plain]], ["train/loss"], since_step=7, until_step=9,
                                 center="mean", band="std", raw=True)
    assert [(r["step"], r["n"], r["nonfinite"]) for r in raw] == [(7, 0, 1), (8, 0, 1),
                                                                  (9, 0, 1)]
    assert all(math.isnan(r["center"]) and math.isnan(r["lo"]) for r in raw)
    # a key holding a comma is asked for as every key and filtered here, so the grid is
    # every key's: steps 0..4 of "a,b" fall in one bucket of 30 steps
    weird = client.grouped_metrics([[dense]], ["a,b"], raw=True)
    assert [(r["key"], r["step"], r["center"]) for r in weird] == [("a,b", 2.0, -2.0)]
    with pytest.raises(LandscopeError) as e:
        client.grouped_metrics([[dense, 999_999]])
    assert e.value.status == 404
    with pytest.raises(ValueError):
        client.groups()


# -- errors, tokens, pandas -------------------------------------------------------------------

def test_errors_carry_status_and_field_path(world, client):
    with pytest.raises(LandscopeError) as e:
        client.run(999_999)
    assert e.value.status == 404 and "999999" in str(e.value)
    with pytest.raises(LandscopeError) as e:
        client.metrics(world.runs["dense"], max_points=0)
    assert e.value.status == 422
    assert e.value.field_errors[0][0] == ("query", "max_points")
    assert "query.max_points" in str(e.value)


def test_an_unreachable_server_is_a_landscope_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retries=1) as c, \
            pytest.raises(LandscopeError) as e:
        c.runs()
    assert e.value.status is None and "cannot be reached" in str(e.value)


def test_reads_are_retried_on_503_as_retry_after_says():
    answers = iter([httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0"}),
                    httpx.Response(200, json={"id": 3, "status": "running"})])
    http = httpx.Client(transport=httpx.MockTransport(lambda request: next(answers)))
    assert Client("http://x", http=http).run(3)["status"] == "running"


def test_a_protected_server_needs_the_token(world, tmp_path: Path):
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=str(world.engine.url
                        .render_as_string(hide_password=False)),
                        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
                        api_token="s3cret", protect_reads=True)
    with live_api(settings, dashboard=False) as api:
        with pytest.raises(LandscopeError) as e:
            Client(api.url).runs()
        assert e.value.status == 401
        assert set(world.runs.values()) <= set(Client(api.url, token="s3cret").runs().id)
        from server.settings import get_settings

        with pytest.MonkeyPatch.context() as mp:  # LANDSCOPE_API_TOKEN, as the SDK reads it
            mp.setenv("LANDSCOPE_API_TOKEN", "s3cret")
            get_settings.cache_clear()
            try:
                assert len(Client(api.url).runs(raw=True)) >= len(world.runs)
            finally:
                get_settings.cache_clear()


def test_without_pandas_frames_name_the_extra_and_records_still_work(world, client,
                                                                     monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    with pytest.raises(ImportError, match=r"landscope\[notebook\]"):
        client.runs()
    records = client.metrics(world.runs["plain"], keys="train/loss", raw=True)
    assert len(records) == 50 and records[8]["value"] == math.inf


def test_importing_the_client_loads_neither_torch_nor_pandas():
    import subprocess

    code = ("import sys, landscope.client; "
            "print('torch' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
