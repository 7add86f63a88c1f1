"""`landscope presets [NAME]`: list the presets, or print one's runs as full specs (JSON)."""

from __future__ import annotations

import argparse
import json

from server.presets import PRESETS, figures_label
from server.spec import SpecError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list presets and their full specs")
    p.add_argument("name", nargs="?", help="print this preset's runs as full specs")
    p.add_argument("--json", action="store_true", help="all presets, full specs, as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.name:
        if args.name not in PRESETS:
            raise SpecError("preset", f"unknown preset {args.name!r}; known: {', '.join(PRESETS)}")
        print(json.dumps(_describe(PRESETS[args.name]), indent=2))
        return 0
    if args.json:
        print(json.dumps([_describe(p) for p in PRESETS.values()], indent=2))
        return 0
    width = max(len(n) for n in PRESETS)
    for p in PRESETS.values():
        runs = len(p.specs())
        fig = f"[{figures_label(p.figures)}] " if p.figures else ""
        vary = ", ".join(f"{k}={'/'.join(map(str, v))}" for k, v in p.vary.items())
        print(f"{p.name:<{width}}  {runs} run(s)  {fig}{p.description}")
        if vary:
            print(f"{'':<{width}}  varies {vary}")
    print("\n`landscope presets NAME` prints a preset's full specs.")
    return 0


def _describe(p) -> dict:
    return {
        "name": p.name,
        "figures": p.figures,
        "description": p.description,
        "vary": p.vary,
        "runs": [s.model_dump(mode="json") for s in p.specs()],
    }
