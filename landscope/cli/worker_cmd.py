"""`landscope worker`: one worker process that trains queued runs, one at a time.

It consumes its device kind's queue and the shared one (landscope.cpu or landscope.gpu, and
landscope.any) unless --queues says otherwise. Start one per GPU (--device cuda:0, cuda:1, ...)
and as many CPU workers as you like; each is a solo Celery worker (see worker/celery_app.py).
"""

from __future__ import annotations

import argparse
import re
import sys

from server.settings import get_settings
from server.spec import SpecError

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_HELP = "auto | cpu | cuda | cuda:N (default LANDSCOPE_WORKER_DEVICE, else auto)"
QUEUE_RE = re.compile(r"^[\w.\-]+$")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one worker that trains queued runs")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--queues", metavar="Q1,Q2",
                   help="queues to consume (default: the device's queue and landscope.any)")
    p.add_argument("--name", help="worker name (default landscope-<device>@<host>)")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=run)


def check_device(device: str) -> str:
    if not DEVICE_RE.match(device):
        raise SpecError("--device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def parse_queues(text: str | None) -> list[str] | None:
    if text is None:
        return None
    queues = [q.strip() for q in text.split(",") if q.strip()]
    bad = [q for q in queues if not QUEUE_RE.match(q)]
    if not queues or bad:
        raise SpecError("--queues", f"expected comma-separated queue names, got {text!r}")
    return queues


def celery_argv(name: str, queues: list[str] | None, loglevel: str) -> list[str]:
    argv = ["worker", "--pool=solo", "--concurrency=1", f"--hostname={name}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    return argv + (["--queues", ",".join(queues)] if queues else [])


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device or get_settings().worker_device)
    queues = parse_queues(args.queues)
    from worker import celery_app  # imports torch: only a worker needs it

    try:
        celery_app.configure(device)
    except RuntimeError as exc:  # e.g. cuda asked for on a machine without a GPU
        raise SpecError("--device", str(exc)) from None
    name = args.name or f"landscope-{celery_app.STATE.device.replace(':', '')}@%h"
    print(f"landscope: worker on {celery_app.STATE.device}", file=sys.stderr)
    return int(celery_app.app.worker_main(celery_argv(name, queues, args.loglevel)) or 0)
