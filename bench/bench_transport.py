"""What the SDK's transport costs a training loop: a loop of ~1,000 steps/s (a small MLP's SGD
step on the CPU, sized to ~1 ms) that computes 20 scalars a step, timed with and without
`run.log` to a real local API (`landscope api` subprocess), interleaved. Goal: <= 1.02.

    python bench/bench_transport.py             # full run, appends to bench/RESULTS.md
    python bench/bench_transport.py --quick     # smoke test, prints the report only
    python bench/bench_transport.py --database-url postgresql+psycopg://...   # a PG server

A segment is N steps. The "log" variant's timed region also includes waiting until the last
of its records is cut, encoded and spooled (the sender's CPU work, which on a real loop
overlaps the next steps), but not the server's acknowledgement (network wait, off the
training thread); between segments, untimed, the spool drains, so the "plain" segments never
pay for the previous "log" segment's sending. The API runs on the same machine and competes
for its cores: the loop pays for that too, as it would against `landscope up` on one box.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench._machine import describe, loadavg, publish  # noqa: E402
from bench._server import Server  # noqa: E402
from bench._timing import gauged, med, paired, pressure  # noqa: E402

N_SCALARS = 20
GOAL = 1.02


def make_step(width: int):
    """One SGD step of a 3-layer MLP, returning its loss as a float (as a user's loop does)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(32, 32), torch.randint(0, 10, (32,))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def calibrate(target_s: float = 1e-3) -> int:
    """The MLP width whose step takes about `target_s` here, now."""
    width = 16
    while width < 4096:
        step = make_step(width)
        for _ in range(20):
            step()
        t0 = time.perf_counter()
        for _ in range(200):
            step()
        if (time.perf_counter() - t0) / 200 >= target_s:
            return width
        width = int(width * 1.25) + 1
    return width


def variants(step, run, counter: list[int]):
    keys = [f"m/{i:02d}" for i in range(N_SCALARS)]

    def scalars(loss: float) -> dict[str, float]:
        return {k: loss + i for i, k in enumerate(keys)}  # 20 values, built in both variants

    def plain(n: int) -> None:
        for _ in range(n):
            scalars(step())

    def log(n: int) -> None:
        s = counter[0]
        for i in range(n):
            run.log(s + i, scalars(step()))
        counter[0] = s + n
        run.flush()  # cut + encoded + spooled: the sender's CPU work, inside the timed region

    return {"plain": (plain, 0), "log": (log, 0)}


def bench(args: argparse.Namespace, server: Server) -> dict:
    import landscope

    torch.set_num_threads(1)
    width = calibrate()
    step = make_step(width)
    run = landscope.init(server=server.base, experiment="bench", name="transport",
                         dir=Path(args.tmp) / "sdk")
    counter = [0]
    vs = variants(step, run, counter)
    times: dict[str, list[float]] = {k: [] for k in vs}
    cpu: dict[str, list[float]] = {k: [] for k in vs}  # the training thread's CPU seconds
    sender_cpu = 0.0  # the sender thread's, over the "log" segments (and their drains)
    for _ in range(args.warmup):
        for fn, _n in vs.values():
            fn(args.steps)
    gc.collect()
    gc.freeze()  # as bench/_timing.interleave: a collection costs what a segment allocated
    for r in range(args.reps):  # A B, B A, ...: neither always goes first
        for k in list(vs) if r % 2 == 0 else list(vs)[::-1]:
            # Untimed: the previous segment's points reach the server first, so a segment
            # never pays for another's sending.
            assert run.flush(60), "the server did not take the points"
            s0 = run._transport.cpu_s
            c0, t0 = time.thread_time(), time.perf_counter()
            vs[k][0](args.steps)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.thread_time() - c0)
            if k == "log":
                assert run.flush(60)
                sender_cpu += run._transport.cpu_s - s0
    gc.unfreeze()
    run.finish()
    sender_us = sender_cpu / (args.reps * args.steps) * 1e6
    per_step = {k: med(v) / args.steps for k, v in times.items()}
    return {"width": width, "steps_per_segment": args.steps, "reps": args.reps,
            "plain_step_ms": per_step["plain"] * 1e3, "log_step_ms": per_step["log"] * 1e3,
            "ratio_paired": paired(times["log"], times["plain"], lambda a, b: a / b),
            "ratio_of_medians": med(times["log"]) / med(times["plain"]),
            "points": counter[0] * N_SCALARS, "times": times, "cpu": cpu,
            "cpu_ratio": paired(cpu["log"], cpu["plain"], lambda a, b: a / b),
            "sender_us_per_step": sender_us,
            # On an idle machine with a core to spare: the training thread's own extra CPU,
            # plus all the sender's CPU as if it held the GIL throughout (an upper bound:
            # gzip and socket waits release it).
            "projected": (med(cpu["log"]) + sender_cpu / args.reps) / med(cpu["plain"])}


def report(result: dict, info: dict, argv: list[str], load: str) -> str:
    r = result["ratio_paired"]
    verdict = "meets" if r["median"] <= GOAL else "MISSES"
    lines = [
        f"## Transport overhead ({info['date']})", "",
        f"`{' '.join(['python', *argv])}`; load average before: {load}; "
        f"cpu pressure: {pressure(result)}; {info['cpu']}, {info['cpus_usable']} usable CPUs, "
        f"python {info['python']}, torch {info['torch']} (1 thread), git {info['git_head']}", "",
        f"- loop: MLP width {result['width']} SGD step, {result['plain_step_ms']:.3f} ms/step "
        f"plain ({1e3 / result['plain_step_ms']:.0f} steps/s), {N_SCALARS} scalars a step; "
        f"{result['reps']} x {result['steps_per_segment']} steps per variant, interleaved",
        f"- with run.log to a local API: {result['log_step_ms']:.3f} ms/step; "
        f"{result['points']} points sent",
        f"- **overhead ratio (paired median): {r['median']:.4f}** [{r['min']:.4f}, "
        f"{r['max']:.4f}]; ratio of medians {result['ratio_of_medians']:.4f}; goal <= {GOAL}: "
        f"{verdict}",
        f"- CPU time of the training thread, log / plain (paired median): "
        f"{result['cpu_ratio']['median']:.4f} [{result['cpu_ratio']['min']:.4f}, "
        f"{result['cpu_ratio']['max']:.4f}]; the sender thread: "
        f"{result['sender_us_per_step']:.1f} us CPU per step; projected ratio with a core to "
        f"spare, the sender's CPU counted as if it held the GIL: {result['projected']:.4f}", "",
        "```json", json.dumps({"info": info, "times": result["times"], "cpu": result["cpu"]}),
        "```",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test; writes nothing")
    p.add_argument("--database-url", help="the API's database (default: SQLite in a temp dir)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = p.parse_args(argv)
    args.steps, args.reps, args.warmup = (300, 6, 1) if args.quick else (2000, 30, 2)
    load = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        args.tmp = tmp
        settings = {"database_url": args.database_url} if args.database_url else {}
        from server.db.migrate import upgrade
        from server.settings import Settings

        upgrade(args.database_url or Settings(data_dir=Path(tmp)).db_url)
        server = Server(Path(tmp), dashboard=False, **settings)
        try:
            result = gauged(bench, args, server)
        finally:
            server.stop()
    text = report(result, describe(torch.device("cpu")),
                  ["bench/bench_transport.py", *(argv or sys.argv[1:])], load)
    return publish(text, None if args.quick else args.results)


if __name__ == "__main__":
    sys.exit(main())
