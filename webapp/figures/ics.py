"""Internal covariate shift (paper Definition 2.1, Fig 3): for weight layer i, G is the
gradient of the loss w.r.t. W_i and G' the same gradient after every earlier layer took this
step's update. A column per measured layer, every run overlaid; the top row is ||G - G'||_2
(log by default in the paper's DLN figure), the bottom row cos(G, G')."""

from __future__ import annotations

from webapp.figures.axes import (
    apply_options,
    axis_ref,
    divergence_marks,
    grid_layout,
    layout_name,
)
from webapp.figures.common import (
    Frame,
    Options,
    Slot,
    Spec,
    line_trace,
    marker_trace,
    series_parts,
)
from webapp.runsets import Grid, RunView

NAME = "ics"
ROWS = (("l2", "‖G − G′‖₂"), ("cos", "cos(G, G′)"))


def layers_of(runs: list[RunView]) -> list[int]:
    return sorted({i for r in runs for i in r.ics_layers})


def spec(runs: list[RunView], opts: Options) -> Spec:
    layers = layers_of(runs) or [1]
    grid = Grid(2, len(layers), [f"weight layer {i}" for i in layers] + [""] * len(layers))
    layout = grid_layout(grid, 230, share_y=True)
    slots: list[Slot] = []
    cells: list[dict[str, str]] = []
    for r, (stat, title) in enumerate(ROWS):
        for c, layer in enumerate(layers):
            x, y = axis_ref(r * grid.cols + c + 1)
            axes = {"xaxis": x, "yaxis": y}
            cells.append(axes)
            if c == 0:
                layout.setdefault(layout_name(y), {})["title"] = {"text": title}
            if r == 1:
                layout.setdefault(layout_name(x), {})["title"] = {"text": "training step"}
            for run in runs:
                if layer not in run.ics_layers:
                    continue
                slots += _slots(run, f"ics/L{layer}/{stat}", axes,
                                legend=r == 0 and c == 0)
    divergence_marks(runs, lambda _r: cells, layout)
    log_axes = [layout_name(axis_ref(c + 1)[1]) for c in range(grid.cols)]
    apply_options(layout, NAME, opts, log_axes,
                  [layout_name(a["xaxis"]) for a in cells])
    return Spec(slots, layout, log_axes)


def _slots(run: RunView, key: str, axes: dict[str, str], legend: bool) -> list[Slot]:
    def line(f: Frame):
        return series_parts(f, run.id, key)[0]

    def marks(f: Frame):
        return series_parts(f, run.id, key)[1]

    return [Slot(line_trace(run, axes, legend=legend, mode="lines"), line),
            Slot(marker_trace(run, axes), marks)]
