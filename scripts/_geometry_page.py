"""docs/geometry.md and its figures from the results of scripts/make_geometry_doc.py.

Every number on the page is computed here from results.json; nothing is typed. The summary
statistics (bulk edge, outliers, sharpness, claims) are plain functions, so that the test
(tests/docs/test_geometry_doc.py) checks them and the page with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _geometry_text import CHOICES, RUN_NOTES, intro

Cell = dict[str, Any]

# Outliers (stated on the page). The bulk is the continuous part of the SLQ density that holds
# its peak; its upper edge is the first point above the peak where the density falls below
# GAP_FRACTION of the height a single isolated eigenvalue would give it (1 / (n sigma sqrt(2 pi)),
# sigma the broadening's width): a gap with no eigenvalue in it at the density's resolution. An
# outlier is a top-k eigenvalue above that edge. The criterion is scale-free (BatchNorm changes
# the Hessian's overall scale) and needs no threshold in loss units.
GAP_FRACTION = 0.01
RADIUS = 0.5  # the surface's sharpness: mean loss rise at this radius along +-d1, +-d2


def spectrum_of(cell: Cell, mode: str = "batch") -> dict[str, Any] | None:
    key = "spectrum" if mode == "batch" else "spectrum_running"
    return cell[key]["values"]["spectrum"] if key in cell else None


def gap_floor(spec: dict[str, Any], parameters: int) -> float:
    """GAP_FRACTION x the density's peak height for one isolated eigenvalue of n."""
    nodes = [x for xs in spec["slq"]["nodes"] for x in xs]
    width = max(nodes) - min(nodes)
    b = spec["slq"]["broadening"]
    sigma = b * width if width > 0 else b
    return GAP_FRACTION / (parameters * sigma * math.sqrt(2 * math.pi))


def bulk_edge(spec: dict[str, Any], parameters: int) -> float:
    """The upper edge of the bulk: the first density grid point above the peak that lies below
    gap_floor (the density's last point when the bulk runs to the end: no gap, no outlier)."""
    x, y = spec["density"]["x"], [float(v) for v in spec["density"]["y"]]
    floor = gap_floor(spec, parameters)
    peak = max(range(len(y)), key=y.__getitem__)
    for i in range(peak, len(y)):
        if y[i] < floor:
            return float(x[i])
    return float(x[-1])


def outliers(spec: dict[str, Any], parameters: int) -> int:
    edge = bulk_edge(spec, parameters)
    return sum(1 for v in spec["top_eigenvalues"] if v > edge)


def centre_loss(cell: Cell) -> float:
    """L(theta_T) on the evaluation set: the surface's centre (theta + 0 d1 + 0 d2)."""
    g = cell["surface"]["grid"]
    (iy,) = [i for i, v in enumerate(g["y"]) if abs(v) < 1e-9]
    (ix,) = [i for i, v in enumerate(g["x"]) if abs(v) < 1e-9]
    return float(g["loss"][iy][ix])


def sharpness(cell: Cell, radius: float = RADIUS) -> float:
    """Mean of L at (+-r, 0) and (0, +-r) minus L(0, 0) on the surface grid."""
    g = cell["surface"]["grid"]
    xs, ys, loss = g["x"], g["y"], g["loss"]

    def at(v: float, axis: list[float]) -> int:
        (i,) = [i for i, a in enumerate(axis) if abs(a - v) < 1e-9]
        return i

    x0, y0 = at(0.0, xs), at(0.0, ys)
    ring = [loss[y0][at(radius, xs)], loss[y0][at(-radius, xs)],
            loss[at(radius, ys)][x0], loss[at(-radius, ys)][x0]]
    return sum(ring) / 4 - loss[y0][x0]


def metrics(cell: Cell) -> dict[str, Any]:
    s = spectrum_of(cell)
    assert s is not None
    n = cell["spectrum"]["parameters"]
    out = {"seed": cell["seed"], "norm": cell["norm"],
           "loss": centre_loss(cell), "test_acc": cell["train"]["test_acc"],
           "top": s["top_eigenvalues"][0], "top5": s["top_eigenvalues"],
           "trace": s["trace"], "trace_se": s["trace_stderr"], "edge": bulk_edge(s, n),
           "outliers": outliers(s, n), "parameters": n, "share": s["gradient_share"],
           "sharp": sharpness(cell),
           "residual": max(s["lanczos_residuals"])}
    r = spectrum_of(cell, "running")
    if r is not None:
        out.update(top_running=r["top_eigenvalues"][0], trace_running=r["trace"],
                   trace_running_se=r["trace_stderr"], outliers_running=outliers(r, n),
                   share_running=r["gradient_share"])
    return out


def pairs(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(none, batch) metrics per seed, in seed order."""
    by = {(c["seed"], c["norm"]): metrics(c) for c in results["cells"]}
    return [(by[(s, "none")], by[(s, "batch")]) for s in results["seeds"]]


Claim = tuple[str, Callable[[dict[str, Any], dict[str, Any]], bool]]
CLAIMS: list[Claim] = [
    ("top eigenvalue lower with BN", lambda n, b: b["top"] < n["top"]),
    ("trace lower with BN", lambda n, b: b["trace"] < n["trace"]),
    ("fewer outliers with BN", lambda n, b: b["outliers"] < n["outliers"]),
    ("gradient share in the top-5 subspace lower with BN", lambda n, b: b["share"] < n["share"]),
    (f"surface flatter with BN (smaller loss rise at radius {RADIUS})",
     lambda n, b: b["sharp"] < n["sharp"]),
    ("BN net: top eigenvalue in running mode above batch mode",
     lambda n, b: b["top_running"] > b["top"]),
]


def claims(results: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(claim, seeds where it holds, seeds) for every claim of the page."""
    ps = pairs(results)
    return [(text, sum(bool(f(n, b)) for n, b in ps), len(ps)) for text, f in CLAIMS]


# -- formatting -----------------------------------------------------------------------------------


def g4(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is None else str(v)
    return f"{v:.4g}"


def pm(mean: float, se: float) -> str:
    return f"{mean:.4g} ± {se:.2g}"


def table(results: dict[str, Any]) -> str:
    head = ("| seed | norm | loss at θ_T | test acc | top eigenvalue | trace ± SE | bulk edge | "
            "outliers | grad share top-5 | ΔL(r=0.5) | max Lanczos residual |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for n, b in pairs(results):
        for m in (n, b):
            lines.append(
                f"| {m['seed']} | {m['norm']} | {g4(m['loss'])} | {g4(m['test_acc'])} | "
                f"{g4(m['top'])} | {pm(m['trace'], m['trace_se'])} | {g4(m['edge'])} | "
                f"{m['outliers']} | {g4(m['share'])} | {g4(m['sharp'])} | "
                f"{m['residual']:.1e} |")
    return "\n".join(lines)


def running_table(results: dict[str, Any]) -> str:
    head = ("| seed | top eigenvalue, batch | top eigenvalue, running | trace ± SE, batch | "
            "trace ± SE, running | outliers batch / running | grad share batch / running |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for _, b in pairs(results):
        lines.append(
            f"| {b['seed']} | {g4(b['top'])} | {g4(b['top_running'])} | "
            f"{pm(b['trace'], b['trace_se'])} | {pm(b['trace_running'], b['trace_running_se'])}"
            f" | {b['outliers']} / {b['outliers_running']} | {g4(b['share'])} / "
            f"{g4(b['share_running'])} |")
    return "\n".join(lines)


def header(results: dict[str, Any], results_path: str) -> str:
    m = results["machine"]
    pressure = m.get("cpu_pressure_share")
    rows = [
        ("date", m["date"]),
        ("machine", f"{m['cpu']}, {m['cpus_usable']} usable cores of {m['cpu_count']}, "
                    f"{m['ram_gib']} GiB, no GPU used"),
        ("load", f"load average {m['load_before']} before, {m['load_after']} after (1, 5, 15 "
                 f"min); CPU pressure (share of the run's wall time some task waited for a "
                 f"core): {g4(pressure)}"),
        ("threads", f"torch {m['torch_threads']} intra-op, {m['torch_interop_threads']} "
                    "inter-op"),
        ("versions", f"Python {m['python']}, torch {m['torch']}, dtype {results['dtype']}"),
        ("code", f"git {m['git_head']}, engine sha256 {m['engine_code_sha256']}"),
        ("experiment", f"preset `{results['preset']}` (norm none vs batch), training seeds "
                       f"{results['seeds']}, direction seed {results['direction_seed']}, "
                       f"evaluation seed {results['eval_seed']}"),
        ("wall time", f"{results['seconds']:.0f} s for everything below"),
        ("raw results", f"[`{results_path}`]({results_path.removeprefix('docs/')})"),
    ]
    return "\n".join(f"- **{k}**: {v}" for k, v in rows)


def render(results: dict[str, Any], doc: Path, figures: Path, results_path: Path) -> None:
    from _geometry_figures import draw_all

    figures.mkdir(parents=True, exist_ok=True)
    pngs = draw_all(results, figures)
    rel = {k: f"{figures.name}/{p.name}" for k, p in pngs.items()}
    try:
        shown_path = str(results_path.resolve().relative_to(doc.resolve().parents[1]))
    except ValueError:
        shown_path = f"docs/{figures.name}/{results_path.name}"
    ps = pairs(results)
    n_seeds = len(ps)
    claim_lines = "\n".join(f"- {text}: **holds in {k} of {n}**"
                            for text, k, n in claims(results))
    specs = results["analysis_specs"]
    sp = specs["spectrum"]["spectrum"]
    cell0 = results["cells"][0]
    parts = [
        intro(results),
        header(results, shown_path),
        CHOICES.format(**_choice_values(results)),
        "## Measured: quick-mlp with and without BatchNorm\n",
        RUN_NOTES.format(
            steps=cell0["run_spec"]["steps"], snap=results["snapshot_every"],
            eval_samples=results["eval_samples"], n_seeds=n_seeds,
            top_k=sp["top_k"], lanczos=sp["lanczos_steps"], probes=sp["trace_probes"],
            slq_steps=sp["slq_steps"], slq_vectors=sp["slq_vectors"],
            broadening=sp["broadening"], gap=GAP_FRACTION,
            radius=RADIUS, nx=len(cell0["surface"]["grid"]["x"]),
            tnx=len(cell0["trajectory"]["grid"]["x"]),
            batch=cell0["spectrum"]["values"]["meta"]["batch_size"],
            n_none=f"{ps[0][0]['parameters']:,}", n_bn=f"{ps[0][1]['parameters']:,}"),
        "All values at the last step, BN mode `batch`, on the evaluation set.\n",
        table(results) + "\n",
        "### Claims, seed by seed\n",
        claim_lines + "\n",
        _ratios(ps) + "\n",
        "### The BN net's spectrum in `running` mode\n",
        "The same network, the same evaluation set and the same probe seeds; only the BN "
        "mode differs (eval mode with the snapshot's running statistics, what PyHessian and "
        "loss-landscape do).\n",
        running_table(results) + "\n",
        "## Figures\n",
        f"![surfaces]({rel['surfaces']})\n",
        "*Loss surfaces at the last step (seed "
        f"{ps[0][0]['seed']}), log10 of the loss, one colour scale for both, BN mode batch; "
        "directions: random, filter-normalised, shared seed.*\n",
        f"![slices]({rel['slices']})\n",
        "*The surfaces' cross-section along d1 (β = 0), every seed.*\n",
        f"![spectra]({rel['spectra']})\n",
        "*SLQ eigenvalue densities (log scale) with the top-5 Lanczos eigenvalues as ticks "
        "and the bulk edge as a dotted line.*\n",
        f"![trajectory]({rel['trajectory']})\n",
        "*The optimiser's path on the PCA plane of θ_i − θ_T (BN mode batch), with each "
        "axis's explained variance.*\n",
        _reproduce(results),
    ]
    doc.write_text("\n".join(parts).rstrip() + "\n", encoding="utf-8")


def _ratios(ps: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    def per_seed(key: str) -> str:
        return ", ".join(f"{n[key] / b[key]:.3g}" for n, b in ps)

    return ("Ratios no norm / BatchNorm, seed by seed: top eigenvalue "
            f"{per_seed('top')}; trace {per_seed('trace')}; gradient share "
            f"{per_seed('share')}; ΔL(r={RADIUS}) {per_seed('sharp')}.")


def shared_directions(results: dict[str, Any]) -> dict[str, Any]:
    """Which parameter tensors the paired networks share by name, and whether their raw random
    directions (the page's direction seed, label d1) are identical: checked, not assumed."""
    import torch

    from server.settings import get_settings
    from server.spec import RunSpec
    from worker.engine.data import load_dataset
    from worker.engine.geometry.directions import raw_direction
    from worker.engine.models import build_model

    seed = results["seeds"][0]
    dirs = {}
    for c in results["cells"]:
        if c["seed"] != seed:
            continue
        spec = RunSpec.model_validate(c["run_spec"])
        data = load_dataset(spec, get_settings().data_dir)
        net = build_model(spec, data.in_shape, data.n_outputs, torch.Generator())
        params = dict(net.named_parameters())
        dirs[c["norm"]] = raw_direction(params, results["direction_seed"], "d1")
    plain, bn = dirs["none"], dirs["batch"]
    shared = [k for k in plain if k in bn]
    return {"plain": len(plain), "bn": len(bn), "shared": len(shared),
            "identical": all(torch.equal(plain[k], bn[k]) for k in shared)}


def _choice_values(results: dict[str, Any]) -> dict[str, Any]:
    from server.analysis_spec import AnalysisSpec, Spectrum
    from worker.engine.geometry.job_prepare import TRAJECTORY_MARGIN

    d, s = AnalysisSpec(), Spectrum()
    sd = shared_directions(results)
    same = "identical" if sd["identical"] else "NOT identical"
    return {"shared": (f"here {sd['shared']} of the BN net's {sd['bn']} parameter tensors, all "
                       f"{sd['plain']} of the plain net's, with raw directions checked "
                       f"{same}") if sd["shared"] == sd["plain"] else
            (f"here {sd['shared']} of {sd['plain']} and {sd['bn']} tensors, with raw "
             f"directions checked {same}"),
            "eval_default": d.eval_samples, "slq_steps": s.slq_steps,
            "slq_vectors": s.slq_vectors, "broadening": s.broadening, "top_k": s.top_k,
            "lanczos": s.lanczos_steps, "probes": s.trace_probes,
            "recal": d.recalibration_samples, "chunk": d.chunk_points,
            "margin": 1 / TRAJECTORY_MARGIN}


def _reproduce(results: dict[str, Any]) -> str:
    seeds = ",".join(str(s) for s in results["seeds"])
    return (
        "## Reproducing this page\n\n"
        "```bash\n"
        f"python scripts/make_geometry_doc.py --seeds {seeds} --eval-samples "
        f"{results['eval_samples']}   # trains, analyses, rewrites this page\n"
        "python -m pytest tests/docs/test_geometry_doc.py   # retrains one cell, recomputes it\n"
        "```\n\n"
        f"The test retrains seed {results['check']['seed']}, norm {results['check']['norm']} "
        "from the spec stored in results.json and recomputes its top eigenvalue and trace "
        "with the same seeds.\n"
    )
