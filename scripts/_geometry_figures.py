"""The PNG figures of docs/geometry.md, drawn with matplotlib from results.json.

matplotlib comes with mnist1d (a dependency); plotly's own image export needs kaleido, which
the project does not install. The BN mode is in every title, as on the dashboard.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from _geometry_page import bulk_edge, spectrum_of  # noqa: E402

COLOURS = {"none": "#d62728", "batch": "#1f77b4", "running": "#2ca02c"}
NAMES = {"none": "no norm", "batch": "BatchNorm"}
DPI = 110


def _cell(results: dict[str, Any], seed: int, norm: str) -> dict[str, Any]:
    (c,) = [c for c in results["cells"] if c["seed"] == seed and c["norm"] == norm]
    return c


def _log10(grid: list[list[Any]]) -> list[list[float]]:
    def one(v: Any) -> float:
        v = float(v)  # "nan"/"inf" strings parse
        return math.log10(v) if math.isfinite(v) and v > 0 else math.nan

    return [[one(v) for v in row] for row in grid]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _planes(results: dict[str, Any], key: str, out: Path, title: str) -> Path:
    """Two contour panels (none, batch) of seed 0's grid `key`, one colour scale."""
    seed = results["seeds"][0]
    cells = [_cell(results, seed, n) for n in results["norms"]]
    zs = [_log10(c[key]["grid"]["loss"]) for c in cells]
    finite = [v for z in zs for row in z for v in row if math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    levels = [lo + (hi - lo) * i / 24 for i in range(25)]
    fig, axes = plt.subplots(1, len(cells), figsize=(5.2 * len(cells), 4.4), sharey=True)
    for ax, c, z in zip(axes, cells, zs, strict=True):
        g = c[key]["grid"]
        cs = ax.contourf(g["x"], g["y"], z, levels=levels, cmap="viridis")
        ax.contour(g["x"], g["y"], z, levels=levels[::3], colors="white", linewidths=0.4)
        ax.plot([0], [0], marker="*", color="red", markersize=10)
        if key == "trajectory":
            t = c[key]["values"]["trajectory"]
            xs, ys = [p[0] for p in t["coords"]], [p[1] for p in t["coords"]]
            ax.plot(xs, ys, "-o", color="white", markersize=2.5, linewidth=1)
            ax.annotate(f"step {t['steps'][0]}", (xs[0], ys[0]), color="white", fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
            ev = t["explained_variance"]
            ax.set_xlabel(f"pc1 ({100 * ev[0]:.1f}% of variance)")
            ax.set_ylabel(f"pc2 ({100 * ev[1]:.1f}%)")
        else:
            ax.set_xlabel("α (d1)")
            ax.set_ylabel("β (d2)")
        ax.set_title(f"{NAMES[c['norm']]}, seed {seed}, BN mode batch")
    fig.colorbar(cs, ax=list(axes), label="log10 loss", format="%.2f")
    fig.suptitle(title)
    return _save(fig, out)


def slices(results: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in results["cells"]:
        g = c["surface"]["grid"]
        mid = min(range(len(g["y"])), key=lambda i: abs(g["y"][i]))
        ax.plot(g["x"], [float(v) for v in g["loss"][mid]], color=COLOURS[c["norm"]],
                alpha=0.85, label=f"{NAMES[c['norm']]}, seed {c['seed']}")
    ax.set_yscale("log")
    ax.set_xlabel("α along d1 (β = 0)")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("Loss along the first filter-normalised direction, BN mode batch")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out)


def spectra(results: dict[str, Any], out: Path) -> Path:
    seed = results["seeds"][0]
    shown = [("none", "batch"), ("batch", "batch"), ("batch", "running")]
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    floor = math.inf
    for norm, mode in shown:
        s = spectrum_of(_cell(results, seed, norm), mode)
        if s is None:
            continue
        colour = COLOURS["running" if mode == "running" else norm]
        label = f"{NAMES[norm]}, BN mode {mode}" if norm != "none" else NAMES[norm]
        ys = [max(float(v), 1e-300) for v in s["density"]["y"]]
        floor = min(floor, max(ys) * 1e-8)
        ax.plot(s["density"]["x"], ys, color=colour, label=label, linewidth=1)
        for v in s["top_eigenvalues"]:
            ax.axvline(v, ymin=0.93, ymax=1.0, color=colour, linewidth=1.5)
        c = _cell(results, seed, norm)
        ax.axvline(bulk_edge(s, c["spectrum"]["parameters"]), color=colour, linestyle=":",
                   linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"Hessian eigenvalue density at the last step, seed {seed}")
    ax.legend(fontsize=8)
    return _save(fig, out)


def draw_all(results: dict[str, Any], figures: Path) -> dict[str, Path]:
    return {
        "surfaces": _planes(results, "surface", figures / "surfaces.png",
                            "Loss surface at the last step (random directions, shared seed)"),
        "slices": slices(results, figures / "slices.png"),
        "spectra": spectra(results, figures / "spectra.png"),
        "trajectory": _planes(results, "trajectory", figures / "trajectory.png",
                              "Training trajectory on its PCA plane"),
    }
