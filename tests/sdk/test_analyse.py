"""landscope.analyse on a user's own network: closed forms on a quadratic, the model and every
random generator untouched, and the upload round trip against a real `landscope api`."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from torch import nn

import landscope
from landscope.sdk.analyse import analyse
from tests.conftest import create_pg_database, drop_pg_database
from tests.sdk.test_probes import ResidualDropNet, batches
from tests.support.processes import answers, stop_group
from tests.support.served import free_port

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(18500, 18600)  # this helper's own range
DATA_ROOT = Path("/tmp/probes")


def quadratic(n: int = 64, d: int = 5):
    """f(x) = W x: the loss mean ||W x - y||^2 is a quadratic in W with Hessian 2 X^T X / n."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, 1, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, x, y


def closed_form_slice(model, x, y, alphas):
    """L(w + a d) with d the gradient rescaled to ||w|| (job_prepare.gradient_set)."""
    w = model.weight.detach().reshape(-1)
    r = x @ w - y.reshape(-1)
    g = 2 * x.T @ r / len(x)
    d = g * (w.norm() / g.norm())
    return [float(((x @ (w + a * d) - y.reshape(-1)) ** 2).mean()) for a in alphas]


@pytest.mark.parametrize("loss", ["sum_squares", "callable"])
def test_gradient_slice_of_a_quadratic_is_its_closed_form(loss):
    model, x, y = quadratic()
    fn = "sum_squares" if loss == "sum_squares" else (lambda o, t: ((o - t) ** 2).sum(-1).mean())
    r = analyse(model, fn, (x, y), kind="slice", step=7, directions={"kind": "gradient"},
                x={"lo": -2, "hi": 2, "points": 9})
    assert r.step == 7 and r.x == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert r.loss.shape == (1, 9) and r.acc is None
    np.testing.assert_allclose(r.loss[0], closed_form_slice(model, x, y, r.x), rtol=1e-12)
    assert r.values["directions"]["kind"] == "gradient"
    assert r.values["meta"]["eval_samples"] == 64


def test_spectrum_of_a_quadratic_is_its_eigenvalues():
    model, x, y = quadratic()
    r = analyse(model, "sum_squares", (x, y), kind="spectrum", step=0,
                spectrum={"top_k": 3, "lanczos_steps": 5, "slq_steps": 5, "trace_probes": 400})
    h = (2 * x.T @ x / len(x)).numpy()
    eig = np.linalg.eigvalsh(h)[::-1]
    np.testing.assert_allclose(r.values["spectrum"]["top_eigenvalues"], eig[:3], rtol=1e-9)
    s = r.values["spectrum"]
    assert abs(s["trace"] - np.trace(h)) < 4 * s["trace_stderr"] + 1e-9
    assert r.loss is None and r.x is None


class ModuleDropNet(ResidualDropNet):
    """Dropout as modules only: the analysis switches every one off."""

    def __init__(self) -> None:
        super().__init__()
        self.drop2 = nn.Dropout(0.2)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        r = torch.relu(self.bn1(self.conv1(self.drop(h))))
        h = torch.relu(h + self.conv2(self.drop2(r)))
        return self.head(h.mean(dim=(2, 3)))


FIELDS = {"kind": "surface", "step": 5, "x": {"points": 5}, "y": {"points": 3},
          "directions": {"kind": "random", "seed": 4}}


@pytest.mark.parametrize("net", [ResidualDropNet, ModuleDropNet])
def test_a_users_network_is_left_exactly_as_it_was(net):
    """Dropout and BatchNorm: the model's weights, buffers, mode and every generator are
    untouched, and two analyses agree bit for bit whatever the global RNG's state (the
    functional dropout of ResidualDropNet draws from it, seeded by the analysis)."""
    torch.manual_seed(3)
    model = net().train()
    x, y = batches(1)[0]
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    a = analyse(model, nn.functional.cross_entropy, (x, y), **FIELDS)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training
    assert a.loss.shape == (3, 5) and a.acc.shape == (3, 5)
    torch.rand(7)  # another global RNG state: the same result
    again = analyse(model, nn.functional.cross_entropy, (x, y), **FIELDS)
    np.testing.assert_array_equal(a.loss, again.loss)
    b = analyse(model, lambda o, t: nn.functional.cross_entropy(o, t), (x, y), **FIELDS)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)  # fast path vs the user's loss
    np.testing.assert_array_equal(a.acc, b.acc)


def test_the_centre_is_the_batch_statistics_loss_without_dropout():
    torch.manual_seed(3)
    model = ModuleDropNet().train()
    x, y = batches(1)[0]
    a = analyse(model, nn.functional.cross_entropy, (x, y), **FIELDS)
    plain = copy.deepcopy(model)
    plain.drop.p = plain.drop2.p = 0.0
    with torch.no_grad():
        centre = float(nn.functional.cross_entropy(plain(x), y))
    assert a.loss[1, 2] == pytest.approx(centre, rel=1e-6)
    assert a.loss[1, 2] != a.loss[0, 0]


def test_bad_requests_say_what_is_wrong():
    model, x, y = quadratic()
    with pytest.raises(ValueError, match="x.points"):
        analyse(model, "sum_squares", (x, y), kind="slice", x={"points": 0})
    with pytest.raises(ValueError, match="kind"):
        analyse(model, "sum_squares", (x, y), kind="volume")
    with pytest.raises(TypeError, match="step="):
        analyse(model, "sum_squares", (x, y), steps=[1])
    with pytest.raises(TypeError, match="pair of tensors"):
        analyse(model, "sum_squares", x)
    with pytest.raises(ValueError, match="unknown loss"):
        analyse(model, "hinge", (x, y))
    with pytest.raises(ValueError, match="pca needs at least"):
        analyse(model, "sum_squares", (x, y), kind="trajectory")


def test_pca_trajectory_from_the_users_snapshots():
    model, x, y = quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    snaps = {}
    for step in range(6):
        snaps[step] = copy.deepcopy(model.state_dict())
        loss = ((model(x) - y) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    r = analyse(model, "sum_squares", (x, y), kind="trajectory", step=6, snapshots=snaps,
                x={"points": 5}, y={"points": 5})
    t = r.values["trajectory"]
    assert t["steps"] == [0, 1, 2, 3, 4, 5, 6]
    truth = [float(((x @ snaps.get(s, model.state_dict())["weight"].reshape(-1)
                     - y.reshape(-1)) ** 2).mean()) for s in t["steps"]]
    np.testing.assert_allclose(t["loss"], truth, rtol=1e-12)


# -- the upload, against a real server ------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`landscope api` on PostgreSQL, in a process and session of its own."""
    db = create_pg_database()
    data = DATA_ROOT / uuid.uuid4().hex[:10]
    data.mkdir(parents=True)
    port = free_port(PORTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env.update(LANDSCOPE_DATA_DIR=str(data), LANDSCOPE_DATABASE_URL=db, PYTHONUNBUFFERED="1")
    log = data / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "landscope.cli", "api", "--no-dashboard", "--host",
             "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not answers(url):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API did not answer in time"
            time.sleep(0.1)
        yield url
    finally:
        stop_group(proc)
        drop_pg_database(db)


def test_upload_round_trip(server):
    """An online run's analysis is stored complete: GET /analyses/{id} shows the very grid
    (NaN included), the values and status succeeded; uploading again stores nothing new."""
    model, x, y = quadratic()
    fields = {"kind": "surface", "step": 0, "directions": {"kind": "random", "seed": 1},
              "x": {"points": 3}, "y": {"points": 3}}
    plain = analyse(model, "sum_squares", (x, y), **fields)
    cut = float(np.median(plain.loss))

    def loss_fn(out, t):  # NaN above the median: a diverged point is data
        v = ((out - t) ** 2).sum(-1).mean()
        return torch.where(v > cut, torch.full_like(v, math.nan), v)

    with landscope.init(server=server, experiment="sdk-analyse", name="quad") as run:
        run.log(0, {"train/loss": 1.0})
        r = analyse(model, loss_fn, (x, y), run=run, **fields)
        assert r.analysis_id is not None and r.upload_error is None
        assert np.isnan(r.loss).sum() == 4
        assert r.upload(run) == r.analysis_id  # the same Idempotency-Key: stored once
        with httpx.Client(base_url=server + "/api/v1") as http:
            detail = http.get(f"/analyses/{r.analysis_id}").json()
            listed = http.get("/analyses", params={"run_id": run.id}).json()
            csv = http.get(f"/analyses/{r.analysis_id}/csv")
    assert detail["status"] == "succeeded" and detail["run_id"] == run.id
    assert detail["kind"] == "surface" and detail["spec"]["steps"] == [0]
    assert detail["progress"] == {"done": 9, "total": 9}
    step = detail["steps"]["0"]
    assert step["x"] == r.x and step["y"] == r.y
    got = np.array([[math.nan if v == "NaN" else v for v in row] for row in step["loss"]])
    np.testing.assert_array_equal(got, r.loss)
    np.testing.assert_allclose(got[~np.isnan(got)], plain.loss[~np.isnan(got)], rtol=1e-12)
    assert step["values"]["meta"]["bn_mode"] == "batch"
    assert step["values"]["directions"]["kind"] == "random"
    # the user's process's numerics, recorded in-process and listed apart by the API
    (env,) = step["environments"]
    assert env["torch_threads"] == torch.get_num_threads() and env["dtype"] == "float64"
    assert not any(k.startswith("environment:") for k in step["values"])
    assert [a["id"] for a in listed["items"]] == [r.analysis_id]
    assert csv.status_code == 200 and csv.text.count("\n") == 10
    # The dashboard's Landscape tab draws it like a worker's analysis.
    from tests.webapp.test_landscape_tab import graphs
    from webapp.client import ApiClient
    from webapp.landscape import callbacks as cb

    client = ApiClient(server + "/api/v1")
    exp = detail["experiment_id"]
    summaries = client.analyses(experiment_id=exp)
    children, *_ = cb.draw(client, exp, [detail["group_id"]], None, [], "png", None, summaries)
    drawn = [g.id["key"].split("|") for g in graphs(children)]
    assert drawn and {(k[0], k[-1]) for k in drawn} == {(str(detail["group_id"]), str(run.id))}


def test_an_unreachable_server_keeps_the_result(server):
    model, x, y = quadratic()
    with landscope.init(server=server, experiment="sdk-analyse", name="away") as run:
        pass
    r = analyse(model, "sum_squares", (x, y), kind="slice", step=0, x={"points": 3})

    class Away:
        id = run.id
        api = landscope.sdk.api.Api(f"http://127.0.0.1:{free_port(PORTS)}")

    with pytest.warns(RuntimeWarning, match="not uploaded"):
        assert r.upload(Away()) is None
    assert "cannot reach" in r.upload_error
    assert r.upload(run_like(server, run.id)) is not None


def run_like(server: str, run_id: int):
    class Online:
        id = run_id
        api = landscope.sdk.api.Api(server)

    return Online()


def test_an_offline_run_keeps_the_upload_for_sync(tmp_path):
    """Offline, the upload body waits under <dir>/analyses/ with its Idempotency-Key, for
    `landscope sync` to send (the same key: a second sync stores nothing twice)."""
    import json

    model, x, y = quadratic()
    with landscope.init(dir=tmp_path / "run", name="offline") as run:
        r = analyse(model, "sum_squares", (x, y), kind="slice", run=run, step=2,
                    x={"points": 3})
    assert r.analysis_id is None
    (path,) = (tmp_path / "run" / "analyses").glob("analysis-*.json")
    doc = json.loads(path.read_text())
    assert doc["idempotency_key"] == r.key
    assert doc["body"] == r.upload_body()
    assert doc["body"]["steps"]["2"]["idx"] == [0, 1, 2]
