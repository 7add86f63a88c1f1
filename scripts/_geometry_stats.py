"""The summary statistics of docs/geometry.md, computed from one experiment of results.json.

Plain functions of the stored measurements (bulk edge, outliers, sharpness, the per-seed
claims), so that the page (scripts/_geometry_page.py) and its test
(tests/docs/test_geometry_doc.py) use the very same code. `exp` is one entry of
results["experiments"]: its preset, seeds and cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

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
    return float(sum(float(v) for v in ring) / 4 - float(loss[y0][x0]))


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


def pairs(exp: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(none, batch) metrics per seed of one experiment, in seed order."""
    by = {(c["seed"], c["norm"]): metrics(c) for c in exp["cells"]}
    return [(by[(s, "none")], by[(s, "batch")]) for s in exp["seeds"]]


Claim = tuple[str, Callable[[dict[str, Any], dict[str, Any]], bool]]
CLAIMS: list[Claim] = [
    ("loss at θ_T lower with BN", lambda n, b: b["loss"] < n["loss"]),
    ("test accuracy higher with BN", lambda n, b: b["test_acc"] > n["test_acc"]),
    ("top eigenvalue lower with BN", lambda n, b: b["top"] < n["top"]),
    ("trace lower with BN", lambda n, b: b["trace"] < n["trace"]),
    ("fewer outliers with BN", lambda n, b: b["outliers"] < n["outliers"]),
    ("gradient share in the top-5 subspace lower with BN", lambda n, b: b["share"] < n["share"]),
    (f"surface flatter with BN (smaller loss rise at radius {RADIUS})",
     lambda n, b: b["sharp"] < n["sharp"]),
    ("BN net: top eigenvalue in running mode above batch mode",
     lambda n, b: b["top_running"] > b["top"]),
]


def claims(exp: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(claim, seeds where it holds, seeds) for every claim of one experiment."""
    ps = pairs(exp)
    return [(text, sum(bool(f(n, b)) for n, b in ps), len(ps)) for text, f in CLAIMS]


CHANCE_FACTOR = 1.5  # "at chance": test accuracy at most this many times 1 / classes


def at_chance(exp: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per norm, (seeds whose net ends at chance, seeds): test accuracy <= CHANCE_FACTOR /
    classes (None when the experiment has no class count, a regression)."""
    classes = exp.get("classes")
    out = {}
    for norm in exp["norms"]:
        accs = [c["train"]["test_acc"] for c in exp["cells"] if c["norm"] == norm]
        k = sum(1 for a in accs if classes and a is not None and a <= CHANCE_FACTOR / classes)
        out[norm] = (k, len(accs))
    return out
