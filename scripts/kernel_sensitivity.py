"""docs/reproduction-kernels.md: which math-library code path moves the float64 DLN's numbers.

    scripts/kernel_sensitivity.py            # ~2 min on 2 cores: the page and its JSON
    scripts/kernel_sensitivity.py --out F    # the page elsewhere (its JSON beside it)
    scripts/kernel_sensitivity.py --other REV  # also compare with this page as git REV has
                                               # it, made on another CPU (or --other FILE)

docs/reproduction.md's check experiment (its results file's `check`: the cheapest float64
experiment's first seed, as it was run) is retrained in fresh processes, each with one setting
that picks another kernel for the same operation: oneMKL's code branch (MKL_CBWR: its
Conditional Numerical Reproducibility mode; COMPATIBLE is the branch oneMKL documents as
giving the same results on every Intel or compatible CPU) and ATen's vectorised kernels
(ATEN_CPU_CAPABILITY). Every claim value is compared with the page's and with this machine's
default, and each verdict with the page's. It tells which library's dispatch a number depends
on: made on one CPU model and retrained on another (Intel against AMD), the float64 DLN's
numbers moved by 3e-5. With --other, every row is also compared with the same row of a page
made on another CPU model (its raw JSON): which settings give the same bits on both, the one
docs/reproduction.md's runs are pinned to (scripts/_mkl_pin.py) among them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # _repro_collect beside this file

DOC = ROOT / "docs" / "reproduction-kernels.md"
RESULTS = ROOT / "docs" / "reproduction" / "results.json"

# One setting each, on top of the parent's environment; () is the machine's default.
VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("default", {}),
    ("MKL_CBWR=AVX512", {"MKL_CBWR": "AVX512"}),
    ("MKL_CBWR=AVX2", {"MKL_CBWR": "AVX2"}),
    ("MKL_CBWR=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}),
    ("ATEN_CPU_CAPABILITY=avx2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}),
]


def claim_values(results: dict, runs: list) -> dict[str, dict]:
    """The check experiment's figures judged on `runs`: {figure/claim/key: value} and
    {figure/claim: verdict} for its seed."""
    from server import reproduction as R

    values, verdicts = {}, {}
    for fid in results["check"]["figures"]:
        for claim, outcome in R.evaluate(R.FIGURE_BY_ID[fid], runs).outcomes:
            verdicts[f"{fid}/{claim.id}"] = outcome.ok
            for key, v in outcome.values.items():
                values[f"{fid}/{claim.id}/{key}"] = v
    return {"values": values, "verdicts": verdicts}


def page_values(results: dict) -> dict[str, dict]:
    """The same numbers as the page states them, for the check's seed."""
    check, out = results["check"], {"values": {}, "verdicts": {}}
    figs = {f["id"]: f for p in results["papers"] for f in p["figures"]}
    for fid in check["figures"]:
        for claim in figs[fid]["claims"]:
            (seed,) = [s for s in claim["seeds"] if s["seed"] == check["seed"]]
            out["verdicts"][f"{fid}/{claim['id']}"] = seed["ok"]
            for key, v in seed["values"].items():
                out["values"][f"{fid}/{claim['id']}/{key}"] = float(v)
    return out


def worst_rel(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in b)


def run_variant(results_path: Path, name: str) -> dict:
    """The check experiment's values retrained in a fresh process with VARIANTS' setting
    `name` (as the check ran: its thread count, in float64)."""
    import _repro_collect

    results = json.loads(results_path.read_text())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs, ran = _repro_collect.retrain_fresh(results_path, Path(tmp), dict(VARIANTS)[name])
    got = claim_values(results, runs)
    got.update(capability=ran["isa"], threads=results["check"]["threads"][0], name=name,
               seconds=time.perf_counter() - t0)
    return got


def measure(results_path: Path) -> dict:
    results = json.loads(results_path.read_text())
    import torch

    from bench._machine import describe, loadavg

    report = {"machine": describe(torch.device("cpu")), "load_before": loadavg(),
              "page_cpu": sorted({f["value"] for f in results["environment"]["fields"]["cpu"]}),
              "check": {k: results["check"][k] for k in ("experiment", "seed", "figures")},
              "mkl": torch.backends.mkl.is_available(), "variants": []}
    page = page_values(results)
    for name, _ in VARIANTS:
        got = run_variant(results_path, name)
        report["variants"].append(got)
        print(f"[kernels] {name}: {got['seconds']:.0f} s", flush=True)
    default = report["variants"][0]
    for v in report["variants"]:
        v["vs_page"] = worst_rel(v["values"], page["values"])
        v["vs_default"] = worst_rel(v["values"], default["values"])
        v["flips"] = sorted(k for k, ok in v["verdicts"].items() if ok != page["verdicts"][k])
    report["load_after"] = loadavg()
    return report


def raw_report(text: str, where: str) -> dict:
    """The JSON a page of this script carries (its raw results block)."""
    m = re.search(r"```json\n(.*?)\n```", text, re.S)
    if not m:
        raise SystemExit(f"{where} has no raw results block: not a page of this script")
    return json.loads(m.group(1))


def other_page(ref: str) -> tuple[str, str]:
    """(text, label) of the page --other names: a file, else a git revision of DOC."""
    if Path(ref).is_file():
        return Path(ref).read_text(), ref
    rel = DOC.relative_to(ROOT)
    done = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"--other {ref}: neither a file nor a git revision holding {rel}")
    return done.stdout, f"{rel} at git {ref}"


def compare_other(report: dict, other: dict, source: str) -> None:
    """Each row's largest relative change against the same row of `other` (a report made on
    another machine), in place: report["other"] says which machine, vs_other each row's."""
    theirs = {v["name"]: v["values"] for v in other["variants"]}
    report["other"] = {"cpu": other["machine"]["cpu"], "git_head": other["machine"]["git_head"],
                       "source": source,
                       "values": {n: theirs[n] for n, _ in VARIANTS if n in theirs}}
    for v in report["variants"]:
        mine = theirs.get(v["name"])
        v["vs_other"] = worst_rel(v["values"], mine) if mine and mine.keys() == v[
            "values"].keys() else None


def markdown(r: dict) -> str:
    """The page, from the report alone (tests/docs/test_kernel_page.py checks it is)."""
    m = r["machine"]
    other = r.get("other")
    lines = [
        "# Which kernels move the float64 DLN's numbers",
        "",
        f"Made by `{r['command']}` from a fresh run. docs/reproduction.md's check experiment "
        f"({r['check']['experiment']}, seed {r['check']['seed']}, figures "
        f"{', '.join(r['check']['figures'])}; float64) retrained in a fresh process per row, "
        "each row changing one setting that picks another kernel for the same operation.",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores, {m['ram_gib']} GiB; python "
        f"{m['python']}, torch {m['torch']} (oneMKL {'linked' if r['mkl'] else 'absent'}); "
        f"git {m['git_head']}",
        f"- the page was made on: {', '.join(r['page_cpu'])}",
        f"- load average before {r['load_before']}, after {r['load_after']}; torch threads "
        f"{r['variants'][0]['threads']} (as the check ran)",
        *([f"- compared with: {other['source']}, made on {other['cpu']} (git "
           f"{other['git_head']}): the same setting there"] if other else []),
        "",
        "| setting | ATen kernels | largest relative change vs the page | vs this machine's "
        "default |" + (f" vs {other['cpu']}, same setting |" if other else "")
        + " verdicts that differ from the page | s |",
        "| --- | --- | --- | --- |" + (" --- |" if other else "") + " --- | --- |",
    ]
    for v in r["variants"]:
        flips = ", ".join(v["flips"]) or "none"
        there = ""
        if other:
            there = " n/a |" if v.get("vs_other") is None else f" {v['vs_other']:.3g} |"
        lines.append(f"| {v['name']} | {v['capability']} | {v['vs_page']:.3g} "
                     f"| {v['vs_default']:.3g} |{there} {flips} | {v['seconds']:.0f} |")
    lines += [
        "",
        "Reading it: a setting whose row shows 0 computes the same bits as the default here. "
        "oneMKL picks its code branch from the CPU (and its vendor), so two CPU models can run "
        "different branches by default; MKL_CBWR pins one. ATEN_CPU_CAPABILITY=default turns "
        "off ATen's vectorised kernels. The deep linear net without BN amplifies any change "
        "in rounding, so the size of a change says little about its source; whether it is "
        "zero says which library decides the bits. docs/reproduction.md's runs train on "
        "MKL_CBWR=COMPATIBLE (scripts/_mkl_pin.py), so that a retrain on another x86-64 CPU "
        "gives its bits (tests/docs/test_reproduction_doc.py retrains its check "
        "experiment).",
        "",
        "<details><summary>raw results (JSON)</summary>", "", "```json",
        json.dumps(r, default=str), "```", "", "</details>", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the reproduction page's results file (default: docs/reproduction's)")
    p.add_argument("--out", type=Path, default=DOC, help="the page to write")
    p.add_argument("--other", default=None,
                   help="this page made on another CPU model (a git revision, or a file): "
                        "compare each row with the same row there")
    args = p.parse_args(argv)
    other = other_page(args.other) if args.other else None  # fail before the runs, not after
    report = measure(args.results)
    if other:
        compare_other(report, raw_report(*other), other[1])
    report["command"] = " ".join(["scripts/kernel_sensitivity.py", *(argv or sys.argv[1:])])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
