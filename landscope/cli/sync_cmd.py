"""`landscope sync DIR`: upload what a run left on disk.

DIR may be an offline run (landscope.init(dir=DIR)), a `landscope train --out` folder (or its
parent, one run per subfolder), a spool (batches an online run could not deliver; the path
its warning printed), or a folder holding spools (~/.cache/landscope/spool). Repeating a sync
changes nothing on the server. Imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landscope.sdk.api import Api, SdkError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="upload an offline run, a `train --out` folder or a spool")
    p.add_argument("dir", type=Path, help="run folder, spool, or a folder of them")
    p.add_argument("--server", help="Landscope server URL (default: a spool's own server; "
                   "for run folders http://LANDSCOPE_HOST:LANDSCOPE_PORT)")
    p.add_argument("--token", help="API token (default LANDSCOPE_API_TOKEN)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from landscope.cli.api_cmd import public_base
    from landscope.sdk import sync
    from landscope.sdk.offline import read_run_folder
    from landscope.sdk.spool import Spool
    from server.settings import get_settings

    settings = get_settings()
    token = args.token or (settings.api_token.get_secret_value() if settings.api_token else None)
    try:
        targets = sync.find_targets(args.dir)
        total = sum(sync.pending(t) for t in targets)
    except ValueError as exc:
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 2
    default_server = public_base(settings.host, settings.port)
    failed = 0
    with tqdm(total=total, unit="pt", disable=args.quiet, file=sys.stderr,
              dynamic_ncols=True, desc="sync") as bar:
        for t in targets:
            spool = Spool(t.path) if t.kind == "spool" else None
            server = args.server or (sync.spool_server(spool) if spool else default_server)
            try:
                api = Api(server, token)
            except ValueError as exc:
                print(f"landscope: error: --server: {exc}", file=sys.stderr)
                return 2
            try:
                if spool is not None:
                    done = sync.sync_spool(api, spool, bar.update)
                else:
                    done = sync.sync_folder(api, read_run_folder(t.path), bar.update)
            except (SdkError, ValueError) as exc:
                failed += 1
                bar.write(f"landscope: {t.path}: not synced: {exc}", file=sys.stderr)
                continue
            finally:
                api.close()
            bar.write(f"{t.path} -> {server} run {done.run_id}: {done.points} records sent; "
                      f"{done.note}", file=sys.stderr)
    if failed:
        print(f"landscope: {failed} of {len(targets)} not synced; nothing is lost: run "
              "`landscope sync` again", file=sys.stderr)
        return 1
    return 0
