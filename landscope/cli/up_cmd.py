"""`landscope up`: the whole product from one command.

Applies the migrations, binds the port, starts one worker process (`landscope worker`, in a
session of its own so a terminal's Ctrl-C reaches only this process) and serves the API and
dashboard in this one. Ctrl-C or SIGTERM stops the server gracefully, then the worker: SIGTERM
(a warm shutdown: a run in progress is handed back to the queue at its next step, to resume
from its checkpoint), a wait, and SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

from landscope.cli import api_cmd
from landscope.cli.worker_cmd import DEVICE_HELP, check_device

STOP_TIMEOUT = 20.0  # seconds a worker gets to hand its run back before it is killed


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="serve the API and dashboard on one port, with one worker")
    api_cmd.add_serve_args(p)
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(handler=run)


def start_worker(device: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "landscope.cli", "worker"]
    if device:
        cmd += ["--device", device]
    # Own session: the terminal's SIGINT goes to `up` alone, which then stops the worker in
    # order (after the server), instead of both racing to shut down.
    return subprocess.Popen(cmd, start_new_session=True)


def stop_worker(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL; a second Ctrl-C kills at once."""
    if proc.poll() is None:
        print("landscope: stopping the worker", file=sys.stderr)
        proc.terminate()
        try:
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            print("landscope: the worker did not stop in time; killing it", file=sys.stderr)
            proc.kill()
    return proc.wait()


def watch(proc: subprocess.Popen, stopping: threading.Event) -> None:
    """Say so when the worker dies on its own: runs would wait in the queue forever."""

    def wait() -> None:
        code = proc.wait()
        if not stopping.is_set():
            print(f"landscope: warning: the worker exited (status {code}); queued runs wait "
                  "until a worker runs (`landscope worker`)", file=sys.stderr)

    threading.Thread(target=wait, name="worker-watch", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device) if args.device else None
    with api_cmd.sigterm_interrupts():
        try:
            settings, sock, app, base_url, mounted = api_cmd.prepare(args)
        except api_cmd.ServeError as exc:
            print(f"landscope: error: {exc}", file=sys.stderr)
            return 1
        stopping = threading.Event()
        worker = start_worker(device)
        watch(worker, stopping)
        try:
            api_cmd.announce(app, base_url, mounted)
            api_cmd.serve(app, sock, access_log=settings.access_log)
        except KeyboardInterrupt:  # before the server took over the signals
            pass
        finally:
            stopping.set()
            code = stop_worker(worker)
    print(f"landscope: stopped (worker status {code})", file=sys.stderr)
    return 0
