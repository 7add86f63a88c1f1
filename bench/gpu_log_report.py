"""The RESULTS.md section of a bench_gpu.py run that never wrote its report, from its log.

    python bench/gpu_log_report.py LOG [--section NAME=FILE.json ...] [--command CMD] [--note N]

bench_gpu.py prints the machine (its first line) and, as each section ends, `[name] done in
X s: {json}`. A run killed from outside (the device tool's time limit) leaves only that log;
this renders the same markdown section (bench/_gpu_report.py) from it. Logs of runs before
bench_gpu saved after every section cut each line at 400 characters: a cut line gives its
top-level scalar fields (enough for the surfaces) and is marked `partial`. --section adds a
section measured by another call (its JSON, as bench_gpu's section function returned it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gpu_report import markdown  # noqa: E402
from bench._gpu_sections import FULL  # noqa: E402

DONE = re.compile(r"^\[(\w+)\] done in [\d.]+ s: (.*)$")
FAILED = re.compile(r"^\[(\w+)\] FAILED: (.*)$")
SCALAR = re.compile(r'"(\w+)": (-?[\d.]+(?:e[-+]?\d+)?|true|false|null|"[^"]*")(?=[,}])')


def salvage(text: str) -> dict[str, Any]:
    """The top-level scalar fields of a JSON object cut short (nested objects are skipped)."""
    out: dict[str, Any] = {"partial": True}
    depth = 0
    pos = 1  # after the opening brace
    while pos < len(text):
        ch = text[pos]
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == '"' and depth == 0:
            m = SCALAR.match(text, pos)
            if m:
                out[m.group(1)] = json.loads(m.group(2))
                pos = m.end()
                continue
            end = text.find('"', pos + 1)  # a key whose value nests: skip the key
            pos = end if end > 0 else len(text)
        elif ch == '"':
            end = text.find('"', pos + 1)
            pos = end if end > 0 else len(text)
        pos += 1
    return out


def read_log(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(machine, results) from a bench_gpu log."""
    lines = text.splitlines()
    machine = json.loads(lines[0])
    res: dict[str, Any] = {}
    for line in lines[1:]:
        if m := DONE.match(line):
            try:
                res[m.group(1)] = json.loads(m.group(2))
            except json.JSONDecodeError:
                res[m.group(1)] = salvage(m.group(2))
        elif m := FAILED.match(line):
            res[m.group(1)] = {"error": m.group(2)}
    return machine, res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", type=Path)
    p.add_argument("--section", action="append", default=[], metavar="NAME=FILE",
                   help="a section's JSON measured by another call (repeatable)")
    p.add_argument("--command", default="python3 bench/bench_gpu.py (see the note)")
    p.add_argument("--note", default=None, help="what happened to the run (shown first)")
    args = p.parse_args(argv)
    machine, res = read_log(args.log.read_text())
    for item in args.section:
        name, _, path = item.partition("=")
        if not path:
            p.error(f"--section wants NAME=FILE, got {item!r}")
        res[name] = json.loads(Path(path).read_text())
    unusable = [k for k, v in res.items() if v.get("partial") and k.startswith("train")]
    for k in unusable:  # nested tables: a cut line has none of them
        res[k] = {"skipped": "its log line was cut short (what it holds is in the run's log)"}
    print(markdown(res, machine, args.command, FULL, note=args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
