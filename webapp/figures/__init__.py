"""Pure figure builders: runs and data in, plotly figures (or Patches extending them) out.

Every figure is a `Spec` (webapp/figures/common.py): the same slots build it from all the data
and extend it with what arrived since, so live updates never redraw a figure from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import plotly.graph_objects as go
from dash import Patch

from webapp.figures import distributions, etas, ics, landscape, sharpness, training
from webapp.figures.axes import log_patch
from webapp.figures.common import Frame, Options, Spec, figure_dict, patch, render
from webapp.runsets import RunView
from webapp.style import figure_title

SpecFn = Callable[[list[RunView], Options], Spec]

# Each figure's title: in its layout (its exports say it) and at the head of its card on the
# compare page (webapp/compare/layout.py SECTIONS takes it from here).
TITLES: dict[str, str] = {
    "training": "Training",
    "landscape": "Loss landscape along the gradient",
    "gradpred": "Gradient predictiveness",
    "beta": "Effective β-smoothness",
    "etas": "Predictiveness against the step size",
    "ics": "Internal covariate shift",
    "dist_heat": "Activation distributions",
    "dist_overlay": "Activation distributions, overlaid",
    "sharpness": "Sharpness",
    "dynamics": "Gradient norm and distance travelled",
}


def title_of(name: str, opts: Options) -> str:
    """What a figure shows, as its exported image says it: the activation figures add the
    layer they show (on the page a control next to the figure says it)."""
    if name in HIST_FIGURES:
        return f"{TITLES[name]} · {distributions.what(opts)}"
    return TITLES[name]


def _titled(name: str, fn: SpecFn) -> SpecFn:
    """`fn` with the figure's title in its layout (webapp/style.py figure_title): every
    figure gets it here, whoever lays it out (the single view, the view by seed group, the
    Reproduction page), so no export path can go without it."""
    def spec(runs: list[RunView], opts: Options) -> Spec:
        out = fn(runs, opts)
        out.layout["title"] = figure_title(title_of(name, opts))
        return out

    return spec


# Page order: training first, then the paper's landscape figures, ICS, activations, extras.
FIGURES: dict[str, SpecFn] = {name: _titled(name, fn) for name, fn in {
    "training": training.spec,
    "landscape": lambda runs, opts: landscape.band_spec(runs, opts, "landscape"),
    "gradpred": lambda runs, opts: landscape.band_spec(runs, opts, "gradpred"),
    "beta": landscape.beta_spec,
    "etas": etas.spec,
    "ics": ics.spec,
    "dist_heat": distributions.heat_spec,
    "dist_overlay": distributions.overlay_spec,
    "sharpness": sharpness.sharpness_spec,
    "dynamics": sharpness.dynamics_spec,
}.items()}
# Figures fed by scalar metrics, by per-eta probe records, or by activation histograms.
METRIC_FIGURES = ("training", "landscape", "gradpred", "beta", "ics", "sharpness", "dynamics")
ETA_FIGURES = ("etas",)
HIST_FIGURES = ("dist_heat", "dist_overlay")
# Every scalar key a figure reads, all as globs: the API then returns only keys the run has
# recorded (an exact key would come back empty before its first point).
METRIC_KEYS = "train/*,test/*,landscape/*,ics/*,sharpness/*,grad/*,dist/*"
# Figures whose y axis starts logarithmic, as the paper draws them (DLN ICS, Fig 11).
DEFAULT_LOG = frozenset({"ics", "etas"})


@lru_cache(maxsize=128)
def _spec(name: str, runs: tuple[RunView, ...], opts: Options) -> Spec:
    # A live page asks for the same figure's slots every second; laying out subplots again
    # each time would cost more than the data. Specs are never mutated after this.
    return FIGURES[name](list(runs), opts)


def build(name: str, runs: list[RunView], frame: Frame, opts: Options) -> go.Figure:
    return render(_spec(name, tuple(runs), opts), frame)


def build_dict(name: str, runs: list[RunView], frame: Frame, opts: Options, *,
               final: bool = False) -> dict[str, Any]:
    """`build` as plain data, what a Dash callback sends (the same content, without the cost
    of constructing a plotly Figure). `final`: nothing will extend it; empty traces go."""
    return figure_dict(_spec(name, tuple(runs), opts), frame, final=final)


def extend(name: str, runs: list[RunView], frame: Frame, opts: Options) -> Patch | None:
    return patch(_spec(name, tuple(runs), opts), frame)


def relog(name: str, runs: list[RunView], opts: Options) -> Patch | None:
    axes = _spec(name, tuple(runs), opts).log_axes
    return log_patch(axes, name in opts.log) if axes else None


__all__ = ["FIGURES", "TITLES", "Frame", "Options", "build", "build_dict", "extend", "relog",
           "title_of"]
