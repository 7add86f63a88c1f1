"""The load benchmark side by side: this tree against an earlier commit, interleaved.

    python bench/bench_load_ab.py --base d2a0974            # 2 rounds, appends bench/RESULTS.md
    python bench/bench_load_ab.py --base HEAD~3 --rounds 3 --results /tmp/ab.md

One run of bench/bench_load.py on a small shared machine moves by 2x from one minute to the
next (the machine's other tenants, PostgreSQL's own work), so a change's cost is judged by
runs of both versions taken in turn, ABBA: round 1 runs this tree then the base, round 2 the
base then this tree, and so on. The base is checked out with `git worktree` into a temporary
folder and run with this environment's Python; every run is the full bench_load (its own
fresh database, server, writers and clients), and its whole report is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_P95_MS = 200.0


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def run_bench(root: Path, report: Path, extra: list[str]) -> dict:
    """One full bench_load in `root`; the JSON line it closes with on stderr (p95_ms, errors,
    requests). A run that reports problems (exit 1) still counts: its report says which."""
    done = subprocess.run([sys.executable, str(root / "bench" / "bench_load.py"),
                           "--results", str(report), *extra], cwd=root, capture_output=True,
                          text=True)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("{")]
    if not lines or not report.exists():
        raise RuntimeError(f"bench_load failed in {root}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds (default 2)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("extra", nargs="*", help="arguments for bench_load.py (after --)")
    args = ap.parse_args()
    head, base = git("rev-parse", "--short", "HEAD"), git("rev-parse", "--short", args.base)
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") \
        else ""
    rows: list[tuple[int, str, dict, str]] = []
    with tempfile.TemporaryDirectory(prefix="landscope-ab-") as tmp:
        base_root = Path(tmp) / "base"
        git("worktree", "add", "--detach", str(base_root), base)
        try:
            trees = {f"this tree {head}{dirty}": ROOT, f"base {base}": base_root}
            for r in range(1, args.rounds + 1):
                order = list(trees.items()) if r % 2 else list(reversed(trees.items()))
                for label, root in order:
                    report = Path(tmp) / f"{r}-{len(rows)}.md"
                    print(f"bench_load_ab: round {r}, {label}", file=sys.stderr, flush=True)
                    result = run_bench(root, report, args.extra)
                    rows.append((r, label, result, report.read_text()))
        finally:
            git("worktree", "remove", "--force", str(base_root))
    text = summary(args, head, base, rows)
    with args.results.open("a") as f:
        f.write(text)
    print(text)
    return 0


def summary(args, head: str, base: str, rows: list[tuple[int, str, dict, str]]) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {date} - load A/B: this tree ({head}) against {base}, {args.rounds} ABBA rounds",
        "",
        f"command: `python bench/bench_load_ab.py --base {args.base} --rounds {args.rounds}"
        + (f" -- {' '.join(args.extra)}" if args.extra else "") + "`; each run is a full "
        "bench_load (its report follows). Goal: p95 < 200 ms, 0 errors.",
        "",
        "| round | version | p95 ms | errors | requests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r, label, res, _ in rows:
        lines.append(f"| {r} | {label} | {res['p95_ms']:.1f} | {res['errors']} | "
                     f"{res['requests']:,} |")
    lines.append("")
    for label in dict.fromkeys(label for _, label, _, _ in rows):
        mine = [res for _, lab, res, _ in rows if lab == label]
        met = sum(res["p95_ms"] < GOAL_P95_MS and res["errors"] == 0 for res in mine)
        lines.append(f"- {label}: median p95 {statistics.median(x['p95_ms'] for x in mine):.1f}"
                     f" ms over {len(mine)} runs; goal met in {met} of {len(mine)}; "
                     f"{sum(x['errors'] for x in mine)} errors")
    lines.append("")
    for r, label, _, report in rows:
        body = ("\n" + report).replace("\n## ", "\n#### ").strip()  # under this section
        lines += [f"### round {r}: {label}", "", body, ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
