"""Servers a test starts in a session of its own (start_new_session=True): whether one
answers, and stopping it."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request


def stop_group(proc: subprocess.Popen, grace: float = 40) -> None:
    """SIGTERM to the process's whole group (a graceful stop of it and whatever it started),
    SIGKILL if it is still there after `grace` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def answers(base: str) -> bool:
    """Whether a Landscope server at `base` answers its health check with 200."""
    try:
        with urllib.request.urlopen(base + "/api/v1/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False
