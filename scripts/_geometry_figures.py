"""The PNG figures of docs/geometry.md, drawn with matplotlib from results.json, four per
experiment (`exp`: one entry of results["experiments"]), named after its preset.

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
from _geometry_stats import bulk_edge, spectrum_of  # noqa: E402

COLOURS = {"none": "#d62728", "batch": "#1f77b4", "running": "#2ca02c"}
NAMES = {"none": "no norm", "batch": "BatchNorm"}
DPI = 110


def _cell(exp: dict[str, Any], seed: int, norm: str) -> dict[str, Any]:
    (c,) = [c for c in exp["cells"] if c["seed"] == seed and c["norm"] == norm]
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


def _planes(exp: dict[str, Any], key: str, out: Path, title: str) -> Path:
    """Two contour panels (none, batch) of seed 0's grid `key`, one colour scale."""
    seed = exp["seeds"][0]
    cells = [_cell(exp, seed, n) for n in exp["norms"]]
    zs = [_log10(c[key]["grid"]["loss"]) for c in cells]
    finite = [v for z in zs for row in z for v in row if math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    hi = max(hi, lo + 1e-6)  # a flat grid still needs increasing levels
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


def slices(exp: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in exp["cells"]:
        g = c["surface"]["grid"]
        mid = min(range(len(g["y"])), key=lambda i: abs(g["y"][i]))
        ax.plot(g["x"], [float(v) for v in g["loss"][mid]], color=COLOURS[c["norm"]],
                alpha=0.85, label=f"{NAMES[c['norm']]}, seed {c['seed']}")
    ax.set_yscale("log")
    ax.set_xlabel("α along d1 (β = 0)")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(f"{exp['preset']}: loss along the first filter-normalised direction, "
                 "BN mode batch")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out)


def spectra(exp: dict[str, Any], out: Path) -> Path:
    """Left: the densities on one eigenvalue axis. Right: each against eigenvalue / its own top
    eigenvalue, so that spectra of very different scales (a net at chance) can be compared."""
    seed = exp["seeds"][0]
    shown = [("none", "batch"), ("batch", "batch"), ("batch", "running")]
    fig, axes = plt.subplots(1, 2, figsize=(12.4, 4.4))
    floors = [math.inf, math.inf]
    for norm, mode in shown:
        s = spectrum_of(_cell(exp, seed, norm), mode)
        if s is None:
            continue
        colour = COLOURS["running" if mode == "running" else norm]
        label = f"{NAMES[norm]}, BN mode {mode}" if norm != "none" else NAMES[norm]
        ys = [max(float(v), 1e-300) for v in s["density"]["y"]]
        edge = bulk_edge(s, _cell(exp, seed, norm)["spectrum"]["parameters"])
        top = float(s["top_eigenvalues"][0])
        for i, (ax, scale) in enumerate(zip(axes, (1.0, abs(top) or 1.0), strict=True)):
            scaled = [y * scale for y in ys]  # a density per unit of the rescaled axis
            floors[i] = min(floors[i], max(scaled) * 1e-8)
            ax.plot([float(x) / scale for x in s["density"]["x"]], scaled, color=colour,
                    label=label, linewidth=1)
            for v in s["top_eigenvalues"]:
                ax.axvline(float(v) / scale, ymin=0.93, ymax=1.0, color=colour, linewidth=1.5)
            ax.axvline(edge / scale, color=colour, linestyle=":", linewidth=1)
    for ax, floor in zip(axes, floors, strict=True):
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    axes[0].set_xlabel("eigenvalue")
    axes[1].set_xlabel("eigenvalue / its spectrum's top eigenvalue")
    axes[0].set_ylabel("density (log scale)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{exp['preset']}: Hessian eigenvalue density at the last step, seed {seed}")
    return _save(fig, out)


def draw_all(exp: dict[str, Any], figures: Path) -> dict[str, Path]:
    name = exp["preset"]
    return {
        "surfaces": _planes(exp, "surface", figures / f"{name}-surfaces.png",
                            f"{name}: loss surface at the last step (random directions, "
                            "shared seed)"),
        "slices": slices(exp, figures / f"{name}-slices.png"),
        "spectra": spectra(exp, figures / f"{name}-spectra.png"),
        "trajectory": _planes(exp, "trajectory", figures / f"{name}-trajectory.png",
                              f"{name}: training trajectory on its PCA plane"),
    }
