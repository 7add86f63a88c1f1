"""Beyond the paper: sharpness (the algebraically largest Hessian eigenvalue, by Lanczos)
against the edge of stability 2/LR (Cohen et al. 2021: gradient descent drives sharpness up to
2/LR and hovers there), and the optimisation's dynamics: gradient norm and distance from the
initial weights."""

from __future__ import annotations

from webapp.figures.axes import (
    apply_options,
    axis_ref,
    divergence_marks,
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
from webapp.runsets import RunView
from webapp.style import base_layout

TOP_EIG = "sharpness/top_eig"
DYNAMICS = (("grad/norm", "gradient norm ‖g‖₂"), ("dist/init", "distance from init ‖w − w₀‖₂"))


def _slots(run: RunView, key: str, axes: dict[str, str], *, legend: bool,
           mode: str = "lines") -> list[Slot]:
    def line(f: Frame):
        return series_parts(f, run.id, key)[0]

    def marks(f: Frame):
        return series_parts(f, run.id, key)[1]

    return [Slot(line_trace(run, axes, legend=legend, mode=mode), line),
            Slot(marker_trace(run, axes), marks)]


def sharpness_spec(runs: list[RunView], opts: Options) -> Spec:
    layout = base_layout(320)
    layout["xaxis"] = {"title": {"text": "training step"}}
    layout["yaxis"] = {"title": {"text": "top Hessian eigenvalue λmax"}}
    axes = {"xaxis": "x", "yaxis": "y"}
    slots: list[Slot] = []
    for run in runs:
        slots += _slots(run, TOP_EIG, axes, legend=True, mode="lines+markers")
    # 2/LR is known from the spec before any step: one dashed line per distinct LR.
    for lr in sorted({r.lr for r in runs if r.lr > 0}):
        color = runs[0].color if len({r.lr for r in runs}) == 1 else "#6b7280"
        layout["shapes"].append({
            "type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1,
            "y0": 2 / lr, "y1": 2 / lr, "line": {"color": color, "dash": "dash", "width": 1.2},
        })
        layout["annotations"].append({
            "xref": "x domain", "yref": "y", "x": 1, "y": 2 / lr, "xanchor": "right",
            "yanchor": "bottom", "showarrow": False, "text": f"2/LR = {2 / lr:g} (LR {lr:g})",
            "font": {"size": 10, "color": "#4b5563"},
        })
    divergence_marks(runs, lambda _r: [axes], layout)
    apply_options(layout, "sharpness", opts, ["yaxis"], ["xaxis"])
    return Spec(slots, layout, ["yaxis"])


def dynamics_spec(runs: list[RunView], opts: Options) -> Spec:
    layout = base_layout(300)
    slots: list[Slot] = []
    cells = []
    for i, (key, title) in enumerate(DYNAMICS):
        x, y = axis_ref(i + 1)
        axes = {"xaxis": x, "yaxis": y}
        cells.append(axes)
        layout[layout_name(x)] = {"domain": [i * 0.54, i * 0.54 + 0.46], "anchor": y,
                                  "title": {"text": "training step"},
                                  **({"matches": "x"} if i else {})}
        layout[layout_name(y)] = {"anchor": x, "title": {"text": title}}
        for run in runs:
            slots += _slots(run, key, axes, legend=i == 0)
    divergence_marks(runs, lambda _r: cells, layout)
    apply_options(layout, "dynamics", opts, ["yaxis"], ["xaxis", "xaxis2"])
    return Spec(slots, layout, ["yaxis"])
