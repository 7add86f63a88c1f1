"""`landscope`: the command line.

    landscope train --preset NAME [--set key=value ...] [--vary key=a,b ...] [--out DIR]
    landscope submit --preset NAME [--set ...] [--vary ...] [--server URL] [--wait]   to a server
    landscope analyse RUN_DIR [--kind surface|slice|trajectory|spectrum] [--out DIR]
    landscope presets [NAME]
    landscope reproduce [--quick] [--server URL] [--no-wait] [--report]  the paper's figures
    landscope sync DIR [--server URL] [--token T]   upload an offline run, a spool
    landscope data download cifar10 [--data-dir DIR]
    landscope up [--host H] [--port P] [--device D]     API + dashboard + one worker
    landscope api [--host H] [--port P]                  API + dashboard only
    landscope worker [--device D] [--queues Q1,Q2]       one worker
    landscope db upgrade                                 apply migrations

Usage errors (an unknown key, a bad value) print what is allowed and exit with status 2.
The CLI lives in worker/ because `train` runs the engine in-process; server/ stays torch-free.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from server.spec import SpecError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    # None of these imports torch at import time: `api` and `db` must stay torch-free.
    from landscope.cli import (
        analyse_cmd,
        api_cmd,
        data_cmd,
        db_cmd,
        presets_cmd,
        reproduce_cmd,
        submit_cmd,
        sync_cmd,
        train_cmd,
        up_cmd,
        worker_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="landscope",
        description="Watch why normalisation helps training: loss-landscape probes, live.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmd.add_parser(sub)
    submit_cmd.add_parser(sub)
    analyse_cmd.add_parser(sub)
    presets_cmd.add_parser(sub)
    reproduce_cmd.add_parser(sub)
    sync_cmd.add_parser(sub)
    data_cmd.add_parser(sub)
    up_cmd.add_parser(sub)
    api_cmd.add_parser(sub)
    worker_cmd.add_parser(sub)
    db_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SpecError as exc:
        print(f"landscope: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nlandscope: interrupted", file=sys.stderr)
        return 130


