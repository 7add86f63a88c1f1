"""docs/geometry.md: the landscape analyses explained, and measured with and without BatchNorm.

    scripts/make_geometry_doc.py                  # train, analyse, render (what the page shows)
    scripts/make_geometry_doc.py run --out F      # train + analyse only: the measurements, JSON
    scripts/make_geometry_doc.py render F         # the page and its figures from that JSON
    scripts/make_geometry_doc.py --seeds 0 --steps 60 --eval-samples 256 --doc /tmp/g.md
                                                  # a smoke run: its numbers mean nothing

`run` trains the quick paired experiments (EXPERIMENTS: quick-mlp, a 6 x 128 MLP on mnist1d,
and quick-vgg, VGG-11 at width 1/4 on digits; norm none vs batch) in this process with the
engine, once per seed, saving snapshots, and runs on each run's last step the analyses the
service runs (scripts/_geometry_measure.py): an end-of-training surface (random
filter-normalised directions, one direction seed for every run), a spectrum (BN mode batch; for
the BN run also running) and a trajectory. Everything it measured goes to
docs/geometry/results.json with the machine, the load, the environment (threads, instruction
set, determinism, versions) and the dataset's fingerprint, and the check cell's analysed
snapshot goes to docs/geometry/check/ with its sha256. `render` (scripts/_geometry_page.py)
derives every number of the page from that file and draws the figures with matplotlib.
tests/docs/test_geometry_doc.py recomputes the check cell's top eigenvalue and trace from the
stored snapshot (on any machine), and retrains it only on the machine model that made the page.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # _geometry_* beside this file

from server.analysis_spec import AnalysisSpec  # noqa: E402
from server.presets import get_preset  # noqa: E402
from server.spec import RunSpec, build_spec  # noqa: E402

NORMS = ("none", "batch")
SEEDS = (0, 1, 2)
# Which analysis settings each experiment uses. "api": the API's defaults
# (server/analysis_spec.py, 2,048 evaluation samples): what a user gets who launches an analysis
# without options. "preset": the preset's own end-of-training analyses (server/presets.py,
# QUICK_ANALYSES: 512 evaluation samples, 20 Hutchinson probes, a 40-step x 2-vector density),
# what the dashboard shows after a quick-vgg experiment. quick-vgg needs them for the cost
# (measured on an AMD EPYC, 1 thread, CPU time): with them a VGG-11/4 spectrum takes 16 s (no
# norm) to 22 s (BN), a whole quick-vgg seed (2 trainings, 2 surfaces, 3 spectra, 2
# trajectories) 113 s; the API's defaults make a spectrum about 8.8 x the work (400 instead of
# 130 Hessian-vector products, on 1,438 instead of 512 samples), some 20 more minutes for the
# page's 9 spectra. With them the whole page (quick-mlp about 200 s) takes about 9 minutes.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "quick-mlp": {"analyses": "api"},
    "quick-vgg": {"analyses": "preset"},
}
CHECK_PRESET = "quick-mlp"  # the test's cell: (first seed, norm none) of this preset
DIRECTION_SEED = 0  # one per experiment: every run gets the same raw directions
EVAL_SEED = 0
EVAL_SAMPLES = 2048
SNAPSHOT_EVERY = 20
# Probes measure without changing the trajectory (worker/engine/trainer.py, step 4): the page
# needs only the weights, so they are off and a run trains in seconds.
PROBES_OFF = {k: {"every": 0} for k in
              ("landscape", "ics", "activations", "sharpness", "grad_norm", "distance")}
DOC = ROOT / "docs" / "geometry.md"


def run_spec(preset: str, seed: int, norm: str, steps: int | None = None) -> RunSpec:
    base = {**get_preset(preset).base, "norm": norm, "seed": seed, "device": "cpu",
            "probes": PROBES_OFF, "snapshots": {"every": SNAPSHOT_EVERY}}
    if steps is not None:
        base["steps"] = steps
    return build_spec(base)


def _settings(preset: str) -> tuple[int, dict[str, Any]]:
    """(evaluation samples, spectrum options) of an experiment (see EXPERIMENTS)."""
    if EXPERIMENTS[preset]["analyses"] == "api":
        return EVAL_SAMPLES, {}
    (s,) = [a for a in get_preset(preset).analyses if a["kind"] == "spectrum"]
    return s.get("eval_samples", EVAL_SAMPLES), dict(s.get("spectrum", {}))


def analysis_specs(preset: str, eval_samples: int | None = None) -> dict[str, AnalysisSpec]:
    n, spectrum = _settings(preset)
    common = {"eval_samples": eval_samples or n, "eval_seed": EVAL_SEED}
    random = {"kind": "random", "seed": DIRECTION_SEED}
    return {
        "surface": AnalysisSpec(kind="surface", directions=random, **common),
        "spectrum": AnalysisSpec(kind="spectrum", spectrum=spectrum, directions=random,
                                 **common),
        "spectrum_running": AnalysisSpec(kind="spectrum", spectrum=spectrum, bn_mode="running",
                                         directions=random, **common),
        "trajectory": AnalysisSpec(kind="trajectory",
                                   directions={"kind": "pca", "seed": DIRECTION_SEED}, **common),
    }


def main(argv: list[str] | None = None) -> int:
    from server.settings import get_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", choices=("all", "run", "render"), default="all")
    ap.add_argument("results", nargs="?", type=Path,
                    help="render: the results JSON (default docs/geometry/results.json)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")],
                    default=list(SEEDS))
    ap.add_argument("--presets", type=lambda s: s.split(","), default=list(EXPERIMENTS),
                    help=f"comma-separated, of {', '.join(EXPERIMENTS)}")
    ap.add_argument("--steps", type=int, help="override the presets' steps (smoke runs)")
    ap.add_argument("--eval-samples", type=int,
                    help="override every experiment's evaluation set size (smoke runs)")
    # One thread: on a shared machine (this one runs several jobs on 2 cores) torch's second
    # intra-op thread spin-waits for a core, and a Hessian-vector product of the 6 x 128 MLP on
    # 1,024 samples was measured at 1.07 s with 2 threads against 0.022 s with 1.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, help="run: where the results JSON goes")
    ap.add_argument("--doc", type=Path, default=DOC, help="the page (figures go beside it)")
    args = ap.parse_args(argv)
    unknown = [p for p in args.presets if p not in EXPERIMENTS]
    if unknown:
        ap.error(f"unknown presets {unknown}; known: {list(EXPERIMENTS)}")
    args.data_dir = args.data_dir or get_settings().data_dir
    figures = args.doc.parent / args.doc.stem
    results_path = args.results or args.out or figures / "results.json"
    if args.command in ("all", "run"):
        from _geometry_measure import dump, measure

        results = measure(args, sys.modules[__name__], results_path.parent)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(dump(results))
        print(f"wrote {results_path}", file=sys.stderr)
    if args.command in ("all", "render"):
        from _geometry_page import render

        results = json.loads(results_path.read_text())
        render(results, args.doc, figures, results_path)
        print(f"wrote {args.doc} and its figures in {figures}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
