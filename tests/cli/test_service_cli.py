"""The service commands: `landscope db upgrade`, `api`, `worker` and `up`, as real processes.

`api` and `db` must never import torch (checked in the process: sys.modules, or the shared
libraries a running server has mapped). `up` must serve the API, start a worker, and stop
both on Ctrl-C within seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from sqlalchemy import inspect, select

from server.db.models import WorkerRecord
from server.db.session import make_engine

ROOT = Path(__file__).resolve().parents[2]


def env_with(**landscope) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env.update({f"LANDSCOPE_{k.upper()}": str(v) for k, v in landscope.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


NO_TORCH_MAIN = (
    "import sys; from landscope.cli import main; rc = main({argv!r}); "
    "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
)


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_db_upgrade_creates_a_fresh_sqlite_database_without_torch(tmp_path):
    data_dir = tmp_path / "new" / "dir"
    done = python(NO_TORCH_MAIN.format(argv=["db", "upgrade"]), env_with(data_dir=data_dir))
    assert done.returncode == 0, done.stderr
    assert "schema is up to date" in done.stderr
    assert {"runs", "metric_series", "metric_points", "workers"} <= tables(
        f"sqlite:///{data_dir / 'landscope.db'}")
    again = python(NO_TORCH_MAIN.format(argv=["db", "upgrade"]), env_with(data_dir=data_dir))
    assert again.returncode == 0, again.stderr  # idempotent


def test_db_upgrade_on_postgresql_and_an_unreachable_server(pg_url, tmp_path):
    done = python(NO_TORCH_MAIN.format(argv=["db", "upgrade"]),
                  env_with(data_dir=tmp_path, database_url=pg_url))
    assert done.returncode == 0, done.stderr
    assert {"runs", "metric_points", "workers"} <= tables(pg_url)
    down = python(NO_TORCH_MAIN.format(argv=["db", "upgrade"]),
                  env_with(data_dir=tmp_path,
                           database_url="postgresql+psycopg://postgres@127.0.0.1:1/nope"))
    assert down.returncode == 1 and "cannot migrate the database" in down.stderr


COMPOSE = """
import sys
from fastapi.testclient import TestClient
from server.db.migrate import upgrade
from server.settings import get_settings
from landscope.cli import api_cmd

upgrade(get_settings().db_url)
app, mounted = api_cmd.build_app(get_settings(), "http://127.0.0.1:9")
assert "torch" not in sys.modules, "torch was imported"
print(mounted)
with TestClient(app) as c:
    print(c.get("/api/v1/health").json()["status"], c.get("/docs").status_code)
    page = c.get("/")
    print(page.status_code, page.headers["content-type"].split(";")[0])
    print(c.get("/_dash-layout").status_code)
"""


def test_api_and_dashboard_share_one_app_without_torch(tmp_path):
    # The API's routes are matched before the dashboard mounted at /; nothing imports torch.
    done = python(COMPOSE, env_with(data_dir=tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["True", "ok 200", "200 text/html", "200"]


@pytest.mark.parametrize(
    "argv,needle",
    [(["--device", "tpu"], "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
     (["--device", "cpu", "--queues", " , "], "--queues: expected comma-separated")],
)
def test_worker_rejects_bad_options_with_exit_2(tmp_path, argv, needle):
    done = python(NO_TORCH_MAIN.format(argv=["worker", *argv]), env_with(data_dir=tmp_path))
    assert done.returncode == 2 and needle in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_worker_on_a_missing_gpu_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "landscope.cli", "worker", "--device", "cuda:0"],
                          cwd=ROOT, env=env_with(data_dir=tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr


# -- serving ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the API never answered /api/v1/health")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


class Served:
    """A `landscope up|api` process on a free port; it and its children die at teardown."""

    def __init__(self, tmp_path: Path, command: str, **settings) -> None:
        self.port = free_port()
        self.log = tmp_path / f"{command}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "landscope.cli", command, "--port", str(self.port)],
            cwd=ROOT, env=env_with(data_dir=tmp_path, heartbeat_seconds=0.5, **settings),
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pids = [self.proc.pid]

    def kill(self) -> None:
        self.pids += [c for p in list(self.pids) if alive(p) for c in children(p)]
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        print(self.log.read_text()[-4000:])


@pytest.fixture
def served(tmp_path):
    made: list[Served] = []

    def start(command: str, **settings) -> Served:
        made.append(Served(tmp_path, command, **settings))
        return made[-1]

    yield start
    for s in made:
        s.kill()


def worker_row(tmp_path: Path) -> WorkerRecord | None:
    engine = make_engine(f"sqlite:///{tmp_path / 'landscope.db'}")
    try:
        with engine.connect() as c:
            return c.execute(select(WorkerRecord)).first()
    finally:
        engine.dispose()


@pytest.mark.slow
def test_up_serves_the_api_with_a_worker_and_ctrl_c_stops_both(served, tmp_path):
    up = served("up")
    health = wait_healthy(up.port, up.proc)
    assert health["status"] == "ok"
    deadline = time.monotonic() + 60
    while (row := worker_row(tmp_path)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert row is not None and row.stopped_at is None, "the worker never registered"
    up.pids.append(row.pid)
    assert row.pid in children(up.proc.pid) and alive(row.pid)
    log = up.log.read_text()
    base = f"http://127.0.0.1:{up.port}"
    assert f"API docs     {base}/docs" in log and f"dashboard    {base}/" in log
    assert httpx.get(base + "/", timeout=10).status_code == 200  # the dashboard, same port

    started = time.monotonic()
    os.kill(up.proc.pid, signal.SIGINT)
    assert up.proc.wait(15) == 0
    assert time.monotonic() - started < 10
    assert not alive(row.pid)
    assert worker_row(tmp_path).stopped_at is not None  # a warm, clean worker shutdown


@pytest.mark.slow
def test_api_serves_without_torch_and_stops_on_sigterm(served, tmp_path):
    api = served("api")
    wait_healthy(api.port, api.proc)
    maps = Path(f"/proc/{api.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps
    assert worker_row(tmp_path) is None  # `api` starts no worker
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(10) == 0
    # No line per request by default: an open dashboard page polls every second.
    assert "GET /api/v1/health" not in api.log.read_text()


@pytest.mark.slow
def test_access_log_writes_a_line_per_request(served, tmp_path):
    api = served("api", access_log="true")
    wait_healthy(api.port, api.proc)
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(10) == 0
    assert '"GET /api/v1/health HTTP/1.1" 200' in api.log.read_text()


def test_the_port_accepts_connections_as_soon_as_it_is_announced():
    """bind() listens at once: a browser opened on the printed URL waits while the server
    starts (migrations, the first reconciler pass) instead of being refused."""
    import socket

    from landscope.cli.api_cmd import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on its connections
        with socket.create_connection(sock.getsockname()[:2], timeout=2):
            pass  # queued in the backlog: nobody has called accept() yet
    finally:
        sock.close()
