"""SDK runs in the dashboard: sent through the real ingest endpoint in the engine's shapes,
then shown like any run: the runs table's SDK badge, a step count without a total, the
compare view's figures drawn from what the run recorded (it has no spec), crashed in colour."""

from __future__ import annotations

import json

from sqlalchemy import update

from server.db.models import Run
from server.spec import build_spec
from tests.support.synthetic import BASE_SPEC, SyntheticRun
from webapp.compare import update as ctl
from webapp.compare.layout import run_strip
from webapp.figures import FIGURES
from webapp.pages import runs
from webapp.runsets import build_views
from webapp.sdk_view import stand_in_spec
from webapp.style import SDK_COLOR, STATUS_COLORS

SPEC = {**BASE_SPEC, "steps": 40, "norm": "batch",
        "probes": {"landscape": {"every": 5}, "ics": {"every": 5, "layers": [2, 4]},
                   "activations": {"every": 10}}}


def sdk_run(api, cid: str, *, total: int | None = None, steps: int = 30) -> int:
    """An SDK run whose loop logged what the engine's probes log, through POST .../ingest."""
    r = api.http.post("/api/v1/sdk/runs", json={
        "client_id": cid, "name": "my-resnet", "config": {"norm": "batch", "lr": 0.1},
        "total": total})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    synthetic = SyntheticRun(build_spec(SPEC), seed=1)
    columns: dict[str, tuple[list, list]] = {}
    etas, dists = [], []
    for step in range(steps):
        for k, v in synthetic.scalars(step).items():
            columns.setdefault(k, ([], []))[0].append(step)
            columns[k][1].append(v)
        for rec in synthetic.eta_records(step):
            etas.append({"step": step, "probe": rec["probe"], "records": [
                {k: rec[k] for k in ("multiplier", "eta", "loss", "grad_dist")}]})
        for h in synthetic.histograms(step):
            stats = h["stats"]
            dists.append({**{k: h[k] for k in ("step", "layer", "scope", "unit", "lo", "hi",
                                               "counts", "underflow", "overflow",
                                               "nonfinite")},
                          "mean": stats["mean"], "var": stats["var"],
                          "quantiles": stats["quantiles"]})
    body = {"scalars": [{"key": k, "steps": s, "values": v} for k, (s, v) in columns.items()],
            "etas": etas, "distributions": dists,
            "heartbeat": {"step": steps - 1, "last_loss": synthetic.loss(steps - 1)}}
    r = api.http.post(f"/api/v1/runs/{rid}/ingest", content=json.dumps(body))
    assert r.status_code == 200, r.text
    return rid


def test_the_runs_table_shows_the_sdk_badge_and_a_step_without_total(api):
    planned = sdk_run(api, "a" * 32, total=60)
    open_ended = sdk_run(api, "b" * 32)
    rows = runs.table_rows(api.client.runs(), lambda i: f"/csv/{i}")
    by_id = {r["id"]: r for r in rows}
    assert (by_id[planned]["source"], by_id[planned]["_norm"]) == ("SDK", "batch")
    assert by_id[planned]["progress"] == "30/60 (50%)"  # steps 0..29 trained: 30 done
    assert by_id[open_ended]["progress"] == "30 steps"
    badges = [s for s in runs.row_styles(rows) if s["if"]["column_id"] == "source"]
    assert len(badges) == 2 and all(s["backgroundColor"] == SDK_COLOR for s in badges)


def test_compare_draws_an_sdk_run_from_what_it_recorded(api):
    rid = sdk_run(api, "c" * 32, total=40)
    r = ctl.update(api.client, ctl.FULL, {"runs": [rid]}, None, ctl.Controls())
    assert all(isinstance(f, dict) and f["data"] for f in r.figures.values()), [
        n for n, f in r.figures.items() if not (isinstance(f, dict) and f["data"])]
    [view] = r.state["views"]
    assert tuple(view["ics_layers"]) == (2, 4) and view["n_layers"] == 5
    assert view["norm"] == "batch" and view["lr"] == 0.1 and view["classify"]
    chips = run_strip(r.runs, build_views([{**r.runs[0], "spec": stand_in_spec(
        r.runs[0], ["train/acc", "ics/L2/l2"], 5)}]), lambda i: "")
    top = chips[0].children[0].children
    assert any(getattr(c, "children", None) == "SDK" for c in top)
    # A poll goes on from the state: the run's JSON (no spec) needs no stand-in there.
    polled = ctl.update(api.client, ctl.POLL, {"runs": [rid]}, r.state, ctl.Controls())
    assert set(polled.figures) == set(FIGURES)


def test_a_crashed_run_is_finished_and_coloured(api):
    rid = sdk_run(api, "d" * 32)
    with api.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == rid).values(status="crashed"))
    [row] = runs.table_rows(api.client.runs(status="crashed"), lambda i: "")
    assert row["_status"] == "crashed"
    status = [s for s in runs.row_styles([row]) if s["if"]["column_id"] == "status"]
    assert status[0]["color"] == STATUS_COLORS["crashed"]
    assert runs.targets("delete", [rid], [row]) == [rid]  # finished: it may be deleted
