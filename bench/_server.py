"""`landscope api` as a subprocess for the benchmarks: a free loopback port, its own process
session (so stopping it stops everything it started), the environment's LANDSCOPE_* settings
replaced by the benchmark's own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, data_dir: Path, *, dashboard: bool = True, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
        env["LANDSCOPE_DATA_DIR"] = str(data_dir)
        env.update({f"LANDSCOPE_{k.upper()}": v for k, v in settings.items()})
        self.log = data_dir / "server.log"
        argv = [sys.executable, "-m", "landscope.cli", "api", "--host", "127.0.0.1", "--port", "0",
                "--no-migrate"] + ([] if dashboard else ["--no-dashboard"])
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = re.search(r"API\s+(http://\S+?)/api/v1\s", self.log.read_text())
            if found and answers(found.group(1)):
                self.base = found.group(1)
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/api/v1/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False
