"""Fetch the CIFAR-10 archive into a data directory (the only network access of the engine).

Runs never download: load_cifar10 fails with a message naming the command that calls this, so a
run cannot stall or half-write a shared data directory. The archive is written to a temporary file
in the same directory and renamed only once its md5 matches, so data_dir never holds a partial or
wrong cifar-10-python.tar.gz, even if two downloads race.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tqdm import tqdm

from worker.engine.data import DataError
from worker.engine.data.cifar10 import ARCHIVE_NAME

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def _new_md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)  # a checksum, not security


def _file_md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, _new_md5).hexdigest()


def _fetch(url: str, out: IO[bytes], progress: bool) -> str:
    """Stream `url` into `out`; returns the md5 of what was written."""
    digest = _new_md5()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=ARCHIVE_NAME,
                disable=not progress,
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"could not download {url}: {reason}") from exc
    return digest.hexdigest()


def download_cifar10(
    data_dir: Path,
    url: str = CIFAR10_URL,
    progress: bool = True,
    md5: str = CIFAR10_MD5,
) -> Path:
    """Download the CIFAR-10 python archive to data_dir/cifar-10-python.tar.gz and return its path.

    Does nothing if the file is already there with the right md5; a file with the wrong md5 is
    replaced. A failed download or a checksum mismatch raises DataError and leaves no file behind.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    final = data_dir / ARCHIVE_NAME
    if final.is_file() and _file_md5(final) == md5:
        return final
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{ARCHIVE_NAME}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _fetch(url, out, progress)
        if got != md5:
            raise DataError(
                f"download from {url} has md5 {got}, expected {md5}: the file is corrupt or not "
                f"the CIFAR-10 python archive; nothing was saved to {final}"
            )
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
