"""One look for every figure: a colour and a name per normalisation (the same in every figure
and on every page, so a reader learns them once), the plot template, and the export config."""

from __future__ import annotations

from typing import Any

# Tableau-10 hues; plain training is the neutral dark grey every other line is compared with.
NORM_COLORS: dict[str, str] = {
    "none": "#4a4a4a",
    "batch": "#1f77b4",
    "noisy_batch": "#ff7f0e",
    "noise": "#8c564b",
    "l1": "#2ca02c",
    "l2": "#9467bd",
    "linf": "#d62728",
    "layer": "#17becf",
    "group": "#e377c2",
}
NORM_LABELS: dict[str, str] = {
    "none": "no normalisation",
    "batch": "BatchNorm",
    "noisy_batch": "noisy BatchNorm",
    "noise": "noise, no BatchNorm",
    "l1": "ℓ1 norm",
    "l2": "ℓ2 norm",
    "linf": "ℓ∞ norm",
    "layer": "LayerNorm",
    "group": "GroupNorm",
}
# The order columns and legends follow: the baseline first, then the paper's order.
NORM_ORDER: tuple[str, ...] = tuple(NORM_COLORS)
# Runs that share a normalisation (an lr sweep) are told apart by their dash.
DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

STATUS_COLORS: dict[str, str] = {
    "queued": "#8a8f98",
    "running": "#1f77b4",
    "succeeded": "#2e8540",
    "failed": "#b3261e",
    "diverged": "#d62728",
    "cancelled": "#6c6c6c",
    "crashed": "#a05a00",  # an SDK run whose training process stopped beating
}
FINISHED = frozenset({"succeeded", "failed", "diverged", "cancelled", "crashed"})
SDK_COLOR = "#6f42c1"  # the badge of runs trained by a user's own loop (landscope.init)
# The Reproduction page's verdicts (server/reproduction/): green holds, amber partly, red
# does not, grey cannot be decided yet.
VERDICT_COLORS: dict[str, str] = {
    "reproduced": "#2e8540",
    "partly": "#b7791f",
    "not reproduced": "#b3261e",
    "no data": "#8a8f98",
}

FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
# plotly_white's look in a few lines: figures are sent as plain data, and the full named
# template would add 9 kB to each of them.
# No automargin: it re-measures every tick label and redraws, a fifth of a page's drawing
# time; the fixed margins of base_layout leave room for the labels these figures have.
# No title standoff here either (title_standoffs sets it on the axes that have a title): an
# axis with a standoff measures its tick labels to place its title even when it has none,
# and most of a grid's axes have none (14 % of drawing the compare page, bench/RESULTS.md).
_AXIS = {"gridcolor": "#ebeef3", "linecolor": "#c9ced6", "zerolinecolor": "#dfe3ea",
         "ticks": "", "ticklabeloverflow": "allow"}
TITLE_STANDOFF = 6  # px between an axis title and its tick labels
TEMPLATE: dict[str, Any] = {
    "layout": {"paper_bgcolor": "white", "plot_bgcolor": "white", "xaxis": _AXIS,
               "yaxis": _AXIS,
               "hoverlabel": {"align": "left"},
               "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]},
}


def title_standoffs(layout: dict[str, Any]) -> dict[str, Any]:
    """`layout` with TITLE_STANDOFF on every 2D axis whose title has text (in place)."""
    for key, axis in layout.items():
        if (key[:5] in ("xaxis", "yaxis") and isinstance(axis, dict)
                and isinstance(axis.get("title"), dict) and axis["title"].get("text")):
            axis["title"].setdefault("standoff", TITLE_STANDOFF)
    return layout


def norm_color(norm: str) -> str:
    return NORM_COLORS.get(norm, "#7f7f7f")


def norm_label(norm: str) -> str:
    return NORM_LABELS.get(norm, norm)


def rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def base_layout(height: int, **extra: Any) -> dict[str, Any]:
    """The layout every figure starts from: white, light grid, legend on top, tight margins.
    `uirevision` keeps the user's zoom and legend clicks across live updates."""
    layout: dict[str, Any] = {
        "template": TEMPLATE,
        "height": height,
        "margin": {"l": 72, "r": 24, "t": 56, "b": 52},
        "font": {"family": FONT, "size": 12, "color": "#1d2330"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0,
                   "font": {"size": 11}},
        "hovermode": "closest",
        "uirevision": "keep",
        "shapes": [],
        "annotations": [],
    }
    layout.update(extra)
    return layout


def figure_title(text: str) -> dict[str, Any]:
    """A figure's title, drawn in the figure so that every PNG and SVG made of it (the
    compare page's buttons, the camera of the mode bar, a script) says what it shows. It
    stands in the top margin, where it takes no room from the plots, at the right: the
    legend starts at the left and grows upwards a row per line (the training figure's has
    two), so a title at the left would run into it. A page that heads the figure's card
    with the same title hides this copy (`.gtitle`) on screen; Plotly.toImage draws its
    image outside the page's cards, where it stays."""
    return {"text": text, "x": 1, "xref": "container", "xanchor": "right", "y": 1,
            "yref": "container", "yanchor": "top", "pad": {"r": 16, "t": 8},
            "font": {"size": 14, "weight": 600}}


def group_label(label: str) -> str:
    """The API's label of a seed group ("batch · lr=0.1": its normalisation's key, then
    what else sets it apart) with the normalisation named as every figure names it
    ("BatchNorm · lr=0.1"). A label that does not start with a known key is kept."""
    head, sep, rest = label.partition(" · ")
    return norm_label(head) + sep + rest if head in NORM_LABELS else label


def graph_config(name: str) -> dict[str, Any]:
    """dcc.Graph config: the camera button saves a 2x PNG named after the figure; the
    section's PNG/SVG buttons (compare view) call Plotly.downloadImage with either format."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": f"landscope-{name}", "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
        "modeBarButtonsToAdd": ["toggleSpikelines", "hoverCompareCartesian"],
    }
