"""`landscope up` / `landscope api` as a user starts them: a process (and session) of its own on
a free port of the test's range, a temporary LANDSCOPE_DATA_DIR (the embedded default: SQLite
and the embedded broker), stopped with its worker afterwards. For tests that run examples and
documentation against a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import answers, stop_group

ROOT = Path(__file__).resolve().parents[2]
# Ports this project's example and documentation tests use (LANDSCOPE_TEST_PORTS=lo-hi).
_lo, _hi = os.environ.get("LANDSCOPE_TEST_PORTS", "18700-18799").split("-")
PORTS = range(int(_lo), int(_hi) + 1)


def free_port(ports: range = PORTS) -> int:
    """The first port of `ports` nothing listens on (SO_REUSEADDR, as uvicorn binds: a port
    a stopped server left in TIME_WAIT counts as free, so a test can restart a server on it)."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def clean_env(**landscope: str) -> dict[str, str]:
    """This environment without any LANDSCOPE_* setting of the caller's, plus `landscope`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env.update({f"LANDSCOPE_{k.upper()}": str(v) for k, v in landscope.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def landscope_server(command: str, folder: Path, timeout: float = 120) -> Iterator[str]:
    """`landscope <command> --port P` with its data and log in `folder`; yields its URL."""
    port = free_port()
    log_path = folder / f"{command}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "landscope.cli", command, "--port", str(port)], cwd=ROOT,
            env=clean_env(data_dir=folder / "data"), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not answers(url):
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, f"not answering after {timeout:g} s"
                time.sleep(0.2)
            yield url
        finally:
            stop_group(proc)
