"""Training and test loss and accuracy, every run overlaid (paper Fig 1, 5, 12).

Training values are per minibatch, so a downsampled stretch shows its bucket mean as the line
and the bucket's min-max envelope as a light band; test values are dotted, with markers at
the evaluations (at most common.MAX_MARKERS of them in view).
"""

from __future__ import annotations

from typing import Any

from webapp.figures.axes import (
    apply_options,
    axis_ref,
    divergence_marks,
)
from webapp.figures.common import (
    Frame,
    Options,
    Slot,
    Spec,
    envelope_arrays,
    fill_pair,
    line_trace,
    marker_trace,
    series_parts,
)
from webapp.runsets import RunView
from webapp.style import base_layout

NAME = "training"
PANELS = (("loss", "train/loss", "test/loss"), ("accuracy", "train/acc", "test/acc"))


def _series_slots(run: RunView, key: str, axes: dict[str, str], *, legend: bool,
                  test: bool) -> list[Slot]:
    what = key.replace("/", " ")

    def line(frame: Frame):
        return series_parts(frame, run.id, key, what)[0]

    def marks(frame: Frame):
        return series_parts(frame, run.id, key, what)[1]

    if test:
        style = line_trace(run, axes, name=f"{run.label} (test)", width=1.4, dash="dot",
                           mode="lines+markers")
        return [Slot(style, line), Slot(marker_trace(run, axes), marks)]
    lower, upper = fill_pair(run, axes, 0.10, name=f"{run.label}: min-max of each stretch")
    return [
        Slot(lower, lambda f: envelope_arrays(f.series(run.id, key))[0]),
        Slot(upper, lambda f: envelope_arrays(f.series(run.id, key))[1]),
        Slot(line_trace(run, axes, legend=legend), line),
        Slot(marker_trace(run, axes), marks),
    ]


def _style_keys(axes: dict[str, str]) -> list[Slot]:
    """Two legend entries that explain the line styles: solid = train, dotted = test."""
    out = []
    for name, dash, mode in (("train (per step)", "solid", "lines"),
                             ("test (held out)", "dot", "lines+markers")):
        style = {"type": "scatter", "mode": mode, "name": name, "legendgroup": "style",
                 "showlegend": True, **axes, "hoverinfo": "skip", "x": [None], "y": [None],
                 "line": {"color": "#9aa0aa", "dash": dash, "width": 1.6},
                 "marker": {"color": "#9aa0aa", "size": 5}}
        out.append(Slot(style, lambda _f: {}))
    return out


def spec(runs: list[RunView], opts: Options) -> Spec:
    panels = PANELS if any(r.classify for r in runs) else PANELS[:1]
    n = len(panels)
    gap = 0.08
    width = (1 - gap * (n - 1)) / n
    layout: dict[str, Any] = base_layout(340)
    slots: list[Slot] = []
    for i, (title, train, test) in enumerate(panels):
        x, y = axis_ref(i + 1)
        axes = {"xaxis": x, "yaxis": y}
        xa, ya = "xaxis" + x[1:], "yaxis" + y[1:]
        layout[xa] = {"domain": [i * (width + gap), i * (width + gap) + width],
                      "anchor": y, "title": {"text": "training step"}}
        if i:
            layout[xa]["matches"] = "x"
        layout[ya] = {"anchor": x, "title": {"text": title}}
        for run in runs:
            if title == "accuracy" and not run.classify:
                continue
            slots += _series_slots(run, train, axes, legend=i == 0, test=False)
            slots += _series_slots(run, test, axes, legend=False, test=True)
    slots += _style_keys({"xaxis": "x", "yaxis": "y"})
    panel_axes = [dict(zip(("xaxis", "yaxis"), axis_ref(j + 1), strict=True)) for j in range(n)]
    divergence_marks(runs, lambda _r: panel_axes, layout)
    log_axes = ["yaxis"]
    apply_options(layout, NAME, opts, log_axes,
                  [k for k in layout if k.startswith("xaxis")])
    return Spec(slots, layout, log_axes)
