"""Stopping a server a test started in a session of its own (start_new_session=True)."""

from __future__ import annotations

import os
import signal
import subprocess


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
