"""`landscope reproduce` against a real `landscope up` (embedded SQLite and broker): it submits
the catalogue's experiments through the API, waits for a worker to finish them and reports
verdicts read back from the database. Speaks HTTP only: no torch in its process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server import reproduction as R

ROOT = Path(__file__).resolve().parents[2]


def env_for(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env.update(LANDSCOPE_DATA_DIR=str(data_dir), LANDSCOPE_HEARTBEAT_SECONDS="0.5",
               PYTHONUNBUFFERED="1")
    return env


def landscope(*argv: str, env: dict[str, str], timeout: float = 120
              ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "landscope.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_an_unreachable_server_names_landscope_up_without_importing_torch(tmp_path):
    code = ("import sys; from landscope.cli import main; "
            "rc = main(['reproduce', '--quick', '--api', 'http://127.0.0.1:9']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "cannot reach the Landscope server at http://127.0.0.1:9" in done.stderr
    assert "`landscope up`" in done.stderr


@pytest.mark.parametrize("argv,needle", [
    (["--only", "dln-ics,nope"], "--only: unknown experiment(s) nope"),
    (["--quick", "--scale", "paper"], "--quick: contradicts --scale paper"),
    (["--api", "127.0.0.1:8000"], "--server: expected an http:// or https:// URL"),
    (["--server", "127.0.0.1:8000"], "--server: expected an http:// or https:// URL"),
    (["--only", "mlp-landscape", "--scale", "paper"], "unknown experiment(s) mlp-landscape"),
])
def test_bad_input_exits_2(tmp_path, argv, needle):
    done = landscope("reproduce", *argv, env=env_for(tmp_path))
    assert done.returncode == 2 and needle in done.stderr, done.stderr


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


@pytest.fixture
def server(tmp_path):
    """`landscope up` on a free port; stopped (SIGINT, then SIGKILL) at teardown."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "landscope.cli", "up", "--port", str(port),
                             "--no-dashboard"], cwd=ROOT, env=env_for(tmp_path),
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(base + "/api/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.3)
    yield base, env_for(tmp_path)
    family = [proc.pid, *_children(proc.pid)]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        for pid in family + [c for p in family for c in _children(p)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
    print(log.read_text()[-3000:])


@pytest.mark.slow
def test_reproduce_quick_submits_every_experiment_through_the_service(server):
    base, env = server
    # Seed 0 alone: this checks the plumbing (every experiment, named, its runs); that the
    # server makes each plan's seeds is test_reproduction.py's, and judging them is below.
    done = landscope("reproduce", "--quick", "--no-wait", "--set", "seed=0", "--api", base,
                     env=env)
    assert done.returncode == 0, done.stderr
    expected = R.experiments_for("quick")
    assert f"submitted {len(expected)} experiment(s)" in done.stderr
    with httpx.Client(base_url=base + "/api/v1", timeout=30) as api:
        items = api.get("/experiments", params={"limit": 100}).json()["items"]
        by_name = {e["name"]: e for e in items}
        assert len(items) == len(expected)
        assert set(by_name) == {e.name("quick") for e in expected}
        for exp in expected:
            detail = api.get(f"/experiments/{by_name[exp.name('quick')]['id']}").json()
            got = sorted((r["spec"]["norm"], r["spec"]["lr"], r["spec"]["steps"])
                         for r in detail["runs"])
            assert got == sorted((s.norm, s.lr, s.steps)
                                 for s in exp.plans["quick"].specs(seed=0))
            assert {r["spec"]["seed"] for r in detail["runs"]} == {0}
            for run in detail["runs"]:  # leave the worker nothing to do: a quick teardown
                if run["status"] in ("queued", "running"):
                    api.post(f"/runs/{run['id']}/cancel")
    # Reading back finds every experiment by name (runs cancelled: nothing to judge yet).
    done = landscope("reproduce", "--quick", "--report", "--api", base, env=env)
    assert done.returncode == 0, done.stderr
    headings = [ln for ln in done.stdout.splitlines() if ln.startswith("Fig ")]
    assert len(headings) == len(R.figures_for("quick"))
    assert "no experiment named" not in done.stderr

    # The cheapest experiment in its three seeds, trained by the server's worker at 20 steps
    # (the verdicts say nothing about the paper then): waits, then reports each claim of
    # Fig 3b as "holds in k of 3 seeds" with the median (range) of its numbers, as the
    # Markdown table does too.
    md = Path(env["LANDSCOPE_DATA_DIR"]) / "report.md"
    done = landscope("reproduce", "--quick", "--only", "dln-ics", "--set", "steps=20",
                     "--api", base, "--out", str(md), "--poll", "0.5", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    fig = R.FIGURE_BY_ID["3b"]
    lines = done.stdout.splitlines()
    assert "  seeds: 0, 1, 2, each claim judged per seed; numbers are the median (range) " \
        "over seeds" in lines
    table = md.read_text()
    for claim in fig.claims:
        at = next(i for i, ln in enumerate(lines) if ln.endswith(f"] {claim.text}"))
        mark = lines[at].strip()[1:-len(claim.text) - 2]
        ours = lines[at + 2].strip().removeprefix("ours:").strip()
        k = int(ours.split()[2])  # "holds in k of 3 seeds..."
        assert ours.startswith(f"holds in {k} of 3 seeds"), ours
        assert "median (range) over seeds: " in ours
        assert mark == (f"holds in {k} of 3 seeds" if k else "fails in 3 of 3 seeds"), mark
        row = next(ln for ln in table.splitlines() if f"| {claim.text} |" in ln)
        assert row.endswith(f"| {mark} |") and ours in row

@pytest.mark.slow
def test_reproduce_waits_for_the_analyses_a_plan_names_and_reads_them(server, monkeypatch,
                                                                        capsys, tmp_path):
    """A test-only experiment (a tiny MLP, one spectrum analysis) through the service: the
    command returns only once the worker has analysed the run, and the run read back over the
    API carries the spectrum, whose top eigenvalue is the dense Hessian's."""
    from landscope.cli import main, reproduce_cmd
    from server.analysis_spec import AnalysisSpec
    from server.spec import RunSpec
    from tests.reproduction.test_reproduce_analyses import SPECTRUM, _experiment, _hessian_top

    base, _ = server
    exp = _experiment("t-cli-spectrum", (SPECTRUM,))
    monkeypatch.setitem(R.EXPERIMENTS, exp.key, exp)
    assert main(["reproduce", "--scale", "quick", "--only", exp.key, "--api", base,
                 "--poll", "0.5"]) == 0
    assert "runs and analyses finished" in capsys.readouterr().err
    api = reproduce_cmd.Api(base, None)
    try:
        detail = reproduce_cmd.newest(api, exp.name("quick"))
        # Waited for: nothing left queued or running once the command returned.
        listed = reproduce_cmd.list_analyses(api, detail["id"])
        assert [a["status"] for a in listed] == ["succeeded"]
        (run,) = reproduce_cmd.fetch_runs(api, exp, detail)
    finally:
        api.close()
    (data,) = run.analyses
    assert data.kind == "spectrum" and data.bn_mode == "batch"
    step, got = run.analysis("spectrum")
    assert step == 30 and got["loss"] is None
    top = got["values"]["spectrum"]["top_eigenvalues"][0]
    want = _hessian_top(RunSpec.model_validate(run.spec), AnalysisSpec.model_validate(SPECTRUM),
                        tmp_path)
    assert top == pytest.approx(want, rel=1e-3)
