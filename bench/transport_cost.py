"""What the SDK's transport costs per logged step, in CPU instructions rather than seconds: a
count that a loaded machine does not change (bench_transport.py's wall-clock ratio needs a
quiet one).

    python bench/transport_cost.py            # under valgrind's callgrind (~1 min)
    python bench/transport_cost.py --profile  # cProfile of the same work, by function

Two runs of one script under callgrind (threads counted apart), each N steps of 20 scalars
(as bench_transport.py's loop logs): `none` builds the steps' dicts only; `log` also hands
them to run.log, while the sender thread, woken every 500 steps (as a 1,000 steps/s loop's
every 0.5 s), cuts, encodes, compresses and spools them. Per step: the main thread's
(log - none) / N is the training thread's cost; the sender thread's count / N is the sender's
(it competes with the loop for the GIL, except inside zlib, whose share is shown apart). No
server: the transport is told not to send (its spool is what it would send).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_SCALARS = 20


def work(mode: str, n: int, tmp: str) -> None:
    """The measured script: `mode` none or log."""
    sys.path.insert(0, str(ROOT))
    from landscope.sdk.api import Api
    from landscope.sdk.run import Run
    from landscope.sdk.spool import Spool
    from landscope.sdk.transport import HttpTransport, TransportOptions

    every_500 = TransportOptions(interval=1e9, max_points=500 * N_SCALARS, heartbeat_every=1e9)
    t = HttpTransport(Api("http://127.0.0.1:9"), 1, Spool(Path(tmp) / "spool"), every_500)
    t.error = "not sending: measuring"  # the sender cuts and spools, and sends nothing
    run = Run(client_id="0" * 32, name="cost", experiment=None, config={}, total=None, id=1,
              transport=t)
    keys = [f"m/{i:02d}" for i in range(N_SCALARS)]
    loss = 2.302585092994046
    for step in range(n):
        values = {k: loss + i for i, k in enumerate(keys)}  # what the user's loop builds
        if mode != "none":
            run.log(step, values)
        loss *= 0.9999
    if mode == "log":
        assert t.spooled()
    t._stop.set()
    t._wake.set()
    run.status = "succeeded"  # no finish(): nothing is sent


def instructions(mode: str, n: int) -> tuple[int, int, int]:
    """(main thread, other threads, other threads inside zlib) instructions."""
    with tempfile.TemporaryDirectory(prefix="transport-cost-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
               f"--callgrind-out-file={out}", sys.executable, __file__, "--work", mode,
               "--n", str(n), "--tmp", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        counts = []
        for f in sorted(Path(tmp).glob("callgrind.out-*")):
            text = f.read_text(errors="replace")
            total = int(re.search(r"^(?:totals|summary): (\d+)", text, re.M).group(1))
            counts.append((total, _zlib(f)))
        main_ir = counts[0][0]
        return main_ir, sum(c for c, _ in counts[1:]), sum(z for _, z in counts[1:])


def _zlib(profile: Path) -> int:
    """Instructions spent in libz (deflate: the GIL is released there)."""
    done = subprocess.run(["callgrind_annotate", "--inclusive=no", str(profile)],
                          capture_output=True, text=True, check=True)
    total = 0
    for line in done.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) .*libz\.so", line)
        if m:
            total += int(m.group(1).replace(",", ""))
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="steps logged")
    p.add_argument("--profile", action="store_true", help="cProfile instead of callgrind")
    p.add_argument("--work", choices=("none", "log"), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.work:
        work(args.work, args.n, args.tmp)
        return 0
    if args.profile:
        import cProfile
        import pstats

        with tempfile.TemporaryDirectory() as tmp:
            prof = cProfile.Profile()  # the main thread only: run.log
            prof.runcall(work, "log", args.n, tmp)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; try --profile", file=sys.stderr)
        return 1
    none, log = instructions("none", args.n), instructions("log", args.n)
    n = args.n
    print(f"{n} steps of {N_SCALARS} scalars; instructions per step:")
    print(f"  training thread, run.log:                 {(log[0] - none[0]) / n:8.0f}")
    print(f"  sender thread, cut/encode/compress/spool: {log[1] / n:8.0f}")
    print(f"    of which in zlib (GIL released):        {log[2] / n:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
