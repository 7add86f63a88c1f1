"""`landscope train`: run a preset (or a spec built from --set) in this process.

A preset is an experiment: its `vary` (e.g. norm: none, batch) is run as one run per value,
sharing seed and data order. --set fixes a key for every run (and removes it from vary);
--vary replaces the comparison. Each run writes its metrics under OUT/<run label>/, and its
snapshots (step 0, the last step and the spec's `snapshots` schedule) under
OUT/<run label>/snapshots/, which `landscope analyse OUT/<run label>` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from server.presets import get_preset
from server.settings import get_settings
from server.spec import SpecError, apply_overrides, build_spec, expand_vary, parse_value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a preset or spec in-process, with a progress bar")
    p.add_argument("--preset", help="a preset name (see `landscope presets`)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key for every run, e.g. lr=0.5 or probes.ics.layers=3,6")
    p.add_argument("--vary", dest="varies", action="append", default=[], metavar="KEY=A,B",
                   help="run one run per value, e.g. norm=none,batch (replaces the preset's)")
    p.add_argument("--out", type=Path, help="output directory (default ./runs/<preset>-<time>)")
    p.add_argument("--data-dir", type=Path, help="datasets directory (default LANDSCOPE_DATA_DIR)")
    p.add_argument("--device", help="override the spec's device (cpu, cuda, cuda:1)")
    p.add_argument("--max-steps", type=int, help="stop each run after this many steps (paused)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the runs' checkpoints in OUT (needs checkpoint_every)")
    p.add_argument("--no-snapshots", dest="snapshots", action="store_false",
                   help="save no snapshots (by default step 0, the last step and the spec's "
                        "snapshots.every/steps go to RUN_DIR/snapshots/ for `landscope analyse`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(flag, f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def compose(preset_name: str | None, set_items: list[str], vary_items: list[str]
            ) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any]]:
    """(base, vary, sets) of --preset, --set and --vary: the preset's base with the --set
    keys on top; --vary replaces the preset's comparison; a key --set fixes is varied no
    more. `train` runs them here, `submit` sends them to a server."""
    base: dict[str, Any] = {}
    vary: dict[str, list[Any]] = {}
    if preset_name:
        try:
            preset = get_preset(preset_name)
        except KeyError as exc:
            raise SpecError("--preset", str(exc.args[0])) from None
        base, vary = preset.base, dict(preset.vary)
    sets = _pairs(set_items, "--set")
    base = apply_overrides(base, sets)
    if vary_items:
        given = _pairs(vary_items, "--vary")
        vary = {k: v if isinstance(v, list) else [v] for k, v in given.items()}
    vary = {k: v for k, v in vary.items() if k not in sets}
    return base, vary, sets


def plan(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The runs to make, as (label, RunSpec), with every override validated first."""
    base, vary, _sets = compose(args.preset, args.sets, args.varies)
    specs = [build_spec(d) for d in expand_vary(base, vary)]
    labels = [s.name_hint() for s in specs]
    if len(set(labels)) != len(labels):  # e.g. varying a key the label does not show
        labels = [f"{i:02d}-{label}" for i, label in enumerate(labels)]
    return list(zip(labels, specs, strict=True))


def run(args: argparse.Namespace) -> int:
    from worker.engine.data import DataError

    runs = plan(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{args.preset or 'run'}-{stamp}"
    data_dir = args.data_dir or get_settings().data_dir
    print(f"landscope: {len(runs)} run(s) -> {out}", file=sys.stderr)
    for label, spec in runs:
        floor = spec.probe_cost()["floor"]
        print(f"  {label}: {spec.steps} steps; probes cost at least {floor:.2f}x plain training",
              file=sys.stderr)
    results = []
    for label, spec in runs:
        try:
            results.append((label, _train_one(spec, out / label, data_dir, args)))
        except DataError as exc:
            print(f"landscope: error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # e.g. bf16 on a CPU: a bad value, caught before training
            print(f"landscope: error: {exc}", file=sys.stderr)
            return 2
    _summary(results)
    return 0


def _train_one(spec, run_dir: Path, data_dir: Path, args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from worker.engine.checkpoint import DirectoryCheckpointStore
    from worker.engine.file_sink import FileSink
    from worker.engine.sink import MemorySink, TeeSink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.trainer import Trainer

    # Threads: the spec's, else LANDSCOPE_TORCH_THREADS, else 1 (worker/engine/threads.py);
    # what was used is in run.json's info.environment.
    trainer = Trainer(spec, data_dir, args.device, get_settings().torch_threads)
    store = DirectoryCheckpointStore(run_dir / "checkpoints") if spec.checkpoint_every else None
    if store is not None and not args.resume:
        for old in run_dir.glob("checkpoints/ckpt-*.pt"):
            old.unlink()
    resume_step = store.latest_step() if (store is not None and args.resume) else 0
    snapshots = DirectorySnapshotStore(run_dir / "snapshots") if args.snapshots else None
    if not args.resume:  # a fresh run never keeps another run's snapshots
        for old in run_dir.glob("snapshots/snap-*.pt"):
            old.unlink()
    sink = FileSink(run_dir, from_step=resume_step)
    memory = MemorySink()
    bar = tqdm(total=spec.steps, desc=run_dir.name, unit="step", disable=args.quiet,
               dynamic_ncols=True, file=sys.stderr)

    def progress(done: int, total: int, loss: float) -> None:
        bar.n = done
        bar.set_postfix_str(f"loss={loss:.4g}", refresh=False)
        bar.update(0)

    try:
        result = trainer.run(TeeSink(sink, memory), checkpoints=store, progress=progress,
                             max_steps=args.max_steps, snapshots=snapshots)
    finally:
        bar.close()
        sink.close()
    record = {"spec": spec.model_dump(mode="json"), "status": result.status,
              "next_step": result.next_step, "diverged_at": result.diverged_at,
              "info": result.info, "final": _finals(memory)}
    (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def _finals(mem) -> dict[str, float | None]:
    def last(key: str) -> float | None:
        v = mem.values(key)
        return v[-1] if v else None

    def peak(key: str) -> float | None:
        v = [x for x in mem.values(key) if not math.isnan(x)]
        return max(v) if v else None

    return {"train/loss": last("train/loss"), "test/acc": last("test/acc"),
            "max landscape/grad_dist_max": peak("landscape/grad_dist_max"),
            "max landscape/beta": peak("landscape/beta")}


def _summary(results: list[tuple[str, dict]]) -> None:
    cols = ["train/loss", "test/acc", "max landscape/grad_dist_max", "max landscape/beta"]
    width = max(len(label) for label, _ in results)
    print(f"{'run':<{width}}  {'status':<10}" + "".join(f"{c:>30}" for c in cols))
    for label, rec in results:
        vals = "".join(
            f"{'-' if rec['final'][c] is None else format(rec['final'][c], '.4g'):>30}"
            for c in cols
        )
        print(f"{label:<{width}}  {rec['status']:<10}{vals}")
