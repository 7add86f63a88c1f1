"""What the landscape figures share: reading an analysis's JSON (GET /api/v1/analyses/{id}),
one colour range across runs, and titles that state the BatchNorm mode, the run's norm and
the evaluation set.

An analysis arrives with its grids per analysed step: `steps["<step>"]` holds x, y (None for
a slice), loss (ny rows of nx values; one row for a slice), optionally acc / test_loss /
test_acc, and `values` (spectrum, trajectory, directions...). Non-finite numbers arrive as the
strings "nan", "inf", "-inf" and points not computed yet as null. Both are data: a gap in the
surface, and for non-finite values a marker saying what was there (webapp/figures/common.py
does the same for the training curves). Nothing here raises on them.

The figure builders themselves are in geometry_surface.py (contours, surfaces, slices, the
trajectory) and geometry_spectrum.py (Hessian spectra); they take the run's RunView (colour,
legend label, norm) and the analysis JSON, and return a go.Figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from webapp.figures.common import NONFINITE_SYMBOL, nonfinite_kind
from webapp.runsets import RunView

BN_TEXT = {
    "batch": "batch statistics",
    "running": "running statistics (eval mode)",
    "recalibrated": "recalibrated statistics",
}
METRIC_TEXT = {"loss": "loss", "acc": "accuracy", "test_loss": "test loss",
               "test_acc": "test accuracy"}
COLORSCALE = "Viridis"
CONTOUR_LEVELS = 24  # contour levels across the shared range: the same lines in every run


def bn_text(bn_mode: str | None) -> str:
    """'BN mode: batch statistics': every landscape figure's title carries it."""
    return f"BN mode: {BN_TEXT.get(bn_mode or '', bn_mode or 'unknown')}"


def run_text(run: RunView) -> str:
    return f"{run.label} (#{run.id}, norm: {run.norm})"


def eval_samples(analysis: dict[str, Any]) -> int | None:
    """The rows of the evaluation set the analysis measured on: the cost's count (the spec's
    request, capped at the training set) when the API gave it, else the spec's request;
    None when neither says (an analysis of the whole set with no cost recorded)."""
    for v in ((analysis.get("cost") or {}).get("eval_samples"),
              (analysis.get("spec") or {}).get("eval_samples")):
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def eval_text(analysis: dict[str, Any]) -> str:
    """'eval set: 2,048 samples': two analyses of one run and step on different evaluation
    sets measure different values (a top eigenvalue of 9.7 on 512 samples, 7.3 on 2,048),
    so every figure and the list of analyses say which set each used."""
    n = eval_samples(analysis)
    if n is not None:
        return f"eval set: {n:,} samples"
    spec = analysis.get("spec") or {}
    return "eval set: the whole training set" if "eval_samples" in spec else ""


def evals_text(analyses: Iterable[dict[str, Any]]) -> str:
    """The evaluation sets of several runs' analyses in one phrase ('' when none says)."""
    ns = sorted({n for a in analyses if (n := eval_samples(a)) is not None})
    return f"eval set: {' / '.join(f'{n:,}' for n in ns)} samples" if ns else ""


def runs_subtitle(items: Sequence[tuple[RunView, dict[str, Any]]]) -> str:
    """Every drawn run's norm, BN mode and evaluation set: the subtitle of the figures that
    overlay runs (slices, spectra)."""
    norms = ", ".join(dict.fromkeys(r.norm for r, _a in items)) or "none drawn"
    modes = sorted({a.get("bn_mode") or "unknown" for _r, a in items})
    ev = evals_text(a for _r, a in items)
    return (f"norms: {norms} · " + "; ".join(bn_text(m) for m in modes)
            + (f" · {ev}" if ev else ""))


TITLE_PAD = 16  # px left of a title: an exported image has no card around it to give room


def title_layout(text: str) -> dict[str, Any]:
    """A plotly title at the top left, clear of the image's edge."""
    return {"text": text, "x": 0, "xref": "container", "xanchor": "left",
            "pad": {"l": TITLE_PAD}, "font": {"size": 14}}


def title(what: str, run: RunView, analysis: dict[str, Any], step: int | None) -> dict:
    """A plotly title: what the figure shows, then the run, its norm, the step, BN mode and
    the evaluation set."""
    at = f" · step {step:,}" if step is not None else ""
    ev = eval_text(analysis)
    sub = f"{run_text(run)}{at} · {bn_text(analysis.get('bn_mode'))}" + (f" · {ev}" if ev
                                                                          else "")
    return title_layout(f"{what}<br><sup>{sub}</sup>")


def num(v: Any) -> float | None:
    """An API number: float, "nan"/"inf"/"-inf" (any case, also "Infinity") as floats;
    null (a point not computed yet) stays None."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan  # an unreadable value is not a number: drawn as NaN, never a crash


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def steps_of(analysis: dict[str, Any]) -> list[int]:
    """The analysed steps that have results, in order."""
    return sorted(int(s) for s in (analysis.get("steps") or {}))


def step_data(analysis: dict[str, Any], step: int | None) -> dict[str, Any] | None:
    """One step's results; `step` None (or not analysed) means the last analysed step."""
    steps = analysis.get("steps") or {}
    if step is not None and str(step) in steps:
        return steps[str(step)]
    have = steps_of(analysis)
    if not have:
        return None
    if step is None:
        return steps[str(have[-1])]
    # The nearest analysed step at or before `step` (a slider over several analyses).
    before = [s for s in have if s <= step]
    return steps[str(before[-1] if before else have[0])]


def chosen_step(analysis: dict[str, Any], step: int | None) -> int | None:
    """The step `step_data` picks, for titles."""
    have = steps_of(analysis)
    if not have:
        return None
    if step is None or str(step) not in (analysis.get("steps") or {}):
        before = [s for s in have if step is None or s <= step]
        return before[-1] if before else have[0]
    return step


@dataclass
class Grid:
    """One step's grid of one metric: z[iy][ix] as float (NaN/inf kept) or None (missing)."""

    x: list[float]
    y: list[float] | None
    z: list[list[float | None]]

    @classmethod
    def of(cls, data: dict[str, Any] | None, metric: str = "loss") -> Grid | None:
        if not data or data.get(metric) is None:
            return None
        x = [num(v) for v in data.get("x") or []]
        y = [num(v) for v in data["y"]] if data.get("y") is not None else None
        z = [[num(v) for v in row] for row in data[metric]]
        return cls(x, y, z)  # type: ignore[arg-type]

    def values(self) -> Iterable[float | None]:
        return (v for row in self.z for v in row)


def transform(v: float | None, log: bool) -> float | None:
    """What a colour or height shows for a value: None (a gap) unless finite, log10 when
    `log` (where a non-positive value has no logarithm: a gap as well)."""
    if not finite(v):
        return None
    if log:
        return math.log10(v) if v > 0 else None  # type: ignore[operator]
    return v


def plot_z(grid: Grid, log: bool) -> list[list[float | None]]:
    return [[transform(v, log) for v in row] for row in grid.z]


def shared_range(grids: Iterable[Grid | None], log: bool = False
                 ) -> tuple[float, float] | None:
    """One colour range for every run's figure: min and max over all their finite values
    (of log10 of the positive ones, under `log`). None when no value is finite."""
    vals = [t for g in grids if g is not None for v in g.values()
            if (t := transform(v, log)) is not None]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if lo == hi:  # a flat grid still needs a range to colour
        pad = abs(lo) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


def all_grids(analyses: Sequence[dict[str, Any]], metric: str = "loss") -> list[Grid]:
    """Every step's grid of every analysis: the shared range covers a whole step slider, so
    the colours do not shift while it plays."""
    out = []
    for a in analyses:
        for s in steps_of(a):
            g = Grid.of(a["steps"][str(s)], metric)
            if g is not None:
                out.append(g)
    return out


def colorbar_title(metric: str, log: bool) -> str:
    name = METRIC_TEXT.get(metric, metric)
    return f"log₁₀ {name}" if log else name


def nonfinite_marks(grid: Grid, what: str) -> dict[str, list]:
    """x, y, symbol and hover text of each grid point whose value is not finite (a point
    not computed yet, None, is only a gap: it is not a value)."""
    xs: list[float] = []
    ys: list[float] = []
    sym: list[str] = []
    text: list[str] = []
    for iy, row in enumerate(grid.z):
        for ix, v in enumerate(row):
            if v is None or math.isfinite(v) or ix >= len(grid.x):
                continue
            kind = nonfinite_kind(v)
            xs.append(grid.x[ix])
            ys.append(grid.y[iy] if grid.y is not None and iy < len(grid.y) else 0.0)
            sym.append(NONFINITE_SYMBOL[kind])
            text.append(f"{what} {kind.replace('nan', 'NaN')}")
    return {"x": xs, "y": ys, "symbol": sym, "text": text}


def missing_count(grid: Grid) -> int:
    return sum(1 for v in grid.values() if v is None)


def directions_text(analysis: dict[str, Any]) -> str:
    d = (analysis.get("spec") or {}).get("directions") or {}
    kind = d.get("kind", "random")
    if kind == "random":
        return f"random filter-normalised directions (seed {d.get('seed', 0)})"
    return {"gradient": "gradient direction", "hessian": "top Hessian eigenvector(s)",
            "pca": "PCA direction(s) of the trajectory",
            "interpolation": "interpolation"}.get(kind, kind)
