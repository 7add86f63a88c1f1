"""docs/reproduction.md: every paper of the catalogue, reproduced from a fresh run.

    scripts/make_reproduction_doc.py --scale quick --jobs 2        # run, then write (the page)
    scripts/make_reproduction_doc.py run --scale quick --out R     # train only, into R
    scripts/make_reproduction_doc.py write R --scale quick         # the page from R
    scripts/make_reproduction_doc.py --scale quick --set steps=30 --out /tmp/r \\
        --doc /tmp/r/reproduction.md                        # a smoke run: numbers mean nothing

`run` trains every experiment of every paper in server/reproduction's registry at the scale,
in this process (scripts/reproduce_figures.py `run`: `landscope train`'s layout, one directory
per experiment), records the machine, its load before and after and the command in
R/launch.json, and (unless --no-dtype-compare) trains the deep linear network's experiments in
float32 and float64 and the first seed once more from a start moved by one ulp
(scripts/_repro_dtype.py). `write` draws each figure (reproduce_figures.py `render --png`, the
dashboard's figure builders), judges every figure (scripts/_repro_collect.py), writes
everything it states to <doc's folder>/<doc's stem>/results.json and the page from that file
alone (scripts/_repro_page.py). tests/docs/test_reproduction_doc.py reads the results file,
retrains the cheapest experiment's first seed as it was run and fails if the page disagrees.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # _repro_* and reproduce_figures beside this file

import reproduce_figures as RF  # noqa: E402

from server import reproduction as R  # noqa: E402

DOC = ROOT / "docs" / "reproduction.md"


def results_path(doc: Path) -> Path:
    return doc.parent / doc.stem / "results.json"


def run(args: argparse.Namespace, argv: list[str]) -> None:
    import _repro_dtype
    from _repro_collect import LAUNCH, machine_now

    args.out.mkdir(parents=True, exist_ok=True)
    before, started = machine_now(), time.perf_counter()
    RF.run(argparse.Namespace(scale=args.scale, out=args.out, only=args.only, sets=args.sets,
                              jobs=args.jobs, threads=args.threads, data_dir=args.data_dir,
                              force=args.force))
    if args.dtype_compare:
        _repro_dtype.run(args.out, args.scale, args.sets, args.jobs, args.threads,
                         args.data_dir)
    launch = {"command": launch_command(argv),
              "scale": args.scale, "sets": dict(_repro_dtype._parse(args.sets)), "jobs": args.jobs,
              "threads": args.threads, "dtype_compare": args.dtype_compare,
              "only": args.only,
              "seconds": round(time.perf_counter() - started, 1),
              "machine_before": before, "machine_after": machine_now()}
    (args.out / LAUNCH).write_text(json.dumps(launch, indent=2))


def launch_command(argv: list[str]) -> str:
    return shlex.join(["scripts/make_reproduction_doc.py", *argv])


def write(args: argparse.Namespace, argv: list[str]) -> None:
    import _repro_collect
    import _repro_dtype
    from _repro_page import page

    figures = args.doc.parent / args.doc.stem
    figures.mkdir(parents=True, exist_ok=True)
    if not args.no_png:
        for old in figures.glob("*.png"):  # a figure not drawn this time must not show an old one
            old.unlink()
        RF.main(["render", str(args.out), "--scale", args.scale, "--png", str(figures),
                 "--chromium", args.chromium])
    only = set(args.only.split(",")) if args.only else None
    results = _repro_collect.collect(args.out, args.scale, None if args.no_png else figures,
                                     only=only)
    results["dtype"] = _repro_dtype.collect(args.out, args.scale)
    results["write_command"] = (launch_command(argv) if args.command == "write" else
                                None)
    path = results_path(args.doc)
    path.write_text(json.dumps(results, indent=1) + "\n")
    link = str(path.relative_to(args.doc.parent))
    args.doc.write_text(page(results, figures.name, link))
    print(f"wrote {args.doc}, {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", choices=("all", "run", "write"), default="all")
    p.add_argument("results", nargs="?", type=Path, help="write: the results directory")
    p.add_argument("--scale", choices=R.SCALES, default="quick")
    p.add_argument("--out", type=Path, help="the results directory (default results/<scale>)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of a run whose spec sets none (default: "
                        "LANDSCOPE_TORCH_THREADS, else 1)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key in every run (a smoke run: steps=30)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--force", action="store_true", help="retrain runs that have a run.json")
    p.add_argument("--no-dtype-compare", dest="dtype_compare", action="store_false",
                   help="skip the DLN's float32 / float64 comparison")
    p.add_argument("--no-png", action="store_true", help="write the page without figures")
    p.add_argument("--only", default=None, metavar="KEYS",
                   help="comma-separated experiment keys: train (run) and report (write) only "
                   "these, and the papers' figures they feed (a partial page, e.g. the cpu "
                   "scale's VGG experiments: --only vgg-lr,vgg-noisy --doc docs/R.md)")
    p.add_argument("--doc", type=Path, default=DOC, help="the page (figures and results.json "
                   "go to <folder>/<stem>/)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    from server.settings import get_settings

    args.data_dir = args.data_dir or get_settings().data_dir
    args.out = args.results or args.out or ROOT / "results" / args.scale
    if args.command in ("all", "run"):
        run(args, argv)
    if args.command in ("all", "write"):
        write(args, argv)
    return 0


if __name__ == "__main__":
    import _mkl_pin

    _mkl_pin.pin()  # oneMKL's COMPATIBLE branch: the same bits on Intel and AMD
    raise SystemExit(main())
