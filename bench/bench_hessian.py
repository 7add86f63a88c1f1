"""Hessian spectrum benchmark: Lanczos against plain HVPs and against PyHessian, side by side.

    python bench/bench_hessian.py            # full run (a few minutes, 2 CPU cores): RESULTS.md
    python bench/bench_hessian.py --quick    # smoke test (seconds); prints only

Model: the engine's 6 x 128 MLP on mnist1d (worker/engine/models.py), trained for a few hundred
SGD steps from its seed (at initialisation the spectrum has no outliers worth finding), then
one fixed batch of 2,048 training samples, cross-entropy. Norms: "none" and "batch" (full run;
--quick only "none"); in eval mode throughout, because PyHessian forces it
(hessian.__init__ calls model.eval()) and the comparison must be of one function.

1. Lanczos top-5 with m steps (worker/engine/geometry/hessian.py: top_eigen, full
   reorthogonalisation) against m plain HVPs of the same operator, timed interleaved in one
   loop: the ratio of times (target <= 1.2) and the HVP count (target <= ceil(1.2 m)). Both
   sides reuse one first-order graph, so the ratio is the cost of Lanczos itself.
2. Side by side with PyHessian's `hessian(model, criterion, data=(x, y), cuda=...)
   .eigenvalues(top_n=5)` (power iteration with deflation, maxIter 100, tol 1e-3): wall time
   (each side builds its gradient graph inside the timed segment), HVPs (PyHessian's counted by
   wrapping its hessian_vector_product) and eigenvalues, both against a reference from a long
   Lanczos run (m = 200, residuals stated). PyHessian draws its start vectors from torch's
   global RNG: the bench seeds it before each call. PyHessian is a bench-only dependency
   (`pip install -e '.[bench]'`); without it this part is skipped with a message.

Timing as in bench_engine.py (bench/README.md): warm-up, interleaved A B, B A, ... segments,
medians and per-repetition paired ratios, machine and versions stated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench._machine import ROOT, describe, loadavg, publish  # noqa: E402
from bench._timing import gauged, interleave, med, paired, pressure  # noqa: E402
from server.spec import build_spec  # noqa: E402
from worker.engine.data import load_dataset  # noqa: E402
from worker.engine.geometry.hessian import network_hvp, top_eigen  # noqa: E402
from worker.engine.models import build_model  # noqa: E402
from worker.engine.state import derive_seed  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
K = 5
REFERENCE_STEPS = 200
PLANS = {
    "full": {"reps": 11, "warmup": 1, "ms": [30, 80], "train_steps": 300, "pyh_reps": 5,
             "norms": ["none", "batch"], "batch": 2048},
    "quick": {"reps": 2, "warmup": 1, "ms": [10], "train_steps": 20, "pyh_reps": 1,
              "norms": ["none"], "batch": 512},
}


def build_case(norm: str, plan: dict, device: torch.device) -> dict[str, Any]:
    """The trained MLP (eval mode), its parameters and one batch, all on `device`."""
    spec = build_spec({"model": "mlp", "depth": 6, "width": 128, "dataset": "mnist1d",
                       "norm": norm, "seed": 0})
    data = load_dataset(spec, Path("."))
    net = build_model(spec, data.in_shape, data.n_outputs,
                      torch.Generator().manual_seed(0)).to(device)
    x_all, y_all = data.x_train.to(device), data.y_train.to(device)
    gen = torch.Generator().manual_seed(derive_seed(0, "bench-hessian"))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(plan["train_steps"]):
        idx = torch.randint(0, len(x_all), (128,), generator=gen).to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x_all[idx]), y_all[idx]).backward()
        opt.step()
    net.eval()
    net.zero_grad(set_to_none=True)
    pick = torch.randperm(len(x_all), generator=gen)[: plan["batch"]].to(device)
    x, y = x_all[pick], y_all[pick]
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(net, p, (x,)), y)

    return {"net": net, "x": x, "y": y, "params": params, "loss_fn": loss_fn,
            "n": sum(p.numel() for p in params.values())}


def bench_lanczos(case: dict, plan: dict, dev: torch.device) -> dict[str, Any]:
    op, n = network_hvp(case["loss_fn"], case["params"])
    v = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(dev)
    out: dict[str, Any] = {"n_params": n}
    for m in plan["ms"]:
        counts: list[int] = []

        def lanczos_top(_: int, m: int = m, counts: list[int] = counts) -> None:
            counts.append(top_eigen(op, n, K, m, seed=0, dtype=op.dtype, device=dev).hvps)

        def plain(_: int, m: int = m) -> None:
            for _ in range(m):
                op(v)

        t = interleave({"lanczos": (lanczos_top, 1), "hvps": (plain, 1)},
                       plan["reps"], plan["warmup"], dev)
        out[f"m={m}"] = {
            "s_lanczos": med(t["lanczos"]), "s_hvps": med(t["hvps"]),
            "ratio": med(t["lanczos"]) / med(t["hvps"]),
            "paired": paired(t["lanczos"], t["hvps"], lambda a, b: a / b),
            "hvps": max(counts), "hvp_budget": math.ceil(1.2 * m),
            "ms_per_hvp": 1e3 * med(t["hvps"]) / m, "times": t,
        }
    return out


def _count_pyhessian_hvps() -> list[int] | None:
    """Wrap pyhessian's HVP so its calls are counted; None when it is not installed."""
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        return None
    # The package's __init__ rebinds the name `hessian` to the class: reach the module itself.
    ph = sys.modules["pyhessian.hessian"]
    counter = [0]
    original = ph.hessian_vector_product

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    ph.hessian_vector_product = counted
    return counter


def bench_pyhessian(case: dict, plan: dict, dev: torch.device,
                    counter: list[int] | None) -> dict[str, Any]:
    op, n = network_hvp(case["loss_fn"], case["params"])
    ref = top_eigen(op, n, K, min(REFERENCE_STEPS, n), seed=1, dtype=op.dtype, device=dev)
    # The yardstick's own error, measured (K more HVPs): ||H y - theta y|| in the operator's
    # dtype, where T's free estimate |beta_m s_mi| would ignore the HVPs' rounding.
    true_res = [float((op(y).double() - theta * y).norm())
                for theta, y in zip(ref.values, ref.vectors, strict=True)]
    out: dict[str, Any] = {"reference": {"m": REFERENCE_STEPS, "values": ref.values,
                                         "residuals": true_res}}
    m = 30
    ours: dict[str, Any] = {}

    def landscope(_: int) -> None:
        o, size = network_hvp(case["loss_fn"], case["params"])  # graph built inside the segment
        top = top_eigen(o, size, K, m, seed=0, dtype=o.dtype, device=dev)
        ours.update(values=top.values, hvps=top.hvps, residuals=top.residuals)

    variants: dict[str, tuple[Callable[[int], None], int]] = {"landscope": (landscope, 1)}
    theirs: dict[str, Any] = {}
    if counter is None:
        out["pyhessian"] = {"skipped": "pyhessian is not importable: pip install -e '.[bench]'"}
    else:
        from pyhessian import hessian

        net = case["net"]

        def pyhessian_top(_: int) -> None:
            torch.manual_seed(0)  # PyHessian draws from the global RNG
            counter[0] = 0
            h = hessian(net, torch.nn.CrossEntropyLoss(), data=(case["x"], case["y"]),
                        cuda=dev.type == "cuda")
            values, _vecs = h.eigenvalues(top_n=K)
            net.zero_grad(set_to_none=True)  # its backward(create_graph=True) left graphs there
            theirs.update(values=[float(v) for v in values], hvps=counter[0])

        variants["pyhessian"] = (pyhessian_top, 1)
    t = interleave(variants, plan["pyh_reps"], plan["warmup"], dev)
    ref_v = torch.tensor(ref.values, dtype=torch.float64)

    def rel_err(values: list[float]) -> float:
        got = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
        return float(((got - ref_v).abs() / ref_v.abs()).max())

    out["landscope"] = {"m": m, "s": med(t["landscope"]), **ours,
                        "max_rel_err": rel_err(ours["values"])}
    if theirs:
        out["pyhessian"] = {"s": med(t["pyhessian"]), **theirs,
                            "max_rel_err": rel_err(theirs["values"])}
        out["time_ratio"] = paired(t["landscope"], t["pyhessian"], lambda a, b: a / b)
    out["times"] = t
    return out


def markdown(res: dict, machine: dict, command: str, plan_name: str) -> str:
    m = machine
    lines = [f"## {m['date']} - Hessian spectrum, {m['device']}, {m['torch_threads']} threads "
             f"({plan_name})", "",
             f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['cpus_usable']} usable), "
             f"{m['ram_gib']} GiB RAM" + (f"; GPU {m['gpu']}" if "gpu" in m else ""),
             f"- python {m['python']}, torch {m['torch']}, pyhessian {res['pyhessian_version']}",
             f"- code: git {m['git_head']}, engine sources sha256 {m['engine_code_sha256']}",
             f"- command: `{command}`; load average at start {m['loadavg_at_start']}",
             "- model: mlp 6 x 128 on mnist1d, trained "
             f"{PLANS[plan_name]['train_steps']} SGD steps, eval mode, one batch of "
             f"{PLANS[plan_name]['batch']} samples, cross-entropy", "",
             "### 1. Lanczos top-5, m steps, vs m plain HVPs (target: time ratio <= 1.2, "
             "HVPs <= ceil(1.2 m))", "",
             "| norm | m | params | ms/HVP | Lanczos s | m HVPs s | ratio paired [min, max] | "
             "HVPs | verdict | pressure |", "| --- | --- | --- | --- | --- | --- | --- | --- | "
             "--- | --- |"]
    for norm, r in res["lanczos"].items():
        for key, row in r.items():
            if not key.startswith("m="):
                continue
            p = row["paired"]
            ok = p["median"] <= 1.2 and row["hvps"] <= row["hvp_budget"]
            lines.append(f"| {norm} | {key[2:]} | {r['n_params']} | {row['ms_per_hvp']:.2f} | "
                         f"{row['s_lanczos']:.3f} | {row['s_hvps']:.3f} | {p['median']:.3f} "
                         f"[{p['min']:.3f}, {p['max']:.3f}] | {row['hvps']} | "
                         f"{'met' if ok else '**MISSED**'} | {pressure(r)} |")
    lines += ["", "### 2. Side by side with PyHessian eigenvalues(top_n=5)", "",
              "| norm | tool | s | HVPs | top-5 eigenvalues | max rel. err vs reference |",
              "| --- | --- | --- | --- | --- | --- |"]
    for norm, r in res["pyhessian"].items():
        ref = r["reference"]
        lines.append(f"| {norm} | reference: Lanczos m = {ref['m']} | - | - | "
                     f"{_fmt(ref['values'])} (measured residuals <= "
                     f"{max(ref['residuals']):.1e}) | - |")
        for tool in ("landscope", "pyhessian"):
            row = r[tool]
            if "skipped" in row:
                lines.append(f"| {norm} | {tool} | skipped: {row['skipped']} | | | |")
                continue
            name = f"Landscope Lanczos m = {row['m']}" if tool == "landscope" else "PyHessian"
            lines.append(f"| {norm} | {name} | {row['s']:.2f} | {row['hvps']} | "
                         f"{_fmt(row['values'])} | {row['max_rel_err']:.1e} |")
        if "time_ratio" in r:
            p = r["time_ratio"]
            lines.append(f"| {norm} | time Landscope / PyHessian, paired | {p['median']:.3f} "
                         f"[{p['min']:.3f}, {p['max']:.3f}] | | | |")
    raw = json.dumps({"machine": machine, **{k: res[k] for k in ("lanczos", "pyhessian")}},
                     default=str, separators=(",", ":"))
    lines += ["", "<details><summary>raw results (JSON, seconds per segment)</summary>", "",
              "```json", raw, "```", "", "</details>", ""]
    return "\n".join(lines)


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: seconds, prints only")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--results", type=Path, default=None,
                   help=f"append the report here (default {RESULTS.relative_to(ROOT)} for full "
                   "runs; --quick writes only when given)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    plan_name = "quick" if args.quick else "full"
    plan = PLANS[plan_name]
    machine = describe(dev)
    machine["loadavg_at_start"] = loadavg()
    print(json.dumps(machine), flush=True)
    counter = _count_pyhessian_hvps()
    # PyHessian calls loss.backward(create_graph=True); the bench clears the .grad cycle after
    # each call (net.zero_grad(set_to_none=True)), so torch's leak warning is moot here.
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    if counter is None:
        print("PyHessian is not importable: section 2 runs Landscope only "
              "(pip install -e '.[bench]' to compare)", flush=True)
    res: dict[str, Any] = {"lanczos": {}, "pyhessian": {}, "pyhessian_version": "not installed"}
    if counter is not None:
        from importlib.metadata import version

        res["pyhessian_version"] = version("pyhessian")
    started = time.perf_counter()
    for norm in plan["norms"]:
        case = build_case(norm, plan, dev)
        r = res["lanczos"][norm] = gauged(bench_lanczos, case, plan, dev)
        for m in plan["ms"]:
            row = r[f"m={m}"]
            print(f"[1 lanczos] {norm} m={m}: ratio paired {row['paired']['median']:.3f}, "
                  f"HVPs {row['hvps']} (budget {row['hvp_budget']}), "
                  f"{row['ms_per_hvp']:.2f} ms/HVP", flush=True)
        r = res["pyhessian"][norm] = gauged(bench_pyhessian, case, plan, dev, counter)
        for tool in ("landscope", "pyhessian"):
            print(f"[2 vs pyhessian] {norm} {tool}: {json.dumps(r[tool], default=str)}",
                  flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    report = markdown(res, machine, " ".join([Path(sys.executable).name, *sys.argv]), plan_name)
    out = args.results or (None if args.quick else RESULTS)
    return publish(report, out)


if __name__ == "__main__":
    sys.exit(main())
