"""`landscope data download cifar10`: fetch a dataset archive for users with a network.

Training never downloads: it reads the archive from the data directory and, when it is
missing, says which file it expected and names this command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.settings import get_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="manage datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = data_sub.add_parser("download", help="download a dataset archive into the data dir")
    dl.add_argument("dataset", choices=["cifar10"])
    dl.add_argument("--data-dir", type=Path, help="default: LANDSCOPE_DATA_DIR")
    dl.set_defaults(handler=download)


def download(args: argparse.Namespace) -> int:
    from worker.engine.data import DataError
    from worker.engine.data.download import download_cifar10

    data_dir = args.data_dir or get_settings().data_dir
    try:
        path = download_cifar10(data_dir)
    except DataError as exc:
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 1
    print(f"landscope: {path} ready")
    return 0
